//! Two (or three) friends behind NATs, as a user meets Trellis: real `trellis-signal`,
//! `trellisd` and `trellis` binaries in namespaces (see `trellis_e2e::topology`). Every
//! scenario asserts the path from `trellis peers --json` and real traffic: a ping and a
//! 20 MB transfer whose SHA-256 matches on the far side.

use std::time::{Duration, Instant};

use trellis_e2e::privileged_or_explain;
use trellis_e2e::scenario::{
    create_network, invite, join, overlay_ip, peer_view, ping_fails, wait_for_path, wait_for_ping, Transfer,
    TRANSFER_BYTES,
};
use trellis_e2e::topology::{Nat, World};
use trellis_e2e::wait_for_within;

const CONNECT: Duration = Duration::from_secs(30);

/// A server and two homes, alice owning the network and bob joined; returns the world,
/// alice's and bob's overlay addresses and the join → first ping time.
fn pair(tag: &str, alice_nat: Nat, bob_nat: Nat) -> (World, String, String, Duration) {
    let mut world = World::new(tag);
    world.start_server();
    let alice = world.add_home("alice", alice_nat);
    let bob = world.add_home("bob", bob_nat);
    world.start_helper(alice);
    world.start_helper(bob);
    let ticket = create_network(&world, alice);
    let joined_at = Instant::now();
    join(&world, bob, &ticket);
    let alice_ip = overlay_ip(&world, alice);
    let bob_ip = overlay_ip(&world, bob);
    wait_for_ping(&world, bob, &alice_ip, CONNECT);
    let first_ping = joined_at.elapsed();
    (world, alice_ip, bob_ip, first_ping)
}

fn transfer(world: &World, from: usize, to: usize, to_ip: &str) {
    let bytes = Transfer::start(world, from, to, to_ip, TRANSFER_BYTES).finish();
    assert_eq!(bytes, TRANSFER_BYTES);
}

#[test]
fn easy_nats_connect_directly() {
    if !privileged_or_explain("easy ↔ easy NAT") {
        return;
    }
    let (world, alice_ip, bob_ip, first_ping) = pair("s1", Nat::Easy, Nat::Easy);
    println!("easy ↔ easy: join → first ping {} ms", first_ping.as_millis());
    wait_for_path(&world, 1, "alice", "direct", CONNECT);
    wait_for_path(&world, 0, "bob", "direct", CONNECT);
    transfer(&world, 1, 0, &alice_ip);
    transfer(&world, 0, 1, &bob_ip);
}

/// A machine with a public address (a server at home or in a cloud) and a friend behind
/// an easy NAT: the friend reaches the public host candidate directly, no relay.
#[test]
fn a_public_device_and_one_behind_a_nat_connect_directly() {
    if !privileged_or_explain("public ↔ easy NAT") {
        return;
    }
    let (world, alice_ip, _, _) = pair("sa", Nat::Public, Nat::Easy);
    wait_for_path(&world, 1, "alice", "direct", CONNECT);
    wait_for_path(&world, 0, "bob", "direct", CONNECT);
    let seen = peer_view(&world, 1, "alice").unwrap();
    let remote = seen["path"]["remote_addr"].as_str().unwrap_or_default();
    assert!(
        remote.starts_with(&format!("{}:", world.homes[0].wan_ip)),
        "bob talks to alice's own address: {seen}"
    );
    transfer(&world, 1, 0, &alice_ip);
}

#[test]
fn symmetric_nats_are_relayed() {
    if !privileged_or_explain("symmetric ↔ symmetric NAT") {
        return;
    }
    let (world, alice_ip, _, first_ping) = pair("s2", Nat::Symmetric, Nat::Symmetric);
    println!("symmetric ↔ symmetric: join → first ping {} ms", first_ping.as_millis());
    wait_for_path(&world, 1, "alice", "relayed", CONNECT);
    transfer(&world, 1, 0, &alice_ip);
}

