//! The daemon's one owner. It holds the persisted state, the signal session, the data
//! plane, the address watcher and every short task it starts (a connection attempt, a
//! relay credential fetch, a peer status for subscribers), in one loop:
//!
//! * commands from [`super::Daemon`] (IPC requests), each with a reply;
//! * server events from the session, and its end;
//! * the data plane's outputs (signal to seal and send, engine events, a resume) and its
//!   exit;
//! * the short tasks' results, the address watcher, and timers (reconnect backoff, the
//!   data plane's retry, the relay refresh).
//!
//! Nothing here waits on the data plane, and the data plane never waits on the actor: its
//! commands are sent with `try_send`, its outputs are read here. What must wait on the
//! server runs as a task in [`Actor::tasks`], whose result comes back into the loop.

mod commands;
mod events;
mod session;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::{AbortHandle, JoinSet};
use trellis_protocol::ipc::{IpcError, IpcErrorCode, IpcEvent, NetworkSummary, Status, TunnelState};
use trellis_protocol::peer::PeerSignal;
use trellis_protocol::sealed::{SealError, SealedEnvelope, Sealer};
use trellis_protocol::signal::{Event, Member, Membership, Request, Response};
use trellis_protocol::{DeviceName, NetworkId, OverlayIp, PublicKey, ServerAddr};
use x25519_dalek::StaticSecret;

use super::control::{from_signal, peer_info};
use super::dataplane::{
    self, Command as DpCommand, Dataplane, DataplaneConfig, DataplaneHandle, DataplaneStarter, Output,
};
use super::netwatch::{NetWatcher, SETTLE};
use super::tunnel::{Action, Tunnel};
use super::DaemonConfig;
use crate::engine::{EngineEvent, PeerConfig, RelayServer};
use crate::ipc::HELPER_VERSION;
use crate::signal::{SignalClient, SignalError, SignalSession};
use crate::state::{Persisted, StateDir, StateError};

/// Reconnection waits double from the first to the last: quick after a blip, gentle on a
/// server that is down for long.
const RECONNECT_FIRST: Duration = Duration::from_millis(500);
const RECONNECT_MAX: Duration = Duration::from_secs(30);
/// TURN credentials live 10 minutes on the server; fetch new ones well before.
const RELAY_REFRESH: Duration = Duration::from_secs(4 * 60);
/// How long the server may take to answer when the actor checks that the session still
/// works (after a lost path or a resume): a live server answers in milliseconds, and a
/// dead TCP connection would otherwise be noticed only by the 45 s silence limit.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);
/// Probes at most this often: every peer may report its path lost at once.
const PROBE_EVERY: Duration = Duration::from_secs(2);
/// Peer signal kept while the session is away (a reconnect after a NAT rebinding), sent
/// once it is back; older or more is dropped, and ICE retries it.
const OFFLINE_SIGNAL_MAX: usize = 256;
const OFFLINE_SIGNAL_AGE: Duration = Duration::from_secs(10);
/// How long signal given to a session counts as possibly lost with it: longer than the
/// probe that finds a dead session takes (PROBE_TIMEOUT), shorter than ICE's wait for an
/// answer (10 s), after which it restarts anyway.
const RESEND_WINDOW: Duration = Duration::from_secs(5);
/// How long shutdown lets the actor's own tasks finish before cancelling them.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// Room for the data plane's outputs; it drops rather than waits when full.
const OUTPUT_QUEUE: usize = 1024;

pub(super) type Reply<T> = oneshot::Sender<Result<T, IpcError>>;

/// What the daemon's handle asks of the actor.
pub(super) enum Command {
    Snapshot(oneshot::Sender<Snapshot>),
    Up(Reply<Status>),
    Down(Reply<Status>),
    /// `trellis server`: refused when the device is in a network on another server.
    SetServer(ServerAddr, Reply<()>),
    /// Before creating or joining: no network yet; use `server` if given; want to be up.
    PrepareMembership(Option<ServerAddr>, Reply<()>),
    /// The live signal client, once connected (connecting now if need be); while the
    /// user is disconnected, a session for this one request.
    Client(Reply<ClientLease>),
    /// A membership the server just granted (created or joined).
    Adopt(Membership, Reply<Status>),
    /// The server confirmed that this device left its network.
    Left(Reply<()>),
    /// The device's new name (and its member record when in a network).
    Renamed(DeviceName, Option<Member>, Reply<Status>),
    /// Registers a ping's waiter; the caller sends the ping through the handle.
    Ping(PublicKey, Reply<(DataplaneHandle, oneshot::Receiver<Duration>)>),
    Shutdown(oneshot::Sender<()>),
}

