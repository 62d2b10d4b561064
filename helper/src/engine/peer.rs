//! One peer: its ICE agent and session bookkeeping (the [`PeerSignal`] protocol), its
//! WireGuard `Tunn`, and the health state machine that restarts ICE when the path dies and
//! probes for a direct path while relayed.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::{Tunn, TunnResult};
use rtc_ice::crypto::RTCCryptoProvider;
use trellis_protocol::ipc::{CandidateKind, PathKind, PeerState};
use trellis_protocol::peer::PeerSignal;
use trellis_protocol::{OverlayIp, PublicKey};

use super::demux::{
    is_wireguard_cookie_reply, is_wireguard_data, is_wireguard_keepalive, stun_class, stun_transaction_id,
    StunClass,
};
use super::ice::{IceEvent, IceState, LocalCandidate, PathAgent, SelectedPath};
use super::icmp::Echo;
use super::relay::RelayClient;
use super::{EngineEvent, Outputs, PeerConfig, PeerStatus, Transmit};

/// WireGuard persistent keepalive, in seconds: keeps NAT mappings open while ICE restarts
/// (ICE's own consent checks stop then) and lets a silent peer be noticed.
const PERSISTENT_KEEPALIVE_SECS: u16 = 25;
/// No authenticated WireGuard packet from the peer for this long, although both sides send
/// a keepalive every 25 s: the path or the session is dead. Two keepalives plus slack.
const WG_STALE: Duration = Duration::from_secs(60);
/// How often the ICE agent hears of WireGuard traffic on a pair, at most. It reports
/// Disconnected after 5 s without any (see [`DISCONNECTED_GRACE`]), so once a second
/// keeps it informed; telling it of every datagram cost each packet a search through its
/// candidate pairs.
const ICE_TRAFFIC_NOTICE: Duration = Duration::from_secs(1);
/// ICE reports Disconnected after 5 s without traffic on the selected pair; if it has not
/// recovered 2 s later, ICE is restarted rather than waiting 25 s more for Failed.
const DISCONNECTED_GRACE: Duration = Duration::from_secs(2);
/// First delay before ICE is restarted after Failed; doubles per failure up to
/// [`RESTART_BACKOFF_MAX`], back to this after a success.
const RESTART_BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest delay between restarts of a failing peer: it reconnects within a minute of its
/// network coming back, at the cost of a few signal messages per minute.
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// How long to wait for the peer's credentials after sending ours (a signal round trip is
/// well under a second; the peer's helper may be busy or restarting).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// First wait, once relayed, before an ICE restart probes for a direct path; doubles per
/// probe that finds none, up to [`PROBE_MAX`]. rtc-ice never leaves a selected pair by
/// itself (no renomination), so only a restart can move a relayed peer to a direct path.
/// A restart keeps WireGuard on the relayed path, so probing costs a few signals and
/// checks, never traffic.
const PROBE_MIN: Duration = Duration::from_secs(10);
/// Longest wait between probes: a direct path that comes back (a firewall rule lifted, a
/// network change) is found within this, plus the seconds ICE needs.
const PROBE_MAX: Duration = Duration::from_secs(20);
/// The controlled side waits this many times longer before restarting on its own, so that
/// usually the controlling side's restart arrives first and only one restart happens.
const CONTROLLED_DELAY_FACTOR: u32 = 2;
/// Having received data from the peer and sent nothing back for this long, we send a
/// keepalive: the peer, which sent the data, hears from us within [`SUSPECT_AFTER`] even
/// when the traffic is one-way. (boringtun's own passive keepalive waits 10 s.)
const ANSWER_KEEPALIVE: Duration = Duration::from_millis(400);
/// We sent data and heard nothing authenticated from the peer for this long (a reply, or
/// its [`ANSWER_KEEPALIVE`] plus a round trip): the path is suspect, and a WireGuard
/// handshake tests it. boringtun would only do that after 15 s (KEEPALIVE + REKEY_TIMEOUT),
/// ICE's consent checks notice after 5 s; a NAT that rebinds kills the path at once. At
/// least [`ANSWER_KEEPALIVE`] plus [`RTT_MARGIN`] round trips on a slow path.
const SUSPECT_AFTER: Duration = Duration::from_secs(1);
/// How long the test handshake may take before the path is declared lost: a handshake is
/// one round trip (the peer answers at once). At least [`RTT_MARGIN`] round trips.
const HANDSHAKE_PROBE_TIMEOUT: Duration = Duration::from_millis(700);
/// When ICE selects a path while a handshake of ours is unanswered, the controlled side
/// waits this long (or two round trips) for the controlling side's handshake before sending
/// its own: two initiations crossing, each followed by boringtun's own for its queued
/// packets, leave neither side a session until the 5 s retry.
const HANDSHAKE_DEFER: Duration = Duration::from_millis(300);
/// Round trips of slack in the two waits above, on a path whose round trip is known to be
/// long (a satellite link, a far relay), so that it is not taken for a dead one.
const RTT_MARGIN: u32 = 4;
/// After a lost path, the first probe for a direct path comes this soon if the new ICE
/// session ends relayed: a rebinding NAT usually allows a direct path again at once, and
/// the relayed pair may have won only because the peer's new address came late.
const PROBE_AFTER_LOSS: Duration = Duration::from_secs(2);
/// At most one handshake initiation in this interval answers a cookie reply (see
/// `handle_wireguard`): boringtun's rate limiter counts per second, and a peer whose
/// cookie keeps failing (its address as we see it changes) must not make us loop.
const COOKIE_RESEND_INTERVAL: Duration = Duration::from_secs(1);
/// ICMP echo identifier of [`super::Engine::ping`] ("Tr").
const PING_ID: u16 = 0x5472;
/// Payload of our echo requests, to tell our replies from other pings' on the same host.
const PING_PAYLOAD: &[u8] = b"trellis ping";
/// Pings waiting for a reply; older ones are forgotten.
const MAX_PINGS_IN_FLIGHT: usize = 16;
/// Candidates kept that arrived before their session's credentials (signals reordered on
/// the way); a session has a handful, older ones are forgotten.
const MAX_EARLY_CANDIDATES: usize = 32;

