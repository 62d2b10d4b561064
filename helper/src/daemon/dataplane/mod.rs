//! The data plane: one loop that owns the sans-IO [`Engine`], the UDP socket and the
//! TUN device, feeds the engine from all three and from commands, and drains its
//! outputs. Everything else talks to it through [`Dataplane`].
//!
//! On Linux ([`linux`]) the loop is a thread of its own around one `epoll` (mio), with
//! no async runtime between a packet and the engine: after an idle moment every packet
//! pays for each cache line and page its way touches, and a runtime's scheduler, timer
//! wheel and wakers are many of them (docs/PERFORMANCE.md). Elsewhere ([`portable`]) it
//! is a tokio task.
//!
//! Either way the loop reports how it ended: a TUN failure, an error, or a panic (caught)
//! reaches its owner as a sentence on [`Dataplane::exited`], so that a dead data plane is
//! seen and restarted rather than reported as up. The owner starts data planes through a
//! [`DataplaneStarter`], which tests replace with a fake.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use trellis_protocol::peer::PeerSignal;
use trellis_protocol::{OverlayIp, OverlayNet, PublicKey};
use x25519_dalek::StaticSecret;

use super::udp::Udp;
use crate::engine::{
    Engine, EngineConfig, EngineEvent, PeerConfig, PeerStatus, RelayServer, SuspendDetector,
};
use crate::tun::TunDevice;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(not(target_os = "linux"))]
mod portable;

#[cfg(target_os = "linux")]
use linux as platform;
#[cfg(not(target_os = "linux"))]
use portable as platform;

/// Largest packet read from the TUN at once (jumbo-safe; the Linux device keeps its own
/// buffer).
#[cfg(not(target_os = "linux"))]
const BUFFER_BYTES: usize = 65536;
/// When the engine asks for no wake-up, look again after this long anyway.
const IDLE_WAKE: Duration = Duration::from_secs(1);
/// Most TUN packets read in one wake-up before the datagrams they became are sent: more
/// than a GSO batch holds (64 KiB of 1452-byte datagrams is 44), so a burst leaves in
/// one send, and few enough that UDP input and timers wait at most a few hundred µs.
const TUN_BATCH: usize = 64;
/// Most `recvmmsg` calls in one wake-up before the TUN and timers get their turn.
const UDP_BATCHES: usize = 4;

#[derive(Debug)]
pub enum Command {
    SetPeers(Vec<PeerConfig>),
    SetRelay(Option<RelayServer>),
    Signal(PublicKey, PeerSignal),
    Ping(PublicKey, oneshot::Sender<Result<(), String>>),
    Peers(oneshot::Sender<Vec<PeerStatus>>),
    /// The machine's addresses changed: new host candidates (the daemon's watcher).
    SetHostAddrs(Vec<SocketAddr>),
    /// Makes the loop panic: tests that a dead data plane is seen.
    #[cfg(test)]
    Panic,
}

/// What the data plane tells the daemon.
#[derive(Debug)]
pub enum Output {
    /// To be sealed and sent to the peer through the signal server.
    Signal(PublicKey, PeerSignal),
    Event(EngineEvent),
    /// The loop did not run for this long (the machine slept, or the process was
    /// stopped): the engine re-handshakes and re-checks its paths; the daemon checks its
    /// signal connection.
    Resumed(Duration),
}

/// Debug leaves the secret out.
pub struct DataplaneConfig {
    pub secret: StaticSecret,
    pub my_ip: OverlayIp,
    pub range: OverlayNet,
    pub tun_name: String,
    /// UDP port for ICE and WireGuard; 0 picks a free one.
    pub port: u16,
}

impl std::fmt::Debug for DataplaneConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataplaneConfig")
            .field("my_ip", &self.my_ip)
            .field("range", &self.range)
            .field("tun_name", &self.tun_name)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// What talks to a running data plane: cheap to clone, so that an IPC request can ask it
/// for its peers without holding up the daemon. Commands to a stopped one are dropped.
#[derive(Clone)]
pub struct DataplaneHandle {
    commands: mpsc::Sender<Command>,
    nudge: Arc<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for DataplaneHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataplaneHandle").finish_non_exhaustive()
    }
}

impl DataplaneHandle {
    pub fn new(commands: mpsc::Sender<Command>, nudge: Arc<dyn Fn() + Send + Sync>) -> Self {
        Self { commands, nudge }
    }

    pub async fn send(&self, command: Command) {
        if self.commands.send(command).await.is_ok() {
            (self.nudge)();
        }
    }

