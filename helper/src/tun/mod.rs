//! The TUN device: where the operating system hands the helper IP packets for the
//! overlay network, and where decrypted packets from peers go back in.
//!
//! The `tun` crate covers Linux and macOS (utun) and, through wintun, Windows. The
//! device gets the device's overlay address with the network's prefix, so the
//! network's route points into it without a separate route command (on Linux; on
//! macOS and Windows the crate adds the interface route the same way — unverified here).
//! Which name it asks for, per system, is [`name`]'s business.

use std::net::Ipv4Addr;

use trellis_protocol::{OverlayIp, OverlayNet};
use tun::AbstractDevice;

pub mod name;
#[cfg(target_os = "linux")]
mod offload;

pub use name::{requested_name, InvalidTunName, Platform};

/// MTU of the overlay: 1500 minus WireGuard's 80 bytes of worst-case overhead (IPv6
/// outer header 40 + UDP 8 + WireGuard 32). A relayed path adds a 4-byte ChannelData
/// header, which 1420 still leaves room for under a 1500-byte path MTU.
pub const OVERLAY_MTU: u16 = 1420;

/// What creating the device needs, for the error message.
#[cfg(target_os = "linux")]
const NEEDS: &str = "the helper needs root and /dev/net/tun";
#[cfg(target_os = "macos")]
const NEEDS: &str = "the helper needs root";
#[cfg(windows)]
const NEEDS: &str = "the helper needs administrator rights and wintun.dll beside trellisd.exe";

#[derive(Debug, thiserror::Error)]
pub enum TunError {
    #[error(transparent)]
    InvalidName(#[from] InvalidTunName),
    #[error("cannot create the TUN device {name}: {detail} ({NEEDS})")]
    Create { name: String, detail: String },
}

/// On Linux the data plane's own thread polls the device's descriptor (see
/// `daemon::dataplane::linux`), so it is opened non-blocking and read and written without
/// async, with offloads (see [`offload`]); elsewhere the data plane is a tokio task and
/// the device async, one packet per call.
pub struct TunDevice {
    #[cfg(target_os = "linux")]
    device: tun::Device,
    #[cfg(target_os = "linux")]
    buffers: Buffers,
    #[cfg(not(target_os = "linux"))]
    device: tun::AsyncDevice,
    /// The interface's name as the system reports it (on macOS, the utun it picked).
    pub name: String,
}

impl std::fmt::Debug for TunDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunDevice").field("name", &self.name).finish_non_exhaustive()
    }
}

impl TunDevice {
    /// Creates the device, asking for `name` as [`requested_name`] allows on this system;
    /// [`TunDevice::name`] is the name it got.
    pub fn create(name: &str, ip: OverlayIp, range: OverlayNet) -> Result<Self, TunError> {
        let requested = requested_name(Platform::CURRENT, name)?;
        let mut config = tun::Configuration::default();
        let netmask = Ipv4Addr::from(u32::MAX << (32 - u32::from(range.prefix())));
        if let Some(requested) = requested {
            config.tun_name(requested);
        }
        config.address(ip.0).netmask(netmask).mtu(OVERLAY_MTU).up();
        // A utun is point-to-point: the tun crate adds the network's route (`route -n add
        // -net <range> <destination>`) only when a destination is set, and without that route
        // nothing would enter the tunnel. Our own address as the far end points the route at
        // this utun. Type-checked here, unverified on a real Mac.
        #[cfg(target_os = "macos")]
        config.destination(ip.0);
        let failed = |e: &dyn std::fmt::Display| TunError::Create {
            name: requested.unwrap_or("utun (any free one)").to_string(),
            detail: e.to_string(),
        };
        #[cfg(target_os = "linux")]
        let device = {
            config.platform_config(|p| {
                p.ensure_root_privileges(true);
                p.vnet_hdr(true);
            });
            let device = tun::create(&config).map_err(|e| failed(&e))?;
            device.set_nonblock().map_err(|e| failed(&e))?;
            // Without offloads the device still works, a packet per read; the header stays.
            if let Err(e) = enable_offloads(&device) {
                tracing::warn!(device = name, error = %e, "TUN offloads refused; one packet per read");
            }
            device
        };
        #[cfg(windows)]
        config.platform_config(|p| {
            p.device_guid(WINDOWS_ADAPTER_GUID);
            // By full path: loaded by bare name, Windows would go on to search PATH, whose
            // folders a user may write to, for a DLL that runs as SYSTEM.
            if let Ok(exe) = std::env::current_exe() {
                p.wintun_file(exe.with_file_name("wintun.dll"));
            }
        });
        #[cfg(not(target_os = "linux"))]
        let device = tun::create_as_async(&config).map_err(|e| failed(&e))?;
        // The name it got: on macOS the system picks the utun.
        let name = match device.tun_name() {
            Ok(got) => got,
            Err(e) => {
                let asked = requested.unwrap_or(name);
                tracing::warn!(requested = asked, error = %e, "cannot read the TUN device's name back");
                asked.to_string()
            }
        };
        tracing::info!(device = %name, %ip, %range, mtu = OVERLAY_MTU, "TUN device up");
        Ok(Self {
            device,
            #[cfg(target_os = "linux")]
            buffers: Buffers::default(),
            name,
        })
    }
}

