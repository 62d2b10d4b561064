//! Overlay addresses: the stable private IPv4 address each device gets in its network,
//! drawn from the network's range (100.64.0.0/10, the shared address space, by default).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A device's address inside the overlay network.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OverlayIp(pub Ipv4Addr);

impl fmt::Display for OverlayIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for OverlayIp {
    type Err = std::net::AddrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim().parse().map(Self)
    }
}

/// An IPv4 range a network's addresses are drawn from, like `100.64.0.0/10`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct OverlayNet {
    base: Ipv4Addr,
    prefix: u8,
}

/// Why a text is not a usable overlay range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidOverlayNet {
    #[error("{0:?} is not of the form a.b.c.d/prefix")]
    Syntax(String),
    #[error("prefix /{0} is outside /8 to /30: the range would be too large or hold no devices")]
    Prefix(u8),
    #[error("{addr} has bits set beyond /{prefix}; did you mean {network}/{prefix}?")]
    HostBits { addr: Ipv4Addr, prefix: u8, network: Ipv4Addr },
}

impl OverlayNet {
    /// The default range: RFC 6598 shared address space, as Tailscale and NetBird use,
    /// because it rarely clashes with home and office LANs.
    pub const DEFAULT: OverlayNet = OverlayNet { base: Ipv4Addr::new(100, 64, 0, 0), prefix: 10 };

    pub fn new(base: Ipv4Addr, prefix: u8) -> Result<Self, InvalidOverlayNet> {
        if !(8..=30).contains(&prefix) {
            return Err(InvalidOverlayNet::Prefix(prefix));
        }
        let mask = Self::mask_of(prefix);
        let network = Ipv4Addr::from(u32::from(base) & mask);
        if network != base {
            return Err(InvalidOverlayNet::HostBits { addr: base, prefix, network });
        }
        Ok(Self { base, prefix })
    }

    fn mask_of(prefix: u8) -> u32 {
        u32::MAX << (32 - u32::from(prefix))
    }

    pub fn base(&self) -> Ipv4Addr {
        self.base
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Self::mask_of(self.prefix) == u32::from(self.base)
    }

    /// How many device addresses the range holds (all but the network and broadcast address).
    pub fn host_count(&self) -> u32 {
        (1u32 << (32 - u32::from(self.prefix))) - 2
    }

    /// The `index`-th device address (0-based), or `None` past the end.
    pub fn host(&self, index: u32) -> Option<OverlayIp> {
        (index < self.host_count()).then(|| OverlayIp(Ipv4Addr::from(u32::from(self.base) + 1 + index)))
    }

    /// The index of a device address, inverse of [`Self::host`].
    pub fn index_of(&self, ip: OverlayIp) -> Option<u32> {
        let offset = u32::from(ip.0).checked_sub(u32::from(self.base))?.checked_sub(1)?;
        (offset < self.host_count()).then_some(offset)
    }
}

impl Default for OverlayNet {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for OverlayNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

impl FromStr for OverlayNet {
    type Err = InvalidOverlayNet;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || InvalidOverlayNet::Syntax(s.to_string());
        let (addr, prefix) = s.trim().split_once('/').ok_or_else(syntax)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| syntax())?;
        let prefix: u8 = prefix.parse().map_err(|_| syntax())?;
        Self::new(addr, prefix)
    }
}

impl Serialize for OverlayNet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for OverlayNet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_range_hosts() {
        let net = OverlayNet::DEFAULT;
        assert_eq!(net.to_string(), "100.64.0.0/10");
        assert_eq!(net.host(0).unwrap().to_string(), "100.64.0.1");
        assert_eq!(net.host_count(), (1 << 22) - 2);
        assert_eq!(net.host(net.host_count() - 1).unwrap().to_string(), "100.127.255.254");
        assert_eq!(net.host(net.host_count()), None);
        assert!(net.contains("100.100.1.1".parse().unwrap()));
        assert!(!net.contains("100.128.0.1".parse().unwrap()));
    }

    #[test]
    fn index_inverts_host() {
        let net: OverlayNet = "100.64.8.0/29".parse().unwrap();
        for i in 0..net.host_count() {
            assert_eq!(net.index_of(net.host(i).unwrap()), Some(i));
        }
        assert_eq!(net.index_of(OverlayIp("100.64.8.0".parse().unwrap())), None);
        assert_eq!(net.index_of(OverlayIp("100.64.8.7".parse().unwrap())), None);
    }

    #[test]
    fn bad_ranges_are_explained() {
        assert!(matches!("100.64.0.1/10".parse::<OverlayNet>(), Err(InvalidOverlayNet::HostBits { .. })));
        assert_eq!("100.64.0.0/31".parse::<OverlayNet>(), Err(InvalidOverlayNet::Prefix(31)));
        assert!(matches!("nonsense".parse::<OverlayNet>(), Err(InvalidOverlayNet::Syntax(_))));
    }
}