/// What the engine lends a peer for one operation.
pub(crate) struct Ctx<'a> {
    pub now: Instant,
    pub my_ip: Ipv4Addr,
    pub host_addrs: &'a [SocketAddr],
    pub locals: &'a [LocalCandidate],
    pub relay: &'a mut Option<RelayClient>,
    pub out: &'a mut Outputs,
    /// Which peer's agent sent the STUN request with this transaction id, and when: routes
    /// the responses, which carry no USERNAME.
    pub stun_owners: &'a mut HashMap<[u8; 12], (PublicKey, Instant)>,
    /// Scratch space for boringtun (at least the largest datagram + 32 bytes).
    pub buf: &'a mut [u8],
    /// Whether a datagram went through the relay client in this operation.
    pub relay_used: bool,
}

impl Ctx<'_> {
    /// Sends `payload` to `dst` from the local candidate whose base is `local`: from the
    /// socket for a host address, through the TURN allocation for our relayed address.
    fn send(&mut self, local: SocketAddr, dst: SocketAddr, payload: &[u8]) {
        if let Some(relay) = self.relay.as_mut().filter(|r| r.relayed() == Some(local)) {
            relay.send_to(self.now, dst, payload);
            self.relay_used = true;
        } else if self.host_addrs.contains(&local) {
            let payload = self.out.copy_of(payload);
            self.out.transmits.push_back(Transmit { dst, payload });
        } else {
            // A relayed address that is gone (relay removed or reallocated).
            tracing::debug!(%local, %dst, "no such local candidate any more: datagram dropped");
        }
    }

    /// Sends on a selected path. A path from a host address we no longer have still goes
    /// out of the one socket, from whatever address the kernel picks now: the peer may well
    /// receive it (WireGuard does not care where it comes from) until ICE finds the new path.
    fn send_on(&mut self, path: SelectedPath, payload: &[u8]) {
        if path.local_kind == CandidateKind::Relayed {
            self.send(path.local, path.remote, payload);
        } else {
            let payload = self.out.copy_of(payload);
            self.out.transmits.push_back(Transmit { dst: path.remote, payload });
        }
    }
}

/// The peer's current ICE session, as far as we know it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RemoteSession {
    session: u64,
    ufrag: String,
}

pub(crate) struct Peer {
    pub key: PublicKey,
    pub ip: OverlayIp,
    pub name: String,
    pub online: bool,
    /// The WireGuard session index of our `Tunn` (24 bits).
    pub index: u32,
    span: tracing::Span,
    /// The side with the larger public key controls ICE: both agree without talking.
    controlling: bool,
    ice: PathAgent,
    /// Our ICE session with this peer (see `trellis_protocol::peer`).
    session: u64,
    /// Whether our credentials and candidates of `session` went out since the agent was
    /// last reset.
    sent: bool,
    remote: Option<RemoteSession>,
    /// (session, candidate) that came before the credentials of their session.
    early_candidates: VecDeque<(u64, String)>,
    /// The path ICE validated, as reported; `None` before the first one and after Failed.
    path: Option<SelectedPath>,
    /// Where WireGuard goes: the last selected path, kept across ICE restarts and failures
    /// so traffic never stops while ICE looks for a (better) path.
    wg_path: Option<SelectedPath>,
    /// (local, remote) of the last authenticated WireGuard datagram: the way back before ICE
    /// selected a path on our side.
    last_source: Option<(SocketAddr, SocketAddr)>,
    /// When the ICE agent last heard of WireGuard traffic, and on which (local, remote)
    /// pair (see [`ICE_TRAFFIC_NOTICE`]).
    ice_told_of_traffic: Option<(Instant, SocketAddr, SocketAddr)>,
    state: PeerState,
    restart_at: Option<Instant>,
    restart_backoff: Duration,
    answer_deadline: Option<Instant>,
    probe_at: Option<Instant>,
    probe_backoff: Duration,
    /// The peer's relayed candidates, to recognize a path through its allocation.
    remote_relays: std::collections::HashSet<SocketAddr>,
    tunn: Tunn,
    /// A packet waits in `tunn` for a handshake that could not be sent (no path yet).
    handshake_wanted: bool,
    last_rx: Option<Instant>,
    wg_deadline: Option<Instant>,
    /// When we first sent data (not a keepalive) since the last authenticated packet from
    /// the peer: the start of an unanswered stretch (see [`SUSPECT_AFTER`]).
    tx_unanswered: Option<Instant>,
    /// When we first received data since we last sent the peer anything (see
    /// [`ANSWER_KEEPALIVE`]).
    rx_unanswered: Option<Instant>,
    /// A handshake tests a suspect path: (deadline for any authenticated answer, when the
    /// path went quiet).
    handshake_probe: Option<(Instant, Instant)>,
    /// A handshake we forced (path test, resume, lost path) is unanswered: it is sent again
    /// as soon as ICE selects a path, instead of after boringtun's 5 s retry.
    handshake_pending: bool,
    /// The controlled side's deferred handshake (see [`HANDSHAKE_DEFER`]).
    handshake_due: Option<Instant>,
    /// When we last answered a cookie reply with a new initiation (see
    /// [`COOKIE_RESEND_INTERVAL`]).
    cookie_resent_at: Option<Instant>,
    /// The path's round trip as last measured (ping, else WireGuard handshake), refreshed
    /// with boringtun's timers: scales [`SUSPECT_AFTER`] and [`HANDSHAKE_PROBE_TIMEOUT`].
    rtt_hint: Option<Duration>,
    /// When our agent last began a session (our restart, or following the peer's), and
    /// when ICE last selected a path: a path lost after a session began that has not
    /// selected one yet needs no further restart; that session looks for a path already.
    session_began: Instant,
    selected_at: Option<Instant>,
    pings: VecDeque<(u16, Instant)>,
    next_ping_seq: u16,
    rtt: Option<Duration>,
    /// When the agent wants its `handle_timeout` (cached: polling it needs `&mut`).
    ice_deadline: Option<Instant>,
    /// The earliest of all this peer's timers.
    pub deadline: Option<Instant>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("key", &self.key)
            .field("ip", &self.ip)
            .field("state", &self.state)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Asks the relay server for our public address now, rather than at its next 25 s binding:
/// an ICE session that starts over should offer where we are now (a NAT that rebound gave
/// us a new one, and a new relay allocation comes with it).
fn regather(ctx: &mut Ctx<'_>) {
    if let Some(relay) = ctx.relay.as_mut() {
        relay.refresh_binding(ctx.now);
        ctx.relay_used = true;
    }
}

fn earliest(times: impl IntoIterator<Item = Option<Instant>>) -> Option<Instant> {
    times.into_iter().flatten().min()
}

fn due(t: Option<Instant>, now: Instant) -> bool {
    t.is_some_and(|t| t <= now)
}

impl Peer {
    pub(crate) fn new(
        config: &PeerConfig,
        me: PublicKey,
        secret: &x25519_dalek::StaticSecret,
        index: u32,
        crypto: Arc<dyn RTCCryptoProvider>,
        first_session: u64,
        now: Instant,
    ) -> Result<Self, rtc_shared::error::Error> {
        let tunn = Tunn::new(
            secret.clone(),
            x25519_dalek::PublicKey::from(config.key),
            None,
            Some(PERSISTENT_KEEPALIVE_SECS),
            index,
            None,
        );
        Ok(Self {
            key: config.key,
            ip: config.ip,
            name: config.name.clone(),
            online: config.online,
            index,
            span: tracing::info_span!("peer", peer = %config.key.short()),
            controlling: me > config.key,
            ice: PathAgent::new(now, crypto)?,
            session: first_session,
            sent: false,
            remote: None,
            early_candidates: VecDeque::new(),
            path: None,
            wg_path: None,
            last_source: None,
            ice_told_of_traffic: None,
            state: PeerState::Offline,
            restart_at: None,
            restart_backoff: RESTART_BACKOFF_MIN,
            answer_deadline: None,
            probe_at: None,
            probe_backoff: PROBE_MIN,
            remote_relays: std::collections::HashSet::new(),
            tunn,
            handshake_wanted: false,
            last_rx: None,
            wg_deadline: None,
            tx_unanswered: None,
            rx_unanswered: None,
            handshake_probe: None,
            handshake_pending: false,
            handshake_due: None,
            cookie_resent_at: None,
            session_began: now,
            selected_at: None,
            rtt_hint: None,
            pings: VecDeque::new(),
            next_ping_seq: 0,
            rtt: None,
            ice_deadline: None,
            deadline: None,
        })
    }

