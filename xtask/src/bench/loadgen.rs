//! The signal server's load generator (`cargo xtask bench-signal-load`, started by part 4
//! inside the server's namespace): many devices on WebSocket, and sealed signal forwarded
//! at a fixed rate between pairs of them, timed from request to the receiver's event.
//!
//! Prints one JSON line on stdout when done; progress goes to stderr.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use trellis_protocol::keys::{auth_proof, generate_secret};
use trellis_protocol::sealed::SealedEnvelope;
use trellis_protocol::signal::{ApiResult, ClientMessage, Event, Request, Response, ServerMessage};
use trellis_protocol::{NetworkId, PublicKey, PROTOCOL_VERSION};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Pairs that exchange signal; each sender sends at [`SIGNALS_PER_SECOND_PER_PAIR`], below
/// the server's default per-session request limit (1200 per minute).
const PAIRS: usize = 20;
const SIGNALS_PER_SECOND_PER_PAIR: u64 = 10;
/// Connections being opened at once.
const CONNECT_CONCURRENCY: usize = 200;
/// About the size of a sealed ICE offer.
const CIPHERTEXT_BYTES: usize = 300;

#[derive(Debug)]
struct Options {
    url: String,
    devices: usize,
    server_pid: u32,
    duration: Duration,
}

fn parse(args: &[String]) -> Result<Options> {
    let value = |flag: &str| -> Result<&str> {
        let i = args.iter().position(|a| a == flag).ok_or_else(|| anyhow!("missing {flag}"))?;
        args.get(i + 1).map(String::as_str).ok_or_else(|| anyhow!("{flag} needs a value"))
    };
    Ok(Options {
        url: value("--url")?.to_string(),
        devices: value("--devices")?.parse()?,
        server_pid: value("--server-pid")?.parse()?,
        duration: Duration::from_secs(value("--seconds")?.parse()?),
    })
}

pub fn run(args: &[String]) -> Result<()> {
    let options = parse(args).context(
        "usage: cargo xtask bench-signal-load --url ws://HOST:PORT --devices N --server-pid PID --seconds S",
    )?;
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(load(options))?;
    println!("{report}");
    Ok(())
}

async fn load(o: Options) -> Result<serde_json::Value> {
    let baseline = super::rss_bytes(o.server_pid)?;
    let pairs = PAIRS.min(o.devices / 2);
    // The pairs: an owner creates a network, the other joins it by invite.
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for i in 0..pairs {
        let (mut owner, owner_key) = connect(&o.url).await?;
        let created = request(
            &mut owner,
            1,
            Request::CreateNetwork {
                name: format!("load{i}").parse()?,
                device_name: "owner".parse()?,
                range: None,
            },
        )
        .await?;
        let Response::NetworkCreated { membership } = created else { bail!("unexpected {created:?}") };
        let network = membership.network.id;
        let invite =
            request(&mut owner, 2, Request::CreateInvite { network, max_uses: None, expires_in_secs: None })
                .await?;
        let Response::InviteCreated { code, .. } = invite else { bail!("unexpected {invite:?}") };
        let (mut guest, guest_key) = connect(&o.url).await?;
        request(&mut guest, 1, Request::Join { code, device_name: "guest".parse()? }).await?;
        senders.push((owner, owner_key, guest_key, network));
        receivers.push(guest);
    }
    eprintln!("loadgen: {pairs} pairs in their networks");

    // The rest connect and stay idle (answering pings).
    let idle = o.devices - 2 * pairs;
    let started = Instant::now();
    let connected = futures_util::stream::iter(0..idle)
        .map(|_| {
            let url = o.url.clone();
            async move { connect(&url).await }
        })
        .buffer_unordered(CONNECT_CONCURRENCY);
    let mut idle_tasks = Vec::with_capacity(idle);
    let mut connected = std::pin::pin!(connected);
    while let Some(result) = connected.next().await {
        let (ws, _) = result?;
        idle_tasks.push(tokio::spawn(async move {
            let (_write, mut read) = ws.split();
            while let Some(Ok(_)) = read.next().await {}
        }));
        if idle_tasks.len() % 1000 == 0 {
            eprintln!("loadgen: {} idle devices connected", idle_tasks.len());
        }
    }
    let connect_secs = started.elapsed().as_secs_f64();
    eprintln!("loadgen: {} devices connected in {connect_secs:.1} s", o.devices);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let loaded = super::rss_bytes(o.server_pid)?;

    // Signal at a fixed rate; the counter carries the send time in microseconds.
    let epoch = Instant::now();
    let latencies = Arc::new(Mutex::new(Vec::<u64>::new()));
    let mut tasks = Vec::new();
    for ws in receivers {
        let latencies = latencies.clone();
        tasks.push(tokio::spawn(async move {
            let (_write, mut read) = ws.split();
            while let Some(Ok(Message::Text(text))) = read.next().await {
                if let Ok(ServerMessage::Event { event: Event::Signal { envelope, .. } }) =
                    serde_json::from_str(text.as_str())
                {
                    let now = epoch.elapsed().as_micros() as u64;
                    latencies.lock().unwrap().push(now.saturating_sub(envelope.counter));
                }
            }
        }));
    }
    let count = o.duration.as_secs() * SIGNALS_PER_SECOND_PER_PAIR;
    let mut send_tasks = Vec::new();
    for (ws, from, to, network) in senders {
        send_tasks.push(tokio::spawn(send_signals(ws, from, to, network, count, epoch)));
    }
    for task in send_tasks {
        task.await??;
    }
    tokio::time::sleep(Duration::from_secs(1)).await; // the last ones in flight
    let mut latencies = std::mem::take(&mut *latencies.lock().unwrap());
    latencies.sort_unstable();
    let sent = count as usize * pairs;
    let percentile = |p: f64| {
        latencies.get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
    };
    for task in idle_tasks.into_iter().chain(tasks) {
        task.abort();
    }
    Ok(serde_json::json!({
        "devices": o.devices,
        "connect_secs": connect_secs,
        "server_rss_baseline": baseline,
        "server_rss_loaded": loaded,
        "signals_sent": sent,
        "signals_received": latencies.len(),
        "rate_per_sec": pairs as u64 * SIGNALS_PER_SECOND_PER_PAIR,
        "p50_micros": percentile(0.50),
        "p99_micros": percentile(0.99),
    }))
}

