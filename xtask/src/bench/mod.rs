//! `cargo xtask bench`: Trellis against the WireGuard implementations it competes with, in
//! network namespaces on this machine, printed as one table with floors marked PASS/FAIL.
//!
//! 1. [`throughput`]: iperf3 and ping over one veth: raw, wireguard-go, boringtun-cli,
//!    Trellis direct and relayed.
//! 2. [`join`]: join → first ping reply, direct and relayed.
//! 3. [`helper`]: the helper's idle memory and CPU with 1 and 10 peers, CPU under load.
//! 4. [`signal`]: the signal server with thousands of devices from [`loadgen`].
//!
//! `--quick` runs everything briefly and fails only if the bench cannot run or Trellis
//! carries no traffic: timings on a shared machine are figures to read, not assertions.
//! Every namespace starts with [`PREFIX`] and is removed on exit, error and Ctrl-C.

mod helper;
mod join;
pub mod loadgen;
mod signal;
mod throughput;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use trellis_e2e::scenario::{create_network, invite, join, overlay_ip, wait_for_path, wait_for_ping};
use trellis_e2e::topology::{Nat, World, API_PORT, RELAY_PORT, SERVER_IP};
use trellis_e2e::{binaries, namespaces_with_prefix, remove_namespace, wait_for, Netns, Process, DEADLINE};

use crate::system;

/// Every bench namespace (and WireGuard interface) starts with this.
const PREFIX: &str = "tb";

const USAGE: &str = "usage: cargo xtask bench [--quick] [--part N]...

  --quick   short durations; fails only if the bench cannot run or Trellis carries no traffic
  --part N  only part N (1 throughput and RTT, 2 join, 3 helper, 4 signal server); repeatable";

/// How long and how often each measurement runs.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub quick: bool,
    /// Each iperf3 direction.
    pub iperf: Duration,
    /// Part 1 measures every implementation this many times, interleaved, and keeps the
    /// median: on a shared machine a neighbour's burst then hits one round, not one side.
    pub rounds: usize,
    /// RTT is measured apart from throughput, in this many short rounds of `pings` pings,
    /// interleaved between the implementations; the figure is the median of the rounds'
    /// averages. A round's average moves with the machine's state of the moment far more
    /// than with the number of pings, so many short rounds judge better than a few long ones.
    pub ping_rounds: usize,
    pub pings: u32,
    pub join_repeats: usize,
    /// The window over which idle CPU is measured.
    pub idle_window: Duration,
    pub many_peers: usize,
    pub signal_devices: &'static [usize],
    pub signal_duration: Duration,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                quick,
                iperf: Duration::from_secs(2),
                rounds: 1,
                ping_rounds: 2,
                pings: 5,
                join_repeats: 1,
                idle_window: Duration::from_secs(2),
                many_peers: 2,
                signal_devices: &[100],
                signal_duration: Duration::from_secs(2),
            }
        } else {
            Self {
                quick,
                iperf: Duration::from_secs(10),
                rounds: 3,
                ping_rounds: 10,
                pings: 30,
                join_repeats: 5,
                idle_window: Duration::from_secs(10),
                many_peers: 10,
                signal_devices: &[1_000, 10_000],
                signal_duration: Duration::from_secs(10),
            }
        }
    }
}

/// One line of the table.
#[derive(Debug)]
pub struct Row {
    pub metric: String,
    pub value: String,
    pub floor: String,
    pub verdict: Option<bool>,
}

impl Row {
    pub fn figure(metric: impl Into<String>, value: impl Into<String>) -> Self {
        Self { metric: metric.into(), value: value.into(), floor: String::new(), verdict: None }
    }

    pub fn floor(mut self, floor: impl Into<String>, pass: bool) -> Self {
        self.floor = floor.into();
        self.verdict = Some(pass);
        self
    }

    pub fn not_measured(metric: impl Into<String>, why: impl std::fmt::Display) -> Self {
        Self::figure(metric, format!("not measured: {why}"))
    }
}

