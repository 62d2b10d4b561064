//! First-run setup of the helper where no installer set it up: the AppImage on Linux and
//! the app bundle on macOS carry `trellisd`; with the person's consent (the window says
//! what will happen first), the app runs `trellisd install-service` as an administrator:
//! through pkexec on Linux, through an administrator prompt (`osascript … with
//! administrator privileges`) on macOS. The deb, rpm and MSI install the service
//! themselves, so there is nothing to offer there.
//!
//! `TRELLIS_BUNDLED_HELPER` names a trellisd to offer instead (development and tests).

use std::path::{Path, PathBuf};

use tauri::Manager;

use crate::error::AppError;

/// A trellisd this app can install as the system's service, and how to ask for rights.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelperSetup {
    pub helper: PathBuf,
    pub elevation: Elevation,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elevation {
    /// polkit's pkexec: a graphical password prompt on Linux desktops.
    Pkexec,
    /// macOS's administrator prompt, through AppleScript's `do shell script`.
    MacAdministrator,
}

impl HelperSetup {
    /// The trellisd this app carries, if it carries one and may offer to install it.
    pub fn find(app: &tauri::AppHandle) -> Option<Self> {
        let elevation =
            if cfg!(target_os = "macos") { Elevation::MacAdministrator } else { Elevation::Pkexec };
        if let Some(helper) = std::env::var_os("TRELLIS_BUNDLED_HELPER") {
            return Some(Self { helper: PathBuf::from(helper), elevation });
        }
        let helper = if cfg!(target_os = "macos") {
            app.path().resource_dir().ok()?.join("trellisd")
        } else if cfg!(target_os = "linux") && std::env::var_os("APPIMAGE").is_some() {
            // The AppImage's runtime sets APPDIR to where the image is mounted.
            PathBuf::from(std::env::var_os("APPDIR")?).join("usr/bin/trellisd")
        } else {
            return None;
        };
        helper.is_file().then_some(Self { helper, elevation })
    }

    /// What the window says before asking: what will be installed and changed.
    pub fn explanation(&self) -> String {
        match self.elevation {
            Elevation::Pkexec => "Trellis will ask for an administrator's password, then install its helper \
                (trellisd) as a system service: copied to /usr/local/bin, started now and at every boot by \
                systemd, running as root with network rights only. It creates the network device, keeps this \
                device's private key in /var/lib/trellis, and lets members of the group trellis use it; \
                you are added to that group. To remove it later: sudo /usr/local/bin/trellisd uninstall-service."
                .into(),
            Elevation::MacAdministrator => {
                "Trellis will ask for an administrator's password, then install its \
                helper (trellisd) as a system service: copied to /Library/PrivilegedHelperTools, started now \
                and at every start-up by launchd, running as root. It creates the network device, keeps this \
                device's private key in /Library/Application Support/Trellis, and lets members of the group \
                trellis use it; you are added to that group. To remove it later: sudo \
                /Library/PrivilegedHelperTools/org.trellis.trellisd uninstall-service."
                    .into()
            }
        }
    }

    /// Installs the service; returns what `install-service` said it did, line by line.
    pub async fn install(&self) -> Result<Vec<String>, AppError> {
        let staged = stage(&self.helper)?;
        let (program, args) = elevated_command(self.elevation, &staged.helper, &current_user());
        tracing::info!(%program, ?args, "installing the helper service");
        let out = tokio::process::Command::new(&program)
            .args(&args)
            .output()
            .await
            .map_err(|e| AppError::internal(format!("cannot run {program}: {e}")))?;
        let said = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect::<Vec<_>>();
        let complaint = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if out.status.success() {
            return Ok(said);
        }
        Err(AppError::internal(failure_message(self.elevation, out.status.code(), &said, &complaint)))
    }
}

/// The program and arguments that run `helper install-service` as an administrator.
pub fn elevated_command(elevation: Elevation, helper: &Path, user: &str) -> (String, Vec<String>) {
    let helper = helper.to_string_lossy().into_owned();
    match elevation {
        // pkexec sets PKEXEC_UID as well; the user is named anyway, for clarity in the log.
        Elevation::Pkexec => {
            let mut args = vec![helper, "install-service".into()];
            if !user.is_empty() {
                args.extend(["--for-user".into(), user.into()]);
            }
            ("pkexec".into(), args)
        }
        Elevation::MacAdministrator => {
            let mut shell = format!("{} install-service", shell_quote(&helper));
            if !user.is_empty() {
                shell.push_str(&format!(" --for-user {}", shell_quote(user)));
            }
            let script = format!(
                // Without the last clause, AppleScript turns the output's line feeds into
                // carriage returns, and the window would show one long line.
                "do shell script {} with prompt {} with administrator privileges without altering line endings",
                applescript_string(&shell),
                applescript_string("Trellis wants to install its helper service.")
            );
            ("osascript".into(), vec!["-e".into(), script])
        }
    }
}

