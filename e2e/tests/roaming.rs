//! Devices that do not sit still (issue 17): turned off and on, given a new address,
//! started before their address, behind a NAT that gets a new public address and forgets
//! its mappings, and stopped for minutes like a laptop asleep. Real binaries in
//! namespaces (see `trellis_e2e::topology`); each scenario prints what it measured
//! ("… after N ms") and asserts the floor where it sets one.
//!
//! The scenarios run in parallel with each other (libtest's threads): the stopped-helper
//! one waits out WireGuard's session lifetime (three minutes) while the others run.

use std::time::{Duration, Instant};

use trellis_e2e::privileged_or_explain;
use trellis_e2e::scenario::{
    create_network, has_link, join, overlay_ip, path_remote, peer_view, ping_fails, wait_for_path,
    wait_for_ping, wait_for_quick_ping, Transfer, TRANSFER_BYTES,
};
use trellis_e2e::topology::{Nat, World, LAN_DEVICE_IP, SERVER_IP};
use trellis_e2e::wait_for_within;

const ALICE: usize = 0;
const BOB: usize = 1;
const CONNECT: Duration = Duration::from_secs(30);
/// How long a whole transfer may take when its path broke on the way.
const TRANSFER_DEADLINE: Duration = Duration::from_secs(120);

/// The floors.
const OFFLINE_AFTER_DOWN: Duration = Duration::from_secs(2);
const TRAFFIC_AFTER_REBINDING: Duration = Duration::from_secs(3);
const DIRECT_AFTER_REBINDING: Duration = Duration::from_secs(10);
const TRAFFIC_AFTER_RESUME: Duration = Duration::from_secs(3);

/// WireGuard's REJECT_AFTER_TIME: a session older than this carries nothing, so a helper
/// stopped for longer must make a new handshake when it resumes.
const WIREGUARD_SESSION_LIFETIME: Duration = Duration::from_secs(180);

/// alice and bob, each behind an easy NAT, bob joined to alice's network, the path direct
/// both ways; returns the world and their overlay addresses.
fn direct_pair(tag: &str) -> (World, String, String) {
    let mut world = World::new(tag);
    world.start_server();
    world.add_home("alice", Nat::Easy);
    world.add_home("bob", Nat::Easy);
    world.start_helper(ALICE);
    world.start_helper(BOB);
    let ticket = create_network(&world, ALICE);
    join(&world, BOB, &ticket);
    let (alice_ip, bob_ip) = (overlay_ip(&world, ALICE), overlay_ip(&world, BOB));
    wait_for_ping(&world, BOB, &alice_ip, CONNECT);
    wait_for_path(&world, BOB, "alice", "direct", CONNECT);
    wait_for_path(&world, ALICE, "bob", "direct", CONNECT);
    (world, alice_ip, bob_ip)
}

/// Whether alice and bob are connected directly both ways, and alice reaches bob at an
/// address other than `stale` (bob's public endpoint before his network changed: nothing
/// forwards to it any more, so a path still showing it is not a working one).
fn direct_again(world: &World, stale: &str) -> bool {
    let connected_direct = |home, peer| {
        peer_view(world, home, peer)
            .is_some_and(|v| v["state"]["state"] == "connected" && v["path"]["kind"] == "direct")
    };
    connected_direct(ALICE, "bob")
        && connected_direct(BOB, "alice")
        && path_remote(world, ALICE, "bob").is_some_and(|remote| remote != stale)
}

/// The harness's own check after it changed a home's network: the device reaches the
/// internet through its NAT, whatever the helper does.
fn assert_reaches_the_server(world: &World, home: usize) {
    let out = world.exec(home, &["ping", "-c", "1", "-W", "2", SERVER_IP]);
    assert!(out.status.success(), "{} cannot reach the server: {out:?}", world.homes[home].name);
}

