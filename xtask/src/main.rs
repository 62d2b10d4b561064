//! Developer tasks for Trellis, run as `cargo xtask <task>` from anywhere in the repository.
//!
//! * `test`: formatting, lints, every test of the workspace and the quick bench (what CI runs).
//! * `demo`: two helpers behind NATs join by invite code and talk through the tunnel.
//! * `bench`: throughput, latency and resource figures against wireguard-go and boringtun.
//! * `dist`: the Linux packages (.deb, .rpm); `test-deb` installs one here and checks it.
//! * `cross`: the Windows and macOS builds: clippy, the Windows programs, tests under wine.
//! * `check-installers`: every XML and plist we ship parses, the WiX fragment compiles with
//!   wixl, the release workflow passes actionlint and zizmor.

mod app;
mod bench;
mod cross;
mod demo;
mod dist;
mod installers_check;
mod system;

use std::process::ExitCode;

use anyhow::{bail, Result};

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  test    build the UI, check formatting, run clippy with -D warnings, then every test:
          the UI's (vitest, Chromium), the workspace's, the real app's (Xvfb, WebDriver),
          the packages' (dist --debug, test-deb, test-rpm), the installers and the
          release workflow (check-installers), Windows and macOS (cross) and the quick bench
  demo    start a signal server and two helpers behind NATs (in network namespaces),
          join them by invite code and ping through the tunnel [--keep | --clean]
  bench   Trellis against wireguard-go and boringtun-cli, join time, helper and signal
          server resources: one table with floors marked PASS/FAIL [--quick]
  dist    the Linux packages: a .deb and an .rpm with the app, trellisd and its systemd
          unit, and trellis (release build; --debug: quicker, for trying them)
  test-deb  install a .deb from `dist` on this machine and check it: files, the unit,
          the helper as the unit runs it, who may control it, upgrade, remove, purge;
          everything is removed again [--debug | FILE.deb]
  test-rpm  check an .rpm from `dist` without installing it: files, modes, scriptlets
          [--debug | FILE.rpm]
  cross   Windows and macOS, with Debian's Rust and -Zbuild-std: clippy -D warnings on
          every shipped crate for both, trellisd.exe, trellis.exe and trellis-signal.exe
          linked by mingw, the Windows unit tests run under wine [--windows | --macos]
  check-installers  parse every XML and plist file we ship, compile the WiX fragment
          with wixl and read the MSI's tables back, lint the release workflow with
          actionlint and zizmor
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => run_tests(&args[1..]),
        Some("demo") => demo::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("dist") => dist::run(&args[1..]),
        Some("test-deb") => dist::run_deb_test(&args[1..]),
        Some("test-rpm") => dist::run_rpm_check(&args[1..]),
        Some("check-installers") => installers_check::run(),
        Some("cross") => cross::run(&args[1..]),
        // Started by `bench` inside the signal server's namespace, not by people.
        Some("bench-signal-load") => bench::loadgen::run(&args[1..]),
        Some("-h" | "--help" | "help") | None => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(anyhow::anyhow!("unknown task {other:?}\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_tests(args: &[String]) -> Result<()> {
    if let Some(extra) = args.first() {
        bail!("`test` takes no arguments, got {extra:?}");
    }
    // target/ may not exist yet in a clean clone; it is made on the workspace's disk.
    let target = Some(target_dir()).filter(|dir| dir.exists()).unwrap_or_else(workspace_root);
    let free_at_start = system::free_space(&target);
    println!("==> free disk space for {}: {free_at_start}", target.display());
    run_test_steps().map_err(|err| {
        let free_now = system::free_space(&target);
        err.context(format!("free disk space: {free_now} now, {free_at_start} at the start"))
    })
}

fn run_test_steps() -> Result<()> {
    let mut packages = system::TEST_PACKAGES.to_vec();
    packages.extend(app::APP_BUILD_PACKAGES);
    packages.extend(app::APP_TEST_PACKAGES);
    system::ensure_packages(&packages)?;
    // The app embeds ui/dist, so the UI is built before anything compiles the app.
    app::build_ui()?;
    let steps: [(&str, &[&str]); 5] = [
        ("formatting", &["fmt", "--all", "--check"]),
        ("lints", &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]),
        ("end-to-end binaries", E2E_BUILD),
        ("the desktop app", &["build", "-p", "trellis-app"]),
        ("tests", &["test", "--workspace", "--no-fail-fast"]),
    ];
    std::env::set_var("TRELLIS_E2E_BIN_DIR", e2e_bin_dir());
    std::env::set_var("TRELLIS_APP_BIN", app::app_binary());
    let total = steps.len() + 5;
    for (i, (what, cargo_args)) in steps.iter().enumerate() {
        if *what == "tests" {
            std::env::set_var("TRELLIS_TAURI_DRIVER", app::ensure_tauri_driver()?);
            println!("==> [{}/{total}] the UI's tests: npm test, npm run test:screens", i + 1);
            app::test_ui()?;
            // The builds leave gigabytes of dirty pages; the servers under test fsync every
            // acknowledged change, and an fsync queued behind that writeback can stall for
            // seconds. Write it back first so test timings reflect the code, not the disk.
            system::run("sync", &[])?;
        }
        let step = if *what == "tests" { i + 2 } else { i + 1 };
        println!("==> [{step}/{total}] {what}: cargo {}", cargo_args.join(" "));
        system::run("cargo", cargo_args)?;
    }
    // After the app's tests: `tauri build` rewrites target/debug/trellis-app in place.
    println!(
        "==> [{}/{total}] packages: cargo xtask dist --debug, test-deb --debug, test-rpm --debug",
        total - 3
    );
    dist::build_and_check_debug_packages()?;
    println!("==> [{}/{total}] installers and the release workflow: cargo xtask check-installers", total - 2);
    installers_check::run()?;
    // Debian's Rust for the other targets: its own target directory, nothing shared with the
    // builds above (docs/ARCHITECTURE.md, "Windows and macOS here").
    println!("==> [{}/{total}] Windows and macOS: cargo xtask cross", total - 1);
    cross::run(&[])?;
    // The benchmarks' quick check: the bench runs and Trellis carries traffic. Its figures
    // are printed, never asserted (see docs/PERFORMANCE.md).
    println!("==> [{total}/{total}] bench: cargo xtask bench --quick");
    bench::run(&["--quick".to_string()])?;
    println!("==> all checks passed");
    Ok(())
}

/// The end-to-end binaries get their own build: `cargo test` compiles the helper with a
/// test-only mock clock for WireGuard, which must never reach a binary carrying traffic.
pub const E2E_BUILD: &[&str] =
    &["build", "--profile", "e2e", "-p", "trellis-helper", "-p", "trellis-signal", "--bins"];

/// Where [`E2E_BUILD`] puts the binaries.
pub fn e2e_bin_dir() -> std::path::PathBuf {
    target_dir().join("e2e")
}

/// Cargo's target directory: `CARGO_TARGET_DIR`, else target/ in the workspace.
pub fn target_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// The workspace root: xtask lives one level below it.
fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}
