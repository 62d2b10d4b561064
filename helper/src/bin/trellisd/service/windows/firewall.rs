//! The inbound firewall rule for trellisd.exe: peers reach the helper over UDP (ICE and
//! WireGuard), and without a rule Windows Defender Firewall drops what they send, or asks
//! a person on the desktop, which a service cannot show.
//!
//! Set with `netsh advfirewall`, whose keywords are the same in every language of Windows.
//! The MSI removes the rule on uninstall itself (installers/windows/trellisd.wxs), with the
//! same name.

use std::path::Path;
use std::process::{Command, Output};

use anyhow::{bail, Context, Result};

/// The rule's name, by which it is replaced and removed. The MSI spells it out too.
pub const RULE_NAME: &str = "Trellis helper (trellisd)";

/// `netsh` arguments that add the rule letting UDP in to `program`, on every network
/// profile. Each argument goes to netsh as it is (see [`run_netsh`]): values with spaces
/// are quoted the way netsh reads them (`name="a b"`).
pub fn add_rule_args(program: &Path) -> Result<Vec<String>> {
    let program = program.to_str().context("the helper's path is not valid Unicode")?;
    // Windows forbids `"` in paths; refuse one anyway rather than build a broken command.
    if program.contains('"') {
        bail!("the helper's path {program} contains a quotation mark");
    }
    Ok([
        "advfirewall",
        "firewall",
        "add",
        "rule",
        &format!("name=\"{RULE_NAME}\""),
        "dir=in",
        "action=allow",
        &format!("program=\"{program}\""),
        "protocol=UDP",
        "enable=yes",
        "profile=any",
    ]
    .map(String::from)
    .to_vec())
}

/// `netsh` arguments that delete every rule of [`RULE_NAME`].
pub fn delete_rule_args() -> Vec<String> {
    ["advfirewall", "firewall", "delete", "rule", &format!("name=\"{RULE_NAME}\"")].map(String::from).to_vec()
}

/// Replaces the rule (delete, then add), so a reinstall from another folder leaves one
/// rule, for the new program.
pub fn allow_inbound(program: &Path) -> Result<()> {
    let add = add_rule_args(program)?;
    // Fails when there is no rule yet (a first install): nothing to undo.
    let _ = run_netsh(&delete_rule_args());
    let out = run_netsh(&add)?;
    if !out.status.success() {
        bail!("`netsh {}` failed ({}): {}", add.join(" "), out.status, said(&out));
    }
    println!("  let UDP in to {} (firewall rule \"{RULE_NAME}\")", program.display());
    Ok(())
}

/// Removes the rule, if there is one.
pub fn remove() -> Result<()> {
    let out = run_netsh(&delete_rule_args())?;
    if out.status.success() {
        println!("  removed the firewall rule \"{RULE_NAME}\"");
    } else {
        // netsh fails when no rule matches; its words are in the system's language.
        println!("  no firewall rule \"{RULE_NAME}\" was removed: {}", said(&out));
    }
    Ok(())
}

/// Runs netsh with `args` passed verbatim: Rust would quote `name="a b"` as one argument
/// in quotes, which netsh does not read as the same.
fn run_netsh(args: &[String]) -> Result<Output> {
    use std::os::windows::process::CommandExt;
    let mut command = Command::new("netsh");
    for arg in args {
        command.raw_arg(arg);
    }
    command.output().context("cannot run netsh")
}

fn said(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_lets_udp_in_to_the_helper_on_every_profile() {
        let program = Path::new(r"C:\Program Files\Trellis Helper\trellisd.exe");
        let args = add_rule_args(program).unwrap();
        assert_eq!(
            args.join(" "),
            r#"advfirewall firewall add rule name="Trellis helper (trellisd)" dir=in action=allow program="C:\Program Files\Trellis Helper\trellisd.exe" protocol=UDP enable=yes profile=any"#
        );
        assert_eq!(
            delete_rule_args().join(" "),
            r#"advfirewall firewall delete rule name="Trellis helper (trellisd)""#
        );
    }

    #[test]
    fn the_msi_removes_the_same_rule_on_uninstall() {
        let wxs = include_str!("../../../../../../installers/windows/trellisd.wxs");
        let delete = format!("advfirewall firewall delete rule name=&quot;{RULE_NAME}&quot;");
        assert!(wxs.contains(&delete), "{wxs}");
    }

    #[test]
    fn a_path_that_would_break_the_command_is_refused() {
        assert!(add_rule_args(Path::new(r#"C:\odd"folder\trellisd.exe"#)).is_err());
    }
}