async fn send_signals(
    ws: Ws,
    from: PublicKey,
    to: PublicKey,
    network: NetworkId,
    count: u64,
    epoch: Instant,
) -> Result<()> {
    let (mut write, mut read) = ws.split();
    // Responses ("done") are read and dropped so the socket never backs up.
    let drain = tokio::spawn(async move { while let Some(Ok(_)) = read.next().await {} });
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / SIGNALS_PER_SECOND_PER_PAIR));
    for id in 0..count {
        tick.tick().await;
        let envelope = SealedEnvelope {
            from,
            to,
            counter: epoch.elapsed().as_micros() as u64,
            nonce: [0; 24],
            ciphertext: vec![0; CIPHERTEXT_BYTES],
        };
        let message = ClientMessage::Request { id: 100 + id, body: Request::Signal { network, envelope } };
        write.send(Message::text(serde_json::to_string(&message)?)).await?;
    }
    drain.abort();
    Ok(())
}

/// Opens a WebSocket and authenticates a fresh device key; returns after the welcome.
async fn connect(url: &str) -> Result<(Ws, PublicKey)> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{url}/v1/signal"))
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let secret = generate_secret();
    let key = PublicKey::of(&secret);
    let ServerMessage::Challenge { server_key, challenge, .. } = next(&mut ws).await? else {
        bail!("the server did not open with a challenge");
    };
    let proof = auth_proof(&secret, &server_key, &challenge, &key, &server_key)?;
    let hello = ClientMessage::Authenticate { version: PROTOCOL_VERSION, device_key: key, proof };
    ws.send(Message::text(serde_json::to_string(&hello)?)).await?;
    match next(&mut ws).await? {
        ServerMessage::Welcome(_) => Ok((ws, key)),
        other => bail!("authentication failed: {other:?}"),
    }
}

/// Sends a request and waits for its response, skipping events.
async fn request(ws: &mut Ws, id: u64, body: Request) -> Result<Response> {
    let message = ClientMessage::Request { id, body };
    ws.send(Message::text(serde_json::to_string(&message)?)).await?;
    loop {
        if let ServerMessage::Response { id: got, result } = next(ws).await? {
            if got == id {
                return match result {
                    ApiResult::Ok(response) => Ok(response),
                    ApiResult::Err(e) => Err(anyhow!("request {id} failed: {e}")),
                };
            }
        }
    }
}

async fn next(ws: &mut Ws) -> Result<ServerMessage> {
    loop {
        match ws.next().await.ok_or_else(|| anyhow!("the server closed the connection"))?? {
            Message::Text(text) => return Ok(serde_json::from_str(text.as_str())?),
            Message::Close(frame) => bail!("the server closed the connection: {frame:?}"),
            _ => continue,
        }
    }
}