#[test]
fn udp_only_to_the_server_is_relayed() {
    if !privileged_or_explain("UDP only to the server") {
        return;
    }
    let (world, alice_ip, _, _) = pair("s3", Nat::Easy, Nat::UdpOnlyToServer);
    wait_for_path(&world, 1, "alice", "relayed", CONNECT);
    wait_for_path(&world, 0, "bob", "relayed", CONNECT);
    transfer(&world, 1, 0, &alice_ip);
}

#[test]
fn three_devices_form_a_full_mesh() {
    if !privileged_or_explain("three devices") {
        return;
    }
    let mut world = World::new("s4");
    world.start_server();
    let homes: Vec<usize> = [("alice", Nat::Easy), ("bob", Nat::Easy), ("carol", Nat::Symmetric)]
        .map(|(n, k)| world.add_home(n, k))
        .into();
    for &h in &homes {
        world.start_helper(h);
    }
    create_network(&world, homes[0]);
    let ticket = invite(&world, homes[0], &["--uses", "2"]);
    join(&world, homes[1], &ticket);
    join(&world, homes[2], &ticket);
    let ips: Vec<String> = homes.iter().map(|&h| overlay_ip(&world, h)).collect();
    for &from in &homes {
        for &to in &homes {
            if from != to {
                wait_for_ping(&world, from, &ips[to], CONNECT);
            }
        }
    }
    transfer(&world, homes[2], homes[1], &ips[1]);
}

#[test]
fn a_cut_direct_path_falls_back_to_the_relay_and_comes_back() {
    if !privileged_or_explain("direct path cut") {
        return;
    }
    let (world, alice_ip, _, _) = pair("s5", Nat::Easy, Nat::Easy);
    wait_for_path(&world, 1, "alice", "direct", CONNECT);
    let running = Transfer::start(&world, 1, 0, &alice_ip, 5 * TRANSFER_BYTES);
    world.cut_direct(0, 1, true);
    let fell_back = wait_for_path(&world, 1, "alice", "relayed", Duration::from_secs(60));
    println!("direct path cut: relayed after {} ms", fell_back.as_millis());
    assert_eq!(running.finish(), 5 * TRANSFER_BYTES, "the transfer completes over the relay");
    world.cut_direct(0, 1, false);
    let upgraded = wait_for_path(&world, 1, "alice", "direct", Duration::from_secs(30));
    println!("direct path restored: direct again after {} ms", upgraded.as_millis());
    transfer(&world, 1, 0, &alice_ip);
}

#[test]
fn tunnels_outlive_the_server_and_reconnect_after_a_kill_9_restart() {
    if !privileged_or_explain("signal server stopped") {
        return;
    }
    let (mut world, alice_ip, _, _) = pair("s6", Nat::Easy, Nat::Easy);
    let spare = invite(&world, 0, &["--uses", "3"]);
    world.kill_server();
    // Tunnels keep carrying traffic without the server.
    wait_for_ping(&world, 1, &alice_ip, CONNECT);
    transfer(&world, 1, 0, &alice_ip);

    world.start_server();
    for home in [0, 1] {
        wait_for_within("the helper to reconnect to the server", CONNECT, || {
            let status = world.trellis(home, &["status"]).json();
            (status["status"]["server_connected"] == true).then_some(())
        });
    }
    let invites = world.trellis(0, &["invites"]).json();
    let listed = invites["invites"].as_array().unwrap();
    assert!(listed.iter().any(|i| spare.starts_with(i["id"].as_str().unwrap())), "{invites}");
    let peers = world.trellis(0, &["peers"]).json();
    assert_eq!(peers["peers"].as_array().unwrap().len(), 1, "members intact: {peers}");

    let carol = world.add_home("carol", Nat::Easy);
    world.start_helper(carol);
    join(&world, carol, &spare);
    wait_for_ping(&world, carol, &alice_ip, CONNECT);
}