/// The wintun adapter's GUID, the same on every start: Windows keys its network profile
/// (public or private, and so the firewall rules that apply) to it, and a random one
/// would make a new "Network N" each time. Tailscale fixes its GUID for the same reason.
#[cfg(windows)]
const WINDOWS_ADAPTER_GUID: u128 = 0x5c1e_77a1_3f2b_4d6e_9a0c_7e1f_2b8d_4c51;

/// What reads and writes with a virtio-net header need, kept between calls.
#[cfg(target_os = "linux")]
struct Buffers {
    /// One read: the header and up to a 64 KiB TCP super-segment.
    read: Vec<u8>,
    /// One segment of a super-segment at a time.
    segment: Vec<u8>,
    /// Packets to write, joined where they can be.
    coalescer: offload::Coalescer,
}

#[cfg(target_os = "linux")]
impl Default for Buffers {
    fn default() -> Self {
        Self {
            read: vec![0; offload::VNET_HDR_LEN + usize::from(u16::MAX)],
            segment: Vec::with_capacity(usize::from(OVERLAY_MTU)),
            coalescer: offload::Coalescer::default(),
        }
    }
}

/// Lets the kernel hand over TCP/IPv4 super-segments (TSO) and partial checksums
/// (`TUNSETOFFLOAD` with `TUN_F_CSUM | TUN_F_TSO4`). The tun crate sets `IFF_VNET_HDR`
/// but has no call for this ioctl.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn enable_offloads(device: &tun::Device) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let flags = libc::c_ulong::from(libc::TUN_F_CSUM | libc::TUN_F_TSO4);
    // SAFETY: the descriptor is the open TUN device for the whole call, and
    // TUNSETOFFLOAD takes its argument by value, not through a pointer.
    let result = unsafe { libc::ioctl(device.as_raw_fd(), libc::TUNSETOFFLOAD, flags) };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(target_os = "linux")]
impl TunDevice {
    /// Reads once, if anything is waiting, and calls `each` for every IP packet the read
    /// holds: one, or the segments of a TCP super-segment. Returns `None` when nothing was
    /// waiting, else how many packets were handed over (0 for a malformed read, which is
    /// logged and dropped).
    pub fn try_recv_packets(&mut self, each: impl FnMut(&[u8])) -> std::io::Result<Option<usize>> {
        let Buffers { read, segment, .. } = &mut self.buffers;
        let n = match self.device.recv(read) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(None),
            // A packet the kernel cannot describe in a virtio-net header (a GSO type not
            // negotiated): it drops that one and the next read is fine.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::debug!(device = %self.name, "TUN packet without a describable offload dropped");
                return Ok(Some(0));
            }
            Err(e) => return Err(e),
        };
        match offload::packets_of(&mut read[..n], segment, each) {
            Ok(count) => Ok(Some(count)),
            Err(e) => {
                tracing::debug!(device = %self.name, error = %e, "TUN read dropped");
                Ok(Some(0))
            }
        }
    }

    /// Queues a packet for the TUN: written when it can no longer join the ones before
    /// it (see [`offload::Coalescer`]), at the latest by [`TunDevice::flush`]. The kernel
    /// takes a TUN write at once or fails it; it does not make a writer wait.
    pub fn send(&mut self, packet: &[u8]) -> std::io::Result<()> {
        let Self { device, buffers, .. } = self;
        buffers.coalescer.push(packet, |write| device.send(write).map(drop))
    }

    /// Writes what [`TunDevice::send`] queued.
    pub fn flush(&mut self) -> std::io::Result<()> {
        let Self { device, buffers, .. } = self;
        buffers.coalescer.flush(|write| device.send(write).map(drop))
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
