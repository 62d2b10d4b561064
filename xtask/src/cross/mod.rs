//! `cargo xtask cross`: the Windows and macOS builds, checked on this Linux machine.
//!
//! * Windows (`x86_64-pc-windows-gnu`): clippy with `-D warnings` on every crate that ships
//!   there, `trellisd.exe`, `trellis.exe` and `trellis-signal.exe` built and linked by
//!   mingw, and the tests of protocol, the signal server and the helper run under wine.
//! * macOS (`aarch64-apple-darwin`): clippy with `-D warnings` on the same crates
//!   (type-checked, not linked: there is no Apple linker or SDK here).
//!
//! The compiler is Debian's Rust with `-Zbuild-std` ([`toolchain`]); the report at the end
//! says per target what was linted, built and run, with the tests' counts.

mod apple;
mod report;
mod toolchain;
mod wine;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};

use crate::{app, system};
use report::{TargetReport, TestCounts};
use toolchain::CrossCargo;

/// The crates that ship on Windows and macOS (the e2e harness and xtask do not).
const SHIPPED_LIBS: &[&str] = &["trellis-protocol", "trellis-helper", "trellis-signal"];
const APP: &str = "trellis-app";
/// The Windows programs, and the package each comes from.
const WINDOWS_BINARIES: &[(&str, &str)] = &[
    ("trellisd.exe", "trellis-helper"),
    ("trellis.exe", "trellis-helper"),
    ("trellis-signal.exe", "trellis-signal"),
];

/// Which targets a run covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Only {
    Both,
    Windows,
    MacOs,
}

const USAGE: &str = "`cross` takes --windows or --macos (default: both)";

pub fn run(args: &[String]) -> Result<()> {
    let only = match args {
        [] => Only::Both,
        [flag] if flag == "--windows" => Only::Windows,
        [flag] if flag == "--macos" => Only::MacOs,
        _ => bail!("{USAGE}, got {args:?}"),
    };
    let mut packages = toolchain::PACKAGES.to_vec();
    packages.extend(wine::PACKAGES);
    packages.extend(apple::PACKAGES);
    system::ensure_packages(&packages)?;
    ensure!(
        toolchain::installed(),
        "Debian's Rust toolchain is not in /usr/bin after installing {:?}",
        toolchain::PACKAGES
    );
    // The app embeds ui/dist at compile time, for every target.
    if !app::ui_dir().join("dist/index.html").exists() {
        app::build_ui()?;
    }
    let cross_dir = crate::target_dir().join("cross");
    let tools_dir = cross_dir.join("tools");
    std::fs::create_dir_all(&tools_dir)?;
    println!(
        "==> cross toolchain: {} (Debian), -Zbuild-std, target dir {}",
        toolchain::version(),
        cross_dir.display()
    );

    let mut reports = Vec::new();
    if only != Only::MacOs {
        reports.push(windows(&cross_dir, &tools_dir));
    }
    if only != Only::Windows {
        reports.push(macos(&cross_dir, &tools_dir));
    }
    println!("==> cross: what was checked");
    for report in &reports {
        print!("{report}");
    }
    let failed: Vec<&str> = reports.iter().filter(|r| !r.passed()).map(|r| r.name).collect();
    ensure!(failed.is_empty(), "cross: {} failed (see above)", failed.join(" and "));
    Ok(())
}

/// Windows: lint while building the programs and the tests, lint the app, run the tests.
fn windows(cross_dir: &Path, tools_dir: &Path) -> TargetReport {
    let started = Instant::now();
    let mut report = TargetReport::new("Windows", "x86_64-pc-windows-gnu", "tests under wine 8.0");
    let cargo = CrossCargo {
        target: "x86_64-pc-windows-gnu",
        target_dir: cross_dir.to_path_buf(),
        env: vec![("CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER".into(), "x86_64-w64-mingw32-gcc".into())],
    };
    let result = (|| -> Result<()> {
        step("Windows: clippy -D warnings while building trellisd.exe, trellis.exe, trellis-signal.exe");
        run_checked(cargo.linted("build", SHIPPED_LIBS).arg("--bins"))?;
        for (exe, _) in WINDOWS_BINARIES {
            let path = cargo.artifact_dir().join(exe);
            report.built.push(describe_pe(&path)?);
        }
        step("Windows: clippy -D warnings while building the tests");
        run_checked(cargo.linted("test", SHIPPED_LIBS).args(["--no-run", "--all-targets"]))?;
        report.linted.extend(SHIPPED_LIBS.iter().map(|p| format!("{p} (all targets)")));
        step("Windows: clippy -D warnings on the app");
        run_checked(&mut cargo.clippy(&[APP]))?;
        report.linted.push(format!("{APP} (all targets, check only: its WebView2 runtime cannot run here)"));

        step("Windows: the tests under wine (unit tests, and the signal server's over loopback)");
        let prefix = wine::WinePrefix::prepare(tools_dir)?;
        let mut tests = cargo.linted("test", SHIPPED_LIBS);
        // --tests: the signal server's integration tests (a server process, WebSocket,
        // TURN on loopback); the helper's one integration test is Linux-only.
        tests.args(["--no-fail-fast", "--lib", "--bins", "--tests"]).envs(prefix.runner_env());
        let (counts, outcome) = run_tests(&mut tests)?;
        report.tests = Some(counts);
        outcome
    })();
    report.finish(result, started);
    report
}

