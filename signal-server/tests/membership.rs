//! Networks, invites and membership over a real WebSocket on loopback.

mod common;

use common::{code_of, read, send, TestServer};
use trellis_protocol::signal::{
    ClientMessage, ErrorCode, Event, LeaveReason, Request, Response, ServerMessage,
};
use trellis_protocol::InviteCode;

#[tokio::test]
async fn create_invite_join_and_both_see_each_other_live() {
    let server = TestServer::start().await;
    let mut alice = server.device().await;
    let mut bob = server.device().await;
    let network = alice.create_network("home").await;
    let net = network.network.id;
    assert!(network.me.owner);
    assert_eq!(network.network.range.to_string(), "100.64.0.0/10");

    let code = alice.invite(net).await;
    let joined = bob.join(&code, "bob-laptop").await.unwrap();
    assert_eq!(joined.network.id, net);
    assert_eq!(joined.members.len(), 2);
    let seen_alice = joined.members.iter().find(|m| m.key == alice.key).expect("bob sees alice");
    assert!(seen_alice.online, "alice is connected");
    assert_ne!(joined.me.ip, network.me.ip, "addresses are unique");
    assert!(network.network.range.contains(joined.me.ip.0));

    let Event::MemberJoined { member, .. } =
        alice.event("bob joining", |e| matches!(e, Event::MemberJoined { .. })).await
    else {
        unreachable!()
    };
    assert_eq!(member.key, bob.key);
    assert_eq!(member.name.as_str(), "bob-laptop");
    assert_eq!(member.ip, joined.me.ip);

    // Bob goes away: alice sees him offline; he comes back and finds the network in his welcome.
    let bob_secret = bob.secret.clone();
    drop(bob);
    alice.event("bob offline", |e| matches!(e, Event::MemberUpdated { member, .. } if !member.online)).await;
    let bob = common::Device::connect(&server.url(), bob_secret).await;
    assert_eq!(bob.welcome.memberships.len(), 1);
    assert_eq!(bob.welcome.memberships[0].me.ip, joined.me.ip);
    alice.event("bob online", |e| matches!(e, Event::MemberUpdated { member, .. } if member.online)).await;
    let Ok(Response::Members { members }) = alice.request(Request::ListMembers { network: net }).await else {
        panic!("list members")
    };
    assert_eq!(members.len(), 2);
    assert!(members.iter().all(|m| m.online));
}

#[tokio::test]
async fn dead_and_wrong_codes_fail_with_distinct_errors_and_change_nothing() {
    let server = TestServer::start().await;
    let mut owner = server.device().await;
    let mut friend = server.device().await;
    let mut late = server.device().await;
    let net = owner.create_network("home").await.network.id;

    let used = owner.invite(net).await;
    friend.join(&used, "friend").await.unwrap();
    assert_eq!(code_of(late.join(&used, "late").await), ErrorCode::InviteUsedUp);

    let revoked = owner.invite(net).await;
    owner.request(Request::RevokeInvite { network: net, invite: revoked.locator() }).await.unwrap();
    assert_eq!(code_of(late.join(&revoked, "late").await), ErrorCode::InviteRevoked);

    let expiring = owner.invite_with(net, Some(5), Some(60)).await;
    server.clock.advance(61);
    assert_eq!(code_of(late.join(&expiring, "late").await), ErrorCode::InviteExpired);

    let live = owner.invite_with(net, Some(5), None).await;
    let unknown = InviteCode::random();
    assert_eq!(code_of(late.join(&unknown, "late").await), ErrorCode::InviteUnknown);
    // Right locator, wrong secret: indistinguishable from an unknown code.
    let wrong: InviteCode = format!("{}-0000-0000-0000", live.locator()).parse().unwrap();
    assert_ne!(wrong, live);
    assert_eq!(code_of(late.join(&wrong, "late").await), ErrorCode::InviteUnknown);
    assert_eq!(code_of(friend.join(&live, "again").await), ErrorCode::AlreadyMember);

    let Ok(Response::Members { members }) = owner.request(Request::ListMembers { network: net }).await else {
        panic!("list members")
    };
    assert_eq!(members.len(), 2, "no failed join added anyone");
    let Ok(Response::Invites { invites }) = owner.request(Request::ListInvites { network: net }).await else {
        panic!("list invites")
    };
    assert_eq!(invites.len(), 1, "only the live invite is listed");
    assert_eq!(invites[0].id, live.locator());
    assert_eq!(invites[0].uses, 0, "failed joins used nothing");

    // Owner-only operations refuse members, and argument checks hold.
    assert_eq!(code_of(friend.request(Request::ListInvites { network: net }).await), ErrorCode::NotOwner);
    let too_many = Request::CreateInvite { network: net, max_uses: Some(0), expires_in_secs: None };
    assert_eq!(code_of(owner.request(too_many).await), ErrorCode::InvalidArgument);
    let too_long = Request::CreateInvite { network: net, max_uses: None, expires_in_secs: Some(10) };
    assert_eq!(code_of(owner.request(too_long).await), ErrorCode::InvalidArgument);
    assert_eq!(code_of(owner.request(Request::Leave { network: net }).await), ErrorCode::OwnerCannotLeave);
}

