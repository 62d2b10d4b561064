//! The helper's connection to `trellis-signal`: proof of key, requests with ids,
//! membership events and sealed peer signal.
//!
//! [`SignalClient::connect`] authenticates and returns the [`Welcome`]; afterwards
//! [`SignalClient::request`] may be called from any task, and server events arrive on
//! the receiver returned with the client. When the connection drops, the receiver
//! ends and pending requests fail with [`SignalError::Disconnected`]; reconnecting
//! (with backoff) is the daemon's job.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use trellis_protocol::keys::auth_proof;
use trellis_protocol::signal::{ApiError, ClientMessage, Event, Request, Response, ServerMessage, Welcome};
use trellis_protocol::{PublicKey, ServerAddr, MAX_SERVER_MESSAGE_BYTES, PROTOCOL_VERSION};
use x25519_dalek::StaticSecret;

/// How long connecting and authenticating may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request waits for its answer. The server answers a change only once it is
/// on disk, and an fsync behind a lot of unrelated writeback can take seconds.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Server events waiting for the daemon before the connection is dropped and resynced.
const EVENT_QUEUE: usize = 4096;
/// Requests queued for the connection task: room for a burst of ICE signal to many peers.
const OUTGOING_QUEUE: usize = 512;
/// A ping this often keeps NAT mappings alive and notices a dead server.
const PING_INTERVAL: Duration = Duration::from_secs(15);
/// No frame at all for this long: the connection is dead.
const SILENCE_LIMIT: Duration = Duration::from_secs(45);

#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("cannot reach the signal server at {server}: {detail}")]
    Unreachable { server: String, detail: String },
    #[error("the signal server {server} refused this device: {error}")]
    Refused { server: String, error: ApiError },
    #[error("the signal server {server} spoke unexpectedly: {detail}")]
    Protocol { server: String, detail: String },
    #[error("the signal server did not answer in time")]
    Timeout,
    #[error("could not connect to the signal server at {server} within {} s", CONNECT_TIMEOUT.as_secs())]
    ConnectTimeout { server: String },
    #[error("the connection to the signal server was lost")]
    Disconnected,
    #[error("{0}")]
    Api(ApiError),
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Response, ApiError>>>>>;

#[derive(Debug, Clone)]
pub struct SignalClient {
    outgoing: mpsc::Sender<ClientMessage>,
    pending: Pending,
    next_id: Arc<AtomicU64>,
    pub server_key: PublicKey,
}

