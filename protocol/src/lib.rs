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
pub mod sealed;
pub mod signal;

/// Version of the signal API. A client and server with different versions refuse
/// each other with a clear message instead of misreading each other's messages.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest WebSocket message either side accepts, in bytes. Every legitimate message
/// (the largest is a member list of a full network page) stays far below it.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

pub use ids::{DeviceId, DeviceName, InviteId, NetworkId, NetworkName};
pub use invite::{InviteCode, InviteTicket, ServerAddr};
pub use keys::PublicKey;
pub use overlay::{OverlayIp, OverlayNet};
