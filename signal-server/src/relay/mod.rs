//! STUN and TURN for devices that cannot reach each other directly.
//!
//! One UDP socket answers STUN Binding requests (so a device learns its public
//! address) and TURN requests (so it can relay through this server when hole
//! punching fails). The protocol work is the `turn` crate's; this module adds what
//! Trellis needs around it:
//!
//! - **who**: only devices holding credentials from [`issue_credentials`] (the
//!   signal server hands them out over the device's authenticated WebSocket) and
//!   that [`DeviceGate`] still allows. Both are checked on every authenticated TURN
//!   request, so a removed device cannot allocate, refresh or add peers from then on;
//!   [`Relay::evict`] also ends the allocations it holds.
//! - **how much**: [`RelayQuotas`], per device and per allocation.
//!
//! Code map: `credentials` mints and checks usernames/passwords, `auth` is the turn
//! auth handler, `quota` holds the counting and metering state, `allocator` binds
//! relay sockets and enforces the quotas on them.

mod allocator;
mod auth;
mod credentials;
mod quota;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use trellis_protocol::DeviceId;
use turn::server::config::{ConnConfig, ServerConfig};
use turn::server::Server;

pub use credentials::{issue_credentials, verify_credentials, CredentialError, RelaySecret, CREDENTIAL_TTL};
pub use quota::RelayQuotas;

use allocator::Allocator;
use auth::Gatekeeper;
use quota::Registry;

/// The standard STUN/TURN port (RFC 8489 §18.6).
pub const DEFAULT_PORT: u16 = 3478;

/// Where and how the relay runs.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// UDP address for STUN and TURN; usually `0.0.0.0:3478`. Relay sockets are
    /// bound on the same IP.
    pub listen: SocketAddr,
    /// The address peers reach relay sockets at, put in relayed candidates. Must be
    /// concrete (not 0.0.0.0): behind a cloud 1:1 NAT it is the public IP while
    /// `listen` is the private or unspecified one.
    pub relay_ip: IpAddr,
    /// TURN realm; issued credentials carry it and requests must use it.
    pub realm: String,
    pub secret: RelaySecret,
    pub quotas: RelayQuotas,
}

impl RelayConfig {
    /// Listens on `0.0.0.0:3478` (or `[::]:3478` for an IPv6 `relay_ip`) with the
    /// default quotas.
    pub fn new(relay_ip: IpAddr, realm: impl Into<String>, secret: RelaySecret) -> Self {
        let any = if relay_ip.is_ipv4() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        };
        Self {
            listen: SocketAddr::new(any, DEFAULT_PORT),
            relay_ip,
            realm: realm.into(),
            secret,
            quotas: RelayQuotas::default(),
        }
    }
}

/// Tells the relay whether a device may still relay (it is still a member of some
/// network). Asked on every authenticated TURN request, so a removed device is
/// refused at once. Called synchronously on the server's only receive path, once
/// per authenticated request: it should answer from memory or a local cache, as
/// every STUN/TURN client waits while it runs.
pub trait DeviceGate: Send + Sync + 'static {
    fn may_relay(&self, device: &DeviceId) -> bool;
}

impl<F> DeviceGate for F
where
    F: Fn(&DeviceId) -> bool + Send + Sync + 'static,
{
    fn may_relay(&self, device: &DeviceId) -> bool {
        self(device)
    }
}

/// What went wrong starting the relay.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("relay IP {relay_ip} is unspecified; relayed candidates need an address peers can reach")]
    UnspecifiedRelayIp { relay_ip: IpAddr },
    #[error("relay IP {relay_ip} and STUN/TURN listen address {listen} are of different IP families")]
    FamilyMismatch { listen: SocketAddr, relay_ip: IpAddr },
    #[error("binding UDP {addr} for STUN/TURN: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("starting the TURN server on {addr}: {source}")]
    Server { addr: SocketAddr, source: turn::Error },
}

