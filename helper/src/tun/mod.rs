//! The TUN device: where the operating system hands the helper IP packets for the
//! overlay network, and where decrypted packets from peers go back in.
//!
//! The `tun` crate covers Linux and macOS (utun) and, through wintun, Windows. The
//! device gets the device's overlay address with the network's prefix, so the
//! network's route points into it without a separate route command (on Linux; on
//! macOS and Windows the crate adds the interface route the same way — unverified here).

use std::net::Ipv4Addr;

use trellis_protocol::{OverlayIp, OverlayNet};

/// MTU of the overlay: 1500 minus WireGuard's 80 bytes of worst-case overhead (IPv6
/// outer header 40 + UDP 8 + WireGuard 32). A relayed path adds a 4-byte ChannelData
/// header, which 1420 still leaves room for under a 1500-byte path MTU.
pub const OVERLAY_MTU: u16 = 1420;

#[derive(Debug, thiserror::Error)]
pub enum TunError {
    #[error("cannot create the TUN device {name}: {detail} (the helper needs root and /dev/net/tun)")]
    Create { name: String, detail: String },
}

/// On Linux the data plane's own thread polls the device's descriptor (see
/// `daemon::dataplane::linux`), so it is opened non-blocking and read and written without
/// async; elsewhere the data plane is a tokio task and the device async.
pub struct TunDevice {
    #[cfg(target_os = "linux")]
    device: tun::Device,
    #[cfg(not(target_os = "linux"))]
    device: tun::AsyncDevice,
    pub name: String,
}

impl std::fmt::Debug for TunDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunDevice").field("name", &self.name).finish_non_exhaustive()
    }
}

impl TunDevice {
    pub fn create(name: &str, ip: OverlayIp, range: OverlayNet) -> Result<Self, TunError> {
        let mut config = tun::Configuration::default();
        let netmask = Ipv4Addr::from(u32::MAX << (32 - u32::from(range.prefix())));
        config.tun_name(name).address(ip.0).netmask(netmask).mtu(OVERLAY_MTU).up();
        let failed =
            |e: &dyn std::fmt::Display| TunError::Create { name: name.to_string(), detail: e.to_string() };
        #[cfg(target_os = "linux")]
        let device = {
            config.platform_config(|p| {
                p.ensure_root_privileges(true);
            });
            let device = tun::create(&config).map_err(|e| failed(&e))?;
            device.set_nonblock().map_err(|e| failed(&e))?;
            device
        };
        #[cfg(not(target_os = "linux"))]
        let device = tun::create_as_async(&config).map_err(|e| failed(&e))?;
        tracing::info!(device = name, %ip, %range, mtu = OVERLAY_MTU, "TUN device up");
        Ok(Self { device, name: name.to_string() })
    }
}

#[cfg(target_os = "linux")]
impl TunDevice {
    /// Reads one packet if one is waiting; `WouldBlock` when none is.
    pub fn try_recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.device.recv(buf)
    }

    /// Writes one packet. The kernel takes a TUN write at once or fails it; it does not
    /// make a writer wait.
    pub fn send(&self, packet: &[u8]) -> std::io::Result<usize> {
        self.device.send(packet)
    }
}

#[cfg(target_os = "linux")]
impl std::os::fd::AsRawFd for TunDevice {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.device.as_raw_fd()
    }
}

#[cfg(not(target_os = "linux"))]
impl TunDevice {
    pub async fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.device.recv(buf).await
    }

    pub async fn send(&self, packet: &[u8]) -> std::io::Result<usize> {
        self.device.send(packet).await
    }
}
