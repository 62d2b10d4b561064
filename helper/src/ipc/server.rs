//! The platform-independent server: the session on one connection and the accept loop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use trellis_protocol::ipc::{
    IpcClientMessage, IpcError, IpcErrorCode, IpcEvent, IpcRequest, IpcResponse, IpcResult, IpcServerMessage,
    IPC_VERSION, MAX_IPC_LINE_BYTES,
};

use super::codec::{encode_line, write_line, Frame, LineCodec};
use super::{BoxFuture, Control, IpcListener, HELPER_VERSION};

/// How long a client may take to say hello before the helper hangs up.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a refused client gets to finish sending its hello, so that it reads the
/// refusal instead of a broken pipe.
const REFUSAL_LINGER: Duration = Duration::from_secs(2);
/// Pause after a failed accept (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(200);

/// Whether the peer of a new connection may use it, as the platform decided.
#[derive(Debug)]
pub(crate) enum Admission {
    Allowed {
        peer: String,
    },
    // On Windows the pipe's DACL refuses a client at open, before the server sees it.
    #[cfg_attr(windows, allow(dead_code))]
    Denied {
        peer: String,
    },
}

/// Serves the IPC on `listener` until `shutdown` completes, then closes every connection.
///
/// Each connection is served by its own task: it is greeted, checked, and its requests
/// are passed to `control` one at a time. Connections that send `Subscribe` also get every
/// event sent on `events` from then on; one that falls more than the channel's capacity
/// behind is closed, so a client never silently misses a change (it reconnects and reads
/// the state afresh).
pub async fn serve(
    mut listener: IpcListener,
    control: Arc<dyn Control>,
    events: broadcast::Sender<IpcEvent>,
    shutdown: impl Future<Output = ()>,
) {
    let stop = CancellationToken::new();
    let mut connections = JoinSet::new();
    let mut next_connection = 0u64;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = done {
                    tracing::error!("an IPC connection task failed: {e}");
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, admission)) => {
                    next_connection += 1;
                    let span = tracing::info_span!("ipc", conn = next_connection);
                    let session = connection(stream, admission, control.clone(), events.clone(), stop.clone());
                    connections.spawn(session.instrument(span));
                }
                Err(e) => {
                    tracing::warn!("accepting an IPC connection failed: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    stop.cancel();
    while connections.join_next().await.is_some() {}
    tracing::info!("IPC stopped");
}

/// Writes messages to one client, refusing to send a line the client would reject.
struct Outgoing<W> {
    writer: W,
}

impl<W: AsyncWrite + Unpin> Outgoing<W> {
    async fn send(&mut self, message: &IpcServerMessage) -> std::io::Result<()> {
        let mut line = encode_line(message);
        if line.len() > MAX_IPC_LINE_BYTES + 1 {
            if let IpcServerMessage::Response { id, .. } = message {
                tracing::error!(id, bytes = line.len(), "IPC response too large");
                let error = IpcError::new(
                    IpcErrorCode::Internal,
                    format!(
                        "the helper's answer is {} bytes, more than the {MAX_IPC_LINE_BYTES} an IPC line may have",
                        line.len()
                    ),
                );
                line = encode_line(&IpcServerMessage::Response { id: *id, result: IpcResult::Err(error) });
            } else {
                tracing::error!(bytes = line.len(), "IPC event too large; not sent");
                return Ok(());
            }
        }
        write_line(&mut self.writer, &line).await
    }

    async fn error(
        &mut self,
        id: u64,
        code: IpcErrorCode,
        message: impl Into<String>,
    ) -> std::io::Result<()> {
        let result = IpcResult::Err(IpcError::new(code, message));
        self.send(&IpcServerMessage::Response { id, result }).await
    }
}

/// A request being answered, with the id to answer it under.
struct Pending<'a> {
    id: u64,
    answer: BoxFuture<'a, Result<IpcResponse, IpcError>>,
}

async fn connection<S>(
    stream: S,
    admission: Admission,
    control: Arc<dyn Control>,
    events: broadcast::Sender<IpcEvent>,
    stop: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (reader, writer) = tokio::io::split(stream);
    let mut lines = FramedRead::new(reader, LineCodec::new(MAX_IPC_LINE_BYTES));
    let mut out = Outgoing { writer };
    let peer = match admission {
        Admission::Allowed { peer } => peer,
        Admission::Denied { peer } => {
            tracing::warn!(%peer, "refused an IPC connection: not root, not the owner, not in the trellis group");
            let refused =
                out.error(0, IpcErrorCode::PermissionDenied, super::platform_hints::PERMISSION_HINT).await;
            if refused.is_ok() {
                // Let the client finish writing its hello, so it reads the refusal.
                let _ = tokio::time::timeout(REFUSAL_LINGER, lines.next()).await;
            }
            return;
        }
    };
    match hello(&mut lines, &mut out, &peer).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::debug!(%peer, "IPC connection lost during hello: {e}");
            return;
        }
    }
    if let Err(e) = session(&mut lines, &mut out, &*control, &events, &stop).await {
        tracing::debug!(%peer, "IPC connection lost: {e}");
    }
    tracing::debug!(%peer, "IPC connection closed");
}

