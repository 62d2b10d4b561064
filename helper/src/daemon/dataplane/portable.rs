//! The data plane as a tokio task, where the TUN device is async (macOS and Windows;
//! compiled and tested on Linux only by switching the `cfg` locally).

use std::net::Ipv4Addr;
use std::time::Instant;

use futures_util::FutureExt;
use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{
    apply, check_resumed, discard_stale, exit_reason, forward, local_for, suspend_detector, Parts,
    BUFFER_BYTES, IDLE_WAKE, TUN_BATCH, UDP_BATCHES,
};
use crate::daemon::udp::Udp;
use crate::engine::{Engine, Transmit};
use crate::tun::TunDevice;

pub(super) async fn open_udp(port: u16) -> std::io::Result<Udp> {
    Udp::new(UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).await?)
}

/// The loop's task; [`super::Stop::stop`] aborts it and waits for it, a drop only aborts it.
#[derive(Debug)]
pub(super) struct Runner {
    task: Option<JoinHandle<()>>,
}

impl Runner {
    /// Starts the task; how it ended, unless stopped, goes to `exited`.
    pub(super) fn spawn(parts: Parts, exited: oneshot::Sender<String>) -> std::io::Result<Self> {
        let task = tokio::spawn(async move {
            let result = std::panic::AssertUnwindSafe(run(parts)).catch_unwind().await;
            if let Some(reason) = exit_reason(result) {
                tracing::error!(%reason, "the data plane stopped by itself");
                let _ = exited.send(reason);
            }
        });
        Ok(Self { task: Some(task) })
    }

    /// The task waits on the command channel itself: nothing to wake.
    pub(super) fn nudger(&self) -> std::sync::Arc<dyn Fn() + Send + Sync> {
        std::sync::Arc::new(|| {})
    }
}

impl super::Stop for Runner {
    fn stop(mut self: Box<Self>) -> futures_util::future::BoxFuture<'static, ()> {
        let task = self.task.take();
        // Awaited: the aborted task drops its TUN device and socket before this completes,
        // so a new data plane can take the same adapter and port at once.
        Box::pin(async move {
            if let Some(task) = task {
                task.abort();
                let _ = task.await;
            }
        })
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The loop; returns why it ended by itself (`Ok` when orphaned).
async fn run(parts: Parts) -> Result<(), String> {
    let Parts { mut engine, mut udp, tun, mut host_addrs, mut commands, outputs } = parts;
    let mut suspend = suspend_detector();
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
                    // Before the reads: what queued during a pause is stale.
                    if check_resumed(&mut suspend, &mut engine, &outputs) {
                        discard_stale(&mut udp);
                    }
                    for _ in 0..UDP_BATCHES {
                        let now = Instant::now();
                        let read = udp.try_recv_batch(|from, datagram| {
                            engine.handle_datagram(local_for(&host_addrs, from, port), from, datagram, now);
                        });
                        match read {
                            Ok(0) => break,
                            // Written out before the next batch is read (see the Linux loop).
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
                Err(e) => return Err(format!("the TUN device failed: {e}")),
            },
            command = commands.recv() => match command {
                None => return Ok(()),
                Some(command) => apply(&mut engine, &mut host_addrs, command, Instant::now()),
            },
            _ = &mut sleep => {
                engine.handle_timeout(Instant::now());
            }
        }
        check_resumed(&mut suspend, &mut engine, &outputs);
        drain(&mut engine, &mut udp, &tun, &mut transmits).await;
        forward(&mut engine, &outputs);
    }
}

/// Sends the engine's datagrams and writes its decrypted packets to the TUN, handing
/// every buffer back to the engine for reuse.
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
