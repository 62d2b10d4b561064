//! Sealed signal: forwarded only between online members of one network, and opaque
//! to the server (the receiver refuses anything tampered with or replayed).

mod common;

use common::{code_of, TestServer};
use trellis_protocol::sealed::Sealer;
use trellis_protocol::signal::{ErrorCode, Event, Request, Response};

#[tokio::test]
async fn signal_reaches_a_member_and_nobody_outside_the_network() {
    let server = TestServer::start().await;
    let mut alice = server.device().await;
    let mut bob = server.device().await;
    let mut carol = server.device().await;
    let home = alice.create_network("home").await.network.id;
    let code = alice.invite(home).await;
    bob.join(&code, "bob").await.unwrap();
    let other = carol.create_network("other").await.network.id;

    let mut alice_sealer = Sealer::new(alice.secret.clone());
    let mut bob_sealer = Sealer::new(bob.secret.clone());
    let envelope = alice_sealer.seal(bob.key, b"ice: ufrag+pwd", 10).unwrap();
    assert_eq!(alice.request(Request::Signal { network: home, envelope }).await, Ok(Response::Done));
    let Event::Signal { network, envelope } =
        bob.event("signal", |e| matches!(e, Event::Signal { .. })).await
    else {
        unreachable!()
    };
    assert_eq!(network, home);
    assert_eq!(bob_sealer.open(&envelope).unwrap(), b"ice: ufrag+pwd");

    // To someone outside the network, through either network: refused.
    let to_carol = alice_sealer.seal(carol.key, b"psst", 11).unwrap();
    assert_eq!(
        code_of(alice.request(Request::Signal { network: home, envelope: to_carol.clone() }).await),
        ErrorCode::PeerUnreachable
    );
    assert_eq!(
        code_of(alice.request(Request::Signal { network: other, envelope: to_carol }).await),
        ErrorCode::NotMember
    );
    // Bob's session claiming that its envelope is from carol: refused.
    let mut forged = bob_sealer.seal(alice.key, b"from carol, honest", 12).unwrap();
    forged.from = carol.key;
    assert_eq!(
        code_of(bob.request(Request::Signal { network: home, envelope: forged }).await),
        ErrorCode::InvalidArgument
    );
    assert!(carol.events.iter().all(|e| !matches!(e, Event::Signal { .. })));
}

#[tokio::test]
async fn the_receiver_refuses_tampered_forged_and_replayed_envelopes() {
    let server = TestServer::start().await;
    let mut alice = server.device().await;
    let mut bob = server.device().await;
    let home = alice.create_network("home").await.network.id;
    let code = alice.invite(home).await;
    bob.join(&code, "bob").await.unwrap();
    let mut alice_sealer = Sealer::new(alice.secret.clone());
    let mut bob_sealer = Sealer::new(bob.secret.clone());

    let mut tampered = alice_sealer.seal(bob.key, b"candidate 1", 20).unwrap();
    tampered.ciphertext[0] ^= 1;
    // A key the server never saw cannot produce an envelope that opens as from alice.
    let mut forged =
        Sealer::new(trellis_protocol::keys::generate_secret()).seal(bob.key, b"evil", 21).unwrap();
    forged.from = alice.key;
    let genuine = alice_sealer.seal(bob.key, b"candidate 2", 22).unwrap();
    for envelope in [tampered, forged, genuine.clone(), genuine] {
        assert_eq!(alice.request(Request::Signal { network: home, envelope }).await, Ok(Response::Done));
    }
    let mut opened = Vec::new();
    for _ in 0..4 {
        let Event::Signal { envelope, .. } = bob.event("signal", |e| matches!(e, Event::Signal { .. })).await
        else {
            unreachable!()
        };
        opened.push(bob_sealer.open(&envelope).map_err(|e| e.to_string()));
    }
    assert!(opened[0].is_err(), "tampered: {:?}", opened[0]);
    assert!(opened[1].is_err(), "forged: {:?}", opened[1]);
    assert_eq!(opened[2].as_deref(), Ok(&b"candidate 2"[..]));
    assert!(opened[3].is_err(), "replayed: {:?}", opened[3]);
}

#[tokio::test]
async fn signal_to_an_offline_member_is_refused_clearly() {
    let server = TestServer::start().await;
    let mut alice = server.device().await;
    let mut bob = server.device().await;
    let home = alice.create_network("home").await.network.id;
    let code = alice.invite(home).await;
    bob.join(&code, "bob").await.unwrap();
    let bob_key = bob.key;
    drop(bob);
    alice.event("bob offline", |e| matches!(e, Event::MemberUpdated { member, .. } if !member.online)).await;
    let envelope = Sealer::new(alice.secret.clone()).seal(bob_key, b"hello", 1).unwrap();
    let error = alice.request(Request::Signal { network: home, envelope }).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::PeerUnreachable);
    assert!(error.message.contains("offline"), "{}", error.message);
}
