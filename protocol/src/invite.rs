//! Invite codes: what one friend reads out or pastes to another.
//!
//! A code is 16 symbols of Crockford base32, shown in four dash-separated groups:
//! `K7QF-3M9T-WX2C-HN4R`. Every symbol carries 5 random bits, 80 bits in all:
//!
//! * the first group (20 bits) *locates* the invite on the server and doubles as its
//!   [`InviteId`]: it is not secret, so an owner can list and revoke invites by it;
//! * the other three groups (60 bits) are the secret. The server keeps only their hash.
//!
//! Typing is forgiving: case does not matter, dashes and spaces are optional, and the
//! look-alikes `O`, `I`, `L` read as `0`, `1`, `1` (Crockford's rule), so no character is
//! ambiguous. A code may carry its server (`CODE@host:port`) and has a link form
//! (`trellis://join/CODE@host:port`) for clicking.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::InviteId;

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const SYMBOLS: usize = 16;
const GROUP: usize = 4;
/// Symbols of the non-secret locator at the start of the code.
const LOCATOR_SYMBOLS: usize = 4;
/// Secret bits in a code: what an attacker must guess once they know a locator.
pub const SECRET_BITS: u32 = 5 * (SYMBOLS - LOCATOR_SYMBOLS) as u32;
const _: () = assert!(SECRET_BITS >= 60, "invite codes promise at least 60 secret bits");
/// The URI scheme of the link form.
pub const LINK_PREFIX: &str = "trellis://join/";
/// The signal server's port when a server address names none.
pub const DEFAULT_SERVER_PORT: u16 = 8443;

/// Why a text is not an invite code (or ticket, or server address).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInvite {
    #[error("the invite code is empty")]
    Empty,
    #[error("an invite code has {expected} letters and digits; this one has {found}")]
    Length { expected: usize, found: usize },
    #[error(
        "{found:?} (character {position}) cannot be in an invite code; codes use digits and letters except U"
    )]
    Character { found: char, position: usize },
    #[error("the server address {text:?} is invalid: {reason}")]
    Server { text: String, reason: &'static str },
}

/// The 16 symbols of an invite code, canonical (upper case, look-alikes mapped).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct InviteCode([u8; SYMBOLS]);

impl InviteCode {
    /// A fresh random code (80 bits from the OS generator).
    pub fn random() -> Self {
        let mut symbols = [0u8; SYMBOLS];
        let mut random = [0u8; SYMBOLS];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut random);
        for (symbol, byte) in symbols.iter_mut().zip(random) {
            *symbol = ALPHABET[usize::from(byte & 31)];
        }
        Self(symbols)
    }

    /// A fresh random code whose locator is `locator` (used by the server to pick a
    /// locator that no stored invite has).
    pub fn random_with_locator(locator: &InviteId) -> Option<Self> {
        let parsed: Vec<u8> = locator.0.bytes().collect();
        if parsed.len() != LOCATOR_SYMBOLS || !parsed.iter().all(|b| ALPHABET.contains(b)) {
            return None;
        }
        let mut code = Self::random();
        code.0[..LOCATOR_SYMBOLS].copy_from_slice(&parsed);
        Some(code)
    }

    /// The non-secret first group, which the server looks the invite up by.
    pub fn locator(&self) -> InviteId {
        InviteId(String::from_utf8_lossy(&self.0[..LOCATOR_SYMBOLS]).into_owned())
    }

    /// What the server stores instead of the code: SHA-256 over the canonical symbols.
    pub fn secret_hash(&self) -> [u8; 32] {
        let mut hash = Sha256::new();
        hash.update(b"trellis-invite-v1");
        hash.update(self.0);
        hash.finalize().into()
    }
}

impl fmt::Display for InviteCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, group) in self.0.chunks(GROUP).enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            f.write_str(std::str::from_utf8(group).expect("alphabet is ASCII"))?;
        }
        Ok(())
    }
}

impl fmt::Debug for InviteCode {
    // Never print the secret part: codes end up in logs through Debug.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InviteCode({}-****-****-****)", self.locator())
    }
}