/// Reads the client's hello and answers it. `Ok(false)`: the connection must close.
async fn hello<R, W>(
    lines: &mut FramedRead<R, LineCodec>,
    out: &mut Outgoing<W>,
    peer: &str,
) -> std::io::Result<bool>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let frame = match tokio::time::timeout(HELLO_TIMEOUT, lines.next()).await {
        Err(_) => {
            tracing::debug!(%peer, "no hello within {HELLO_TIMEOUT:?}");
            return Ok(false);
        }
        Ok(None) => return Ok(false),
        Ok(Some(frame)) => frame?,
    };
    let text = match frame {
        Frame::Line(text) => text,
        Frame::TooLong { len } => {
            out.error(0, IpcErrorCode::Malformed, too_long(len)).await?;
            return Ok(false);
        }
    };
    match serde_json::from_slice::<IpcClientMessage>(&text) {
        Ok(IpcClientMessage::Hello { version, client }) => {
            out.send(&IpcServerMessage::Hello {
                version: IPC_VERSION,
                helper_version: HELPER_VERSION.into(),
            })
            .await?;
            if version != IPC_VERSION {
                tracing::warn!(%peer, %client, version, "IPC client of another version refused");
                let message = format!(
                    "{client} speaks IPC version {version}, but this helper (trellisd {HELPER_VERSION}) speaks \
                     version {IPC_VERSION}: install the same Trellis version of the app, the `trellis` command \
                     and the helper"
                );
                out.error(0, IpcErrorCode::VersionMismatch, message).await?;
                return Ok(false);
            }
            tracing::debug!(%peer, %client, "IPC client connected");
            Ok(true)
        }
        Ok(IpcClientMessage::Request { id, .. }) => {
            out.error(id, IpcErrorCode::Malformed, "a client must send hello before any request").await?;
            Ok(false)
        }
        Err(e) => {
            out.error(0, IpcErrorCode::Malformed, format!("expected a hello message: {e}")).await?;
            Ok(false)
        }
    }
}

/// Answers requests in order and forwards events once subscribed, until the client
/// hangs up, falls behind on events, or the server stops.
async fn session<R, W>(
    lines: &mut FramedRead<R, LineCodec>,
    out: &mut Outgoing<W>,
    control: &dyn Control,
    events: &broadcast::Sender<IpcEvent>,
    stop: &CancellationToken,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut pending: Option<Pending<'_>> = None;
    let mut subscription: Option<broadcast::Receiver<IpcEvent>> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            (id, result) = answer(&mut pending) => {
                pending = None;
                let result = match result {
                    Ok(response) => IpcResult::Ok(response),
                    Err(error) => IpcResult::Err(error),
                };
                out.send(&IpcServerMessage::Response { id, result }).await?;
            }
            event = next_event(&mut subscription) => match event {
                Ok(event) => out.send(&IpcServerMessage::Event { event }).await?,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "IPC subscriber fell behind; closing its connection");
                    return Ok(());
                }
                Err(broadcast::error::RecvError::Closed) => subscription = None,
            },
            frame = lines.next(), if pending.is_none() => {
                let text = match frame {
                    None => return Ok(()),
                    Some(frame) => match frame? {
                        Frame::Line(text) => text,
                        Frame::TooLong { len } => {
                            out.error(0, IpcErrorCode::Malformed, too_long(len)).await?;
                            continue;
                        }
                    },
                };
                match serde_json::from_slice::<IpcClientMessage>(&text) {
                    Ok(IpcClientMessage::Request { id, body: IpcRequest::Subscribe }) => {
                        // Subscribe before answering: every event after the answer arrives.
                        subscription.get_or_insert_with(|| events.subscribe());
                        out.send(&IpcServerMessage::Response { id, result: IpcResult::Ok(IpcResponse::Done) })
                            .await?;
                    }
                    Ok(IpcClientMessage::Request { id, body }) => {
                        tracing::debug!(id, request = ?body, "IPC request");
                        pending = Some(Pending { id, answer: control.handle(body) });
                    }
                    Ok(IpcClientMessage::Hello { .. }) => {
                        out.error(0, IpcErrorCode::Malformed, "hello was already sent on this connection").await?;
                    }
                    Err(e) => {
                        let id = request_id(&text).unwrap_or(0);
                        out.error(id, IpcErrorCode::Malformed, format!("cannot read this request: {e}")).await?;
                    }
                }
            }
        }
    }
}

async fn answer(pending: &mut Option<Pending<'_>>) -> (u64, Result<IpcResponse, IpcError>) {
    match pending {
        Some(pending) => (pending.id, pending.answer.as_mut().await),
        None => std::future::pending().await,
    }
}

async fn next_event(
    subscription: &mut Option<broadcast::Receiver<IpcEvent>>,
) -> Result<IpcEvent, broadcast::error::RecvError> {
    match subscription {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

/// The id of a request that does not parse, when its `id` field can still be read, so the
/// error goes to the right caller.
fn request_id(text: &[u8]) -> Option<u64> {
    serde_json::from_slice::<serde_json::Value>(text).ok()?.get("id")?.as_u64()
}

fn too_long(len: usize) -> String {
    format!("a line of {len} bytes is longer than the {MAX_IPC_LINE_BYTES} bytes an IPC line may have")
}
