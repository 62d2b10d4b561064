//! Durable state behind one small interface, so that another backend (PostgreSQL for
//! several server nodes) can follow without touching the service.
//!
//! The unit of storage is a whole [`NetworkState`]: a change to a network is one atomic
//! write of its state together with the indexes that find it (by member device, by
//! invite locator). Every write is durable when the call returns, and the service only
//! acknowledges a change after that, so a crash never loses an acknowledged change.

mod sled_store;

pub use sled_store::SledStore;

use trellis_protocol::{DeviceId, InviteId, NetworkId};

use crate::network::NetworkState;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage failed while {doing}: {source}")]
    Backend {
        doing: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("stored record {what} is corrupt: {detail}")]
    Corrupt { what: String, detail: String },
}

pub trait Store: Send + Sync + 'static {
    fn network(&self, id: &NetworkId) -> Result<Option<NetworkState>, StoreError>;
    /// The networks `device` is a member of.
    fn networks_of(&self, device: &DeviceId) -> Result<Vec<NetworkId>, StoreError>;
    /// The network holding the invite whose locator is `invite` (live or dead).
    fn network_of_invite(&self, invite: &InviteId) -> Result<Option<NetworkId>, StoreError>;
    /// Writes a network's state and its indexes atomically and durably.
    fn save_network(&self, state: &NetworkState) -> Result<(), StoreError>;
    /// Deletes a network, its invites and its indexes atomically and durably.
    fn delete_network(&self, id: &NetworkId) -> Result<(), StoreError>;
    /// A named 32-byte secret (the server's static key, the relay secret), created with
    /// `make` on first use and the same ever after.
    fn secret(&self, name: &str, make: &mut dyn FnMut() -> [u8; 32]) -> Result<[u8; 32], StoreError>;
}
