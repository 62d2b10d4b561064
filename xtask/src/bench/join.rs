//! Part 2: from running `trellis join` to the first ping reply through the tunnel, with
//! a fresh world each time (easy NATs: direct; symmetric NATs: relayed).

use std::time::Instant;

use anyhow::Result;
use trellis_e2e::scenario::{create_network, join, overlay_ip, wait_for_ping};
use trellis_e2e::topology::Nat;
use trellis_e2e::DEADLINE;

use super::{median, Plan, Row};

/// The floor for a direct join: the 2 s.
const DIRECT_FLOOR_SECS: f64 = 2.0;

pub fn run(plan: &Plan) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (kind, nat) in [("direct", Nat::Easy), ("relayed", Nat::Symmetric)] {
        let mut times = Vec::new();
        for i in 0..plan.join_repeats {
            let seconds = super::guarded("join", || Ok(once(nat, i)));
            match seconds {
                Ok(s) => {
                    println!("    {kind} #{}: {:.0} ms", i + 1, s * 1000.0);
                    times.push(s);
                }
                Err(e) => eprintln!("    {kind} #{}: {e:#}", i + 1),
            }
        }
        let label = format!("join → first ping, {kind} (median of {})", plan.join_repeats);
        let Some(m) = median(&mut times) else {
            rows.push(Row::not_measured(label, "no run completed"));
            continue;
        };
        let mut row = Row::figure(
            if times.len() == plan.join_repeats { label } else { format!("{label}, {} done", times.len()) },
            format!("{:.0} ms", m * 1000.0),
        );
        if kind == "direct" {
            row = row.floor(format!("≤ {DIRECT_FLOOR_SECS:.0} s"), m <= DIRECT_FLOOR_SECS);
        }
        rows.push(row);
    }
    Ok(rows)
}

/// Seconds from running `trellis join` to the first ping reply.
fn once(nat: Nat, i: usize) -> f64 {
    let world = super::trellis_world(&format!("j{i}"), nat, 2);
    let ticket = create_network(&world, 0);
    let owner_ip = overlay_ip(&world, 0);
    let start = Instant::now();
    join(&world, 1, &ticket);
    wait_for_ping(&world, 1, &owner_ip, DEADLINE);
    start.elapsed().as_secs_f64()
}