/// What the command line asks for: `--quick`, and which parts (all when none is named).
fn parse_args(args: &[String]) -> Result<(bool, Vec<u8>)> {
    let mut quick = false;
    let mut parts = Vec::new();
    let mut args = args.iter().map(String::as_str);
    while let Some(arg) = args.next() {
        match arg {
            "--quick" => quick = true,
            "--part" => match args.next().and_then(|n| n.parse::<u8>().ok()) {
                Some(n @ 1..=4) => parts.push(n),
                _ => bail!("--part takes a part number from 1 to 4\n\n{USAGE}"),
            },
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    if parts.is_empty() {
        parts = vec![1, 2, 3, 4];
    }
    Ok((quick, parts))
}

pub fn run(args: &[String]) -> Result<()> {
    let (quick, parts) = parse_args(args)?;
    let plan = Plan::new(quick);
    let mut packages = system::TEST_PACKAGES.to_vec();
    packages.extend_from_slice(system::BENCH_PACKAGES);
    system::ensure_packages(&packages)?;
    system::require_root_and_tun("the bench")?;
    let boringtun = ensure_boringtun()?;
    std::env::set_var("TRELLIS_E2E_BIN_DIR", crate::e2e_bin_dir());
    for bin in ["trellis-signal", "trellisd", "trellis"] {
        let path = crate::e2e_bin_dir().join(bin);
        if !path.exists() {
            bail!("{} is missing: build it with `cargo {}`", path.display(), crate::E2E_BUILD.join(" "));
        }
    }
    if clean() > 0 {
        println!("==> removed leftovers of an earlier bench");
    }
    ctrlc::set_handler(|| {
        eprintln!("\n==> interrupted: cleaning up");
        clean();
        std::process::exit(130);
    })
    .context("cannot watch Ctrl-C")?;

    let started = Instant::now();
    let mut table: Vec<(&str, Vec<Row>)> = Vec::new();
    let mut trellis_carried = false;

    let mut direct = None;
    if parts.contains(&1) {
        println!("==> 1. throughput and RTT");
        let part1 = guarded("throughput", || throughput::run(&plan, &boringtun));
        let rows = match part1 {
            Ok(out) => {
                direct = out.direct;
                out.rows
            }
            Err(e) => vec![Row::not_measured("throughput and RTT", format!("{e:#}"))],
        };
        if let Some(direct) = &direct {
            trellis_carried = direct.forward_bps > 0.0 && direct.reverse_bps > 0.0;
        }
        table.push(("1. throughput (iperf3 TCP) and RTT (ping)", rows));
    }

    if parts.contains(&2) {
        println!("==> 2. join → first ping");
        let rows = guarded("join", || join::run(&plan))
            .unwrap_or_else(|e| vec![Row::not_measured("join → first ping", format!("{e:#}"))]);
        table.push(("2. join → first ping reply", rows));
    }

    if parts.contains(&3) {
        println!("==> 3. helper resources");
        let rows = guarded("helper", || helper::run(&plan, direct.as_ref()))
            .unwrap_or_else(|e| vec![Row::not_measured("helper resources", format!("{e:#}"))]);
        table.push(("3. helper (trellisd) resources", rows));
    }

    if parts.contains(&4) {
        println!("==> 4. signal server load");
        let rows = guarded("signal", || signal::run(&plan))
            .unwrap_or_else(|e| vec![Row::not_measured("signal server", format!("{e:#}"))]);
        table.push(("4. signal server", rows));
    }

    clean();
    print_table(&table, &plan, started.elapsed());
    // Only part 1 carries traffic through Trellis; without it there is nothing to check.
    if parts.contains(&1) && !trellis_carried {
        bail!("Trellis carried no traffic through the tunnel (see the table)");
    }
    Ok(())
}

/// Runs one part; a panic inside the harness (a failed step, with its logs) becomes an error
/// for that part's rows, and the namespaces it left are removed.
fn guarded<T>(part: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(anyhow!("the {part} bench failed (see the log above)")));
    clean();
    out
}

fn print_table(table: &[(&str, Vec<Row>)], plan: &Plan, took: Duration) {
    let rows = table.iter().flat_map(|(_, rows)| rows);
    let metric = rows.clone().map(|r| r.metric.chars().count()).max().unwrap_or(0);
    // Long values ("not measured: why") do not stretch the column; the floor follows them.
    let value = rows.clone().map(|r| r.value.chars().count()).filter(|n| *n <= 40).max().unwrap_or(0);
    let floor = rows.map(|r| r.floor.chars().count()).max().unwrap_or(0);
    let mode = if plan.quick { " --quick (short runs: figures not comparable)" } else { "" };
    println!("\n===== cargo xtask bench{mode}, {} s =====", took.as_secs());
    for (title, rows) in table {
        println!("\n{title}");
        for row in rows {
            let verdict = match row.verdict {
                Some(true) => "PASS",
                Some(false) => "FAIL",
                None => "",
            };
            let line =
                format!("  {:<metric$}  {:<value$}  {:<floor$}  {verdict}", row.metric, row.value, row.floor);
            println!("{}", line.trim_end());
        }
    }
    let verdicts: Vec<bool> = table.iter().flat_map(|(_, rows)| rows).filter_map(|r| r.verdict).collect();
    let passed = verdicts.iter().filter(|v| **v).count();
    println!("\nfloors: {passed} PASS, {} FAIL\n", verdicts.len() - passed);
}

fn clean() -> usize {
    let leftovers = namespaces_with_prefix(PREFIX);
    for name in &leftovers {
        remove_namespace(name);
    }
    // Userspace WireGuard keeps its control socket here when killed.
    if let Ok(dir) = std::fs::read_dir("/var/run/wireguard") {
        for entry in dir.flatten() {
            if entry.file_name().to_string_lossy().starts_with(PREFIX) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    leftovers.len()
}

/// boringtun-cli from crates.io, installed once under target/bench-tools.
fn ensure_boringtun() -> Result<PathBuf> {
    let root = crate::workspace_root().join("target").join("bench-tools");
    let bin = root.join("bin").join("boringtun-cli");
    if !bin.exists() {
        println!("==> installing boringtun-cli from crates.io into {}", root.display());
        system::run("cargo", &["install", "--locked", "boringtun-cli", "--root", root.to_str().unwrap()])?;
    }
    Ok(bin)
}

/// A short name unique to this run: `tb<pid><tag>`, at most 15 characters with suffixes.
pub fn name(tag: &str) -> String {
    format!("{PREFIX}{}{tag}", std::process::id() % 10_000)
}

/// iperf3 TCP for `duration` from `client` to the server at `server_ip` in `server`;
/// `reverse` makes the server send. Returns the receiver's bits per second.
pub fn iperf(
    server: &Netns,
    client: &Netns,
    server_ip: &str,
    duration: Duration,
    reverse: bool,
) -> Result<f64> {
    let logs = tempfile::tempdir()?;
    let _server = Process::spawn(server, "iperf3-server", Path::new("iperf3"), &["-s", "-1"], logs.path());
    wait_until(Duration::from_secs(10), || {
        let out = server.exec(&["ss", "-Htln", "sport = :5201"]);
        !String::from_utf8_lossy(&out.stdout).trim().is_empty()
    })
    .context("iperf3 server did not listen")?;
    let secs = duration.as_secs().max(1).to_string();
    let mut args = vec!["iperf3", "-c", server_ip, "-t", &secs, "-J"];
    if reverse {
        args.push("-R");
    }
    let out = client.exec(&args);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("iperf3 printed no JSON: {}", String::from_utf8_lossy(&out.stderr)))?;
    if let Some(error) = json["error"].as_str() {
        bail!("iperf3 to {server_ip}: {error}");
    }
    json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or_else(|| anyhow!("iperf3 to {server_ip}: no sum_received in its JSON"))
}

/// The average RTT in milliseconds of `count` pings from `ns` to `ip`, 50 ms apart: long
/// enough for the CPUs to go idle between pings, as they do between a user's packets.
pub fn ping_ms(ns: &Netns, ip: &str, count: u32) -> Result<f64> {
    let out = ns.exec(&["ping", "-q", "-n", "-i", "0.05", "-c", &count.to_string(), ip]);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("rtt") || l.starts_with("round-trip"))
        .ok_or_else(|| anyhow!("ping {ip} got no replies: {text}"))?;
    let avg = line.split('=').nth(1).and_then(|v| v.trim().split('/').nth(1));
    avg.and_then(|v| v.parse().ok()).ok_or_else(|| anyhow!("cannot read ping's summary: {line}"))
}

/// Polls `check` every 50 ms until it holds or `within` passes.
pub fn wait_until(within: Duration, mut check: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + within;
    while !check() {
        if Instant::now() > deadline {
            bail!("still not true after {} s", within.as_secs());
        }
        std::thread::sleep(Duration::from_millis(50)); // polling interval
    }
    Ok(())
}

/// The process named `comm` running in namespace `ns`.
pub fn pid_in(ns: &str, comm: &str) -> Result<u32> {
    let out = Command::new("ip").args(["netns", "pids", ns]).output()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .find(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm))
        .ok_or_else(|| anyhow!("no {comm} process in namespace {ns}"))
}

