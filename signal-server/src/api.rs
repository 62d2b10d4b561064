//! The HTTP side: `GET /v1/signal` upgrades to the signal WebSocket, `GET /healthz`
//! answers for load balancers and tests.
//!
//! One connection's life: challenge → authenticate (within [`AUTH_TIMEOUT`]) → welcome
//! → requests and events until either side closes, the device goes quiet for
//! [`IDLE_TIMEOUT`], or the server shuts down. Bad input is answered with an error
//! message and the connection stays up; only a failed authentication closes it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use rand::RngCore;
use tokio::sync::watch;
use tokio::time::{timeout, Instant};
use trellis_protocol::keys::verify_auth_proof;
use trellis_protocol::signal::{ApiError, ApiResult, ClientMessage, ErrorCode, ServerMessage};
use trellis_protocol::{MAX_MESSAGE_BYTES, PROTOCOL_VERSION};

use crate::service::{Outbound, Service, Session};
use crate::tls::PeerAddr;

/// How long a device has to answer the challenge.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// The server pings every connection this often, so NATs keep the mapping and dead
/// connections are noticed.
pub const PING_INTERVAL: Duration = Duration::from_secs(20);
/// A connection that sends nothing (not even a pong) for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Frames above [`MAX_MESSAGE_BYTES`] but below this are read and refused with a
/// `too_large` error; above it the WebSocket layer drops the connection.
const HARD_FRAME_LIMIT: usize = 1024 * 1024;
/// Initial read buffer of a connection (see [`upgrade`]).
const READ_BUFFER_BYTES: usize = 4 * 1024;

#[derive(Clone, Debug)]
pub struct AppState {
    pub service: Arc<Service>,
    /// Becomes `true` when the server shuts down: every connection closes politely.
    pub shutdown: watch::Receiver<bool>,
    /// Held by every connection (through its copy of the state), so that shutdown can wait
    /// until the last one has sent its goodbye: upgraded WebSockets are not connections
    /// axum's graceful shutdown waits for.
    pub open_connections: tokio::sync::mpsc::Sender<()>,
}

pub fn router(state: AppState) -> Router {
    Router::new().route("/v1/signal", get(upgrade)).route("/healthz", get(health)).with_state(state)
}

async fn health() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok", "protocol_version": PROTOCOL_VERSION }))
}

async fn upgrade(
    ws: WebSocketUpgrade,
    ConnectInfo(PeerAddr(peer)): ConnectInfo<PeerAddr>,
    State(state): State<AppState>,
) -> impl IntoResponse {
    // The WebSocket layer allocates (and zeroes) its whole read buffer per connection: the
    // default 128 KiB made 10,000 idle devices cost 1.3 GB. It is only the chunk size of
    // socket reads: larger messages are still assembled, up to the frame limit.
    ws.read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(HARD_FRAME_LIMIT)
        .max_frame_size(HARD_FRAME_LIMIT)
        .on_upgrade(move |socket| async move { Connection { socket, peer, state }.run().await })
}

struct Connection {
    socket: WebSocket,
    peer: SocketAddr,
    state: AppState,
}

fn encode(message: &ServerMessage) -> Utf8Bytes {
    serde_json::to_string(message).expect("server messages always encode").into()
}

impl Connection {
    async fn run(mut self) {
        let session = match self.authenticate().await {
            Ok(session) => session,
            Err(error) => {
                tracing::info!(peer = %self.peer, %error, "authentication failed");
                self.close_with(error).await;
                return;
            }
        };
        let (session, outbound) = session;
        let span = tracing::info_span!("session", device = %session.device, key = %session.key.short());
        let _ = tracing::Instrument::instrument(self.serve(session, outbound), span).await;
    }

    async fn send(&mut self, message: &ServerMessage) -> Result<(), axum::Error> {
        self.socket.send(Message::Text(encode(message))).await
    }

    async fn close_with(&mut self, error: ApiError) {
        let _ = self.send(&ServerMessage::Error { error: error.clone() }).await;
        let mut reason = error.message;
        reason.truncate(120); // a close reason must fit in a control frame
        let frame = CloseFrame { code: axum::extract::ws::close_code::POLICY, reason: reason.into() };
        let _ = self.socket.send(Message::Close(Some(frame))).await;
    }

    async fn authenticate(&mut self) -> Result<(Session, tokio::sync::mpsc::Receiver<Outbound>), ApiError> {
        let service = self.state.service.clone();
        let mut challenge = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut challenge);
        let hello = ServerMessage::Challenge {
            version: PROTOCOL_VERSION,
            server_key: service.server_key(),
            challenge,
        };
        self.send(&hello).await.map_err(|_| ApiError::new(ErrorCode::Internal, "connection lost"))?;