fn transfer(world: &World, from: usize, to: usize, to_ip: &str) {
    let bytes = Transfer::start(world, from, to, to_ip, TRANSFER_BYTES).finish_within(TRANSFER_DEADLINE);
    assert_eq!(bytes, TRANSFER_BYTES);
}

/// `trellis down` disconnects: the peers see the device offline, its TUN goes, nothing
/// reaches it; `trellis up` brings it back, also after many cycles, without leaking
/// file descriptors.
#[test]
fn down_takes_the_device_offline_and_up_brings_it_back() {
    if !privileged_or_explain("down and up") {
        return;
    }
    let (world, alice_ip, bob_ip) = direct_pair("r1");

    let down = Instant::now();
    let out = world.trellis(BOB, &["down"]);
    assert!(out.ok(), "down: {out:?}");
    wait_for_within("alice to see bob offline", CONNECT, || {
        (peer_view(&world, ALICE, "bob")?["online"] == false).then_some(())
    });
    let offline = down.elapsed();
    println!("trellis down: peers see the device offline after {} ms", offline.as_millis());
    assert!(
        offline <= OFFLINE_AFTER_DOWN,
        "peers must see a device offline within {OFFLINE_AFTER_DOWN:?} of `trellis down`, took {offline:?}"
    );
    wait_for_within("bob's TUN to go", OFFLINE_AFTER_DOWN, || {
        (!has_link(&world, BOB, "trellis0")).then_some(())
    });
    assert!(ping_fails(&world, ALICE, &bob_ip), "nothing reaches a device that is down");

    let up = Instant::now();
    let out = world.trellis(BOB, &["up"]);
    assert!(out.ok(), "up: {out:?}");
    wait_for_ping(&world, BOB, &alice_ip, CONNECT);
    println!("trellis up: first ping after {} ms", up.elapsed().as_millis());
    wait_for_path(&world, BOB, "alice", "direct", CONNECT);
    // Counted once up again, so that the cycles below compare like with like.
    let fds_before = world.helper(BOB).open_fds();

    for cycle in 0..10 {
        for command in ["down", "up"] {
            let out = world.trellis(BOB, &[command]);
            assert!(out.ok(), "cycle {cycle}, {command}: {out:?}");
        }
    }
    let cycled = Instant::now();
    wait_for_ping(&world, BOB, &alice_ip, CONNECT);
    wait_for_ping(&world, ALICE, &bob_ip, CONNECT);
    println!("10 down/up cycles: first ping after {} ms", cycled.elapsed().as_millis());
    let seen = peer_view(&world, ALICE, "bob").expect("bob is still a member");
    assert_eq!(seen["online"], true, "alice sees bob online again: {seen}");
    wait_for_path(&world, BOB, "alice", "direct", CONNECT);
    // Each cycle closes what it opened (sockets, TUN, signal session): a leak of one per
    // cycle would show as ten more here. Two of slack for a command's own IPC connection.
    let fds_after = wait_for_within("bob's helper to hold as many descriptors as before", CONNECT, || {
        let fds = world.helper(BOB).open_fds();
        (fds <= fds_before + 2).then_some(fds)
    });
    println!("10 down/up cycles: helper file descriptors {fds_before} before, {fds_after} after");
}

/// A device's LAN address changes (a new DHCP lease, another Wi-Fi) while a transfer
/// runs: the transfer completes intact and the path ends direct again.
#[test]
fn a_changed_lan_address_mid_transfer_ends_direct() {
    if !privileged_or_explain("LAN address change") {
        return;
    }
    let (mut world, alice_ip, _) = direct_pair("r2");
    let stale = path_remote(&world, ALICE, "bob").expect("alice has a path to bob");
    let mut running = Transfer::start(&world, BOB, ALICE, &alice_ip, 5 * TRANSFER_BYTES);

    let changed = Instant::now();
    world.set_lan_address(BOB, "198.51.100.3");
    assert_eq!(world.lan_addresses(BOB), ["198.51.100.3"], "bob's old address is gone");
    assert!(running.is_running(), "the address must change while the transfer runs");
    assert_reaches_the_server(&world, BOB);

    wait_for_quick_ping(&world, BOB, &alice_ip, CONNECT);
    println!("LAN address changed mid-transfer: traffic again after {} ms", changed.elapsed().as_millis());
    wait_for_within("the path to be direct again", CONNECT, || direct_again(&world, &stale).then_some(()));
    println!("LAN address changed mid-transfer: direct again after {} ms", changed.elapsed().as_millis());
    assert_eq!(running.finish_within(TRANSFER_DEADLINE), 5 * TRANSFER_BYTES, "the transfer completes intact");
}