/// Resident memory of `pid` in bytes.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .ok_or_else(|| anyhow!("no VmRSS for pid {pid}"))?;
    Ok(kb * 1024)
}

/// CPU time (user + system) `pid` has used so far.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or_else(|| anyhow!("odd /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(Duration::from_millis(ticks * 1000 / clock_ticks()))
}

fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

/// CPU use of `pids` together while `during` runs, in percent of one core.
pub fn cpu_percent_during<T>(pids: &[u32], during: impl FnOnce() -> T) -> Result<(f64, T)> {
    let total = |pids: &[u32]| -> Result<Duration> { pids.iter().map(|p| cpu_time(*p)).sum() };
    let (before, start) = (total(pids)?, Instant::now());
    let out = during();
    let used = total(pids)?.saturating_sub(before);
    Ok((100.0 * used.as_secs_f64() / start.elapsed().as_secs_f64(), out))
}

pub fn gbits(bps: f64) -> String {
    format!("{:.2} Gbit/s", bps / 1e9)
}

pub fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
}

/// The median of `values` (sorted here); `None` if empty.
pub fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

/// The relay quota for the bench: high enough never to be the bottleneck (10 GB/s).
const BENCH_RELAY_BYTES_PER_SECOND: u64 = 10_000_000_000;

/// A [`World`] with the signal server (relay quota [`BENCH_RELAY_BYTES_PER_SECOND`]) and
/// `homes` helpers behind routers of kind `nat`, none in a network yet.
pub fn trellis_world(tag: &str, nat: Nat, homes: usize) -> World {
    let mut world = World::with_prefix(name(tag));
    let config = world.dir.path().join("signal.toml");
    std::fs::write(
        &config,
        format!("[relay_quotas]\nbytes_per_second_per_allocation = {BENCH_RELAY_BYTES_PER_SECOND}\n"),
    )
    .unwrap();
    let (listen, relay) = (format!("{SERVER_IP}:{API_PORT}"), format!("{SERVER_IP}:{RELAY_PORT}"));
    let data = world.server_data();
    let server = Process::spawn(
        &world.internet,
        "trellis-signal",
        &binaries().join("trellis-signal"),
        &[
            "--listen",
            &listen,
            "--relay-listen",
            &relay,
            "--data-dir",
            data.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
        world.dir.path(),
    );
    world.server = Some(server);
    let internet = &world.internet;
    wait_for("the signal server to listen", || {
        let out = internet.exec(&["ss", "-Htln", &format!("sport = :{API_PORT}")]);
        (!String::from_utf8_lossy(&out.stdout).trim().is_empty()).then_some(())
    });
    for i in 0..homes {
        let home = world.add_home(&format!("h{i}"), nat);
        world.start_helper(home);
    }
    world
}

/// Home 0 creates a network, the others join; waits until home 1 pings home 0 through the
/// tunnel over a `kind` path. Returns home 0's overlay address.
pub fn form_network(world: &World, kind: &str) -> String {
    let ticket = create_network(world, 0);
    let owner_ip = overlay_ip(world, 0);
    let uses = (world.homes.len() - 1).max(1).to_string();
    let ticket = if world.homes.len() > 2 { invite(world, 0, &["--uses", &uses]) } else { ticket };
    for home in 1..world.homes.len() {
        join(world, home, &ticket);
    }
    wait_for_ping(world, 1, &owner_ip, DEADLINE);
    wait_for_path(world, 1, "h0", kind, DEADLINE);
    owner_ip
}

#[cfg(test)]
mod tests {
    use super::parse_args;

    fn parse(args: &[&str]) -> anyhow::Result<(bool, Vec<u8>)> {
        parse_args(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn every_part_runs_unless_some_are_named() {
        assert_eq!(parse(&[]).unwrap(), (false, vec![1, 2, 3, 4]));
        assert_eq!(parse(&["--quick"]).unwrap(), (true, vec![1, 2, 3, 4]));
        assert_eq!(parse(&["--part", "1", "--quick", "--part", "3"]).unwrap(), (true, vec![1, 3]));
    }

    #[test]
    fn a_bad_part_or_argument_is_refused_with_the_usage() {
        for bad in [&["--part"][..], &["--part", "5"], &["--part", "x"], &["--fast"]] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains("usage: cargo xtask bench"), "{bad:?}: {err}");
        }
    }
}
