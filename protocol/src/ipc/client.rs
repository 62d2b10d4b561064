//! The client side of the IPC, shared by the `trellis` CLI and the desktop app.
//!
//! [`IpcClient::connect`] opens the helper's socket (pipe on Windows) and does the hello;
//! every way that can fail becomes a [`ClientError`] whose message tells a person what is
//! wrong and what to do. Then [`IpcClient::request`] sends one request and waits for its
//! answer; after [`IpcClient::subscribe`], [`IpcClient::next_event`] (or the stream from
//! [`IpcClient::into_events`]) yields what the helper pushes. Events that arrive while a
//! request waits for its answer are kept, in order, for `next_event`.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{
    IpcClientMessage, IpcError, IpcErrorCode, IpcEvent, IpcRequest, IpcResponse, IpcResult, IpcServerMessage,
    IPC_VERSION, MAX_IPC_LINE_BYTES,
};
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::FramedRead;

use super::codec::{encode_line, write_line, Frame, LineCodec};
use super::endpoint as platform;

/// How long the helper may take to answer the hello: it answers at once unless stuck.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(unix)]
const ENDPOINT_NOUN: &str = "socket";
#[cfg(windows)]
const ENDPOINT_NOUN: &str = "pipe";

/// Why talking to the helper failed, phrased for the person who asked.
#[derive(Debug)]
pub enum ClientError {
    /// Nothing is at the endpoint (`stale`: a socket file is there but nothing listens).
    NotRunning { endpoint: String, stale: bool },
    /// The OS or the helper refused this user.
    PermissionDenied { endpoint: String, detail: String },
    /// The helper speaks another IPC version.
    VersionMismatch { helper_ipc: u32, client_ipc: u32, helper_version: String },
    /// Connecting failed for another reason.
    Unreachable { endpoint: String, source: io::Error },
    /// The helper accepted the connection but did not say hello in time.
    Unresponsive { endpoint: String },
    /// The helper closed the connection.
    Disconnected,
    /// Reading or writing the connection failed.
    Io(io::Error),
    /// The helper sent something this client does not understand.
    Protocol(String),
    /// The helper refused the request; the error says why.
    Refused(IpcError),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotRunning { endpoint, stale: false } => write!(
                f,
                "the Trellis helper is not running (no {ENDPOINT_NOUN} at {endpoint}): {}",
                platform::START_HINT
            ),
            Self::NotRunning { endpoint, stale: true } => write!(
                f,
                "the Trellis helper is not running (nothing listens on {endpoint}): {}",
                platform::START_HINT
            ),
            Self::PermissionDenied { endpoint, detail } => {
                write!(f, "permission denied on {endpoint}: {detail}")
            }
            Self::VersionMismatch { helper_ipc, client_ipc, helper_version } => write!(
                f,
                "the Trellis helper (trellisd {helper_version}) speaks IPC version {helper_ipc}, this client \
                 speaks version {client_ipc}: install the same Trellis version of the app, the `trellis` \
                 command and the helper"
            ),
            Self::Unreachable { endpoint, source } => {
                write!(f, "cannot connect to the Trellis helper at {endpoint}: {source}")
            }
            Self::Unresponsive { endpoint } => write!(
                f,
                "the Trellis helper at {endpoint} did not answer within {} s: it may be stuck; restart it",
                HELLO_TIMEOUT.as_secs()
            ),
            Self::Disconnected => {
                f.write_str("the Trellis helper closed the connection (it may have stopped or restarted)")
            }
            Self::Io(e) => write!(f, "lost the connection to the Trellis helper: {e}"),
            Self::Protocol(what) => write!(
                f,
                "the Trellis helper sent something this client does not understand ({what}); \
                 are they the same Trellis version?"
            ),
            Self::Refused(error) => error.message.fmt(f),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Unreachable { source, .. } => Some(source),
            Self::Io(e) => Some(e),
            Self::Refused(e) => Some(e),
            _ => None,
        }
    }
}

/// One connection to the helper, past its hello.
pub struct IpcClient {
    endpoint: String,
    lines: FramedRead<Box<dyn AsyncRead + Send + Unpin>, LineCodec>,
    writer: Box<dyn AsyncWrite + Send + Unpin>,
    next_id: u64,
    helper_version: String,
    events: VecDeque<IpcEvent>,
}

