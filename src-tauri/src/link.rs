//! The app's link to the helper: one short connection per request (the helper answers a
//! hello in microseconds over a local socket, and no request can then wait behind
//! another), plus one long-lived subscription that keeps [`HelperModel`] current and
//! tells the window, the tray and the notifications what changed.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use trellis_protocol::ipc::client::{ClientError, IpcClient};
use trellis_protocol::ipc::{IpcEvent, IpcRequest, IpcResponse, PeerInfo, Status};

use crate::error::AppError;
use crate::model::{HelperModel, Notice, TrayView};
use crate::platform;

/// Name the helper logs for this client.
const CLIENT_NAME: &str = "trellis-app";
/// Longest a request may take: joining or creating a network asks the signal server,
/// which the helper itself gives up on well before this; this only stops a hang.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(45);
/// How long to wait before trying a lost helper again (sooner when the window asks).
const RETRY_EVERY: Duration = Duration::from_secs(2);
/// How often peers' traffic, RTT and handshake age are refreshed: the helper pushes
/// state and path changes, not counters.
const PEER_REFRESH_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct HelperLink {
    endpoint: PathBuf,
    endpoint_overridden: bool,
    model: Mutex<HelperModel>,
    retry_now: Notify,
}

/// What the watcher reports, in order.
#[derive(Debug)]
pub enum LinkUpdate {
    /// The link is up (`true`) or down (`false`, with why).
    Connection(Result<String, AppError>),
    Event(IpcEvent),
    Notices(Vec<Notice>),
}

impl HelperLink {
    pub fn new(endpoint: PathBuf, endpoint_overridden: bool) -> Self {
        Self {
            endpoint,
            endpoint_overridden,
            model: Mutex::new(HelperModel::default()),
            retry_now: Notify::new(),
        }
    }

    pub fn endpoint(&self) -> &std::path::Path {
        &self.endpoint
    }

    /// What the tray shows now.
    pub fn tray_view(&self) -> TrayView {
        self.model.lock().expect("model lock").tray_view()
    }

    /// The helper's last status, if it answered.
    pub fn last_status(&self) -> Option<Status> {
        self.model.lock().expect("model lock").status().cloned()
    }

    fn error(&self, error: ClientError) -> AppError {
        AppError::from_client(error, platform::helper_installed(self.endpoint_overridden))
    }

    async fn connect(&self) -> Result<IpcClient, AppError> {
        IpcClient::connect(&self.endpoint, CLIENT_NAME).await.map_err(|e| self.error(e))
    }

    /// Sends one request on a connection of its own. If the helper cannot be reached, the
    /// watcher is told to try again now rather than at its next round.
    pub async fn request(&self, body: IpcRequest) -> Result<IpcResponse, AppError> {
        let result = async {
            let mut client = self.connect().await?;
            tokio::time::timeout(REQUEST_TIMEOUT, client.request(body))
                .await
                .map_err(|_| {
                    AppError::new(
                        crate::error::AppErrorKind::Unresponsive,
                        format!("the Trellis helper did not answer within {} s", REQUEST_TIMEOUT.as_secs()),
                    )
                })?
                .map_err(|e| self.error(e))
        }
        .await;
        if matches!(&result, Err(e) if e.is_helper_unavailable())
            || self.model.lock().expect("model lock").unavailable().is_some()
        {
            self.retry_now.notify_one();
        }
        result
    }

    pub async fn status(&self) -> Result<Status, AppError> {
        match self.request(IpcRequest::Status).await? {
            IpcResponse::Status { status } => Ok(status),
            other => Err(unexpected("status", &other)),
        }
    }

    pub async fn peers(&self) -> Result<Vec<PeerInfo>, AppError> {
        match self.request(IpcRequest::Peers).await {
            Ok(IpcResponse::Peers { peers }) => Ok(peers),
            // Not in a network: no peers, not an error for a list.
            Err(e) if e.code == Some(trellis_protocol::ipc::IpcErrorCode::NoNetwork) => Ok(Vec::new()),
            Ok(other) => Err(unexpected("peers", &other)),
            Err(e) => Err(e),
        }
    }

    /// Keeps the model current for as long as the app runs, reporting every change to
    /// `report`. Reconnects by itself after the helper stops or restarts.
    pub async fn watch(self: Arc<Self>, report: impl Fn(LinkUpdate) + Send + Sync + 'static) {
        let mut last_error: Option<AppError> = None;
        loop {
            match self.follow(&report).await {
                Ok(()) => last_error = None,
                Err(error) => {
                    if last_error.as_ref() != Some(&error) {
                        tracing::info!("helper unavailable: {error}");
                        self.model.lock().expect("model lock").set_unavailable(error.clone());
                        report(LinkUpdate::Connection(Err(error.clone())));
                    }
                    last_error = Some(error);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(RETRY_EVERY) => {}
                _ = self.retry_now.notified() => {}
            }
        }
    }

    /// One subscribed session, until the helper goes away.
    async fn follow(&self, report: &(impl Fn(LinkUpdate) + Send + Sync)) -> Result<(), AppError> {
        let mut client = self.connect().await?;
        client.subscribe().await.map_err(|e| self.error(e))?;
        // Subscribed first, then read: nothing that happens in between is missed.
        let status = match client.request(IpcRequest::Status).await.map_err(|e| self.error(e))? {
            IpcResponse::Status { status } => status,
            other => return Err(unexpected("status", &other)),
        };
        let peers = self.peers().await?;
        self.model.lock().expect("model lock").reset(status.clone(), peers.clone());
        report(LinkUpdate::Connection(Ok(client.helper_version().to_string())));
        report(LinkUpdate::Event(IpcEvent::Status { status }));
        for peer in peers {
            report(LinkUpdate::Event(IpcEvent::PeerChanged { peer }));
        }

        let mut refresh = tokio::time::interval(PEER_REFRESH_EVERY);
        refresh.tick().await;
        loop {
            tokio::select! {
                event = client.next_event() => {
                    let event = event.map_err(|e| self.error(e))?;
                    let notices = self.model.lock().expect("model lock").apply(&event);
                    report(LinkUpdate::Event(event));
                    if !notices.is_empty() {
                        report(LinkUpdate::Notices(notices));
                    }
                }
                _ = refresh.tick() => self.refresh_peers(report).await,
            }
        }
    }

    /// Asks for the peers and reports those whose figures changed as `peer_changed`.
    async fn refresh_peers(&self, report: &(impl Fn(LinkUpdate) + Send + Sync)) {
        let Ok(peers) = self.peers().await else { return };
        for peer in peers {
            let notices = {
                let mut model = self.model.lock().expect("model lock");
                if model.peer(&peer.key) == Some(&peer) {
                    continue;
                }
                model.apply(&IpcEvent::PeerChanged { peer: peer.clone() })
            };
            report(LinkUpdate::Event(IpcEvent::PeerChanged { peer }));
            if !notices.is_empty() {
                report(LinkUpdate::Notices(notices));
            }
        }
    }
}

fn unexpected(asked: &str, got: &IpcResponse) -> AppError {
    AppError::internal(format!("the helper answered a {asked} request with {got:?}"))
}
