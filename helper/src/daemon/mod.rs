//! `trellisd`: ties the parts together.
//!
//! * the **supervisor** keeps a signal connection while the user wants to be up (with
//!   backoff when the server is unreachable) and a data plane while there is a
//!   membership to serve — from the server, or from the cache when it is away;
//! * **server events** update the cached membership, the engine's peers and the IPC
//!   subscribers, and carry sealed peer signal into the engine;
//! * **control** ([`control`]) answers the IPC requests of the CLI and the app.

pub mod control;
pub mod dataplane;
mod udp;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast, mpsc, oneshot, Notify};
use trellis_protocol::ipc::IpcEvent;
use trellis_protocol::peer::PeerSignal;
use trellis_protocol::sealed::{SealedEnvelope, Sealer};
use trellis_protocol::signal::{Event, Membership, Request, Response};
use trellis_protocol::{PublicKey, ServerAddr};
use x25519_dalek::StaticSecret;

use crate::engine::{EngineEvent, PeerConfig, RelayServer};
use crate::signal::{SignalClient, SignalError};
use crate::state::{Persisted, StateDir};
use dataplane::{Command, Dataplane, DataplaneConfig, Output};

/// Reconnection waits double from the first to the last: quick after a blip, gentle on a
/// server that is down for long.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// TURN credentials live 10 minutes on the server; fetch new ones well before.
const RELAY_REFRESH: Duration = Duration::from_secs(4 * 60);

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub state_dir: PathBuf,
    pub tun_name: String,
    /// UDP port for ICE and WireGuard; 0 picks a free one.
    pub port: u16,
    /// The device's name on first start (later changed with `trellis rename`).
    pub name: Option<trellis_protocol::DeviceName>,
}

pub struct Daemon {
    config: DaemonConfig,
    state: StateDir,
    secret: StaticSecret,
    pub key: PublicKey,
    persisted: Mutex<Persisted>,
    /// Held while the state is written to disk (see [`Daemon::update`]).
    saving: Mutex<()>,
    signal: Mutex<Option<SignalClient>>,
    dataplane: Mutex<Option<Arc<Dataplane>>>,
    sealer: Mutex<Sealer>,
    /// A sentence for the user when something needs attention (server unreachable,
    /// removed from the network, TUN failed).
    notice: Mutex<Option<String>>,
    /// The last [`Status::revision`] handed out.
    status_revision: std::sync::atomic::AtomicU64,
    pings: Mutex<HashMap<PublicKey, Vec<oneshot::Sender<Duration>>>>,
    /// One connection attempt at a time (the supervisor and an IPC request may both try).
    connecting: tokio::sync::Mutex<()>,
    /// Where the server said its STUN/TURN service is (host, UDP port).
    relay_target: Mutex<Option<(String, u16)>>,
    pub events: broadcast::Sender<IpcEvent>,
    wake: Notify,
    outputs: mpsc::Sender<Output>,
    /// Sealed signal leaves in the order it was sealed: the receiver refuses an envelope
    /// whose counter is not above the last one it opened.
    signal_out: mpsc::UnboundedSender<(PublicKey, PeerSignal)>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon").field("key", &self.key.short()).finish_non_exhaustive()
    }
}

fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