impl FromStr for InviteCode {
    type Err = InvalidInvite;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut symbols = Vec::with_capacity(SYMBOLS);
        for (position, c) in s.trim().chars().enumerate() {
            let symbol = match c.to_ascii_uppercase() {
                '-' | ' ' => continue,
                'O' => b'0',
                'I' | 'L' => b'1',
                c if c.is_ascii() && ALPHABET.contains(&(c as u8)) => c as u8,
                _ => return Err(InvalidInvite::Character { found: c, position: position + 1 }),
            };
            symbols.push(symbol);
        }
        match symbols.len() {
            0 => Err(InvalidInvite::Empty),
            SYMBOLS => Ok(Self(symbols.try_into().expect("length checked"))),
            found => Err(InvalidInvite::Length { expected: SYMBOLS, found }),
        }
    }
}

impl Serialize for InviteCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for InviteCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Where a signal server listens: `host[:port]` means TLS (`wss://`); a `ws://` prefix
/// means plain WebSocket, for local testing.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct ServerAddr {
    pub secure: bool,
    pub host: String,
    pub port: u16,
}

impl ServerAddr {
    /// The WebSocket URL of the signal API.
    pub fn websocket_url(&self) -> String {
        let scheme = if self.secure { "wss" } else { "ws" };
        format!("{scheme}://{}/v1/signal", self.host_port())
    }

    /// `host:port`, with brackets around an IPv6 host.
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.secure {
            f.write_str("ws://")?;
        }
        f.write_str(&self.host_port())
    }
}

impl FromStr for ServerAddr {
    type Err = InvalidInvite;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let bad = |reason| InvalidInvite::Server { text: text.to_string(), reason };
        let lower = text.to_ascii_lowercase();
        let (secure, rest) = if let Some(rest) = lower.strip_prefix("ws://").or(lower.strip_prefix("http://"))
        {
            (false, rest)
        } else if let Some(rest) = lower.strip_prefix("wss://").or(lower.strip_prefix("https://")) {
            (true, rest)
        } else if lower.contains("://") {
            return Err(bad("only ws:// and wss:// are supported"));
        } else {
            (true, lower.as_str())
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            host.parse::<std::net::Ipv6Addr>().map_err(|_| bad("not an IPv6 address inside [ ]"))?;
            (host, after.strip_prefix(':'))
        } else {
            match rest.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        if !host.contains(':') && !host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
            return Err(bad("a host name has only letters, digits, '-' and '.'"));
        }
        let port = match port {
            None => DEFAULT_SERVER_PORT,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?,
        };
        Ok(Self { secure, host: host.to_string(), port })
    }
}

impl Serialize for ServerAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ServerAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// What a user pastes to join: a code, optionally with the server that issued it,
/// in plain (`CODE[@server]`) or link (`trellis://join/CODE[@server]`) form.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct InviteTicket {
    pub code: InviteCode,
    pub server: Option<ServerAddr>,
}

impl InviteTicket {
    /// The clickable link form.
    pub fn link(&self) -> String {
        format!("{LINK_PREFIX}{self}")
    }
}

impl fmt::Display for InviteTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.server {
            Some(server) => write!(f, "{}@{server}", self.code),
            None => write!(f, "{}", self.code),
        }
    }
}

impl FromStr for InviteTicket {
    type Err = InvalidInvite;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let text = match text.get(..LINK_PREFIX.len()) {
            Some(prefix) if prefix.eq_ignore_ascii_case(LINK_PREFIX) => &text[LINK_PREFIX.len()..],
            _ => text,
        };
        match text.split_once('@') {
            Some((code, server)) => Ok(Self { code: code.parse()?, server: Some(server.parse()?) }),
            None => Ok(Self { code: text.parse()?, server: None }),
        }
    }
}

impl Serialize for InviteTicket {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for InviteTicket {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn codes_have_at_least_60_secret_bits() {
        let code = InviteCode::random();
        let text = code.to_string();
        assert_eq!(text.len(), 19);
        assert_eq!(text.matches('-').count(), 3);
        assert!(!text.contains(['I', 'L', 'O', 'U']));
    }

