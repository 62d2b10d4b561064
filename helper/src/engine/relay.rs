//! This device's client of the relay server (rtc-turn): the server-reflexive address by STUN
//! Binding, the relayed address by TURN allocation, TURN permissions, and sends through the
//! relay. One allocation serves every peer.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc_ice::crypto::RTCCryptoProvider;
use rtc_shared::error::Error as RtcError;
use rtc_shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rtc_stun::error_code::{ErrorCodeAttribute, CODE_ALLOC_MISMATCH, CODE_STALE_NONCE};
use rtc_stun::message::{
    Getter, Message, TransactionId, METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION, METHOD_REFRESH,
};
use rtc_turn::client::{Client, ClientConfig, Event};
use sansio::Protocol;

use super::demux::{classify, stun_class, Kind, StunClass};
use super::{RelayServer, Transmit};

/// How often the STUN Binding is repeated: it keeps the NAT's mapping towards the server
/// alive and notices when the mapping changes (NAT rebinding). 25 s stays below the 30 s
/// UDP timeout common in home routers.
const BINDING_INTERVAL: Duration = Duration::from_secs(25);
/// First wait before a failed allocation is tried again; doubles up to [`RELAY_RETRY_MAX`].
const RELAY_RETRY_MIN: Duration = Duration::from_secs(2);
/// Longest wait between allocation attempts: a relay that comes back is used within a minute.
const RELAY_RETRY_MAX: Duration = Duration::from_secs(60);
/// A binding in flight for less than this answers a request for a fresh server-reflexive
/// address; an older one (retransmitted after rtc-turn's growing delays, or sent before a
/// sleep) is left to finish on its own and a new one is sent.
const BINDING_FRESH: Duration = Duration::from_secs(1);
/// Bindings given up for a newer one whose answers are still welcome, at most.
const MAX_ABANDONED_BINDINGS: usize = 4;

/// What the relay client reports to the engine.
#[derive(Debug)]
pub(crate) enum RelayEvent {
    /// The STUN server sees us at this address (first answer, or the mapping changed).
    ServerReflexive(SocketAddr),
    /// We have (a new) relayed address.
    Allocated(SocketAddr),
    /// The allocation failed; it is tried again after `retry_in`.
    AllocationFailed { reason: String, retry_in: Duration },
    /// A datagram from `peer` that arrived through our allocation.
    Data { peer: SocketAddr, data: BytesMut },
}

#[derive(Debug, Clone, Copy)]
enum Allocation {
    /// Waiting for the answer to the Allocate with this transaction id.
    Requesting(TransactionId),
    Allocated(SocketAddr),
    /// Failed; try again at this instant.
    Waiting(Instant),
}

/// One TURN client on the shared socket, driven like the ICE agents.
pub(crate) struct RelayClient {
    server: SocketAddr,
    local: SocketAddr,
    username: String,
    password: String,
    realm: String,
    crypto: Arc<dyn RTCCryptoProvider>,
    turn: Client,
    /// The binding in flight, and when it was sent.
    binding: Option<(TransactionId, Instant)>,
    /// Older bindings still in flight: their answers count, their timeouts do not.
    abandoned: VecDeque<TransactionId>,
    next_binding: Instant,
    allocation: Allocation,
    retry_backoff: Duration,
    srflx: Option<SocketAddr>,
    events: VecDeque<RelayEvent>,
}

impl std::fmt::Debug for RelayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password stays out of logs.
        f.debug_struct("RelayClient")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("allocation", &self.allocation)
            .field("srflx", &self.srflx)
            .finish_non_exhaustive()
    }
}

/// Whether `tid` is the Allocate `ours`: rtc-turn sends an anonymous request first and the
/// authenticated one with the last byte incremented, and reports the latter's id.
fn same_allocate(tid: &TransactionId, ours: &TransactionId) -> bool {
    tid.0[..11] == ours.0[..11]
}

impl RelayClient {
    /// Starts the STUN Binding and the TURN allocation. `local` is the socket address the
    /// client reports as its own (the first host address).
    pub(crate) fn new(
        server: &RelayServer,
        local: SocketAddr,
        crypto: Arc<dyn RTCCryptoProvider>,
        now: Instant,
    ) -> Result<Self, RtcError> {
        let turn = Self::client(server, local, &crypto)?;
        let mut relay = Self {
            server: server.addr,
            local,
            username: server.username.clone(),
            password: server.password.clone(),
            realm: server.realm.clone(),
            crypto,
            turn,
            binding: None,
            abandoned: VecDeque::new(),
            next_binding: now,
            allocation: Allocation::Waiting(now),
            retry_backoff: RELAY_RETRY_MIN,
            srflx: None,
            events: VecDeque::new(),
        };
        relay.handle_timeout(now);
        Ok(relay)
    }

