//! Windows access control as data: access rights, SIDs, the DACL of the helper's pipe (as
//! SDDL), and whether anyone but the system's administration may change a file or folder.
//!
//! Pure, so that these decisions are unit-tested on every platform; `win32.rs` reads and
//! writes the real security descriptors. Users: the pipe (`windows.rs`) and `trellisd
//! install-service`, which refuses to register a LocalSystem service whose program someone
//! other than SYSTEM, Administrators and TrustedInstaller may replace.
//!
//! SIDs are compared in their string form (`S-1-5-32-545`): a SID's string is canonical
//! and the same in every language of Windows, unlike account names.

use std::fmt;
use std::str::FromStr;

/// Access rights, as in the Windows SDK (winnt.h). The same bits mean different things on
/// different objects; the comments say what they mean on files, folders and pipes.
pub mod rights {
    /// Files and pipes: read data; folders: list.
    pub const FILE_READ_DATA: u32 = 0x0000_0001;
    /// Files and pipes: write data; folders: add a file.
    pub const FILE_WRITE_DATA: u32 = 0x0000_0002;
    /// Files: append; folders: add a subfolder.
    pub const FILE_APPEND_DATA: u32 = 0x0000_0004;
    /// Pipes: create another instance of the pipe, i.e. act as its server. The same bit as
    /// [`FILE_APPEND_DATA`], so `GENERIC_WRITE` includes it.
    pub const FILE_CREATE_PIPE_INSTANCE: u32 = 0x0000_0004;
    pub const FILE_READ_EA: u32 = 0x0000_0008;
    pub const FILE_WRITE_EA: u32 = 0x0000_0010;
    pub const FILE_EXECUTE: u32 = 0x0000_0020;
    /// Folders: delete (or rename away) anything inside, whatever its own ACL says.
    pub const FILE_DELETE_CHILD: u32 = 0x0000_0040;
    pub const FILE_READ_ATTRIBUTES: u32 = 0x0000_0080;
    pub const FILE_WRITE_ATTRIBUTES: u32 = 0x0000_0100;
    pub const DELETE: u32 = 0x0001_0000;
    pub const READ_CONTROL: u32 = 0x0002_0000;
    pub const WRITE_DAC: u32 = 0x0004_0000;
    pub const WRITE_OWNER: u32 = 0x0008_0000;
    pub const SYNCHRONIZE: u32 = 0x0010_0000;
    pub const GENERIC_ALL: u32 = 0x1000_0000;
    pub const GENERIC_EXECUTE: u32 = 0x2000_0000;
    pub const GENERIC_WRITE: u32 = 0x4000_0000;
    pub const GENERIC_READ: u32 = 0x8000_0000;
    /// Every right of a file or pipe: what `GENERIC_ALL` maps to on them.
    pub const FILE_ALL_ACCESS: u32 = 0x001F_01FF;
    /// What `GENERIC_READ` maps to on files and pipes.
    pub const FILE_GENERIC_READ: u32 =
        READ_CONTROL | FILE_READ_DATA | FILE_READ_ATTRIBUTES | FILE_READ_EA | SYNCHRONIZE;
    /// What `GENERIC_WRITE` maps to on files and pipes: it includes
    /// [`FILE_CREATE_PIPE_INSTANCE`].
    pub const FILE_GENERIC_WRITE: u32 = READ_CONTROL
        | FILE_WRITE_DATA
        | FILE_WRITE_ATTRIBUTES
        | FILE_WRITE_EA
        | FILE_APPEND_DATA
        | SYNCHRONIZE;
}

use rights::*;

/// What a client of the helper's pipe is granted: `FILE_GENERIC_READ | FILE_GENERIC_WRITE`
/// without `FILE_CREATE_PIPE_INSTANCE` (0x12019B).
///
/// Without that right a user cannot create an instance of the pipe, so cannot stand in
/// for the helper and read what the next client (another user, the app) sends it. Clients
/// open the pipe with `GENERIC_READ | GENERIC_WRITE` (tokio's `ClientOptions`); Windows
/// maps that to `FILE_GENERIC_READ | FILE_GENERIC_WRITE`, and the pipe file system leaves
/// `FILE_CREATE_PIPE_INSTANCE` out of a client's request, so each of the other bits must
/// be granted (READ_CONTROL and the EA rights included) or the open is refused.
pub const PIPE_CLIENT_ACCESS: u32 = (FILE_GENERIC_READ | FILE_GENERIC_WRITE) & !FILE_CREATE_PIPE_INSTANCE;