    pub(crate) fn local_ufrag(&self) -> &str {
        self.ice.local_ufrag()
    }

    /// Called once after `new`: reports the first state and starts ICE if the peer is online.
    pub(crate) fn begin(&mut self, ctx: &mut Ctx<'_>) {
        let _span = self.span.clone().entered();
        self.ice.add_locals(ctx.locals);
        if self.online {
            self.set_state(PeerState::Connecting, ctx);
            self.send_session(ctx);
        } else {
            ctx.out.events.push_back(EngineEvent::PeerState { key: self.key, state: PeerState::Offline });
        }
        self.flush(ctx);
    }

    /// New configuration from the signal server (address, name, online).
    pub(crate) fn update(&mut self, config: &PeerConfig, ctx: &mut Ctx<'_>) {
        let _span = self.span.clone().entered();
        self.ip = config.ip;
        self.name.clone_from(&config.name);
        if config.online != self.online {
            self.online = config.online;
            tracing::info!(online = self.online, "peer presence changed");
            if self.online {
                if !self.sent {
                    self.set_state(PeerState::Connecting, ctx);
                    self.send_session(ctx);
                } else if self.state != PeerState::Connected {
                    // Its helper probably restarted and forgot our session.
                    self.restart_ice("the peer came online", ctx);
                }
            } else if self.state != PeerState::Connected {
                self.restart_at = None;
                self.answer_deadline = None;
                self.set_state(PeerState::Offline, ctx);
            }
        }
        self.flush(ctx);
    }

    fn set_state(&mut self, state: PeerState, ctx: &mut Ctx<'_>) {
        if self.state != state {
            tracing::info!(from = ?self.state, to = ?state, "peer state");
            self.state = state.clone();
            ctx.out.events.push_back(EngineEvent::PeerState { key: self.key, state });
        }
    }

    /// How long the controlled side waits compared to the controlling one.
    fn scaled(&self, d: Duration) -> Duration {
        if self.controlling {
            d
        } else {
            d * CONTROLLED_DELAY_FACTOR
        }
    }

    // ---- ICE sessions (the PeerSignal protocol) ----

    /// Sends our credentials and every local candidate of our current session.
    fn send_session(&mut self, ctx: &mut Ctx<'_>) {
        let (ufrag, pwd) = self.ice.credentials();
        let session = self.session;
        tracing::debug!(session, "signalling ICE credentials and candidates");
        let peer_session = self.remote.as_ref().map(|r| r.session);
        ctx.out
            .signals
            .push_back((self.key, PeerSignal::IceCredentials { session, ufrag, pwd, peer_session }));
        for c in ctx.locals {
            match c.marshal() {
                Ok(candidate) => {
                    ctx.out.signals.push_back((self.key, PeerSignal::Candidate { session, candidate }))
                }
                Err(e) => tracing::warn!(candidate = ?c, error = %e, "cannot write a local candidate"),
            }
        }
        self.sent = true;
        if self.remote.is_none() {
            self.answer_deadline = Some(ctx.now + self.scaled(ANSWER_TIMEOUT.max(self.restart_backoff)));
        }
    }

