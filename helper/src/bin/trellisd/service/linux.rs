//! The helper as a systemd service where no package installed it (the AppImage, a plain
//! download): the same unit the packages carry, with the programs in /usr/local/bin.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{cli_next_to_helper, install_file, installing_user, remove_if_present, run_tool, write_file};
use super::{InstallArgs, UninstallArgs};

/// The packages' unit; its ExecStart names the packages' path, replaced below.
const PACKAGED_UNIT: &str = include_str!("../../../../../installers/linux/trellisd.service");
const PACKAGED_HELPER: &str = "/usr/bin/trellisd";
/// Where a package puts the unit: if it is there, a package owns the service.
const PACKAGED_UNIT_PATH: &str = "usr/lib/systemd/system/trellisd.service";

const HELPER: &str = "usr/local/bin/trellisd";
const CLI: &str = "usr/local/bin/trellis";
const UNIT: &str = "etc/systemd/system/trellisd.service";
const UNIT_NAME: &str = "trellisd.service";
/// The installing user's uid for the helper (TRELLIS_OWNER_UID), as the packages write it.
const OWNER_DROP_IN: &str = "etc/systemd/system/trellisd.service.d/owner.conf";
const GROUP: &str = "trellis";
const STATE_DIR: &str = "var/lib/trellis";

/// The unit as installed here: the packages' unit, starting /usr/local/bin/trellisd.
pub fn unit() -> String {
    let header = "# Installed by `trellisd install-service`; `trellisd uninstall-service` removes it.\n";
    format!("{header}{}", PACKAGED_UNIT.replace(PACKAGED_HELPER, &format!("/{HELPER}")))
}

/// The systemd drop-in that lets `user` control the helper by uid.
pub fn owner_drop_in(user: &str, uid: u32) -> String {
    format!(
        "# Written when Trellis was installed: {user} may control Trellis even before their\n\
         # membership of the group trellis counts (at their next login).\n\
         [Service]\nEnvironment=TRELLIS_OWNER_UID={uid}\n"
    )
}

pub fn install(args: &InstallArgs) -> Result<()> {
    let target = Target::new(args.root.as_deref())?;
    if target.path(PACKAGED_UNIT_PATH).exists() {
        bail!(
            "Trellis's helper is already installed by a package (/{PACKAGED_UNIT_PATH}); nothing was changed. \
             Start it with `sudo systemctl enable --now trellisd`"
        );
    }
    println!("Installing the Trellis helper as the systemd service {UNIT_NAME}:");
    let helper = std::env::current_exe().context("cannot find this program's path")?;
    install_file(&helper, &target.path(HELPER), 0o755)?;
    match cli_next_to_helper()? {
        Some(cli) => install_file(&cli, &target.path(CLI), 0o755)?,
        None => println!("  (no `trellis` command next to {}: not installed)", helper.display()),
    }
    write_file(&target.path(UNIT), &unit(), 0o644)?;
    // The installing user's sessions get the new group only at their next login; until
    // then the helper lets them in by uid.
    let user = installing_user(args.for_user.as_deref());
    if let Some(user) = &user {
        let uid = super::uid_of(user)?;
        write_file(&target.path(OWNER_DROP_IN), &owner_drop_in(user, uid), 0o644)?;
    }

    if !target.is_system {
        println!("Installed into {}; nothing was started.", target.root.display());
        return Ok(());
    }
    // Members of the group may control the helper (its socket is 0660 root:trellis).
    if std::process::Command::new("getent").args(["group", GROUP]).output()?.status.success() {
        println!("  the group {GROUP} exists");
    } else {
        run_tool("groupadd", &["--system", GROUP])?;
        println!("  created the group {GROUP}");
    }
    match user {
        Some(user) => {
            run_tool("usermod", &["-a", "-G", GROUP, &user])?;
            println!("  added {user} to {GROUP}");
        }
        None => println!("  no user to add to {GROUP}: add one with `sudo usermod -aG {GROUP} USER`"),
    }
    if !Path::new("/run/systemd/system").exists() {
        println!("systemd is not running here: start the helper yourself with `sudo /{HELPER}`.");
        return Ok(());
    }
    run_tool("systemctl", &["daemon-reload"])?;
    run_tool("systemctl", &["enable", UNIT_NAME])?;
    // restart, not `enable --now`: a helper already running (an earlier install) must be
    // replaced by this one.
    run_tool("systemctl", &["restart", UNIT_NAME])?;
    println!("  enabled and started {UNIT_NAME} (logs: journalctl -u trellisd)");
    println!("Done.");
    Ok(())
}

pub fn uninstall(args: &UninstallArgs) -> Result<()> {
    let target = Target::new(args.root.as_deref())?;
    if !target.path(UNIT).exists() {
        bail!("no service installed by `trellisd install-service` (/{UNIT} is missing); nothing was changed");
    }
    println!("Removing the Trellis helper's service {UNIT_NAME}:");
    let systemd = target.is_system && Path::new("/run/systemd/system").exists();
    if systemd {
        run_tool("systemctl", &["disable", "--now", UNIT_NAME])?;
        println!("  stopped and disabled {UNIT_NAME}");
    }
    for file in [UNIT, OWNER_DROP_IN, HELPER, CLI] {
        remove_if_present(&target.path(file))?;
    }
    let _ = std::fs::remove_dir(target.path(OWNER_DROP_IN).parent().unwrap()); // if empty
    if systemd {
        run_tool("systemctl", &["daemon-reload"])?;
    }
    let state = target.path(STATE_DIR);
    if args.purge {
        match std::fs::remove_dir_all(&state) {
            Ok(()) => println!("  deleted the device key and state in {}", state.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot delete {}", state.display())),
        }
    } else if state.exists() {
        println!(
            "  kept the device key and state in {} (delete them with: sudo rm -rf {0})",
            state.display()
        );
    }
    if target.is_system
        && std::process::Command::new("getent").args(["group", GROUP]).output()?.status.success()
    {
        println!("  the group {GROUP} stays (groupdel {GROUP} removes it)");
    }
    println!("Done.");
    Ok(())
}

/// The system (as root) or a staging directory.
struct Target {
    root: PathBuf,
    is_system: bool,
}

impl Target {
    fn new(root: Option<&Path>) -> Result<Self> {
        match root {
            Some(root) => Ok(Target { root: root.to_path_buf(), is_system: false }),
            None => {
                if !super::is_root()? {
                    bail!("installing a system service needs root: run it with sudo (or pkexec)");
                }
                Ok(Target { root: PathBuf::from("/"), is_system: true })
            }
        }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }
}
