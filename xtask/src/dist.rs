//! `cargo xtask dist`: the Linux packages. One .deb and one .rpm, each carrying the desktop
//! app (with its desktop entry and icons), the helper `trellisd` with its systemd unit, and
//! the `trellis` CLI; the maintainer scripts in `installers/linux/` set up the `trellis`
//! group and the service.
//!
//! The Tauri bundler makes both packages from `src-tauri/tauri.conf.json`. The helper's
//! binaries are not part of the app's build, and where they are depends on the profile,
//! so their paths reach the bundler as a second config that it merges over the first
//! (`tauri build --config`).
//!
//! No AppImage: the bundler downloads linuxdeploy and appimagetool while bundling one,
//! and our build machines have no access to those downloads.

mod deb_test;
mod rpm_check;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::{app, system};

/// The helper's binaries and where each goes in the packages.
const HELPER_BINARIES: &[(&str, &str)] =
    &[("trellisd", "/usr/bin/trellisd"), ("trellis", "/usr/bin/trellis")];

/// Which build the packages come from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Profile {
    /// What users get: `cargo build --release`, `tauri build`.
    Release,
    /// For trying the packages quickly: the dev profile, `tauri build --debug`.
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
    let profile = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] => Profile::Release,
        ["--debug"] => Profile::Debug,
        other => bail!("`dist` takes only --debug, got {other:?}"),
    };
    let started = Instant::now();
    let packages = build(profile)?;
    println!("==> packages ({}, {} s):", profile.dir(), started.elapsed().as_secs());
    for package in &packages {
        let size = std::fs::metadata(package).map(|m| m.len()).unwrap_or(0);
        println!("      {}  ({:.1} MB)", package.display(), size as f64 / 1e6);
    }
    println!(
        "    AppImage: not built here: its bundler step downloads linuxdeploy and appimagetool,\n    \
         which this machine cannot reach (`tauri build --bundles appimage` where it can)."
    );
    Ok(())
}

/// `cargo xtask test-deb [--debug | FILE.deb]`: installs the package on this machine and
/// checks it, then removes everything again (see `deb_test`).
pub fn run_deb_test(args: &[String]) -> Result<()> {
    let deb = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] => newest_bundle(Profile::Release, "deb")?,
        ["--debug"] => newest_bundle(Profile::Debug, "deb")?,
        [file] if file.ends_with(".deb") => PathBuf::from(file),
        other => bail!("`test-deb` takes --debug or the path of a .deb, got {other:?}"),
    };
    deb_test::run(&deb)
}

/// `cargo xtask test-rpm [--debug | FILE.rpm]`: checks the .rpm's files and scriptlets
/// (see `rpm_check`).
pub fn run_rpm_check(args: &[String]) -> Result<()> {
    let rpm = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] => newest_bundle(Profile::Release, "rpm")?,
        ["--debug"] => newest_bundle(Profile::Debug, "rpm")?,
        [file] if file.ends_with(".rpm") => PathBuf::from(file),
        other => bail!("`test-rpm` takes --debug or the path of an .rpm, got {other:?}"),
    };
    rpm_check::run(&rpm)
}

/// What `cargo xtask test` runs for the packages: both built from the test build (debug,
/// so the app and helper are not compiled again in release), the .deb installed and
/// checked, the .rpm's contents checked.
pub fn build_and_check_debug_packages() -> Result<()> {
    let packages = build(Profile::Debug)?;
    let [deb, rpm] = packages.as_slice() else {
        bail!("expected a .deb and an .rpm, got {packages:?}");
    };
    deb_test::run(deb)?;
    rpm_check::run(rpm)
}

/// Builds the helper, the UI and the app, bundles them, and returns the packages' paths.
pub fn build(profile: Profile) -> Result<Vec<PathBuf>> {
    system::ensure_packages(app::APP_BUILD_PACKAGES)?;

    let mut cargo_args = vec!["build", "-p", "trellis-helper", "--bins"];
    if profile == Profile::Release {
        cargo_args.push("--release");
    }
    println!("==> [1/4] the helper: cargo {}", cargo_args.join(" "));
    system::run("cargo", &cargo_args)?;
    let bin_dir = crate::target_dir().join(profile.dir());
    let helper_files = HELPER_BINARIES
        .iter()
        .map(|(name, installed)| {
            let built = bin_dir.join(name);
            anyhow::ensure!(built.is_file(), "the helper's build left no {}", built.display());
            Ok((*installed, built))
        })
        .collect::<Result<Vec<_>>>()?;

    println!("==> [2/4] the UI");
    app::build_ui()?;

    println!("==> [3/4] the Tauri CLI");
    let tauri = ensure_tauri_cli()?;

    let config = bundler_config(&helper_files);
    let config_path = crate::target_dir().join("dist").join("tauri.linux.json");
    std::fs::create_dir_all(config_path.parent().unwrap())
        .with_context(|| format!("cannot create {}", config_path.parent().unwrap().display()))?;
    std::fs::write(&config_path, serde_json::to_string_pretty(&config)?)
        .with_context(|| format!("cannot write {}", config_path.display()))?;

    let mut tauri_args = vec!["build", "--bundles", "deb,rpm", "--config", config_path.to_str().unwrap()];
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

    let packages = vec![newest_bundle(profile, "deb")?, newest_bundle(profile, "rpm")?];
    Ok(packages)
}

/// The Tauri CLI from the UI's npm packages (`@tauri-apps/cli`, a dev dependency pinned
/// to the tauri crate's minor version), installed when missing. Run from its own path:
/// `npx tauri` in src-tauri/ would not see ui/node_modules and would fetch a package
/// named `tauri` instead.
fn ensure_tauri_cli() -> Result<PathBuf> {
    let cli = app::ui_dir().join("node_modules").join(".bin").join("tauri");
    if !cli.exists() {
        println!("==> installing the UI's npm packages, which hold the Tauri CLI (npm ci)");
        app::npm(&["ci", "--no-audit", "--no-fund"])?;
    }
    if !cli.exists() {
        bail!("{} is missing after `npm ci`: is @tauri-apps/cli in ui/package.json?", cli.display());
    }
    Ok(cli)
}

/// What `tauri build --config` merges over tauri.conf.json (a JSON merge patch): the
/// helper's binaries in both packages, and no `beforeBuildCommand`, since the UI is built.
fn bundler_config(helper_files: &[(&str, PathBuf)]) -> serde_json::Value {
    let files: serde_json::Map<String, serde_json::Value> = helper_files
        .iter()
        .map(|(installed, built)| (installed.to_string(), built.to_string_lossy().into()))
        .collect();
    serde_json::json!({
        "build": { "beforeBuildCommand": null },
        "bundle": { "linux": {
            "deb": { "files": files.clone() },
            "rpm": { "files": files },
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
        .filter(|path| path.extension().is_some_and(|ext| ext == kind))
        .max_by_key(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok());
    newest.with_context(|| format!("no .{kind} in {}", dir.display()))
}
