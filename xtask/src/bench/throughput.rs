//! Part 1: iperf3 TCP both ways and ping RTT between two namespaces, for the raw veth (the
//! ceiling), wireguard-go, boringtun-cli, and Trellis direct and relayed.
//!
//! The raw, wireguard-go and boringtun-cli runs use two namespaces joined by one veth
//! (192.0.2.1 ↔ 192.0.2.2, overlay 100.64.0.1 ↔ 100.64.0.2). Trellis runs in the e2e
//! [`World`], whose signal server sits on the "internet" switch (a bridge):
//! - **direct**, the one compared: both devices on that switch with public addresses, so
//!   their packets cross two veths and the bridge;
//! - **direct via NATs**: each device behind its own easy NAT router (three veths, the
//!   bridge and two NATs), as most users meet it;
//! - **relayed**: behind symmetric NATs, through the signal server's TURN relay.
//!
//! All six are set up side by side and measured in turn: iperf3 [`Plan::rounds`] times,
//! then ping [`Plan::ping_rounds`] times; each figure is the median of its rounds.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use trellis_e2e::topology::{Nat, World};
use trellis_e2e::{veth, Netns, Process};

use super::{cpu_percent_during, gbits, iperf, name, pid_in, ping_ms, rss_bytes, wait_until, Plan, Row};

/// One round of iperf3.
#[derive(Debug, Clone)]
struct Throughput {
    forward_bps: f64,
    reverse_bps: f64,
}

/// One implementation's figures.
#[derive(Debug, Clone)]
pub struct Figures {
    pub forward_bps: f64,
    pub reverse_bps: f64,
    pub rtt_ms: f64,
    /// Each RTT round's average, in the order of the rounds.
    pub rtt_rounds_ms: Vec<f64>,
}

/// Trellis direct, with what the helpers used while carrying it (medians over the rounds).
#[derive(Debug, Clone)]
pub struct TrellisDirect {
    pub forward_bps: f64,
    pub reverse_bps: f64,
    /// Idle, connected to one peer, before any load.
    pub idle_rss: u64,
    pub idle_cpu_percent: f64,
    /// Both helpers together during the forward iperf3, in percent of one core.
    pub load_cpu_percent: f64,
}

#[derive(Debug)]
pub struct Output {
    pub rows: Vec<Row>,
    pub direct: Option<TrellisDirect>,
}

/// The two ends of one implementation's tunnel, kept up for all rounds.
struct Pair {
    /// Runs the iperf3 client and ping.
    client: usize,
    server: usize,
    server_ip: String,
    /// Daemons and guards that must live as long as the pair; dropped before the namespaces.
    _keep: Vec<Box<dyn std::fmt::Debug>>,
    namespaces: Vec<Netns>,
    /// Trellis only: the world that owns the namespaces, and the helpers' pids (server first).
    world: Option<World>,
    helpers: Vec<u32>,
}

impl Pair {
    fn ends(&self) -> (&Netns, &Netns) {
        match &self.world {
            Some(w) => (&w.homes[self.client].device, &w.homes[self.server].device),
            None => (&self.namespaces[self.client], &self.namespaces[self.server]),
        }
    }
}