/// A sentence for a failed or declined install; nothing was changed when it was declined.
fn failure_message(elevation: Elevation, code: Option<i32>, said: &[String], complaint: &str) -> String {
    let declined = match elevation {
        // pkexec: 126 when the person dismissed the prompt. (127 is "not authorized" but
        // also "no polkit agent to ask": not something the person chose.)
        Elevation::Pkexec => code == Some(126),
        // AppleScript's "User canceled." is error -128.
        Elevation::MacAdministrator => complaint.contains("-128"),
    };
    if declined {
        return "The helper was not installed: the administrator prompt was declined. Nothing was changed."
            .into();
    }
    let mut message = match (elevation, code) {
        (Elevation::Pkexec, Some(127)) => format!(
            "Could not ask for an administrator's permission (pkexec: {complaint}); is a polkit agent \
             running? Nothing was changed"
        ),
        _ => format!("Installing the helper failed: {complaint}"),
    };
    if !said.is_empty() {
        message.push_str(&format!(" (done before the failure: {})", said.join("; ")));
    }
    message
}

/// A copy of the helper (and the `trellis` CLI beside it) that root can read: an
/// AppImage's FUSE mount is open to the user who mounted it only, not to root.
struct Staged {
    helper: PathBuf,
    _dir: tempfile::TempDir,
}

fn stage(helper: &Path) -> Result<Staged, AppError> {
    let fail =
        |e: std::io::Error| AppError::internal(format!("cannot prepare the helper for installing: {e}"));
    // The session's runtime directory when there is one: /tmp may be mounted noexec.
    let mut builder = tempfile::Builder::new();
    builder.prefix("trellis-setup-");
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| Path::new(d).is_dir()) {
        Some(runtime) => builder.tempdir_in(runtime),
        None => builder.tempdir(),
    }
    .map_err(fail)?;
    let staged = dir.path().join(helper.file_name().unwrap_or("trellisd".as_ref()));
    std::fs::copy(helper, &staged).map_err(fail)?;
    let cli = helper.with_file_name(if cfg!(windows) { "trellis.exe" } else { "trellis" });
    if cli.is_file() {
        std::fs::copy(&cli, dir.path().join(cli.file_name().unwrap())).map_err(fail)?;
    }
    #[cfg(unix)]
    {
        // The temporary directory is 0700: root may enter it, and the copies must run.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755)).map_err(fail)?;
    }
    Ok(Staged { helper: staged, _dir: dir })
}

fn current_user() -> String {
    std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_default()
}

/// Single-quoted for sh: every ' becomes '\''.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// A double-quoted AppleScript string literal.
fn applescript_string(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', r"\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkexec_runs_the_staged_helper_for_the_user() {
        let (program, args) = elevated_command(Elevation::Pkexec, Path::new("/tmp/x/trellisd"), "alice");
        assert_eq!(program, "pkexec");
        assert_eq!(args, ["/tmp/x/trellisd", "install-service", "--for-user", "alice"]);
        // No user known: pkexec's PKEXEC_UID tells the helper who asked.
        let (_, args) = elevated_command(Elevation::Pkexec, Path::new("/tmp/x/trellisd"), "");
        assert_eq!(args, ["/tmp/x/trellisd", "install-service"]);
    }

    #[test]
    fn the_macos_prompt_quotes_paths_with_spaces_and_quotes() {
        let helper = Path::new("/Applications/Trellis.app/Contents/Resources/it's \"here\"/trellisd");
        let (program, args) = elevated_command(Elevation::MacAdministrator, helper, "bob");
        assert_eq!(program, "osascript");
        assert_eq!(args[0], "-e");
        assert_eq!(
            args[1],
            r#"do shell script "'/Applications/Trellis.app/Contents/Resources/it'\\''s \"here\"/trellisd' install-service --for-user 'bob'" with prompt "Trellis wants to install its helper service." with administrator privileges without altering line endings"#
        );
    }

    #[test]
    fn a_declined_prompt_says_nothing_changed() {
        let declined = failure_message(Elevation::Pkexec, Some(126), &[], "");
        assert!(declined.contains("declined") && declined.contains("Nothing was changed"), "{declined}");
        let mac = failure_message(
            Elevation::MacAdministrator,
            Some(1),
            &[],
            "execution error: User canceled. (-128)",
        );
        assert!(mac.contains("declined"), "{mac}");
        let failed = failure_message(
            Elevation::Pkexec,
            Some(1),
            &["  installed /usr/local/bin/trellisd".into()],
            "boom",
        );
        assert_eq!(failed, "Installing the helper failed: boom (done before the failure:   installed /usr/local/bin/trellisd)");
    }

    #[test]
    fn staging_copies_the_helper_and_the_cli_where_root_can_read_them() {
        let source = tempfile::tempdir().unwrap();
        std::fs::write(source.path().join("trellisd"), b"helper").unwrap();
        std::fs::write(source.path().join("trellis"), b"cli").unwrap();
        let staged = stage(&source.path().join("trellisd")).unwrap();
        assert_eq!(std::fs::read(&staged.helper).unwrap(), b"helper");
        assert_eq!(std::fs::read(staged.helper.with_file_name("trellis")).unwrap(), b"cli");
        let dir = staged.helper.parent().unwrap().to_path_buf();
        drop(staged);
        assert!(!dir.exists(), "the staging directory outlived the install");
    }
}