    fn client(
        server: &RelayServer,
        local: SocketAddr,
        crypto: &Arc<dyn RTCCryptoProvider>,
    ) -> Result<Client, RtcError> {
        Client::new(
            ClientConfig {
                // An IP literal: rtc-turn resolves names with blocking DNS.
                turn_serv_addr: server.addr.to_string(),
                local_addr: local,
                transport_protocol: TransportProtocol::UDP,
                username: server.username.clone(),
                password: server.password.clone(),
                realm: server.realm.clone(),
                ..Default::default()
            },
            crypto.clone(),
        )
    }

    pub(crate) fn server(&self) -> SocketAddr {
        self.server
    }

    pub(crate) fn relayed(&self) -> Option<SocketAddr> {
        match self.allocation {
            Allocation::Allocated(addr) => Some(addr),
            _ => None,
        }
    }

    pub(crate) fn srflx(&self) -> Option<SocketAddr> {
        self.srflx
    }

    /// The host address the client counts as its own (its allocation's base).
    pub(crate) fn local(&self) -> SocketAddr {
        self.local
    }

    /// Asks for our server-reflexive address now, unless a binding sent moments ago is
    /// still in flight. A changed address brings a new allocation (see `pump`).
    pub(crate) fn refresh_binding(&mut self, now: Instant) {
        if let Some((tid, sent)) = self.binding {
            if now.saturating_duration_since(sent) < BINDING_FRESH {
                return;
            }
            if self.abandoned.len() == MAX_ABANDONED_BINDINGS {
                self.abandoned.pop_front();
            }
            self.abandoned.push_back(tid);
            self.binding = None;
        }
        self.next_binding = now;
        self.handle_timeout(now);
    }

    /// After a sleep or a stop: the NAT mapping and the allocation may be gone. A binding
    /// shows a changed mapping (then the client allocates anew), a refresh a lost
    /// allocation (the server answers 437: allocating anew too, see `handle_datagram`).
    pub(crate) fn recheck(&mut self, now: Instant) {
        if matches!(self.allocation, Allocation::Allocated(_)) {
            if let Err(e) = self.turn.refresh_allocations(now) {
                tracing::debug!(error = %e, "cannot refresh the relay allocation");
            }
        }
        // After a failure, try again now rather than after the backoff.
        if let Allocation::Waiting(_) = self.allocation {
            self.allocation = Allocation::Waiting(now);
            self.retry_backoff = RELAY_RETRY_MIN;
        }
        self.refresh_binding(now);
    }

    /// Our host address `local` replaces the base, which the machine no longer has: the
    /// allocation's 5-tuple is gone with it, so the client starts over from `local`.
    pub(crate) fn rebase(&mut self, now: Instant, local: SocketAddr) {
        tracing::info!(old = %self.local, new = %local, "relay client moves to a new host address");
        self.local = local;
        self.srflx = None;
        self.reallocate(now);
        self.next_binding = now;
        self.handle_timeout(now);
    }

    /// New short-lived credentials for the same server: the allocation is kept and
    /// refreshed with them at once (rtc-turn `update_credentials` + `refresh_allocations`).
    pub(crate) fn update_credentials(&mut self, now: Instant, server: &RelayServer) {
        if (self.username.as_str(), self.password.as_str())
            == (server.username.as_str(), server.password.as_str())
        {
            return;
        }
        self.username = server.username.clone();
        self.password = server.password.clone();
        self.realm = server.realm.clone();
        if let Err(e) = self.turn.update_credentials(server.username.clone(), server.password.clone()) {
            tracing::warn!(error = %e, "cannot apply new relay credentials");
            return;
        }
        match self.allocation {
            Allocation::Allocated(_) => {
                if let Err(e) = self.turn.refresh_allocations(now) {
                    tracing::warn!(error = %e, "cannot refresh the relay allocation");
                }
            }
            // The failure may have been the old credentials: try at once.
            Allocation::Waiting(_) => self.allocation = Allocation::Waiting(now),
            Allocation::Requesting(_) => {}
        }
        self.pump(now);
    }

