//! Two engines find a path and carry IP packets: LAN, cone NATs, symmetric NATs (relay).

use std::time::Duration;

use trellis_protocol::ipc::{CandidateKind, PathKind, PeerState};

use super::net::{ipv4_udp, Behind, Net};
use crate::engine::EngineEvent;

const CONNECT_LIMIT: Duration = Duration::from_secs(30);

#[test]
fn lan_peers_connect_over_host_candidates() {
    let mut net = Net::new(&[Behind::Lan, Behind::Lan], false);
    net.mesh();
    assert!(net.run_until(CONNECT_LIMIT, Net::all_connected), "no connection");
    for (a, b) in [(0, 1), (1, 0)] {
        let path = net.path(a, b).unwrap();
        assert_eq!(
            (path.kind, path.local, path.remote),
            (PathKind::Direct, CandidateKind::Host, CandidateKind::Host)
        );
        assert_eq!(path.remote_addr, net.nodes[b].host);
    }
    net.exchange(0, 1);
    // The first state reported is Connecting, then Connected.
    let states: Vec<&PeerState> = net.nodes[0]
        .events_for(net.key(1))
        .filter_map(|e| match e {
            EngineEvent::PeerState { state, .. } => Some(state),
            _ => None,
        })
        .collect();
    assert_eq!(states, [&PeerState::Connecting, &PeerState::Connected]);
}

#[test]
fn cone_nats_connect_directly_through_server_reflexive_candidates() {
    let mut net = Net::new(&[Behind::Cone, Behind::Cone], true);
    net.mesh();
    assert!(net.run_until(CONNECT_LIMIT, Net::all_connected), "no connection");
    for (a, b) in [(0, 1), (1, 0)] {
        let path = net.path(a, b).unwrap();
        assert_eq!(path.kind, PathKind::Direct, "{a} -> {b}: {path:?}");
        assert_eq!(path.local, CandidateKind::Host);
        // The peer's NAT mapping: signalled as srflx or learnt from its checks as prflx.
        assert_eq!(path.remote_addr.ip(), net.nodes[b].nat.as_ref().unwrap().public_ip);
    }
    let relayed_before = net.server.relayed_datagrams;
    net.exchange(0, 1);
    net.exchange(1, 0);
    assert_eq!(net.server.relayed_datagrams, relayed_before, "a direct path must not touch the relay");
    let status = net.nodes[0].status(net.key(1), net.now()).unwrap();
    assert!(status.last_handshake.is_some() && status.rx_bytes > 0 && status.tx_bytes > 0, "{status:?}");
}

#[test]
fn symmetric_nats_fall_back_to_the_relay() {
    let mut net = Net::new(&[Behind::Symmetric, Behind::Symmetric], true);
    net.mesh();
    assert!(net.run_until(CONNECT_LIMIT, Net::all_connected), "no connection");
    for (a, b) in [(0, 1), (1, 0)] {
        let path = net.path(a, b).unwrap();
        assert_eq!(path.kind, PathKind::Relayed, "{a} -> {b}: {path:?}");
        assert!(path.local == CandidateKind::Relayed || path.remote == CandidateKind::Relayed);
    }
    let relayed_before = net.server.relayed_datagrams;
    net.exchange(0, 1);
    assert!(net.server.relayed_datagrams > relayed_before, "WireGuard must go through the relay");
    // rtc-turn sends Send indications while it binds a channel, then ChannelData.
    assert!(net.server.channel_data > 0, "no ChannelData: {} indications", net.server.indications);
}

#[test]
fn ping_round_trip_yields_ping_reply() {
    let mut net = Net::new(&[Behind::Cone, Behind::Cone], true);
    net.mesh();
    assert!(net.run_until(CONNECT_LIMIT, Net::all_connected));
    let now = net.now();
    let bob = net.key(1);
    net.nodes[0].engine.ping(&bob, now).unwrap();
    assert!(net.run_until(Duration::from_secs(2), |n| n.nodes[0]
        .events
        .iter()
        .any(|e| matches!(e, EngineEvent::PingReply { key, .. } if *key == bob))));
    // The reply was consumed, not written to alice's TUN; bob's "kernel" saw the request.
    assert!(net.nodes[0].received.is_empty(), "{:?}", net.nodes[0].received);
    assert!(net.nodes[0].status(bob, net.now()).unwrap().rtt.is_some());
    let stranger = trellis_protocol::PublicKey::from_bytes([9; 32]);
    let now = net.now();
    assert!(net.nodes[0].engine.ping(&stranger, now).is_err());
}

