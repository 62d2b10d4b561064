//! The CLI: its parsing, its output, and whole runs of `trellis` as a child process
//! (this test binary, re-run into [`cli_child`], which calls the same entry point as the
//! `trellis` binary) against a missing socket and a served fake helper.

use clap::CommandFactory;
use trellis_protocol::ipc::{IpcError, IpcErrorCode, IpcRequest, IpcResponse, PeerState, TunnelState};
use trellis_protocol::signal::ErrorCode;
use trellis_protocol::InviteTicket;

use super::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use trellis_protocol::ipc::IpcEvent;

use crate::ipc::testing::{self, run_child, spawn_child, text, RunAs, TestServer};

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("trellis").chain(args.iter().copied()))
}

#[test]
fn help_documents_the_exit_codes() {
    let help = Cli::command().render_long_help().to_string();
    for line in [
        "0  done",
        "1  the helper or the signal server refused",
        "2  invalid usage",
        "3  the helper is not running",
        "4  permission denied",
        "5  the helper is another version",
    ] {
        assert!(help.contains(line), "help lacks {line:?}:\n{help}");
    }
}

#[test]
fn commands_become_requests() {
    let cli = parse(&["--socket", "/tmp/x.sock", "create", "Home Net", "--server", "ws://203.0.113.1:9000"])
        .unwrap();
    assert_eq!(cli.socket, PathBuf::from("/tmp/x.sock"));
    assert_eq!(
        cli.command.request(),
        Some(IpcRequest::CreateNetwork {
            name: "Home Net".parse().unwrap(),
            server: Some("ws://203.0.113.1:9000".parse().unwrap()),
            range: None,
        })
    );
    let cli = parse(&["invite", "--uses", "3", "--expires", "7d", "--json"]).unwrap();
    assert!(cli.json);
    assert_eq!(
        cli.command.request(),
        Some(IpcRequest::CreateInvite { max_uses: Some(3), expires_in_secs: Some(604_800) })
    );
    let cli = parse(&["join", "trellis://join/k7qf-3m9t-wx2c-hn4r@vpn.example.org:7000"]).unwrap();
    let ticket: InviteTicket = "K7QF-3M9T-WX2C-HN4R@vpn.example.org:7000".parse().unwrap();
    assert_eq!(cli.command.request(), Some(IpcRequest::Join { ticket }));
    assert_eq!(
        parse(&["server", "vpn.example.org"]).unwrap().command.request(),
        Some(IpcRequest::SetServer { server: "vpn.example.org:8443".parse().unwrap() })
    );
    assert_eq!(parse(&["watch"]).unwrap().command.request(), None);
    assert_eq!(parse(&["status"]).unwrap().socket, PathBuf::from(DEFAULT_ENDPOINT));
}

#[test]
fn invalid_input_is_a_usage_error_with_the_parsers_own_words() {
    let invite_error = "K7QF-3M9T".parse::<InviteTicket>().unwrap_err().to_string();
    let error = parse(&["join", "K7QF-3M9T"]).unwrap_err();
    assert!(error.use_stderr());
    assert_eq!(error.exit_code(), Exit::Usage as i32);
    assert!(error.to_string().contains(&invite_error), "{error}");

    for args in [
        &["create", "home", "--range", "100.64.0.1/10"][..],
        &["rename", "my laptop"],
        &["server", "ftp://host"],
        &["invite", "--uses", "0"],
        &["invite", "--expires", "30"],
        &["revoke", "K7QFX"],
        &["ping", ""],
        &["frobnicate"],
    ] {
        let error = parse(args).unwrap_err();
        assert_eq!(error.exit_code(), Exit::Usage as i32, "{args:?}: {error}");
    }
    let error = parse(&["rename", "my laptop"]).unwrap_err().to_string();
    assert!(error.contains("contains ' '; use letters, digits and '-'"), "{error}");
}

