//! The embedded [`Store`]: sled trees in the server's data directory.
//!
//! Trees: `networks` (network id → JSON state), `members` (device id ‖ network id → ∅),
//! `invites` (invite locator → network id), `secrets` (name → 32 bytes). A network and
//! its index entries change in one multi-tree transaction, then the database is flushed.

use std::path::Path;

use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;
use trellis_protocol::{DeviceId, InviteId, NetworkId};

use super::{Store, StoreError};
use crate::network::NetworkState;

#[derive(Debug, Clone)]
pub struct SledStore {
    db: sled::Db,
    networks: sled::Tree,
    members: sled::Tree,
    invites: sled::Tree,
    secrets: sled::Tree,
}

fn backend(doing: &'static str) -> impl FnOnce(sled::Error) -> StoreError {
    move |e| StoreError::Backend { doing, source: Box::new(e) }
}

fn member_key(device: &DeviceId, network: &NetworkId) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(device.as_bytes());
    key[16..].copy_from_slice(network.as_bytes());
    key
}

fn network_id(bytes: &[u8], what: &str) -> Result<NetworkId, StoreError> {
    let bytes: [u8; 16] = bytes.try_into().map_err(|_| StoreError::Corrupt {
        what: what.to_string(),
        detail: format!("{} bytes", bytes.len()),
    })?;
    Ok(NetworkId::from_bytes(bytes))
}

fn decode(id: &NetworkId, bytes: &[u8]) -> Result<NetworkState, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt { what: format!("network {id}"), detail: e.to_string() })
}

impl SledStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new().path(dir).open().map_err(backend("opening the data directory"))?;
        Self::from_db(db)
    }

    /// A store that lives in memory and vanishes when dropped (for tests).
    pub fn temporary() -> Result<Self, StoreError> {
        let db = sled::Config::new().temporary(true).open().map_err(backend("opening a temporary store"))?;
        Self::from_db(db)
    }

    fn from_db(db: sled::Db) -> Result<Self, StoreError> {
        let tree = |name: &str| db.open_tree(name).map_err(backend("opening a tree"));
        Ok(Self {
            networks: tree("networks")?,
            members: tree("members")?,
            invites: tree("invites")?,
            secrets: tree("secrets")?,
            db,
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(drop).map_err(backend("flushing to disk"))
    }

    /// Replaces `old`'s index entries with `new`'s inside a transaction.
    fn reindex(
        members: &TransactionalTree,
        invites: &TransactionalTree,
        old: Option<&NetworkState>,
        new: Option<&NetworkState>,
    ) -> Result<(), ConflictableTransactionError<StoreError>> {
        if let Some(old) = old {
            for m in &old.members {
                members.remove(&member_key(&m.device, &old.info.id))?;
            }
            for i in &old.invites {
                invites.remove(i.id.0.as_bytes())?;
            }
        }
        if let Some(new) = new {
            for m in &new.members {
                members.insert(&member_key(&m.device, &new.info.id), &[])?;
            }
            for i in &new.invites {
                invites.insert(i.id.0.as_bytes(), new.info.id.as_bytes())?;
            }
        }
        Ok(())
    }

    fn write(&self, id: &NetworkId, new: Option<&NetworkState>) -> Result<(), StoreError> {
        let encoded = new.map(serde_json::to_vec).transpose().map_err(|e| StoreError::Corrupt {
            what: format!("network {id}"),
            detail: format!("cannot encode: {e}"),
        })?;
        (&self.networks, &self.members, &self.invites)
            .transaction(|(networks, members, invites)| {
                let old = match networks.get(id.as_bytes())? {
                    Some(bytes) => Some(decode(id, &bytes).map_err(ConflictableTransactionError::Abort)?),
                    None => None,
                };
                Self::reindex(members, invites, old.as_ref(), new)?;
                match &encoded {
                    Some(bytes) => networks.insert(id.as_bytes(), bytes.as_slice())?,
                    None => networks.remove(id.as_bytes())?,
                };
                Ok(())
            })
            .map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => backend("writing a network")(e),
            })?;
        self.flush()
    }
}

