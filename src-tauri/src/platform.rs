//! What differs per OS for the app: where the installed config lives and how to tell an
//! installed-but-stopped helper from one that was never installed.
//!
//! Only the Linux branch is compiled and tested here; macOS and Windows follow the
//! installers' layout (see installers/ and README) and are unverified.

use std::path::PathBuf;

/// The system-wide app config the installer writes (`server = "host:port"`).
pub fn installed_config_path() -> PathBuf {
    #[cfg(target_os = "windows")]
    {
        let base = std::env::var_os("ProgramData").unwrap_or_else(|| r"C:\ProgramData".into());
        PathBuf::from(base).join("Trellis").join("app.toml")
    }
    #[cfg(target_os = "macos")]
    {
        PathBuf::from("/Library/Application Support/Trellis/app.toml")
    }
    #[cfg(not(any(target_os = "windows", target_os = "macos")))]
    {
        PathBuf::from("/etc/trellis/app.toml")
    }
}

/// Files whose presence means the helper is installed as a service.
fn helper_install_markers() -> Vec<PathBuf> {
    #[cfg(target_os = "windows")]
    {
        let base = std::env::var_os("ProgramFiles").unwrap_or_else(|| r"C:\Program Files".into());
        // The MSI's fixed folder for the helper (installers/windows/trellisd.wxs).
        vec![PathBuf::from(base).join("Trellis Helper").join("trellisd.exe")]
    }
    #[cfg(target_os = "macos")]
    {
        vec![PathBuf::from("/Library/LaunchDaemons/org.trellis.trellisd.plist")]
    }
    #[cfg(not(any(target_os = "windows", target_os = "macos")))]
    {
        [
            "/usr/lib/systemd/system/trellisd.service",
            "/lib/systemd/system/trellisd.service",
            "/etc/systemd/system/trellisd.service",
        ]
        .into_iter()
        .map(PathBuf::from)
        .collect()
    }
}

/// Whether the helper looks installed. A helper started by hand (development, tests: a
/// socket given with `TRELLIS_SOCKET`) counts as installed, so "start it" is the advice,
/// unless `TRELLIS_BUNDLED_HELPER` says this app carries a helper to set up (as an
/// AppImage does; see `helper_setup`): then only an installed service counts.
pub fn helper_installed(endpoint_overridden: bool) -> bool {
    let hand_started = endpoint_overridden && std::env::var_os("TRELLIS_BUNDLED_HELPER").is_none();
    hand_started || helper_install_markers().iter().any(|p| p.exists()) || trellisd_on_path()
}

fn trellisd_on_path() -> bool {
    let name = if cfg!(windows) { "trellisd.exe" } else { "trellisd" };
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
        .unwrap_or(false)
}
