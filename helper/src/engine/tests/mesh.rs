//! Three engines: every pair finds its own path, direct or relayed.

use std::time::Duration;

use trellis_protocol::ipc::PathKind;

use super::net::{Behind, Net};

#[test]
fn three_peers_form_a_full_mesh() {
    // Alice and bob behind cone NATs reach each other directly; carol's symmetric NAT
    // leaves her only the relay.
    let mut net = Net::new(&[Behind::Cone, Behind::Cone, Behind::Symmetric], true);
    net.mesh();
    assert!(net.run_until(Duration::from_secs(30), Net::all_connected), "not every pair connected");
    for (a, b, kind) in [
        (0, 1, PathKind::Direct),
        (1, 0, PathKind::Direct),
        (0, 2, PathKind::Relayed),
        (2, 0, PathKind::Relayed),
        (1, 2, PathKind::Relayed),
        (2, 1, PathKind::Relayed),
    ] {
        assert_eq!(net.path(a, b).map(|p| p.kind), Some(kind), "{a} -> {b}");
    }
    for (a, b) in [(0, 1), (0, 2), (1, 2)] {
        net.exchange(a, b);
    }
    // Each packet reached only its destination.
    for (i, node) in net.nodes.iter().enumerate() {
        assert_eq!(node.received.len(), 2, "node {i}");
        assert!(node.received.iter().all(|p| p[16..20] == node.ip.0.octets()));
    }
}

#[test]
fn a_lan_peer_among_natted_ones() {
    // Dave sits on the shared LAN without NAT: symmetric NATs reach him directly, as he
    // learns their mappings from their checks (peer-reflexive candidates).
    let mut net = Net::new(&[Behind::Symmetric, Behind::Lan, Behind::Symmetric], false);
    net.mesh();
    assert!(
        net.run_until(Duration::from_secs(30), |n| [(0, 1), (1, 0), (1, 2), (2, 1)]
            .iter()
            .all(|&(a, b)| n.connected(a, b))),
        "the LAN peer is not reachable"
    );
    assert_eq!(net.path(1, 0).map(|p| p.kind), Some(PathKind::Direct));
    net.exchange(0, 1);
    net.exchange(1, 2);
    // Without a relay the two symmetric NATs cannot reach each other.
    assert!(!net.connected(0, 2));
    let p = net.send_ip(0, 2, b"no way");
    net.run_for(Duration::from_secs(2));
    assert!(!net.nodes[2].received.contains(&p));
}