#[test]
fn exit_codes_follow_the_kind_of_failure() {
    let refused = |code| ClientError::Refused(IpcError::new(code, "no"));
    let cases = [
        (ClientError::NotRunning { endpoint: "/x".into(), stale: false }, Exit::Unreachable),
        (ClientError::NotRunning { endpoint: "/x".into(), stale: true }, Exit::Unreachable),
        (ClientError::Unresponsive { endpoint: "/x".into() }, Exit::Unreachable),
        (ClientError::Disconnected, Exit::Unreachable),
        (
            ClientError::PermissionDenied { endpoint: "/x".into(), detail: "no".into() },
            Exit::PermissionDenied,
        ),
        (
            ClientError::VersionMismatch { helper_ipc: 2, client_ipc: 1, helper_version: "2.0".into() },
            Exit::VersionMismatch,
        ),
        (ClientError::Protocol("?".into()), Exit::Failed),
        (refused(IpcErrorCode::NoNetwork), Exit::Failed),
        (refused(IpcErrorCode::Server(ErrorCode::InviteExpired)), Exit::Failed),
        (refused(IpcErrorCode::InvalidArgument), Exit::Usage),
        (refused(IpcErrorCode::PermissionDenied), Exit::PermissionDenied),
        (refused(IpcErrorCode::VersionMismatch), Exit::VersionMismatch),
    ];
    for (error, exit) in cases {
        assert_eq!(Exit::for_error(&error), exit, "{error:?}");
    }
    assert_eq!(
        [
            Exit::Ok,
            Exit::Failed,
            Exit::Usage,
            Exit::Unreachable,
            Exit::PermissionDenied,
            Exit::VersionMismatch
        ]
        .map(|e| e as u8),
        [0, 1, 2, 3, 4, 5]
    );
}

#[test]
fn status_reads_as_labelled_lines() {
    let shown = render::status(&testing::status());
    let expected = "\
Device:       alice
Fingerprint:  FP
Tunnel:       up
Network:      home (you own it)
Address:      100.64.0.1 in 100.64.0.0/10
Peers:        1 of 2 connected
Server:       vpn.example.org:8443 (connected)
Helper:       trellisd 0.1.0"
        .replace("FP", &testing::key(1).fingerprint());
    assert_eq!(shown, expected);

    let mut alone = testing::status();
    alone.network = None;
    alone.server = None;
    alone.server_connected = false;
    alone.wants_up = false;
    alone.state = TunnelState::Down;
    alone.notice = Some("the owner removed this device from \"home\"".into());
    let shown = render::status(&alone);
    for line in [
        "Tunnel:       down (turned off: `trellis up` connects)",
        "Network:      none (`trellis create NAME` starts one, `trellis join CODE` joins one)",
        "Server:       none (`trellis server HOST[:PORT]` sets one)",
        "Notice:       the owner removed this device from \"home\"",
    ] {
        assert!(shown.lines().any(|l| l == line), "{line:?} missing in:\n{shown}");
    }
}

#[test]
fn peers_read_as_a_table() {
    let shown = render::peers(&testing::peers());
    let expected = "\
NAME                  ADDRESS      STATE      PATH                 HANDSHAKE  RX       TX    RTT
bob                   100.64.0.2   connected  relayed relay→srflx  3s ago     1.5 KiB  20 B  1.5 ms
carol-laptop (owner)  100.64.0.13  offline    -                    never      0 B      0 B   -";
    assert_eq!(shown, expected);

    let mut failed = testing::peers().remove(0);
    failed.state = PeerState::Failed { reason: "no path".into() };
    assert!(render::peers(&[failed]).contains("failed: no path"));
    assert!(render::peers(&[]).starts_with("No peers yet"));
}

#[test]
fn json_output_is_the_response_itself() {
    for response in [
        IpcResponse::Status { status: testing::status() },
        IpcResponse::Peers { peers: testing::peers() },
        IpcResponse::Invite { ticket: testing::ticket(), invite: testing::invite() },
    ] {
        let shown = json(&response);
        assert_eq!(serde_json::from_str::<IpcResponse>(&shown).unwrap(), response);
    }
    let error = json_error(&ClientError::Refused(IpcError::new(
        IpcErrorCode::Server(ErrorCode::InviteUsedUp),
        "used",
    )));
    let value: serde_json::Value = serde_json::from_str(&error).unwrap();
    assert_eq!(value["error"]["code"], serde_json::json!({ "server": "invite_used_up" }));
    assert_eq!(value["error"]["message"], "used");
    let value: serde_json::Value =
        serde_json::from_str(&json_error(&ClientError::NotRunning { endpoint: "/x".into(), stale: false }))
            .unwrap();
    assert_eq!(value["error"]["code"], "helper_not_running");
}

