//! Proof of key: only the holder of a device's private key can speak for it.

mod common;

use common::{authenticate, open, read, send, TestServer};
use trellis_protocol::keys::{auth_proof, generate_secret};
use trellis_protocol::signal::{ClientMessage, ErrorCode, Request, ServerMessage};
use trellis_protocol::PublicKey;

fn error_code(message: Option<ServerMessage>) -> ErrorCode {
    match message {
        Some(ServerMessage::Error { error }) => error.code,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_proof_made_without_the_private_key_is_refused() {
    let server = TestServer::start().await;
    let (mut ws, server_key, challenge) = open(&server.url()).await;
    let victim = PublicKey::of(&generate_secret());
    let impostor = generate_secret();
    // The impostor signs with its own secret while claiming the victim's key.
    let proof = auth_proof(&impostor, &server_key, &challenge, &victim, &server_key).unwrap();
    send(&mut ws, &ClientMessage::Authenticate { version: 1, device_key: victim, proof }).await;
    assert_eq!(error_code(read(&mut ws).await), ErrorCode::Unauthenticated);
    assert!(read(&mut ws).await.is_none(), "the connection is closed");
}

#[tokio::test]
async fn requests_before_authentication_and_other_versions_are_refused() {
    let server = TestServer::start().await;
    let (mut ws, _, _) = open(&server.url()).await;
    send(&mut ws, &ClientMessage::Request { id: 1, body: Request::TurnCredentials }).await;
    assert_eq!(error_code(read(&mut ws).await), ErrorCode::Unauthenticated);

    let (mut ws, server_key, challenge) = open(&server.url()).await;
    let secret = generate_secret();
    let key = PublicKey::of(&secret);
    let proof = auth_proof(&secret, &server_key, &challenge, &key, &server_key).unwrap();
    send(&mut ws, &ClientMessage::Authenticate { version: 99, device_key: key, proof }).await;
    let Some(ServerMessage::Error { error }) = read(&mut ws).await else { panic!("expected an error") };
    assert_eq!(error.code, ErrorCode::VersionMismatch);
    assert!(error.message.contains("99"), "{}", error.message);

    // The real key still works.
    let (_, answer) = authenticate(&server.url(), &secret).await;
    assert!(matches!(answer, Some(ServerMessage::Welcome(_))));
}

#[tokio::test]
async fn health_endpoint_answers() {
    let server = TestServer::start().await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(server.server.api_addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut body = String::new();
    tcp.read_to_string(&mut body).await.unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("\"protocol_version\":1"), "{body}");
}
