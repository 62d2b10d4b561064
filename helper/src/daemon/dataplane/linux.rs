//! The data plane on Linux: a thread of its own, waiting in one `epoll` (mio) on the UDP
//! socket, the TUN device and a waker for commands, with the engine's next deadline as
//! the timeout. A packet's way is `epoll_wait`, a read, the engine, a write: no runtime
//! scheduler, timer wheel or task waker on it, which is most of what a packet touched
//! besides the engine and the crypto (docs/PERFORMANCE.md, "A data plane thread").

use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::oneshot;

use super::{
    apply, check_resumed, discard_stale, exit_reason, forward, local_for, suspend_detector, Parts, IDLE_WAKE,
    TUN_BATCH, UDP_BATCHES,
};
use crate::daemon::udp::Udp;
use crate::engine::{Engine, Transmit};
use crate::tun::TunDevice;

const UDP: Token = Token(0);
const TUN: Token = Token(1);
const WAKE: Token = Token(2);

pub(super) async fn open_udp(port: u16) -> io::Result<Udp> {
    Udp::new(UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port))?)
}

/// The loop's thread. Dropping it stops the thread and waits for it, so that the TUN
/// device is gone when the drop returns.
#[derive(Debug)]
pub(super) struct Runner {
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Runner {
    /// Starts the thread; how it ended, unless stopped, goes to `exited`.
    pub(super) fn spawn(parts: Parts, exited: oneshot::Sender<String>) -> io::Result<Self> {
        let poll = Poll::new()?;
        let registry = poll.registry();
        registry.register(&mut SourceFd(&parts.udp.as_raw_fd()), UDP, Interest::READABLE)?;
        registry.register(&mut SourceFd(&parts.tun.as_raw_fd()), TUN, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(registry, WAKE)?);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new().name("trellis-dataplane".into()).spawn({
            let stop = Arc::clone(&stop);
            move || {
                // The parts (the TUN among them) are dropped inside, panic or not.
                let result =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(poll, parts, &stop)));
                if let Some(reason) = exit_reason(result) {
                    tracing::error!(%reason, "the data plane stopped by itself");
                    let _ = exited.send(reason);
                }
            }
        })?;
        Ok(Self { waker, stop, thread: Some(thread) })
    }

    /// Wakes the loop to read the commands sent to it.
    pub(super) fn nudger(&self) -> Arc<dyn Fn() + Send + Sync> {
        let waker = Arc::clone(&self.waker);
        Arc::new(move || {
            if let Err(e) = waker.wake() {
                tracing::warn!(error = %e, "cannot wake the data plane");
            }
        })
    }
}

impl Runner {
    /// Tells the thread to stop; returns it to be joined.
    fn signal_stop(&mut self) -> Option<JoinHandle<()>> {
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
        self.thread.take()
    }
}

fn join(thread: JoinHandle<()>) {
    if thread.join().is_err() {
        tracing::error!("the data plane thread could not be joined");
    }
}

impl super::Stop for Runner {
    fn stop(mut self: Box<Self>) -> futures_util::future::BoxFuture<'static, ()> {
        let thread = self.signal_stop();
        Box::pin(async move {
            if let Some(thread) = thread {
                // The thread closes the TUN device as it ends, which may take the kernel a
                // moment: joined off the runtime's workers.
                let _ = tokio::task::spawn_blocking(move || join(thread)).await;
            }
        })
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        if let Some(thread) = self.signal_stop() {
            join(thread);
        }
    }
}