    /// A new ICE session of ours: new credentials, the remote side forgotten, both agents
    /// start over once the peer follows. WireGuard stays on the cached path meanwhile.
    pub(crate) fn restart_ice(&mut self, why: &str, ctx: &mut Ctx<'_>) {
        if let Err(e) = self.ice.restart(ctx.now, ctx.locals) {
            tracing::warn!(error = %e, "cannot restart ICE");
            return;
        }
        self.session = self.session.wrapping_add(1);
        tracing::info!(session = self.session, why, "ICE restart");
        let reachable = self.online || self.remote.is_some() || self.wg_path.is_some();
        self.remote = None;
        self.restart_at = None;
        self.probe_at = None;
        self.session_began = ctx.now;
        // The new session's agent hears of the traffic on the next datagram.
        self.ice_told_of_traffic = None;
        regather(ctx);
        if reachable {
            self.send_session(ctx);
        } else {
            // Nobody to tell (an offline peer we never reached): our credentials and
            // candidates go out once it comes online.
            self.sent = false;
            self.answer_deadline = None;
        }
    }

    pub(crate) fn on_signal(&mut self, signal: PeerSignal, ctx: &mut Ctx<'_>) {
        let _span = self.span.clone().entered();
        match signal {
            PeerSignal::IceCredentials { session, ufrag, pwd, peer_session } => {
                self.on_credentials(session, ufrag, pwd, peer_session, ctx)
            }
            PeerSignal::Candidate { session, candidate } => {
                if self.remote.as_ref().is_some_and(|r| r.session == session) {
                    self.add_remote_candidate(&candidate, ctx);
                } else {
                    // Stale, or early: its credentials may still be on the way.
                    tracing::debug!(session, "candidate of a session we do not hold (yet)");
                    if self.early_candidates.len() == MAX_EARLY_CANDIDATES {
                        self.early_candidates.pop_front();
                    }
                    self.early_candidates.push_back((session, candidate));
                }
            }
        }
        self.flush(ctx);
    }

    fn add_remote_candidate(&mut self, candidate: &str, ctx: &mut Ctx<'_>) {
        match self.ice.add_remote(candidate) {
            Ok(Some(addr)) => {
                tracing::debug!(%addr, "remote candidate");
                if candidate.contains(" typ relay") {
                    self.remote_relays.insert(addr);
                }
                if let Some(relay) = ctx.relay.as_mut() {
                    relay.permit(ctx.now, addr);
                }
            }
            Ok(None) => tracing::debug!(candidate, "remote candidate ignored"),
            Err(e) => tracing::debug!(candidate, error = %e, "bad remote candidate"),
        }
    }

    fn on_credentials(
        &mut self,
        session: u64,
        ufrag: String,
        pwd: String,
        peer_session: Option<u64>,
        ctx: &mut Ctx<'_>,
    ) {
        let fresh = RemoteSession { session, ufrag };
        let new = self.remote.as_ref() != Some(&fresh);
        // The peer lacks our current credentials: it never got them, or it restarted.
        let mut answer = !self.sent || peer_session != Some(self.session);
        if new {
            tracing::debug!(session, "peer ICE session");
            if self.ice.has_remote_credentials() {
                // The peer restarted ICE: follow with fresh checks, keeping our credentials.
                if let Err(e) = self.ice.reset(ctx.now, ctx.locals) {
                    tracing::warn!(error = %e, "cannot reset ICE");
                    return;
                }
                answer = true;
                // Its restart may be for a change on our side (a NAT that rebound): learn
                // our public address anew, as after a restart of ours, and test the path
                // WireGuard is on (the peer may have lost it while we send nothing).
                regather(ctx);
                let heard_lately = self
                    .last_rx
                    .is_some_and(|t| ctx.now.saturating_duration_since(t) < HANDSHAKE_PROBE_TIMEOUT);
                if !heard_lately {
                    self.test_path(ctx.now, ctx);
                }
            }
            self.session_began = ctx.now;
            if let Err(e) = self.ice.start(ctx.now, self.controlling, fresh.ufrag.clone(), pwd) {
                tracing::warn!(error = %e, "cannot start ICE checks");
                return;
            }
            self.remote = Some(fresh);
            let (early, later): (VecDeque<_>, VecDeque<_>) =
                std::mem::take(&mut self.early_candidates).into_iter().partition(|(s, _)| *s == session);
            self.early_candidates = later;
            for (_, candidate) in early {
                self.add_remote_candidate(&candidate, ctx);
            }
            // This fresh session supersedes whatever restart was pending.
            self.answer_deadline = None;
            self.restart_at = None;
            self.probe_at = None;
            match self.state {
                PeerState::Offline | PeerState::Failed { .. } if self.wg_path.is_some() => {
                    self.set_state(PeerState::Reconnecting, ctx)
                }
                PeerState::Offline | PeerState::Failed { .. } => self.set_state(PeerState::Connecting, ctx),
                _ => {}
            }
        }
        if answer {
            self.send_session(ctx);
        }
    }

    /// Our relay or server-reflexive address appeared: trickle it to the peer.
    pub(crate) fn add_local_candidate(&mut self, c: LocalCandidate, ctx: &mut Ctx<'_>) {
        let _span = self.span.clone().entered();
        if c.in_agent() {
            if let Err(e) = self.ice.add_local(c) {
                tracing::warn!(candidate = ?c, error = %e, "cannot add a local candidate");
            }
        }
        if let LocalCandidate::Relayed { .. } = c {
            if let Some(relay) = ctx.relay.as_mut() {
                for addr in self.ice.remote_addrs() {
                    relay.permit(ctx.now, addr);
                }
            }
        }
        if self.sent {
            match c.marshal() {
                Ok(candidate) => ctx
                    .out
                    .signals
                    .push_back((self.key, PeerSignal::Candidate { session: self.session, candidate })),
                Err(e) => tracing::warn!(candidate = ?c, error = %e, "cannot write a local candidate"),
            }
        }
        self.flush(ctx);
    }

    /// Our relayed address `old` is gone: a path through it is dead.
    pub(crate) fn relay_lost(&mut self, old: SocketAddr, ctx: &mut Ctx<'_>) {
        let _span = self.span.clone().entered();
        if self.wg_path.is_some_and(|p| p.local == old) && self.sent {
            if self.path.take().is_some() {
                ctx.out.events.push_back(EngineEvent::PathChanged { key: self.key, path: None });
            }
            self.set_state(PeerState::Reconnecting, ctx);
            self.restart_ice("our relay allocation went away", ctx);
        }
        self.flush(ctx);
    }

    // ---- datagrams ----