#[tokio::test]
async fn a_removed_device_loses_access_at_once() {
    let server = TestServer::start().await;
    let mut owner = server.device().await;
    let mut victim = server.device().await;
    let net = owner.create_network("home").await.network.id;
    let code = owner.invite_with(net, Some(3), None).await;
    victim.join(&code, "victim").await.unwrap();
    assert!(matches!(victim.request(Request::TurnCredentials).await, Ok(Response::TurnCredentials { .. })));

    owner.request(Request::RemoveDevice { network: net, device: victim.id() }).await.unwrap();
    let left = owner.event("victim removed", |e| matches!(e, Event::MemberLeft { .. })).await;
    assert!(matches!(left, Event::MemberLeft { reason: LeaveReason::Removed, .. }));

    let closing = victim.closed_with().await.expect("the server says why it closes");
    assert_eq!(closing.code, ErrorCode::Banned);
    assert!(victim
        .events
        .iter()
        .any(|e| matches!(e, Event::RemovedFromNetwork { network } if *network == net)));

    // It can still prove its key, but the network is gone from its view and refuses it.
    let mut victim = common::Device::connect(&server.url(), victim.secret.clone()).await;
    assert!(victim.welcome.memberships.is_empty());
    assert_eq!(code_of(victim.request(Request::ListMembers { network: net }).await), ErrorCode::Banned);
    assert_eq!(code_of(victim.join(&code, "again").await), ErrorCode::Banned);
    assert_eq!(code_of(victim.request(Request::TurnCredentials).await), ErrorCode::NotMember);
    let mut sealer = trellis_protocol::sealed::Sealer::new(victim.secret.clone());
    let envelope = sealer.seal(owner.key, b"let me in", 1).unwrap();
    assert_eq!(code_of(victim.request(Request::Signal { network: net, envelope }).await), ErrorCode::Banned);
    let mut owner_sealer = trellis_protocol::sealed::Sealer::new(owner.secret.clone());
    let envelope = owner_sealer.seal(victim.key, b"hello?", 1).unwrap();
    assert_eq!(
        code_of(owner.request(Request::Signal { network: net, envelope }).await),
        ErrorCode::PeerUnreachable
    );
}

#[tokio::test]
async fn names_clash_into_suffixes_and_a_small_pool_runs_out() {
    let server = TestServer::start().await;
    let mut owner = server.device().await;
    let request = Request::CreateNetwork {
        name: "tiny".parse().unwrap(),
        device_name: "pc".parse().unwrap(),
        range: Some("100.64.7.0/30".parse().unwrap()), // two addresses
    };
    let Ok(Response::NetworkCreated { membership }) = owner.request(request).await else { panic!("create") };
    let net = membership.network.id;
    let code = owner.invite_with(net, Some(5), None).await;
    let mut second = server.device().await;
    let joined = second.join(&code, "pc").await.unwrap();
    assert_eq!(joined.me.name.as_str(), "pc-2");
    let mut third = server.device().await;
    assert_eq!(code_of(third.join(&code, "pc").await), ErrorCode::AddressPoolExhausted);

    // The one who leaves frees a name but not (yet) the address.
    second.request(Request::Leave { network: net }).await.unwrap();
    let event = owner.event("second left", |e| matches!(e, Event::MemberLeft { .. })).await;
    assert!(matches!(event, Event::MemberLeft { reason: LeaveReason::Left, .. }));
    assert_eq!(code_of(third.join(&code, "pc").await), ErrorCode::AddressPoolExhausted);

    let Ok(Response::Renamed { me }) =
        owner.request(Request::Rename { network: net, name: "desk".parse().unwrap() }).await
    else {
        panic!("rename")
    };
    assert_eq!(me.name.as_str(), "desk");
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_the_connection_stays_usable() {
    let server = TestServer::start().await;
    let mut device = server.device().await;

    let expect_error = |code| {
        move |message: Option<ServerMessage>| match message {
            // Answered under the request's id when it can be read, else as a bare error.
            Some(ServerMessage::Error { error })
            | Some(ServerMessage::Response {
                result: trellis_protocol::signal::ApiResult::Err(error), ..
            }) => {
                assert_eq!(error.code, code, "{}", error.message)
            }
            other => panic!("expected a {code:?} error, got {other:?}"),
        }
    };
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    device.ws.send(Message::Text("{not json".into())).await.unwrap();
    expect_error(ErrorCode::Malformed)(read(&mut device.ws).await);
    device
        .ws
        .send(Message::Text(r#"{"type":"request","id":1,"body":{"op":"explode"}}"#.into()))
        .await
        .unwrap();
    expect_error(ErrorCode::Malformed)(read(&mut device.ws).await);
    device.ws.send(Message::Binary(vec![1, 2, 3].into())).await.unwrap();
    expect_error(ErrorCode::Malformed)(read(&mut device.ws).await);
    let huge =
        format!(r#"{{"type":"request","id":1,"body":{{"op":"leave","network":"{}"}}}}"#, "a".repeat(70_000));
    device.ws.send(Message::Text(huge.into())).await.unwrap();
    expect_error(ErrorCode::TooLarge)(read(&mut device.ws).await);
    let again = ClientMessage::Authenticate { version: 1, device_key: device.key, proof: [0; 32] };
    send(&mut device.ws, &again).await;
    expect_error(ErrorCode::InvalidArgument)(read(&mut device.ws).await);

    // Still healthy, and nothing was created by any of it.
    let unknown = Request::ListMembers { network: trellis_protocol::NetworkId::random() };
    assert_eq!(code_of(device.request(unknown).await), ErrorCode::UnknownNetwork);
    assert!(device.create_network("after").await.me.owner);
}
