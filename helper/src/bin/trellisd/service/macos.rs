//! The helper as a launchd daemon. The app bundle carries trellisd in
//! Contents/Resources; on first run the app runs `trellisd install-service` with an
//! administrator prompt. Written against launchctl(1), launchd.plist(5) and dseditgroup(8);
//! not compiled or run on our build machines.

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::{cli_next_to_helper, install_file, installing_user, remove_if_present, run_tool, write_file};
use super::{InstallArgs, UninstallArgs};

const PLIST: &str = include_str!("../../../../../installers/macos/org.trellis.trellisd.plist");
const PLIST_PATH: &str = "/Library/LaunchDaemons/org.trellis.trellisd.plist";
const LABEL: &str = "system/org.trellis.trellisd";
const HELPER: &str = "/Library/PrivilegedHelperTools/org.trellis.trellisd";
const CLI: &str = "/usr/local/bin/trellis";
const LOG_DIR: &str = "/Library/Logs/Trellis";
const STATE_DIR: &str = "/Library/Application Support/Trellis";
const GROUP: &str = "trellis";

pub fn install(args: &InstallArgs) -> Result<()> {
    if args.root.is_some() {
        bail!("--root is for Linux only");
    }
    if !super::is_root()? {
        bail!("installing a system service needs an administrator: run it with sudo");
    }
    println!("Installing the Trellis helper as the launchd daemon org.trellis.trellisd:");
    // A daemon that runs already is replaced, not left running the old binary.
    if is_loaded()? {
        stop_daemon()?;
        println!("  stopped the running helper");
    }
    let helper = std::env::current_exe().context("cannot find this program's path")?;
    install_file(&helper, Path::new(HELPER), 0o755)?;
    if let Some(cli) = cli_next_to_helper()? {
        install_file(&cli, Path::new(CLI), 0o755)?;
    }
    std::fs::create_dir_all(LOG_DIR).with_context(|| format!("cannot create {LOG_DIR}"))?;
    let user = installing_user(args.for_user.as_deref());
    let plist = match &user {
        // The installing user may control the helper by uid before the new group counts.
        Some(user) => {
            let uid = super::uid_of(user)?;
            PLIST.replacen(
                "    <key>RunAtLoad</key>",
                &format!(
                    "    <key>EnvironmentVariables</key>\n    <dict>\n        <key>TRELLIS_OWNER_UID</key>\n        \
                     <string>{uid}</string>\n    </dict>\n    <key>RunAtLoad</key>"
                ),
                1,
            )
        }
        None => PLIST.to_string(),
    };
    write_file(Path::new(PLIST_PATH), &plist, 0o644)?;

    let group_exists = std::process::Command::new("dscl")
        .args([".", "-read", &format!("/Groups/{GROUP}")])
        .output()?
        .status
        .success();
    if !group_exists {
        run_tool("dseditgroup", &["-o", "create", "-r", "Trellis users", GROUP])?;
        println!("  created the group {GROUP}");
    }
    match user {
        Some(user) => {
            run_tool("dseditgroup", &["-o", "edit", "-a", &user, "-t", "user", GROUP])?;
            println!("  added {user} to {GROUP}");
        }
        None => println!("  no user to add to {GROUP}: `sudo dseditgroup -o edit -a USER -t user {GROUP}`"),
    }
    run_tool("launchctl", &["bootstrap", "system", PLIST_PATH])?;
    println!("  started org.trellis.trellisd (logs: {LOG_DIR}/trellisd.log)");
    println!("Done.");
    Ok(())
}

pub fn uninstall(args: &UninstallArgs) -> Result<()> {
    if args.root.is_some() {
        bail!("--root is for Linux only");
    }
    if !super::is_root()? {
        bail!("removing a system service needs an administrator: run it with sudo");
    }
    println!("Removing the Trellis helper's launchd daemon:");
    if is_loaded()? {
        stop_daemon()?;
        println!("  stopped org.trellis.trellisd");
    }
    for file in [PLIST_PATH, CLI, HELPER] {
        remove_if_present(Path::new(file))?;
    }
    if args.purge {
        match std::fs::remove_dir_all(STATE_DIR) {
            Ok(()) => println!("  deleted the device key and state in {STATE_DIR}"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot delete {STATE_DIR}")),
        }
    } else {
        println!(
            "  kept the device key and state in {STATE_DIR} (delete them with: sudo rm -rf '{STATE_DIR}')"
        );
    }
    println!("Done.");
    Ok(())
}

fn is_loaded() -> Result<bool> {
    Ok(std::process::Command::new("launchctl").args(["print", LABEL]).output()?.status.success())
}

/// `launchctl bootout`, then waits until launchd has let go of the job: bootstrapping it
/// again while the old one shuts down fails with "Input/output error".
fn stop_daemon() -> Result<()> {
    run_tool("launchctl", &["bootout", LABEL])?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while is_loaded()? {
        if std::time::Instant::now() > deadline {
            bail!("launchd still has {LABEL} 20 s after bootout");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    Ok(())
}
