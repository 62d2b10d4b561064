//! Who may control the helper, as set up at install: the local group `Trellis Users`, the
//! installing person in it and named to the service (so they need not sign out and in
//! first), and the check that no ordinary user may replace the service's program.
//!
//! Everything goes by SID, never by account name or a tool's words, so it holds in every
//! language of Windows and for domain and Microsoft accounts.

use std::path::Path;

use anyhow::{bail, Context, Result};
use trellis_helper::ipc::win32;
use trellis_helper::ipc::windows_acl::{changeable_by_others, replaceable_by_others, Sid};
use trellis_helper::ipc::{OWNER_SID_ENV, TRELLIS_USERS_GROUP};

use super::SERVICE_NAME;

/// The service's registry key; its `Environment` value (REG_MULTI_SZ, `NAME=value` lines)
/// is the service process's environment.
const SERVICE_KEY: &str = r"HKLM\SYSTEM\CurrentControlSet\Services";

/// Whom `--for-user` names.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum InstallingUser {
    /// A SID: what the MSI passes (`[UserSID]`, the person running the installer).
    Sid(Sid),
    /// An account name, `user` or `DOMAIN\user`, for people running install-service.
    Name(String),
    /// No person to let in, and why.
    Nobody(&'static str),
}

impl InstallingUser {
    /// Reads `--for-user`. The MSI passes a SID rather than `[LogonUser]`: a name without
    /// its domain may name another account (a local one instead of the domain one), and a
    /// SID needs no lookup at all.
    pub fn from_flag(value: Option<&str>) -> Self {
        let Some(value) = value.map(str::trim).filter(|value| !value.is_empty()) else {
            return InstallingUser::Nobody("no user was named (--for-user)");
        };
        if let Ok(sid) = value.parse::<Sid>() {
            return Self::person(sid);
        }
        let account = value.rsplit('\\').next().unwrap_or(value);
        if account.eq_ignore_ascii_case("SYSTEM") {
            InstallingUser::Nobody(NOT_A_PERSON)
        } else if account.ends_with('$') {
            InstallingUser::Nobody("a computer account is no person")
        } else {
            InstallingUser::Name(value.to_string())
        }
    }

    /// `sid`, unless it is a service account: an MSI deployed by a management tool runs as
    /// LocalSystem, and [UserSID] is then SYSTEM's.
    fn person(sid: Sid) -> Self {
        if sid.is_service_account() {
            InstallingUser::Nobody(NOT_A_PERSON)
        } else {
            InstallingUser::Sid(sid)
        }
    }

    /// The person's SID, looking a name up.
    fn resolve(self) -> Result<Option<Sid>> {
        match self {
            InstallingUser::Sid(sid) => Ok(Some(sid)),
            InstallingUser::Name(name) => {
                let sid = win32::account_sid_of(&name)
                    .with_context(|| format!("cannot look up the account {name}"))?
                    .with_context(|| format!("there is no account {name}"))?;
                match Self::person(sid) {
                    InstallingUser::Sid(sid) => Ok(Some(sid)),
                    _ => Ok(None),
                }
            }
            InstallingUser::Nobody(_) => Ok(None),
        }
    }
}

const NOT_A_PERSON: &str = "the installer runs as SYSTEM (a management tool), which is no person";

/// Creates the group `Trellis Users` (members may open the helper's pipe) and lets the
/// installing person in: added to the group, and named to the service, since a new
/// group membership counts only from their next sign-in. Returns that person's SID.
pub fn set_up_users(for_user: Option<&str>) -> Result<Option<Sid>> {
    let group = TRELLIS_USERS_GROUP;
    if win32::create_local_group(group, "May control the Trellis helper")
        .with_context(|| format!("cannot create the local group {group}"))?
    {
        println!("  created the local group {group}");
    } else {
        println!("  the local group {group} exists");
    }
    let user = InstallingUser::from_flag(for_user);
    if let InstallingUser::Nobody(why) = &user {
        println!("  no user to add to {group} ({why}): net localgroup \"{group}\" USER /add");
        return Ok(None);
    }
    let Some(sid) = user.resolve()? else {
        println!("  no user to add to {group} ({NOT_A_PERSON})");
        return Ok(None);
    };
    match win32::add_local_group_member(group, &sid) {
        Ok(true) => println!("  added {sid} to {group}"),
        Ok(false) => println!("  {sid} is in {group} already"),
        // The helper works without it (for administrators, and for this person by SID);
        // an administrator can add them later.
        Err(e) => println!("  could not add {sid} to {group} ({e}): net localgroup \"{group}\" USER /add"),
    }
    Ok(Some(sid))
}

/// `reg` arguments that name `owner` in the service's environment ([`OWNER_SID_ENV`]),
/// which the helper reads at start, as on Linux the systemd drop-in's TRELLIS_OWNER_UID.
pub fn owner_environment_args(owner: &Sid) -> Vec<String> {
    [
        "add",
        &format!(r"{SERVICE_KEY}\{SERVICE_NAME}"),
        "/v",
        "Environment",
        "/t",
        "REG_MULTI_SZ",
        "/d",
        &format!("{OWNER_SID_ENV}={owner}"),
        "/f",
    ]
    .map(String::from)
    .to_vec()
}

