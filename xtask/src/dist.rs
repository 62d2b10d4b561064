//! `cargo xtask dist`: the packages for the machine it runs on, each carrying the desktop
//! app, the helper `trellisd` and the `trellis` CLI:
//!
//! * Linux: a .deb and an .rpm (the helper's systemd unit and the maintainer scripts of
//!   `installers/linux/`), and an AppImage when the bundler's tools are at hand (the app
//!   installs the helper's service on first run, through pkexec).
//! * Windows: an MSI (`installers/windows/trellisd.wxs`: the helper, wintun.dll, the service).
//! * macOS: a DMG whose app bundle carries the helper; the app installs the launchd daemon on
//!   first run, after an administrator prompt.
//!
//! The Tauri bundler makes them all from `src-tauri/tauri.conf.json`. The helper's binaries
//! are not part of the app's build, and where they are depends on the profile, so their
//! paths reach the bundler as a second config that it merges over the first
//! (`tauri build --config`). Only the Linux part runs on our build machines; the release
//! workflow (`.github/workflows/release.yml`) runs the others.

// Installing and reading Linux packages: on Linux only (the rest of xtask builds on every
// OS, for the release workflow's `cargo xtask dist`).
#[cfg(target_os = "linux")]
mod deb_test;
#[cfg(target_os = "linux")]
mod rpm_check;
#[cfg(all(test, target_os = "linux"))]
mod scripts_test;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::{app, system};

/// The helper's binaries, and where each goes in the Linux packages.
const HELPER_BINARIES: &[(&str, &str)] =
    &[("trellisd", "/usr/bin/trellisd"), ("trellis", "/usr/bin/trellis")];

/// The AppImage's bundler step downloads linuxdeploy and its plugins into this cache
/// (under the home directory) unless they are there.
const APPIMAGE_TOOL: &str = ".cache/tauri/linuxdeploy-x86_64.AppImage";

/// Which build the packages come from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Profile {
    /// What users get: `cargo build --release`, `tauri build`.
    Release,
    /// For trying the packages quickly: the app from the dev profile (`tauri build
    /// --debug`), the helper from the end-to-end build, which `cargo xtask test` has made
    /// already (a dev build of the helper alone would compile its dependencies again, with
    /// other features, and the test build's helper carries a mock clock).
    Debug,
}

impl Profile {
    /// The folder under the target directory.
    fn dir(self) -> &'static str {
        match self {
            Profile::Release => "release",
            Profile::Debug => "debug",
        }
    }
}

pub fn run(args: &[String]) -> Result<()> {
    let mut profile = Profile::Release;
    let mut appimage = false;
    for arg in args {
        match arg.as_str() {
            "--debug" => profile = Profile::Debug,
            "--appimage" => appimage = true,
            other => bail!("`dist` takes --debug and --appimage, got {other:?}"),
        }
    }
    let started = Instant::now();
    let packages = build(profile, appimage)?;
    println!("==> packages ({}, {} s):", profile.dir(), started.elapsed().as_secs());
    for package in &packages {
        let size = std::fs::metadata(package).map(|m| m.len()).unwrap_or(0);
        println!("      {}  ({:.1} MB)", package.display(), size as f64 / 1e6);
    }
    Ok(())
}

/// `cargo xtask test-deb [--debug | FILE.deb]`: installs the package on this machine and
/// checks it, then removes everything again (see `deb_test`).
pub fn run_deb_test(args: &[String]) -> Result<()> {
    let deb = package_to_test("test-deb", "deb", args)?;
    #[cfg(target_os = "linux")]
    return deb_test::run(&deb);
    #[cfg(not(target_os = "linux"))]
    bail!("`test-deb` installs {} on this machine: Linux only", deb.display());
}

/// `cargo xtask test-rpm [--debug | FILE.rpm]`: checks the .rpm's files and scriptlets
/// (see `rpm_check`).
pub fn run_rpm_check(args: &[String]) -> Result<()> {
    let rpm = package_to_test("test-rpm", "rpm", args)?;
    #[cfg(target_os = "linux")]
    return rpm_check::run(&rpm);
    #[cfg(not(target_os = "linux"))]
    bail!("`test-rpm` reads {} with Debian's rpm tools: Linux only", rpm.display());
}

