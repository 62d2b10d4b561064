//! The connection engine: every peer's ICE agent (rtc-ice), this device's STUN/TURN client
//! (rtc-turn) and every peer's WireGuard session (boringtun), on ONE UDP socket, as a
//! sans-IO state machine. See [`Engine`] for the contract.
//!
//! Code map:
//! * `demux`: sorts datagrams by their first bytes; reads routing fields.
//! * `ice`: the seam around rtc-ice (`PathAgent`); nothing else names rtc-ice types.
//! * `relay`: the relay server client: server-reflexive address, TURN allocation.
//! * `peer`: one peer: ICE sessions (the `PeerSignal` protocol), `Tunn`, health.
//! * `icmp`: IPv4 addresses and the ICMP echoes of [`Engine::ping`].
//! * `suspend`: noticing a sleep or a stop from two clocks, for [`Engine::handle_resume`].

mod demux;
mod ice;
mod icmp;
mod peer;
mod relay;
mod suspend;
#[cfg(test)]
mod tests;

pub use suspend::{SuspendDetector, SUSPEND_THRESHOLD};

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::{Packet, Tunn};
use rtc_ice::crypto::RTCCryptoProvider;
use trellis_protocol::ipc::{PathInfo, PeerState};
pub use trellis_protocol::peer::PeerSignal;
use trellis_protocol::{OverlayIp, PublicKey};
use x25519_dalek::StaticSecret;

use demux::{
    classify, stun_class, stun_transaction_id, stun_username_receiver, wireguard_receiver_index, Kind,
};
use ice::LocalCandidate;
use peer::{Ctx, Peer};
use relay::{RelayClient, RelayEvent};

/// How often boringtun's timers run. `Tunn` has no `poll_timeout`; its own device loop ticks
/// every 250 ms and its timers have about 1 s granularity. It also stamps sent/received
/// packets with the time of the last tick, so without regular ticks keepalives misfire.
pub const WG_TIMER_TICK: Duration = Duration::from_millis(250);
/// Largest datagram or IP packet handled, in bytes (the UDP and IPv4 maximum).
const MAX_PACKET: usize = 65_535;
/// boringtun writes a packet plus 32 bytes of header and tag into the scratch buffer.
const BUF_LEN: usize = MAX_PACKET + 32;
/// How long the owner of an ICE check is remembered, to route its response. rtc-ice
/// discards responses after 4 s (its binding request timeout) anyway.
const STUN_OWNER_TTL: Duration = Duration::from_secs(10);
/// WireGuard session indices are 24 bits (boringtun keeps the low 8 bits for itself).
const INDEX_MASK: u32 = 0x00FF_FFFF;

/// What the engine needs to know about this device.
#[derive(Clone)]
pub struct EngineConfig {
    /// The device key, also the WireGuard static key. Never logged.
    pub secret: StaticSecret,
    pub my_ip: OverlayIp,
    /// The concrete local addresses (ip:port, never 0.0.0.0) of the ONE UDP socket: the
    /// host candidates. Datagrams are reported with the one they arrived on.
    pub host_addrs: Vec<SocketAddr>,
}

impl std::fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineConfig")
            .field("public", &PublicKey::of(&self.secret))
            .field("my_ip", &self.my_ip)
            .field("host_addrs", &self.host_addrs)
            .finish_non_exhaustive()
    }
}

/// The relay (STUN + TURN) server and this device's short-lived TURN credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct RelayServer {
    /// An IP literal: resolve the name in the IO layer (rtc-turn would block on DNS).
    pub addr: SocketAddr,
    pub username: String,
    pub password: String,
    pub realm: String,
}

impl std::fmt::Debug for RelayServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayServer")
            .field("addr", &self.addr)
            .field("username", &self.username)
            .field("realm", &self.realm)
            .finish_non_exhaustive()
    }
}

/// The host address the relay client uses as its base: the first of the server's address
/// family, else the first, else none (the unspecified address, until the machine has one).
fn relay_base(host_addrs: &[SocketAddr], server: SocketAddr) -> SocketAddr {
    host_addrs
        .iter()
        .find(|a| a.is_ipv4() == server.is_ipv4())
        .or(host_addrs.first())
        .copied()
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
}

/// One other member of the network.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PeerConfig {
    pub key: PublicKey,
    pub ip: OverlayIp,
    pub name: String,
    /// Connected to the signal server.
    pub online: bool,
}

