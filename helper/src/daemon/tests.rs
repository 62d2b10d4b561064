//! The daemon as one owner: a real `trellis-signal` in this process on loopback, and a
//! fake data plane that records what it is told and can be made to fail.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use trellis_protocol::ipc::{IpcRequest, IpcResponse, Status, TunnelState};
use trellis_protocol::{DeviceId, NetworkName, ServerAddr};
use trellis_signal::server::RunningServer;

use super::dataplane::{
    Command, Dataplane, DataplaneConfig, DataplaneHandle, DataplaneStarter, Output, Stop,
};
use super::{Daemon, DaemonConfig};

const DEADLINE: Duration = Duration::from_secs(10);

/// Waits until `check` holds, or fails the test naming `what`.
async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "not within {DEADLINE:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Data planes that live as tokio tasks answering commands: nothing of the system is
/// touched. A test can make the next starts fail or the running one die.
#[derive(Default)]
struct FakeDataplanes {
    starts: AtomicUsize,
    running: Arc<AtomicUsize>,
    /// Relays handed to any data plane (TURN credentials, which also bring STUN).
    relays: Arc<AtomicUsize>,
    failing_starts: Mutex<usize>,
    /// Ends the running data plane with a reason.
    kill: Mutex<Option<oneshot::Sender<String>>>,
}

/// Dropped when the daemon stops its data plane: counts it gone and ends its task.
struct FakeRunner {
    running: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Stop for FakeRunner {
    fn stop(self: Box<Self>) -> futures_util::future::BoxFuture<'static, ()> {
        Box::pin(async move { drop(self) })
    }
}

impl Drop for FakeRunner {
    fn drop(&mut self) {
        self.task.abort();
        self.running.fetch_sub(1, Ordering::SeqCst);
    }
}

impl DataplaneStarter for FakeDataplanes {
    fn start(
        &self,
        config: DataplaneConfig,
        _outputs: mpsc::Sender<Output>,
    ) -> futures_util::future::BoxFuture<'static, anyhow::Result<Dataplane>> {
        self.starts.fetch_add(1, Ordering::SeqCst);
        let fail = {
            let mut failing = self.failing_starts.lock().unwrap();
            let fail = *failing > 0;
            *failing = failing.saturating_sub(1);
            fail
        };
        let (kill, exited) = oneshot::channel();
        if !fail {
            *self.kill.lock().unwrap() = Some(kill);
            self.running.fetch_add(1, Ordering::SeqCst);
        }
        let running = self.running.clone();
        let relays = self.relays.clone();
        Box::pin(async move {
            if fail {
                anyhow::bail!("the TUN device is busy");
            }
            let (commands, mut command_rx) = mpsc::channel(64);
            let task = tokio::spawn(async move {
                while let Some(command) = command_rx.recv().await {
                    match command {
                        Command::Peers(reply) => {
                            let _ = reply.send(Vec::new());
                        }
                        Command::Ping(_, reply) => {
                            let _ = reply.send(Ok(()));
                        }
                        Command::SetRelay(Some(_)) => {
                            relays.fetch_add(1, Ordering::SeqCst);
                        }
                        _ => {}
                    }
                }
            });
            let handle = DataplaneHandle::new(commands, Arc::new(|| {}));
            let runner = FakeRunner { running, task };
            Ok(Dataplane::from_parts(handle, exited, config.my_ip, 0, Box::new(runner)))
        })
    }
}

struct Lab {
    server: Option<RunningServer>,
    _server_dir: tempfile::TempDir,
}

impl Lab {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let settings = trellis_signal::config::Settings::local(dir.path());
        let server = trellis_signal::server::start(&settings, Arc::new(trellis_signal::clock::SystemClock))
            .await
            .unwrap();
        Self { server: Some(server), _server_dir: dir }
    }

    fn server(&self) -> &RunningServer {
        self.server.as_ref().unwrap()
    }

    fn url(&self) -> ServerAddr {
        format!("ws://{}", self.server().api_addr).parse().unwrap()
    }

    fn sessions_of(&self, daemon: &Daemon) -> usize {
        self.server().service.session_count(&DeviceId::of_key(&daemon.key))
    }

    async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

struct Device {
    daemon: Daemon,
    dataplanes: Arc<FakeDataplanes>,
    _state: tempfile::TempDir,
}

impl Device {
    async fn start(name: &str) -> Self {
        let state = tempfile::tempdir().unwrap();
        let dataplanes = Arc::new(FakeDataplanes::default());
        let config = DaemonConfig {
            state_dir: state.path().to_path_buf(),
            tun_name: "unused0".into(),
            port: 0,
            name: Some(name.parse().unwrap()),
        };
        let daemon = Daemon::start_with(config, dataplanes.clone()).await.unwrap();
        Self { daemon, dataplanes, _state: state }
    }

    async fn ask(&self, request: IpcRequest) -> IpcResponse {
        self.daemon.handle(request).await.unwrap_or_else(|e| panic!("refused: {e:?}"))
    }

    async fn status(&self) -> Status {
        self.daemon.status().await.unwrap()
    }

    async fn create_network(&self, lab: &Lab) {
        let name: NetworkName = "home".parse().unwrap();
        self.ask(IpcRequest::CreateNetwork { name, server: Some(lab.url()), range: None }).await;
    }

    fn running(&self) -> usize {
        self.dataplanes.running.load(Ordering::SeqCst)
    }
}