/// macOS: clippy on every shipped crate and the app (type-checked, not linked).
fn macos(cross_dir: &Path, tools_dir: &Path) -> TargetReport {
    let started = Instant::now();
    let mut report = TargetReport::new("macOS", "aarch64-apple-darwin", "none, nothing can be linked here");
    let result = (|| -> Result<()> {
        let cargo = CrossCargo {
            target: "aarch64-apple-darwin",
            target_dir: cross_dir.to_path_buf(),
            env: apple::c_env(tools_dir, "aarch64-apple-darwin")?,
        };
        let mut crates = SHIPPED_LIBS.to_vec();
        crates.push(APP);
        step("macOS: clippy -D warnings (type-checked, not linked)");
        run_checked(&mut cargo.clippy(&crates))?;
        report.linted.extend(crates.iter().map(|p| format!("{p} (all targets)")));
        report.stand_ins = apple::empty_objects(tools_dir);
        Ok(())
    })();
    report.finish(result, started);
    report
}

fn step(what: &str) {
    println!("==> {what}");
}

fn run_checked(command: &mut Command) -> Result<()> {
    let status = command.status().with_context(|| format!("could not start {:?}", command.get_program()))?;
    ensure!(status.success(), "{} failed ({status})", describe(command));
    Ok(())
}

/// Runs `cargo test`, passing its output through and counting the results it reports:
/// the counts, and whether the run passed (the counts stand in the report either way).
///
/// A test binary that dies without its summary line fails the run even when its exit
/// status does not say so: under wine, a process that calls a function wine lacks is
/// "debugged" and may end with status 0.
fn run_tests(command: &mut Command) -> Result<(TestCounts, Result<()>)> {
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start {:?}", command.get_program()))?;
    let mut counts = TestCounts::default();
    let (mut started, mut finished, mut announced) = (0u32, 0u32, 0u32);
    let stdout = child.stdout.take().expect("stdout is piped");
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(result) = TestCounts::parse_result_line(&line) {
            counts.add(result);
            finished += 1;
        } else if let Some(tests) = TestCounts::parse_running_line(&line) {
            started += 1;
            announced += tests;
        }
    }
    let status = child.wait()?;
    let reported = counts.passed + counts.failed + counts.ignored;
    let outcome = if !status.success() || counts.failed > 0 {
        Err(anyhow::anyhow!("{} failed ({status}; {counts})", describe(command)))
    } else if finished < started || reported < announced {
        Err(anyhow::anyhow!(
            "{}: {} of {started} test binaries ended without their summary, {reported} of {announced} tests reported (a crash; see the output above)",
            describe(command),
            started - finished.min(started)
        ))
    } else if counts.passed == 0 {
        Err(anyhow::anyhow!("{} ran no test", describe(command)))
    } else {
        Ok(())
    };
    Ok((counts, outcome))
}

/// "trellisd.exe (8.1 MB)", after checking it is a Windows executable at all.
fn describe_pe(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("{} was not built", path.display()))?;
    ensure!(bytes.starts_with(b"MZ"), "{} is not a Windows executable", path.display());
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    Ok(format!("{name} ({:.1} MB)", bytes.len() as f64 / 1e6))
}

fn describe(command: &Command) -> String {
    let args: Vec<String> = command.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    format!("`{} {}`", command.get_program().to_string_lossy(), args.join(" "))
}