/// A security identifier in its string form, `S-1-<authority>-<sub-authority>…`.
///
/// Parsing checks the form, so a `Sid` can go into SDDL without changing its meaning.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Sid(String);

/// Well-known SIDs: the same on every Windows machine and in every language.
pub mod well_known {
    pub const EVERYONE: &str = "S-1-1-0";
    /// Placeholders in inheritable ACEs, replaced by the creator's SID (or primary group)
    /// in each new child.
    pub const CREATOR_OWNER: &str = "S-1-3-0";
    pub const CREATOR_GROUP: &str = "S-1-3-1";
    /// Stands for the object's owner, whatever account that is.
    pub const OWNER_RIGHTS: &str = "S-1-3-4";
    pub const INTERACTIVE: &str = "S-1-5-4";
    pub const AUTHENTICATED_USERS: &str = "S-1-5-11";
    pub const LOCAL_SYSTEM: &str = "S-1-5-18";
    pub const LOCAL_SERVICE: &str = "S-1-5-19";
    pub const NETWORK_SERVICE: &str = "S-1-5-20";
    pub const ADMINISTRATORS: &str = "S-1-5-32-544";
    pub const USERS: &str = "S-1-5-32-545";
    /// NT SERVICE\TrustedInstaller, which owns Windows' own files.
    pub const TRUSTED_INSTALLER: &str = "S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464";
}

/// The most sub-authorities a SID may have (SID_MAX_SUB_AUTHORITIES).
const MAX_SUB_AUTHORITIES: usize = 15;

#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("{text:?} is not a SID (S-1-<authority>-<sub-authority>…)")]
pub struct InvalidSid {
    pub text: String,
}

impl FromStr for Sid {
    type Err = InvalidSid;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidSid { text: text.to_string() };
        let rest = text.strip_prefix("S-1-").or_else(|| text.strip_prefix("s-1-")).ok_or_else(invalid)?;
        let mut parts = rest.split('-');
        // The identifier authority: 48 bits, in decimal, or in hexadecimal (0x…) from 2^32 on.
        let authority = parts.next().ok_or_else(invalid)?;
        let authority = match authority.strip_prefix("0x").or_else(|| authority.strip_prefix("0X")) {
            Some(hex) if !hex.is_empty() && hex.len() <= 12 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                u64::from_str_radix(hex, 16).ok()
            }
            Some(_) => None,
            None if is_decimal(authority) => authority.parse::<u64>().ok(),
            None => None,
        };
        if authority.is_none_or(|a| a >= 1 << 48) {
            return Err(invalid());
        }
        let mut count = 0;
        for part in parts {
            count += 1;
            if count > MAX_SUB_AUTHORITIES || !is_decimal(part) || part.parse::<u32>().is_err() {
                return Err(invalid());
            }
        }
        Ok(Sid(format!("S-1-{rest}")))
    }
}

