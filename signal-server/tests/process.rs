//! The real `trellis-signal` binary: kill -9 and restart lose nothing acknowledged,
//! SIGTERM shuts down politely, TLS works with a certificate and key.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use common::{Device, DEADLINE};
use trellis_protocol::keys::generate_secret;
use trellis_protocol::signal::{ErrorCode, Request, Response};
use trellis_protocol::PublicKey;

/// A `trellis-signal` process on loopback; killed with SIGKILL when dropped.
struct ServerProcess {
    child: Child,
    api: String,
    logs: mpsc::Receiver<String>,
}

impl ServerProcess {
    fn spawn(data_dir: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_trellis-signal"))
            .args(["--listen", "127.0.0.1:0", "--relay-listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("TRELLIS_SIGNAL_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("trellis-signal starts");
        let (tx, logs) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut process = Self { child, api: String::new(), logs };
        let up = process.log_line("trellis-signal is up");
        let start = up.find("api=").expect("the log names the API address") + 4;
        process.api = up[start..].split_whitespace().next().unwrap().to_string();
        process
    }

    /// Waits for a log line containing `needle`.
    fn log_line(&mut self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.logs.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(e) => panic!("no log line with {needle:?} ({e}); exit: {:?}", self.child.try_wait()),
            }
        }
    }

    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn server_key_of(url: &str) -> PublicKey {
    let (_, key, _) = common::open(url).await;
    key
}

#[tokio::test]
async fn kill_9_and_restart_keep_networks_members_and_invites() {
    let dir = tempfile::tempdir().unwrap();
    let first = ServerProcess::spawn(dir.path(), &[]);
    let server_key = server_key_of(&first.api).await;
    let mut alice = Device::connect(&first.api, generate_secret()).await;
    let mut bob = Device::connect(&first.api, generate_secret()).await;
    let home = alice.create_network("home").await;
    let net = home.network.id;
    let used = alice.invite(net).await;
    let bob_joined = bob.join(&used, "bob").await.unwrap();
    let spare = alice.invite_with(net, Some(3), None).await;
    let (alice_secret, bob_secret) = (alice.secret.clone(), bob.secret.clone());
    drop((alice, bob));
    first.kill9();

    let second = ServerProcess::spawn(dir.path(), &[]);
    assert_eq!(server_key_of(&second.api).await, server_key, "the server keeps its key");
    let mut alice = Device::connect(&second.api, alice_secret).await;
    let bob = Device::connect(&second.api, bob_secret).await;
    assert_eq!(alice.welcome.memberships.len(), 1);
    let membership = &alice.welcome.memberships[0];
    assert_eq!(membership.network, home.network);
    assert_eq!(membership.me.ip, home.me.ip);
    assert_eq!(membership.members.len(), 2);
    assert_eq!(bob.welcome.memberships[0].me.ip, bob_joined.me.ip);

    let Ok(Response::Invites { invites }) = alice.request(Request::ListInvites { network: net }).await else {
        panic!("list invites")
    };
    assert_eq!(invites.len(), 1, "the used invite is gone, the spare one stays: {invites:?}");
    assert_eq!(invites[0].id, spare.locator());
    let mut carol = Device::connect(&second.api, generate_secret()).await;
    assert_eq!(common::code_of(carol.join(&used, "carol").await), ErrorCode::InviteUsedUp);
    let carol_joined = carol.join(&spare, "carol").await.unwrap();
    assert!(![home.me.ip, bob_joined.me.ip].contains(&carol_joined.me.ip));
    // And a new invite works after the restart.
    let fresh = alice.invite(net).await;
    let mut dave = Device::connect(&second.api, generate_secret()).await;
    assert!(dave.join(&fresh, "dave").await.is_ok());
}

/// Tests that need Unix tools (`kill`, `openssl`); the rest of this file also runs on
/// Windows, under wine (`cargo xtask cross`).
#[cfg(unix)]
mod unix_only {
    use std::sync::Arc;
    use std::time::Duration;

    use trellis_protocol::keys::auth_proof;
    use trellis_protocol::signal::{ClientMessage, ServerMessage};
    use trellis_protocol::PROTOCOL_VERSION;

    use super::common::{read, send};
    use super::*;

    // SIGTERM through `kill`. Windows stops the server as a console program (Ctrl-C) or a
    // service, neither of which wine lets a test send.
    #[tokio::test]
    async fn sigterm_closes_sessions_and_exits_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let mut process = ServerProcess::spawn(dir.path(), &[]);
        let mut device = Device::connect(&process.api, generate_secret()).await;
        let status = Command::new("kill").args(["-TERM", &process.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        let error = device.closed_with().await.expect("the server says why it closes");
        assert!(error.message.contains("shutting down"), "{}", error.message);
        process.log_line("trellis-signal stopped");
        let deadline = std::time::Instant::now() + DEADLINE;
        let exit = loop {
            if let Some(exit) = process.child.try_wait().unwrap() {
                break exit;
            }
            assert!(std::time::Instant::now() < deadline, "the server did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20)); // polling the exit status, not synchronizing
        };
        assert!(exit.success(), "{exit:?}");
    }

    // The certificate comes from the `openssl` command, which has no Windows build here. The
    // TLS code itself has no platform part.
    #[tokio::test]
    async fn tls_serves_wss_with_the_given_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let made = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
            .args([
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost",
                "-addext",
                "basicConstraints=critical,CA:FALSE",
                "-days",
                "1",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(Stdio::null())
            .status()
            .expect("openssl runs (the test packages install it)");
        assert!(made.success());
        let data = dir.path().join("data");
        let process = ServerProcess::spawn(
            &data,
            &["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()],
        );
        assert!(process.api.starts_with("wss://"), "{}", process.api);
        let port: u16 = process.api.rsplit(':').next().unwrap().split('/').next().unwrap().parse().unwrap();

        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut std::fs::read(&cert).unwrap().as_slice()) {
            roots.add(c.unwrap()).unwrap();
        }
        let config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .expect("TLS handshake with the server's certificate");
        let url = format!("wss://localhost:{port}/v1/signal");
        let (ws, _) = tokio_tungstenite::client_async(url, tls).await.expect("WebSocket over TLS");
        let mut ws = ws;
        let Some(ServerMessage::Challenge { server_key, challenge, .. }) = read(&mut ws).await else {
            panic!("expected a challenge")
        };
        let secret = generate_secret();
        let device_key = PublicKey::of(&secret);
        let proof = auth_proof(&secret, &server_key, &challenge, &device_key, &server_key).unwrap();
        send(&mut ws, &ClientMessage::Authenticate { version: PROTOCOL_VERSION, device_key, proof }).await;
        assert!(matches!(read(&mut ws).await, Some(ServerMessage::Welcome(_))));

        // Plain WebSocket to a TLS port fails instead of talking in the clear.
        let plain = format!("ws://127.0.0.1:{port}/v1/signal");
        assert!(tokio_tungstenite::connect_async(plain).await.is_err());
    }
}