/// A datagram to send from the UDP socket.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Transmit {
    pub dst: SocketAddr,
    pub payload: Vec<u8>,
}

/// What the engine reports.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum EngineEvent {
    PeerState {
        key: PublicKey,
        state: PeerState,
    },
    /// The path ICE validated changed; `None` when ICE failed.
    PathChanged {
        key: PublicKey,
        path: Option<PathInfo>,
    },
    /// The reply to [`Engine::ping`] came back after `rtt`.
    PingReply {
        key: PublicKey,
        rtt: Duration,
    },
    /// The relay server sees this device at `addr` (its public address, if behind a NAT).
    ServerReflexive {
        addr: SocketAddr,
    },
    /// The relay gave this device a relayed address.
    RelayAllocated {
        relayed: SocketAddr,
    },
    /// The relay allocation failed; the engine tries again after `retry_in`.
    RelayFailed {
        reason: String,
        retry_in: Option<Duration>,
    },
    /// The path to the peer stopped carrying traffic: WireGuard data went unanswered and a
    /// test handshake too, or ICE lost consent (5 s without traffic), or WireGuard was
    /// silent for a minute. The engine is finding a new path (ICE restarted at once), which
    /// needs the signal server: a NAT that rebound has killed the signal connection too, so
    /// check it now rather than at its next keepalive.
    PathLost {
        key: PublicKey,
    },
}

/// One peer as the engine sees it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PeerStatus {
    pub key: PublicKey,
    pub ip: OverlayIp,
    pub name: String,
    pub online: bool,
    pub state: PeerState,
    pub path: Option<PathInfo>,
    /// Time since the current WireGuard session's handshake.
    pub last_handshake: Option<Duration>,
    /// Time since the last authenticated WireGuard packet from the peer.
    pub last_rx: Option<Duration>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// The last ping's round trip, else the WireGuard handshake's.
    pub rtt: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("no peer with key {0:?} in the network")]
    UnknownPeer(PublicKey),
}

/// The engine's output queues.
#[derive(Debug, Default)]
pub(crate) struct Outputs {
    pub transmits: VecDeque<Transmit>,
    pub tun: VecDeque<Vec<u8>>,
    pub signals: VecDeque<(PublicKey, PeerSignal)>,
    pub events: VecDeque<EngineEvent>,
    /// Emptied datagram and packet buffers handed back by [`Engine::recycle`]: the data path
    /// reuses them instead of allocating one (and freeing it) per packet.
    spare: Vec<Vec<u8>>,
}

/// How many spare buffers are kept: the packets of one batch in flight (one `recvmmsg`
/// with GRO brings up to about 350 datagrams; see the daemon's batch sizes) with room to
/// spare, at most 768 KiB; beyond it, returned buffers are freed.
const MAX_SPARE_BUFFERS: usize = 512;
/// Capacity of a new buffer: a full-size WireGuard datagram (1420-byte MTU + 32) or
/// ChannelData, so that a buffer once allocated serves any packet of the overlay's MTU.
const NEW_BUFFER_BYTES: usize = 1536;

impl Outputs {
    /// An empty buffer holding a copy of `bytes`, from the spares when there is one.
    pub fn copy_of(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut buf =
            self.spare.pop().unwrap_or_else(|| Vec::with_capacity(NEW_BUFFER_BYTES.max(bytes.len())));
        buf.clear();
        buf.extend_from_slice(bytes);
        buf
    }

    fn recycle(&mut self, buf: Vec<u8>) {
        // A smaller buffer (a relay's STUN or ChannelData message, sized to fit) would have
        // to grow for the next full-size packet: freed instead.
        if self.spare.len() < MAX_SPARE_BUFFERS && buf.capacity() >= NEW_BUFFER_BYTES {
            self.spare.push(buf);
        }
    }
}