    /// Sends without waiting for room: for the daemon's own loop, which must never wait
    /// on the data plane (the data plane never waits on it either). A full queue means a
    /// stuck loop; the command is dropped and logged.
    pub fn try_send(&self, command: Command) {
        match self.commands.try_send(command) {
            Ok(()) => (self.nudge)(),
            Err(mpsc::error::TrySendError::Full(_)) => tracing::warn!("the data plane is not keeping up"),
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    pub async fn peers(&self) -> Vec<PeerStatus> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Peers(tx)).await;
        rx.await.unwrap_or_default()
    }
}

/// What stops a data plane's loop: the platform's runner, or a test's fake.
pub trait Stop: Send + Sync {
    /// Stops the loop and waits for it without blocking the runtime: the TUN device and the
    /// socket are gone when the future completes.
    fn stop(self: Box<Self>) -> futures_util::future::BoxFuture<'static, ()>;
}

/// A running data plane. [`Dataplane::stop`] stops the loop and waits for it; dropping it
/// stops it too (on Linux waiting for the thread, elsewhere without waiting).
pub struct Dataplane {
    pub handle: DataplaneHandle,
    /// A sentence saying why the loop ended by itself (never sent after a drop).
    pub exited: oneshot::Receiver<String>,
    pub my_ip: OverlayIp,
    pub port: u16,
    runner: Box<dyn Stop>,
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane")
            .field("my_ip", &self.my_ip)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// What the loop owns.
struct Parts {
    engine: Engine,
    udp: Udp,
    tun: TunDevice,
    host_addrs: Vec<SocketAddr>,
    commands: mpsc::Receiver<Command>,
    outputs: mpsc::Sender<Output>,
}

/// Starts data planes for the daemon: the real one ([`SystemDataplane`]) or a test's fake.
pub trait DataplaneStarter: Send + Sync + 'static {
    fn start(
        &self,
        config: DataplaneConfig,
        outputs: mpsc::Sender<Output>,
    ) -> futures_util::future::BoxFuture<'static, anyhow::Result<Dataplane>>;
}

/// The real data plane: a TUN device, the UDP socket and the engine.
#[derive(Debug, Default)]
pub struct SystemDataplane;

impl DataplaneStarter for SystemDataplane {
    fn start(
        &self,
        config: DataplaneConfig,
        outputs: mpsc::Sender<Output>,
    ) -> futures_util::future::BoxFuture<'static, anyhow::Result<Dataplane>> {
        Box::pin(Dataplane::start(config, outputs))
    }
}

impl Dataplane {
    pub async fn start(config: DataplaneConfig, outputs: mpsc::Sender<Output>) -> anyhow::Result<Self> {
        use anyhow::Context;
        let udp = platform::open_udp(config.port)
            .await
            .with_context(|| format!("cannot open UDP port {}", config.port))?;
        let port = udp.local_addr()?.port();
        let host_addrs = host_addresses(port, config.range);
        let tun = TunDevice::create(&config.tun_name, config.my_ip, config.range)?;
        tracing::info!(port, candidates = ?host_addrs, "data plane up");
        let engine = Engine::new(
            EngineConfig { secret: config.secret, my_ip: config.my_ip, host_addrs: host_addrs.clone() },
            Instant::now(),
        );
        let (commands, command_rx) = mpsc::channel(256);
        let (exit_tx, exited) = oneshot::channel();
        let parts = Parts { engine, udp, tun, host_addrs, commands: command_rx, outputs };
        let runner = platform::Runner::spawn(parts, exit_tx).context("cannot start the data plane")?;
        let nudge = runner.nudger();
        let handle = DataplaneHandle::new(commands, nudge);
        Ok(Self::from_parts(handle, exited, config.my_ip, port, Box::new(runner)))
    }

    /// A data plane made of its parts: the real one above, or a test's fake.
    pub fn from_parts(
        handle: DataplaneHandle,
        exited: oneshot::Receiver<String>,
        my_ip: OverlayIp,
        port: u16,
        runner: Box<dyn Stop>,
    ) -> Self {
        Self { handle, exited, my_ip, port, runner }
    }

    /// Stops the loop and waits until its TUN device and socket are gone.
    pub async fn stop(self) {
        self.runner.stop().await;
    }
}

/// Why a loop ended, from its result or its panic.
fn exit_reason(result: std::thread::Result<Result<(), String>>) -> Option<String> {
    match result {
        Ok(Ok(())) => None,
        Ok(Err(reason)) => Some(reason),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            Some(format!("the data plane crashed: {message}"))
        }
    }
}

/// Notices that the loop did not run for a while (sleep, SIGSTOP) and tells the engine
/// and the daemon; returns whether it did.
fn check_resumed(suspend: &mut SuspendDetector, engine: &mut Engine, outputs: &mpsc::Sender<Output>) -> bool {
    let now = Instant::now();
    let Some(slept) = suspend.observe(now, crate::daemon::boot_clock::boot_time()) else { return false };
    tracing::info!(slept_ms = slept.as_millis() as u64, "resumed after a pause: re-checking every path");
    engine.handle_resume(now);
    let _ = outputs.try_send(Output::Resumed(slept));
    true
}