/// The loop; returns why it ended by itself (`Ok` when stopped or orphaned).
fn run(mut poll: Poll, parts: Parts, stop: &AtomicBool) -> Result<(), String> {
    let Parts { mut engine, mut udp, mut tun, mut host_addrs, mut commands, outputs } = parts;
    let mut suspend = suspend_detector();
    let port = udp.local_addr().map(|a| a.port()).unwrap_or(0);
    let mut events = Events::with_capacity(4);
    let mut transmits: Vec<Transmit> = Vec::new();
    // mio's readiness is edge-triggered: a source stays marked ready from its event until
    // a read finds it empty, and the loop does not sleep while one is.
    let (mut udp_ready, mut tun_ready) = (false, false);
    let mut idle_until = Instant::now() + IDLE_WAKE;
    loop {
        let now = Instant::now();
        let wake = engine.poll_timeout().unwrap_or_else(|| {
            // Nothing due: the idle wake-up already set stands, as in the tokio loop.
            if idle_until <= now {
                idle_until = now + IDLE_WAKE;
            }
            idle_until
        });
        let wait = if udp_ready || tun_ready {
            std::time::Duration::ZERO
        } else {
            wake.saturating_duration_since(now)
        };
        match poll.poll(&mut events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("the data plane cannot wait for packets: {e}")),
        }
        for event in &events {
            match event.token() {
                UDP => udp_ready = true,
                TUN => tun_ready = true,
                _ => {}
            }
        }
        if stop.load(Ordering::Acquire) {
            return Ok(());
        }
        if check_resumed(&mut suspend, &mut engine, &outputs) {
            discard_stale(&mut udp);
        }
        if udp_ready {
            udp_ready = read_udp(&mut engine, &mut udp, &mut tun, &mut transmits, &host_addrs, port);
        }
        if tun_ready {
            match read_tun(&mut engine, &mut tun) {
                Ok(more) => tun_ready = more,
                Err(e) => return Err(format!("the TUN device failed: {e}")),
            }
        }
        loop {
            match commands.try_recv() {
                Ok(command) => apply(&mut engine, &mut host_addrs, command, Instant::now()),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return Ok(()),
            }
        }
        let now = Instant::now();
        if wake <= now {
            engine.handle_timeout(now);
        }
        drain(&mut engine, &mut udp, &mut tun, &mut transmits);
        forward(&mut engine, &outputs);
    }
}

/// Reads up to [`UDP_BATCHES`] batches of datagrams into the engine, each written out
/// before the next is read: one batch can hold hundreds of packets (GRO), and their
/// buffers go back to the engine's spares only once written. Returns whether more may
/// be waiting: readiness is edge-triggered, so it is given up only when a read found the
/// socket empty.
fn read_udp(
    engine: &mut Engine,
    udp: &mut Udp,
    tun: &mut TunDevice,
    transmits: &mut Vec<Transmit>,
    host_addrs: &[SocketAddr],
    port: u16,
) -> bool {
    for _ in 0..UDP_BATCHES {
        let now = Instant::now();
        let read = udp.try_recv_batch(|from, datagram| {
            engine.handle_datagram(local_for(host_addrs, from, port), from, datagram, now);
        });
        match read {
            Ok(0) => return false,
            Ok(_) => drain(engine, udp, tun, transmits),
            Err(e) => {
                // Tried again on the next turn: the datagrams behind it are still queued,
                // and no new event may come for them. Errors on a UDP socket are reported
                // once (a pending ICMP error, a failed allocation), so this does not spin.
                tracing::debug!(error = %e, "UDP receive failed");
                return true;
            }
        }
    }
    true
}