#[test]
fn a_restarted_helper_keeps_its_key_and_address() {
    if !privileged_or_explain("helper restarted") {
        return;
    }
    let (mut world, alice_ip, bob_ip, _) = pair("s7", Nat::Easy, Nat::Easy);
    let before = world.trellis(1, &["status"]).json();
    world.stop_helper(1);
    world.start_helper(1);
    let restarted = Instant::now();
    wait_for_ping(&world, 1, &alice_ip, Duration::from_secs(10));
    println!("helper restarted: tunnel back after {} ms", restarted.elapsed().as_millis());
    let after = world.trellis(1, &["status"]).json();
    assert_eq!(after["status"]["public_key"], before["status"]["public_key"]);
    assert_eq!(overlay_ip(&world, 1), bob_ip);
}

#[test]
fn a_removed_device_is_cut_off_and_told_why() {
    if !privileged_or_explain("owner removes a device") {
        return;
    }
    let (mut world, alice_ip, bob_ip, _) = pair("s8", Nat::Easy, Nat::Easy);
    let carol = world.add_home("carol", Nat::Easy);
    world.start_helper(carol);
    let ticket = invite(&world, 0, &[]);
    join(&world, carol, &ticket);
    wait_for_ping(&world, carol, &bob_ip, CONNECT);

    let removed = world.trellis(0, &["remove", "bob"]);
    assert!(removed.ok(), "{removed:?}");
    let start = Instant::now();
    wait_for_within("the others to stop reaching bob", Duration::from_secs(10), || {
        (ping_fails(&world, 0, &bob_ip) && ping_fails(&world, carol, &bob_ip)).then_some(())
    });
    println!("removed device unreachable after {} ms", start.elapsed().as_millis());
    let status = world.trellis(1, &["status"]).json();
    let notice = status["status"]["notice"].as_str().unwrap_or_default().to_string();
    assert!(notice.contains("removed"), "bob's status says why: {status}");
    assert!(ping_fails(&world, 1, &alice_ip));
    assert!(peer_view(&world, 0, "bob").is_none());
}

#[test]
fn bad_invite_codes_get_clear_errors_and_change_nothing() {
    if !privileged_or_explain("bad input at the edges") {
        return;
    }
    let mut world = World::new("s9");
    world.start_server();
    let alice = world.add_home("alice", Nat::Easy);
    let bob = world.add_home("bob", Nat::Easy);
    let carol = world.add_home("carol", Nat::Easy);
    for h in [alice, bob, carol] {
        world.start_helper(h);
    }
    let used = create_network(&world, alice);
    let expiring = invite(&world, alice, &["--expires", "1m"]);
    let created = Instant::now();
    join(&world, bob, &used);
    let server = world.server_url();

    let cases: Vec<(String, &str)> = vec![
        (format!("ZZZZ-ZZZZ-ZZZZ-ZZZZ@{server}"), "no invite matches"),
        (used.clone(), "already used"),
        ("NOT-A-CODE".to_string(), "invite"),
    ];
    for (code, expected) in &cases {
        let out = world.trellis(carol, &["join", code]);
        assert!(!out.ok(), "{code} must fail");
        let text = format!("{}{}", out.stdout, out.stderr).to_lowercase();
        assert!(text.contains(expected), "{code}: expected {expected:?} in {text}");
    }
    // The invite expires on the server's real clock (a minute is the shortest life).
    wait_for_within("the short invite to expire", Duration::from_secs(90), || {
        let invites = world.trellis(alice, &["invites"]).json();
        let open = invites["invites"].as_array().cloned().unwrap_or_default();
        (!open.iter().any(|i| expiring.starts_with(i["id"].as_str().unwrap_or("-")))).then_some(())
    });
    assert!(created.elapsed() >= Duration::from_secs(59), "it lived its minute");
    let out = world.trellis(carol, &["join", &expiring]);
    assert!(!out.ok());
    assert!(format!("{}{}", out.stdout, out.stderr).contains("expired"), "{out:?}");

    let status = world.trellis(carol, &["status"]).json();
    assert!(status["status"]["network"].is_null(), "carol is in no network: {status}");
    let peers = world.trellis(alice, &["peers"]).json();
    assert_eq!(peers["peers"].as_array().unwrap().len(), 1, "only bob joined: {peers}");
}