/// One connection to the server, owned by whoever connected: its events arrive on
/// `events`, and [`SignalSession::close`] ends it and waits for its task, so that the
/// server sees the device go offline at once.
#[derive(Debug)]
pub struct SignalSession {
    pub client: SignalClient,
    pub welcome: Welcome,
    pub events: mpsc::Receiver<Event>,
    /// This end's address: when the machine loses it, the connection is dead.
    pub local_addr: Option<std::net::SocketAddr>,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// How long a closing session may take to say goodbye before its task is aborted.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

impl SignalSession {
    /// Says goodbye to the server (a WebSocket Close) and waits for the connection task.
    pub async fn close(self) {
        self.stop.cancel();
        let mut task = self.task;
        if tokio::time::timeout(CLOSE_GRACE, &mut task).await.is_err() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Whether the connection task has ended (the server went away or stopped answering).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl SignalClient {
    /// Connects, authenticates with `secret`, and starts the connection task.
    pub async fn connect(server: &ServerAddr, secret: &StaticSecret) -> Result<SignalSession, SignalError> {
        let name = server.to_string();
        let unreachable = |detail: String| SignalError::Unreachable { server: name.clone(), detail };
        let work = async {
            let tcp = tokio::net::TcpStream::connect((server.host.as_str(), server.port))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let _ = tcp.set_nodelay(true);
            let local_addr = tcp.local_addr().ok();
            let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                .max_message_size(Some(MAX_SERVER_MESSAGE_BYTES))
                .max_frame_size(Some(MAX_SERVER_MESSAGE_BYTES));
            let url = server.websocket_url();
            if server.secure {
                let tls = tls_connect(&server.host, tcp).await.map_err(|e| unreachable(e.to_string()))?;
                let (ws, _) = tokio_tungstenite::client_async_with_config(url, tls, Some(config))
                    .await
                    .map_err(|e| unreachable(e.to_string()))?;
                Self::start(&name, ws, secret, local_addr).await
            } else {
                let (ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(config))
                    .await
                    .map_err(|e| unreachable(e.to_string()))?;
                Self::start(&name, ws, secret, local_addr).await
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT, work)
            .await
            .map_err(|_| SignalError::ConnectTimeout { server: server.to_string() })?
    }

    async fn start<S>(
        name: &str,
        mut ws: WebSocketStream<S>,
        secret: &StaticSecret,
        local_addr: Option<std::net::SocketAddr>,
    ) -> Result<SignalSession, SignalError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let protocol = |detail: String| SignalError::Protocol { server: name.to_string(), detail };
        let (server_key, challenge) = match next_message(&mut ws).await? {
            ServerMessage::Challenge { version, server_key, challenge } => {
                if version != PROTOCOL_VERSION {
                    return Err(protocol(format!(
                        "it speaks signal protocol {version}, this helper {PROTOCOL_VERSION}; update the older one"
                    )));
                }
                (server_key, challenge)
            }
            other => return Err(protocol(format!("expected a challenge, got {other:?}"))),
        };
        let device_key = PublicKey::of(secret);
        let proof = auth_proof(secret, &server_key, &challenge, &device_key, &server_key)
            .map_err(|e| protocol(e.to_string()))?;
        let hello = ClientMessage::Authenticate { version: PROTOCOL_VERSION, device_key, proof };
        ws.send(Message::Text(serde_json::to_string(&hello).expect("encodes").into()))
            .await
            .map_err(|_| SignalError::Disconnected)?;
        let welcome = match next_message(&mut ws).await? {
            ServerMessage::Welcome(welcome) => welcome,
            ServerMessage::Error { error } => {
                return Err(SignalError::Refused { server: name.to_string(), error })
            }
            other => return Err(protocol(format!("expected a welcome, got {other:?}"))),
        };
        let (outgoing, outgoing_rx) = mpsc::channel(OUTGOING_QUEUE);
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let pending: Pending = Arc::default();
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(run(ws, outgoing_rx, events_tx, pending.clone(), stop.clone()));
        let client = Self { outgoing, pending, next_id: Arc::new(AtomicU64::new(1)), server_key };
        Ok(SignalSession { client, welcome, events, local_addr, stop, task })
    }

    /// Sends a request whose answer nobody waits for (sealed peer signal): queued in order
    /// behind earlier requests, never waiting for room. The server's answer is dropped.
    pub fn send_without_reply(&self, body: Request) -> Result<(), SignalError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.outgoing.try_send(ClientMessage::Request { id, body }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SignalError::Timeout,
            mpsc::error::TrySendError::Closed(_) => SignalError::Disconnected,
        })
    }

    pub async fn request(&self, body: Request) -> Result<Response, SignalError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending lock").insert(id, tx);
        let exchange = async {
            self.outgoing
                .send(ClientMessage::Request { id, body })
                .await
                .map_err(|_| SignalError::Disconnected)?;
            match rx.await {
                Ok(result) => result.map_err(SignalError::Api),
                Err(_) => Err(SignalError::Disconnected),
            }
        };
        let result =
            tokio::time::timeout(REQUEST_TIMEOUT, exchange).await.unwrap_or(Err(SignalError::Timeout));
        if result.is_err() {
            self.pending.lock().expect("pending lock").remove(&id);
        }
        result
    }

