//! The ICE seam: one rtc-ice [`Agent`] per peer behind a small interface of our own, so the
//! rest of the engine never names rtc-ice types and the ICE implementation can be swapped
//! (see `/work/notes/ice-wireguard.md`, "How to keep the choice reversible").

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc_ice::candidate::candidate_host::CandidateHostConfig;
use rtc_ice::candidate::candidate_relay::CandidateRelayConfig;
use rtc_ice::candidate::candidate_server_reflexive::CandidateServerReflexiveConfig;
use rtc_ice::candidate::{unmarshal_candidate, Candidate, CandidateConfig, CandidateType};
use rtc_ice::crypto::RTCCryptoProvider;
use rtc_ice::mdns::MulticastDnsMode;
use rtc_ice::network_type::NetworkType;
use rtc_ice::state::ConnectionState;
use rtc_ice::{Agent, AgentConfig, Event};
use rtc_shared::error::Error as RtcError;
use rtc_shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use sansio::Protocol;
use trellis_protocol::ipc::{CandidateKind, PathInfo, PathKind};

/// Connectivity checks per candidate pair before the pair is given up: 25 checks at
/// rtc-ice's 200 ms check interval keep a pair alive for 5 s. rtc-ice's default (7, 1.4 s)
/// is shorter than a signalling round trip after a restart: the controlling side would give
/// up its pairs before the controlled side even had its credentials.
const ICE_MAX_CHECKS: u16 = 25;

/// A local candidate of this device, shared by every peer's agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LocalCandidate {
    /// An address of the UDP socket.
    Host(SocketAddr),
    /// The socket's public address as the STUN server saw it. Signalled, but never added to
    /// our own agents: its base is a host candidate, and rtc-ice does not prune redundant
    /// pairs (RFC 8445 §6.1.2.4), so every check would be sent twice from the same socket.
    ServerReflexive { addr: SocketAddr, base: SocketAddr },
    /// Our TURN allocation's relayed address.
    Relayed { addr: SocketAddr, related: SocketAddr },
}

impl LocalCandidate {
    /// Whether our own agents use this candidate (all but server-reflexive ones).
    pub(crate) fn in_agent(&self) -> bool {
        !matches!(self, LocalCandidate::ServerReflexive { .. })
    }

    fn to_candidate(self) -> Result<Candidate, RtcError> {
        let base_config = |addr: SocketAddr| CandidateConfig {
            network: "udp".to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        };
        match self {
            LocalCandidate::Host(addr) => {
                CandidateHostConfig { base_config: base_config(addr), ..Default::default() }
                    .new_candidate_host()
            }
            LocalCandidate::ServerReflexive { addr, base } => CandidateServerReflexiveConfig {
                base_config: base_config(addr),
                rel_addr: base.ip().to_string(),
                rel_port: base.port(),
                ..Default::default()
            }
            .new_candidate_server_reflexive(),
            LocalCandidate::Relayed { addr, related } => CandidateRelayConfig {
                base_config: base_config(addr),
                rel_addr: related.ip().to_string(),
                rel_port: related.port(),
                ..Default::default()
            }
            .new_candidate_relay(),
        }
    }

    /// The SDP `candidate` value to signal to peers.
    pub(crate) fn marshal(self) -> Result<String, RtcError> {
        self.to_candidate().map(|c| c.marshal())
    }
}

/// The agent's connection state, as far as the engine cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IceState {
    Checking,
    Connected,
    /// No traffic on the selected pair for 5 s (rtc-ice's `disconnected_timeout`).
    Disconnected,
    /// No traffic for another 25 s, or checks gave up: the agent dropped every candidate,
    /// local ones included.
    Failed,
}

/// The candidate pair WireGuard runs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SelectedPath {
    /// Where to send from: a host address of the socket, or our relayed address.
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub local_kind: CandidateKind,
    pub remote_kind: CandidateKind,
}

impl SelectedPath {
    pub(crate) fn kind(&self) -> PathKind {
        if self.local_kind == CandidateKind::Relayed || self.remote_kind == CandidateKind::Relayed {
            PathKind::Relayed
        } else {
            PathKind::Direct
        }
    }

    pub(crate) fn info(&self) -> PathInfo {
        PathInfo {
            kind: self.kind(),
            local: self.local_kind,
            remote: self.remote_kind,
            remote_addr: self.remote,
        }
    }

