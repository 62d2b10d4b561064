//! `trellisd`: ties the parts together.
//!
//! One actor ([`actor`]) owns everything the helper keeps and every task it starts: the
//! persisted state, the signal session, the data plane, the address watcher and the short
//! tasks that wait on the server. It takes commands on a channel, each with a reply; the
//! IPC requests of the CLI and the app ([`control`]) are such commands. When it stops,
//! it closes the session, stops the data plane and awaits every task it started.
//!
//! * [`tunnel`]: the data plane's state machine (down, starting, up, failed with backoff);
//! * [`dataplane`]: the loop around the sans-IO engine, with the TUN and the UDP socket;
//! * [`netwatch`]: tells the actor when the machine's addresses may have changed;
//! * [`boot_clock`]: a clock that counts sleep, to notice a suspend.

mod actor;
pub mod boot_clock;
pub mod control;
pub mod dataplane;
pub mod netwatch;
pub mod tunnel;
mod udp;

#[cfg(test)]
mod tests;
#[cfg(all(test, target_os = "linux"))]
pub(crate) mod tests_support;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, oneshot};
use trellis_protocol::ipc::IpcEvent;
use trellis_protocol::PublicKey;

use crate::state::StateDir;
use actor::{Actor, Command};
use dataplane::{DataplaneStarter, SystemDataplane};

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub state_dir: PathBuf,
    pub tun_name: String,
    /// UDP port for ICE and WireGuard; 0 picks a free one.
    pub port: u16,
    /// The device's name on first start (later changed with `trellis rename`).
    pub name: Option<trellis_protocol::DeviceName>,
}

/// A handle to the running daemon: cheap to clone; every call is a command to the actor.
#[derive(Clone)]
pub struct Daemon {
    commands: mpsc::Sender<Command>,
    pub key: PublicKey,
    pub events: broadcast::Sender<IpcEvent>,
    /// The actor's task, awaited by [`Daemon::shutdown`].
    task: Arc<tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon").field("key", &self.key.short()).finish_non_exhaustive()
    }
}

/// The daemon has stopped and answers nothing more.
#[derive(Debug, thiserror::Error)]
#[error("the helper is shutting down")]
pub struct Stopped;

impl Daemon {
    /// Opens the state, makes the device key on first start, and starts the actor with
    /// the system's data plane.
    pub async fn start(config: DaemonConfig) -> anyhow::Result<Self> {
        Self::start_with(config, Arc::new(SystemDataplane)).await
    }

    /// As [`Daemon::start`], with data planes from `dataplanes` (tests pass a fake).
    pub async fn start_with(
        config: DaemonConfig,
        dataplanes: Arc<dyn DataplaneStarter>,
    ) -> anyhow::Result<Self> {
        let state = StateDir::open(&config.state_dir)?;
        let secret = state.device_key()?;
        let mut persisted = state.load()?;
        if let (Some(name), None) = (&config.name, &persisted.membership) {
            persisted.device_name = name.clone();
            state.save(&persisted)?;
        }
        let key = PublicKey::of(&secret);
        let (events, _) = broadcast::channel(256);
        let (commands, command_rx) = mpsc::channel(64);
        tracing::info!(key = %key.short(), state_dir = %config.state_dir.display(), "trellisd starting");
        let actor = Actor::new(config, state, secret, persisted, events.clone(), dataplanes);
        let task = tokio::spawn(actor.run(command_rx));
        Ok(Self { commands, key, events, task: Arc::new(tokio::sync::Mutex::new(Some(task))) })
    }

    /// Sends `command` (made around its reply channel) and waits for the answer.
    async fn call<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Stopped> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(command(reply)).await.map_err(|_| Stopped)?;
        answer.await.map_err(|_| Stopped)
    }

    /// Takes the device offline, removes the TUN, stops every task and waits for them.
    pub async fn shutdown(&self) {
        let _ = self.call(Command::Shutdown).await;
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
    }
}

/// The IPC server running for a daemon; stops when dropped.
#[derive(Debug)]
pub struct IpcServer {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for IpcServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

struct DaemonControl(Daemon);

impl crate::ipc::Control for DaemonControl {
    fn handle(
        &self,
        request: trellis_protocol::ipc::IpcRequest,
    ) -> crate::ipc::BoxFuture<'_, Result<trellis_protocol::ipc::IpcResponse, trellis_protocol::ipc::IpcError>>
    {
        Box::pin(self.0.handle(request))
    }
}

/// Opens the control socket at `endpoint` and answers on it.
pub async fn serve_ipc(daemon: Daemon, options: &crate::ipc::ListenOptions) -> anyhow::Result<IpcServer> {
    use anyhow::Context;
    let endpoint = &options.path;
    let listener = crate::ipc::IpcListener::bind(options)
        .with_context(|| format!("cannot open the control socket {}", endpoint.display()))?;
    let (stop, stopped) = oneshot::channel::<()>();
    let events = daemon.events.clone();
    let control: Arc<dyn crate::ipc::Control> = Arc::new(DaemonControl(daemon));
    let task = tokio::spawn(crate::ipc::serve(listener, control, events, async move {
        let _ = stopped.await;
    }));
    tracing::info!(socket = %endpoint.display(), "control socket open");
    Ok(IpcServer { stop: Some(stop), task })
}
