//! The relay against the turn crate's own client, over real UDP on 127.0.0.1.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use stun::agent::TransactionId;
use stun::error_code::{ErrorCodeAttribute, CODE_UNAUTHORIZED};
use stun::message::{Getter, Message, MessageType, Setter, CLASS_ERROR_RESPONSE, CLASS_REQUEST};
use tokio::net::UdpSocket;
use tokio::time::{timeout, Instant};
use trellis_protocol::signal::TurnCredentials;
use turn::client::{Client, ClientConfig};
use turn::proto::reqtrans::RequestedTransport;
use turn::proto::PROTO_UDP;
use webrtc_util::Conn;

use super::*;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const REALM: &str = "trellis.test";
/// The longest any test waits for something that should happen; only reached on failure.
const DEADLINE: Duration = Duration::from_secs(10);

/// A relay on 127.0.0.1 whose gate allows the devices in `members`.
struct Harness {
    relay: Relay,
    secret: RelaySecret,
    members: Arc<Mutex<HashSet<DeviceId>>>,
}

async fn start(quotas: RelayQuotas) -> Harness {
    let secret = RelaySecret::random();
    let members = Arc::new(Mutex::new(HashSet::new()));
    let gate = {
        let members = Arc::clone(&members);
        move |device: &DeviceId| members.lock().unwrap().contains(device)
    };
    let config = RelayConfig {
        listen: SocketAddr::new(LOCALHOST, 0),
        relay_ip: LOCALHOST,
        realm: REALM.into(),
        secret: secret.clone(),
        quotas,
    };
    let relay = Relay::start(config, Arc::new(gate)).await.unwrap();
    Harness { relay, secret, members }
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

impl Harness {
    /// A new device the gate allows.
    fn member(&self) -> DeviceId {
        let device = DeviceId::random();
        self.members.lock().unwrap().insert(device);
        device
    }

    fn credentials(&self, device: DeviceId) -> TurnCredentials {
        issue_credentials(&self.secret, device, now_unix(), REALM)
    }

    /// A turn client on its own socket; returns it with that socket's address.
    async fn client(&self, username: &str, password: &str) -> (Client, SocketAddr) {
        let socket = UdpSocket::bind(SocketAddr::new(LOCALHOST, 0)).await.unwrap();
        let local = socket.local_addr().unwrap();
        let server = self.relay.local_addr().to_string();
        let client = Client::new(ClientConfig {
            stun_serv_addr: server.clone(),
            turn_serv_addr: server,
            username: username.into(),
            password: password.into(),
            realm: REALM.into(),
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

    async fn allocate(&self, creds: &TurnCredentials) -> Result<(Client, impl Conn), turn::Error> {
        let (client, _) = self.client(&creds.username, &creds.password).await;
        let allocation = timeout(DEADLINE, client.allocate()).await.expect("allocate timed out")?;
        Ok((client, allocation))
    }
}

/// Polls `condition` until it holds; fails the test after [`DEADLINE`].
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn recv(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = [0u8; 1500];
    let (n, from) = timeout(DEADLINE, socket.recv_from(&mut buf)).await.expect("peer got nothing").unwrap();
    (buf[..n].to_vec(), from)
}

async fn peer() -> (UdpSocket, SocketAddr) {
    let socket = UdpSocket::bind(SocketAddr::new(LOCALHOST, 0)).await.unwrap();
    let addr = socket.local_addr().unwrap();
    (socket, addr)
}

#[tokio::test]
async fn stun_binding_reports_the_clients_address() {
    let h = start(RelayQuotas::default()).await;
    let (client, local) = h.client("", "").await;
    let mapped = timeout(DEADLINE, client.send_binding_request()).await.unwrap().unwrap();
    assert_eq!(mapped, local);
    h.relay.shutdown().await;
}

#[tokio::test]
async fn allocation_relays_both_ways() {
    let h = start(RelayQuotas::default()).await;
    let device = h.member();
    let (_client, allocation) = h.allocate(&h.credentials(device)).await.unwrap();
    let relayed = allocation.local_addr().unwrap();
    assert_eq!(relayed.ip(), LOCALHOST);
    assert_ne!(relayed.port(), h.relay.local_addr().port());
    assert_eq!(h.relay.allocations(&device), 1);

    let (peer, peer_addr) = peer().await;
    // Sending creates the permission for the peer first.
    allocation.send_to(b"to peer", peer_addr).await.unwrap();
    assert_eq!(recv(&peer).await, (b"to peer".to_vec(), relayed));

    peer.send_to(b"to device", relayed).await.unwrap();
    let mut buf = [0u8; 1500];
    let (n, from) = timeout(DEADLINE, allocation.recv_from(&mut buf)).await.unwrap().unwrap();
    assert_eq!((&buf[..n], from), (&b"to device"[..], peer_addr));
    h.relay.shutdown().await;
}

#[tokio::test]
async fn allocate_without_credentials_gets_401() {
    let h = start(RelayQuotas::default()).await;
    let (socket, _) = peer().await;
    let setters: [Box<dyn Setter>; 4] = [
        Box::new(TransactionId::new()),
        Box::new(MessageType::new(stun::message::METHOD_ALLOCATE, CLASS_REQUEST)),
        Box::new(RequestedTransport { protocol: PROTO_UDP }),
        Box::new(stun::fingerprint::FINGERPRINT),
    ];
    let mut request = Message::new();
    request.build(&setters).unwrap();
    socket.send_to(&request.raw, h.relay.local_addr()).await.unwrap();

    let (raw, from) = recv(&socket).await;
    assert_eq!(from, h.relay.local_addr());
    let mut response = Message { raw, ..Message::default() };
    response.decode().unwrap();
    assert_eq!(response.typ, MessageType::new(stun::message::METHOD_ALLOCATE, CLASS_ERROR_RESPONSE));
    let mut code = ErrorCodeAttribute::default();
    code.get_from(&response).unwrap();
    assert!(code.code == CODE_UNAUTHORIZED, "error {code}");
    h.relay.shutdown().await;
}

#[tokio::test]
async fn bad_credentials_are_refused() {
    let h = start(RelayQuotas::default()).await;
    let device = h.member();
    let good = h.credentials(device);

    let wrong_password = TurnCredentials {
        password: issue_credentials(&RelaySecret::random(), device, now_unix(), REALM).password,
        ..good.clone()
    };
    let expired = issue_credentials(&h.secret, device, now_unix() - CREDENTIAL_TTL.as_secs() - 60, REALM);
    let tampered =
        TurnCredentials { username: format!("{}:{device}", good.expires_at + 3600), ..good.clone() };
    let not_a_member = h.credentials(DeviceId::random());

    for (what, creds) in [
        ("wrong password", wrong_password),
        ("expired", expired),
        ("tampered", tampered),
        ("gate", not_a_member),
    ] {
        let err = h.allocate(&creds).await.err().unwrap_or_else(|| panic!("{what}: allocation succeeded"));
        assert!(err.to_string().contains("400"), "{what}: {err}");
    }
    assert_eq!(h.relay.allocations(&device), 0);
    // The same device with its real credentials is fine.
    assert!(h.allocate(&good).await.is_ok());
    h.relay.shutdown().await;
}

#[tokio::test]
async fn removed_device_is_refused_and_evicted() {
    let h = start(RelayQuotas::default()).await;
    let device = h.member();
    let creds = h.credentials(device);
    let (_client, _allocation) = h.allocate(&creds).await.unwrap();
    assert_eq!(h.relay.allocations(&device), 1);

    h.members.lock().unwrap().remove(&device);
    assert!(h.allocate(&creds).await.is_err());
    assert_eq!(h.relay.evict(&device), 1);
    wait_until("the evicted allocation is gone", || h.relay.allocations(&device) == 0).await;
    h.relay.shutdown().await;
}

#[tokio::test]
async fn allocation_count_quota() {
    let quotas = RelayQuotas { max_allocations_per_device: 2, ..RelayQuotas::default() };
    let h = start(quotas).await;
    let (device, other) = (h.member(), h.member());
    let creds = h.credentials(device);

    let (_c1, first) = h.allocate(&creds).await.unwrap();
    let (_c2, _second) = h.allocate(&creds).await.unwrap();
    let err = h.allocate(&creds).await.err().expect("a third allocation succeeded");
    // turn 0.17 answers a refused relay socket with 508 Insufficient Capacity.
    assert!(err.to_string().contains("508"), "{err}");
    assert_eq!(h.relay.allocations(&device), 2);
    // Quotas are per device.
    assert!(h.allocate(&h.credentials(other)).await.is_ok());

    // Releasing one (refresh with lifetime 0) frees a slot.
    first.close().await.unwrap();
    wait_until("the released allocation is gone", || h.relay.allocations(&device) == 1).await;
    assert!(h.allocate(&creds).await.is_ok());
    assert_eq!(h.relay.allocations(&device), 2);
    h.relay.shutdown().await;
}

#[tokio::test]
async fn lifetime_quota_ends_the_allocation() {
    let lifetime = Duration::from_secs(2);
    let quotas = RelayQuotas { max_allocation_lifetime: lifetime, ..RelayQuotas::default() };
    let h = start(quotas).await;
    let device = h.member();
    let started = Instant::now();
    let (_client, allocation) = h.allocate(&h.credentials(device)).await.unwrap();
    let relayed = allocation.local_addr().unwrap();
    assert_eq!(h.relay.allocations(&device), 1);

    wait_until("the allocation reaches its lifetime", || h.relay.allocations(&device) == 0).await;
    assert!(started.elapsed() >= lifetime, "closed after {:?}", started.elapsed());
    // The server forgot it too, and its port is free again.
    let remaining = h.relay.server.get_allocations_info(None).await.unwrap();
    assert!(remaining.is_empty(), "{remaining:?}");
    assert!(UdpSocket::bind(relayed).await.is_ok());
    h.relay.shutdown().await;
}

#[tokio::test]
async fn bandwidth_quota_drops_the_excess() {
    const RATE: u64 = 2_000;
    const DATAGRAM: usize = 500;
    const COUNT: usize = 40;
    /// A pause this long means the burst is over.
    const QUIET: Duration = Duration::from_millis(500);
    let quotas = RelayQuotas { bytes_per_second_per_allocation: RATE, ..RelayQuotas::default() };
    let h = start(quotas).await;
    let device = h.member();
    let started = Instant::now();
    let (_client, allocation) = h.allocate(&h.credentials(device)).await.unwrap();
    let relayed = allocation.local_addr().unwrap();
    let (peer, peer_addr) = peer().await;
    allocation.send_to(b"hi", peer_addr).await.unwrap();
    assert_eq!(recv(&peer).await.0, b"hi");

    // Each bucket starts with one second's worth and earns `RATE` per second since
    // the allocation was made, so by `last` at most this much can have passed.
    let allowed = |last: Instant| RATE + (RATE as f64 * (last - started).as_secs_f64()) as u64;

    // Peer → device.
    for _ in 0..COUNT {
        peer.send_to(&[7; DATAGRAM], relayed).await.unwrap();
    }
    let mut buf = [0u8; 1500];
    let (mut inbound, mut last) = (0, Instant::now());
    while let Ok(received) = timeout(QUIET, allocation.recv_from(&mut buf)).await {
        inbound += received.unwrap().0 as u64;
        last = Instant::now();
    }
    assert!(inbound >= RATE, "only {inbound} bytes relayed to the device");
    assert!(inbound <= allowed(last), "{inbound} bytes relayed to the device, more than {}", allowed(last));
    assert!(inbound < (COUNT * DATAGRAM) as u64);

    // Device → peer (the "hi" above already spent 2 bytes).
    for _ in 0..COUNT {
        allocation.send_to(&[9; DATAGRAM], peer_addr).await.unwrap();
    }
    let (mut outbound, mut last) = (0, Instant::now());
    while let Ok(received) = timeout(QUIET, peer.recv_from(&mut buf)).await {
        outbound += received.unwrap().0 as u64;
        last = Instant::now();
    }
    assert!(outbound >= RATE - DATAGRAM as u64, "only {outbound} bytes relayed to the peer");
    assert!(outbound <= allowed(last), "{outbound} bytes relayed to the peer, more than {}", allowed(last));
    assert!(outbound < (COUNT * DATAGRAM) as u64);
    h.relay.shutdown().await;
}

#[tokio::test]
async fn shutdown_ends_allocations() {
    let h = start(RelayQuotas::default()).await;
    let device = h.member();
    let (_client, _allocation) = h.allocate(&h.credentials(device)).await.unwrap();
    let registry = Arc::clone(&h.relay.registry);
    assert_eq!(registry.live(&device), 1);
    h.relay.shutdown().await;
    wait_until("shutdown ends the allocation", || registry.live(&device) == 0).await;
}

#[tokio::test]
async fn start_names_what_failed() {
    let config = |listen, relay_ip| RelayConfig {
        listen,
        relay_ip,
        realm: REALM.into(),
        secret: RelaySecret::random(),
        quotas: RelayQuotas::default(),
    };
    let gate: Arc<dyn DeviceGate> = Arc::new(|_: &DeviceId| true);

    let unspecified = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let err = Relay::start(config(SocketAddr::new(LOCALHOST, 0), unspecified), Arc::clone(&gate))
        .await
        .unwrap_err();
    assert!(matches!(err, RelayError::UnspecifiedRelayIp { .. }), "{err}");

    let (_taken, taken_addr) = peer().await;
    let err = Relay::start(config(taken_addr, LOCALHOST), gate).await.unwrap_err();
    assert!(matches!(err, RelayError::Bind { addr, .. } if addr == taken_addr), "{err}");
    assert!(err.to_string().contains(&taken_addr.to_string()), "{err}");
}

#[test]
fn relay_types_cross_threads() {
    // The server keeps a `Relay` in shared state and turns `RelayError` into `anyhow::Error`.
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Relay>();
    shareable::<RelayError>();
    shareable::<RelayConfig>();
}
