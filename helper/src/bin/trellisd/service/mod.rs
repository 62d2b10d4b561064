//! `trellisd install-service` and `uninstall-service`: the helper as the system's service
//! where no package installed it. The desktop app runs these with the administrator's
//! consent (pkexec on Linux for the AppImage, an administrator prompt on macOS); people can
//! run them with sudo. Packages (deb, rpm, MSI) install the service themselves.
//!
//! Each step is printed as it happens, so a person (or the app, which shows the output)
//! sees what was changed if a later step fails.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "macos")]
mod macos;
#[cfg(windows)]
mod windows;

#[cfg(unix)]
use std::path::Path;
use std::path::PathBuf;

use anyhow::{Context, Result};

#[cfg(target_os = "linux")]
use linux as platform;
#[cfg(target_os = "macos")]
use macos as platform;
#[cfg(windows)]
use windows as platform;
#[cfg(windows)]
pub use windows::run_as_windows_service;

#[derive(clap::Args, Debug)]
pub struct InstallArgs {
    /// The user to allow to control Trellis (added to the group `trellis` on Linux and
    /// macOS, `Trellis Users` on Windows). Default: the user behind sudo or pkexec. On
    /// Windows: a name, `DOMAIN\user`, or a SID (what the MSI passes).
    #[arg(long, value_name = "USER")]
    pub for_user: Option<String>,
    /// Install into this directory instead of the system's root, and start nothing: for
    /// building images and for tests (Linux).
    #[arg(long, value_name = "DIR", hide = true)]
    pub root: Option<PathBuf>,
    /// Everything but creating and starting the service, which the MSI does itself
    /// (ServiceInstall): the state folder's permissions, the group, recovery settings.
    #[cfg(windows)]
    #[arg(long, hide = true)]
    pub without_service: bool,
}

#[derive(clap::Args, Debug)]
pub struct UninstallArgs {
    /// Also delete the device key and state: this device then leaves its networks for good.
    #[arg(long)]
    pub purge: bool,
    /// As for install-service.
    #[arg(long, value_name = "DIR", hide = true)]
    pub root: Option<PathBuf>,
}

pub fn install(args: &InstallArgs) -> Result<()> {
    platform::install(args)
}

pub fn uninstall(args: &UninstallArgs) -> Result<()> {
    platform::uninstall(args)
}

/// The user who asked for the install through sudo or pkexec, unless named.
#[cfg(unix)]
fn installing_user(named: Option<&str>) -> Option<String> {
    if let Some(user) = named {
        return Some(user.to_string());
    }
    if let Ok(user) = std::env::var("SUDO_USER") {
        if !user.is_empty() && user != "root" {
            return Some(user);
        }
    }
    let uid = std::env::var("PKEXEC_UID").ok().filter(|uid| !uid.is_empty() && uid != "0")?;
    let out = std::process::Command::new("id").args(["-nu", &uid]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Copies `from` to `to` with `mode`, replacing `to` in one step so that a running copy
/// of the old file keeps working (and a crash leaves the old or the new file, never half).
#[cfg(unix)]
fn install_file(from: &Path, to: &Path, mode: u32) -> Result<()> {
    let contents = std::fs::read(from).with_context(|| format!("cannot read {}", from.display()))?;
    replace_file(to, &contents, mode)?;
    println!("  installed {}", to.display());
    Ok(())
}

/// Writes `contents` to `to` like [`install_file`].
#[cfg(unix)]
fn write_file(to: &Path, contents: &str, mode: u32) -> Result<()> {
    replace_file(to, contents.as_bytes(), mode)?;
    println!("  wrote {}", to.display());
    Ok(())
}

/// Writes a new file next to `to` and renames it over `to`. The new file gets a fresh,
/// unpredictable name and is created exclusively (tempfile), so nothing planted in the
/// directory beforehand (a symbolic link, where others may write, as in a Homebrew-owned
/// /usr/local/bin) redirects what root writes; rename replaces a link at `to` itself
/// rather than following it.
#[cfg(unix)]
fn replace_file(to: &Path, contents: &[u8], mode: u32) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt;
    let dir = to.parent().context("a file to install has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut staging =
        tempfile::NamedTempFile::new_in(dir).with_context(|| format!("cannot write in {}", dir.display()))?;
    staging.write_all(contents).and_then(|()| staging.as_file().sync_all())?;
    staging.as_file().set_permissions(std::fs::Permissions::from_mode(mode))?;
    staging.persist(to).with_context(|| format!("cannot move {} into place", to.display()))?;
    Ok(())
}

/// Removes `path` if it is there, saying so.
#[cfg(unix)]
fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {
            println!("  removed {}", path.display());
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

/// The `trellis` CLI shipped next to this trellisd (the packages and bundles put both in
/// one directory), if it is there.
#[cfg(unix)]
fn cli_next_to_helper() -> Result<Option<PathBuf>> {
    let helper = std::env::current_exe().context("cannot find this program's path")?;
    let cli = helper.with_file_name(if cfg!(windows) { "trellis.exe" } else { "trellis" });
    Ok(cli.is_file().then_some(cli))
}

/// Runs a system tool and fails with its output when it fails.
fn run_tool(program: &str, args: &[&str]) -> Result<()> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    anyhow::ensure!(
        out.status.success(),
        "`{program} {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// The uid of `user` (`id -u`).
#[cfg(unix)]
fn uid_of(user: &str) -> Result<u32> {
    let out = std::process::Command::new("id").args(["-u", user]).output().context("cannot run id")?;
    anyhow::ensure!(out.status.success(), "no user {user}: {}", String::from_utf8_lossy(&out.stderr).trim());
    String::from_utf8_lossy(&out.stdout).trim().parse().with_context(|| format!("`id -u {user}` gave no uid"))
}

/// Whether this process runs as root (`id -u`: the same on Linux and macOS).
#[cfg(unix)]
fn is_root() -> Result<bool> {
    let out = std::process::Command::new("id").arg("-u").output().context("cannot run id")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim() == "0")
}
