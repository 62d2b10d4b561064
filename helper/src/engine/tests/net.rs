//! An in-memory internet for engines: hosts on a LAN or behind cone / symmetric NATs, one
//! STUN/TURN server, a signal server that forwards [`PeerSignal`]s as JSON with a small
//! delay, an optional firewall and impairments (loss, duplication, reordering), and a fake
//! clock that also drives boringtun's thread-local mock clock. Adapted from the ICE
//! prototype's `tests/common/mod.rs`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use trellis_protocol::ipc::{PathInfo, PathKind, PeerState};
use trellis_protocol::sealed::MAX_PAYLOAD_BYTES;
use trellis_protocol::{OverlayIp, PublicKey};
use x25519_dalek::StaticSecret;

use super::super::icmp::Echo;
use super::super::{Engine, EngineConfig, EngineEvent, PeerConfig, PeerSignal, PeerStatus, RelayServer};
use super::turn_server::{TurnServer, REALM};

/// One step of the fake clock; datagrams without impairment arrive within the step.
pub const STEP: Duration = Duration::from_millis(10);
/// The signal server's forwarding delay.
pub const SIGNAL_LATENCY: Duration = Duration::from_millis(30);
pub const SERVER: &str = "198.51.100.1:3478";
/// Datagrams a stopped helper's socket holds (Linux's default 208 KiB receive buffer, at
/// about 800 bytes of accounting per small datagram); later ones are dropped.
pub const SOCKET_BUFFER: usize = 256;

/// The fake clock. `std::time::Instant` has no constructor, so it is `origin + offset`;
/// nothing under test calls `Instant::now()` itself (rtc-* take `now` everywhere).
/// boringtun reads `mock_instant`'s thread-local clock, advanced here in step.
pub struct Clock {
    pub origin: Instant,
    pub now: Instant,
}

impl Clock {
    fn new() -> Self {
        let origin = Instant::now();
        Self { origin, now: origin }
    }

    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        mock_instant::MockClock::advance(d);
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.origin
    }
}

/// A NAT with one host behind it. Mapping is endpoint-independent (cone) or
/// address-and-port-dependent (symmetric); filtering is address-and-port-dependent.
pub struct Nat {
    pub public_ip: IpAddr,
    pub inside: SocketAddr,
    symmetric: bool,
    mappings: HashMap<Option<SocketAddr>, u16>,
    allowed: HashSet<(u16, SocketAddr)>,
    next_port: u16,
}

impl Nat {
    fn new(public_ip: IpAddr, inside: SocketAddr, symmetric: bool) -> Self {
        Self {
            public_ip,
            inside,
            symmetric,
            mappings: HashMap::new(),
            allowed: HashSet::new(),
            next_port: 40000,
        }
    }

    fn outbound(&mut self, dst: SocketAddr) -> SocketAddr {
        let key = if self.symmetric { Some(dst) } else { None };
        let next = &mut self.next_port;
        let port = *self.mappings.entry(key).or_insert_with(|| {
            *next += 1;
            *next
        });
        self.allowed.insert((port, dst));
        SocketAddr::new(self.public_ip, port)
    }

    fn inbound(&self, src: SocketAddr, dst: SocketAddr) -> Option<SocketAddr> {
        self.allowed.contains(&(dst.port(), src)).then_some(self.inside)
    }

    /// The router forgets every mapping (a reboot, a timeout): new ports from now on.
    pub fn rebind(&mut self) {
        self.mappings.clear();
        self.allowed.clear();
        self.next_port += 100;
    }

    /// The router forgets its flows (`conntrack -F`, or their UDP timeouts) but, like
    /// Linux's masquerading, maps the host to the same public ports again: the path keeps
    /// its addresses, yet nothing from outside passes until the host sends out again.
    pub fn flush(&mut self) {
        self.allowed.clear();
    }

    /// The flows to `ip` timed out (nothing went there for longer than the NAT's UDP
    /// timeout); the others stay open.
    pub fn expire_flows_to(&mut self, ip: IpAddr) {
        self.allowed.retain(|(_, dst)| dst.ip() != ip);
    }