    /// An ICE check or response for our agent.
    pub(crate) fn handle_stun(
        &mut self,
        local: SocketAddr,
        from: SocketAddr,
        data: &[u8],
        ctx: &mut Ctx<'_>,
    ) {
        let _span = self.span.clone().entered();
        if stun_class(data) == StunClass::Request && self.is_unsignalled_relay(from, ctx) {
            // A check that came through the peer's TURN allocation before the peer's relayed
            // candidate did. rtc-ice would learn the allocation as a peer-reflexive candidate
            // and rank it as one (type preference 110, ignoring the check's PRIORITY), above
            // the peer's server-reflexive candidate (100): the relayed pair would be
            // nominated although the direct one works. The peer repeats the check every
            // 200 ms; by then the candidate is usually here, and ranked as relayed.
            tracing::debug!(%from, "ICE check through an unsignalled relay address held back");
            return;
        }
        if let Err(e) = self.ice.handle_stun(ctx.now, local, from, data) {
            tracing::debug!(%from, error = %e, "ICE datagram dropped");
        }
        self.flush(ctx);
    }

    /// Whether `from` is on a TURN server (ours, which is the network's, or one the peer
    /// signalled a relayed candidate on) but is not a candidate of the current session.
    fn is_unsignalled_relay(&self, from: SocketAddr, ctx: &Ctx<'_>) -> bool {
        let on_relay = ctx.relay.as_ref().is_some_and(|r| r.server().ip() == from.ip())
            || self.remote_relays.iter().any(|r| r.ip() == from.ip());
        on_relay && !self.ice.remote_addrs().contains(&from)
    }

    /// A WireGuard datagram for our `Tunn`, from `from`, arrived on local candidate `local`.
    pub(crate) fn handle_wireguard(
        &mut self,
        local: SocketAddr,
        from: SocketAddr,
        data: &[u8],
        ctx: &mut Ctx<'_>,
    ) {
        // The data path (transport data on a pair the agent heard of lately) touches neither
        // the ICE agent nor the peer's tracing span: each costs a packet as much as the
        // decryption, mostly in cache misses after the helper sat idle. Its few log lines
        // name the peer themselves.
        let now = ctx.now;
        let agent_knows = self.ice_told_of_traffic.is_some_and(|(at, l, f)| {
            (l, f) == (local, from) && now.saturating_duration_since(at) < ICE_TRAFFIC_NOTICE
        });
        let data_path = agent_knows && is_wireguard_data(data);
        let _span = (!data_path).then(|| self.span.clone().entered());
        if !agent_knows {
            self.ice.saw_traffic(now, local, from);
            self.ice_told_of_traffic = Some((now, local, from));
        }
        let mut authentic = false;
        let mut got_data = false;
        let mut cookie = false;
        // boringtun writes into the scratch buffer; it is taken out of `ctx` for the loop
        // so that each result can be sent or delivered straight from it, without a copy
        // into a fresh `Vec` first.
        let buf = std::mem::take(&mut ctx.buf);
        let mut input = data;
        loop {
            match self.tunn.decapsulate(Some(from.ip()), input, buf) {
                TunnResult::WriteToNetwork(p) => {
                    authentic = true;
                    // Before sending: with no ICE path yet, a handshake response goes back
                    // where the initiation came from.
                    self.last_source = Some((local, from));
                    self.send_wireguard(p, ctx);
                    // Repeat with an empty datagram until Done: flushes queued packets.
                    input = &[];
                }
                TunnResult::WriteToTunnelV4(p, src) => {
                    authentic = true;
                    got_data = true;
                    self.deliver(p, src, ctx);
                    break;
                }
                TunnResult::WriteToTunnelV6(_, src) => {
                    authentic = true;
                    got_data = true;
                    tracing::debug!(peer = %self.key.short(), %src, "IPv6 packet dropped: the peer's allowed IP is its IPv4 /32");
                    break;
                }
                TunnResult::Done if input.len() == data.len() && is_wireguard_cookie_reply(data) => {
                    cookie = true;
                    break;
                }
                TunnResult::Done => {
                    authentic |= input.len() == data.len(); // a keepalive
                    break;
                }
                TunnResult::Err(e) => {
                    tracing::debug!(peer = %self.key.short(), %from, error = ?e, "WireGuard datagram dropped");
                    break;
                }
            }
        }
        ctx.buf = buf;
        if authentic {
            self.last_rx = Some(now);
            self.last_source = Some((local, from));
            if self.path.is_some() {
                self.wg_deadline = Some(now + WG_STALE);
            }
            // The path works (at least towards us): nothing of ours is unanswered.
            self.tx_unanswered = None;
            self.handshake_probe = None;
            self.handshake_pending = false;
            self.handshake_due = None;
        }
        if got_data && self.rx_unanswered.is_none() {
            self.rx_unanswered = Some(now);
        }
        if cookie
            && self
                .cookie_resent_at
                .is_none_or(|t| now.saturating_duration_since(t) >= COOKIE_RESEND_INTERVAL)
        {
            // The peer's rate limiter (10 handshake messages a second) is saturated, and it
            // answered our last handshake message with a cookie instead. That happens after
            // a stop: a resumed peer reads the initiations we sent meanwhile from its
            // socket's buffer all at once. boringtun would retry only at REKEY_TIMEOUT (5 s);
            // an initiation carrying the cookie (mac2) passes the limiter now. Whether our
            // message was an initiation or a response, a new initiation gets a session.
            tracing::debug!("cookie reply: handshake initiation sent again with the cookie");
            self.cookie_resent_at = Some(now);
            self.initiate_handshake(true, ctx);
        }
        if data_path {
            // Nothing reached the agent: only our own deadlines can have moved.
            self.refresh_deadline();
        } else {
            self.flush(ctx);
        }
    }

