//! `cargo xtask demo`: two friends behind NATs join by invite code and talk through the
//! tunnel — the real server, helpers and CLI in network namespaces on this machine.
//!
//! Traffic stays inside namespaces the demo makes (documentation address ranges only);
//! everything is removed on exit, on error and on Ctrl-C, unless `--keep` is given.
//! With a display (`DISPLAY` or `WAYLAND_DISPLAY`), the desktop app opens on alice's helper.

use std::io::IsTerminal;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use trellis_e2e::scenario::{create_network, join, overlay_ip, wait_for_path, wait_for_ping};
use trellis_e2e::topology::{Nat, World};
use trellis_e2e::{namespaces_with_prefix, remove_namespace};

use crate::system;

/// Every demo namespace starts with this, so a later run (or `--clean`) finds leftovers.
const PREFIX: &str = "tdemo";

const USAGE: &str = "usage: cargo xtask demo [--keep | --clean]

  --keep   leave the server and both helpers running, and print how to use them
  --clean  remove what an earlier `--keep` (or an interrupted demo) left behind";

fn clean() -> usize {
    let leftovers = namespaces_with_prefix(PREFIX);
    for name in &leftovers {
        remove_namespace(name);
    }
    leftovers.len()
}

pub fn run(args: &[String]) -> Result<()> {
    let keep = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] => false,
        ["--keep"] => true,
        ["--clean"] => {
            println!("==> removed {} demo namespaces", clean());
            return Ok(());
        }
        _ => bail!("{USAGE}"),
    };
    system::ensure_packages(system::TEST_PACKAGES)?;
    system::require_root_and_tun("the demo")?;

    println!("==> building trellis-signal, trellisd and trellis (profile e2e)");
    system::run("cargo", crate::E2E_BUILD)?;
    std::env::set_var("TRELLIS_E2E_BIN_DIR", crate::e2e_bin_dir());
    if clean() > 0 {
        println!("==> removed leftovers of an earlier demo");
    }
    ctrlc::set_handler(|| {
        eprintln!("\n==> interrupted: cleaning up");
        clean();
        std::process::exit(130);
    })
    .context("cannot watch Ctrl-C")?;

    // Panics inside the harness carry the failing step and the processes' logs.
    let world = std::panic::catch_unwind(demo).map_err(|_| anyhow::anyhow!("the demo failed (see above)"));
    let world = match world {
        Ok(world) => world,
        Err(e) => {
            clean();
            return Err(e);
        }
    };
    let app = if display_available() { Some(open_app(&world)?) } else { None };
    if keep {
        print_keep_instructions(&world);
        if app.is_some() {
            println!("  the Trellis app shows alice's helper; Quit it from its tray menu");
        }
        world.keep();
    } else {
        if let Some(mut app) = app {
            if std::io::stdin().is_terminal() {
                println!("==> press Enter to end the demo (the app closes with it)");
                let _ = std::io::stdin().read_line(&mut String::new());
            }
            let _ = app.kill();
            let _ = app.wait();
        }
        drop(world);
        println!("==> cleaned up: namespaces, links and processes are gone");
    }
    Ok(())
}

fn demo() -> World {
    let mut world = World::with_prefix(PREFIX.into());
    println!(
        "==> the internet: 203.0.113.0/24, with trellis-signal on 203.0.113.1 (API :8443, STUN/TURN :3478)"
    );
    world.start_server();
    let alice = world.add_home("alice", Nat::Easy);
    let bob = world.add_home("bob", Nat::Easy);
    println!("==> two homes, each a device on 198.51.100.2 behind its own NAT router (203.0.113.11, .12)");
    world.start_helper(alice);
    world.start_helper(bob);
    println!("==> trellisd running in both homes");

    let ticket = create_network(&world, alice);
    println!("==> alice created network \"home\" and an invite:\n\n      {ticket}\n");
    let joined = Instant::now();
    join(&world, bob, &ticket);
    println!("==> bob joined with it");
    let alice_ip = overlay_ip(&world, alice);
    let bob_ip = overlay_ip(&world, bob);
    wait_for_ping(&world, bob, &alice_ip, trellis_e2e::DEADLINE);
    let join_to_ping = joined.elapsed();
    println!(
        "==> bob pings alice ({alice_ip}) through the tunnel: first reply {} ms after joining",
        join_to_ping.as_millis()
    );
    wait_for_path(&world, bob, "alice", "direct", trellis_e2e::DEADLINE);

    let pong = world.trellis(bob, &["ping", "alice"]).json();
    let rtt_ms = pong["rtt_micros"].as_u64().unwrap_or(0) as f64 / 1000.0;
    let path = pong["path"].as_str().unwrap_or("?").to_string();
    for home in [alice, bob] {
        let name = &world.homes[home].name;
        println!("\n----- {name}: trellis status -----");
        print!("{}", world.trellis_human(home, &["status"]).stdout);
        println!("----- {name}: trellis peers -----");
        print!("{}", world.trellis_human(home, &["peers"]).stdout);
    }
    println!(
        "\n==> alice ({alice_ip}) ⇄ bob ({bob_ip}): {path}, RTT {rtt_ms:.2} ms, join → first ping {} ms",
        join_to_ping.as_millis()
    );
    world
}

/// Whether there is a display to open the app on.
fn display_available() -> bool {
    ["DISPLAY", "WAYLAND_DISPLAY"].iter().any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

/// Builds the desktop app and opens it on alice's helper.
fn open_app(world: &World) -> Result<std::process::Child> {
    let binary = crate::app::build_app()?;
    let alice = &world.homes[0];
    println!("==> opening the Trellis app on alice's helper ({})", alice.socket.display());
    std::process::Command::new(binary)
        .env("TRELLIS_SOCKET", &alice.socket)
        .stdin(std::process::Stdio::null())
        .spawn()
        .context("cannot start the desktop app")
}

fn print_keep_instructions(world: &World) {
    println!("\n==> still running (--keep). Use trellis in either home:");
    for (i, home) in world.homes.iter().enumerate() {
        let command = world.trellis_command(i);
        let args: Vec<String> = std::iter::once(command.get_program().to_string_lossy().into_owned())
            .chain(command.get_args().map(|a| a.to_string_lossy().into_owned()))
            .collect();
        println!("  {}:  {} status", home.name, args.join(" "));
        println!("  {}:  ip netns exec {} bash   (a shell in the device)", home.name, home.device.name);
    }
    println!("  logs: {}", world.log_dir().display());
    println!("  remove it all: cargo xtask demo --clean");
}