/// The package a `task` is to check: the newest release one of `kind`, the newest debug
/// one with `--debug`, or the file named.
fn package_to_test(task: &str, kind: &str, args: &[String]) -> Result<PathBuf> {
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] => newest_bundle(Profile::Release, kind),
        ["--debug"] => newest_bundle(Profile::Debug, kind),
        [file] if file.ends_with(&format!(".{kind}")) => Ok(PathBuf::from(file)),
        other => bail!("`{task}` takes --debug or the path of a .{kind}, got {other:?}"),
    }
}

/// What `cargo xtask test` runs for the packages: both built from the test build (debug,
/// so the app and helper are not compiled again in release), the .deb installed and
/// checked, the .rpm's contents checked.
pub fn build_and_check_debug_packages() -> Result<()> {
    let packages = build(Profile::Debug, false)?;
    let [deb, rpm, ..] = packages.as_slice() else {
        bail!("expected a .deb and an .rpm, got {packages:?}");
    };
    #[cfg(target_os = "linux")]
    return deb_test::run(deb).and_then(|()| rpm_check::run(rpm));
    #[cfg(not(target_os = "linux"))]
    bail!("the package tests of {} and {} run on Linux only", deb.display(), rpm.display());
}

/// Builds the helper, the UI and the app, bundles them, and returns the packages' paths.
/// `appimage`: build the AppImage even if its tools must be downloaded (Linux).
pub fn build(profile: Profile, appimage: bool) -> Result<Vec<PathBuf>> {
    let os = std::env::consts::OS;
    if os == "linux" {
        system::ensure_packages(app::APP_BUILD_PACKAGES)?;
    }

    let (cargo_args, bin_dir): (&[&str], _) = match profile {
        Profile::Release => {
            (&["build", "-p", "trellis-helper", "--bins", "--release"], crate::target_dir().join("release"))
        }
        Profile::Debug => (crate::E2E_BUILD, crate::e2e_bin_dir()),
    };
    println!("==> [1/4] the helper: cargo {}", cargo_args.join(" "));
    system::run("cargo", cargo_args)?;
    let exe = std::env::consts::EXE_SUFFIX;
    let helper = bin_dir.join(format!("trellisd{exe}"));
    let cli = bin_dir.join(format!("trellis{exe}"));
    for built in [&helper, &cli] {
        anyhow::ensure!(built.is_file(), "the helper's build left no {}", built.display());
    }

    println!("==> [2/4] the UI");
    app::build_ui()?;

    println!("==> [3/4] the Tauri CLI");
    let tauri = ensure_tauri_cli()?;

    let dist_dir = crate::target_dir().join("dist");
    std::fs::create_dir_all(&dist_dir).with_context(|| format!("cannot create {}", dist_dir.display()))?;
    let (bundles, kinds, config) = match os {
        "linux" => {
            let tools = std::env::var_os("HOME").map(|home| Path::new(&home).join(APPIMAGE_TOOL));
            let with_appimage = appimage || tools.as_ref().is_some_and(|t| t.is_file());
            if !with_appimage {
                println!(
                    "    AppImage: not built: its bundler step downloads linuxdeploy and appimagetool (into\n    \
                     ~/.cache/tauri), which this machine does not have; `cargo xtask dist --appimage` where it can\n    \
                     download them (the release workflow does)."
                );
            }
            let config = linux_config(&helper, &cli);
            if with_appimage {
                ("deb,rpm,appimage", vec!["deb", "rpm", "appimage"], config)
            } else {
                ("deb,rpm", vec!["deb", "rpm"], config)
            }
        }
        "windows" => ("msi", vec!["msi"], windows_config(&helper, &cli, &dist_dir)?),
        "macos" => ("app,dmg", vec!["dmg"], macos_config(&helper, &cli)),
        other => bail!("no packages for {other}"),
    };
    let config_path = dist_dir.join("tauri.dist.json");
    std::fs::write(&config_path, serde_json::to_string_pretty(&config)?)
        .with_context(|| format!("cannot write {}", config_path.display()))?;

    let mut tauri_args = vec!["build", "--bundles", bundles, "--config", config_path.to_str().unwrap()];
    if profile == Profile::Debug {
        tauri_args.push("--debug");
    }
    println!("==> [4/4] the app and its packages: tauri {} (in src-tauri/)", tauri_args.join(" "));
    let status = std::process::Command::new(&tauri)
        .args(&tauri_args)
        .current_dir(crate::workspace_root().join("src-tauri"))
        .status()
        .with_context(|| format!("could not start the Tauri CLI at {}", tauri.display()))?;
    if !status.success() {
        bail!("`tauri {}` failed ({status}); its output above says why", tauri_args.join(" "));
    }
    kinds.into_iter().map(|kind| newest_bundle(profile, kind)).collect()
}

