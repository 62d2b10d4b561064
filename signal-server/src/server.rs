//! Assembles a running server from [`Settings`]: the store, the server's key, the
//! STUN/TURN relay and the HTTP API, and takes them down again in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use trellis_protocol::{DeviceId, PublicKey};
use x25519_dalek::StaticSecret;

use crate::api::{self, AppState};
use crate::clock::Clock;
use crate::config::Settings;
use crate::relay::{DeviceGate, Relay, RelayConfig, RelaySecret};
use crate::service::{RelayInfo, Service};
use crate::store::{SledStore, Store};
use crate::tls::{self, PeerAddr, TlsListener};

/// How long shutdown waits for open connections to close after telling them to.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The relay may serve a device while it is a member of some network: a removed
/// device's credentials stop working at once, not when they expire.
struct MembersOnly(Arc<dyn Store>);

impl DeviceGate for MembersOnly {
    fn may_relay(&self, device: &DeviceId) -> bool {
        self.0.networks_of(device).map(|networks| !networks.is_empty()).unwrap_or(false)
    }
}

#[derive(Debug)]
pub struct RunningServer {
    pub api_addr: SocketAddr,
    pub relay_addr: SocketAddr,
    pub server_key: PublicKey,
    pub service: Arc<Service>,
    shutdown: watch::Sender<bool>,
    api_task: JoinHandle<std::io::Result<()>>,
    /// Ends (`recv` gives `None`) once the router and every connection are gone.
    connections_closed: tokio::sync::mpsc::Receiver<()>,
    relay: Relay,
}

pub async fn start(settings: &Settings, clock: Arc<dyn Clock>) -> anyhow::Result<RunningServer> {
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("cannot create the data directory {}", settings.data_dir.display()))?;
    restrict_to_owner(&settings.data_dir)?;
    let sled = SledStore::open(&settings.data_dir)
        .with_context(|| format!("cannot open the store in {}", settings.data_dir.display()))?;
    let store: Arc<dyn Store> = Arc::new(sled);
    let random = || {
        let mut bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
        bytes
    };
    let server_secret = StaticSecret::from(store.secret("server-static-key", &mut { random })?);
    let relay_secret = RelaySecret::from_bytes(store.secret("relay-secret", &mut { random })?);

    let relay = Relay::start(
        RelayConfig {
            listen: settings.relay_listen,
            relay_ip: settings.public_ip,
            realm: settings.realm.clone(),
            secret: relay_secret.clone(),
            quotas: settings.relay_quotas.clone(),
        },
        Arc::new(MembersOnly(store.clone())),
    )
    .await?;
    let relay_addr = relay.local_addr();

    let service = Arc::new(Service::new(
        store,
        clock,
        server_secret,
        RelayInfo {
            secret: relay_secret,
            realm: settings.realm.clone(),
            port: relay_addr.port(),
            host: settings.relay_host.clone(),
            evictor: Some(relay.evictor()),
        },
        settings.limits,
    ));
    let server_key = service.server_key();

    let (shutdown, shutdown_rx) = watch::channel(false);
    let (open_connections, connections_closed) = tokio::sync::mpsc::channel(1);
    let app =
        api::router(AppState { service: service.clone(), shutdown: shutdown_rx.clone(), open_connections })
            .into_make_service_with_connect_info::<PeerAddr>();
    let tcp = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {} for the API", settings.listen))?;
    let api_addr = tcp.local_addr()?;
    let mut stop = shutdown_rx;
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let api_task = match &settings.tls {
        Some((cert, key)) => {
            let acceptor = tls::acceptor(cert, key)?;
            let listener = TlsListener::new(tcp, acceptor)?;
            tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(stopped).await })
        }
        None => tokio::spawn(async move { axum::serve(tcp, app).with_graceful_shutdown(stopped).await }),
    };
    let scheme = if settings.tls.is_some() { "wss" } else { "ws" };
    tracing::info!(
        api = %format!("{scheme}://{api_addr}/v1/signal"),
        relay = %relay_addr,
        server_key = %server_key,
        data_dir = %settings.data_dir.display(),
        "trellis-signal is up"
    );
    Ok(RunningServer {
        api_addr,
        relay_addr,
        server_key,
        service,
        shutdown,
        api_task,
        connections_closed,
        relay,
    })
}

impl RunningServer {
    /// Closes every connection politely, stops the relay and returns when all is down.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        let mut api_task = self.api_task;
        let mut connections_closed = self.connections_closed;
        // The listener first (it drops the router and its copy of the state), then every
        // WebSocket, each of which sends its reason before it closes.
        let all_closed = async {
            let _ = (&mut api_task).await;
            while connections_closed.recv().await.is_some() {}
        };
        if tokio::time::timeout_at(deadline, all_closed).await.is_err() {
            tracing::warn!("connections did not close in time; dropping them");
            api_task.abort();
        }
        self.relay.shutdown().await;
        tracing::info!("trellis-signal stopped");
    }
}

#[cfg(unix)]
fn restrict_to_owner(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // The directory holds the server's private key.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot restrict the permissions of {}", dir.display()))
}

#[cfg(not(unix))]
fn restrict_to_owner(_dir: &std::path::Path) -> anyhow::Result<()> {
    Ok(())
}