#[test]
fn other_answers_read_as_sentences() {
    let now = testing::invite().expires_at - 86_400;
    let shown = render::response(
        &IpcResponse::Invite { ticket: testing::ticket(), invite: testing::invite() },
        "",
        now,
    );
    assert!(shown.contains("Invite code:  K7QF-3M9T-WX2C-HN4R@vpn.example.org"), "{shown}");
    assert!(shown.contains("Link:         trellis://join/K7QF-3M9T-WX2C-HN4R@vpn.example.org"), "{shown}");
    assert!(shown.contains("1 use, until 2023-11-15 22:13 UTC (in 1d)"), "{shown}");
    let shown = render::invites(&[testing::invite()], now);
    assert_eq!(shown, "ID    USED    EXPIRES\nK7QF  0 of 1  2023-11-15 22:13 UTC (in 1d)");
    let pong = testing::answer_for(&IpcRequest::Ping { peer: "bob".into() }).unwrap();
    assert_eq!(render::response(&pong, "", 0), "pong from bob (100.64.0.2): 1.5 ms, direct path");
    let done = parse(&["rename", "Desk"]).unwrap().command.done_message();
    assert_eq!(render::response(&IpcResponse::Done, &done, 0), "This device is now called desk.");
}

const CHILD_ARGS: &str = "TRELLIS_TEST_CLI_ARGS";

/// Not a test by itself: runs `trellis` with the arguments in `TRELLIS_TEST_CLI_ARGS` (a
/// JSON list) and exits with its code, for the tests below.
#[test]
fn cli_child() {
    let Ok(args) = std::env::var(CHILD_ARGS) else { return };
    let args: Vec<String> = serde_json::from_str(&args).unwrap();
    let exit = run_with_args(std::iter::once("trellis".to_string()).chain(args));
    std::process::exit(exit as i32);
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn trellis(args: &[&str], run_as: Option<&RunAs>) -> Run {
    let args = serde_json::to_string(args).unwrap();
    let output =
        run_child(&testing::test_name(module_path!(), "cli_child"), &[(CHILD_ARGS, &args)], run_as).await;
    Run { code: output.status.code(), stdout: text(&output.stdout), stderr: text(&output.stderr) }
}

/// The first JSON value in the child's stdout (the test harness prints its own lines too).
fn first_json(stdout: &str) -> serde_json::Value {
    let start = stdout.find('{').unwrap_or_else(|| panic!("no JSON in {stdout:?}"));
    serde_json::Deserializer::from_str(&stdout[start..]).into_iter().next().unwrap().unwrap()
}

#[tokio::test]
async fn without_a_helper_trellis_says_so_and_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("trellisd.sock");
    let run = trellis(&["--socket", socket.to_str().unwrap(), "status"], None).await;
    assert_eq!(run.code, Some(3), "{}", run.stderr);
    let sentence = format!(
        "trellis: the Trellis helper is not running (no socket at {}): start it with `sudo systemctl start trellisd`",
        socket.display()
    );
    assert!(run.stderr.contains(&sentence), "{}", run.stderr);

    // A socket file left behind by a helper that died.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let run = trellis(&["--socket", socket.to_str().unwrap(), "--json", "peers"], None).await;
    assert_eq!(run.code, Some(3), "{}", run.stderr);
    assert!(run.stderr.contains("not running (nothing listens on"), "{}", run.stderr);
    assert_eq!(first_json(&run.stdout)["error"]["code"], "helper_not_running");
}