/// The running STUN/TURN server. Runs on the tokio runtime it was started on until
/// [`Relay::shutdown`]; dropping it without shutting down leaves the server running.
pub struct Relay {
    server: Server,
    registry: Arc<Registry>,
    local_addr: SocketAddr,
}

/// Ends a device's allocations (see [`Relay::evict`]); cheap to clone.
#[derive(Clone)]
pub struct Evictor(Arc<Registry>);

impl Evictor {
    pub fn evict(&self, device: &DeviceId) -> usize {
        let closed = self.0.close_device(device);
        if closed > 0 {
            tracing::info!(%device, allocations = closed, "evicted device from the relay");
        }
        closed
    }
}

impl fmt::Debug for Evictor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Evictor")
    }
}

impl fmt::Debug for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Relay").field("local_addr", &self.local_addr).finish_non_exhaustive()
    }
}

impl Relay {
    /// Binds `config.listen` and starts answering STUN and TURN.
    pub async fn start(config: RelayConfig, gate: Arc<dyn DeviceGate>) -> Result<Relay, RelayError> {
        let RelayConfig { listen, relay_ip, realm, secret, quotas } = config;
        if relay_ip.is_unspecified() {
            return Err(RelayError::UnspecifiedRelayIp { relay_ip });
        }
        if relay_ip.is_ipv4() != listen.is_ipv4() {
            return Err(RelayError::FamilyMismatch { listen, relay_ip });
        }
        let socket =
            UdpSocket::bind(listen).await.map_err(|source| RelayError::Bind { addr: listen, source })?;
        let local_addr = socket.local_addr().map_err(|source| RelayError::Bind { addr: listen, source })?;

        let registry = Registry::new(quotas.max_allocations_per_device);
        let current = Arc::new(Mutex::new(None));
        let allocator = Allocator {
            bind_ip: listen.ip(),
            relay_ip,
            quotas,
            registry: Arc::clone(&registry),
            current: Arc::clone(&current),
        };
        let gatekeeper = Gatekeeper { secret, realm: realm.clone(), gate, current };
        let server = Server::new(ServerConfig {
            // A plain tokio socket: its `close` does nothing, which matters because
            // turn closes the listening "conn" whenever one allocation closes.
            conn_configs: vec![ConnConfig {
                conn: Arc::new(socket),
                relay_addr_generator: Box::new(allocator),
            }],
            realm,
            auth_handler: Arc::new(gatekeeper),
            // Zero means turn's default, 10 minutes (RFC 8656 §12).
            channel_bind_timeout: Duration::ZERO,
            alloc_close_notify: None,
        })
        .await
        .map_err(|source| RelayError::Server { addr: local_addr, source })?;

        tracing::info!(%local_addr, %relay_ip, "STUN/TURN relay listening");
        Ok(Relay { server, registry, local_addr })
    }

    /// The UDP address STUN and TURN are answered on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Ends every allocation `device` holds now; returns how many. Call it when a
    /// device leaves its last network: refusing its next request is not enough, as
    /// an allocation relays until its lifetime runs out.
    pub fn evict(&self, device: &DeviceId) -> usize {
        self.evictor().evict(device)
    }

    /// A handle that evicts devices, for the part of the server that removes them.
    pub fn evictor(&self) -> Evictor {
        Evictor(self.registry.clone())
    }

    /// How many allocations `device` holds now.
    pub fn allocations(&self, device: &DeviceId) -> usize {
        self.registry.live(device)
    }

    /// Ends every allocation and stops answering. The server's tasks wind down in
    /// the background; the listening socket is released once they have.
    pub async fn shutdown(self) {
        self.registry.close_all();
        if let Err(err) = self.server.close().await {
            tracing::warn!(local_addr = %self.local_addr, "closing the TURN server: {err}");
        }
        tracing::info!(local_addr = %self.local_addr, "STUN/TURN relay stopped");
    }
}