/// Reads the TUN until about [`TUN_BATCH`] packets are in the engine (one read can hold a
/// TCP super-segment of up to 45): encrypted together, they leave as one batch. Returns
/// whether more may be waiting.
fn read_tun(engine: &mut Engine, tun: &mut TunDevice) -> io::Result<bool> {
    let now = Instant::now();
    let mut packets = 0;
    for _ in 0..TUN_BATCH {
        match tun.try_recv_packets(|packet| engine.handle_tun_packet(packet, now)) {
            Ok(None) => return Ok(false),
            Ok(Some(n)) => packets += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        if packets >= TUN_BATCH {
            break;
        }
    }
    Ok(true)
}

/// Sends the engine's datagrams (in one batch, so that runs leave with GSO) and writes its
/// decrypted packets to the TUN (a TCP burst joined into one write), handing every buffer
/// back to the engine for reuse.
fn drain(engine: &mut Engine, udp: &mut Udp, tun: &mut TunDevice, transmits: &mut Vec<Transmit>) {
    transmits.extend(std::iter::from_fn(|| engine.poll_transmit()));
    if !transmits.is_empty() {
        udp.send_batch(transmits);
        for t in transmits.drain(..) {
            engine.recycle(t.payload);
        }
    }
    while let Some(packet) = engine.poll_tun_packet() {
        if let Err(e) = tun.send(&packet) {
            tracing::debug!(error = %e, "TUN write failed");
        }
        engine.recycle(packet);
    }
    if let Err(e) = tun.flush() {
        tracing::debug!(error = %e, "TUN write failed");
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::time::Duration;

    use tokio::sync::{mpsc, oneshot};
    use trellis_protocol::{OverlayIp, OverlayNet, PublicKey};
    use x25519_dalek::StaticSecret;

    use super::super::{Command, Dataplane, DataplaneConfig};

    use crate::daemon::tests_support::{in_own_network_namespace, privileged, wait_until_interface_gone};

    fn interface_addresses(name: &str) -> Vec<IpAddr> {
        if_addrs::get_if_addrs().unwrap().into_iter().filter(|i| i.name == name).map(|i| i.ip()).collect()
    }

    fn config(my_ip: OverlayIp, tun_name: &str) -> DataplaneConfig {
        DataplaneConfig {
            secret: StaticSecret::from([7; 32]),
            my_ip,
            range: OverlayNet::DEFAULT,
            tun_name: tun_name.into(),
            port: 0,
        }
    }

    /// The data plane's thread brings its TUN device up, answers commands (through the
    /// waker), and is gone with the device once the handle is dropped: a reconnect can
    /// create the same interface again at once.
    #[test]
    fn the_thread_answers_commands_and_takes_its_tun_device_along_when_dropped() {
        if !privileged("the data plane test") {
            return;
        }
        in_own_network_namespace(|| async {
            let my_ip = OverlayIp("100.64.0.7".parse().unwrap());
            let stranger = PublicKey::from_bytes([9; 32]);
            for round in 0..2 {
                let (outputs, _outputs_rx) = mpsc::channel(16);
                let dataplane = Dataplane::start(config(my_ip, "trtest0"), outputs).await.unwrap();
                assert_eq!(interface_addresses("trtest0"), vec![IpAddr::V4(my_ip.0)], "round {round}");
                // An answer, not a dropped reply: the thread woke for the command.
                let (reply, answer) = oneshot::channel();
                dataplane.handle.send(Command::Ping(stranger, reply)).await;
                let answer = tokio::time::timeout(Duration::from_secs(10), answer).await;
                let answer = answer.expect("no answer within 10 s").expect("the command was dropped");
                assert!(matches!(&answer, Err(e) if e.contains("no peer")), "round {round}: {answer:?}");
                // The thread closed the device before the drop returned.
                drop(dataplane);
                wait_until_interface_gone(
                    "trtest0",
                    &format!("round {round}: the TUN outlived its data plane"),
                );
            }
        });
    }

    /// A panic in the loop is caught and reported with its message, and the TUN device
    /// goes with the thread: the daemon sees a dead data plane and can start another.
    #[test]
    fn a_panicking_loop_reports_why_and_releases_its_tun_device() {
        if !privileged("the data plane panic test") {
            return;
        }
        in_own_network_namespace(|| async {
            let (outputs, _outputs_rx) = mpsc::channel(16);
            let config = config(OverlayIp("100.64.0.9".parse().unwrap()), "trpanic0");
            let mut dataplane = Dataplane::start(config, outputs).await.unwrap();
            dataplane.handle.send(Command::Panic).await;
            let reason = tokio::time::timeout(Duration::from_secs(10), &mut dataplane.exited)
                .await
                .expect("no exit reported within 10 s")
                .expect("the loop ended without a reason");
            assert!(reason.contains("asked to panic by a test"), "{reason}");
            wait_until_interface_gone("trpanic0", "the TUN outlived its panicked loop");
        });
    }
}