        let unauthenticated = |why: &str| ApiError::new(ErrorCode::Unauthenticated, why.to_string());
        // A connection that never authenticates must not hold up the server's shutdown,
        // which waits for every connection.
        let mut shutdown = self.state.shutdown.clone();
        let text = loop {
            let received = tokio::select! {
                received = timeout(AUTH_TIMEOUT, self.socket.recv()) => received,
                _ = shutdown.wait_for(|down| *down) => {
                    return Err(ApiError::new(ErrorCode::Internal, "the server is shutting down"));
                }
            };
            match received {
                Err(_) => return Err(unauthenticated("no authentication within 10 seconds")),
                Ok(None | Some(Err(_))) => {
                    return Err(unauthenticated("connection closed before authenticating"))
                }
                Ok(Some(Ok(Message::Text(text)))) => break text,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(Some(Ok(_))) => {
                    return Err(ApiError::new(ErrorCode::Malformed, "messages are JSON text frames"))
                }
            }
        };
        if text.len() > MAX_MESSAGE_BYTES {
            return Err(ApiError::new(ErrorCode::TooLarge, "the authentication message is too large"));
        }
        let message: ClientMessage = serde_json::from_str(&text).map_err(|e| {
            ApiError::new(ErrorCode::Malformed, format!("not a valid authenticate message: {e}"))
        })?;
        let ClientMessage::Authenticate { version, device_key, proof } = message else {
            return Err(unauthenticated("the first message must be `authenticate`"));
        };
        if version != PROTOCOL_VERSION {
            return Err(ApiError::new(
                ErrorCode::VersionMismatch,
                format!(
                    "this server speaks signal protocol version {PROTOCOL_VERSION}, the device speaks {version}; \
                     update the older side"
                ),
            ));
        }
        if !verify_auth_proof(service.server_secret(), &device_key, &challenge, &proof) {
            return Err(unauthenticated("the proof of key did not verify"));
        }
        let (session, outbound, welcome) = service.connect(device_key, self.peer.ip())?;
        self.send(&ServerMessage::Welcome(welcome))
            .await
            .map_err(|_| ApiError::new(ErrorCode::Internal, "connection lost"))?;
        Ok((session, outbound))
    }

    async fn serve(
        &mut self,
        session: Session,
        mut outbound: tokio::sync::mpsc::Receiver<Outbound>,
    ) -> Result<(), axum::Error> {
        let session = Arc::new(session);
        let mut shutdown = self.state.shutdown.clone();
        let mut ping = tokio::time::interval(PING_INTERVAL);
        ping.reset();
        let mut last_heard = Instant::now();
        loop {
            tokio::select! {
                incoming = self.socket.recv() => {
                    last_heard = Instant::now();
                    match incoming {
                        None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(()),
                        Some(Ok(Message::Text(text))) => {
                            let reply = answer(self.state.service.clone(), &session, text).await;
                            self.send(&reply).await?;
                        }
                        Some(Ok(Message::Binary(_))) => {
                            let error = ApiError::new(ErrorCode::Malformed, "messages are JSON text frames, not binary");
                            self.send(&ServerMessage::Error { error }).await?;
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    }
                }
                queued = outbound.recv() => match queued {
                    Some(Outbound::Frame(text)) => self.socket.send(Message::Text(text.as_ref().into())).await?,
                    Some(Outbound::Close(error)) => {
                        self.close_with(error).await;
                        return Ok(());
                    }
                    None => {
                        let error = ApiError::new(ErrorCode::Internal, "the server dropped this session; reconnect");
                        self.close_with(error).await;
                        return Ok(());
                    }
                },
                _ = ping.tick() => {
                    if last_heard.elapsed() > IDLE_TIMEOUT {
                        tracing::info!("closing an idle connection");
                        return Ok(());
                    }
                    self.socket.send(Message::Ping(Default::default())).await?;
                }
                _ = shutdown.changed() => {
                    self.close_with(ApiError::new(ErrorCode::Internal, "the server is shutting down")).await;
                    return Ok(());
                }
            }
        }
    }
}

/// Parses and answers one text frame. Never fails: bad input becomes an error reply.
async fn answer(service: Arc<Service>, session: &Arc<Session>, text: Utf8Bytes) -> ServerMessage {
    if text.len() > MAX_MESSAGE_BYTES {
        let error = ApiError::new(
            ErrorCode::TooLarge,
            format!("a message may have {MAX_MESSAGE_BYTES} bytes, this one has {}", text.len()),
        );
        return ServerMessage::Error { error };
    }
    let message = match serde_json::from_str::<ClientMessage>(&text) {
        Ok(message) => message,
        Err(e) => {
            let error = ApiError::new(ErrorCode::Malformed, format!("not a valid request: {e}"));
            // A request whose id can still be read gets its answer under that id, so the
            // client's waiter fails at once instead of timing out.
            let id =
                serde_json::from_str::<serde_json::Value>(&text).ok().and_then(|v| v.get("id")?.as_u64());
            return match id {
                Some(id) => ServerMessage::Response { id, result: ApiResult::Err(error) },
                None => ServerMessage::Error { error },
            };
        }
    };
    let ClientMessage::Request { id, body } = message else {
        let error = ApiError::new(ErrorCode::InvalidArgument, "this connection is already authenticated");
        return ServerMessage::Error { error };
    };
    let session = session.clone();
    // Store writes wait for the disk; keep them off the async workers.
    let result =
        tokio::task::spawn_blocking(move || service.handle(&session, body)).await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "request handler panicked");
            Err(ApiError::new(ErrorCode::Internal, "the server failed on this request"))
        });
    ServerMessage::Response { id, result: ApiResult::from(result) }
}