impl Daemon {
    /// Opens the state, makes the device key on first start, and starts the
    /// supervisor and the output pump.
    pub async fn start(config: DaemonConfig) -> anyhow::Result<Arc<Self>> {
        let state = StateDir::open(&config.state_dir)?;
        let secret = state.device_key()?;
        let mut persisted = state.load()?;
        if let (Some(name), None) = (&config.name, &persisted.membership) {
            persisted.device_name = name.clone();
            state.save(&persisted)?;
        }
        let key = PublicKey::of(&secret);
        let (outputs, output_rx) = mpsc::channel(1024);
        let (events, _) = broadcast::channel(256);
        let (signal_out, signal_rx) = mpsc::unbounded_channel();
        let daemon = Arc::new(Self {
            config,
            state,
            sealer: Mutex::new(Sealer::new(secret.clone())),
            secret,
            key,
            persisted: Mutex::new(persisted),
            saving: Mutex::new(()),
            signal: Mutex::new(None),
            dataplane: Mutex::new(None),
            notice: Mutex::new(None),
            // Counting from the start time keeps a restarted helper's statuses newer
            // than the last ones of the helper before it.
            status_revision: std::sync::atomic::AtomicU64::new(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as u64),
            ),
            pings: Mutex::new(HashMap::new()),
            relay_target: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            events,
            wake: Notify::new(),
            outputs,
            signal_out,
        });
        tracing::info!(key = %key.short(), state_dir = %daemon.config.state_dir.display(), "trellisd starting");
        tokio::spawn(daemon.clone().pump_outputs(output_rx));
        tokio::spawn(daemon.clone().supervise());
        tokio::spawn(daemon.clone().send_signals(signal_rx));
        Ok(daemon)
    }

    fn persisted(&self) -> MutexGuard<'_, Persisted> {
        self.persisted.lock().expect("state lock")
    }

    /// Changes the persisted state, saves it (flushed) and wakes the supervisor.
    ///
    /// Readers never wait for the disk: the state lock is held only to change memory. The
    /// save lock keeps writers in order, and each save writes the newest state, so the disk
    /// never ends up older than memory. Nobody hears of the change before it is on disk.
    fn update(&self, change: impl FnOnce(&mut Persisted)) -> Result<Persisted, crate::state::StateError> {
        let _in_order = self.saving.lock().expect("save lock");
        let snapshot = {
            let mut persisted = self.persisted();
            change(&mut persisted);
            persisted.clone()
        };
        let save = || self.state.save(&snapshot);
        // fsync can take long; let the runtime move other tasks off this worker meanwhile.
        let on_multi_thread_runtime = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if on_multi_thread_runtime {
            tokio::task::block_in_place(save)?;
        } else {
            save()?;
        }
        self.wake.notify_one();
        self.publish_status();
        Ok(snapshot)
    }

    fn set_notice(&self, notice: Option<String>) {
        *self.notice.lock().expect("notice lock") = notice;
        self.publish_status();
    }

    fn publish_status(&self) {
        let _ = self.events.send(IpcEvent::Status { status: self.status() });
    }

    pub fn signal_client(&self) -> Option<SignalClient> {
        self.signal.lock().expect("signal lock").clone().filter(SignalClient::is_connected)
    }

    fn dataplane(&self) -> Option<Arc<Dataplane>> {
        self.dataplane.lock().expect("dataplane lock").clone()
    }

    /// Keeps the signal connection and the data plane in the shape the user asked for.
    async fn supervise(self: Arc<Self>) {
        let mut backoff = BACKOFF_FIRST;
        loop {
            let persisted = self.persisted().clone();
            let dataplane_ok = self.reconcile_dataplane(&persisted).await;
            // A data plane that could not start (TUN busy, port taken) is tried again.
            let mut wait = (!dataplane_ok).then_some(backoff);
            if !dataplane_ok {
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            if persisted.wants_up && self.signal_client().is_none() {
                if let Some(server) = persisted.server.clone() {
                    match self.connect(&server).await {
                        Ok(()) => {
                            backoff = BACKOFF_FIRST;
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, retry_in = ?backoff, "signal server unreachable");
                            self.set_notice(Some(format!("{e}; retrying")));
                            wait = Some(backoff);
                            backoff = (backoff * 2).min(BACKOFF_MAX);
                        }
                    }
                }
            }
            // Read afresh: an IPC request may have asked to be up meanwhile.
            if !self.persisted().wants_up {
                self.signal.lock().expect("signal lock").take();
            }
            match wait {
                Some(delay) => {
                    let _ = tokio::time::timeout(delay, self.wake.notified()).await;
                }
                None => self.wake.notified().await,
            }
        }
    }

    /// Starts or stops the data plane to match `persisted`.
    /// Returns false when a wanted data plane failed to start.
    async fn reconcile_dataplane(&self, persisted: &Persisted) -> bool {
        let wanted = persisted.wants_up.then_some(()).and(persisted.membership.as_ref());
        let running = self.dataplane();
        match (wanted, running) {
            (None, Some(_)) => {
                self.dataplane.lock().expect("dataplane lock").take();
                tracing::info!("data plane stopped");
                self.publish_status();
            }
            (Some(membership), Some(dp)) if dp.my_ip != membership.me.ip => {
                self.dataplane.lock().expect("dataplane lock").take();
                self.wake.notify_one();
            }
            (Some(membership), None) => {
                let config = DataplaneConfig {
                    secret: self.secret.clone(),
                    my_ip: membership.me.ip,
                    range: membership.network.range,
                    tun_name: self.config.tun_name.clone(),
                    port: self.config.port,
                };
                match Dataplane::start(config, self.outputs.clone()).await {
                    Ok(dp) => {
                        let dp = Arc::new(dp);
                        dp.send(Command::SetPeers(peer_configs(membership, &self.key))).await;
                        *self.dataplane.lock().expect("dataplane lock") = Some(dp);
                        self.publish_status();
                        if self.signal_client().is_some() {
                            self.refresh_relay().await;
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the data plane");
                        self.set_notice(Some(format!("cannot start the tunnel: {e:#}")));
                        return false;
                    }
                }
            }
            _ => {}
        }
        true
    }

    /// Connects to `server`, adopts the welcome and starts pumping its events.
    pub async fn connect(self: &Arc<Self>, server: &ServerAddr) -> Result<(), SignalError> {
        let _one_at_a_time = self.connecting.lock().await;
        if self.signal_client().is_some() {
            return Ok(());
        }
        let (client, welcome, events) = SignalClient::connect(server, &self.secret).await?;
        tracing::info!(%server, memberships = welcome.memberships.len(), "connected to the signal server");
        *self.signal.lock().expect("signal lock") = Some(client.clone());
        self.set_notice(None);
        let cached = self.persisted().membership.clone();
        let current = match &cached {
            Some(c) => welcome.memberships.iter().find(|m| m.network.id == c.network.id).cloned(),
            None => welcome.memberships.first().cloned(),
        };
        if cached.is_some() && current.is_none() {
            self.set_notice(Some("this device is no longer a member of its network".into()));
        }
        let _ = self.update(|p| p.membership = current);
        self.apply_membership().await;
        let relay_host = welcome.relay_host.clone().unwrap_or_else(|| server.host.clone());
        tokio::spawn(self.clone().pump_server_events(client, events, relay_host, welcome.relay_port));
        Ok(())
    }

    async fn pump_server_events(
        self: Arc<Self>,
        client: SignalClient,
        mut events: mpsc::Receiver<Event>,
        relay_host: String,
        relay_port: u16,
    ) {
        *self.relay_target.lock().expect("relay lock") = Some((relay_host, relay_port));
        // Credentials come in their own task: a request waits for the connection, which
        // this loop must keep draining.
        let refresher = tokio::spawn({
            let daemon = self.clone();
            async move {
                let mut refresh = tokio::time::interval(RELAY_REFRESH);
                loop {
                    refresh.tick().await;
                    daemon.refresh_relay().await;
                }
            }
        });
        while let Some(event) = events.recv().await {
            self.on_server_event(event).await;
        }
        refresher.abort();
        tracing::warn!("lost the signal server; tunnels keep running from the cache");
        {
            // Only this pump's connection: a newer one may already have replaced it.
            let mut slot = self.signal.lock().expect("signal lock");
            if slot.as_ref().is_some_and(|c| c.same_connection(&client)) {
                slot.take();
            }
        }
        self.set_notice(Some("the signal server is unreachable; reconnecting".into()));
        self.wake.notify_one();
    }

    /// Fetches TURN credentials and hands the relay to the engine.
    async fn refresh_relay(&self) {
        let (Some(client), Some(dp)) = (self.signal_client(), self.dataplane()) else { return };
        let Some((host, port)) = self.relay_target.lock().expect("relay lock").clone() else { return };
        let credentials = match client.request(Request::TurnCredentials).await {
            Ok(Response::TurnCredentials { credentials }) => credentials,
            other => {
                tracing::warn!(?other, "no relay credentials");
                return;
            }
        };
        let addr: Option<SocketAddr> = match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(mut addrs) => addrs.find(SocketAddr::is_ipv4),
            Err(e) => {
                tracing::warn!(%host, error = %e, "cannot resolve the relay");
                None
            }
        };
        if let Some(addr) = addr {
            let relay = RelayServer {
                addr,
                username: credentials.username,
                password: credentials.password,
                realm: credentials.realm,
            };
            dp.send(Command::SetRelay(Some(relay))).await;
        }
    }

    async fn on_server_event(&self, event: Event) {
        let Some(membership) = self.persisted().membership.clone() else { return };
        let network = membership.network.id;
        match event {
            Event::Signal { network: from_net, envelope } if from_net == network => {
                self.on_signal(envelope).await
            }
            Event::MemberJoined { network: n, member } if n == network => {
                let _ = self.update(|p| {
                    if let Some(m) = p.membership.as_mut() {
                        m.members.retain(|x| x.device != member.device);
                        m.members.push(member.clone());
                    }
                });
                let _ = self.events.send(IpcEvent::PeerJoined { peer: control::peer_info(&member, None) });
                self.apply_membership().await;
            }
            Event::MemberUpdated { network: n, member } if n == network => {
                let _ = self.update(|p| {
                    if let Some(m) = p.membership.as_mut() {
                        for x in m.members.iter_mut().filter(|x| x.device == member.device) {
                            *x = member.clone();
                        }
                        if m.me.device == member.device {
                            m.me = member.clone();
                        }
                    }
                });
                let _ = self.events.send(IpcEvent::PeerChanged { peer: control::peer_info(&member, None) });
                self.apply_membership().await;
            }
            Event::MemberLeft { network: n, device, key, .. } if n == network => {
                let name = membership.members.iter().find(|m| m.device == device).map(|m| m.name.clone());
                let _ = self.update(|p| {
                    if let Some(m) = p.membership.as_mut() {
                        m.members.retain(|x| x.device != device);
                    }
                });
                if let Some(name) = name {
                    let _ = self.events.send(IpcEvent::PeerLeft { name, key });
                }
                self.apply_membership().await;
            }
            Event::RemovedFromNetwork { network: n } if n == network => {
                tracing::warn!(%network, "removed from the network by its owner");
                let why = format!(
                    "this device was removed from network {:?} by its owner",
                    membership.network.name.as_str()
                );
                let _ = self.update(|p| {
                    p.membership = None;
                    p.removed = Some(why);
                });
            }
            _ => {}
        }
    }

    async fn on_signal(&self, envelope: SealedEnvelope) {
        let from = envelope.from;
        let opened = self.sealer.lock().expect("sealer lock").open(&envelope);
        let payload = match opened {
            Ok(payload) => payload,
            Err(e) => {
                tracing::warn!(peer = %from.short(), error = %e, "refused a sealed signal");
                return;
            }
        };
        match PeerSignal::from_bytes(&payload) {
            Ok(signal) => {
                if let Some(dp) = self.dataplane() {
                    dp.send(Command::Signal(from, signal)).await;
                }
            }
            Err(e) => tracing::warn!(peer = %from.short(), error = %e, "unreadable peer signal"),
        }
    }

    /// Hands the cached membership's peers to the engine.
    async fn apply_membership(&self) {
        let membership = self.persisted().membership.clone();
        if let (Some(membership), Some(dp)) = (membership, self.dataplane()) {
            dp.send(Command::SetPeers(peer_configs(&membership, &self.key))).await;
        }
        self.wake.notify_one();
    }

    /// Seals the engine's signal for its peer and sends it; engine events go to IPC.
    async fn pump_outputs(self: Arc<Self>, mut outputs: mpsc::Receiver<Output>) {
        while let Some(output) = outputs.recv().await {
            match output {
                Output::Signal(peer, signal) => self.send_signal(peer, signal),
                Output::Event(EngineEvent::PingReply { key, rtt }) => {
                    for waiter in self.pings.lock().expect("pings lock").remove(&key).unwrap_or_default() {
                        let _ = waiter.send(rtt);
                    }
                }
                Output::Event(event) => {
                    tracing::debug!(?event, "engine event");
                    self.publish_peer_change(&event);
                }
            }
        }
    }

    fn send_signal(&self, peer: PublicKey, signal: PeerSignal) {
        let _ = self.signal_out.send((peer, signal));
    }

    /// Seals and sends the engine's signal one at a time, in order.
    async fn send_signals(self: Arc<Self>, mut queue: mpsc::UnboundedReceiver<(PublicKey, PeerSignal)>) {
        while let Some((peer, signal)) = queue.recv().await {
            let (Some(client), Some(membership)) =
                (self.signal_client(), self.persisted().membership.clone())
            else {
                continue; // offline: the engine retries ICE later
            };
            let payload = signal.to_bytes();
            let sealed = self.sealer.lock().expect("sealer lock").seal(peer, &payload, now_micros());
            let envelope = match sealed {
                Ok(envelope) => envelope,
                Err(e) => {
                    tracing::warn!(peer = %peer.short(), error = %e, "cannot seal a signal");
                    continue;
                }
            };
            let network = membership.network.id;
            if let Err(e) = client.request(Request::Signal { network, envelope }).await {
                tracing::debug!(peer = %peer.short(), error = %e, "signal not delivered");
            }
        }
    }

    /// Tells subscribers how a peer is now, with its live state and path. The engine is
    /// asked from a task of its own: this runs on the task that drains the engine's
    /// outputs, and waiting here for the engine could deadlock against a full queue.
    fn publish_peer_change(&self, event: &EngineEvent) {
        let key = match event {
            EngineEvent::PeerState { key, .. } | EngineEvent::PathChanged { key, .. } => *key,
            _ => return,
        };
        let Some(member) = self
            .persisted()
            .membership
            .as_ref()
            .and_then(|m| m.members.iter().find(|x| x.key == key).cloned())
        else {
            return;
        };
        let dataplane = self.dataplane();
        let events = self.events.clone();
        tokio::spawn(async move {
            let live = match dataplane {
                Some(dp) => dp.peers().await.into_iter().find(|l| l.key == key),
                None => None,
            };
            let _ = events.send(IpcEvent::PeerChanged { peer: control::peer_info(&member, live.as_ref()) });
        });
    }
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

struct DaemonControl(Arc<Daemon>);

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
pub async fn serve_ipc(
    daemon: Arc<Daemon>,
    options: &crate::ipc::ListenOptions,
) -> anyhow::Result<IpcServer> {
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
