//! Who may control the helper over its Unix socket: a pure decision over the peer's
//! credentials, plus the parsers that gather them from `/proc` and `/etc/group`.
//!
//! The socket's file mode (0660, group `trellis`) already keeps others out; this check
//! holds even when the socket was made more permissive by hand, or its directory is
//! shared.

use std::fmt;

/// Who may connect, besides root.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct AccessPolicy {
    /// The user the helper runs as (it may always talk to itself, e.g. in development).
    pub helper_uid: u32,
    /// A user who may control the helper without being in the group: the desktop user
    /// who installed Trellis, when the installer configured one.
    pub owner_uid: Option<u32>,
    /// The `trellis` group, when it exists on this machine.
    pub group_gid: Option<u32>,
}

/// What the kernel and `/proc` tell about the process at the other end of a connection.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PeerCredentials {
    pub uid: u32,
    /// Primary group at the time of `connect`.
    pub gid: u32,
    pub pid: Option<i32>,
    /// Supplementary groups (Linux: from `/proc/<pid>/status`; elsewhere empty).
    pub groups: Vec<u32>,
}

impl fmt::Display for PeerCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "uid {} gid {}", self.uid, self.gid)?;
        if let Some(pid) = self.pid {
            write!(f, " pid {pid}")?;
        }
        Ok(())
    }
}

/// Why a peer was let in, or that it was not.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Access {
    Root,
    HelperUser,
    Owner,
    GroupMember,
    Denied,
}

impl Access {
    pub fn allowed(self) -> bool {
        self != Access::Denied
    }
}

/// Decides whether `peer` may control the helper under `policy`.
pub fn decide(policy: &AccessPolicy, peer: &PeerCredentials) -> Access {
    if peer.uid == 0 {
        Access::Root
    } else if peer.uid == policy.helper_uid {
        Access::HelperUser
    } else if policy.owner_uid == Some(peer.uid) {
        Access::Owner
    } else if policy.group_gid.is_some_and(|gid| peer.gid == gid || peer.groups.contains(&gid)) {
        Access::GroupMember
    } else {
        Access::Denied
    }
}

/// The supplementary groups in the text of `/proc/<pid>/status` (its `Groups:` line),
/// or `None` when there is no such line or it does not parse.
pub fn parse_status_groups(status: &str) -> Option<Vec<u32>> {
    let line = status.lines().find_map(|line| line.strip_prefix("Groups:"))?;
    line.split_whitespace().map(|gid| gid.parse().ok()).collect()
}

/// The gid of group `name` in the text of `/etc/group` (`name:password:gid:members`).
pub fn find_group_gid(etc_group: &str, name: &str) -> Option<u32> {
    etc_group.lines().filter(|line| !line.trim_start().starts_with('#')).find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        fields.nth(1)?.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: AccessPolicy = AccessPolicy { helper_uid: 0, owner_uid: Some(1000), group_gid: Some(990) };

    fn peer(uid: u32, gid: u32, groups: &[u32]) -> PeerCredentials {
        PeerCredentials { uid, gid, pid: Some(4242), groups: groups.to_vec() }
    }

    #[test]
    fn root_owner_helper_user_and_group_members_are_let_in() {
        assert_eq!(decide(&POLICY, &peer(0, 0, &[])), Access::Root);
        assert_eq!(decide(&POLICY, &peer(1000, 1000, &[])), Access::Owner);
        assert_eq!(decide(&POLICY, &peer(1001, 990, &[])), Access::GroupMember);
        assert_eq!(decide(&POLICY, &peer(1001, 1001, &[27, 990])), Access::GroupMember);
        let unprivileged_helper = AccessPolicy { helper_uid: 1500, owner_uid: None, group_gid: None };
        assert_eq!(decide(&unprivileged_helper, &peer(1500, 1500, &[])), Access::HelperUser);
    }

    #[test]
    fn everyone_else_is_refused() {
        assert_eq!(decide(&POLICY, &peer(1001, 1001, &[27, 100])), Access::Denied);
        assert_eq!(decide(&POLICY, &peer(65534, 65534, &[])), Access::Denied);
        // Without a trellis group, group membership cannot grant anything.
        let no_group = AccessPolicy { group_gid: None, ..POLICY };
        assert_eq!(decide(&no_group, &peer(1001, 990, &[990])), Access::Denied);
        assert!(!Access::Denied.allowed());
        assert!(Access::GroupMember.allowed());
    }

    #[test]
    fn proc_status_groups_parse() {
        let status = "Name:\tbash\nUid:\t1000\t1000\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\n\
                      FDSize:\t256\nGroups:\t4 24 27 990 \nNStgid:\t77\n";
        assert_eq!(parse_status_groups(status), Some(vec![4, 24, 27, 990]));
        assert_eq!(parse_status_groups("Name:\tx\nGroups:\t\n"), Some(vec![]));
        assert_eq!(parse_status_groups("Name:\tx\n"), None);
        assert_eq!(parse_status_groups("Groups:\t4 x\n"), None);
    }

    #[test]
    fn etc_group_lookup() {
        let etc_group =
            "root:x:0:\n# comment:x:5:\nsudo:x:27:alice\ntrellis:x:990:alice,bob\ntrellis2:x:991:\n";
        assert_eq!(find_group_gid(etc_group, "trellis"), Some(990));
        assert_eq!(find_group_gid(etc_group, "root"), Some(0));
        assert_eq!(find_group_gid(etc_group, "trell"), None);
        assert_eq!(find_group_gid(etc_group, "# comment"), None);
        assert_eq!(find_group_gid("trellis:x:nope:\n", "trellis"), None);
    }
}