/// The Tauri CLI from the UI's npm packages (`@tauri-apps/cli`, a dev dependency pinned
/// to the tauri crate's minor version), installed when missing. Run from its own path:
/// `npx tauri` in src-tauri/ would not see ui/node_modules and would fetch a package
/// named `tauri` instead.
fn ensure_tauri_cli() -> Result<PathBuf> {
    let name = if cfg!(windows) { "tauri.cmd" } else { "tauri" };
    let cli = app::ui_dir().join("node_modules").join(".bin").join(name);
    if !cli.exists() {
        println!("==> installing the UI's npm packages, which hold the Tauri CLI (npm ci)");
        app::npm(&["ci", "--no-audit", "--no-fund"])?;
    }
    if !cli.exists() {
        bail!("{} is missing after `npm ci`: is @tauri-apps/cli in ui/package.json?", cli.display());
    }
    Ok(cli)
}

/// What `tauri build --config` merges over tauri.conf.json (a JSON merge patch), on
/// Linux: the helper's binaries in every package, and no `beforeBuildCommand`, since the
/// UI is built. In the AppImage they sit in usr/bin, where the app looks for them to
/// install the service.
fn linux_config(helper: &Path, cli: &Path) -> serde_json::Value {
    let files: serde_json::Map<String, serde_json::Value> = HELPER_BINARIES
        .iter()
        .zip([helper, cli])
        .map(|((_, installed), built)| (installed.to_string(), built.to_string_lossy().into()))
        .collect();
    serde_json::json!({
        "build": { "beforeBuildCommand": null },
        "bundle": { "linux": {
            "deb": { "files": files.clone() },
            "rpm": { "files": files.clone() },
            "appimage": { "files": files },
        } },
    })
}

/// Windows: the WiX fragment of installers/windows with the binaries' paths filled in.
/// wintun.dll (https://www.wintun.net, signed by WireGuard LLC) comes from
/// `TRELLIS_WINTUN_DLL`; the release workflow downloads it and checks its hash.
fn windows_config(helper: &Path, cli: &Path, dist_dir: &Path) -> Result<serde_json::Value> {
    let wintun = std::env::var_os("TRELLIS_WINTUN_DLL")
        .map(PathBuf::from)
        .context("set TRELLIS_WINTUN_DLL to wintun.dll (amd64) from https://www.wintun.net")?;
    anyhow::ensure!(wintun.is_file(), "no wintun.dll at {}", wintun.display());
    let template = crate::workspace_root().join("installers/windows/trellisd.wxs");
    let fragment = std::fs::read_to_string(&template)
        .with_context(|| format!("cannot read {}", template.display()))?
        .replace("@TRELLISD_EXE@", &helper.to_string_lossy())
        .replace("@TRELLIS_EXE@", &cli.to_string_lossy())
        .replace("@WINTUN_DLL@", &wintun.to_string_lossy());
    let fragment_path = dist_dir.join("trellisd.wxs");
    std::fs::write(&fragment_path, fragment)
        .with_context(|| format!("cannot write {}", fragment_path.display()))?;
    Ok(serde_json::json!({
        "build": { "beforeBuildCommand": null },
        "bundle": { "windows": { "wix": {
            "fragmentPaths": [fragment_path.to_string_lossy()],
            "componentRefs": ["TrellisHelper", "TrellisCli", "Wintun"],
        } } },
    }))
}

/// macOS: the helper and the CLI in the app bundle's Contents/Resources, from where the
/// app runs `trellisd install-service` on first start.
fn macos_config(helper: &Path, cli: &Path) -> serde_json::Value {
    serde_json::json!({
        "build": { "beforeBuildCommand": null },
        "bundle": { "resources": {
            helper.to_string_lossy(): "trellisd",
            cli.to_string_lossy(): "trellis",
        } },
    })
}

/// The most recently written package of `kind` ("deb" or "rpm") the bundler left for
/// `profile`.
pub fn newest_bundle(profile: Profile, kind: &str) -> Result<PathBuf> {
    let dir = crate::target_dir().join(profile.dir()).join("bundle").join(kind);
    let newest = std::fs::read_dir(&dir)
        .with_context(|| format!("no packages in {} (run `cargo xtask dist` first)", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext.eq_ignore_ascii_case(kind)))
        .max_by_key(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok());
    newest.with_context(|| format!("no .{kind} in {}", dir.display()))
}
