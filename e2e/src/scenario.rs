//! Steps the end-to-end scenarios share: forming a network by invite, waiting for a
//! peer's path, pinging and moving bulk data through the tunnel.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::process::wait_for_within;
use crate::topology::World;

/// Creates a network on `owner` and returns an invite ticket for it.
pub fn create_network(world: &World, owner: usize) -> String {
    let created = world.trellis(owner, &["create", "home", "--server", &world.server_url()]);
    assert!(created.ok(), "create: {created:?}");
    invite(world, owner, &[])
}

pub fn invite(world: &World, owner: usize, extra: &[&str]) -> String {
    let mut args = vec!["invite"];
    args.extend_from_slice(extra);
    let invite = world.trellis(owner, &args);
    assert!(invite.ok(), "invite: {invite:?}");
    invite.json()["ticket"].as_str().expect("the invite carries a ticket").to_string()
}

pub fn join(world: &World, home: usize, ticket: &str) {
    let joined = world.trellis(home, &["join", ticket]);
    assert!(joined.ok(), "join: {joined:?}");
}

/// The device's overlay address, from `trellis status`.
pub fn overlay_ip(world: &World, home: usize) -> String {
    let status = world.trellis(home, &["status"]).json();
    status["status"]["network"]["my_ip"]
        .as_str()
        .unwrap_or_else(|| panic!("no address: {status}"))
        .to_string()
}

/// The peer named `peer` as `home` sees it (`trellis peers`).
pub fn peer_view(world: &World, home: usize, peer: &str) -> Option<serde_json::Value> {
    let peers = world.trellis(home, &["peers"]);
    if !peers.ok() {
        return None;
    }
    peers.json()["peers"].as_array()?.iter().find(|p| p["name"] == peer).cloned()
}

/// Waits until `home` is connected to `peer` over a path of `kind` ("direct" or
/// "relayed"); returns how long it took.
pub fn wait_for_path(world: &World, home: usize, peer: &str, kind: &str, within: Duration) -> Duration {
    let start = Instant::now();
    wait_for_within(&format!("{} to reach {peer} {kind}", world.homes[home].name), within, || {
        let view = peer_view(world, home, peer)?;
        (view["state"]["state"] == "connected" && view["path"]["kind"] == kind).then_some(())
    });
    start.elapsed()
}

/// Waits until the kernel's ping from `home` to `ip` gets a reply through the tunnel.
pub fn wait_for_ping(world: &World, home: usize, ip: &str, within: Duration) -> Duration {
    let start = Instant::now();
    wait_for_within(&format!("a ping from {} to {ip}", world.homes[home].name), within, || {
        world.exec(home, &["ping", "-c", "1", "-W", "1", ip]).status.success().then_some(())
    });
    start.elapsed()
}

pub fn ping_fails(world: &World, home: usize, ip: &str) -> bool {
    !world.exec(home, &["ping", "-c", "2", "-W", "1", ip]).status.success()
}

/// A bulk transfer from `from` to `to` (whose overlay address is `to_ip`), in progress.
#[derive(Debug)]
pub struct Transfer {
    // Options so that `finish` can take them and `Drop` kill whatever a failed test left.
    receiver: Option<std::process::Child>,
    sender: Option<std::process::Child>,
}

const TRANSFER_PORT: &str = "9000";

impl Transfer {
    pub fn start(world: &World, from: usize, to: usize, to_ip: &str, bytes: u64) -> Self {
        let tool = transfer_tool();
        let tool = tool.to_str().unwrap();
        let mut receiver = world.homes[to]
            .device
            .command(tool)
            .args(["receive", TRANSFER_PORT])
            .stdout(Stdio::piped())
            .spawn()
            .expect("the receiver starts");
        // Wait for "listening" before the sender connects.
        let mut first = String::new();
        {
            use std::io::BufRead;
            let stdout = receiver.stdout.as_mut().unwrap();
            std::io::BufReader::new(stdout).read_line(&mut first).unwrap();
        }
        assert_eq!(first.trim(), "listening");
        let sender = world.homes[from]
            .device
            .command(tool)
            .args(["send", &format!("{to_ip}:{TRANSFER_PORT}"), &bytes.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("the sender starts");
        Self { receiver: Some(receiver), sender: Some(sender) }
    }

    /// Waits for both ends; asserts every byte arrived unaltered; returns the byte count.
    pub fn finish(mut self) -> u64 {
        let sent = self.sender.take().expect("not finished yet").wait_with_output().unwrap();
        let received = self.receiver.take().expect("not finished yet").wait_with_output().unwrap();
        assert!(sent.status.success(), "sender failed: {sent:?}");
        assert!(received.status.success(), "receiver failed: {received:?}");
        let sent = String::from_utf8_lossy(&sent.stdout).trim().to_string();
        let received = String::from_utf8_lossy(&received.stdout).trim().to_string();
        assert_eq!(sent, received, "the far side got different bytes (count and SHA-256)");
        sent.split_whitespace().next().unwrap().parse().unwrap()
    }
}

impl Transfer {
    /// Whether either end is still at work.
    pub fn is_running(&mut self) -> bool {
        [&mut self.sender, &mut self.receiver]
            .into_iter()
            .flatten()
            .any(|child| child.try_wait().expect("the transfer's state").is_none())
    }

    /// [`Transfer::finish`], failing (and killing both ends) if it takes longer than
    /// `within`: a tunnel that never comes back must fail the test, not hang it.
    pub fn finish_within(mut self, within: Duration) -> u64 {
        wait_for_within("the transfer to end", within, || (!self.is_running()).then_some(()));
        self.finish()
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        // Only after a failure: both ends would otherwise wait on a dead tunnel for minutes.
        for child in [&mut self.sender, &mut self.receiver].into_iter().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until one ping from `home` to `ip` is answered within 300 ms, polling: a finer
/// clock than [`wait_for_ping`] (whose failed tries cost a second each) for recovery
/// figures with floors of a few seconds. Returns how long it took.
pub fn wait_for_quick_ping(world: &World, home: usize, ip: &str, within: Duration) -> Duration {
    let start = Instant::now();
    wait_for_within(&format!("a quick ping from {} to {ip}", world.homes[home].name), within, || {
        world.exec(home, &["ping", "-c", "1", "-W", "0.3", ip]).status.success().then_some(())
    });
    start.elapsed()
}

/// Whether the home's device namespace has a network interface named `name`.
pub fn has_link(world: &World, home: usize, name: &str) -> bool {
    world.exec(home, &["ip", "link", "show", "dev", name]).status.success()
}

/// The far end of `home`'s path to `peer` (`trellis peers`), e.g. "203.0.113.12:41641".
pub fn path_remote(world: &World, home: usize, peer: &str) -> Option<String> {
    peer_view(world, home, peer)?["path"]["remote_addr"].as_str().map(str::to_string)
}

/// The `e2e-transfer` binary: cargo builds a package's binaries next to its integration
/// tests (`target/<profile>/`, one level above the test executables in `deps/`).
fn transfer_tool() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test knows its path");
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("tests run from target/<profile>/deps");
    let tool = dir.join("e2e-transfer");
    assert!(tool.exists(), "{} is missing: run the tests through cargo", tool.display());
    tool
}

/// 20 MB, as the issue asks: enough to notice loss, reordering or corruption.
pub const TRANSFER_BYTES: u64 = 20 * 1024 * 1024;