    fn deliver(&mut self, packet: &[u8], src: Ipv4Addr, ctx: &mut Ctx<'_>) {
        if src != self.ip.0 {
            tracing::debug!(peer = %self.key.short(), %src, "packet dropped: its source is not the peer's address");
            return;
        }
        if let Some(echo) = Echo::parse(packet) {
            if echo.reply && echo.id == PING_ID && echo.dst == ctx.my_ip && echo.payload == PING_PAYLOAD {
                if let Some(at) = self.pings.iter().position(|(seq, _)| *seq == echo.seq) {
                    let (_, sent) = self.pings.remove(at).unwrap_or((0, ctx.now));
                    let rtt = ctx.now.saturating_duration_since(sent);
                    tracing::debug!(peer = %self.key.short(), ?rtt, "ping reply");
                    self.rtt = Some(rtt);
                    ctx.out.events.push_back(EngineEvent::PingReply { key: self.key, rtt });
                    return;
                }
            }
        }
        let packet = ctx.out.copy_of(packet);
        ctx.out.tun.push_back(packet);
    }

    /// An IP packet from the TUN for this peer.
    /// Without the peer's tracing span, like received data (see `handle_wireguard`).
    pub(crate) fn send_ip(&mut self, packet: &[u8], ctx: &mut Ctx<'_>) {
        // Taken out of `ctx` so that the datagram is sent straight from it (see above).
        let buf = std::mem::take(&mut ctx.buf);
        match self.tunn.encapsulate(packet, buf) {
            TunnResult::WriteToNetwork(p) => {
                // Data, or the handshake initiation of a tunnel without a session yet.
                let data = is_wireguard_data(p);
                self.send_wireguard(p, ctx);
                if data && self.tx_unanswered.is_none() {
                    self.tx_unanswered = Some(ctx.now);
                    self.refresh_deadline();
                }
            }
            TunnResult::Err(e) => {
                tracing::debug!(peer = %self.key.short(), error = ?e, "packet not encrypted")
            }
            _ => {}
        }
        ctx.buf = buf;
    }

    pub(crate) fn ping(&mut self, ctx: &mut Ctx<'_>) {
        let _span = self.span.clone().entered();
        let seq = self.next_ping_seq;
        self.next_ping_seq = self.next_ping_seq.wrapping_add(1);
        if self.pings.len() == MAX_PINGS_IN_FLIGHT {
            self.pings.pop_front();
        }
        self.pings.push_back((seq, ctx.now));
        let echo = Echo {
            src: ctx.my_ip,
            dst: self.ip.0,
            reply: false,
            id: PING_ID,
            seq,
            payload: PING_PAYLOAD.to_vec(),
        };
        self.send_ip(&echo.to_packet(), ctx);
    }

    /// Sends a WireGuard datagram on the (cached) path.
    fn send_wireguard(&mut self, payload: &[u8], ctx: &mut Ctx<'_>) {
        if let Some(p) = self.wg_path {
            ctx.send_on(p, payload);
        } else if let Some((local, remote)) = self.last_source {
            ctx.send(local, remote, payload);
        } else {
            // No way to the peer yet: boringtun keeps the packet queued; the handshake is
            // sent again once ICE has a path.
            self.handshake_wanted = true;
            tracing::trace!(peer = %self.key.short(), "no path yet: WireGuard datagram dropped");
            return;
        }
        // Whatever we send answers the data the peer sent (see ANSWER_KEEPALIVE).
        if self.rx_unanswered.take().is_some() {
            self.refresh_deadline();
        }
    }

    /// A keepalive (an empty data message) on the current session, if there is one.
    fn send_keepalive(&mut self, ctx: &mut Ctx<'_>) {
        if self.tunn.time_since_last_handshake().is_none() {
            return;
        }
        let buf = std::mem::take(&mut ctx.buf);
        if let TunnResult::WriteToNetwork(p) = self.tunn.encapsulate(&[], buf) {
            debug_assert!(is_wireguard_keepalive(p));
            self.send_wireguard(p, ctx);
        }
        ctx.buf = buf;
    }

    fn initiate_handshake(&mut self, force: bool, ctx: &mut Ctx<'_>) {
        if let TunnResult::WriteToNetwork(p) = self.tunn.format_handshake_initiation(ctx.buf, force) {
            let p = p.to_vec();
            self.send_wireguard(&p, ctx);
        }
    }

    // ---- time ----

    /// boringtun's timers (handshake retries, keepalives, rekeys); every 250 ms.
    pub(crate) fn tick_wireguard(&mut self, ctx: &mut Ctx<'_>) {
        let _span = self.span.clone().entered();
        let handshake_rtt = self.tunn.stats().4.map(|ms| Duration::from_millis(u64::from(ms)));
        self.rtt_hint = self.rtt.or(handshake_rtt);
        match self.tunn.update_timers(ctx.buf) {
            TunnResult::WriteToNetwork(p) => {
                let p = p.to_vec();
                self.send_wireguard(&p, ctx);
            }
            // Repeated on every tick once the session expired; a new packet revives it.
            TunnResult::Err(WireGuardError::ConnectionExpired) => {}
            TunnResult::Err(e) => tracing::debug!(error = ?e, "WireGuard timers"),
            _ => {}
        }
    }

