//! Two real helpers in two namespaces joined by one veth (no NAT) and the real signal
//! server: create, invite, `trellis join`, then ping across the tunnel.

use trellis_e2e::{binaries, privileged_or_explain, unique, veth, wait_for, Netns, Process};

#[test]
fn two_helpers_join_by_invite_and_ping_through_the_tunnel() {
    if !privileged_or_explain("the helper smoke test") {
        return;
    }
    let bins = binaries();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let a = Netns::new(unique("a"));
    let b = Netns::new(unique("b"));
    veth(&a, "198.51.100.1/24", &b, "198.51.100.2/24");

    let server_dir = dir.join("server");
    let mut server = Process::spawn(
        &a,
        "trellis-signal",
        &bins.join("trellis-signal"),
        &[
            "--listen",
            "0.0.0.0:8443",
            "--relay-listen",
            "198.51.100.1:3478",
            "--data-dir",
            server_dir.to_str().unwrap(),
        ],
        dir,
    );
    let helper = |ns: &Netns, name: &str| {
        let state = dir.join(format!("{name}-state"));
        let socket = dir.join(format!("{name}.sock"));
        let process = Process::spawn(
            ns,
            name,
            &bins.join("trellisd"),
            &[
                "--state-dir",
                state.to_str().unwrap(),
                "--socket",
                socket.to_str().unwrap(),
                "--tun",
                "trellis0",
                "--name",
                name,
            ],
            dir,
        );
        (process, socket)
    };
    let (mut alice, alice_sock) = helper(&a, "alice");
    let (mut bob, bob_sock) = helper(&b, "bob");
    wait_for("both IPC sockets", || (alice_sock.exists() && bob_sock.exists()).then_some(()));
    server.assert_alive();

    let trellis = |ns: &Netns, socket: &std::path::Path, args: &[&str]| {
        let out = ns
            .command(bins.join("trellis").to_str().unwrap())
            .args(["--socket", socket.to_str().unwrap(), "--json"])
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        (out.status.code(), stdout, stderr)
    };

    let (code, out, err) =
        trellis(&a, &alice_sock, &["create", "home", "--server", "ws://198.51.100.1:8443"]);
    assert_eq!(code, Some(0), "create: {out}{err}");
    let (code, out, err) = trellis(&a, &alice_sock, &["invite"]);
    assert_eq!(code, Some(0), "invite: {out}{err}");
    let invite: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{out}: {e}"));
    let ticket = invite["ticket"].as_str().unwrap_or_else(|| panic!("no ticket in {invite}")).to_string();
    assert!(ticket.contains("@ws://198.51.100.1:8443"), "the ticket names the server: {ticket}");

    let (code, out, err) = trellis(&b, &bob_sock, &["join", &ticket]);
    assert_eq!(code, Some(0), "join: {out}{err}");

    let (_, out, _) = trellis(&a, &alice_sock, &["status"]);
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    let alice_ip = status["status"]["network"]["my_ip"]
        .as_str()
        .unwrap_or_else(|| panic!("no address in {status}"))
        .to_string();

    // The kernel's ping, through bob's TUN, the tunnel and alice's TUN.
    wait_for("a ping reply through the tunnel", || {
        alice.assert_alive();
        bob.assert_alive();
        b.exec(&["ping", "-c", "1", "-W", "1", &alice_ip]).status.success().then_some(())
    });
    let (code, out, err) = trellis(&b, &bob_sock, &["ping", "alice"]);
    assert_eq!(code, Some(0), "trellis ping: {out}{err}");
    let pong: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(pong["path"], "direct", "{pong}");

    let (_, out, _) = trellis(&b, &bob_sock, &["peers"]);
    let peers: serde_json::Value = serde_json::from_str(&out).unwrap();
    let alice_peer = &peers["peers"][0];
    assert_eq!(alice_peer["name"], "alice", "{peers}");
    assert_eq!(alice_peer["state"]["state"], "connected", "{peers}");
    assert!(alice_peer["rx_bytes"].as_u64().unwrap() > 0, "{peers}");
}