#[tokio::test]
async fn trellis_talks_to_a_helper() {
    let server = TestServer::start(16, |_| {});
    let socket = server.path.to_str().unwrap().to_string();

    let run = trellis(&["--socket", &socket, "status"], None).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.contains(&render::status(&testing::status())), "{}", run.stdout);

    let run = trellis(&["--socket", &socket, "--json", "peers"], None).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let peers: IpcResponse = serde_json::from_value(first_json(&run.stdout)).unwrap();
    assert_eq!(peers, IpcResponse::Peers { peers: testing::peers() });

    let run = trellis(&["--socket", &socket, "ping", "nobody"], None).await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("trellis: no peer is called \"nobody\""), "{}", run.stderr);

    let run = trellis(&["--socket", &socket, "join", "K7QF-3M9T-WX2C-HN4U"], None).await;
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("'U' (character 19) cannot be in an invite code"), "{}", run.stderr);

    assert_eq!(
        server.control.seen(),
        vec![IpcRequest::Status, IpcRequest::Peers, IpcRequest::Ping { peer: "nobody".into() }]
    );
    server.stop().await;
}

/// The next event `trellis --json watch` printed (skipping the test harness's lines).
async fn next_printed_event(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) -> IpcEvent {
    loop {
        let line = lines.next_line().await.unwrap().expect("trellis watch stopped printing");
        if let Some(start) = line.find('{') {
            return serde_json::from_str(&line[start..]).unwrap_or_else(|e| panic!("{line}: {e}"));
        }
    }
}

#[tokio::test]
async fn watch_prints_the_status_then_each_event_until_the_helper_stops() {
    let server = TestServer::start(16, |_| {});
    let args =
        serde_json::to_string(&["--socket", server.path.to_str().unwrap(), "--json", "watch"]).unwrap();
    let mut child =
        spawn_child(&testing::test_name(module_path!(), "cli_child"), &[(CHILD_ARGS, &args)], None);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

    // The status comes after subscribing, so once it is printed no event can be missed.
    assert_eq!(next_printed_event(&mut lines).await, IpcEvent::Status { status: testing::status() });
    let joined = IpcEvent::PeerJoined { peer: testing::peers().remove(1) };
    server.events.send(joined.clone()).unwrap();
    assert_eq!(next_printed_event(&mut lines).await, joined);

    server.stop().await;
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).await.unwrap();
    assert_eq!(child.wait().await.unwrap().code(), Some(3), "{stderr}");
    assert!(stderr.contains("the Trellis helper closed the connection"), "{stderr}");
}

#[test]
fn events_read_as_one_line_each() {
    let mut status = testing::status();
    status.state = TunnelState::NeedsAttention { reason: "the server is unreachable".into() };
    status.server_connected = false;
    assert_eq!(
        render::event(&IpcEvent::Status { status }),
        "status: tunnel needs attention: the server is unreachable; network home, 1 of 2 peers connected; \
         server not connected"
    );
    let bob = testing::peers().remove(0);
    assert_eq!(render::event(&IpcEvent::PeerJoined { peer: bob.clone() }), "bob (100.64.0.2) joined");
    assert_eq!(
        render::event(&IpcEvent::PeerChanged { peer: bob.clone() }),
        "bob (100.64.0.2): connected, relayed relay→srflx"
    );
    assert_eq!(render::event(&IpcEvent::PeerLeft { name: bob.name, key: bob.key }), "bob left");
}

#[tokio::test]
async fn trellis_as_an_outsider_is_denied_with_exit_4() {
    if !testing::can_switch_users() {
        return;
    }
    let server = TestServer::start(16, |_| {});
    server.open_to_everyone();
    let outsider = RunAs { uid: 65534, gid: 65534, groups: vec![], exe: server.binary_for_others() };
    let run = trellis(&["--socket", server.path.to_str().unwrap(), "status"], Some(&outsider)).await;
    assert_eq!(run.code, Some(4), "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "trellis: permission denied on {}: you may not control Trellis",
            server.path.display()
        )),
        "{}",
        run.stderr
    );
    assert!(server.control.seen().is_empty());

    // Where the socket's own mode keeps the user out, the kernel refuses: same message.
    std::fs::set_permissions(&server.path, std::os::unix::fs::PermissionsExt::from_mode(0o660)).unwrap();
    let run = trellis(&["--socket", server.path.to_str().unwrap(), "status"], Some(&outsider)).await;
    assert_eq!(run.code, Some(4), "{}", run.stderr);
    assert!(run.stderr.contains("ask an administrator to add you to the `trellis` group"), "{}", run.stderr);
    server.stop().await;
}
