//! Where the quotas are enforced. The turn server asks [`Allocator`] for a relay
//! socket for each new allocation; the allocator charges it to the device that just
//! authenticated and hands back a [`MeteredSocket`], which meters bytes, ends the
//! allocation at its maximum lifetime and can be closed from outside.
//!
//! Ending an allocation from inside the socket works because of how turn 0.17 is
//! built: when the relay socket's `recv_from` fails, the allocation's task removes
//! the allocation from the server and stops, and dropping the allocation drops the
//! socket, which frees the port and the device's slot.

use std::any::Any;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::net::UdpSocket;
use tokio::time::Instant;
use turn::relay::RelayAddressGenerator;
use webrtc_util::Conn;

use super::auth::CurrentDevice;
use super::quota::{AllocationTicket, Registry, RelayQuotas, TokenBucket};

/// The turn [`RelayAddressGenerator`]: binds one UDP socket per allocation on
/// `bind_ip` and advertises it at `relay_ip`.
pub(super) struct Allocator {
    pub(super) bind_ip: IpAddr,
    pub(super) relay_ip: IpAddr,
    pub(super) quotas: RelayQuotas,
    pub(super) registry: Arc<Registry>,
    pub(super) current: CurrentDevice,
}

#[async_trait]
impl RelayAddressGenerator for Allocator {
    fn validate(&self) -> Result<(), turn::Error> {
        Ok(())
    }

    async fn allocate_conn(
        &self,
        use_ipv4: bool,
        requested_port: u16,
    ) -> Result<(Arc<dyn Conn + Send + Sync>, SocketAddr), turn::Error> {
        if use_ipv4 != self.relay_ip.is_ipv4() {
            return Err(turn::Error::Other(format!(
                "this relay only has {} relayed addresses",
                if self.relay_ip.is_ipv4() { "IPv4" } else { "IPv6" }
            )));
        }
        let device = self.current.lock().expect("relay current-device lock poisoned").ok_or_else(|| {
            turn::Error::Other("allocation requested without an authenticated device".into())
        })?;
        let ticket = self.registry.register(device).map_err(|err| {
            tracing::warn!(%device, live = err.live, "refused TURN allocation: allocation quota reached");
            turn::Error::Other(err.to_string())
        })?;
        let socket = UdpSocket::bind(SocketAddr::new(self.bind_ip, requested_port)).await.map_err(|err| {
            tracing::warn!(%device, bind_ip = %self.bind_ip, "binding a relay socket failed: {err}");
            err
        })?;
        let relay_addr = SocketAddr::new(self.relay_ip, socket.local_addr()?.port());
        tracing::info!(%device, %relay_addr, "relay allocation created");
        let socket = MeteredSocket::new(socket, ticket, relay_addr, &self.quotas, Instant::now());
        Ok((Arc::new(socket), relay_addr))
    }
}

/// An allocation's relay socket with its quotas. Datagrams over the byte rate are
/// dropped (in both directions); after the lifetime deadline, or once the
/// [`Registry`] closes the allocation, every call fails.
pub(super) struct MeteredSocket {
    socket: UdpSocket,
    ticket: AllocationTicket,
    relay_addr: SocketAddr,
    deadline: Instant,
    /// Peer → device: what arrives on this socket.
    inbound: Meter,
    /// Device → peer: what the server sends from this socket.
    outbound: Meter,
}

/// One direction's byte budget.
struct Meter {
    direction: &'static str,
    bucket: Mutex<TokenBucket>,
    /// Whether datagrams are being dropped now, so that a quota trip is logged once
    /// per episode, not once per datagram.
    throttled: AtomicBool,
}

impl Meter {
    fn new(direction: &'static str, bytes_per_second: u64, now: Instant) -> Self {
        Self {
            direction,
            bucket: Mutex::new(TokenBucket::new(bytes_per_second, now)),
            throttled: AtomicBool::new(false),
        }
    }
}

impl MeteredSocket {
    fn new(
        socket: UdpSocket,
        ticket: AllocationTicket,
        relay_addr: SocketAddr,
        quotas: &RelayQuotas,
        now: Instant,
    ) -> Self {
        let rate = quotas.bytes_per_second_per_allocation;
        Self {
            socket,
            ticket,
            relay_addr,
            deadline: now + quotas.max_allocation_lifetime,
            inbound: Meter::new("peer to device", rate, now),
            outbound: Meter::new("device to peer", rate, now),
        }
    }

    fn ensure_open(&self) -> Result<(), webrtc_util::Error> {
        if self.ticket.is_closed() || Instant::now() >= self.deadline {
            return Err(closed_error());
        }
        Ok(())
    }

    /// Whether a datagram of `len` bytes fits in `meter`'s budget now; logs when
    /// the device starts hitting the limit.
    fn admit(&self, meter: &Meter, len: usize) -> bool {
        let admitted = meter
            .bucket
            .lock()
            .expect("relay token bucket lock poisoned")
            .try_take(len.try_into().unwrap_or(u64::MAX), Instant::now());
        let was_throttled = meter.throttled.swap(!admitted, Ordering::Relaxed);
        if !admitted && !was_throttled {
            tracing::info!(
                device = %self.ticket.device(),
                relay_addr = %self.relay_addr,
                direction = meter.direction,
                "relay bandwidth quota reached; dropping datagrams"
            );
        }
        admitted
    }
}

fn closed_error() -> webrtc_util::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "relay allocation closed").into()
}

#[async_trait]
impl Conn for MeteredSocket {
    async fn connect(&self, addr: SocketAddr) -> Result<(), webrtc_util::Error> {
        Ok(self.socket.connect(addr).await?)
    }

    async fn recv(&self, buf: &mut [u8]) -> Result<usize, webrtc_util::Error> {
        self.recv_from(buf).await.map(|(n, _)| n)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddr), webrtc_util::Error> {
        loop {
            self.ensure_open()?;
            let (n, from) = tokio::select! {
                received = self.socket.recv_from(buf) => received?,
                () = tokio::time::sleep_until(self.deadline) => {
                    tracing::info!(
                        device = %self.ticket.device(),
                        relay_addr = %self.relay_addr,
                        "relay allocation reached its maximum lifetime; closing it"
                    );
                    return Err(closed_error());
                }
                () = self.ticket.closed() => return Err(closed_error()),
            };
            if self.admit(&self.inbound, n) {
                return Ok((n, from));
            }
        }
    }

    async fn send(&self, buf: &[u8]) -> Result<usize, webrtc_util::Error> {
        self.ensure_open()?;
        if !self.admit(&self.outbound, buf.len()) {
            return Ok(buf.len());
        }
        Ok(self.socket.send(buf).await?)
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> Result<usize, webrtc_util::Error> {
        self.ensure_open()?;
        if !self.admit(&self.outbound, buf.len()) {
            // Dropped like on a congested link. Reporting the full length keeps the
            // turn server from logging a short write for every dropped datagram.
            return Ok(buf.len());
        }
        Ok(self.socket.send_to(buf, target).await?)
    }

    fn local_addr(&self) -> Result<SocketAddr, webrtc_util::Error> {
        Ok(self.socket.local_addr()?)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    /// Called by the turn server when the allocation ends (refresh with lifetime 0,
    /// expiry, deletion, shutdown); makes `recv_from` fail so its task stops.
    async fn close(&self) -> Result<(), webrtc_util::Error> {
        self.ticket.close();
        Ok(())
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }
}