    fn of(local: &Candidate, remote: &Candidate) -> Self {
        SelectedPath {
            local: local.base_addr(),
            remote: remote.addr(),
            local_kind: kind_of(local.candidate_type()),
            remote_kind: kind_of(remote.candidate_type()),
        }
    }
}

fn kind_of(t: CandidateType) -> CandidateKind {
    match t {
        CandidateType::ServerReflexive => CandidateKind::ServerReflexive,
        CandidateType::PeerReflexive => CandidateKind::PeerReflexive,
        CandidateType::Relay => CandidateKind::Relayed,
        // rtc-ice never selects an unspecified candidate; host is the honest fallback.
        _ => CandidateKind::Host,
    }
}

#[derive(Debug)]
pub(crate) enum IceEvent {
    State(IceState),
    Selected(SelectedPath),
}

/// A STUN datagram the agent wants sent from the local candidate whose base is `local`.
#[derive(Debug)]
pub(crate) struct IceTransmit {
    pub local: SocketAddr,
    pub dst: SocketAddr,
    pub payload: BytesMut,
}

/// One peer's ICE agent (rtc-ice, UDP, one component, mDNS off).
pub(crate) struct PathAgent {
    agent: Agent,
    crypto: Arc<dyn RTCCryptoProvider>,
}

impl std::fmt::Debug for PathAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PathAgent").field("state", &self.agent.state()).finish_non_exhaustive()
    }
}

fn transport(local: SocketAddr, from: SocketAddr) -> TransportContext {
    TransportContext {
        local_addr: local,
        peer_addr: from,
        transport_protocol: TransportProtocol::UDP,
        ecn: None,
    }
}

/// How long checks may look for a host or server-reflexive pair before a peer-reflexive or
/// relayed one is nominated.
const NON_DIRECT_MIN_WAIT: Duration = Duration::from_secs(3);

impl PathAgent {
    pub(crate) fn new(now: Instant, crypto: Arc<dyn RTCCryptoProvider>) -> Result<Self, RtcError> {
        Ok(Self { agent: Self::agent(now, &crypto, String::new(), String::new())?, crypto })
    }

    /// A fresh agent; empty credentials are chosen at random.
    fn agent(
        now: Instant,
        crypto: &Arc<dyn RTCCryptoProvider>,
        local_ufrag: String,
        local_pwd: String,
    ) -> Result<Agent, RtcError> {
        let config = AgentConfig {
            local_ufrag,
            local_pwd,
            // mDNS (QueryOnly by default) would claim every datagram from port 5353.
            multicast_dns_mode: MulticastDnsMode::Disabled,
            network_types: vec![NetworkType::Udp4, NetworkType::Udp6],
            max_binding_requests: Some(ICE_MAX_CHECKS),
            // A check that reaches us through the peer's relay allocation makes a
            // peer-reflexive pair, which rtc-ice would accept after 1 s — often before a
            // direct pair through two NATs has punched its holes. Peer-reflexive and relayed
            // pairs wait 3 s, so a direct path that exists wins.
            prflx_acceptance_min_wait: Some(NON_DIRECT_MIN_WAIT),
            relay_acceptance_min_wait: Some(NON_DIRECT_MIN_WAIT),
            ..Default::default()
        };
        Agent::new(now, Arc::new(config), crypto.clone())
    }

    /// Our current ICE credentials (ufrag, pwd).
    pub(crate) fn credentials(&self) -> (String, String) {
        let c = self.agent.get_local_credentials();
        (c.ufrag.clone(), c.pwd.clone())
    }

    pub(crate) fn local_ufrag(&self) -> &str {
        &self.agent.get_local_credentials().ufrag
    }

    /// Starts a new session with new credentials: forgets the remote side (credentials,
    /// candidates, pairs, selected pair) and replaces the local candidates with `locals`.
    ///
    /// A fresh agent rather than rtc-ice's `restart`: a restarted agent keeps the start of
    /// its previous checking phase when its last check ran while checking (rtc-ice 0.21
    /// resets it only on a state change it observes), and fails the new session at once if
    /// that was more than 30 s ago — seen after a process stop that came moments after
    /// connecting.
    pub(crate) fn restart(&mut self, now: Instant, locals: &[LocalCandidate]) -> Result<(), RtcError> {
        self.agent = Self::agent(now, &self.crypto, String::new(), String::new())?;
        self.add_locals(locals);
        Ok(())
    }