    pub(crate) fn handle_timeout(&mut self, ctx: &mut Ctx<'_>) {
        let _span = self.span.clone().entered();
        let now = ctx.now;
        if due(self.ice_deadline, now) {
            if let Err(e) = self.ice.handle_timeout(now) {
                tracing::debug!(error = %e, "ICE timeout");
            }
        }
        if due(self.restart_at, now) {
            self.restart_at = None;
            if self.online {
                self.restart_ice("path failed", ctx);
            }
        }
        if due(self.answer_deadline, now) {
            self.answer_deadline = None;
            if self.online && self.remote.is_none() {
                self.restart_backoff = (self.restart_backoff * 2).min(RESTART_BACKOFF_MAX);
                self.restart_ice("no answer from the peer", ctx);
            }
        }
        if due(self.probe_at, now) {
            self.probe_at = None;
            let relayed = self.path.is_some_and(|p| p.kind() == PathKind::Relayed);
            if self.online && relayed && self.state == PeerState::Connected {
                self.probe_backoff = (self.probe_backoff * 2).min(PROBE_MAX);
                self.restart_ice("looking for a direct path", ctx);
            }
        }
        if due(self.handshake_due, now) {
            self.handshake_due = None;
            if self.handshake_pending {
                self.initiate_handshake(true, ctx);
            }
        }
        if due(self.rx_unanswered.map(|t| t + ANSWER_KEEPALIVE), now) {
            self.rx_unanswered = None;
            self.send_keepalive(ctx);
        }
        if due(self.tx_unanswered.map(|t| t + self.suspect_after()), now) {
            let since = self.tx_unanswered.take().unwrap_or(now);
            if self.path.is_some() && self.handshake_probe.is_none() {
                tracing::info!(unanswered = ?(now - since), "data to the peer unanswered: testing the path");
                // Our public address may be what changed: learn it while the test runs.
                regather(ctx);
                self.test_path(since, ctx);
            }
        }
        if let Some((_, since)) = self.handshake_probe.filter(|(deadline, _)| *deadline <= now) {
            self.handshake_probe = None;
            // Unless ICE gave the path up meanwhile (Failed says so already).
            if self.path.is_some() {
                self.path_lost("the handshake testing the path went unanswered", since, ctx);
            }
        }
        if due(self.wg_deadline, now) {
            self.wg_deadline = Some(now + WG_STALE);
            if self.online && self.path.is_some() {
                tracing::info!("no WireGuard packet from the peer for {WG_STALE:?}");
                ctx.out.events.push_back(EngineEvent::PathLost { key: self.key });
                self.set_state(PeerState::Reconnecting, ctx);
                self.initiate_handshake(true, ctx);
                self.restart_ice("WireGuard went silent", ctx);
            }
        }
        self.flush(ctx);
    }

    /// How long data may go unanswered before the path is tested (see [`SUSPECT_AFTER`]).
    fn suspect_after(&self) -> Duration {
        let slow = self.rtt_hint.map_or(Duration::ZERO, |rtt| ANSWER_KEEPALIVE + rtt * RTT_MARGIN);
        SUSPECT_AFTER.max(slow)
    }

    /// Tests the path WireGuard is on with a handshake, unless a test runs already: no
    /// authenticated answer within [`HANDSHAKE_PROBE_TIMEOUT`] and the path is lost. `since`:
    /// when the path went quiet, as far as we know.
    fn test_path(&mut self, since: Instant, ctx: &mut Ctx<'_>) {
        if self.path.is_none() || self.handshake_probe.is_some() {
            return;
        }
        let slow = self.rtt_hint.map_or(Duration::ZERO, |rtt| rtt * RTT_MARGIN);
        self.handshake_probe = Some((ctx.now + HANDSHAKE_PROBE_TIMEOUT.max(slow), since));
        self.handshake_pending = true;
        self.initiate_handshake(true, ctx);
    }

    /// The path stopped carrying WireGuard: reported, and a new ICE session looks for
    /// another at once (no backoff), unless the current one began after the path went
    /// quiet (`since`) and is still looking. WireGuard stays on the old path meanwhile (a
    /// relayed one may still work).
    fn path_lost(&mut self, why: &str, since: Instant, ctx: &mut Ctx<'_>) {
        tracing::info!(why, "path lost");
        ctx.out.events.push_back(EngineEvent::PathLost { key: self.key });
        if self.path.take().is_some() {
            ctx.out.events.push_back(EngineEvent::PathChanged { key: self.key, path: None });
        }
        self.wg_deadline = None;
        self.tx_unanswered = None;
        self.handshake_probe = None;
        self.handshake_pending = true;
        self.restart_backoff = RESTART_BACKOFF_MIN;
        self.probe_backoff = PROBE_AFTER_LOSS;
        self.set_state(PeerState::Reconnecting, ctx);
        let looking = self.session_began >= since && self.selected_at.is_none_or(|t| t < self.session_began);
        if looking {
            tracing::debug!("the current ICE session began since and looks for a path already");
        } else if self.online {
            self.restart_ice(why, ctx);
        }
    }

    /// The machine resumed from sleep or the process from a stop: the WireGuard session may
    /// have expired (REJECT_AFTER_TIME is 180 s) and NAT mappings with the path. A
    /// handshake tests the path at once, and a new ICE session looks for one meanwhile.
    pub(crate) fn resume(&mut self, ctx: &mut Ctx<'_>) {
        let _span = self.span.clone().entered();
        let now = ctx.now;
        self.restart_backoff = RESTART_BACKOFF_MIN;
        self.probe_backoff = PROBE_MIN;
        self.tx_unanswered = None;
        self.rx_unanswered = None;
        self.handshake_probe = None;
        if self.online || self.remote.is_some() || self.wg_path.is_some() {
            tracing::info!("resumed: re-handshaking and restarting ICE");
            if self.path.is_some() {
                self.wg_deadline = Some(now + WG_STALE);
                self.test_path(now, ctx);
            } else {
                self.handshake_pending = true;
                self.initiate_handshake(true, ctx);
            }
            self.restart_ice("resumed from sleep or a stop", ctx);
        }
        self.flush(ctx);
    }

    /// This device's host addresses changed (the engine's locals are the new ones): a path
    /// from an address we no longer have is gone, and every peer gets a new ICE session
    /// with the new candidates at once. A path that still works carries WireGuard meanwhile.
    pub(crate) fn host_addrs_changed(&mut self, ctx: &mut Ctx<'_>) {
        let _span = self.span.clone().entered();
        self.restart_backoff = RESTART_BACKOFF_MIN;
        self.probe_backoff = PROBE_MIN;
        let relayed = ctx.relay.as_ref().and_then(RelayClient::relayed);
        let gone = self.path.filter(|p| match p.local_kind {
            CandidateKind::Relayed => relayed != Some(p.local),
            _ => !ctx.host_addrs.contains(&p.local),
        });
        if let Some(p) = gone {
            tracing::info!(local = %p.local, "our address on the path is gone");
            self.path = None;
            self.wg_deadline = None;
            ctx.out.events.push_back(EngineEvent::PathChanged { key: self.key, path: None });
            self.set_state(PeerState::Reconnecting, ctx);
        }
        self.restart_ice("our addresses changed", ctx);
        self.flush(ctx);
    }