/// The connection engine: a sans-IO state machine, no socket, no TUN, no clock, no task.
///
/// # Contract
/// 1. [`Engine::new`] (with no host address at all if the machine has none yet);
///    [`Engine::set_relay`] once the signal server handed out TURN
///    credentials (and again with fresh ones before they expire); [`Engine::set_peers`]
///    with the network's other members whenever membership or presence changes.
/// 2. Feed every input as it happens, with the current time (`now` never goes backwards):
///    * each datagram of the UDP socket: [`Engine::handle_datagram`], with the local address
///      it arrived on (one of [`EngineConfig::host_addrs`]);
///    * each IP packet read from the TUN: [`Engine::handle_tun_packet`];
///    * each opened sealed envelope from a peer: [`Engine::handle_signal`];
///    * when [`Engine::poll_timeout`] has passed: [`Engine::handle_timeout`];
///    * when the machine's addresses changed: [`Engine::set_host_addrs`];
///    * after a sleep or a stop ([`SuspendDetector`]): [`Engine::handle_resume`].
/// 3. After each input, drain the outputs: [`Engine::poll_transmit`] (send from the socket),
///    [`Engine::poll_tun_packet`] (write to the TUN), [`Engine::poll_signal`] (seal and send
///    through the signal server), [`Engine::poll_event`]. Hand each datagram's and packet's
///    buffer back with [`Engine::recycle`] once written (optional: it saves an allocation
///    per packet). Then sleep until
///    [`Engine::poll_timeout`] (`None`: until the next input). Inputs never block and
///    errors never escape: a bad datagram is logged (with the peer's short key) and dropped.
///
/// boringtun reads its own clock (`Tunn` takes no `now`). With its `mock-instant` feature
/// that clock is `mock_instant`'s thread-local one, which tests advance together with `now`.
pub struct Engine {
    secret: StaticSecret,
    public: PublicKey,
    wg_public: x25519_dalek::PublicKey,
    my_ip: Ipv4Addr,
    host_addrs: Vec<SocketAddr>,
    crypto: Arc<dyn RTCCryptoProvider>,
    relay: Option<RelayClient>,
    /// Host, server-reflexive and relayed candidates, the same for every peer.
    locals: Vec<LocalCandidate>,
    peers: BTreeMap<PublicKey, Peer>,
    by_ip: HashMap<Ipv4Addr, PublicKey>,
    by_index: HashMap<u32, PublicKey>,
    stun_owners: HashMap<[u8; 12], (PublicKey, Instant)>,
    next_index: u32,
    out: Outputs,
    buf: Vec<u8>,
    next_wg_tick: Instant,
    next_purge: Instant,
    /// The relay client's deadline as of the last time it was polled.
    relay_deadline: Option<Instant>,
    timeout: Option<Instant>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("public", &self.public)
            .field("my_ip", &self.my_ip)
            .field("relay", &self.relay)
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

impl Engine {
    pub fn new(config: EngineConfig, now: Instant) -> Self {
        let public = PublicKey::of(&config.secret);
        let crypto = rtc_ice::crypto::default_provider()
            .expect("rtc-crypto is built with its default (ring) provider");
        let host_addrs = config.host_addrs;
        Self {
            wg_public: x25519_dalek::PublicKey::from(&config.secret),
            secret: config.secret,
            public,
            my_ip: config.my_ip.0,
            locals: host_addrs.iter().copied().map(LocalCandidate::Host).collect(),
            host_addrs,
            crypto,
            relay: None,
            peers: BTreeMap::new(),
            by_ip: HashMap::new(),
            by_index: HashMap::new(),
            stun_owners: HashMap::new(),
            next_index: rand::random::<u32>() & INDEX_MASK,
            out: Outputs::default(),
            buf: vec![0; BUF_LEN],
            next_wg_tick: now + WG_TIMER_TICK,
            next_purge: now + STUN_OWNER_TTL,
            relay_deadline: None,
            timeout: None,
        }
    }

    /// This device's public key.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// Borrows the peers and everything a peer operation needs, separately.
    fn parts(&mut self, now: Instant) -> (&mut BTreeMap<PublicKey, Peer>, Ctx<'_>) {
        let Engine { my_ip, host_addrs, locals, relay, out, stun_owners, buf, peers, .. } = self;
        (
            peers,
            Ctx { now, my_ip: *my_ip, host_addrs, locals, relay, out, stun_owners, buf, relay_used: false },
        )
    }

