//! The Trellis helper: `trellisd` (the privileged daemon) and `trellis` (its CLI).
//!
//! * [`engine`]: the sans-IO connection engine — ICE, TURN, WireGuard, peer health.
//! * [`daemon`]: the event loops around it: data plane (UDP + TUN), signal
//!   connection, IPC control.
//! * [`signal`]: the client of `trellis-signal`.
//! * [`tun`]: the TUN device.
//! * [`state`]: the device key and persisted settings.
//! * [`ipc`]: the local control socket (server and client).
//! * [`cli`]: the `trellis` command line.

mod checksum;
pub mod cli;
pub mod daemon;
pub mod engine;
pub mod ipc;
pub mod paths;
pub mod signal;
pub mod state;
pub mod tun;
