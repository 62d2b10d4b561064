//! STUN and TURN as a device meets them: credentials from its authenticated session.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{code_of, TestServer, DEADLINE};
use tokio::net::UdpSocket;
use tokio::time::timeout;
use trellis_protocol::signal::{ErrorCode, Request, Response, TurnCredentials};
use turn::client::{Client, ClientConfig};
use webrtc_util::Conn;

async fn turn_client(
    server: &TestServer,
    username: &str,
    password: &str,
    realm: &str,
) -> (Client, SocketAddr) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = socket.local_addr().unwrap();
    let relay = server.server.relay_addr.to_string();
    let client = Client::new(ClientConfig {
        stun_serv_addr: relay.clone(),
        turn_serv_addr: relay,
        username: username.into(),
        password: password.into(),
        realm: realm.into(),
        software: String::new(),
        rto_in_ms: 0,
        conn: Arc::new(socket),
        vnet: None,
    })
    .await
    .unwrap();
    client.listen().await.unwrap();
    (client, local)
}

#[tokio::test]
async fn stun_answers_carry_the_mapped_address() {
    let server = TestServer::start().await;
    let (client, local) = turn_client(&server, "", "", "trellis").await;
    let mapped = timeout(DEADLINE, client.send_binding_request()).await.expect("STUN answers").unwrap();
    assert_eq!(mapped, local);
    client.close().await.unwrap();
}

#[tokio::test]
async fn a_member_relays_with_its_credentials_and_nobody_relays_without() {
    let server = TestServer::start().await;
    let mut device = server.device().await;
    assert_eq!(server.server.relay_addr.port(), device.welcome.relay_port);
    assert_eq!(code_of(device.request(Request::TurnCredentials).await), ErrorCode::NotMember);
    device.create_network("home").await;
    let Ok(Response::TurnCredentials { credentials }) = device.request(Request::TurnCredentials).await else {
        panic!("members get credentials")
    };
    let TurnCredentials { username, password, realm, expires_at } = credentials;
    assert!(expires_at > 0);

    let (client, _) = turn_client(&server, &username, &password, &realm).await;
    let relayed =
        timeout(DEADLINE, client.allocate()).await.expect("allocate answers").expect("allocation works");
    let relayed_addr = relayed.local_addr().unwrap();
    assert_eq!(relayed_addr.ip(), server.server.relay_addr.ip());

    // Data from a peer reaches the device through the relay.
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    relayed.send_to(b"hello peer", peer.local_addr().unwrap()).await.unwrap(); // creates the permission
    let mut buf = [0u8; 64];
    let (n, from) =
        timeout(DEADLINE, peer.recv_from(&mut buf)).await.expect("peer hears the device").unwrap();
    assert_eq!(&buf[..n], b"hello peer");
    assert_eq!(from, relayed_addr);
    peer.send_to(b"hello device", relayed_addr).await.unwrap();
    let (n, _) =
        timeout(DEADLINE, relayed.recv_from(&mut buf)).await.expect("device hears the peer").unwrap();
    assert_eq!(&buf[..n], b"hello device");
    client.close().await.unwrap();

    for (user, pass) in [("", ""), (username.as_str(), "wrong-password")] {
        let (client, _) = turn_client(&server, user, pass, &realm).await;
        let refused =
            timeout(DEADLINE + Duration::from_secs(5), client.allocate()).await.expect("allocate answers");
        assert!(refused.is_err(), "allocation without valid credentials must fail");
        client.close().await.unwrap();
    }
}