fn is_decimal(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

impl Sid {
    /// A well-known SID from [`well_known`].
    pub fn well_known(text: &'static str) -> Self {
        text.parse().expect("a well-known SID")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The system's administration: SYSTEM, Administrators, TrustedInstaller. What only
    /// they may change is as safe as the system itself.
    pub fn is_administration(&self) -> bool {
        use well_known::*;
        [LOCAL_SYSTEM, ADMINISTRATORS, TRUSTED_INSTALLER].contains(&self.as_str())
    }

    /// A service account rather than a person: LocalSystem (what an MSI deployed by a
    /// management tool runs as), LocalService, NetworkService.
    pub fn is_service_account(&self) -> bool {
        use well_known::*;
        [LOCAL_SYSTEM, LOCAL_SERVICE, NETWORK_SERVICE].contains(&self.as_str())
    }
}

impl fmt::Display for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who may open the helper's pipe, besides SYSTEM and Administrators.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct PipeAccess {
    /// The `Trellis Users` group, when it exists.
    pub users_group: Option<Sid>,
    /// The person who installed Trellis: let in by their own SID, because a group
    /// membership added at install counts only from their next sign-in.
    pub owner: Option<Sid>,
}

impl PipeAccess {
    /// The pipe's security descriptor in SDDL: a protected DACL (nothing inherited) giving
    /// SYSTEM and Administrators full control and the group and the owner
    /// [`PIPE_CLIENT_ACCESS`]. No one else may open the pipe.
    pub fn sddl(&self) -> String {
        let mut sddl = String::from("D:P(A;;GA;;;SY)(A;;GA;;;BA)");
        for sid in [&self.users_group, &self.owner].into_iter().flatten() {
            sddl.push_str(&format!("(A;;{PIPE_CLIENT_ACCESS:#x};;;{sid})"));
        }
        sddl
    }
}

/// ACE types (winnt.h).
pub const ACCESS_ALLOWED_ACE_TYPE: u8 = 0;
pub const ACCESS_DENIED_ACE_TYPE: u8 = 1;
pub const ACCESS_ALLOWED_OBJECT_ACE_TYPE: u8 = 5;
/// A conditional allow entry: laid out as an allowed ACE, with its condition after the SID.
pub const ACCESS_ALLOWED_CALLBACK_ACE_TYPE: u8 = 9;
pub const ACCESS_ALLOWED_CALLBACK_OBJECT_ACE_TYPE: u8 = 11;
/// Every type of entry that grants rights. Whatever its condition or object type, such an
/// entry is read as granting them: the check errs towards refusing.
const ALLOW_TYPES: [u8; 4] = [
    ACCESS_ALLOWED_ACE_TYPE,
    ACCESS_ALLOWED_OBJECT_ACE_TYPE,
    ACCESS_ALLOWED_CALLBACK_ACE_TYPE,
    ACCESS_ALLOWED_CALLBACK_OBJECT_ACE_TYPE,
];
/// ACE flags (winnt.h).
pub const OBJECT_INHERIT_ACE: u8 = 0x01;
pub const CONTAINER_INHERIT_ACE: u8 = 0x02;
/// The ACE is only handed down to children; it does not apply to the object itself.
pub const INHERIT_ONLY_ACE: u8 = 0x08;
pub const INHERITED_ACE: u8 = 0x10;

/// One entry of a DACL.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Ace {
    /// [`ACCESS_ALLOWED_ACE_TYPE`], [`ACCESS_DENIED_ACE_TYPE`],
    /// [`ACCESS_ALLOWED_CALLBACK_ACE_TYPE`] (their SIDs are read), or another type (object
    /// ACEs), whose SID is then not read.
    pub kind: u8,
    pub flags: u8,
    pub mask: u32,
    pub sid: Option<Sid>,
}

impl Ace {
    pub fn allow(sid: &str, mask: u32, flags: u8) -> Self {
        Self { kind: ACCESS_ALLOWED_ACE_TYPE, flags, mask, sid: Some(sid.parse().expect("a SID")) }
    }

    pub fn applies_to_object(&self) -> bool {
        self.flags & INHERIT_ONLY_ACE == 0
    }
}

/// The parts of a security descriptor that decide who may change an object.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ObjectSecurity {
    pub owner: Option<Sid>,
    /// `None`: the object has no DACL at all, which lets everyone do everything.
    pub dacl: Option<Vec<Ace>>,
}

/// Rights that let their holder change a file or what a folder holds: write or append,
/// add or delete children, delete or rename it, or take it over (change its ACL or owner).
pub const CHANGE_RIGHTS: u32 = FILE_WRITE_DATA
    | FILE_APPEND_DATA
    | FILE_DELETE_CHILD
    | DELETE
    | WRITE_DAC
    | WRITE_OWNER
    | GENERIC_WRITE
    | GENERIC_ALL;