/// A signal client lent to an IPC request.
pub(super) enum ClientLease {
    /// The daemon's own session.
    Shared(SignalClient),
    /// A session opened for one request while the user is disconnected (the tray's
    /// "Invite a friend…" works then too); closed by [`ClientLease::release`].
    OneOff(SignalSession),
}

impl ClientLease {
    pub(super) fn client(&self) -> &SignalClient {
        match self {
            Self::Shared(client) => client,
            Self::OneOff(session) => &session.client,
        }
    }

    pub(super) async fn release(self) {
        if let Self::OneOff(session) = self {
            session.close().await;
        }
    }
}

/// The actor's state as an IPC request needs it.
pub(super) struct Snapshot {
    pub status: Status,
    pub persisted: Persisted,
    pub dataplane: Option<DataplaneHandle>,
}

/// What a short task brings back into the loop.
enum Done {
    Nothing,
    /// A connection attempt of session generation `generation`.
    Connected {
        generation: u64,
        result: Result<SignalSession, SignalError>,
    },
    /// Relay credentials; `probe` when the fetch also checked that the session works.
    Relay {
        generation: u64,
        probe: bool,
        result: Result<Option<RelayServer>, SignalError>,
    },
}

pub(super) struct Actor {
    config: DaemonConfig,
    state: StateDir,
    secret: StaticSecret,
    key: PublicKey,
    persisted: Persisted,
    sealer: Sealer,
    events: broadcast::Sender<IpcEvent>,
    revision: u64,

    dataplanes: Arc<dyn DataplaneStarter>,
    tunnel: Tunnel,
    dataplane: Option<Dataplane>,
    outputs_tx: mpsc::Sender<Output>,
    outputs: mpsc::Receiver<Output>,
    /// The host candidates the running data plane has.
    host_addrs: Vec<SocketAddr>,

    session: Option<SignalSession>,
    /// Counts sessions: a short task's result for an older one is dropped.
    generation: u64,
    connecting: Option<AbortHandle>,
    reconnect_at: Instant,
    reconnect_in: Duration,
    /// A sentence about the server, while it is unreachable.
    server_notice: Option<String>,
    client_waiters: Vec<Reply<ClientLease>>,
    relay_target: Option<(String, u16)>,
    relay: Option<RelayServer>,
    relay_refresh_at: Option<Instant>,
    last_probe: Option<Instant>,
    offline_signals: VecDeque<(Instant, PublicKey, PeerSignal)>,
    /// Sealed signal given to the session in the last [`RESEND_WINDOW`] (see
    /// `session.rs`, `send_sealed`).
    unconfirmed_signals: VecDeque<(Instant, NetworkId, SealedEnvelope)>,

    pings: HashMap<PublicKey, Vec<oneshot::Sender<Duration>>>,
    watcher: Option<NetWatcher>,
    net_changed: mpsc::Receiver<()>,
    net_changed_tx: mpsc::Sender<()>,
    net_check_at: Option<Instant>,
    /// The machine's addresses when last looked at (see `check_addresses`).
    machine_addrs: Vec<std::net::IpAddr>,
    tasks: JoinSet<Done>,
}

fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

fn error(code: IpcErrorCode, message: impl Into<String>) -> IpcError {
    IpcError::new(code, message)
}

fn internal(e: impl std::fmt::Display) -> IpcError {
    error(IpcErrorCode::Internal, e.to_string())
}

/// The engine's view of a membership: everyone but this device.
fn peer_configs(membership: &Membership, me: &PublicKey) -> Vec<PeerConfig> {
    membership
        .members
        .iter()
        .filter(|m| &m.key != me)
        .map(|m| PeerConfig { key: m.key, ip: m.ip, name: m.name.to_string(), online: m.online })
        .collect()
}

