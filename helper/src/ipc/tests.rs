//! The IPC over real Unix sockets in a temporary directory: a served [`FakeControl`], the
//! real client, and raw lines for what a well-behaved client never sends.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use trellis_protocol::ipc::{
    IpcErrorCode, IpcEvent, IpcRequest, IpcResponse, IpcResult, IpcServerMessage, PeerState, IPC_VERSION,
    MAX_IPC_LINE_BYTES,
};
use trellis_protocol::{InviteId, InviteTicket};

use super::testing::{self, answer_for, run_child, text, RunAs, TestServer};
use super::*;

/// A connection that sends whatever lines it is given.
struct Raw {
    lines: tokio::io::Lines<BufReader<OwnedReadHalf>>,
    writer: OwnedWriteHalf,
}

impl Raw {
    async fn open(server: &TestServer) -> Self {
        let (reader, writer) = UnixStream::connect(&server.path).await.unwrap().into_split();
        Self { lines: BufReader::new(reader).lines(), writer }
    }

    async fn hello(server: &TestServer) -> Self {
        let mut raw = Self::open(server).await;
        raw.send(&format!(r#"{{"type":"hello","version":{IPC_VERSION},"client":"raw"}}"#)).await;
        assert!(matches!(raw.recv().await, Some(IpcServerMessage::Hello { .. })));
        raw
    }

    async fn send(&mut self, line: &str) {
        self.writer.write_all(line.as_bytes()).await.unwrap();
        self.writer.write_all(b"\n").await.unwrap();
    }

    /// The next message, or `None` when the helper closed the connection.
    async fn recv(&mut self) -> Option<IpcServerMessage> {
        let line = self.lines.next_line().await.unwrap()?;
        Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}")))
    }

    async fn recv_error(&mut self) -> (u64, IpcError) {
        match self.recv().await {
            Some(IpcServerMessage::Response { id, result: IpcResult::Err(error) }) => (id, error),
            other => panic!("expected an error response, got {other:?}"),
        }
    }
}

/// One of every request (two pings: one answered, one refused).
fn all_requests() -> Vec<IpcRequest> {
    let requests = vec![
        IpcRequest::Status,
        IpcRequest::Up,
        IpcRequest::Down,
        IpcRequest::CreateNetwork {
            name: "home".parse().unwrap(),
            server: Some("ws://203.0.113.1:9000".parse().unwrap()),
            range: Some("100.80.0.0/16".parse().unwrap()),
        },
        IpcRequest::CreateInvite { max_uses: Some(3), expires_in_secs: Some(3600) },
        IpcRequest::ListInvites,
        IpcRequest::RevokeInvite { id: InviteId("K7QF".into()) },
        IpcRequest::Join {
            ticket: "trellis://join/K7QF-3M9T-WX2C-HN4R@vpn.example.org".parse::<InviteTicket>().unwrap(),
        },
        IpcRequest::Leave,
        IpcRequest::Peers,
        IpcRequest::Remove { peer: "bob".into() },
        IpcRequest::Rename { name: "desk".parse().unwrap() },
        IpcRequest::SetServer { server: "vpn.example.org:8443".parse().unwrap() },
        IpcRequest::Ping { peer: "bob".into() },
        IpcRequest::Ping { peer: "nobody".into() },
        IpcRequest::Subscribe,
    ];
    // Adding a request breaks this match, and the count below, until it is listed above.
    let variant = |request: &IpcRequest| match request {
        IpcRequest::Status => 0,
        IpcRequest::Up => 1,
        IpcRequest::Down => 2,
        IpcRequest::CreateNetwork { .. } => 3,
        IpcRequest::CreateInvite { .. } => 4,
        IpcRequest::ListInvites => 5,
        IpcRequest::RevokeInvite { .. } => 6,
        IpcRequest::Join { .. } => 7,
        IpcRequest::Leave => 8,
        IpcRequest::Peers => 9,
        IpcRequest::Remove { .. } => 10,
        IpcRequest::Rename { .. } => 11,
        IpcRequest::SetServer { .. } => 12,
        IpcRequest::Ping { .. } => 13,
        IpcRequest::Subscribe => 14,
    };
    let covered: std::collections::BTreeSet<u32> = requests.iter().map(variant).collect();
    assert_eq!(covered.len(), 15, "every request kind is exercised");
    requests
}

#[tokio::test]
async fn every_request_round_trips_through_server_and_client() {
    let server = TestServer::start(16, |_| {});
    let mut client = IpcClient::connect(&server.path, "test").await.unwrap();
    assert_eq!(client.helper_version(), HELPER_VERSION);
    let requests = all_requests();
    for request in &requests {
        let got = client.request(request.clone()).await;
        if *request == IpcRequest::Subscribe {
            assert_eq!(got.unwrap(), IpcResponse::Done);
            continue;
        }
        match (got, answer_for(request)) {
            (Ok(got), Ok(want)) => assert_eq!(got, want),
            (Err(ClientError::Refused(got)), Err(want)) => assert_eq!(got, want),
            (got, want) => panic!("{request:?}: got {got:?}, want {want:?}"),
        }
    }
    // The daemon saw each request as sent; subscribing is the server's own business.
    let forwarded: Vec<_> = requests.into_iter().filter(|r| *r != IpcRequest::Subscribe).collect();
    assert_eq!(server.control.seen(), forwarded);
    server.stop().await;
}

#[tokio::test]
async fn a_client_of_another_version_is_told_and_disconnected() {
    let server = TestServer::start(16, |_| {});
    let mut raw = Raw::open(&server).await;
    raw.send(r#"{"type":"hello","version":99,"client":"trellis-app 9.0"}"#).await;
    assert_eq!(
        raw.recv().await,
        Some(IpcServerMessage::Hello { version: IPC_VERSION, helper_version: HELPER_VERSION.into() })
    );
    let (id, error) = raw.recv_error().await;
    assert_eq!((id, error.code), (0, IpcErrorCode::VersionMismatch));
    for part in ["trellis-app 9.0 speaks IPC version 99", &format!("speaks version {IPC_VERSION}"), "install"]
    {
        assert!(error.message.contains(part), "{:?} lacks {part:?}", error.message);
    }
    assert_eq!(raw.recv().await, None, "the helper hangs up");
    assert!(server.control.seen().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn the_client_reports_a_helper_of_another_version() {
    // A future helper whose hello has a field this client does not know.
    let (ours, theirs) = tokio::io::duplex(4096);
    let helper = tokio::spawn(async move {
        let (reader, mut writer) = tokio::io::split(theirs);
        let hello = BufReader::new(reader).lines().next_line().await.unwrap().unwrap();
        writer
            .write_all(b"{\"type\":\"hello\",\"version\":2,\"helper_version\":\"0.9.0\",\"features\":[]}\n")
            .await
            .unwrap();
        hello
    });
    let error = IpcClient::handshake(ours, "test".into(), "trellis-cli").await.unwrap_err();
    let hello = helper.await.unwrap();
    assert!(
        hello.contains(&format!("\"version\":{IPC_VERSION}")) && hello.contains("trellis-cli"),
        "{hello}"
    );
    assert!(
        matches!(&error, ClientError::VersionMismatch { helper_ipc: 2, client_ipc: IPC_VERSION, helper_version }
            if helper_version == "0.9.0"),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("trellisd 0.9.0) speaks IPC version 2, this client speaks version 1"),
        "{message}"
    );
}

#[tokio::test]
async fn malformed_lines_are_answered_and_the_connection_survives() {
    let server = TestServer::start(16, |_| {});
    let mut raw = Raw::hello(&server).await;

    raw.send("this is not json").await;
    let (id, error) = raw.recv_error().await;
    assert_eq!((id, error.code), (0, IpcErrorCode::Malformed));

    // An unknown request still gets its error under its own id.
    raw.send(r#"{"type":"request","id":7,"body":{"cmd":"format_disk"}}"#).await;
    let (id, error) = raw.recv_error().await;
    assert_eq!((id, error.code), (7, IpcErrorCode::Malformed));
    assert!(error.message.contains("format_disk"), "{}", error.message);

    raw.send(&"x".repeat(MAX_IPC_LINE_BYTES + 100)).await;
    let (id, error) = raw.recv_error().await;
    assert_eq!((id, error.code), (0, IpcErrorCode::Malformed));
    assert!(error.message.contains(&format!("{} bytes", MAX_IPC_LINE_BYTES + 100)), "{}", error.message);

    raw.send(r#"{"type":"hello","version":1,"client":"again"}"#).await;
    assert_eq!(raw.recv_error().await.1.code, IpcErrorCode::Malformed);

    raw.send(r#"{"type":"request","id":8,"body":{"cmd":"status"}}"#).await;
    assert_eq!(
        raw.recv().await,
        Some(IpcServerMessage::Response {
            id: 8,
            result: IpcResult::Ok(answer_for(&IpcRequest::Status).unwrap())
        })
    );
    assert_eq!(server.control.seen(), vec![IpcRequest::Status]);
    server.stop().await;
}

#[tokio::test]
async fn a_request_before_hello_is_refused() {
    let server = TestServer::start(16, |_| {});
    let mut raw = Raw::open(&server).await;
    raw.send(r#"{"type":"request","id":1,"body":{"cmd":"up"}}"#).await;
    let (id, error) = raw.recv_error().await;
    assert_eq!((id, error.code), (1, IpcErrorCode::Malformed));
    assert!(error.message.contains("hello"), "{}", error.message);
    assert_eq!(raw.recv().await, None);
    assert!(server.control.seen().is_empty());
    server.stop().await;
}

fn peer_changed(state: PeerState) -> IpcEvent {
    let mut peer = testing::peers().remove(0);
    peer.state = state;
    IpcEvent::PeerChanged { peer }
}

#[tokio::test]
async fn subscribers_receive_events_in_order_even_around_requests() {
    let server = TestServer::start(16, |_| {});
    let mut watcher = IpcClient::connect(&server.path, "watcher").await.unwrap();
    let mut other = IpcClient::connect(&server.path, "other").await.unwrap();
    watcher.subscribe().await.unwrap();

    let first = IpcEvent::Status { status: testing::status() };
    let second = peer_changed(PeerState::Reconnecting);
    server.events.send(first.clone()).unwrap();
    server.events.send(second.clone()).unwrap();
    // Events that arrive while a request waits are kept for next_event, in order.
    assert_eq!(
        watcher.request(IpcRequest::Peers).await.unwrap(),
        IpcResponse::Peers { peers: testing::peers() }
    );
    assert_eq!(watcher.next_event().await.unwrap(), first);
    assert_eq!(watcher.next_event().await.unwrap(), second);

    let third = IpcEvent::PeerLeft { name: "bob".parse().unwrap(), key: testing::key(2) };
    server.events.send(third.clone()).unwrap();
    let mut events = Box::pin(watcher.into_events());
    assert_eq!(futures_util::StreamExt::next(&mut events).await.unwrap().unwrap(), third);

    // A connection that did not subscribe gets answers only.
    assert_eq!(other.request(IpcRequest::Up).await.unwrap(), IpcResponse::Done);
    server.stop().await;
    assert!(matches!(other.next_event().await, Err(ClientError::Disconnected)));
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_is_disconnected() {
    // The test and the server share one thread: the server cannot forward anything until
    // the test awaits, so the channel (capacity 2) overflows for certain.
    let server = TestServer::start(2, |_| {});
    let mut watcher = IpcClient::connect(&server.path, "slow").await.unwrap();
    watcher.subscribe().await.unwrap();
    for state in [PeerState::Connecting, PeerState::Connected, PeerState::Reconnecting, PeerState::Offline] {
        server.events.send(peer_changed(state)).unwrap();
    }
    assert!(matches!(watcher.next_event().await, Err(ClientError::Disconnected)));
    // Others carry on.
    let mut client = IpcClient::connect(&server.path, "test").await.unwrap();
    assert!(client.request(IpcRequest::Status).await.is_ok());
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_connections_and_removes_the_socket() {
    let server = TestServer::start(16, |_| {});
    let path = server.path.clone();
    let mut client = IpcClient::connect(&path, "test").await.unwrap();
    client.subscribe().await.unwrap();
    assert!(path.exists());
    let dir = server.stop().await;
    assert!(matches!(client.next_event().await, Err(ClientError::Disconnected)));
    assert!(!path.exists(), "the socket file is removed");
    let error = IpcClient::connect(&path, "late").await.unwrap_err();
    assert!(matches!(error, ClientError::NotRunning { stale: false, .. }), "{error:?}");
    drop(dir);
}

#[tokio::test]
async fn bind_prepares_the_socket_and_replaces_only_a_stale_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run").join("trellis").join("trellisd.sock");
    let options = ListenOptions { group: None, ..ListenOptions::new(&path) };

    let listener = IpcListener::bind(&options).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let parent = std::fs::metadata(path.parent().unwrap()).unwrap();
    assert_eq!(parent.permissions().mode() & 0o777, 0o755);
    let me = std::fs::metadata("/proc/self").unwrap().uid();
    assert_eq!(listener.policy(), &auth::AccessPolicy { helper_uid: me, owner_uid: None, group_gid: None });

    // A live helper is not replaced.
    let error = IpcListener::bind(&options).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse);
    assert!(error.to_string().contains("already listening"), "{error}");
    drop(listener);
    assert!(!path.exists(), "dropping the listener removes its socket");

    // A socket nobody listens on is.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let listener = IpcListener::bind(&options).unwrap();
    assert!(UnixStream::connect(&path).await.is_ok());
    drop(listener);

    // Anything else is left alone.
    std::fs::write(&path, "not a socket").unwrap();
    let error = IpcListener::bind(&options).unwrap_err();
    assert!(error.to_string().contains("is not a socket"), "{error}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a socket");
}

const CHILD_SOCKET: &str = "TRELLIS_TEST_IPC_CHILD_SOCKET";

/// Not a test by itself: the client process that
/// `other_users_are_refused_unless_in_the_trellis_group` runs as another user. Exits 0 when
/// it got a status, 4 when refused, 1 otherwise.
#[tokio::test]
async fn client_child() {
    let Ok(path) = std::env::var(CHILD_SOCKET) else { return };
    let result = match IpcClient::connect(&path, "child").await {
        Ok(mut client) => client.request(IpcRequest::Status).await.map(|_| ()),
        Err(e) => Err(e),
    };
    let code = match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("CHILD ERROR: {e}");
            if matches!(e, ClientError::PermissionDenied { .. }) {
                4
            } else {
                1
            }
        }
    };
    std::process::exit(code);
}

#[tokio::test]
async fn other_users_are_refused_unless_in_the_trellis_group() {
    if !testing::can_switch_users() {
        return;
    }
    const NOBODY: u32 = 65534;
    const TRELLIS_GID: u32 = 4242;
    let server = TestServer::start(16, |listener| listener.policy_mut().group_gid = Some(TRELLIS_GID));
    // The kernel would stop these users at the socket's mode; open it so that the
    // helper's own check is what is tested.
    server.open_to_everyone();
    let exe = server.binary_for_others();
    let child = testing::test_name(module_path!(), "client_child");
    let env = [(CHILD_SOCKET, server.path.to_str().unwrap())];
    let run_as = |gid, groups| RunAs { uid: NOBODY, gid, groups, exe: exe.clone() };

    let outsider = run_child(&child, &env, Some(&run_as(NOBODY, vec![]))).await;
    let stderr = text(&outsider.stderr);
    assert_eq!(outsider.status.code(), Some(4), "stdout: {}\nstderr: {stderr}", text(&outsider.stdout));
    assert!(stderr
        .contains("you may not control Trellis: ask an administrator to add you to the `trellis` group"));
    assert!(server.control.seen().is_empty(), "a refused user's request never reaches the daemon");

    let member = run_child(&child, &env, Some(&run_as(NOBODY, vec![100, TRELLIS_GID]))).await;
    assert_eq!(member.status.code(), Some(0), "{}", text(&member.stderr));
    let primary = run_child(&child, &env, Some(&run_as(TRELLIS_GID, vec![]))).await;
    assert_eq!(primary.status.code(), Some(0), "{}", text(&primary.stderr));
    assert_eq!(server.control.seen(), vec![IpcRequest::Status, IpcRequest::Status]);
    server.stop().await;
}