/// Rights on a folder *above* the helper's that let their holder put another folder in the
/// helper's place: rename or remove it (DELETE), or one of its children
/// (FILE_DELETE_CHILD), or take it over (its ACL or owner). Adding a folder beside ours, as
/// Authenticated Users may in `C:\`, is not among them.
pub const REPLACE_RIGHTS: u32 = FILE_DELETE_CHILD | DELETE | WRITE_DAC | WRITE_OWNER | GENERIC_ALL;

/// Who besides the administration may change an object, and how.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum OpenToOthers {
    /// No DACL: everyone has every right.
    NoDacl,
    /// Owned by another account, which may therefore rewrite its ACL.
    Owner(Sid),
    /// An ACE grants another account `rights` (those of the rights asked about).
    Granted { sid: Sid, rights: u32 },
    /// An allow entry of a type whose SID is not read grants `rights`: it may be anyone.
    GrantedUnread { kind: u8, rights: u32 },
}

impl fmt::Display for OpenToOthers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenToOthers::NoDacl => f.write_str("it has no access control list, so everyone may change it"),
            OpenToOthers::Owner(sid) => write!(f, "it belongs to {sid}, who may change its permissions"),
            OpenToOthers::Granted { sid, rights } => write!(f, "{sid} may change it (rights {rights:#x})"),
            OpenToOthers::GrantedUnread { kind, rights } => write!(
                f,
                "an access entry of type {kind}, whose account is not checked, may change it (rights {rights:#x})"
            ),
        }
    }
}

/// Whether anyone but the administration ([`Sid::is_administration`]) may change the
/// object described by `security`: its owner, or an allow entry with some of
/// [`CHANGE_RIGHTS`] for another account (a single user as much as Users or Everyone: a
/// user who may replace a LocalSystem service's program may act as SYSTEM).
///
/// Only entries that apply to the object itself count (not those only handed down to its
/// children); CREATOR OWNER and CREATOR GROUP entries apply to no one on the object, and
/// OWNER RIGHTS stands for its owner, which is checked. Deny entries are not weighed
/// against allow entries: an allow entry counts even if a deny entry might cancel it,
/// erring towards refusing.
pub fn changeable_by_others(security: &ObjectSecurity) -> Option<OpenToOthers> {
    open_to_others(security, CHANGE_RIGHTS)
}

/// Whether anyone but the administration may put another folder in the place of this one,
/// a folder above the helper's: its owner, or an allow entry with some of
/// [`REPLACE_RIGHTS`] for another account; weighed as in [`changeable_by_others`].
pub fn replaceable_by_others(security: &ObjectSecurity) -> Option<OpenToOthers> {
    open_to_others(security, REPLACE_RIGHTS)
}

fn open_to_others(security: &ObjectSecurity, asked: u32) -> Option<OpenToOthers> {
    use well_known::{CREATOR_GROUP, CREATOR_OWNER, OWNER_RIGHTS};
    let Some(dacl) = &security.dacl else {
        return Some(OpenToOthers::NoDacl);
    };
    if let Some(owner) = security.owner.as_ref().filter(|owner| !owner.is_administration()) {
        return Some(OpenToOthers::Owner(owner.clone()));
    }
    let stands_for_no_one_else = |sid: &Sid| {
        sid.is_administration() || [CREATOR_OWNER, CREATOR_GROUP, OWNER_RIGHTS].contains(&sid.as_str())
    };
    dacl.iter()
        .filter(|ace| ALLOW_TYPES.contains(&ace.kind) && ace.applies_to_object())
        .filter(|ace| ace.mask & asked != 0)
        .find_map(|ace| match &ace.sid {
            None => Some(OpenToOthers::GrantedUnread { kind: ace.kind, rights: ace.mask & asked }),
            Some(sid) if stands_for_no_one_else(sid) => None,
            Some(sid) => Some(OpenToOthers::Granted { sid: sid.clone(), rights: ace.mask & asked }),
        })
}

#[cfg(test)]
mod tests {
    use super::well_known::*;
    use super::*;