    /// Sets, replaces or (with `None`) removes the relay server. Calling it again for the same
    /// server with new credentials keeps the allocation and refreshes it with them.
    pub fn set_relay(&mut self, relay: Option<RelayServer>, now: Instant) {
        match (relay, self.relay.as_mut()) {
            (Some(server), Some(current)) if current.server() == server.addr => {
                current.update_credentials(now, &server);
            }
            (server, _) => {
                self.drop_relay(now);
                if let Some(server) = server {
                    let local = relay_base(&self.host_addrs, server.addr);
                    match RelayClient::new(&server, local, self.crypto.clone(), now) {
                        Ok(client) => {
                            tracing::info!(server = %server.addr, "relay server set");
                            self.relay = Some(client);
                        }
                        Err(e) => {
                            let reason = format!("cannot use relay server {}: {e}", server.addr);
                            tracing::warn!(%reason);
                            self.out.events.push_back(EngineEvent::RelayFailed { reason, retry_in: None });
                        }
                    }
                }
            }
        }
        self.finish(now);
    }

    /// The machine's addresses changed: `host_addrs` (concrete ip:port of the one socket, as
    /// in [`EngineConfig::host_addrs`]; may be empty) replace the host candidates. When the
    /// set differs, every peer restarts ICE at once with the new candidates (and so does
    /// the peer, following us), the relay client asks the server for our public address
    /// again, and allocates anew from another address if its own is gone. WireGuard stays
    /// on a path that still works meanwhile.
    pub fn set_host_addrs(&mut self, host_addrs: Vec<SocketAddr>, now: Instant) {
        let sorted = |addrs: &[SocketAddr]| {
            let mut addrs = addrs.to_vec();
            addrs.sort_unstable();
            addrs.dedup();
            addrs
        };
        if sorted(&host_addrs) == sorted(&self.host_addrs) {
            return;
        }
        tracing::info!(old = ?self.host_addrs, new = ?host_addrs, "host addresses changed");
        self.host_addrs = host_addrs;
        if let Some(relay) = self.relay.as_mut() {
            if self.host_addrs.contains(&relay.local()) {
                // Same base, but the route out (and so the NAT mapping) may have changed.
                relay.refresh_binding(now);
            } else {
                relay.rebase(now, relay_base(&self.host_addrs, relay.server()));
            }
        }
        // Every peer restarts below with these; what the relay learns later is trickled.
        self.locals = self.compute_locals();
        let (peers, mut ctx) = self.parts(now);
        for peer in peers.values_mut() {
            peer.host_addrs_changed(&mut ctx);
        }
        self.finish(now);
    }

    /// The machine resumed from sleep, or the process from a long stop (see
    /// [`SuspendDetector`]): timers did not run, NAT mappings and WireGuard sessions may
    /// have expired meanwhile. Every peer re-handshakes at once and restarts ICE (no
    /// backoff); the relay client checks its public address and refreshes its allocation,
    /// allocating anew if either is gone.
    pub fn handle_resume(&mut self, now: Instant) {
        tracing::info!(peers = self.peers.len(), "resumed: checking every path again");
        if let Some(relay) = self.relay.as_mut() {
            relay.recheck(now);
        }
        // boringtun's timers (session expiry) run before anything else is sent.
        self.next_wg_tick = now;
        let (peers, mut ctx) = self.parts(now);
        for peer in peers.values_mut() {
            peer.tick_wireguard(&mut ctx);
            peer.resume(&mut ctx);
        }
        self.finish(now);
    }

    /// Releases the allocation and forgets the relay's candidates.
    fn drop_relay(&mut self, now: Instant) {
        let Some(mut relay) = self.relay.take() else { return };
        tracing::info!(server = %relay.server(), "relay server dropped");
        relay.close(now);
        while let Some(t) = relay.poll_transmit() {
            self.out.transmits.push_back(t);
        }
        self.refresh_locals(now);
    }

    /// Recomputes the local candidates after the relay client learnt or lost addresses:
    /// new ones are trickled to every peer; a peer whose path went through a relayed
    /// address that is gone restarts ICE.
    fn refresh_locals(&mut self, now: Instant) {
        let before = std::mem::take(&mut self.locals);
        self.locals = self.compute_locals();
        let added: Vec<LocalCandidate> =
            self.locals.iter().filter(|c| !before.contains(c)).copied().collect();
        let lost: Vec<SocketAddr> = before
            .iter()
            .filter_map(|c| match c {
                LocalCandidate::Relayed { addr, .. }
                    if self.relay.as_ref().and_then(RelayClient::relayed) != Some(*addr) =>
                {
                    Some(*addr)
                }
                _ => None,
            })
            .collect();
        let (peers, mut ctx) = self.parts(now);
        for peer in peers.values_mut() {
            for c in &added {
                peer.add_local_candidate(*c, &mut ctx);
            }
            for old in &lost {
                peer.relay_lost(*old, &mut ctx);
            }
        }
    }