    /// The router gets a new public address from its ISP and forgets every mapping.
    pub fn renumber(&mut self, public_ip: IpAddr) {
        self.rebind();
        self.public_ip = public_ip;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behind {
    /// Directly on the shared LAN 192.0.2.0/24.
    Lan,
    Cone,
    Symmetric,
}

pub struct Node {
    pub name: &'static str,
    pub engine: Engine,
    secret: StaticSecret,
    pub key: PublicKey,
    pub ip: OverlayIp,
    pub host: SocketAddr,
    /// The machine has no address (the helper started before DHCP): nothing it sends
    /// leaves, nothing reaches it. See [`Net::set_host`].
    pub addressless: bool,
    /// The helper does not run (SIGSTOP, a sleeping machine): no timeouts, signals for it
    /// are lost, datagrams wait in its socket's buffer. See [`Net::freeze`].
    pub frozen: bool,
    /// Datagrams that reached the host while its helper was frozen: the socket's receive
    /// buffer, read first once it runs again (see [`SOCKET_BUFFER`]).
    pub backlog: VecDeque<(SocketAddr, Vec<u8>)>,
    pub nat: Option<Nat>,
    pub relay: Option<RelayServer>,
    pub events: Vec<EngineEvent>,
    /// How often `handle_timeout` was due.
    pub wakeups: usize,
    /// Packets the engine wrote to the TUN (echo requests to us are answered instead, as
    /// the host's IP stack would).
    pub received: Vec<Vec<u8>>,
}

impl Node {
    /// This node's view of `peer`.
    pub fn status(&self, peer: PublicKey, now: Instant) -> Option<PeerStatus> {
        self.engine.peers(now).into_iter().find(|p| p.key == peer)
    }

    pub fn events_for(&self, peer: PublicKey) -> impl Iterator<Item = &EngineEvent> {
        self.events.iter().filter(move |e| match e {
            EngineEvent::PeerState { key, .. }
            | EngineEvent::PathChanged { key, .. }
            | EngineEvent::PathLost { key }
            | EngineEvent::PingReply { key, .. } => *key == peer,
            _ => false,
        })
    }

    /// The paths this node reported for `peer`, in order.
    pub fn paths_to(&self, peer: PublicKey) -> Vec<Option<PathKind>> {
        self.events_for(peer)
            .filter_map(|e| match e {
                EngineEvent::PathChanged { path, .. } => Some(path.as_ref().map(|p| p.kind)),
                _ => None,
            })
            .collect()
    }
}

/// Random trouble on every datagram crossing the internet (seeded, so repeatable).
#[derive(Debug, Clone, Copy, Default)]
pub struct Impairment {
    pub loss: f64,
    pub duplicate: f64,
    /// Probability that a datagram is held back 1 to 5 steps (so later ones overtake it).
    pub reorder: f64,
}

type Firewall = Box<dyn Fn(SocketAddr, SocketAddr, &[u8]) -> bool>;

pub struct Net {
    pub clock: Clock,
    pub nodes: Vec<Node>,
    pub server: TurnServer,
    /// (due, sequence) -> (src, dst, payload) in flight.
    wire: BTreeMap<(Instant, u64), (SocketAddr, SocketAddr, Vec<u8>)>,
    seq: u64,
    /// (due, from node, to key, JSON) at the signal server.
    signals: VecDeque<(Instant, usize, PublicKey, Vec<u8>)>,
    /// Deliver the signals due in one step last first (a daemon that lost their order).
    pub reverse_signals: bool,
    /// Extra signalling delay of relayed candidates (a relay allocated after the others
    /// were sent, or a slow server), so that checks through a relay can arrive first.
    pub late_relay_candidates: Duration,
    /// Signals sent, per (from node, to node).
    pub signal_count: HashMap<(usize, usize), usize>,
    /// Drops a datagram (src, dst, payload) on the internet when it returns true.
    pub block: Option<Firewall>,
    pub impair: Impairment,
    rng: StdRng,
    pub delivered: usize,
    pub dropped: usize,
}

impl Net {
    /// Hosts `behind` their NATs (node i: LAN address 192.0.2.(10+i), NAT 203.0.113.(1+i),
    /// overlay 100.64.0.(1+i), key from seed i+1 so roles are the same on every run), with
    /// the relay server configured when `relay`. Nobody knows anybody yet: see [`Net::mesh`].
    pub fn new(behind: &[Behind], relay: bool) -> Self {
        // RUST_LOG=... shows the engine's (and, bridged, rtc-*'s) logs of a failing test.
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_ansi(false)
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
        let clock = Clock::new();
        let now = clock.now;
        let server_addr: SocketAddr = SERVER.parse().unwrap();
        let mut server = TurnServer::new(server_addr);
        let names = ["alice", "bob", "carol", "dave"];
        let mut nodes = Vec::new();
        for (i, b) in behind.iter().enumerate() {
            let n = u8::try_from(i).unwrap();
            let host = SocketAddr::from(([192, 0, 2, 10 + n], 51820));
            let nat = match b {
                Behind::Lan => None,
                Behind::Cone => Some(Nat::new(IpAddr::from([203, 0, 113, 1 + n]), host, false)),
                Behind::Symmetric => Some(Nat::new(IpAddr::from([203, 0, 113, 1 + n]), host, true)),
            };
            let secret = StaticSecret::from([n + 1; 32]);
            let ip = OverlayIp(Ipv4Addr::new(100, 64, 0, 1 + n));
            let relay = relay.then(|| {
                let (username, password) = (format!("user{i}"), format!("pass{i}"));
                server.add_user(&username, &password);
                RelayServer { addr: server_addr, username, password, realm: REALM.into() }
            });
            let mut engine =
                Engine::new(EngineConfig { secret: secret.clone(), my_ip: ip, host_addrs: vec![host] }, now);
            engine.set_relay(relay.clone(), now);
            nodes.push(Node {
                name: names[i],
                key: PublicKey::of(&secret),
                engine,
                secret,
                ip,
                host,
                addressless: false,
                frozen: false,
                backlog: VecDeque::new(),
                nat,
                relay,
                events: vec![],
                wakeups: 0,
                received: vec![],
            });
        }
        Self {
            clock,
            nodes,
            server,
            wire: BTreeMap::new(),
            seq: 0,
            signals: VecDeque::new(),
            reverse_signals: false,
            late_relay_candidates: Duration::ZERO,
            signal_count: HashMap::new(),
            block: None,
            impair: Impairment::default(),
            rng: StdRng::seed_from_u64(7),
            delivered: 0,
            dropped: 0,
        }
    }

    pub fn now(&self) -> Instant {
        self.clock.now
    }

    pub fn key(&self, i: usize) -> PublicKey {
        self.nodes[i].key
    }

    pub fn config(&self, j: usize, online: bool) -> PeerConfig {
        PeerConfig { key: self.nodes[j].key, ip: self.nodes[j].ip, name: self.nodes[j].name.into(), online }
    }

    /// Node `i` learns `peers` (index, online).
    pub fn set_peers(&mut self, i: usize, peers: &[(usize, bool)]) {
        let configs: Vec<PeerConfig> = peers.iter().map(|&(j, online)| self.config(j, online)).collect();
        let now = self.now();
        self.nodes[i].engine.set_peers(&configs, now);
    }

    /// Every node learns every other, all online.
    pub fn mesh(&mut self) {
        for i in 0..self.nodes.len() {
            let others: Vec<(usize, bool)> =
                (0..self.nodes.len()).filter(|&j| j != i).map(|j| (j, true)).collect();
            self.set_peers(i, &others);
        }
    }

    /// Replaces node `i`'s engine by a fresh one with the same key, as after a helper
    /// restart; it learns the same peers, all online.
    pub fn restart_node(&mut self, i: usize) {
        let now = self.now();
        let n = &mut self.nodes[i];
        n.engine = Engine::new(
            EngineConfig { secret: n.secret.clone(), my_ip: n.ip, host_addrs: vec![n.host] },
            now,
        );
        n.engine.set_relay(n.relay.clone(), now);
        let others: Vec<(usize, bool)> =
            (0..self.nodes.len()).filter(|&j| j != i).map(|j| (j, true)).collect();
        self.set_peers(i, &others);
    }

    /// Node `i`'s machine now has `host` as its only address (`None`: no address at all),
    /// and its engine is told so. Behind a NAT, the router maps the new inside address with
    /// new ports.
    pub fn set_host(&mut self, i: usize, host: Option<SocketAddr>) {
        let now = self.now();
        let n = &mut self.nodes[i];
        n.addressless = host.is_none();
        if let Some(host) = host {
            n.host = host;
            if let Some(nat) = n.nat.as_mut() {
                nat.inside = host;
                nat.rebind();
            }
        }
        n.engine.set_host_addrs(host.into_iter().collect(), now);
    }

    /// Replaces node `i`'s engine by a fresh one started while the machine has no address
    /// (it learns its peers, all online); see [`Net::set_host`] for when one comes.
    pub fn start_without_address(&mut self, i: usize) {
        let now = self.now();
        let n = &mut self.nodes[i];
        n.addressless = true;
        n.engine =
            Engine::new(EngineConfig { secret: n.secret.clone(), my_ip: n.ip, host_addrs: vec![] }, now);
        n.engine.set_relay(n.relay.clone(), now);
        let others: Vec<(usize, bool)> =
            (0..self.nodes.len()).filter(|&j| j != i).map(|j| (j, true)).collect();
        self.set_peers(i, &others);
    }

    /// Node `i`'s helper stops running (`true`) or runs again (`false`; the caller tells
    /// its engine what happened, e.g. [`Engine::handle_resume`]).
    pub fn freeze(&mut self, i: usize, frozen: bool) {
        self.nodes[i].frozen = frozen;
    }

    fn send(&mut self, src: SocketAddr, dst: SocketAddr, payload: Vec<u8>) {
        let impair = self.impair;
        if impair.loss > 0.0 && self.rng.gen_bool(impair.loss) {
            self.dropped += 1;
            return;
        }
        let copies = if impair.duplicate > 0.0 && self.rng.gen_bool(impair.duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let mut due = self.clock.now;
            if impair.reorder > 0.0 && self.rng.gen_bool(impair.reorder) {
                due += STEP * self.rng.gen_range(1..=5);
            }
            self.seq += 1;
            self.wire.insert((due, self.seq), (src, dst, payload.clone()));
        }
    }

    /// Takes every node's outputs: datagrams onto the wire (through its NAT), signals to the
    /// signal server, TUN packets (answering pings), events.
    fn drain(&mut self) {
        let now = self.clock.now;
        let mut datagrams = Vec::new();
        for (i, n) in self.nodes.iter_mut().enumerate() {
            while let Some(t) = n.engine.poll_transmit() {
                if n.addressless {
                    self.dropped += 1;
                    continue;
                }
                let src = match &mut n.nat {
                    Some(nat) => nat.outbound(t.dst),
                    None => n.host,
                };
                datagrams.push((src, t.dst, t.payload));
            }
            while let Some((to, signal)) = n.engine.poll_signal() {
                let bytes = signal.to_bytes();
                assert!(bytes.len() <= MAX_PAYLOAD_BYTES, "signal too large for a sealed envelope");
                let late = match &signal {
                    PeerSignal::Candidate { candidate, .. } if candidate.contains(" typ relay") => {
                        self.late_relay_candidates
                    }
                    _ => Duration::ZERO,
                };
                self.signals.push_back((now + SIGNAL_LATENCY + late, i, to, bytes));
            }
            while let Some(p) = n.engine.poll_tun_packet() {
                match Echo::parse(&p) {
                    Some(echo) if !echo.reply && echo.dst == n.ip.0 => {
                        n.engine.handle_tun_packet(&echo.answer().to_packet(), now)
                    }
                    _ => n.received.push(p),
                }
            }
            while let Some(e) = n.engine.poll_event() {
                n.events.push(e);
            }
        }
        for (src, dst, payload) in datagrams {
            self.send(src, dst, payload);
        }
    }

    /// Delivers one datagram to the server or through the receiver's NAT.
    fn route(&mut self, src: SocketAddr, dst: SocketAddr, payload: Vec<u8>) {
        let now = self.clock.now;
        if self.block.as_ref().is_some_and(|b| b(src, dst, &payload)) {
            self.dropped += 1;
            return;
        }
        if self.server.owns(dst) {
            self.delivered += 1;
            for (s, d, p) in self.server.handle(now, src, dst, &payload) {
                self.send(s, d, p);
            }
            return;
        }
        for n in &mut self.nodes {
            if n.addressless {
                continue;
            }
            let inside = match &n.nat {
                Some(nat) if nat.public_ip == dst.ip() => nat.inbound(src, dst),
                Some(_) => None, // a private address behind a NAT: unreachable from outside
                None => (n.host == dst).then_some(dst),
            };
            if inside == Some(n.host) && n.frozen {
                // The kernel queues it for the helper, which reads it when it runs again.
                if n.backlog.len() < SOCKET_BUFFER {
                    n.backlog.push_back((src, payload));
                } else {
                    self.dropped += 1;
                }
                return;
            }
            if inside == Some(n.host) {
                self.delivered += 1;
                n.engine.handle_datagram(n.host, src, &payload, now);
                return;
            }
        }
        self.dropped += 1;
    }

    /// One step of fake time: timeouts, signals and datagrams due now, then the clock moves.
    pub fn step(&mut self) {
        let now = self.clock.now;
        // A helper that runs again reads what its socket held first (by then, the data
        // plane has told its engine of the resume).
        for n in self.nodes.iter_mut().filter(|n| !n.frozen) {
            while let Some((src, payload)) = n.backlog.pop_front() {
                self.delivered += 1;
                n.engine.handle_datagram(n.host, src, &payload, now);
            }
        }
        for n in self.nodes.iter_mut().filter(|n| !n.frozen) {
            if n.engine.poll_timeout().is_some_and(|t| t <= now) {
                n.wakeups += 1;
                n.engine.handle_timeout(now);
            }
        }
        // Not in due order when some signals are late: taken by due time, in sending order.
        let mut due = Vec::new();
        let mut later = VecDeque::new();
        for signal in self.signals.drain(..) {
            if signal.0 <= now {
                due.push(signal);
            } else {
                later.push_back(signal);
            }
        }
        self.signals = later;
        if self.reverse_signals {
            due.reverse();
        }
        for (_, from, to, bytes) in due {
            let from_key = self.nodes[from].key;
            let signal = PeerSignal::from_bytes(&bytes).expect("signals survive JSON");
            if let Some(j) = self.nodes.iter().position(|n| n.key == to && !n.frozen) {
                *self.signal_count.entry((from, j)).or_default() += 1;
                self.nodes[j].engine.handle_signal(from_key, signal, now);
            }
        }
        loop {
            self.drain();
            let Some((&(due, seq), _)) = self.wire.first_key_value() else { break };
            if due > now {
                break;
            }
            let (src, dst, payload) = self.wire.remove(&(due, seq)).unwrap();
            self.route(src, dst, payload);
        }
        self.clock.advance(STEP);
    }

    /// Runs until `done` or `limit` of fake time; returns whether `done` was reached.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Net) -> bool) -> bool {
        let end = self.clock.now + limit;
        loop {
            self.step();
            if done(self) {
                return true;
            }
            if self.clock.now >= end {
                return false;
            }
        }
    }

    pub fn run_for(&mut self, d: Duration) {
        self.run_until(d, |_| false);
    }

    /// `a`'s view of `b`: Connected with a validated path.
    pub fn connected(&self, a: usize, b: usize) -> bool {
        self.nodes[a]
            .status(self.key(b), self.now())
            .is_some_and(|s| s.state == PeerState::Connected && s.path.is_some())
    }

    pub fn all_connected(&self) -> bool {
        let n = self.nodes.len();
        (0..n).all(|a| (0..n).all(|b| a == b || self.connected(a, b)))
    }

    pub fn path(&self, a: usize, b: usize) -> Option<PathInfo> {
        self.nodes[a].status(self.key(b), self.now()).and_then(|s| s.path)
    }

    pub fn state(&self, a: usize, b: usize) -> Option<PeerState> {
        self.nodes[a].status(self.key(b), self.now()).map(|s| s.state)
    }

    /// Node `a` writes a UDP packet for `b` to its TUN; returns the packet.
    pub fn send_ip(&mut self, a: usize, b: usize, payload: &[u8]) -> Vec<u8> {
        let p = ipv4_udp(self.nodes[a].ip.0, self.nodes[b].ip.0, payload);
        let now = self.now();
        self.nodes[a].engine.handle_tun_packet(&p, now);
        p
    }

    /// Sends one packet a -> b and one b -> a and waits for both (asserting they arrive).
    pub fn exchange(&mut self, a: usize, b: usize) {
        for (from, to) in [(a, b), (b, a)] {
            let tag =
                format!("{} to {} at {:?}", self.nodes[from].name, self.nodes[to].name, self.clock.elapsed());
            let p = self.send_ip(from, to, tag.as_bytes());
            assert!(
                self.run_until(Duration::from_secs(5), |net| net.nodes[to].received.contains(&p)),
                "packet {tag} did not arrive"
            );
        }
    }
}

/// A minimal IPv4/UDP packet (boringtun checks the IPv4 length, not checksums).
pub fn ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&u16::try_from(total).unwrap().to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p[20..22].copy_from_slice(&4000u16.to_be_bytes());
    p[22..24].copy_from_slice(&4000u16.to_be_bytes());
    p[24..26].copy_from_slice(&u16::try_from(8 + payload.len()).unwrap().to_be_bytes());
    p[28..].copy_from_slice(payload);
    p
}
