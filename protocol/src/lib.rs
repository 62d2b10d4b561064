//! The Trellis protocol: every type that crosses a process boundary.
//!
//! * [`keys`]: device public keys and the proof-of-key handshake with the signal server.
//! * [`ids`]: network and device identifiers, device and network names.
//! * [`overlay`]: overlay addresses and the network ranges they are drawn from.
//! * [`invite`]: human-typeable invite codes and the tickets that carry them.
//! * [`sealed`]: end-to-end sealed envelopes between two devices, forwarded by the server.
//! * [`signal`]: the client ⇄ signal-server API spoken over WebSocket.
//!
//! This crate does serialization and validation only, never IO. Every message is
//! JSON on the wire and carries [`PROTOCOL_VERSION`] in its handshake.

mod encoding;
pub mod ids;
pub mod invite;
pub mod ipc;
pub mod keys;
pub mod overlay;
pub mod peer;
pub mod sealed;
#[cfg(feature = "shutdown")]
pub mod shutdown;
pub mod signal;
pub mod time;

/// Version of the signal API. A client and server with different versions refuse
/// each other with a clear message instead of misreading each other's messages.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest message a device may send to the signal server, in bytes. Every legitimate
/// request (the largest is a sealed envelope of at most 16 KiB) stays far below it.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Largest message the server sends (a welcome listing every member of every network of
/// a device): [`MAX_NETWORKS_PER_DEVICE`] × [`MAX_NETWORK_MEMBERS`] members of ~300 bytes.
pub const MAX_SERVER_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Most members of one network: Trellis is for friends and small teams, and every member
/// keeps a tunnel to every other.
pub const MAX_NETWORK_MEMBERS: usize = 1000;

/// Most networks one device can be a member of.
pub const MAX_NETWORKS_PER_DEVICE: usize = 32;

pub use ids::{DeviceId, DeviceName, InviteId, NetworkId, NetworkName};
pub use invite::{InviteCode, InviteTicket, ServerAddr};
pub use keys::PublicKey;
pub use overlay::{OverlayIp, OverlayNet};