/// A helper started while its machine has no address yet (before DHCP): at first join,
/// and again when a member boots that way, it ends direct once the address comes.
#[test]
fn a_helper_started_before_its_address_ends_direct() {
    if !privileged_or_explain("helper started before its address") {
        return;
    }
    let mut world = World::new("r3");
    world.start_server();
    world.add_home("alice", Nat::Easy);
    world.add_home_without_address("bob", Nat::Easy);
    world.start_helper(ALICE);
    world.start_helper(BOB);
    assert!(world.lan_addresses(BOB).is_empty(), "bob starts without an address");
    let status = world.trellis(BOB, &["status"]);
    assert!(status.ok(), "a helper without an address still answers: {status:?}");
    let ticket = create_network(&world, ALICE);

    world.set_lan_address(BOB, LAN_DEVICE_IP);
    assert_reaches_the_server(&world, BOB);
    join(&world, BOB, &ticket);
    let alice_ip = overlay_ip(&world, ALICE);
    wait_for_ping(&world, BOB, &alice_ip, CONNECT);
    wait_for_path(&world, BOB, "alice", "direct", CONNECT);
    wait_for_path(&world, ALICE, "bob", "direct", CONNECT);
    transfer(&world, BOB, ALICE, &alice_ip);

    // A member that boots before its address: the helper starts with its network but
    // without any address, server or candidate, then the lease comes.
    world.stop_helper(BOB);
    world.remove_lan_address(BOB);
    world.start_helper(BOB);
    wait_for_within("bob's helper to run without its server", CONNECT, || {
        let status = world.trellis(BOB, &["status"]);
        (status.ok() && status.json()["status"]["server_connected"] == false).then_some(())
    });
    let addressed = Instant::now();
    world.set_lan_address(BOB, LAN_DEVICE_IP);
    wait_for_quick_ping(&world, BOB, &alice_ip, CONNECT);
    println!(
        "helper started before its address: traffic {} ms after the address came",
        addressed.elapsed().as_millis()
    );
    wait_for_path(&world, BOB, "alice", "direct", CONNECT);
    wait_for_path(&world, ALICE, "bob", "direct", CONNECT);
    println!(
        "helper started before its address: direct {} ms after the address came",
        addressed.elapsed().as_millis()
    );
    transfer(&world, BOB, ALICE, &alice_ip);
}