pub fn run(plan: &Plan, boringtun: &Path) -> Result<Output> {
    type Setup<'a> = (&'static str, Box<dyn Fn() -> Result<Pair> + 'a>);
    let setups: Vec<Setup<'_>> = vec![
        ("raw veth (ceiling)", Box::new(raw)),
        ("wireguard-go", Box::new(|| userspace_wg(Userspace::WireguardGo))),
        ("boringtun-cli", Box::new(|| userspace_wg(Userspace::Boringtun(boringtun)))),
        // The contest: like the WireGuards, two devices on one link (with the server on it).
        ("Trellis direct", Box::new(|| trellis("d", Nat::Public, "direct"))),
        // As most users meet it: each device behind its own NAT router.
        ("Trellis direct via NATs", Box::new(|| trellis("n", Nat::Easy, "direct"))),
        ("Trellis relayed", Box::new(|| trellis("r", Nat::Symmetric, "relayed"))),
    ];
    // All six stand side by side (an idle tunnel costs nothing) and are measured in turn.
    let mut pairs: Vec<(&'static str, Result<Pair>)> = Vec::new();
    for (label, setup) in &setups {
        println!("    setting up {label}");
        let pair = std::panic::catch_unwind(std::panic::AssertUnwindSafe(setup))
            .unwrap_or_else(|_| Err(anyhow::anyhow!("setting up failed (see the log above)")));
        pairs.push((label, pair));
    }
    // Idle figures for part 3, before any load.
    let mut direct_stats = None;
    if let Some((_, Ok(pair))) = pairs.iter().find(|(l, _)| *l == "Trellis direct") {
        std::thread::sleep(Duration::from_secs(2)); // the join's signalling settles
        let owner = pair.helpers[0];
        let (idle_cpu_percent, ()) = cpu_percent_during(&[owner], || std::thread::sleep(plan.idle_window))?;
        direct_stats = Some(TrellisDirect {
            forward_bps: 0.0,
            reverse_bps: 0.0,
            idle_rss: rss_bytes(owner)?,
            idle_cpu_percent,
            load_cpu_percent: 0.0,
        });
    }
    let mut samples: Vec<Vec<Throughput>> = pairs.iter().map(|_| Vec::new()).collect();
    let mut errors: Vec<Option<String>> =
        pairs.iter().map(|(_, p)| p.as_ref().err().map(|e| format!("{e:#}"))).collect();
    let mut load_cpu = Vec::new();
    for round in 1..=plan.rounds {
        for (i, (label, pair)) in pairs.iter().enumerate() {
            let Ok(pair) = pair else { continue };
            if errors[i].is_some() {
                continue;
            }
            println!("    round {round}/{}: {label}", plan.rounds);
            match measure_throughput(plan, pair) {
                Ok((figures, cpu)) => {
                    if *label == "Trellis direct" {
                        load_cpu.push(cpu);
                    }
                    samples[i].push(figures);
                }
                Err(e) => errors[i] = Some(format!("{e:#}")),
            }
        }
    }
    let mut rtts: Vec<Vec<f64>> = pairs.iter().map(|_| Vec::new()).collect();
    println!("    RTT: {} rounds of {} pings each", plan.ping_rounds, plan.pings);
    for _ in 0..plan.ping_rounds {
        for (i, (_, pair)) in pairs.iter().enumerate() {
            let Ok(pair) = pair else { continue };
            if errors[i].is_some() {
                continue;
            }
            let (client, _) = pair.ends();
            match ping_ms(client, &pair.server_ip, plan.pings) {
                Ok(ms) => rtts[i].push(ms),
                Err(e) => errors[i] = Some(format!("{e:#}")),
            }
        }
    }
    drop(pairs);
    let results: Vec<Result<Figures, String>> = samples
        .into_iter()
        .zip(rtts)
        .zip(errors)
        .map(|((s, rtt), e)| match e {
            Some(e) => Err(e),
            None => Ok(median_figures(&s, rtt)),
        })
        .collect();

    let mut rows = Vec::new();
    for ((label, _), result) in setups.iter().zip(&results) {
        match result {
            Ok(f) => {
                rows.push(Row::figure(format!("{label}: throughput →"), gbits(f.forward_bps)));
                rows.push(Row::figure(format!("{label}: throughput ←"), gbits(f.reverse_bps)));
                let low = f.rtt_rounds_ms.iter().copied().fold(f64::INFINITY, f64::min);
                let high = f.rtt_rounds_ms.iter().copied().fold(0.0, f64::max);
                rows.push(Row::figure(
                    format!("{label}: RTT"),
                    format!("{:.3} ms (rounds {low:.3}–{high:.3})", f.rtt_ms),
                ));
            }
            Err(e) => rows.push(Row::not_measured(*label, e)),
        }
    }
    let (wg_go, boring, direct) = (&results[1], &results[2], &results[3]);
    if let (Some(stats), Ok(d)) = (&mut direct_stats, direct) {
        stats.forward_bps = d.forward_bps;
        stats.reverse_bps = d.reverse_bps;
        let mut cpu = load_cpu.clone();
        stats.load_cpu_percent = super::median(&mut cpu).unwrap_or(0.0);
    } else {
        direct_stats = None;
    }
    let ratio = |a: f64, b: f64| format!("{:.2}×", a / b);
    if let (Ok(t), Ok(w)) = (direct, wg_go) {
        // The smaller of the two directions' ratios.
        let slower = (t.forward_bps / w.forward_bps).min(t.reverse_bps / w.reverse_bps);
        rows.push(Row::figure(
            "Trellis direct / wireguard-go: throughput →",
            ratio(t.forward_bps, w.forward_bps),
        ));
        rows.push(Row::figure(
            "Trellis direct / wireguard-go: throughput ←",
            ratio(t.reverse_bps, w.reverse_bps),
        ));
        rows.push(
            Row::figure("Trellis direct / wireguard-go: throughput, slower way", format!("{slower:.2}×"))
                .floor(
                    "≥ 1.00× (both ways)",
                    t.forward_bps >= w.forward_bps && t.reverse_bps >= w.reverse_bps,
                ),
        );
        let rtt = rtt_ratio(t, w);
        rows.push(Row::figure("Trellis direct / wireguard-go: RTT", format!("{rtt:.2}×")));
    } else {
        rows.push(Row::not_measured("Trellis direct / wireguard-go", "a side above was not measured"));
    }
    if let (Ok(t), Ok(b)) = (direct, boring) {
        rows.push(Row::figure(
            "Trellis direct / boringtun-cli: throughput →",
            ratio(t.forward_bps, b.forward_bps),
        ));
        rows.push(Row::figure(
            "Trellis direct / boringtun-cli: throughput ←",
            ratio(t.reverse_bps, b.reverse_bps),
        ));
        let rtt = rtt_ratio(t, b);
        rows.push(
            Row::figure("Trellis direct / boringtun-cli: RTT", format!("{rtt:.2}×"))
                .floor("≤ 1.20×", rtt <= 1.2),
        );
    } else {
        rows.push(Row::not_measured("Trellis direct / boringtun-cli", "a side above was not measured"));
    }
    Ok(Output { rows, direct: direct_stats })
}

