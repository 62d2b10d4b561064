//! The ICE session protocol over `PeerSignal`: restarts by either side, at once or
//! crossing, are picked up and converge without chatter; garbage never hurts.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::net::{Behind, Net};

/// Restarts node `i`'s ICE session with node `j`, as its health checks would.
fn restart(net: &mut Net, i: usize, j: usize) {
    let now = net.now();
    let key = net.key(j);
    let engine = &mut net.nodes[i].engine;
    let (peers, mut ctx) = engine.parts(now);
    peers.get_mut(&key).unwrap().restart_ice("test", &mut ctx);
    engine.finish(now);
}

fn signals(net: &Net) -> usize {
    net.signal_count.values().sum()
}

fn connect() -> Net {
    let mut net = Net::new(&[Behind::Cone, Behind::Cone], true);
    net.mesh();
    assert!(net.run_until(Duration::from_secs(30), Net::all_connected));
    net.exchange(0, 1);
    net
}

/// After a restart: connected again, traffic flows, and then the signal channel is quiet.
fn converges(net: &mut Net) {
    assert!(
        net.run_until(Duration::from_secs(30), Net::all_connected),
        "{:?} / {:?}",
        net.state(0, 1),
        net.state(1, 0)
    );
    net.run_for(Duration::from_secs(5));
    let quiet = signals(net);
    net.run_for(Duration::from_secs(20));
    assert_eq!(signals(net), quiet, "signals keep flowing after the restart settled");
    net.exchange(0, 1);
}

#[test]
fn a_restart_by_either_side_is_followed() {
    let mut net = connect();
    // Alice's key is the smaller: bob controls ICE. Both sides may restart.
    for who in [0, 1] {
        let before = signals(&net);
        restart(&mut net, who, 1 - who);
        converges(&mut net);
        // Each side sent its credentials and candidates once (3 candidates: host,
        // server-reflexive, relayed): 2 × 4 messages, nothing more.
        assert_eq!(signals(&net) - before, 8, "restart by node {who}");
    }
}

#[test]
fn simultaneous_restarts_converge() {
    let mut net = connect();
    restart(&mut net, 0, 1);
    restart(&mut net, 1, 0);
    converges(&mut net);
}

#[test]
fn a_restart_crossing_an_answer_converges() {
    let mut net = connect();
    restart(&mut net, 0, 1);
    // Bob answers alice's credentials; before his answer arrives, alice restarts again.
    net.run_for(Duration::from_millis(40));
    restart(&mut net, 0, 1);
    converges(&mut net);
}

#[test]
fn garbage_datagrams_and_signals_are_dropped_without_harm() {
    let mut net = connect();
    let mut rng = StdRng::seed_from_u64(42);
    let server = net.nodes[0].relay.as_ref().unwrap().addr;
    let bob = net.nodes[1].nat.as_ref().unwrap().public_ip;
    let host = net.nodes[0].host;
    let now = net.now();
    for i in 0..20_000u32 {
        let len = rng.gen_range(0..200);
        let mut d: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        // Aim at each demultiplexer branch: STUN (with the magic cookie), ChannelData,
        // every WireGuard message type with its exact length, and anything.
        match i % 5 {
            0 if len >= 20 => {
                d[0] &= 0x01;
                d[4..8].copy_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
            }
            1 if len >= 4 => d[0] = 0x40 | (d[0] & 0x3F),
            2 => {
                let (t, n) = [(1u8, 148usize), (2, 92), (3, 64), (4, 32 + len)][rng.gen_range(0..4)];
                d.resize(n, 0);
                d[..4].copy_from_slice(&[t, 0, 0, 0]);
            }
            _ => {}
        }
        let from = if rng.gen_bool(0.5) {
            server
        } else {
            std::net::SocketAddr::new(bob, rng.gen_range(40000..40010))
        };
        net.nodes[0].engine.handle_datagram(host, from, &d, now);
    }
    let stranger = trellis_protocol::PublicKey::from_bytes([7; 32]);
    let bob_key = net.key(1);
    for signal in [
        trellis_protocol::peer::PeerSignal::Candidate { session: 1, candidate: "garbage".into() },
        trellis_protocol::peer::PeerSignal::IceCredentials {
            session: 1,
            ufrag: "x:y".into(),
            pwd: "short".into(),
            peer_session: None,
        },
    ] {
        net.nodes[0].engine.handle_signal(bob_key, signal.clone(), now);
        net.nodes[0].engine.handle_signal(stranger, signal, now);
    }
    assert!(net.nodes[0].engine.poll_tun_packet().is_none());
    net.run_for(Duration::from_secs(2));
    assert!(net.all_connected());
    net.exchange(0, 1);
}

#[test]
fn candidates_before_their_credentials_are_kept() {
    // Symmetric NATs: without each other's signalled candidates there is no path.
    let mut net = Net::new(&[Behind::Symmetric, Behind::Symmetric], true);
    net.run_for(Duration::from_secs(1)); // relays allocated: every candidate goes at once
    net.reverse_signals = true;
    // Only bob starts (alice believes him offline), so each side signals its session once.
    net.set_peers(0, &[(1, false)]);
    net.set_peers(1, &[(0, true)]);
    // ICE gives up on a session without candidates after 30 s; well before that:
    assert!(net.run_until(Duration::from_secs(10), Net::all_connected), "{:?}", net.state(0, 1));
    net.exchange(0, 1);
}