#[test]
fn packets_for_unknown_overlay_addresses_or_from_wrong_sources_are_dropped() {
    let mut net = Net::new(&[Behind::Lan, Behind::Lan], false);
    net.mesh();
    assert!(net.run_until(CONNECT_LIMIT, Net::all_connected));
    net.exchange(0, 1);
    let now = net.now();
    let alice = &mut net.nodes[0];
    alice.engine.handle_tun_packet(&ipv4_udp(alice.ip.0, "100.64.9.9".parse().unwrap(), b"nobody"), now);
    alice.engine.handle_tun_packet(&[0x60; 48], now); // IPv6
    alice.engine.handle_tun_packet(&[], now);
    assert_eq!(alice.engine.poll_transmit(), None, "nothing may leave for an unknown destination");

    // Bob's packet with a source address that is not his: decrypted, then refused.
    let spoofed = ipv4_udp("100.64.0.77".parse().unwrap(), net.nodes[0].ip.0, b"spoofed");
    net.nodes[1].engine.handle_tun_packet(&spoofed, now);
    net.run_for(Duration::from_secs(1));
    assert!(!net.nodes[0].received.contains(&spoofed));
    net.exchange(1, 0); // the tunnel still works
}

#[test]
fn removed_peer_stops_receiving() {
    let mut net = Net::new(&[Behind::Cone, Behind::Cone], true);
    net.mesh();
    assert!(net.run_until(CONNECT_LIMIT, Net::all_connected));
    net.exchange(0, 1);
    net.set_peers(0, &[]);
    assert!(net.nodes[0].engine.peers(net.now()).is_empty());
    while net.nodes[0].engine.poll_transmit().is_some() {}
    let to_bob = net.send_ip(0, 1, b"after removal");
    assert_eq!(net.nodes[0].engine.poll_transmit(), None, "alice has no tunnel to bob any more");
    let to_alice = net.send_ip(1, 0, b"from a removed peer");
    net.run_for(Duration::from_secs(5));
    assert!(!net.nodes[1].received.contains(&to_bob));
    assert!(!net.nodes[0].received.contains(&to_alice), "alice must not accept bob's packets");
}

#[test]
fn packets_sent_before_a_path_exists_are_delivered_once_connected() {
    let mut net = Net::new(&[Behind::Lan, Behind::Lan], false);
    net.mesh();
    // Bob (who does not start the WireGuard handshake on his own) has packets first.
    let early: Vec<Vec<u8>> = (0..3).map(|i| net.send_ip(1, 0, format!("early {i}").as_bytes())).collect();
    assert!(net.run_until(CONNECT_LIMIT, Net::all_connected));
    let connected_at = net.clock.elapsed();
    assert!(net.run_until(Duration::from_secs(1), |n| early.iter().all(|p| n.nodes[0].received.contains(p))));
    assert!(net.clock.elapsed() - connected_at < Duration::from_secs(1), "waited for a handshake retry");
}

#[test]
fn removing_the_relay_releases_the_allocation_and_the_peers_reconnect() {
    let mut net = Net::new(&[Behind::Symmetric, Behind::Symmetric], true);
    net.mesh();
    assert!(net.run_until(CONNECT_LIMIT, Net::all_connected));
    let relayed = net.nodes[0]
        .events
        .iter()
        .find_map(|e| match e {
            EngineEvent::RelayAllocated { relayed } => Some(*relayed),
            _ => None,
        })
        .unwrap();
    assert!(net.server.owns(relayed));
    let now = net.now();
    net.nodes[0].engine.set_relay(None, now);
    net.run_for(Duration::from_secs(1));
    assert!(!net.server.owns(relayed), "the allocation was not released");
    // Bob's relay is enough for the two of them.
    assert!(
        net.run_until(Duration::from_secs(90), |n| n.all_connected()
            && n.path(0, 1).is_some_and(|p| p.local != CandidateKind::Relayed)),
        "{:?}",
        net.state(0, 1)
    );
    net.exchange(0, 1);
    assert_eq!(net.path(0, 1).unwrap().kind, PathKind::Relayed);
}

#[test]
fn an_idle_tunnel_wakes_the_engine_only_for_its_timers() {
    let mut net = Net::new(&[Behind::Cone, Behind::Cone], true);
    net.mesh();
    assert!(net.run_until(CONNECT_LIMIT, Net::all_connected));
    let before: Vec<usize> = net.nodes.iter().map(|n| n.wakeups).collect();
    net.run_for(Duration::from_secs(60));
    for (node, before) in net.nodes.iter().zip(before) {
        // WireGuard's 250 ms tick and rtc-ice's 200 ms task loop (it runs at its check
        // interval even when connected): about 9 a second. A timeout stuck in the past
        // would make it 100, once per step.
        let per_second = (node.wakeups - before) as f64 / 60.0;
        assert!((4.0..12.0).contains(&per_second), "{}: {per_second} wakeups/s", node.name);
    }
    assert!(net.all_connected());
}