/// How much longer `a`'s RTT is than `b`'s: the median of the ratios within each round.
/// Neighbouring rounds differ by up to 2× on a shared machine, but the two sides of one
/// round ran a few seconds apart, under the same conditions.
fn rtt_ratio(a: &Figures, b: &Figures) -> f64 {
    let mut ratios: Vec<f64> = a.rtt_rounds_ms.iter().zip(&b.rtt_rounds_ms).map(|(x, y)| x / y).collect();
    super::median(&mut ratios).unwrap_or(a.rtt_ms / b.rtt_ms)
}

/// The median of each figure over the rounds, taken separately.
fn median_figures(throughput: &[Throughput], rtt_rounds_ms: Vec<f64>) -> Figures {
    let pick = |f: fn(&Throughput) -> f64| {
        let mut v: Vec<f64> = throughput.iter().map(f).collect();
        super::median(&mut v).unwrap_or(0.0)
    };
    Figures {
        forward_bps: pick(|t| t.forward_bps),
        reverse_bps: pick(|t| t.reverse_bps),
        rtt_ms: super::median(&mut rtt_rounds_ms.clone()).unwrap_or(0.0),
        rtt_rounds_ms,
    }
}

/// One round of iperf3 both ways on `pair`; also the helpers' CPU (percent of one core)
/// during the forward run.
fn measure_throughput(plan: &Plan, pair: &Pair) -> Result<(Throughput, f64)> {
    let (client, server) = pair.ends();
    let ip = &pair.server_ip;
    let (cpu, forward_bps) =
        cpu_percent_during(&pair.helpers, || iperf(server, client, ip, plan.iperf, false))?;
    let reverse_bps = iperf(server, client, ip, plan.iperf, true)?;
    Ok((Throughput { forward_bps: forward_bps?, reverse_bps }, cpu))
}

fn two_namespaces(tag: &str) -> Vec<Netns> {
    let a = Netns::new(name(&format!("{tag}a")));
    let b = Netns::new(name(&format!("{tag}b")));
    veth(&a, "192.0.2.1/24", &b, "192.0.2.2/24");
    vec![a, b]
}

fn raw() -> Result<Pair> {
    Ok(Pair {
        client: 0,
        server: 1,
        server_ip: "192.0.2.2".into(),
        namespaces: two_namespaces("v"),
        _keep: Vec::new(),
        world: None,
        helpers: Vec::new(),
    })
}

#[derive(Clone, Copy, Debug)]
enum Userspace<'a> {
    WireguardGo,
    Boringtun(&'a Path),
}

/// Removes a killed userspace WireGuard's control socket (its namespace takes the TUN).
#[derive(Debug)]
struct UapiSocket(String);

impl Drop for UapiSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(format!("/var/run/wireguard/{}.sock", self.0));
    }
}