impl fmt::Debug for IpcClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpcClient")
            .field("endpoint", &self.endpoint)
            .field("helper_version", &self.helper_version)
            .field("next_id", &self.next_id)
            .field("queued_events", &self.events.len())
            .finish_non_exhaustive()
    }
}

/// The endpoint the helper listens on by default, for clients without `--socket`.
pub fn default_endpoint() -> PathBuf {
    PathBuf::from(platform::DEFAULT_ENDPOINT)
}

impl IpcClient {
    /// Connects to the helper at `endpoint` (a socket path, or a pipe name on Windows)
    /// and says hello as `client_name` (shown in the helper's logs).
    pub async fn connect(endpoint: impl AsRef<Path>, client_name: &str) -> Result<Self, ClientError> {
        let path = endpoint.as_ref();
        let shown = path.display().to_string();
        let stream = platform::connect(path).await.map_err(|e| connect_error(&shown, e))?;
        Self::handshake(stream, shown, client_name).await
    }

    /// Says hello over an open connection.
    /// (Public for tests that talk over an in-memory stream.)
    #[doc(hidden)]
    pub async fn handshake<S>(stream: S, endpoint: String, client_name: &str) -> Result<Self, ClientError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (reader, writer) = tokio::io::split(stream);
        let reader: Box<dyn AsyncRead + Send + Unpin> = Box::new(reader);
        let mut client = Self {
            endpoint,
            lines: FramedRead::new(reader, LineCodec::new(MAX_IPC_LINE_BYTES)),
            writer: Box::new(writer),
            next_id: 1,
            helper_version: String::new(),
            events: VecDeque::new(),
        };
        let hello =
            encode_line(&IpcClientMessage::Hello { version: IPC_VERSION, client: client_name.into() });
        if let Err(e) = write_line(&mut client.writer, &hello).await {
            // A helper that refuses us may have hung up already; its reason is still to be read.
            if !matches!(e.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset) {
                return Err(ClientError::Io(e));
            }
        }
        let line = tokio::time::timeout(HELLO_TIMEOUT, client.read_line())
            .await
            .map_err(|_| ClientError::Unresponsive { endpoint: client.endpoint.clone() })??;
        match serde_json::from_slice::<IpcServerMessage>(&line) {
            Ok(IpcServerMessage::Hello { version, helper_version }) if version == IPC_VERSION => {
                client.helper_version = helper_version;
                Ok(client)
            }
            Ok(IpcServerMessage::Hello { version, helper_version }) => Err(ClientError::VersionMismatch {
                helper_ipc: version,
                client_ipc: IPC_VERSION,
                helper_version,
            }),
            Ok(IpcServerMessage::Response { result: IpcResult::Err(error), .. }) => {
                if error.code == IpcErrorCode::PermissionDenied {
                    Err(ClientError::PermissionDenied { endpoint: client.endpoint, detail: error.message })
                } else {
                    Err(ClientError::Refused(error))
                }
            }
            Ok(_) => Err(ClientError::Protocol("the helper did not start with hello".into())),
            // A helper of another version may say hello with fields this client does not know.
            Err(e) => Err(future_hello(&line)
                .unwrap_or_else(|| ClientError::Protocol(format!("instead of hello: {e}")))),
        }
    }

    /// The helper's version, as it said in its hello.
    pub fn helper_version(&self) -> &str {
        &self.helper_version
    }

    /// Sends `body` and waits for its answer. A refusal is [`ClientError::Refused`].
    pub async fn request(&mut self, body: IpcRequest) -> Result<IpcResponse, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        write_line(&mut self.writer, &encode_line(&IpcClientMessage::Request { id, body }))
            .await
            .map_err(ClientError::Io)?;
        loop {
            match self.read_message().await? {
                IpcServerMessage::Response { id: answered, result } if answered == id || answered == 0 => {
                    return match result {
                        IpcResult::Ok(response) => Ok(response),
                        IpcResult::Err(error) => Err(ClientError::Refused(error)),
                    };
                }
                IpcServerMessage::Response { id: answered, .. } => {
                    return Err(ClientError::Protocol(format!(
                        "an answer to request {answered} while waiting for request {id}"
                    )));
                }
                IpcServerMessage::Event { event } => self.events.push_back(event),
                IpcServerMessage::Hello { .. } => return Err(ClientError::Protocol("a second hello".into())),
            }
        }
    }

    /// Asks the helper to push events on this connection; every change after this returns
    /// is delivered.
    pub async fn subscribe(&mut self) -> Result<(), ClientError> {
        match self.request(IpcRequest::Subscribe).await? {
            IpcResponse::Done => Ok(()),
            other => Err(ClientError::Protocol(format!("subscribe answered with {}", response_kind(&other)))),
        }
    }

    /// The next event (after [`Self::subscribe`]); waits for one.
    pub async fn next_event(&mut self) -> Result<IpcEvent, ClientError> {
        if let Some(event) = self.events.pop_front() {
            return Ok(event);
        }
        match self.read_message().await? {
            IpcServerMessage::Event { event } => Ok(event),
            IpcServerMessage::Response { result: IpcResult::Err(error), id: 0 } => {
                Err(ClientError::Refused(error))
            }
            IpcServerMessage::Response { id, .. } => {
                Err(ClientError::Protocol(format!("an answer to request {id}, which is not waiting")))
            }
            IpcServerMessage::Hello { .. } => Err(ClientError::Protocol("a second hello".into())),
        }
    }

    /// The events of a subscribed connection as a stream, which ends after its first error
    /// (e.g. [`ClientError::Disconnected`] when the helper stops).
    pub fn into_events(self) -> impl Stream<Item = Result<IpcEvent, ClientError>> + Send {
        futures_util::stream::unfold(Some(self), |client| async move {
            let mut client = client?;
            match client.next_event().await {
                Ok(event) => Some((Ok(event), Some(client))),
                Err(e) => Some((Err(e), None)),
            }
        })
    }

    async fn read_message(&mut self) -> Result<IpcServerMessage, ClientError> {
        let line = self.read_line().await?;
        serde_json::from_slice(&line).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    async fn read_line(&mut self) -> Result<Vec<u8>, ClientError> {
        match self.lines.next().await {
            None => Err(ClientError::Disconnected),
            Some(Err(e)) => Err(ClientError::Io(e)),
            Some(Ok(Frame::Line(line))) => Ok(line.to_vec()),
            Some(Ok(Frame::TooLong { len })) => Err(ClientError::Protocol(format!(
                "a line of {len} bytes, more than the {MAX_IPC_LINE_BYTES} an IPC line may have"
            ))),
        }
    }
}

