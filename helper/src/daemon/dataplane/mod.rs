//! The data plane: one task that owns the sans-IO [`Engine`], the UDP socket and the
//! TUN device, feeds the engine from all three and from commands, and drains its
//! outputs. Everything else talks to it through [`Dataplane`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use trellis_protocol::peer::PeerSignal;
use trellis_protocol::{OverlayIp, OverlayNet, PublicKey};
use x25519_dalek::StaticSecret;

use super::udp::Udp;
use crate::engine::{Engine, EngineConfig, EngineEvent, PeerConfig, PeerStatus, RelayServer, Transmit};
use crate::tun::TunDevice;

/// Largest packet read from the TUN at once (jumbo-safe).
const BUFFER_BYTES: usize = 65536;
/// When the engine asks for no wake-up, look again after this long anyway.
const IDLE_WAKE: Duration = Duration::from_secs(1);

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
    commands: mpsc::Sender<Command>,
    task: JoinHandle<()>,
    pub my_ip: OverlayIp,
    pub port: u16,
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        // Dropping the task drops the TUN device, which removes the interface.
        self.task.abort();
    }
}

impl Dataplane {
    pub async fn start(config: DataplaneConfig, outputs: mpsc::Sender<Output>) -> anyhow::Result<Self> {
        use anyhow::Context;
        let udp = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, config.port))
            .await
            .with_context(|| format!("cannot open UDP port {}", config.port))?;
        let port = udp.local_addr()?.port();
        let udp = Udp::new(udp).context("cannot set up the UDP socket for batched IO")?;
        let host_addrs = host_addresses(port, config.range);
        let tun = TunDevice::create(&config.tun_name, config.my_ip, config.range)?;
        tracing::info!(port, candidates = ?host_addrs, "data plane up");
        let engine = Engine::new(
            EngineConfig { secret: config.secret, my_ip: config.my_ip, host_addrs: host_addrs.clone() },
            Instant::now(),
        );
        let (commands, command_rx) = mpsc::channel(256);
        let task = tokio::spawn(run(engine, udp, tun, host_addrs, command_rx, outputs));
        Ok(Self { commands, task, my_ip: config.my_ip, port })
    }

    pub async fn send(&self, command: Command) {
        let _ = self.commands.send(command).await;
    }

    pub async fn peers(&self) -> Vec<PeerStatus> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Peers(tx)).await;
        rx.await.unwrap_or_default()
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

/// Most TUN packets read in one wake-up before the datagrams they became are sent: more
/// than a GSO batch holds (64 KiB of 1452-byte datagrams is 44), so a burst leaves in
/// one send, and few enough that UDP input and timers wait at most a few hundred µs.
const TUN_BATCH: usize = 64;
/// Most `recvmmsg` calls in one wake-up before the TUN and timers get their turn.
const UDP_BATCHES: usize = 4;

async fn run(
    mut engine: Engine,
    mut udp: Udp,
    tun: TunDevice,
    host_addrs: Vec<SocketAddr>,
    mut commands: mpsc::Receiver<Command>,
    outputs: mpsc::Sender<Output>,
) {
    let port = udp.local_addr().map(|a| a.port()).unwrap_or(0);
    let mut tun_buf = vec![0u8; BUFFER_BYTES];
    let mut transmits: Vec<Transmit> = Vec::new();
    // One timer, moved only when the engine's deadline moves: a fresh `sleep_until` per
    // wake-up would register and cancel a timer for every packet.
    let sleep = tokio::time::sleep_until(tokio::time::Instant::now() + IDLE_WAKE);
    tokio::pin!(sleep);
    loop {
        let wake = match engine.poll_timeout() {
            Some(at) => tokio::time::Instant::from_std(at),
            // Nothing due: the idle wake-up already set stands, rather than moving on
            // every wake-up.
            None if sleep.deadline() > tokio::time::Instant::now() => sleep.deadline(),
            None => tokio::time::Instant::now() + IDLE_WAKE,
        };
        if sleep.deadline() != wake {
            sleep.as_mut().reset(wake);
        }
        tokio::select! {
            ready = udp.readable() => match ready {
                Ok(()) => {
                    for _ in 0..UDP_BATCHES {
                        let now = Instant::now();
                        let read = udp.try_recv_batch(|from, datagram| {
                            engine.handle_datagram(local_for(&host_addrs, from, port), from, datagram, now);
                        });
                        match read {
                            Ok(0) => break,
                            // Written out before the next batch is read: one batch can hold
                            // hundreds of packets (GRO), and their buffers go back to the
                            // engine's spares only once written.
                            Ok(_) => drain(&mut engine, &mut udp, &tun, &mut transmits).await,
                            Err(e) => {
                                tracing::debug!(error = %e, "UDP receive failed");
                                break;
                            }
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "UDP receive failed"),
            },
            read = tun.recv(&mut tun_buf) => match read {
                Ok(n) => {
                    let now = Instant::now();
                    engine.handle_tun_packet(&tun_buf[..n], now);
                    // Whatever else is already queued, without waiting: encrypted together,
                    // the packets leave as one batch below. An error is left for the next
                    // `recv` above to report.
                    for _ in 1..TUN_BATCH {
                        match tun.recv(&mut tun_buf).now_or_never() {
                            Some(Ok(n)) => engine.handle_tun_packet(&tun_buf[..n], now),
                            Some(Err(_)) | None => break,
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "the TUN device failed; stopping the data plane");
                    return;
                }
            },
            command = commands.recv() => {
                let now = Instant::now();
                match command {
                    None => return,
                    Some(Command::SetPeers(peers)) => engine.set_peers(&peers, now),
                    Some(Command::SetRelay(relay)) => engine.set_relay(relay, now),
                    Some(Command::Signal(from, signal)) => engine.handle_signal(from, signal, now),
                    Some(Command::Ping(peer, reply)) => {
                        let _ = reply.send(engine.ping(&peer, now).map_err(|e| e.to_string()));
                    }
                    Some(Command::Peers(reply)) => { let _ = reply.send(engine.peers(now)); }
                }
            }
            _ = &mut sleep => {
                engine.handle_timeout(Instant::now());
            }
        }
        drain(&mut engine, &mut udp, &tun, &mut transmits).await;
        while let Some((peer, signal)) = engine.poll_signal() {
            if outputs.try_send(Output::Signal(peer, signal)).is_err() {
                tracing::warn!(peer = %peer.short(), "signal queue full; ICE will retry");
            }
        }
        while let Some(event) = engine.poll_event() {
            let _ = outputs.try_send(Output::Event(event));
        }
    }
}

/// Sends the engine's datagrams (in one batch, so that runs leave with GSO) and writes its
/// decrypted packets to the TUN, handing every buffer back to the engine for reuse.
async fn drain(engine: &mut Engine, udp: &mut Udp, tun: &TunDevice, transmits: &mut Vec<Transmit>) {
    transmits.extend(std::iter::from_fn(|| engine.poll_transmit()));
    if !transmits.is_empty() {
        udp.send_batch(transmits).await;
        for t in transmits.drain(..) {
            engine.recycle(t.payload);
        }
    }
    while let Some(packet) = engine.poll_tun_packet() {
        if let Err(e) = tun.send(&packet).await {
            tracing::debug!(error = %e, "TUN write failed");
        }
        engine.recycle(packet);
    }
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