    /// Like [`Self::restart`], keeping our credentials: the peer restarted, we follow.
    pub(crate) fn reset(&mut self, now: Instant, locals: &[LocalCandidate]) -> Result<(), RtcError> {
        let (ufrag, pwd) = self.credentials();
        self.agent = Self::agent(now, &self.crypto, ufrag, pwd)?;
        self.add_locals(locals);
        Ok(())
    }

    /// Adds the candidates of `locals` that belong in the agent. The candidate set is
    /// rebuilt on every (re)start, because a Failed agent deletes all its candidates and a
    /// relay that went away must not linger.
    pub(crate) fn add_locals(&mut self, locals: &[LocalCandidate]) {
        for c in locals.iter().filter(|c| c.in_agent()) {
            if let Err(e) = self.add_local(*c) {
                tracing::warn!(candidate = ?c, error = %e, "cannot add local ICE candidate");
            }
        }
    }

    pub(crate) fn add_local(&mut self, c: LocalCandidate) -> Result<bool, RtcError> {
        self.agent.add_local_candidate(c.to_candidate()?)
    }

    pub(crate) fn has_remote_credentials(&self) -> bool {
        self.agent.get_remote_credentials().is_some()
    }

    /// Begins connectivity checks with the peer's credentials.
    pub(crate) fn start(
        &mut self,
        now: Instant,
        controlling: bool,
        ufrag: String,
        pwd: String,
    ) -> Result<(), RtcError> {
        self.agent.start_connectivity_checks(now, controlling, ufrag, pwd)
    }

    /// Adds a candidate the peer signalled; returns its address if the agent took it.
    pub(crate) fn add_remote(&mut self, sdp: &str) -> Result<Option<SocketAddr>, RtcError> {
        let c = unmarshal_candidate(sdp)?;
        let addr = c.addr();
        Ok(self.agent.add_remote_candidate(c)?.then_some(addr))
    }

    /// The addresses of the peer's candidates we know (signalled or peer-reflexive).
    pub(crate) fn remote_addrs(&self) -> Vec<SocketAddr> {
        self.agent.get_remote_candidates().iter().map(Candidate::addr).collect()
    }

    /// An ICE check or response that arrived on local candidate `local` (a host address,
    /// or our relayed address when it came through TURN) from `from`.
    pub(crate) fn handle_stun(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        data: &[u8],
    ) -> Result<(), RtcError> {
        self.agent.handle_read(TaggedBytesMut {
            now,
            transport: transport(local, from),
            message: BytesMut::from(data),
        })
    }

    /// Non-STUN traffic (WireGuard) from a remote candidate keeps the pair's consent fresh.
    pub(crate) fn saw_traffic(&mut self, now: Instant, local: SocketAddr, from: SocketAddr) {
        let _ = self.agent.is_valid_non_stun_traffic(now, transport(local, from));
    }

    pub(crate) fn poll_transmit(&mut self) -> Option<IceTransmit> {
        self.agent.poll_write().map(|t| IceTransmit {
            local: t.transport.local_addr,
            dst: t.transport.peer_addr,
            payload: t.message,
        })
    }

    pub(crate) fn poll_event(&mut self) -> Option<IceEvent> {
        while let Some(e) = self.agent.poll_event() {
            match e.event {
                Event::ConnectionStateChange(s) => {
                    let state = match s {
                        ConnectionState::Checking => IceState::Checking,
                        ConnectionState::Connected | ConnectionState::Completed => IceState::Connected,
                        ConnectionState::Disconnected => IceState::Disconnected,
                        ConnectionState::Failed => IceState::Failed,
                        _ => continue,
                    };
                    return Some(IceEvent::State(state));
                }
                Event::SelectedCandidatePairChange(local, remote) => {
                    return Some(IceEvent::Selected(SelectedPath::of(&local, &remote)))
                }
                Event::RoleChange(controlling) => {
                    // Roles come from the key order, so both sides agree; a conflict means a
                    // peer running other code. rtc-ice repairs it by tie-breaker.
                    tracing::warn!(controlling, "ICE role conflict repaired");
                }
                _ => {}
            }
        }
        None
    }

    /// When the agent wants [`Self::handle_timeout`]; may be in the past ("now").
    pub(crate) fn poll_timeout(&mut self) -> Option<Instant> {
        self.agent.poll_timeout()
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Result<(), RtcError> {
        self.agent.handle_timeout(now)
    }
}