/// Every address of the machine's interfaces (loopback and our TUN included), sorted.
fn machine_addresses() -> Vec<std::net::IpAddr> {
    let mut found: Vec<_> =
        if_addrs::get_if_addrs().unwrap_or_default().into_iter().map(|i| i.ip()).collect();
    found.sort();
    found.dedup();
    found
}

/// The session's next event; `None` once it ended. Pending forever without a session.
async fn next_event(session: &mut Option<SignalSession>) -> Option<Event> {
    match session {
        Some(s) => s.events.recv().await,
        None => std::future::pending().await,
    }
}

/// Why the data plane ended by itself. Pending forever while it runs, or without one.
async fn exit_of(dataplane: &mut Option<Dataplane>) -> String {
    match dataplane {
        // A loop that ended without a word (its sender dropped) ended all the same: polling
        // the finished receiver again would panic.
        Some(d) => (&mut d.exited).await.unwrap_or_else(|_| "the data plane stopped without a reason".into()),
        None => std::future::pending().await,
    }
}

impl Actor {
    pub(super) fn new(
        config: DaemonConfig,
        state: StateDir,
        secret: StaticSecret,
        persisted: Persisted,
        events: broadcast::Sender<IpcEvent>,
        dataplanes: Arc<dyn DataplaneStarter>,
    ) -> Self {
        let (outputs_tx, outputs) = mpsc::channel(OUTPUT_QUEUE);
        let (net_changed_tx, net_changed) = mpsc::channel(1);
        Self {
            config,
            state,
            sealer: Sealer::new(secret.clone()),
            key: PublicKey::of(&secret),
            secret,
            persisted,
            events,
            // Counting from the start time keeps a restarted helper's statuses newer than
            // the last ones of the helper before it.
            revision: now_micros(),
            dataplanes,
            tunnel: Tunnel::default(),
            dataplane: None,
            outputs_tx,
            outputs,
            host_addrs: Vec::new(),
            session: None,
            generation: 0,
            connecting: None,
            reconnect_at: Instant::now(),
            reconnect_in: RECONNECT_FIRST,
            server_notice: None,
            client_waiters: Vec::new(),
            relay_target: None,
            relay: None,
            relay_refresh_at: None,
            last_probe: None,
            offline_signals: VecDeque::new(),
            unconfirmed_signals: VecDeque::new(),
            pings: HashMap::new(),
            watcher: None,
            net_changed,
            net_changed_tx,
            net_check_at: None,
            machine_addrs: machine_addresses(),
            tasks: JoinSet::new(),
        }
    }

