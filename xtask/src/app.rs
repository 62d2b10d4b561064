//! The desktop app's part of the tasks: its UI (npm), its binary, and the tools its tests
//! drive it with (tauri-driver, WebKitWebDriver, Xvfb, a D-Bus session bus, Chromium).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::system;

/// Debian packages the app's build needs (Tauri 2 on Linux).
pub const APP_BUILD_PACKAGES: &[&str] =
    &["libwebkit2gtk-4.1-dev", "libayatana-appindicator3-dev", "librsvg2-dev", "libssl-dev", "libxdo-dev"];

/// Debian packages the app's tests need beyond [`APP_BUILD_PACKAGES`]: xvfb and xauth: a
/// display for the real app; dbus-daemon: its private session bus (tray, single instance);
/// webkit2gtk-driver: WebKitWebDriver under tauri-driver; chromium: the UI's screen tests
/// (playwright-core drives it); imagemagick: screenshots of the real app's window (`import`).
pub const APP_TEST_PACKAGES: &[&str] =
    &["xvfb", "xauth", "dbus-daemon", "webkit2gtk-driver", "chromium", "imagemagick"];

pub fn ui_dir() -> PathBuf {
    crate::workspace_root().join("ui")
}

pub(crate) fn npm(args: &[&str]) -> Result<()> {
    // Node installs npm as npm.cmd on Windows (the release workflow's MSI job).
    let status = std::process::Command::new(if cfg!(windows) { "npm.cmd" } else { "npm" })
        .args(args)
        .current_dir(ui_dir())
        .status()
        .context("could not start npm: install Node.js 20 and npm")?;
    anyhow::ensure!(status.success(), "`npm {}` in ui/ failed ({status})", args.join(" "));
    Ok(())
}

/// Installs the UI's packages when they are missing or older than the lock file, then
/// builds ui/dist, which the app's binary embeds.
pub fn build_ui() -> Result<()> {
    let lock = ui_dir().join("package-lock.json");
    let installed = ui_dir().join("node_modules/.package-lock.json");
    if is_older(&installed, &lock) {
        println!("==> installing the UI's npm packages (npm ci)");
        npm(&["ci", "--no-audit", "--no-fund"])?;
    }
    println!("==> building the UI (npm run build)");
    npm(&["run", "build"])
}

/// The UI's own tests: unit tests (vitest), then every screen in headless Chromium.
pub fn test_ui() -> Result<()> {
    npm(&["test"])?;
    npm(&["run", "test:screens"])
}

fn is_older(file: &Path, than: &Path) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (modified(file), modified(than)) {
        (Some(a), Some(b)) => a < b,
        _ => true,
    }
}

/// tauri-driver (WebDriver for Tauri apps), from crates.io into target/app-tools once.
pub fn ensure_tauri_driver() -> Result<PathBuf> {
    let root = crate::workspace_root().join("target").join("app-tools");
    let bin = root.join("bin").join("tauri-driver");
    if !bin.exists() {
        println!("==> installing tauri-driver from crates.io into {}", root.display());
        system::run("cargo", &["install", "--locked", "tauri-driver", "--root", root.to_str().unwrap()])?;
    }
    Ok(bin)
}

/// Builds the UI, then the app (debug profile).
pub fn build_app() -> Result<PathBuf> {
    system::ensure_packages(APP_BUILD_PACKAGES)?;
    build_ui()?;
    println!("==> building the desktop app (cargo build -p trellis-app)");
    system::run("cargo", &["build", "-p", "trellis-app"])?;
    Ok(app_binary())
}

/// The app's binary as `cargo build -p trellis-app` leaves it (debug profile: it shares
/// its dependencies' builds with `cargo test`).
pub fn app_binary() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target"))
        .join("debug")
        .join("trellis-app")
}
