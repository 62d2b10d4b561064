//! The data plane: one loop that owns the sans-IO [`Engine`], the UDP socket and the
//! TUN device, feeds the engine from all three and from commands, and drains its
//! outputs. Everything else talks to it through [`Dataplane`].
//!
//! On Linux ([`linux`]) the loop is a thread of its own around one `epoll` (mio), with
//! no async runtime between a packet and the engine: after an idle moment every packet
//! pays for each cache line and page its way touches, and a runtime's scheduler, timer
//! wheel and wakers are many of them (docs/PERFORMANCE.md). Elsewhere ([`portable`]) it
//! is a tokio task.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use trellis_protocol::peer::PeerSignal;
use trellis_protocol::{OverlayIp, OverlayNet, PublicKey};
use x25519_dalek::StaticSecret;

use super::udp::Udp;
use crate::engine::{Engine, EngineConfig, EngineEvent, PeerConfig, PeerStatus, RelayServer};
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
}

/// What the data plane tells the daemon.
#[derive(Debug)]
pub enum Output {
    /// To be sealed and sent to the peer through the signal server.
    Signal(PublicKey, PeerSignal),
    Event(EngineEvent),
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

#[derive(Debug)]
pub struct Dataplane {
    /// Dropped before `runner`, which then stops the loop and waits for it: the loop
    /// drops the TUN device, which removes the interface.
    commands: mpsc::Sender<Command>,
    runner: platform::Runner,
    pub my_ip: OverlayIp,
    pub port: u16,
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
        let parts = Parts { engine, udp, tun, host_addrs, commands: command_rx, outputs };
        let runner = platform::Runner::spawn(parts).context("cannot start the data plane")?;
        Ok(Self { commands, runner, my_ip: config.my_ip, port })
    }

    pub async fn send(&self, command: Command) {
        if self.commands.send(command).await.is_ok() {
            self.runner.nudge();
        }
    }

    pub async fn peers(&self) -> Vec<PeerStatus> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Peers(tx)).await;
        rx.await.unwrap_or_default()
    }
}

/// Carries out a command from the daemon.
fn apply(engine: &mut Engine, command: Command, now: Instant) {
    match command {
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
fn host_addresses(port: u16, overlay: OverlayNet) -> Vec<SocketAddr> {
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