/// bob's NAT gets a new public address and forgets every mapping while traffic flows:
/// traffic flows again within 3 s and the path is direct again within 10 s.
#[test]
fn nat_rebinding_recovers_fast_and_ends_direct() {
    if !privileged_or_explain("NAT rebinding") {
        return;
    }
    let (mut world, alice_ip, bob_ip) = direct_pair("r4");
    let stale = path_remote(&world, ALICE, "bob").expect("alice has a path to bob");

    let rebound = Instant::now();
    let old_wan = world.homes[BOB].wan_ip.clone();
    let new_wan = world.rebind_nat(BOB);
    let remembered: Vec<String> =
        world.nat_udp_flows(BOB).into_iter().filter(|flow| flow.contains(&old_wan)).collect();
    assert!(remembered.is_empty(), "the NAT forgot its mappings on {old_wan}: {remembered:?}");
    assert_reaches_the_server(&world, BOB);

    // The ping loop is the traffic that finds the path dead, and the clock.
    wait_for_quick_ping(&world, BOB, &alice_ip, CONNECT);
    let traffic = rebound.elapsed();
    println!("NAT rebinding: traffic again after {} ms", traffic.as_millis());
    wait_for_within("the path to be direct again", CONNECT, || direct_again(&world, &stale).then_some(()));
    let direct = rebound.elapsed();
    println!("NAT rebinding: direct again after {} ms", direct.as_millis());
    let remote = path_remote(&world, ALICE, "bob").unwrap_or_default();
    assert!(remote.starts_with(&format!("{new_wan}:")), "alice reaches bob at his new address: {remote}");
    assert!(
        traffic <= TRAFFIC_AFTER_REBINDING,
        "traffic must flow again within {TRAFFIC_AFTER_REBINDING:?} of a NAT rebinding, took {traffic:?}"
    );
    assert!(
        direct <= DIRECT_AFTER_REBINDING,
        "the path must be direct again within {DIRECT_AFTER_REBINDING:?} of a NAT rebinding, took {direct:?}"
    );
    wait_for_ping(&world, ALICE, &bob_ip, CONNECT);
    transfer(&world, BOB, ALICE, &alice_ip);
}

/// bob's helper stopped (SIGSTOP, as a laptop asleep) for longer than his NAT keeps a
/// UDP mapping and WireGuard keeps a session: within 3 s of SIGCONT a ping goes through.
#[test]
fn a_stopped_helper_works_within_3_s_of_resuming() {
    if !privileged_or_explain("stopped helper resumed") {
        return;
    }
    let (mut world, alice_ip, bob_ip) = direct_pair("r5");
    // Home routers forget idle UDP mappings after 30 s to a few minutes; short ones here
    // keep the wait at WireGuard's lifetime, the longer of the two.
    let (unreplied, replied) = (Duration::from_secs(10), Duration::from_secs(20));
    for home in [ALICE, BOB] {
        world.set_nat_udp_timeouts(home, unreplied, replied);
    }

    world.signal_helper(BOB, "STOP");
    // Every thread stops when it next runs, not within kill(2).
    wait_for_within("bob's helper to stop", CONNECT, || (world.helper(BOB).state() == 'T').then_some(()));
    let asleep = WIREGUARD_SESSION_LIFETIME + Duration::from_secs(5);
    // The scenario is time passing while the helper sleeps: nothing to wait on.
    std::thread::sleep(asleep);
    // alice's side may have kept bob's mapping alive by sending to it; a NAT that forgot
    // it anyway is the harder case, so every mapping goes.
    let alive = world.nat_udp_flows(BOB).len();
    world.flush_nat(BOB);

    let resumed = Instant::now();
    world.signal_helper(BOB, "CONT");
    assert_ne!(world.helper(BOB).state(), 'T', "SIGCONT wakes bob's helper within kill(2)");
    wait_for_quick_ping(&world, BOB, &alice_ip, CONNECT);
    let traffic = resumed.elapsed();
    println!(
        "helper stopped {} s ({alive} UDP mappings left on its NAT, then flushed): ping {} ms after resuming",
        asleep.as_secs(),
        traffic.as_millis()
    );
    wait_for_ping(&world, ALICE, &bob_ip, CONNECT);
    println!("helper resumed: alice reaches bob {} ms after resuming", resumed.elapsed().as_millis());
    // "Stuck on the relay after sleep" is the other half of what users report.
    wait_for_path(&world, BOB, "alice", "direct", CONNECT);
    wait_for_path(&world, ALICE, "bob", "direct", CONNECT);
    println!("helper resumed: direct both ways {} ms after resuming", resumed.elapsed().as_millis());
    assert!(
        traffic <= TRAFFIC_AFTER_RESUME,
        "a tunnel must work within {TRAFFIC_AFTER_RESUME:?} of resuming, took {traffic:?}"
    );
}