    /// A datagram from the relay server (STUN or ChannelData).
    pub(crate) fn handle_datagram(&mut self, now: Instant, data: &[u8]) {
        if matches!(self.allocation, Allocation::Allocated(_)) && allocation_lost(data) {
            // rtc-turn only logs a refused refresh; the relayed address would stay dead.
            tracing::warn!(server = %self.server, "the relay server lost our allocation: allocating anew");
            self.reallocate(now);
            self.handle_timeout(now);
            return;
        }
        let msg = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.local,
                peer_addr: self.server,
                transport_protocol: TransportProtocol::UDP,
                ecn: None,
            },
            message: BytesMut::from(data),
        };
        if let Err(e) = self.turn.handle_read(msg) {
            tracing::debug!(error = %e, "relay server datagram dropped");
        }
        self.pump(now);
    }

    /// Sends `payload` to `peer` from our relayed address. Before the permission for `peer`
    /// exists rtc-turn refuses to send: then the permission is requested and this datagram
    /// dropped (ICE and WireGuard retransmit).
    pub(crate) fn send_to(&mut self, now: Instant, peer: SocketAddr, payload: &[u8]) {
        let Some(relayed) = self.relayed() else { return };
        let Ok(mut relay) = self.turn.relay(relayed) else { return };
        match relay.send_to(now, payload, peer) {
            Ok(()) => {}
            Err(RtcError::ErrNoPermission) => {
                if let Err(e) = relay.create_permission(now, peer) {
                    tracing::debug!(%peer, error = %e, "cannot request a relay permission");
                }
            }
            Err(e) => tracing::debug!(%peer, error = %e, "relayed send dropped"),
        }
    }

    /// Asks the server to let `peer` send to our relayed address (and us to it).
    pub(crate) fn permit(&mut self, now: Instant, peer: SocketAddr) {
        let Some(relayed) = self.relayed() else { return };
        if let Ok(mut relay) = self.turn.relay(relayed) {
            if let Err(e) = relay.create_permission(now, peer) {
                tracing::debug!(%peer, error = %e, "cannot request a relay permission");
            }
        }
    }

    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        self.turn.poll_write().map(|t| Transmit { dst: t.transport.peer_addr, payload: t.message.to_vec() })
    }

    pub(crate) fn poll_event(&mut self) -> Option<RelayEvent> {
        self.events.pop_front()
    }

    pub(crate) fn poll_timeout(&mut self) -> Option<Instant> {
        let retry = match self.allocation {
            Allocation::Waiting(at) => Some(at),
            _ => None,
        };
        [self.turn.poll_timeout(), Some(self.next_binding), retry].into_iter().flatten().min()
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.turn.poll_timeout().is_some_and(|t| t <= now) {
            if let Err(e) = self.turn.handle_timeout(now) {
                tracing::debug!(error = %e, "relay client timeout");
            }
            // Transactions that just gave up (a binding) are settled before sending more.
            self.pump(now);
        }
        if self.next_binding <= now {
            self.next_binding = now + BINDING_INTERVAL;
            // One Binding at a time: rtc-turn gives up on one after about 10 s of
            // retransmissions, well within the interval.
            if self.binding.is_none() {
                match self.turn.send_binding_request_to(now, self.server) {
                    Ok(tid) => self.binding = Some((tid, now)),
                    Err(e) => tracing::debug!(error = %e, "cannot send a STUN binding"),
                }
            }
        }
        if let Allocation::Waiting(at) = self.allocation {
            if at <= now {
                match self.turn.allocate(now) {
                    Ok(tid) => self.allocation = Allocation::Requesting(tid),
                    Err(e) => self.allocation_failed(now, format!("cannot send the allocate request: {e}")),
                }
            }
        }
        self.pump(now);
    }

    /// Releases the allocation (a refresh with lifetime 0); drain [`Self::poll_transmit`] after.
    pub(crate) fn close(&mut self, now: Instant) {
        if let Some(relayed) = self.relayed() {
            if let Ok(mut relay) = self.turn.relay(relayed) {
                let _ = relay.close(now);
            }
        }
    }

    fn allocation_failed(&mut self, now: Instant, reason: String) {
        let retry_in = self.retry_backoff;
        self.retry_backoff = (self.retry_backoff * 2).min(RELAY_RETRY_MAX);
        tracing::warn!(server = %self.server, %reason, ?retry_in, "relay allocation failed");
        self.allocation = Allocation::Waiting(now + retry_in);
        self.events.push_back(RelayEvent::AllocationFailed { reason, retry_in });
    }

    /// Turns the TURN client's events into ours.
    fn pump(&mut self, now: Instant) {
        while let Some(e) = self.turn.poll_event() {
            match e {
                Event::BindingResponse(tid, mapped) if self.is_binding(&tid) => {
                    self.settle_binding(tid);
                    self.mapped(now, mapped);
                }
                Event::BindingError(tid, e) if self.is_binding(&tid) => {
                    self.settle_binding(tid);
                    tracing::debug!(error = %e, "STUN binding failed");
                }
                Event::AllocateResponse(_, relayed) => {
                    tracing::info!(%relayed, server = %self.server, "relay allocated");
                    self.allocation = Allocation::Allocated(relayed);
                    self.retry_backoff = RELAY_RETRY_MIN;
                    self.events.push_back(RelayEvent::Allocated(relayed));
                }
                Event::AllocateError(_, e) => self.allocation_failed(now, e.to_string()),
                Event::TransactionTimeout(tid) => match self.allocation {
                    Allocation::Requesting(ours) if same_allocate(&tid, &ours) => {
                        self.allocation_failed(now, "the relay server did not answer".into())
                    }
                    _ if self.is_binding(&tid) => {
                        self.settle_binding(tid);
                    }
                    Allocation::Allocated(relayed) => {
                        // A refresh, permission or channel bind went unanswered through all
                        // retransmissions: the server is gone or lost our allocation
                        // (rtc-turn reports neither). Start over.
                        tracing::warn!(%relayed, "the relay server stopped answering: allocating anew");
                        self.reallocate(now);
                    }
                    _ => tracing::debug!("relay transaction timed out"),
                },
                Event::CreatePermissionError(_, e) => tracing::debug!(error = %e, "relay permission refused"),
                Event::DataIndicationOrChannelData(_, peer, data) => {
                    self.events.push_back(RelayEvent::Data { peer, data })
                }
                _ => {}
            }
        }
    }

    /// A binding's answer: the server sees us at `mapped`.
    fn mapped(&mut self, now: Instant, mapped: SocketAddr) {
        if self.srflx == Some(mapped) {
            return;
        }
        let changed = self.srflx.is_some();
        self.srflx = Some(mapped);
        self.events.push_back(RelayEvent::ServerReflexive(mapped));
        if changed {
            // A new mapping is a new 5-tuple for the server: the old allocation cannot be
            // refreshed any more. Start over with a fresh client.
            self.reallocate(now);
        }
    }

    /// Whether `tid` is one of our bindings in flight (the current one or an abandoned one).
    fn is_binding(&self, tid: &TransactionId) -> bool {
        self.binding.is_some_and(|(ours, _)| ours == *tid) || self.abandoned.contains(tid)
    }

    /// Forgets binding `tid`, answered or given up.
    fn settle_binding(&mut self, tid: TransactionId) {
        if self.binding.is_some_and(|(ours, _)| ours == tid) {
            self.binding = None;
        }
        self.abandoned.retain(|t| *t != tid);
    }

    /// Drops the TURN client and allocates anew.
    fn reallocate(&mut self, now: Instant) {
        let server = RelayServer {
            addr: self.server,
            username: self.username.clone(),
            password: self.password.clone(),
            realm: self.realm.clone(),
        };
        match Self::client(&server, self.local, &self.crypto) {
            Ok(turn) => {
                // Events of the old client still queued are of no use any more.
                self.turn = turn;
                self.binding = None;
                self.abandoned.clear();
                self.allocation = Allocation::Waiting(now);
                self.retry_backoff = RELAY_RETRY_MIN;
            }
            Err(e) => self.allocation_failed(now, format!("cannot make a relay client: {e}")),
        }
    }
}

/// Whether a datagram from the server says it has no allocation for us any more: an error
/// response to a Refresh (other than a stale nonce, which rtc-turn retries), or 437
/// Allocation Mismatch to a permission or channel request.
fn allocation_lost(data: &[u8]) -> bool {
    if classify(data) != Kind::Stun || stun_class(data) != StunClass::ErrorResponse {
        return false;
    }
    let mut m = Message::new();
    m.raw = data.to_vec();
    if m.decode().is_err() {
        return false;
    }
    let mut code = ErrorCodeAttribute::default();
    if code.get_from(&m).is_err() {
        return false;
    }
    match m.typ.method {
        // A stale nonce is retried by rtc-turn; anything else leaves no allocation to refresh.
        METHOD_REFRESH => code.code != CODE_STALE_NONCE,
        // 437: the server has no allocation for this 5-tuple (RFC 8656 §18).
        METHOD_CREATE_PERMISSION | METHOD_CHANNEL_BIND => code.code == CODE_ALLOC_MISMATCH,
        _ => false,
    }
}