/// A device that created a network: connected, its data plane running.
async fn device_in_a_network(lab: &Lab) -> Device {
    let device = Device::start("alice").await;
    device.create_network(lab).await;
    until("the tunnel is up", async || device.status().await.state == TunnelState::Up).await;
    assert_eq!(device.running(), 1);
    assert_eq!(lab.sessions_of(&device.daemon), 1);
    // A new member gets relay credentials (and with them STUN) once it is one.
    until("the data plane has a relay", async || device.dataplanes.relays.load(Ordering::SeqCst) > 0).await;
    device
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_closes_the_session_and_stops_the_data_plane_and_up_brings_both_back() {
    let lab = Lab::new().await;
    let device = device_in_a_network(&lab).await;

    let IpcResponse::Status { status } = device.ask(IpcRequest::Down).await else { panic!("no status") };
    assert_eq!(status.state, TunnelState::Down);
    until("the server sees no session", async || lab.sessions_of(&device.daemon) == 0).await;
    until("the data plane is gone", async || device.running() == 0).await;
    assert!(!device.status().await.server_connected);

    device.ask(IpcRequest::Up).await;
    until("the tunnel is up again", async || device.status().await.state == TunnelState::Up).await;
    until("one session again", async || lab.sessions_of(&device.daemon) == 1).await;
    assert_eq!(device.running(), 1);
    device.daemon.shutdown().await;
    // The data plane is gone when shutdown returns; the server hears the goodbye a moment
    // later, on its own time.
    assert_eq!(device.running(), 0, "shutdown stops the data plane");
    until("shutdown takes the device offline", async || lab.sessions_of(&device.daemon) == 0).await;
    lab.shutdown().await;
}

/// 100 cycles leave one session on the server and the same number of tasks in the
/// runtime (the server's included): nothing of a cycle outlives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_down_up_cycles_leave_one_session_and_no_extra_tasks() {
    let lab = Lab::new().await;
    let device = device_in_a_network(&lab).await;
    let metrics = tokio::runtime::Handle::current().metrics();
    let mut baseline = None;
    for cycle in 0..100 {
        device.ask(IpcRequest::Down).await;
        until("the session is closed", async || lab.sessions_of(&device.daemon) == 0).await;
        device.ask(IpcRequest::Up).await;
        until("the tunnel is up again", async || {
            let status = device.status().await;
            status.state == TunnelState::Up && status.server_connected
        })
        .await;
        assert_eq!(lab.sessions_of(&device.daemon), 1, "cycle {cycle}");
        assert_eq!(device.running(), 1, "cycle {cycle}");
        // Short tasks (a relay credential fetch) may still be finishing: wait for the
        // count to settle at the first cycle's, rather than read it once.
        let baseline = *baseline.get_or_insert_with(|| metrics.num_alive_tasks());
        until("the task count to return to the first cycle's", async || {
            metrics.num_alive_tasks() <= baseline
        })
        .await;
    }
    assert_eq!(device.dataplanes.starts.load(Ordering::SeqCst), 101);
    device.daemon.shutdown().await;
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_data_plane_needs_attention_and_is_restarted() {
    let lab = Lab::new().await;
    let device = device_in_a_network(&lab).await;
    let mut events = device.daemon.events.subscribe();

    let kill = device.dataplanes.kill.lock().unwrap().take().unwrap();
    kill.send("the data plane crashed: index out of bounds".into()).unwrap();
    // Seen at once: a status saying why, while it waits for its retry.
    let reason = loop {
        let event = tokio::time::timeout(DEADLINE, events.recv()).await.unwrap().unwrap();
        if let trellis_protocol::ipc::IpcEvent::Status { status } = event {
            if let TunnelState::NeedsAttention { reason } = status.state {
                break reason;
            }
        }
    };
    assert!(reason.contains("index out of bounds"), "{reason}");
    until("the data plane is restarted", async || device.dataplanes.starts.load(Ordering::SeqCst) == 2).await;
    until("the tunnel is up again", async || device.status().await.state == TunnelState::Up).await;
    assert_eq!(device.running(), 1);
    device.daemon.shutdown().await;
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_plane_that_cannot_start_is_retried_with_backoff() {
    let lab = Lab::new().await;
    let device = Device::start("alice").await;
    *device.dataplanes.failing_starts.lock().unwrap() = 2;
    device.create_network(&lab).await;
    until("the failure is shown", async || {
        matches!(device.status().await.state, TunnelState::NeedsAttention { reason } if reason.contains("busy"))
    })
    .await;
    until("the tunnel is up after two failures", async || device.status().await.state == TunnelState::Up)
        .await;
    assert_eq!(device.dataplanes.starts.load(Ordering::SeqCst), 3);
    assert_eq!(device.status().await.notice, None, "the failure is forgotten once up");
    device.daemon.shutdown().await;
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_server_takes_the_session_from_the_old_one() {
    let (first, second) = (Lab::new().await, Lab::new().await);
    let device = Device::start("alice").await;
    device.ask(IpcRequest::SetServer { server: first.url() }).await;
    device.ask(IpcRequest::Up).await;
    until("connected to the first server", async || first.sessions_of(&device.daemon) == 1).await;

    device.ask(IpcRequest::SetServer { server: second.url() }).await;
    until("connected to the second server", async || second.sessions_of(&device.daemon) == 1).await;
    until("the first server's session is closed", async || first.sessions_of(&device.daemon) == 0).await;
    assert_eq!(device.status().await.server, Some(second.url()));
    device.daemon.shutdown().await;
    first.shutdown().await;
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_to_a_stopped_daemon_get_an_error_not_a_hang() {
    let device = Device::start("alice").await;
    device.daemon.shutdown().await;
    let refused = device.daemon.handle(IpcRequest::Status).await.unwrap_err();
    assert!(refused.message.contains("shutting down"), "{refused:?}");
}