    pub(super) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        match NetWatcher::start(self.net_changed_tx.clone()) {
            Ok(watcher) => self.watcher = Some(watcher),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the machine's addresses; changes are noticed late")
            }
        }
        loop {
            let wake = self.reconcile().await;
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(wake));
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Shutdown(reply)) => {
                        self.stop().await;
                        let _ = reply.send(());
                        return;
                    }
                    Some(command) => self.on_command(command),
                    None => {
                        self.stop().await;
                        return;
                    }
                },
                event = next_event(&mut self.session) => match event {
                    Some(event) => self.on_server_event(event),
                    None => self.session_lost("the signal server is unreachable; reconnecting"),
                },
                Some(output) = self.outputs.recv() => self.on_output(output),
                reason = exit_of(&mut self.dataplane) => self.dataplane_died(reason),
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => match done {
                    Ok(done) => self.on_done(done),
                    Err(e) if e.is_cancelled() => {}
                    Err(e) => {
                        tracing::error!(error = %e, "a helper task failed");
                        if self.connecting.as_ref().is_some_and(|attempt| attempt.id() == e.id()) {
                            // The connection attempt died: try again after the backoff.
                            self.connecting = None;
                            self.reconnect_at = Instant::now() + self.reconnect_in;
                            self.reconnect_in = (self.reconnect_in * 2).min(RECONNECT_MAX);
                        }
                    }
                },
                Some(()) = self.net_changed.recv() => {
                    self.net_check_at.get_or_insert_with(|| Instant::now() + SETTLE);
                }
                () = sleep => {}
            }
        }
    }

    /// Brings the data plane and the session towards what the user wants and runs what
    /// is due; returns when the loop must look again at the latest.
    async fn reconcile(&mut self) -> Instant {
        let now = Instant::now();
        let mut wake = now + Duration::from_secs(60);
        // The data plane: at most a stop and a start per turn.
        for _ in 0..2 {
            let wanted = if self.persisted.wants_up {
                self.persisted.membership.as_ref().map(|m| m.me.ip)
            } else {
                None
            };
            let running = self.dataplane.as_ref().map(|d| d.my_ip);
            match self.tunnel.next(wanted, running, now) {
                Action::Nothing => break,
                Action::WaitUntil(at) => {
                    wake = wake.min(at);
                    break;
                }
                Action::Stop => self.stop_dataplane().await,
                Action::Start(ip) => {
                    self.start_dataplane(ip).await;
                    break;
                }
            }
        }
        // The session.
        if self.persisted.wants_up {
            if self.session.is_none() && self.connecting.is_none() && self.persisted.server.is_some() {
                if self.reconnect_at <= now {
                    self.spawn_connect();
                } else {
                    wake = wake.min(self.reconnect_at);
                }
            }
        } else if self.session.is_some() || self.connecting.is_some() || !self.client_waiters.is_empty() {
            self.disconnect("Trellis is disconnected");
        }
        if let Some(at) = self.relay_refresh_at {
            if at <= now {
                self.relay_refresh_at = Some(now + RELAY_REFRESH);
                self.fetch_relay(false);
            }
            wake = wake.min(self.relay_refresh_at.unwrap_or(wake));
        }
        if let Some(at) = self.net_check_at {
            if at <= now {
                self.net_check_at = None;
                self.check_addresses().await;
            } else {
                wake = wake.min(at);
            }
        }
        wake
    }

    async fn start_dataplane(&mut self, my_ip: OverlayIp) {
        let Some(membership) = self.persisted.membership.clone() else { return };
        let config = DataplaneConfig {
            secret: self.secret.clone(),
            my_ip,
            range: membership.network.range,
            tun_name: self.config.tun_name.clone(),
            port: self.config.port,
        };
        match self.dataplanes.start(config, self.outputs_tx.clone()).await {
            Ok(dp) => {
                dp.handle.try_send(DpCommand::SetPeers(peer_configs(&membership, &self.key)));
                if let Some(relay) = self.relay.clone() {
                    dp.handle.try_send(DpCommand::SetRelay(Some(relay)));
                }
                self.host_addrs = dataplane::host_addresses(dp.port, membership.network.range);
                self.tunnel.started(my_ip, Instant::now());
                self.dataplane = Some(dp);
                tracing::info!(%my_ip, "tunnel up");
                // Fresh credentials: the cached ones may be old, and a new member has none
                // (the server gives them to members only). STUN comes with them too.
                self.fetch_relay(false);
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot start the data plane");
                self.tunnel.failed(format!("cannot start the tunnel: {e:#}"), Instant::now());
            }
        }
        self.publish_status();
    }

    /// Stops the data plane; the TUN device is gone when this returns. Signal its engine
    /// made and that has not left yet is dropped: a new engine makes its own.
    async fn stop_dataplane(&mut self) {
        if let Some(dp) = self.dataplane.take() {
            dp.stop().await;
            self.offline_signals.clear();
            self.unconfirmed_signals.clear();
            self.tunnel.stopped();
            tracing::info!("tunnel down");
            self.publish_status();
        }
    }

    fn dataplane_died(&mut self, reason: String) {
        tracing::error!(%reason, "the data plane died; restarting it");
        self.dataplane.take();
        self.tunnel.failed(reason, Instant::now());
        self.publish_status();
    }

    /// The machine's addresses may have changed: new host candidates for the engine, and
    /// a quick look at the server connection, which may have gone with the old address.
    async fn check_addresses(&mut self) {
        // Netlink and the routing socket also speak of links and routes that change no
        // address (and of our own TUN): only a changed address counts.
        let addresses = machine_addresses();
        if addresses == self.machine_addrs {
            return;
        }
        self.machine_addrs = addresses;
        if self.session.is_none() {
            // An address may be what the last attempt lacked: try now, not after backoff.
            self.reconnect_now();
        }
        let (Some(dp), Some(membership)) = (&self.dataplane, &self.persisted.membership) else { return };
        let found = dataplane::host_addresses(dp.port, membership.network.range);
        if found == self.host_addrs {
            return;
        }
        tracing::info!(before = ?self.host_addrs, now = ?found, "the machine's addresses changed");
        self.host_addrs = found.clone();
        dp.handle.try_send(DpCommand::SetHostAddrs(found));
        self.last_probe = None;
        let session_address = self.session.as_ref().and_then(|s| s.local_addr).map(|a| a.ip());
        if session_address.is_some_and(|ip| self.machine_addrs.binary_search(&ip).is_err()) {
            // Its connection left from an address the machine no longer has: dead, and
            // the probe would only take its 1.5 s to say so.
            tracing::info!("the signal session's address is gone; reconnecting");
            self.session_lost("the machine's address changed; reconnecting");
        } else {
            self.probe_session();
        }
    }

    pub(super) fn status(&mut self) -> Status {
        self.revision += 1;
        let persisted = &self.persisted;
        let running = self.dataplane.is_some();
        let failure = self.tunnel.failure().map(str::to_string);
        let notice =
            persisted.removed.clone().or_else(|| failure.clone()).or_else(|| self.server_notice.clone());
        let state = if !persisted.wants_up {
            TunnelState::Down
        } else if let Some(reason) = failure {
            TunnelState::NeedsAttention { reason }
        } else if running {
            TunnelState::Up
        } else if let Some(reason) = notice.clone() {
            TunnelState::NeedsAttention { reason }
        } else {
            TunnelState::Connecting
        };
        let network = persisted.membership.as_ref().map(|m| NetworkSummary {
            id: m.network.id,
            name: m.network.name.clone(),
            range: m.network.range,
            my_ip: m.me.ip,
            owner: m.me.owner,
            peers_total: m.members.iter().filter(|x| x.key != self.key).count() as u32,
            peers_connected: 0,
        });
        Status {
            helper_version: HELPER_VERSION.into(),
            device_name: persisted.device_name.clone(),
            public_key: self.key,
            fingerprint: self.key.fingerprint(),
            server: persisted.server.clone(),
            server_connected: self.session.as_ref().is_some_and(|s| !s.is_finished()),
            wants_up: persisted.wants_up,
            state,
            network,
            notice,
            revision: self.revision,
        }
    }

    fn publish_status(&mut self) {
        let status = self.status();
        let _ = self.events.send(IpcEvent::Status { status });
    }

    /// Changes the persisted state and saves it (flushed). Memory changes only once the
    /// disk has it: a failed save changes nothing. Nobody hears of it before.
    fn save(&mut self, change: impl FnOnce(&mut Persisted)) -> Result<(), IpcError> {
        let mut next = self.persisted.clone();
        change(&mut next);
        let on_multi_thread_runtime = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let save = || self.state.save(&next);
        // fsync can take long; let the runtime move other tasks off this worker meanwhile.
        let saved: Result<(), StateError> =
            if on_multi_thread_runtime { tokio::task::block_in_place(save) } else { save() };
        saved.map_err(internal)?;
        self.persisted = next;
        self.publish_status();
        Ok(())
    }

    /// Takes the device offline and stops everything the actor started.
    async fn stop(&mut self) {
        tracing::info!("stopping: closing the session and the tunnel");
        if let Some(session) = self.session.take() {
            session.close().await;
        }
        self.disconnect("the helper is shutting down");
        self.stop_dataplane().await;
        if let Some(watcher) = self.watcher.take() {
            watcher.stop().await;
        }
        // Goodbyes still being said (a session replaced a moment ago) may finish; whatever
        // else runs (a connection attempt, a credential fetch) is cancelled.
        let _ =
            tokio::time::timeout(STOP_GRACE, async { while self.tasks.join_next().await.is_some() {} }).await;
        self.tasks.shutdown().await;
        self.pings.clear();
    }
}