    #[test]
    fn the_pipe_client_grant_is_read_and_write_without_creating_instances() {
        assert_eq!(FILE_GENERIC_READ, 0x0012_0089, "winnt.h");
        assert_eq!(FILE_GENERIC_WRITE, 0x0012_0116, "winnt.h");
        assert_eq!(PIPE_CLIENT_ACCESS, 0x0012_019B);
        assert_eq!(PIPE_CLIENT_ACCESS & FILE_CREATE_PIPE_INSTANCE, 0);
        for needed in
            [FILE_READ_DATA, FILE_WRITE_DATA, FILE_READ_ATTRIBUTES, FILE_WRITE_ATTRIBUTES, SYNCHRONIZE]
        {
            assert_ne!(PIPE_CLIENT_ACCESS & needed, 0, "{needed:#x}");
        }
        for never in [DELETE, WRITE_DAC, WRITE_OWNER, GENERIC_ALL, GENERIC_WRITE] {
            assert_eq!(PIPE_CLIENT_ACCESS & never, 0, "{never:#x}");
        }
    }

    #[test]
    fn the_pipe_sddl_names_the_group_and_the_owner_with_the_client_grant_only() {
        let group: Sid = "S-1-5-21-1004336348-1177238915-682003330-1010".parse().unwrap();
        let owner: Sid = "S-1-5-21-1004336348-1177238915-682003330-1001".parse().unwrap();
        let both = PipeAccess { users_group: Some(group.clone()), owner: Some(owner.clone()) };
        assert_eq!(
            both.sddl(),
            format!("D:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;0x12019b;;;{group})(A;;0x12019b;;;{owner})")
        );
        assert_eq!(
            PipeAccess { users_group: None, owner: Some(owner.clone()) }.sddl(),
            format!("D:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;0x12019b;;;{owner})")
        );
        assert_eq!(PipeAccess::default().sddl(), "D:P(A;;GA;;;SY)(A;;GA;;;BA)");
        // Neither GW (which carries FILE_CREATE_PIPE_INSTANCE) nor GA for users.
        assert_eq!(both.sddl().matches("GA").count(), 2);
        assert!(!both.sddl().contains("GW"));
    }