/// Most datagrams dropped as stale after a pause (a socket buffer holds a few hundred).
const STALE_DATAGRAMS_MAX: usize = 4096;

/// Drops what the socket queued while the loop did not run: a peer's handshake retries
/// from minutes ago would each be answered, fill boringtun's per-peer handshake limit and
/// get the fresh handshake that follows a cookie instead of a session; old ICE checks and
/// data are no use either. What the peer still wants it sends again.
fn discard_stale(udp: &mut Udp) {
    let mut dropped = 0;
    while dropped < STALE_DATAGRAMS_MAX {
        match udp.try_recv_batch(|_, _| {}) {
            Ok(0) | Err(_) => break,
            Ok(n) => dropped += n,
        }
    }
    if dropped > 0 {
        tracing::info!(dropped, "dropped the datagrams queued during the pause");
    }
}

/// A detector for the loop: it wakes at least every [`IDLE_WAKE`].
fn suspend_detector() -> SuspendDetector {
    SuspendDetector::new(Instant::now(), crate::daemon::boot_clock::boot_time(), SUSPEND_GAP)
}

/// A pause of the loop longer than this counts as a suspend: the loop wakes every
/// [`IDLE_WAKE`] at the latest, so a few seconds without a turn means it was not running.
const SUSPEND_GAP: Duration = Duration::from_secs(4);

/// Carries out a command from the daemon.
fn apply(engine: &mut Engine, host_addrs: &mut Vec<SocketAddr>, command: Command, now: Instant) {
    match command {
        Command::SetHostAddrs(addrs) => {
            if *host_addrs != addrs {
                tracing::info!(candidates = ?addrs, "host addresses changed");
                host_addrs.clone_from(&addrs);
                engine.set_host_addrs(addrs, now);
            }
        }
        #[cfg(test)]
        Command::Panic => panic!("asked to panic by a test"),
        Command::SetPeers(peers) => engine.set_peers(&peers, now),
        Command::SetRelay(relay) => engine.set_relay(relay, now),
        Command::Signal(from, signal) => engine.handle_signal(from, signal, now),
        Command::Ping(peer, reply) => {
            let _ = reply.send(engine.ping(&peer, now).map_err(|e| e.to_string()));
        }
        Command::Peers(reply) => {
            let _ = reply.send(engine.peers(now));
        }
    }
}

/// Hands the engine's signals and events to the daemon, without waiting for it.
fn forward(engine: &mut Engine, outputs: &mpsc::Sender<Output>) {
    while let Some((peer, signal)) = engine.poll_signal() {
        if outputs.try_send(Output::Signal(peer, signal)).is_err() {
            tracing::warn!(peer = %peer.short(), "signal queue full; ICE will retry");
        }
    }
    while let Some(event) = engine.poll_event() {
        let _ = outputs.try_send(Output::Event(event));
    }
}

/// The machine's own addresses on the overlay's UDP port: the host candidates. The
/// overlay's own addresses and loopback are left out.
pub fn host_addresses(port: u16, overlay: OverlayNet) -> Vec<SocketAddr> {
    let mut found: Vec<SocketAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|iface| match iface.ip() {
            IpAddr::V4(v4) if !v4.is_loopback() && !overlay.contains(v4) && !v4.is_link_local() => {
                Some(SocketAddr::new(IpAddr::V4(v4), port))
            }
            _ => None,
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

/// Which host candidate a datagram from `from` arrived on. The socket is bound to all
/// addresses and does not report the destination, so the best guess is the host
/// address sharing the longest prefix with the sender.
fn local_for(host_addrs: &[SocketAddr], from: SocketAddr, port: u16) -> SocketAddr {
    let common = |a: &SocketAddr| match (a.ip(), from.ip()) {
        (IpAddr::V4(x), IpAddr::V4(y)) => (u32::from(x) ^ u32::from(y)).leading_zeros(),
        _ => 0,
    };
    host_addrs
        .iter()
        .max_by_key(|a| common(a))
        .copied()
        .unwrap_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_are_attributed_to_the_closest_host_address() {
        let hosts: Vec<SocketAddr> =
            vec!["192.0.2.10:5000".parse().unwrap(), "198.51.100.7:5000".parse().unwrap()];
        assert_eq!(local_for(&hosts, "198.51.100.99:4000".parse().unwrap(), 5000), hosts[1]);
        assert_eq!(local_for(&hosts, "192.0.2.1:4000".parse().unwrap(), 5000), hosts[0]);
        assert_eq!(local_for(&[], "192.0.2.1:4000".parse().unwrap(), 5000), "0.0.0.0:5000".parse().unwrap());
    }
}
