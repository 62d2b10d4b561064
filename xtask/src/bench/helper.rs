//! Part 3: what `trellisd` costs. Idle: resident memory and CPU over a quiet window once
//! connected, with 1 peer (from part 1's direct world) and with many (a network of
//! `1 + Plan::many_peers` homes, measured on the owner). Under load: CPU of both helpers
//! during part 1's forward iperf3, per Gbit/s carried.

use std::time::Duration;

use anyhow::{bail, Result};
use trellis_e2e::scenario::peer_view;
use trellis_e2e::topology::Nat;
use trellis_e2e::DEADLINE;

use super::throughput::TrellisDirect;
use super::{cpu_percent_during, mib, pid_in, rss_bytes, wait_until, Plan, Row};

/// The floor for idle memory: 30 MB (decimal, as the issue writes it).
const IDLE_RSS_FLOOR: u64 = 30_000_000;
/// "No busy loop": idle CPU must stay under this share of one core.
const IDLE_CPU_FLOOR_PERCENT: f64 = 1.0;

pub fn run(plan: &Plan, direct: Option<&TrellisDirect>) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    match direct {
        Some(d) => {
            rows.extend(idle_rows(1, d.idle_rss, d.idle_cpu_percent));
            let gbps = d.forward_bps / 1e9;
            rows.push(Row::figure(
                "under load: CPU per Gbit/s (both helpers)",
                format!(
                    "{:.0} % of a core ({:.0} % at {gbps:.2} Gbit/s)",
                    d.load_cpu_percent / gbps,
                    d.load_cpu_percent
                ),
            ));
        }
        None => rows.push(Row::not_measured(
            "idle with 1 peer, and under load",
            "part 1's Trellis direct run failed",
        )),
    }
    let peers = plan.many_peers;
    match super::guarded("many peers", || many(plan, peers)) {
        Ok((rss, cpu)) => rows.extend(idle_rows(peers, rss, cpu)),
        Err(e) => rows.push(Row::not_measured(format!("idle with {peers} peers"), format!("{e:#}"))),
    }
    Ok(rows)
}

fn idle_rows(peers: usize, rss: u64, cpu: f64) -> Vec<Row> {
    vec![
        Row::figure(format!("idle with {peers} peer(s): RSS"), mib(rss as f64))
            .floor("≤ 30 MB", rss <= IDLE_RSS_FLOOR),
        Row::figure(format!("idle with {peers} peer(s): CPU"), format!("{cpu:.2} % of a core"))
            .floor(format!("< {IDLE_CPU_FLOOR_PERCENT:.0} % (no busy loop)"), cpu < IDLE_CPU_FLOOR_PERCENT),
    ]
}

/// The owner's idle RSS and CPU once it is connected to `peers` others.
fn many(plan: &Plan, peers: usize) -> Result<(u64, f64)> {
    let world = super::trellis_world("m", Nat::Easy, peers + 1);
    super::form_network(&world, "direct");
    let names: Vec<String> = world.homes.iter().skip(1).map(|h| h.name.clone()).collect();
    let connected =
        || names.iter().all(|n| peer_view(&world, 0, n).is_some_and(|v| v["state"]["state"] == "connected"));
    if wait_until(DEADLINE * 2, connected).is_err() {
        bail!("the owner did not connect to all {peers} peers");
    }
    std::thread::sleep(Duration::from_secs(2));
    let pid = pid_in(&world.homes[0].device.name, "trellisd")?;
    let (cpu, ()) = cpu_percent_during(&[pid], || std::thread::sleep(plan.idle_window))?;
    Ok((rss_bytes(pid)?, cpu))
}