fn userspace_wg(kind: Userspace<'_>) -> Result<Pair> {
    let tag = match kind {
        Userspace::WireguardGo => "g",
        Userspace::Boringtun(_) => "b",
    };
    let namespaces = two_namespaces(tag);
    let logs = tempfile::tempdir()?;
    let keys: Vec<(String, String)> = (0..2).map(|_| keypair()).collect::<Result<_>>()?;
    let mut keep: Vec<Box<dyn std::fmt::Debug>> = Vec::new();
    for (i, ns) in namespaces.iter().enumerate() {
        // UAPI sockets live in one global directory: the interface names must differ.
        let ifname = name(&format!("{tag}w{i}"));
        let daemon = match kind {
            Userspace::WireguardGo => Process::spawn(
                ns,
                &format!("wireguard-go-{i}"),
                Path::new("env"),
                // This kernel could have WireGuard; we want the userspace one.
                &["WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1", "wireguard-go", "-f", &ifname],
                logs.path(),
            ),
            Userspace::Boringtun(bin) => Process::spawn(
                ns,
                &format!("boringtun-{i}"),
                bin,
                &["-f", "--disable-drop-privileges", "-l", "/dev/null", &ifname],
                logs.path(),
            ),
        };
        // Dropped in order: the daemon first, then its socket file.
        keep.push(Box::new(daemon));
        keep.push(Box::new(UapiSocket(ifname.clone())));
        let socket = format!("/var/run/wireguard/{ifname}.sock");
        wait_until(Duration::from_secs(10), || Path::new(&socket).exists())
            .with_context(|| format!("{ifname} did not come up"))?;
        let key_file = logs.path().join(format!("key{i}"));
        std::fs::write(&key_file, &keys[i].0)?;
        let peer = 1 - i;
        let (endpoint, allowed) =
            (format!("192.0.2.{}:51820", peer + 1), format!("100.64.0.{}/32", peer + 1));
        ns.exec_ok(&[
            "wg",
            "set",
            &ifname,
            "listen-port",
            "51820",
            "private-key",
            key_file.to_str().unwrap(),
            "peer",
            &keys[peer].1,
            "allowed-ips",
            &allowed,
            "endpoint",
            &endpoint,
        ]);
        ns.exec_ok(&["ip", "addr", "add", &format!("100.64.0.{}/24", i + 1), "dev", &ifname]);
        ns.exec_ok(&["ip", "link", "set", &ifname, "mtu", "1420", "up"]);
    }
    // The first ping makes the handshake.
    let a = &namespaces[0];
    wait_until(Duration::from_secs(10), || {
        a.exec(&["ping", "-c", "1", "-W", "1", "100.64.0.2"]).status.success()
    })
    .context("no ping through the tunnel")?;
    keep.push(Box::new(logs));
    Ok(Pair {
        client: 0,
        server: 1,
        server_ip: "100.64.0.2".into(),
        namespaces,
        _keep: keep,
        world: None,
        helpers: Vec::new(),
    })
}

fn keypair() -> Result<(String, String)> {
    use std::io::Write;
    let private = std::process::Command::new("wg").arg("genkey").output().context("wg genkey")?;
    if !private.status.success() {
        bail!("wg genkey failed");
    }
    let mut child = std::process::Command::new("wg")
        .arg("pubkey")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    child.stdin.take().unwrap().write_all(&private.stdout)?;
    let public = child.wait_with_output()?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
    Ok((text(&private.stdout), text(&public.stdout)))
}

/// Trellis between two homes, home 1 (the joiner) measuring toward home 0 (the owner);
/// `tag` names the world's namespaces.
fn trellis(tag: &str, nat: Nat, kind: &str) -> Result<Pair> {
    let world = super::trellis_world(tag, nat, 2);
    let owner_ip = super::form_network(&world, kind);
    let helpers = vec![
        pid_in(&world.homes[0].device.name, "trellisd")?,
        pid_in(&world.homes[1].device.name, "trellisd")?,
    ];
    Ok(Pair {
        client: 1,
        server: 0,
        server_ip: owner_ip,
        namespaces: Vec::new(),
        _keep: Vec::new(),
        world: Some(world),
        helpers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtts(rounds: &[f64]) -> Figures {
        median_figures(&[Throughput { forward_bps: 1.0, reverse_bps: 1.0 }], rounds.to_vec())
    }

    /// A slow moment that hits both sides of a round cancels out; comparing the two sides'
    /// medians would not (here: 0.2 / 0.15 = 1.33×).
    #[test]
    fn the_rtt_ratio_pairs_the_sides_round_by_round() {
        let (a, b) = (rtts(&[0.2, 0.1, 0.3]), rtts(&[0.2, 0.05, 0.15]));
        assert_eq!(a.rtt_ms, 0.2);
        assert_eq!(b.rtt_ms, 0.15);
        assert_eq!(a.rtt_rounds_ms, vec![0.2, 0.1, 0.3], "rounds keep their order");
        assert_eq!(rtt_ratio(&a, &b), 2.0);
        assert_eq!(rtt_ratio(&b, &a), 0.5);
    }
}