    fn compute_locals(&self) -> Vec<LocalCandidate> {
        let mut locals: Vec<LocalCandidate> =
            self.host_addrs.iter().copied().map(LocalCandidate::Host).collect();
        let base = self.host_addrs.first().copied();
        if let Some(relay) = &self.relay {
            let srflx = relay.srflx().filter(|a| !self.host_addrs.contains(a));
            if let (Some(addr), Some(base)) = (srflx, base) {
                locals.push(LocalCandidate::ServerReflexive { addr, base });
            }
            if let (Some(addr), Some(related)) = (relay.relayed(), srflx.or(base)) {
                locals.push(LocalCandidate::Relayed { addr, related });
            }
        }
        locals
    }

    /// The network's other members: adds new peers, removes missing ones (their tunnels
    /// are torn down), updates the others. This device's own key is ignored.
    pub fn set_peers(&mut self, peers: &[PeerConfig], now: Instant) {
        let wanted: BTreeMap<PublicKey, &PeerConfig> =
            peers.iter().filter(|p| p.key != self.public).map(|p| (p.key, p)).collect();
        let gone: Vec<PublicKey> = self.peers.keys().filter(|k| !wanted.contains_key(k)).copied().collect();
        for key in gone {
            if let Some(peer) = self.peers.remove(&key) {
                tracing::info!(peer = %key.short(), "peer removed: tunnel torn down");
                self.by_index.remove(&peer.index);
                if self.by_ip.get(&peer.ip.0) == Some(&key) {
                    self.by_ip.remove(&peer.ip.0);
                }
            }
        }
        for (key, config) in wanted {
            if let Some(peer) = self.peers.get(&key) {
                if peer.ip != config.ip && self.by_ip.get(&peer.ip.0) == Some(&key) {
                    self.by_ip.remove(&peer.ip.0);
                }
                self.claim_ip(key, config.ip);
                let (peers, mut ctx) = self.parts(now);
                if let Some(peer) = peers.get_mut(&key) {
                    peer.update(config, &mut ctx);
                }
                continue;
            }
            let index = self.allocate_index();
            let first_session = u64::from(rand::random::<u32>());
            match Peer::new(config, self.public, &self.secret, index, self.crypto.clone(), first_session, now)
            {
                Ok(peer) => {
                    tracing::info!(peer = %key.short(), ip = %config.ip, name = %config.name, "peer added");
                    self.by_index.insert(index, key);
                    self.claim_ip(key, config.ip);
                    self.peers.insert(key, peer);
                    let (peers, mut ctx) = self.parts(now);
                    if let Some(peer) = peers.get_mut(&key) {
                        peer.begin(&mut ctx);
                    }
                }
                Err(e) => {
                    let reason = format!("cannot make an ICE agent: {e}");
                    tracing::error!(peer = %key.short(), %reason);
                    self.out
                        .events
                        .push_back(EngineEvent::PeerState { key, state: PeerState::Failed { reason } });
                }
            }
        }
        self.finish(now);
    }

    fn claim_ip(&mut self, key: PublicKey, ip: OverlayIp) {
        if let Some(other) = self.by_ip.insert(ip.0, key).filter(|other| *other != key) {
            tracing::warn!(%ip, peer = %key.short(), other = %other.short(), "two peers claim one address");
        }
    }

    fn allocate_index(&mut self) -> u32 {
        loop {
            self.next_index = self.next_index.wrapping_add(1) & INDEX_MASK;
            if !self.by_index.contains_key(&self.next_index) {
                return self.next_index;
            }
        }
    }

    /// A datagram that arrived on the UDP socket at `local` (one of the host addresses).
    pub fn handle_datagram(&mut self, local: SocketAddr, from: SocketAddr, packet: &[u8], now: Instant) {
        let from_relay_server = self.relay.as_ref().is_some_and(|r| r.server() == from);
        match classify(packet) {
            Kind::Stun | Kind::ChannelData if from_relay_server => {
                if let Some(relay) = self.relay.as_mut() {
                    relay.handle_datagram(now, packet);
                }
            }
            Kind::Stun => self.route_stun(local, from, packet, now),
            Kind::WireGuard => {
                let relay_used = self.route_wireguard(local, from, packet, now);
                self.finish_with(now, relay_used);
                return;
            }
            Kind::ChannelData | Kind::Unknown => {
                tracing::trace!(%from, len = packet.len(), "unknown datagram dropped")
            }
        }
        self.finish(now);
    }