    /// Whether `other` is a handle of the same connection.
    pub fn same_connection(&self, other: &SignalClient) -> bool {
        Arc::ptr_eq(&self.pending, &other.pending)
    }

    pub fn is_connected(&self) -> bool {
        !self.outgoing.is_closed()
    }
}

async fn next_message<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
) -> Result<ServerMessage, SignalError> {
    loop {
        match ws.next().await {
            None | Some(Err(_)) => return Err(SignalError::Disconnected),
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(&text).map_err(|e| SignalError::Protocol {
                    server: String::new(),
                    detail: format!("unreadable message: {e}"),
                })
            }
            Some(Ok(Message::Close(_))) => return Err(SignalError::Disconnected),
            Some(Ok(_)) => continue,
        }
    }
}

/// The connection task: writes requests, routes responses to their waiters and
/// events to the daemon, pings, and ends everything when the connection dies.
async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    ws: WebSocketStream<S>,
    mut outgoing: mpsc::Receiver<ClientMessage>,
    events: mpsc::Sender<Event>,
    pending: Pending,
    stop: tokio_util::sync::CancellationToken,
) {
    let (mut sink, mut stream) = ws.split();
    let mut ping = tokio::time::interval(PING_INTERVAL);
    let mut last_heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            frame = stream.next() => {
                last_heard = tokio::time::Instant::now();
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue,
                };
                match serde_json::from_str::<ServerMessage>(&text) {
                    Ok(ServerMessage::Response { id, result }) => {
                        tracing::debug!(id, "signal response");
                        if let Some(waiter) = pending.lock().expect("pending lock").remove(&id) {
                            let _ = waiter.send(result.into());
                        }
                    }
                    // Never wait for the daemon here: responses must keep flowing even
                    // while it is busy (it may itself be waiting on one). A daemon that falls
                    // this far behind reconnects and gets the whole state in the welcome.
                    Ok(ServerMessage::Event { event }) => match events.try_send(event) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            tracing::warn!("the helper fell behind on server events; reconnecting");
                            break;
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => break,
                    },
                    Ok(ServerMessage::Error { error }) => {
                        tracing::warn!(code = ?error.code, "signal server: {}", error.message);
                    }
                    Ok(other) => tracing::debug!(?other, "unexpected message from the signal server"),
                    Err(e) => tracing::warn!(error = %e, "unreadable message from the signal server"),
                }
            }
            message = outgoing.recv() => {
                let Some(message) = message else { break };
                if let ClientMessage::Request { id, body } = &message {
                    tracing::debug!(id, op = request_name(body), "signal request");
                }
                let text = serde_json::to_string(&message).expect("client messages encode");
                if sink.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > SILENCE_LIMIT {
                    tracing::warn!("the signal server went silent; dropping the connection");
                    break;
                }
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
        }
    }
    // No new request may queue now; then dropping the waiters fails theirs with
    // Disconnected, instead of leaving them to time out.
    outgoing.close();
    pending.lock().expect("pending lock").clear();
    let _ = sink.close().await;
}

async fn tls_connect(
    host: &str,
    tcp: tokio::net::TcpStream,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, Box<dyn std::error::Error + Send + Sync>>
{
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err("no trusted root certificates found on this system".into());
    }
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_string())?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await?)
}

/// The request's name, for logs that must not carry its contents.
fn request_name(request: &Request) -> &'static str {
    match request {
        Request::CreateNetwork { .. } => "create_network",
        Request::Join { .. } => "join",
        Request::CreateInvite { .. } => "create_invite",
        Request::ListInvites { .. } => "list_invites",
        Request::RevokeInvite { .. } => "revoke_invite",
        Request::ListMembers { .. } => "list_members",
        Request::Rename { .. } => "rename",
        Request::Leave { .. } => "leave",
        Request::RemoveDevice { .. } => "remove_device",
        Request::Signal { .. } => "signal",
        Request::TurnCredentials => "turn_credentials",
    }
}
