//! A tiny signal client and server harness for the loopback tests: real WebSocket,
//! real sled store, real UDP relay; no mocks.

#![allow(dead_code)] // each test file uses part of it

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use trellis_protocol::keys::{auth_proof, generate_secret};
use trellis_protocol::signal::{
    ApiError, ClientMessage, ErrorCode, Event, Membership, Request, Response, ServerMessage, Welcome,
};
use trellis_protocol::{DeviceId, InviteCode, NetworkId, PublicKey, PROTOCOL_VERSION};
use trellis_signal::clock::ShiftedClock;
use trellis_signal::config::Settings;
use trellis_signal::server::{self, RunningServer};
use x25519_dalek::StaticSecret;

/// Every wait in these tests ends here: long enough for a loaded CI machine, short
/// enough that a hang fails the test instead of the job.
pub const DEADLINE: Duration = Duration::from_secs(15);

pub struct TestServer {
    pub server: RunningServer,
    pub clock: Arc<ShiftedClock>,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Settings)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings::local(dir.path());
        adjust(&mut settings);
        let clock = Arc::new(ShiftedClock::default());
        let server = server::start(&settings, clock.clone()).await.expect("server starts");
        Self { server, clock, dir }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/v1/signal", self.server.api_addr)
    }

    pub async fn device(&self) -> Device {
        Device::connect(&self.url(), generate_secret()).await
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct Device {
    pub secret: StaticSecret,
    pub key: PublicKey,
    pub ws: Ws,
    pub welcome: Welcome,
    next_id: u64,
    pub events: VecDeque<Event>,
}

/// Reads the next server message, or `None` when the connection closed.
pub async fn read<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> Option<ServerMessage> {
    loop {
        let frame = timeout_at(Instant::now() + DEADLINE, ws.next()).await.expect("server answers in time");
        match frame {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return None,
            Some(Ok(Message::Text(text))) => {
                return Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}")))
            }
            Some(Ok(_)) => continue,
        }
    }
}

pub async fn send<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>, message: &ClientMessage) {
    ws.send(Message::Text(serde_json::to_string(message).unwrap().into())).await.unwrap();
}

/// Opens a WebSocket and reads the challenge.
pub async fn open(url: &str) -> (Ws, PublicKey, [u8; 32]) {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("WebSocket connects");
    match read(&mut ws).await {
        Some(ServerMessage::Challenge { version, server_key, challenge }) => {
            assert_eq!(version, PROTOCOL_VERSION);
            (ws, server_key, challenge)
        }
        other => panic!("expected a challenge, got {other:?}"),
    }
}

/// Authenticates with `secret`; the server's answer.
pub async fn authenticate(url: &str, secret: &StaticSecret) -> (Ws, Option<ServerMessage>) {
    let (mut ws, server_key, challenge) = open(url).await;
    let key = PublicKey::of(secret);
    let proof = auth_proof(secret, &server_key, &challenge, &key, &server_key).unwrap();
    send(&mut ws, &ClientMessage::Authenticate { version: PROTOCOL_VERSION, device_key: key, proof }).await;
    let answer = read(&mut ws).await;
    (ws, answer)
}

impl Device {
    pub async fn connect(url: &str, secret: StaticSecret) -> Self {
        let (ws, answer) = authenticate(url, &secret).await;
        let Some(ServerMessage::Welcome(welcome)) = answer else {
            panic!("expected a welcome, got {answer:?}")
        };
        let key = PublicKey::of(&secret);
        assert_eq!(welcome.device_key, key);
        Self { secret, key, ws, welcome, next_id: 0, events: VecDeque::new() }
    }

    pub fn id(&self) -> DeviceId {
        DeviceId::of_key(&self.key)
    }

    pub async fn request(&mut self, body: Request) -> Result<Response, ApiError> {
        self.next_id += 1;
        let id = self.next_id;
        send(&mut self.ws, &ClientMessage::Request { id, body }).await;
        loop {
            match read(&mut self.ws).await {
                Some(ServerMessage::Response { id: got, result }) if got == id => return result.into(),
                Some(ServerMessage::Event { event }) => self.events.push_back(event),
                other => panic!("expected the response to request {id}, got {other:?}"),
            }
        }
    }

    /// The next event that `matches`, skipping others, within the deadline.
    pub async fn event(&mut self, what: &str, matches: impl Fn(&Event) -> bool) -> Event {
        if let Some(at) = self.events.iter().position(&matches) {
            return self.events.remove(at).unwrap();
        }
        loop {
            match read(&mut self.ws).await {
                Some(ServerMessage::Event { event }) if matches(&event) => return event,
                Some(ServerMessage::Event { event }) => self.events.push_back(event),
                other => panic!("waiting for {what}, got {other:?}"),
            }
        }
    }

    /// Reads until the server closes the connection; returns the error it sent, if any.
    pub async fn closed_with(&mut self) -> Option<ApiError> {
        let mut last_error = None;
        while let Some(message) = read(&mut self.ws).await {
            match message {
                ServerMessage::Error { error } => last_error = Some(error),
                ServerMessage::Event { event } => self.events.push_back(event),
                other => panic!("unexpected {other:?} while waiting for the close"),
            }
        }
        last_error
    }

    pub async fn create_network(&mut self, name: &str) -> Membership {
        let request = Request::CreateNetwork {
            name: name.parse().unwrap(),
            device_name: "owner".parse().unwrap(),
            range: None,
        };
        match self.request(request).await {
            Ok(Response::NetworkCreated { membership }) => membership,
            other => panic!("create network: {other:?}"),
        }
    }

    pub async fn invite(&mut self, network: NetworkId) -> InviteCode {
        self.invite_with(network, None, None).await
    }

    pub async fn invite_with(
        &mut self,
        network: NetworkId,
        uses: Option<u32>,
        ttl: Option<u64>,
    ) -> InviteCode {
        match self.request(Request::CreateInvite { network, max_uses: uses, expires_in_secs: ttl }).await {
            Ok(Response::InviteCreated { code, .. }) => code,
            other => panic!("create invite: {other:?}"),
        }
    }

    pub async fn join(&mut self, code: &InviteCode, name: &str) -> Result<Membership, ApiError> {
        match self.request(Request::Join { code: code.clone(), device_name: name.parse().unwrap() }).await {
            Ok(Response::Joined { membership }) => Ok(membership),
            Ok(other) => panic!("join answered {other:?}"),
            Err(e) => Err(e),
        }
    }
}

pub fn code_of(result: Result<impl std::fmt::Debug, ApiError>) -> ErrorCode {
    match result {
        Ok(value) => panic!("expected an error, got {value:?}"),
        Err(e) => e.code,
    }
}