    #[test]
    fn typing_is_forgiving() {
        let code: InviteCode = "K7QF-3M9T-WX2C-HN4R".parse().unwrap();
        assert_eq!("k7qf3m9twx2chn4r".parse::<InviteCode>().unwrap(), code);
        assert_eq!(" k7qf 3m9t wx2c hn4r ".parse::<InviteCode>().unwrap(), code);
        let with_lookalikes: InviteCode = "OIL0-0000-0000-0000".parse().unwrap();
        assert_eq!(with_lookalikes.to_string(), "0110-0000-0000-0000");
    }

    #[test]
    fn malformed_codes_get_precise_errors() {
        assert_eq!("".parse::<InviteCode>(), Err(InvalidInvite::Empty));
        assert_eq!(
            "K7QF-3M9T-WX2C".parse::<InviteCode>(),
            Err(InvalidInvite::Length { expected: 16, found: 12 })
        );
        assert_eq!(
            "K7QF-3M9T-WX2C-HN4U".parse::<InviteCode>(),
            Err(InvalidInvite::Character { found: 'U', position: 19 })
        );
        assert!(matches!(
            "K7QF-3M9T-WX2C-HN4!".parse::<InviteCode>(),
            Err(InvalidInvite::Character { found: '!', .. })
        ));
    }

    #[test]
    fn debug_hides_the_secret() {
        let code: InviteCode = "K7QF-3M9T-WX2C-HN4R".parse().unwrap();
        let shown = format!("{code:?}");
        assert!(shown.contains("K7QF") && !shown.contains("3M9T"));
        assert_eq!(code.locator().0, "K7QF");
    }

    #[test]
    fn tickets_carry_servers() {
        let t: InviteTicket = "K7QF-3M9T-WX2C-HN4R@vpn.example.org".parse().unwrap();
        assert_eq!(t.server.as_ref().unwrap().websocket_url(), "wss://vpn.example.org:8443/v1/signal");
        let t: InviteTicket = "trellis://join/K7QF-3M9T-WX2C-HN4R@ws://203.0.113.5:9000".parse().unwrap();
        assert_eq!(t.server.as_ref().unwrap().websocket_url(), "ws://203.0.113.5:9000/v1/signal");
        assert_eq!(t.link(), "trellis://join/K7QF-3M9T-WX2C-HN4R@ws://203.0.113.5:9000");
        let v6: ServerAddr = "[2001:db8::1]:7000".parse().unwrap();
        assert_eq!(v6.host_port(), "[2001:db8::1]:7000");
        assert!("K7QF-3M9T-WX2C-HN4R@host:99999".parse::<InviteTicket>().is_err());
        assert!("K7QF-3M9T-WX2C-HN4R@ftp://host".parse::<InviteTicket>().is_err());
        assert!("K7QF-3M9T-WX2C-HN4R@bad_host".parse::<InviteTicket>().is_err());
        assert!("K7QF-3M9T-WX2C-HN4R@".parse::<InviteTicket>().is_err());
    }

    #[test]
    fn locator_can_be_chosen() {
        let id = InviteId("AB12".into());
        assert_eq!(InviteCode::random_with_locator(&id).unwrap().locator(), id);
        assert!(InviteCode::random_with_locator(&InviteId("AB1".into())).is_none());
        assert!(InviteCode::random_with_locator(&InviteId("ABU1".into())).is_none());
    }

    fn server_strategy() -> impl Strategy<Value = ServerAddr> {
        (any::<bool>(), "[a-z][a-z0-9-]{0,10}(\\.[a-z]{2,5}){0,2}", 1u16..)
            .prop_map(|(secure, host, port)| ServerAddr { secure, host, port })
    }

    proptest! {
        #[test]
        fn tickets_round_trip(server in proptest::option::of(server_strategy())) {
            let ticket = InviteTicket { code: InviteCode::random(), server };
            prop_assert_eq!(ticket.to_string().parse::<InviteTicket>().unwrap(), ticket.clone());
            prop_assert_eq!(ticket.link().parse::<InviteTicket>().unwrap(), ticket.clone());
            let json = serde_json::to_string(&ticket).unwrap();
            prop_assert_eq!(serde_json::from_str::<InviteTicket>(&json).unwrap(), ticket);
        }

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,40}") {
            let _ = text.parse::<InviteTicket>();
        }
    }
}