impl Store for SledStore {
    fn network(&self, id: &NetworkId) -> Result<Option<NetworkState>, StoreError> {
        match self.networks.get(id.as_bytes()).map_err(backend("reading a network"))? {
            Some(bytes) => decode(id, &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn networks_of(&self, device: &DeviceId) -> Result<Vec<NetworkId>, StoreError> {
        self.members
            .scan_prefix(device.as_bytes())
            .keys()
            .map(|key| {
                let key = key.map_err(backend("listing a device's networks"))?;
                network_id(&key[16..], "membership index")
            })
            .collect()
    }

    fn network_of_invite(&self, invite: &InviteId) -> Result<Option<NetworkId>, StoreError> {
        match self.invites.get(invite.0.as_bytes()).map_err(backend("looking up an invite"))? {
            Some(bytes) => network_id(&bytes, "invite index").map(Some),
            None => Ok(None),
        }
    }

    fn save_network(&self, state: &NetworkState) -> Result<(), StoreError> {
        self.write(&state.info.id, Some(state))
    }

    fn delete_network(&self, id: &NetworkId) -> Result<(), StoreError> {
        self.write(id, None)
    }

    fn secret(&self, name: &str, make: &mut dyn FnMut() -> [u8; 32]) -> Result<[u8; 32], StoreError> {
        let fresh = make();
        // compare_and_swap from "absent" makes concurrent first uses agree on one value.
        let _ = self
            .secrets
            .compare_and_swap(name, None as Option<&[u8]>, Some(&fresh[..]))
            .map_err(backend("creating a secret"))?;
        self.flush()?;
        let stored = self.secrets.get(name).map_err(backend("reading a secret"))?.ok_or_else(|| {
            StoreError::Corrupt { what: format!("secret {name}"), detail: "vanished after creation".into() }
        })?;
        stored.as_ref().try_into().map_err(|_| StoreError::Corrupt {
            what: format!("secret {name}"),
            detail: format!("{} bytes instead of 32", stored.len()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::{InviteRecord, MemberRecord};
    use trellis_protocol::keys::generate_secret;
    use trellis_protocol::signal::NetworkInfo;
    use trellis_protocol::{OverlayNet, PublicKey};

    fn state() -> NetworkState {
        let key = PublicKey::of(&generate_secret());
        let device = DeviceId::of_key(&key);
        let mut state = NetworkState::new(
            NetworkInfo {
                id: NetworkId::random(),
                name: "home".parse().unwrap(),
                range: OverlayNet::DEFAULT,
                owner: device,
            },
            1,
        );
        let ip = state.allocate_address(1).unwrap();
        state.members.push(MemberRecord { device, key, name: "pc".parse().unwrap(), ip, joined_at: 1 });
        state.invites.push(InviteRecord {
            id: InviteId("ABCD".into()),
            secret_hash: [7; 32],
            created_at: 1,
            expires_at: 2,
            max_uses: 1,
            uses: 0,
            revoked_at: None,
        });
        state
    }

    #[test]
    fn a_saved_network_is_found_by_id_member_and_invite() {
        let store = SledStore::temporary().unwrap();
        let state = state();
        store.save_network(&state).unwrap();
        let id = state.info.id;
        assert_eq!(store.network(&id).unwrap().as_ref(), Some(&state));
        assert_eq!(store.networks_of(&state.members[0].device).unwrap(), vec![id]);
        assert_eq!(store.network_of_invite(&InviteId("ABCD".into())).unwrap(), Some(id));
    }

    #[test]
    fn indexes_follow_changes_and_deletion() {
        let store = SledStore::temporary().unwrap();
        let mut state = state();
        store.save_network(&state).unwrap();
        let gone = state.members.pop().unwrap();
        state.invites.clear();
        store.save_network(&state).unwrap();
        assert!(store.networks_of(&gone.device).unwrap().is_empty());
        assert_eq!(store.network_of_invite(&InviteId("ABCD".into())).unwrap(), None);

        store.delete_network(&state.info.id).unwrap();
        assert_eq!(store.network(&state.info.id).unwrap(), None);
    }

    #[test]
    fn secrets_are_created_once() {
        let store = SledStore::temporary().unwrap();
        let first = store.secret("server-key", &mut || [1; 32]).unwrap();
        let second = store.secret("server-key", &mut || [2; 32]).unwrap();
        assert_eq!(first, [1; 32]);
        assert_eq!(second, [1; 32]);
    }

    #[test]
    fn state_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let state = state();
        {
            let store = SledStore::open(dir.path()).unwrap();
            store.save_network(&state).unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.network(&state.info.id).unwrap(), Some(state));
    }
}
