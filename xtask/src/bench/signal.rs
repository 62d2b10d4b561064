//! Part 4: `trellis-signal` with N devices on WebSocket from [`super::loadgen`], both on the
//! loopback of a namespace of their own, each with its open-file limit raised to the hard limit (`prlimit`).
//! Memory per device is the server's RSS growth over its idle RSS, divided by N; latency is
//! from a sealed signal request leaving a sender to the event reaching its receiver.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use trellis_e2e::{binaries, Netns, Process};

use super::{mib, name, pid_in, wait_until, Plan, Row};

/// The floor: 10,000 devices on one server under 500 MB (decimal).
const TEN_THOUSAND_FLOOR_BYTES: f64 = 500e6;

/// `prlimit`'s argument raising the open-file limit to the hard limit we were given (this
/// machine allows 20,000; one device takes one descriptor in the server and one here).
fn nofile() -> String {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let hard = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4).map(str::to_string))
        .unwrap_or_else(|| "1024".into());
    format!("--nofile={hard}:{hard}")
}

pub fn run(plan: &Plan) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &devices in plan.signal_devices {
        match super::guarded("signal", || once(plan, devices)) {
            Ok(report) => rows.extend(report_rows(devices, &report)),
            Err(e) => rows.push(Row::not_measured(format!("{devices} devices"), format!("{e:#}"))),
        }
    }
    Ok(rows)
}

fn report_rows(devices: usize, r: &serde_json::Value) -> Vec<Row> {
    let (base, loaded) =
        (r["server_rss_baseline"].as_f64().unwrap_or(0.0), r["server_rss_loaded"].as_f64().unwrap_or(0.0));
    let per_device = (loaded - base) / devices as f64;
    let micros =
        |key: &str| r[key].as_f64().map_or("none received".to_string(), |m| format!("{:.2} ms", m / 1000.0));
    let mut memory = Row::figure(
        format!("{devices} devices: server RSS"),
        format!("{} ({} idle)", mib(loaded), mib(base)),
    );
    if devices == 10_000 {
        memory = memory.floor("< 500 MB", loaded < TEN_THOUSAND_FLOOR_BYTES);
    }
    vec![
        memory,
        Row::figure(
            format!("{devices} devices: memory per device"),
            format!("{:.1} KiB", per_device / 1024.0),
        ),
        Row::figure(
            format!("{devices} devices: connect all (200 at a time)"),
            format!("{:.1} s", r["connect_secs"].as_f64().unwrap_or(0.0)),
        ),
        Row::figure(
            format!("{devices} devices: signal forwarding at {}/s, p50 / p99", r["rate_per_sec"]),
            format!("{} / {}", micros("p50_micros"), micros("p99_micros")),
        ),
        Row::figure(
            format!("{devices} devices: signals received / sent"),
            format!("{} / {}", r["signals_received"], r["signals_sent"]),
        ),
    ]
}

fn once(plan: &Plan, devices: usize) -> Result<serde_json::Value> {
    let ns = Netns::new(name("s"));
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let server_bin = binaries().join("trellis-signal");
    let nofile = nofile();
    let _server = Process::spawn(
        &ns,
        "trellis-signal",
        Path::new("prlimit"),
        &[
            &nofile,
            "--",
            server_bin.to_str().unwrap(),
            "--listen",
            "127.0.0.1:8443",
            "--relay-listen",
            "127.0.0.1:3478",
            "--data-dir",
            data.to_str().unwrap(),
            "--log",
            "warn",
        ],
        dir.path(),
    );
    wait_until(Duration::from_secs(30), || {
        let out = ns.exec(&["ss", "-Htln", "sport = :8443"]);
        !String::from_utf8_lossy(&out.stdout).trim().is_empty()
    })
    .context("the signal server did not listen")?;
    let pid = pid_in(&ns.name, "trellis-signal")?.to_string();
    let xtask = std::env::current_exe()?;
    let seconds = plan.signal_duration.as_secs().to_string();
    println!("    {devices} devices");
    let out = ns
        .command("prlimit")
        .args([&nofile, "--", xtask.to_str().unwrap(), "bench-signal-load"])
        .args(["--url", "ws://127.0.0.1:8443", "--devices", &devices.to_string()])
        .args(["--server-pid", &pid, "--seconds", &seconds])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!("the load generator failed ({})", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().ok_or_else(|| anyhow!("the load generator printed nothing"))?;
    Ok(serde_json::from_str(line)?)
}
