//! One network's whole state and the rules that keep it consistent: unique addresses
//! (with a cool-down before a freed one is handed out again), unique names, invites.
//!
//! Everything here is plain data and pure functions, so the rules are unit-tested
//! without a store or a socket. The [`crate::service`] loads a [`NetworkState`],
//! changes it here, and saves it back in one atomic, durable write.

use serde::{Deserialize, Serialize};
use trellis_protocol::signal::{ApiError, ErrorCode, InviteInfo, Member, NetworkInfo};
use trellis_protocol::{DeviceId, DeviceName, InviteId, OverlayIp, PublicKey};

/// How long a freed overlay address rests before another device may get it, in
/// seconds (24 h): peers that were offline when a device left still route its address
/// to its old key from their cache until they reconnect; a new device on that address
/// would receive traffic meant for someone else.
pub const ADDRESS_COOL_DOWN_SECS: u64 = 24 * 3600;

/// How long an expired, used-up or revoked invite is kept, in seconds (30 days), so a
/// friend who types it late learns *why* it fails instead of "unknown code".
pub const DEAD_INVITE_RETENTION_SECS: u64 = 30 * 24 * 3600;

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct NetworkState {
    pub info: NetworkInfo,
    pub created_at: u64,
    pub members: Vec<MemberRecord>,
    pub invites: Vec<InviteRecord>,
    /// Devices removed by the owner: they cannot rejoin this network.
    pub banned: Vec<DeviceId>,
    pub cooling: Vec<CoolingAddress>,
    /// Where the search for a free address starts: addresses are handed out in order, so
    /// the most recently freed ones are the last to come back.
    pub next_host: u32,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct MemberRecord {
    pub device: DeviceId,
    pub key: PublicKey,
    pub name: DeviceName,
    pub ip: OverlayIp,
    pub joined_at: u64,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct InviteRecord {
    pub id: InviteId,
    /// SHA-256 of the code (see [`trellis_protocol::InviteCode::secret_hash`]): the code
    /// itself is never stored.
    pub secret_hash: [u8; 32],
    pub created_at: u64,
    pub expires_at: u64,
    pub max_uses: u32,
    pub uses: u32,
    pub revoked_at: Option<u64>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct CoolingAddress {
    pub ip: OverlayIp,
    /// Unix seconds from which the address may be handed out again.
    pub until: u64,
}

/// Why an invite cannot be redeemed (its secret matched).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DeadInvite {
    Revoked,
    Expired,
    UsedUp,
}

impl InviteRecord {
    /// Whether the invite can still be redeemed at `now`, or why not.
    pub fn check_live(&self, now: u64) -> Result<(), DeadInvite> {
        if self.revoked_at.is_some() {
            Err(DeadInvite::Revoked)
        } else if now >= self.expires_at {
            Err(DeadInvite::Expired)
        } else if self.uses >= self.max_uses {
            Err(DeadInvite::UsedUp)
        } else {
            Ok(())
        }
    }

    pub fn info(&self, network: trellis_protocol::NetworkId) -> InviteInfo {
        InviteInfo {
            id: self.id.clone(),
            network,
            created_at: self.created_at,
            expires_at: self.expires_at,
            max_uses: self.max_uses,
            uses: self.uses,
        }
    }

    /// When the record may be forgotten.
    fn forget_at(&self) -> u64 {
        let died = match self.revoked_at {
            Some(at) => at.min(self.expires_at),
            None => self.expires_at,
        };
        died.saturating_add(DEAD_INVITE_RETENTION_SECS)
    }
}

impl NetworkState {
    pub fn new(info: NetworkInfo, now: u64) -> Self {
        Self {
            info,
            created_at: now,
            members: Vec::new(),
            invites: Vec::new(),
            banned: Vec::new(),
            cooling: Vec::new(),
            next_host: 0,
        }
    }

    pub fn member(&self, device: &DeviceId) -> Option<&MemberRecord> {
        self.members.iter().find(|m| &m.device == device)
    }

    pub fn member_by_key(&self, key: &PublicKey) -> Option<&MemberRecord> {
        self.members.iter().find(|m| &m.key == key)
    }

    pub fn is_owner(&self, device: &DeviceId) -> bool {
        &self.info.owner == device
    }

    pub fn is_banned(&self, device: &DeviceId) -> bool {
        self.banned.contains(device)
    }

    /// The protocol view of a member; `online` comes from the live sessions.
    pub fn view(&self, record: &MemberRecord, online: bool) -> Member {
        Member {
            device: record.device,
            key: record.key,
            name: record.name.clone(),
            ip: record.ip,
            owner: self.is_owner(&record.device),
            online,
            joined_at: record.joined_at,
        }
    }

    /// Forgets what no longer matters at `now`: rested addresses and long-dead invites.
    pub fn prune(&mut self, now: u64) {
        self.cooling.retain(|c| c.until > now);
        self.invites.retain(|i| i.forget_at() > now);
    }

    /// The next free address: not held by a member, not cooling down.
    pub fn allocate_address(&mut self, now: u64) -> Result<OverlayIp, ApiError> {
        self.prune(now);
        let range = self.info.range;
        let count = range.host_count();
        for step in 0..count {
            let index = (self.next_host.wrapping_add(step)) % count;
            let ip = range.host(index).expect("index is below host_count");
            let taken = self.members.iter().any(|m| m.ip == ip) || self.cooling.iter().any(|c| c.ip == ip);
            if !taken {
                self.next_host = (index + 1) % count;
                return Ok(ip);
            }
        }
        let next_free = self.cooling.iter().map(|c| c.until).min();
        let message = match next_free {
            Some(at) => format!(
                "every address of {} is in use or resting after a device left; one frees up at {}",
                range,
                trellis_protocol::time::utc(at)
            ),
            None => format!("every address of {range} is in use ({count} devices)"),
        };
        Err(ApiError::new(ErrorCode::AddressPoolExhausted, message))
    }

    /// `wanted`, or `wanted-2`, `wanted-3`, … : the first name no other member has.
    pub fn unique_name(&self, wanted: &DeviceName, me: &DeviceId) -> DeviceName {
        let clashes = |name: &DeviceName| self.members.iter().any(|m| &m.name == name && &m.device != me);
        if !clashes(wanted) {
            return wanted.clone();
        }
        (2u32..)
            .map(|n| wanted.with_suffix(n))
            .find(|candidate| !clashes(candidate))
            .expect("there are fewer members than suffixes")
    }

    /// Removes a member and puts its address to rest.
    pub fn remove_member(&mut self, device: &DeviceId, now: u64) -> Option<MemberRecord> {
        let index = self.members.iter().position(|m| &m.device == device)?;
        let record = self.members.remove(index);
        self.cooling.push(CoolingAddress { ip: record.ip, until: now + ADDRESS_COOL_DOWN_SECS });
        Some(record)
    }

    pub fn invite_mut(&mut self, id: &InviteId) -> Option<&mut InviteRecord> {
        self.invites.iter_mut().find(|i| &i.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_protocol::keys::generate_secret;
    use trellis_protocol::{NetworkId, OverlayNet};

    fn network(range: &str) -> NetworkState {
        let owner = DeviceId::random();
        NetworkState::new(
            NetworkInfo {
                id: NetworkId::random(),
                name: "home".parse().unwrap(),
                range: range.parse::<OverlayNet>().unwrap(),
                owner,
            },
            0,
        )
    }

    fn add(net: &mut NetworkState, name: &str, now: u64) -> DeviceId {
        let key = PublicKey::of(&generate_secret());
        let device = DeviceId::of_key(&key);
        let ip = net.allocate_address(now).unwrap();
        let name = net.unique_name(&name.parse().unwrap(), &device);
        net.members.push(MemberRecord { device, key, name, ip, joined_at: now });
        device
    }

    #[test]
    fn addresses_are_unique_and_freed_ones_rest() {
        let mut net = network("100.64.0.0/29"); // 6 hosts
        let devices: Vec<_> = (0..6).map(|i| add(&mut net, &format!("d{i}"), 10)).collect();
        let mut ips: Vec<_> = net.members.iter().map(|m| m.ip).collect();
        ips.sort_by_key(|ip| ip.0);
        ips.dedup();
        assert_eq!(ips.len(), 6);
        assert_eq!(net.allocate_address(10).unwrap_err().code, ErrorCode::AddressPoolExhausted);

        let freed = net.remove_member(&devices[2], 100).unwrap().ip;
        let err = net.allocate_address(101).unwrap_err();
        assert_eq!(err.code, ErrorCode::AddressPoolExhausted);
        assert!(err.message.contains("resting"), "{}", err.message);

        let later = 100 + ADDRESS_COOL_DOWN_SECS;
        assert_eq!(net.allocate_address(later).unwrap(), freed);
    }

    #[test]
    fn a_freed_address_is_not_the_next_one_handed_out() {
        let mut net = network("100.64.0.0/24");
        let first = add(&mut net, "a", 0);
        let first_ip = net.member(&first).unwrap().ip;
        net.remove_member(&first, 0);
        let second = add(&mut net, "b", ADDRESS_COOL_DOWN_SECS + 1);
        assert_ne!(net.member(&second).unwrap().ip, first_ip);
    }

    #[test]
    fn clashing_names_get_a_suffix() {
        let mut net = network("100.64.0.0/24");
        add(&mut net, "laptop", 0);
        let second = add(&mut net, "laptop", 0);
        let third = add(&mut net, "laptop", 0);
        assert_eq!(net.member(&second).unwrap().name.as_str(), "laptop-2");
        assert_eq!(net.member(&third).unwrap().name.as_str(), "laptop-3");
        // Renaming to one's own name is not a clash.
        assert_eq!(net.unique_name(&"laptop-2".parse().unwrap(), &second).as_str(), "laptop-2");
    }

    #[test]
    fn invite_liveness_names_the_first_reason() {
        let mut invite = InviteRecord {
            id: InviteId("ABCD".into()),
            secret_hash: [0; 32],
            created_at: 0,
            expires_at: 100,
            max_uses: 1,
            uses: 0,
            revoked_at: None,
        };
        assert_eq!(invite.check_live(50), Ok(()));
        assert_eq!(invite.check_live(100), Err(DeadInvite::Expired));
        invite.uses = 1;
        assert_eq!(invite.check_live(50), Err(DeadInvite::UsedUp));
        invite.revoked_at = Some(60);
        assert_eq!(invite.check_live(50), Err(DeadInvite::Revoked));
    }

    #[test]
    fn dead_invites_are_forgotten_after_retention() {
        let mut net = network("100.64.0.0/24");
        net.invites.push(InviteRecord {
            id: InviteId("ABCD".into()),
            secret_hash: [0; 32],
            created_at: 0,
            expires_at: 100,
            max_uses: 1,
            uses: 0,
            revoked_at: None,
        });
        net.prune(100 + DEAD_INVITE_RETENTION_SECS - 1);
        assert_eq!(net.invites.len(), 1);
        net.prune(100 + DEAD_INVITE_RETENTION_SECS);
        assert!(net.invites.is_empty());
    }
}