    #[test]
    fn sids_parse_only_in_their_canonical_form() {
        for good in [
            "S-1-5-18",
            "S-1-5-32-544",
            "S-1-5-21-1004336348-1177238915-682003330-1001",
            "S-1-0x123456789abc-1",
        ] {
            assert_eq!(good.parse::<Sid>().unwrap().as_str(), good);
        }
        assert_eq!("s-1-5-18".parse::<Sid>().unwrap().as_str(), "S-1-5-18");
        for bad in [
            "",
            "S-1",
            "S-1-",
            "S-2-5-18",
            "S-1-5-",
            "S-1-5--18",
            "S-1-5-18 ",
            "S-1-5-4294967296",
            "S-1-281474976710656-1",
            "S-1-5-1)(A;;GA;;;WD",
            "alice",
            "DOMAIN\\alice",
            "S-1-5-1-2-3-4-5-6-7-8-9-10-11-12-13-14-15-16",
        ] {
            assert!(bad.parse::<Sid>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_administration_and_service_accounts_are_recognised() {
        for admin in [LOCAL_SYSTEM, ADMINISTRATORS, TRUSTED_INSTALLER] {
            assert!(sid(admin).is_administration(), "{admin}");
        }
        for other in
            [EVERYONE, USERS, AUTHENTICATED_USERS, CREATOR_OWNER, LOCAL_SERVICE, "S-1-5-21-1-2-3-500"]
        {
            assert!(!sid(other).is_administration(), "{other}");
        }
        for service in [LOCAL_SYSTEM, LOCAL_SERVICE, NETWORK_SERVICE] {
            assert!(sid(service).is_service_account(), "{service}");
        }
        assert!(!sid("S-1-5-21-1-2-3-1001").is_service_account());
    }

    /// A person's account on this machine.
    const ALICE: &str = "S-1-5-21-1004336348-1177238915-682003330-1001";

    /// What a folder created under C:\Program Files inherits (icacls: SYSTEM and
    /// Administrators F, Users RX, CREATOR OWNER (OI)(CI)(IO)F, TrustedInstaller F).
    fn program_files_folder() -> Vec<Ace> {
        const READ_EXECUTE: u32 = FILE_GENERIC_READ | FILE_EXECUTE;
        let inherited = INHERITED_ACE;
        let to_children = INHERITED_ACE | OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE | INHERIT_ONLY_ACE;
        vec![
            Ace::allow(TRUSTED_INSTALLER, FILE_ALL_ACCESS, inherited),
            Ace::allow(TRUSTED_INSTALLER, GENERIC_ALL, to_children),
            Ace::allow(LOCAL_SYSTEM, FILE_ALL_ACCESS, inherited),
            Ace::allow(LOCAL_SYSTEM, GENERIC_ALL, to_children),
            Ace::allow(ADMINISTRATORS, FILE_ALL_ACCESS, inherited),
            Ace::allow(ADMINISTRATORS, GENERIC_ALL, to_children),
            Ace::allow(USERS, READ_EXECUTE, inherited),
            Ace::allow(USERS, GENERIC_READ | GENERIC_EXECUTE, to_children),
            Ace::allow(CREATOR_OWNER, GENERIC_ALL, to_children),
        ]
    }

    fn secured(owner: &str, dacl: Vec<Ace>) -> ObjectSecurity {
        ObjectSecurity { owner: Some(sid(owner)), dacl: Some(dacl) }
    }

    #[test]
    fn a_program_files_folder_is_the_administrations_alone() {
        assert_eq!(changeable_by_others(&secured(ADMINISTRATORS, program_files_folder())), None);
        assert_eq!(changeable_by_others(&secured(TRUSTED_INSTALLER, program_files_folder())), None);
        // Placeholders that apply to no one on the folder itself.
        let mut dacl = program_files_folder();
        dacl.push(Ace::allow(CREATOR_OWNER, GENERIC_ALL, 0));
        dacl.push(Ace::allow(OWNER_RIGHTS, FILE_ALL_ACCESS, 0));
        assert_eq!(changeable_by_others(&secured(LOCAL_SYSTEM, dacl)), None);
    }

    #[test]
    fn folders_others_may_change_are_found() {
        let with = |ace: Ace| {
            let mut dacl = program_files_folder();
            dacl.push(ace);
            changeable_by_others(&secured(ADMINISTRATORS, dacl))
        };
        // C:\ itself: Authenticated Users may add subfolders (icacls: (AD)).
        assert_eq!(
            with(Ace::allow(AUTHENTICATED_USERS, FILE_APPEND_DATA, 0)),
            Some(OpenToOthers::Granted { sid: sid(AUTHENTICATED_USERS), rights: FILE_APPEND_DATA })
        );
        // A folder in someone's profile: theirs to change, so theirs to turn into SYSTEM.
        assert_eq!(
            with(Ace::allow(ALICE, FILE_ALL_ACCESS, INHERITED_ACE)),
            Some(OpenToOthers::Granted { sid: sid(ALICE), rights: FILE_ALL_ACCESS & CHANGE_RIGHTS })
        );
        for mask in
            [FILE_WRITE_DATA, FILE_DELETE_CHILD, DELETE, WRITE_DAC, WRITE_OWNER, GENERIC_WRITE, GENERIC_ALL]
        {
            assert!(with(Ace::allow(USERS, mask, INHERITED_ACE)).is_some(), "{mask:#x}");
            assert!(with(Ace::allow(EVERYONE, mask, OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE)).is_some());
        }
        // Handed down to children only: not a right on the folder itself.
        assert_eq!(with(Ace::allow(USERS, GENERIC_WRITE, OBJECT_INHERIT_ACE | INHERIT_ONLY_ACE)), None);
        // Reading, or changing attributes only, is not changing the folder's programs.
        assert_eq!(
            with(Ace::allow(EVERYONE, FILE_GENERIC_READ | FILE_WRITE_ATTRIBUTES | FILE_WRITE_EA, 0)),
            None
        );
        // A deny entry grants nothing, and is not weighed against an allow entry.
        let deny = Ace { kind: ACCESS_DENIED_ACE_TYPE, ..Ace::allow(USERS, GENERIC_ALL, 0) };
        assert_eq!(with(deny.clone()), None);
        let denied_then_allowed = vec![deny, Ace::allow(USERS, GENERIC_WRITE, 0)];
        assert!(changeable_by_others(&secured(ADMINISTRATORS, denied_then_allowed)).is_some());
        // An allow entry whose SID is not read (an object ACE) may be anyone's: refused.
        let object_ace = Ace { kind: ACCESS_ALLOWED_OBJECT_ACE_TYPE, flags: 0, mask: GENERIC_ALL, sid: None };
        assert_eq!(with(object_ace), Some(OpenToOthers::GrantedUnread { kind: 5, rights: GENERIC_ALL }));
        // A conditional (callback) allow entry counts as granting, whatever its condition.
        let callback = Ace { kind: ACCESS_ALLOWED_CALLBACK_ACE_TYPE, ..Ace::allow(USERS, GENERIC_WRITE, 0) };
        assert!(matches!(with(callback), Some(OpenToOthers::Granted { .. })));
        // An unread entry that only reads changes nothing.
        let reading =
            Ace { kind: ACCESS_ALLOWED_OBJECT_ACE_TYPE, flags: 0, mask: FILE_GENERIC_READ, sid: None };
        assert_eq!(with(reading), None);
    }

    #[test]
    fn no_dacl_or_another_owner_opens_the_folder() {
        let no_dacl = ObjectSecurity { owner: Some(sid(ADMINISTRATORS)), dacl: None };
        assert_eq!(changeable_by_others(&no_dacl), Some(OpenToOthers::NoDacl));
        for owner in [USERS, ALICE] {
            assert_eq!(
                changeable_by_others(&secured(owner, program_files_folder())),
                Some(OpenToOthers::Owner(sid(owner)))
            );
        }
        let text = OpenToOthers::Granted { sid: sid(USERS), rights: DELETE }.to_string();
        assert!(text.contains("S-1-5-32-545 may change it"), "{text}");
    }

    #[test]
    fn folders_above_the_helpers_are_checked_for_who_may_replace_them() {
        // C:\ on a fresh Windows: Authenticated Users may add folders (AD) and get Modify on
        // what they create (inherit-only); neither lets them move Program Files aside.
        let to_children = OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE | INHERIT_ONLY_ACE;
        let drive_root = vec![
            Ace::allow(ADMINISTRATORS, FILE_ALL_ACCESS, 0),
            Ace::allow(LOCAL_SYSTEM, FILE_ALL_ACCESS, 0),
            Ace::allow(USERS, FILE_GENERIC_READ | FILE_EXECUTE, 0),
            Ace::allow(AUTHENTICATED_USERS, FILE_APPEND_DATA, 0),
            Ace::allow(AUTHENTICATED_USERS, DELETE | GENERIC_WRITE | GENERIC_READ, to_children),
        ];
        let root = secured(TRUSTED_INSTALLER, drive_root);
        assert_eq!(replaceable_by_others(&root), None);
        assert!(changeable_by_others(&root).is_some(), "adding a folder is changing C: itself");
        assert_eq!(replaceable_by_others(&secured(TRUSTED_INSTALLER, program_files_folder())), None);
        // C:\Tools, made by Alice without elevation: hers, so she may rename it and put
        // another Trellis folder in its place.
        assert_eq!(
            replaceable_by_others(&secured(ALICE, program_files_folder())),
            Some(OpenToOthers::Owner(sid(ALICE)))
        );
        for right in [DELETE, FILE_DELETE_CHILD, WRITE_DAC, WRITE_OWNER, GENERIC_ALL] {
            let mut dacl = program_files_folder();
            dacl.push(Ace::allow(USERS, right, INHERITED_ACE));
            assert_eq!(
                replaceable_by_others(&secured(ADMINISTRATORS, dacl)),
                Some(OpenToOthers::Granted { sid: sid(USERS), rights: right }),
                "{right:#x}"
            );
        }
    }

    fn sid(text: &str) -> Sid {
        text.parse().unwrap()
    }
}