fn connect_error(endpoint: &str, error: io::Error) -> ClientError {
    let endpoint = endpoint.to_string();
    match error.kind() {
        io::ErrorKind::NotFound => ClientError::NotRunning { endpoint, stale: false },
        io::ErrorKind::ConnectionRefused => ClientError::NotRunning { endpoint, stale: true },
        io::ErrorKind::PermissionDenied => {
            ClientError::PermissionDenied { endpoint, detail: platform::PERMISSION_HINT.into() }
        }
        _ => ClientError::Unreachable { endpoint, source: error },
    }
}

/// Reads the version out of a hello that does not parse as this version's hello.
fn future_hello(line: &[u8]) -> Option<ClientError> {
    let value: serde_json::Value = serde_json::from_slice(line).ok()?;
    if value.get("type")?.as_str()? != "hello" {
        return None;
    }
    let helper_ipc = u32::try_from(value.get("version")?.as_u64()?).ok()?;
    let helper_version = value.get("helper_version").and_then(|v| v.as_str()).unwrap_or("of unknown version");
    Some(ClientError::VersionMismatch {
        helper_ipc,
        client_ipc: IPC_VERSION,
        helper_version: helper_version.into(),
    })
}

/// A response's name, for messages.
pub(crate) fn response_kind(response: &IpcResponse) -> &'static str {
    match response {
        IpcResponse::Status { .. } => "status",
        IpcResponse::Invite { .. } => "invite",
        IpcResponse::Invites { .. } => "invites",
        IpcResponse::Peers { .. } => "peers",
        IpcResponse::Pong { .. } => "pong",
        IpcResponse::Done => "done",
    }
}