/// Names `owner` to the (existing) service; it counts from the service's next start.
pub fn name_owner_to_service(owner: &Sid) -> Result<()> {
    let args = owner_environment_args(owner);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    super::super::run_tool("reg", &args)?;
    println!("  {owner} may control the helper before signing in again ({OWNER_SID_ENV})");
    Ok(())
}

/// A LocalSystem service must not run a program that anyone but the administration may
/// replace (whoever may is SYSTEM in all but name): refuse when others may change the
/// helper's folder (add a file beside it, such as a DLL it loads, or remove it) or the
/// program itself. Reads the ACLs through Windows, not `icacls`' output, whose words are
/// in the system's language.
///
/// The folders above it count too: whoever may rename or remove one of them (or take it
/// over) may put another folder with another trellisd.exe in its place.
pub fn refuse_writable(executable: &Path) -> Result<()> {
    let folder = executable.parent().context("the helper has no folder")?;
    for path in [folder, executable] {
        let security = win32::path_security(path)?;
        if let Some(why) = changeable_by_others(&security) {
            bail!(
                "{} may be changed by others than SYSTEM and Administrators ({why}), and the service \
                 would run what is there as SYSTEM: put trellisd.exe under C:\\Program Files",
                path.display()
            );
        }
    }
    for above in folder.ancestors().skip(1) {
        let security = win32::path_security(above)?;
        if let Some(why) = replaceable_by_others(&security) {
            bail!(
                "{} may be renamed or replaced by others than SYSTEM and Administrators ({why}), and with \
                 it the helper the service runs as SYSTEM: put trellisd.exe under C:\\Program Files",
                above.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(text: &str) -> Sid {
        text.parse().unwrap()
    }

    #[test]
    fn the_installing_user_is_read_from_a_sid_or_a_name() {
        let person = "S-1-5-21-1004336348-1177238915-682003330-1001";
        assert_eq!(InstallingUser::from_flag(Some(person)), InstallingUser::Sid(sid(person)));
        assert_eq!(InstallingUser::from_flag(Some(&format!(" {person} "))), InstallingUser::Sid(sid(person)));
        assert_eq!(InstallingUser::from_flag(Some("alice")), InstallingUser::Name("alice".into()));
        assert_eq!(
            InstallingUser::from_flag(Some(r"CORP\alice")),
            InstallingUser::Name(r"CORP\alice".into())
        );
        // A name that merely starts like a SID is a name.
        assert_eq!(InstallingUser::from_flag(Some("S-1-alice")), InstallingUser::Name("S-1-alice".into()));
    }

    #[test]
    fn no_person_is_let_in_for_system_machines_or_an_empty_flag() {
        for nobody in [
            None,
            Some(""),
            Some("  "),
            Some("S-1-5-18"),
            Some("SYSTEM"),
            Some(r"NT AUTHORITY\SYSTEM"),
            Some(r"CORP\DESK-7$"),
        ] {
            assert!(matches!(InstallingUser::from_flag(nobody), InstallingUser::Nobody(_)), "{nobody:?}");
        }
    }

    #[test]
    fn the_flag_parses_from_the_command_line_as_the_msi_passes_it() {
        use clap::Parser;
        #[derive(clap::Parser, Debug)]
        struct Cli {
            #[command(flatten)]
            install: crate::service::InstallArgs,
        }
        let cli = Cli::try_parse_from(["trellisd", "--without-service", "--for-user", "S-1-5-21-1-2-3-1001"])
            .unwrap();
        assert!(cli.install.without_service);
        let user = InstallingUser::from_flag(cli.install.for_user.as_deref());
        assert_eq!(user, InstallingUser::Sid(sid("S-1-5-21-1-2-3-1001")));
        // [UserSID] unset: an empty value, which lets no one in rather than failing.
        let cli = Cli::try_parse_from(["trellisd", "--without-service", "--for-user", ""]).unwrap();
        assert!(matches!(
            InstallingUser::from_flag(cli.install.for_user.as_deref()),
            InstallingUser::Nobody(_)
        ));
    }

    #[test]
    fn the_msi_passes_the_installing_users_sid() {
        let wxs = include_str!("../../../../../../installers/windows/trellisd.wxs");
        assert!(wxs.contains(r#"--for-user &quot;[UserSID]&quot;"#), "{wxs}");
        assert!(!wxs.contains("--for-user &quot;[LogonUser]"));
    }

    #[test]
    fn the_owner_is_named_in_the_services_environment() {
        let args = owner_environment_args(&sid("S-1-5-21-1-2-3-1001"));
        assert_eq!(
            args.join(" "),
            r"add HKLM\SYSTEM\CurrentControlSet\Services\trellisd /v Environment /t REG_MULTI_SZ /d TRELLIS_OWNER_SID=S-1-5-21-1-2-3-1001 /f"
        );
    }
}