    /// An ICE check or response: requests name our agent by its ufrag in USERNAME,
    /// responses by the transaction id of our request.
    fn route_stun(&mut self, local: SocketAddr, from: SocketAddr, packet: &[u8], now: Instant) {
        let owner = match stun_class(packet) {
            demux::StunClass::Request | demux::StunClass::Indication => stun_username_receiver(packet)
                .and_then(|ufrag| self.peers.values().find(|p| p.local_ufrag() == ufrag))
                .map(|p| p.key),
            _ => self.stun_owners.get(&stun_transaction_id(packet)).map(|(key, _)| *key),
        };
        let (peers, mut ctx) = self.parts(now);
        match owner.and_then(|key| peers.get_mut(&key)) {
            Some(peer) => peer.handle_stun(local, from, packet, &mut ctx),
            None => tracing::debug!(%from, "STUN for none of our ICE agents dropped"),
        }
    }

    /// A WireGuard datagram: the receiver index names our `Tunn`; a handshake initiation
    /// names none, so its sender's static key is decrypted to find the peer. Returns
    /// whether anything was sent through the relay client.
    fn route_wireguard(&mut self, local: SocketAddr, from: SocketAddr, packet: &[u8], now: Instant) -> bool {
        let owner = match wireguard_receiver_index(packet) {
            Some(index) => self.by_index.get(&(index >> 8)).copied(),
            None => match Tunn::parse_incoming_packet(packet) {
                Ok(Packet::HandshakeInit(init)) => parse_handshake_anon(&self.secret, &self.wg_public, &init)
                    .ok()
                    .map(|half| PublicKey::from_bytes(half.peer_static_public)),
                _ => None,
            },
        };
        let (peers, mut ctx) = self.parts(now);
        match owner.and_then(|key| peers.get_mut(&key)) {
            Some(peer) => peer.handle_wireguard(local, from, packet, &mut ctx),
            None => tracing::debug!(%from, "WireGuard datagram for no peer of ours dropped"),
        }
        ctx.relay_used
    }

    /// An IPv4 packet read from the TUN: encrypted for the peer owning its destination.
    /// Packets for unknown destinations (and non-IPv4 packets) are dropped.
    pub fn handle_tun_packet(&mut self, packet: &[u8], now: Instant) {
        let Some(dst) = icmp::ipv4_destination(packet) else {
            tracing::trace!("non-IPv4 packet from the TUN dropped");
            return;
        };
        let Some(key) = self.by_ip.get(&dst).copied() else {
            tracing::trace!(%dst, "packet for no peer's address dropped");
            return;
        };
        let (peers, mut ctx) = self.parts(now);
        if let Some(peer) = peers.get_mut(&key) {
            peer.send_ip(packet, &mut ctx);
        }
        let relay_used = ctx.relay_used;
        self.finish_with(now, relay_used);
    }

