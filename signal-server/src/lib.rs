//! trellis-signal: the rendezvous of a Trellis network.
//!
//! * [`service`]: what the server does — networks, invites, membership events, signal
//!   forwarding — independent of the transport.
//! * [`network`]: one network's state and its rules (addresses, names, invites).
//! * [`store`]: durable state behind a small trait; [`store::SledStore`] embeds sled.
//! * [`api`]: the HTTP/WebSocket transport; [`tls`] its listeners.
//! * [`relay`]: STUN and the TURN relay, with short-lived credentials and quotas.
//! * [`ratelimit`], [`clock`], [`config`], [`server`]: the parts that hold it together.

pub mod api;
pub mod clock;
pub mod config;
pub mod network;
pub mod ratelimit;
pub mod relay;
pub mod server;
pub mod service;
pub mod store;
pub mod tls;