    /// Drains the agent (datagrams, events) and recomputes this peer's deadline.
    pub(crate) fn flush(&mut self, ctx: &mut Ctx<'_>) {
        loop {
            let mut progress = false;
            while let Some(t) = self.ice.poll_transmit() {
                progress = true;
                if stun_class(&t.payload) == StunClass::Request {
                    ctx.stun_owners.insert(stun_transaction_id(&t.payload), (self.key, ctx.now));
                }
                ctx.send(t.local, t.dst, &t.payload);
            }
            while let Some(e) = self.ice.poll_event() {
                progress = true;
                self.on_ice_event(e, ctx);
            }
            if !progress {
                break;
            }
        }
        self.ice_deadline = self.ice.poll_timeout();
        self.refresh_deadline();
    }

    /// This peer's next deadline, from the agent's as last polled and our own.
    fn refresh_deadline(&mut self) {
        self.deadline = earliest([
            self.ice_deadline,
            self.restart_at,
            self.answer_deadline,
            self.probe_at,
            self.wg_deadline,
            self.rx_unanswered.map(|t| t + ANSWER_KEEPALIVE),
            self.tx_unanswered.map(|t| t + self.suspect_after()),
            self.handshake_probe.map(|(t, _)| t),
            self.handshake_due,
        ]);
    }

    fn on_ice_event(&mut self, e: IceEvent, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        match e {
            IceEvent::State(s) => {
                tracing::debug!(state = ?s, "ICE state");
                match s {
                    IceState::Checking => match (&self.state, self.wg_path) {
                        // A restart while WireGuard flows on the cached path (a probe).
                        (PeerState::Connected, Some(_)) => {}
                        (_, Some(_)) => self.set_state(PeerState::Reconnecting, ctx),
                        (_, None) => self.set_state(PeerState::Connecting, ctx),
                    },
                    IceState::Connected => {
                        if self.path.is_some() {
                            self.restart_at = None;
                            self.set_state(PeerState::Connected, ctx);
                        }
                    }
                    IceState::Disconnected => {
                        if self.path.is_some() {
                            // Consent lost: no traffic on the path for 5 s.
                            ctx.out.events.push_back(EngineEvent::PathLost { key: self.key });
                        }
                        self.set_state(PeerState::Reconnecting, ctx);
                        if self.online {
                            self.restart_at = Some(now + self.scaled(DISCONNECTED_GRACE));
                        }
                    }
                    IceState::Failed => {
                        if self.path.take().is_some() {
                            ctx.out.events.push_back(EngineEvent::PathChanged { key: self.key, path: None });
                        }
                        self.probe_at = None;
                        self.wg_deadline = None;
                        if self.online {
                            let delay = self.scaled(self.restart_backoff);
                            self.restart_backoff = (self.restart_backoff * 2).min(RESTART_BACKOFF_MAX);
                            self.restart_at = Some(now + delay);
                            let reason = "no working path: ICE connectivity checks failed".to_string();
                            self.set_state(PeerState::Failed { reason }, ctx);
                        } else {
                            self.set_state(PeerState::Offline, ctx);
                        }
                    }
                }
            }
            IceEvent::Selected(p) => self.on_selected(p, ctx),
        }
    }

    fn on_selected(&mut self, mut p: SelectedPath, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        // A check that came through the peer's relay allocation teaches rtc-ice a
        // peer-reflexive candidate with the allocation's address: the path is still relayed.
        if self.remote_relays.contains(&p.remote) {
            p.remote_kind = CandidateKind::Relayed;
        }
        let changed = self.path != Some(p);
        self.path = Some(p);
        self.wg_path = Some(p);
        self.restart_at = None;
        self.answer_deadline = None;
        self.restart_backoff = RESTART_BACKOFF_MIN;
        self.wg_deadline = Some(now + WG_STALE);
        self.selected_at = Some(now);
        if changed {
            tracing::info!(kind = ?p.kind(), local = %p.local, remote = %p.remote, "path selected");
            ctx.out.events.push_back(EngineEvent::PathChanged { key: self.key, path: Some(p.info()) });
        }
        self.set_state(PeerState::Connected, ctx);
        match p.kind() {
            PathKind::Relayed if self.controlling => self.probe_at = Some(now + self.probe_backoff),
            PathKind::Relayed => {}
            PathKind::Direct => self.probe_backoff = PROBE_MIN,
        }
        // One side starts the WireGuard handshake at once (persistent keepalive would make
        // the other start one within 25 s anyway), or whichever side has packets waiting.
        // A handshake whose initiation found no path is still "in progress" for boringtun
        // (retried after 5 s): force a new one so waiting packets go now.
        let no_session = self.tunn.time_since_last_handshake().is_none();
        if self.handshake_pending {
            // A handshake we forced (a path test, a resume) is unanswered: again, on this
            // path, rather than at boringtun's retry 5 s later; by one side first.
            self.handshake_wanted = false;
            if self.controlling {
                self.initiate_handshake(true, ctx);
            } else {
                let wait = HANDSHAKE_DEFER.max(self.rtt_hint.unwrap_or_default() * 2);
                self.handshake_due = Some(now + wait);
            }
        } else if no_session && (self.controlling || self.handshake_wanted) {
            // Forced: a handshake boringtun began while there was no path (its session
            // expired during a stop, say) is "in progress" and would only be retried at
            // its next 5 s REKEY_TIMEOUT.
            self.handshake_wanted = false;
            self.initiate_handshake(true, ctx);
        }
    }

    pub(crate) fn status(&self, now: Instant) -> PeerStatus {
        let (last_handshake, tx_bytes, rx_bytes, _loss, handshake_rtt_ms) = self.tunn.stats();
        PeerStatus {
            key: self.key,
            ip: self.ip,
            name: self.name.clone(),
            online: self.online,
            state: self.state.clone(),
            path: self.path.map(|p| p.info()),
            last_handshake,
            last_rx: self.last_rx.map(|t| now.saturating_duration_since(t)),
            rx_bytes: rx_bytes as u64,
            tx_bytes: tx_bytes as u64,
            rtt: self.rtt.or(handshake_rtt_ms.map(|ms| Duration::from_millis(u64::from(ms)))),
        }
    }
}