    /// A signal message from peer `from`, out of an opened sealed envelope.
    pub fn handle_signal(&mut self, from: PublicKey, signal: PeerSignal, now: Instant) {
        if let Err(e) = signal.validate() {
            tracing::debug!(peer = %from.short(), error = %e, "invalid signal dropped");
            return;
        }
        let (peers, mut ctx) = self.parts(now);
        match peers.get_mut(&from) {
            Some(peer) => peer.on_signal(signal, &mut ctx),
            None => tracing::debug!(peer = %from.short(), "signal from a non-member dropped"),
        }
        self.finish(now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(relay) = self.relay.as_mut() {
            relay.handle_timeout(now);
        }
        let tick = self.next_wg_tick <= now;
        if tick {
            self.next_wg_tick = now + WG_TIMER_TICK;
        }
        let (peers, mut ctx) = self.parts(now);
        for peer in peers.values_mut() {
            if peer.deadline.is_some_and(|t| t <= now) {
                peer.handle_timeout(&mut ctx);
            }
            if tick {
                peer.tick_wireguard(&mut ctx);
            }
        }
        if self.next_purge <= now {
            self.next_purge = now + STUN_OWNER_TTL;
            self.stun_owners.retain(|_, (_, at)| now.saturating_duration_since(*at) < STUN_OWNER_TTL);
        }
        self.finish(now);
    }

    /// Sends an ICMP echo from our address to the peer's through the tunnel. The reply is
    /// consumed (not written to the TUN) and reported as [`EngineEvent::PingReply`]; the
    /// peer's IP stack answers the request.
    pub fn ping(&mut self, peer: &PublicKey, now: Instant) -> Result<(), EngineError> {
        let (peers, mut ctx) = self.parts(now);
        let p = peers.get_mut(peer).ok_or(EngineError::UnknownPeer(*peer))?;
        p.ping(&mut ctx);
        self.finish(now);
        Ok(())
    }

    /// Processes what the relay client produced, then recomputes the timeout.
    fn finish(&mut self, now: Instant) {
        self.finish_with(now, true);
    }

    /// [`Engine::finish`], where the data path may skip the relay client: a datagram that
    /// went neither in nor out through it left it as it was, and its deadline with it.
    fn finish_with(&mut self, now: Instant, poll_relay: bool) {
        while let Some(relay) = self.relay.as_mut().filter(|_| poll_relay) {
            let mut progress = false;
            while let Some(t) = relay.poll_transmit() {
                progress = true;
                self.out.transmits.push_back(t);
            }
            if let Some(e) = relay.poll_event() {
                progress = true;
                self.on_relay_event(e, now);
            }
            if !progress {
                break;
            }
        }
        if poll_relay {
            self.relay_deadline = self.relay.as_mut().and_then(RelayClient::poll_timeout);
        }
        let relay = self.relay_deadline;
        let peers = self.peers.values().filter_map(|p| p.deadline).min();
        let tick = (!self.peers.is_empty()).then_some(self.next_wg_tick);
        let purge = (!self.stun_owners.is_empty()).then_some(self.next_purge);
        self.timeout = [relay, peers, tick, purge].into_iter().flatten().min();
    }

    fn on_relay_event(&mut self, e: RelayEvent, now: Instant) {
        match e {
            RelayEvent::ServerReflexive(addr) => {
                tracing::info!(%addr, "server-reflexive address");
                self.out.events.push_back(EngineEvent::ServerReflexive { addr });
                self.refresh_locals(now);
            }
            RelayEvent::Allocated(relayed) => {
                self.out.events.push_back(EngineEvent::RelayAllocated { relayed });
                self.refresh_locals(now);
            }
            RelayEvent::AllocationFailed { reason, retry_in } => {
                self.out.events.push_back(EngineEvent::RelayFailed { reason, retry_in: Some(retry_in) });
            }
            RelayEvent::Data { peer, data } => {
                let Some(relayed) = self.relay.as_ref().and_then(RelayClient::relayed) else { return };
                // What came through the relay is demultiplexed again; the relayed address is
                // the local candidate it arrived on.
                match classify(&data) {
                    Kind::Stun => self.route_stun(relayed, peer, &data, now),
                    Kind::WireGuard => {
                        // Inside the relay loop, which polls the relay client again anyway.
                        let _relay_used = self.route_wireguard(relayed, peer, &data, now);
                    }
                    _ => tracing::trace!(%peer, "unknown relayed datagram dropped"),
                }
            }
        }
    }

    /// The next datagram to send from the UDP socket.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.transmits.pop_front()
    }

    /// The next decrypted IP packet to write to the TUN.
    pub fn poll_tun_packet(&mut self) -> Option<Vec<u8>> {
        self.out.tun.pop_front()
    }

    /// Returns the buffer of a [`Transmit`] or TUN packet that has been written, for reuse.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        self.out.recycle(buf);
    }

    /// The next signal message to seal for the peer and send through the signal server.
    pub fn poll_signal(&mut self) -> Option<(PublicKey, PeerSignal)> {
        self.out.signals.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<EngineEvent> {
        self.out.events.pop_front()
    }

    /// When [`Engine::handle_timeout`] is due (may be in the past: call it now); `None`
    /// when nothing is scheduled. Recomputed after every input.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timeout
    }

    /// Every peer's state, for status displays.
    pub fn peers(&self, now: Instant) -> Vec<PeerStatus> {
        self.peers.values().map(|p| p.status(now)).collect()
    }
}
