//! Deciding who may use TURN: the turn server asks [`Gatekeeper::auth_handle`] for
//! the key of every authenticated request (allocate, refresh, create-permission,
//! channel-bind), so the checks here apply to each of them, not only to allocation.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use trellis_protocol::DeviceId;

use super::credentials::{check_username, password_for, CredentialError, RelaySecret};
use super::DeviceGate;

/// The device whose request the turn server is handling now, as far as
/// authentication has told us. Shared with the allocator so that it can charge an
/// allocation to that device.
///
/// This relies on how turn 0.17 works: one task reads the listening socket and
/// handles one datagram at a time, and an Allocate request calls `auth_handle`
/// and then, if MESSAGE-INTEGRITY checks out, `allocate_conn`, with nothing in between.
pub(super) type CurrentDevice = Arc<Mutex<Option<DeviceId>>>;

/// The turn [`AuthHandler`](turn::auth::AuthHandler): checks the username's
/// expiry, device and membership, then hands the server the key derived from the
/// password that username must have. The server checks MESSAGE-INTEGRITY with it,
/// which is what proves the client holds the matching password.
pub(super) struct Gatekeeper {
    pub(super) secret: RelaySecret,
    pub(super) realm: String,
    pub(super) gate: Arc<dyn DeviceGate>,
    pub(super) current: CurrentDevice,
}

impl Gatekeeper {
    fn check(&self, username: &str, realm: &str, src: SocketAddr) -> Result<DeviceId, turn::Error> {
        if realm != self.realm {
            tracing::debug!(%src, realm, "refused TURN request: wrong realm");
            return Err(turn::Error::Other(format!("realm {realm:?} is not {:?}", self.realm)));
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let device = check_username(username, now).map_err(|err| {
            match &err {
                CredentialError::Expired { device, expires_at, .. } => {
                    tracing::info!(%device, %src, expires_at, "refused TURN request: credentials expired")
                }
                _ => tracing::debug!(%src, "refused TURN request: {err}"),
            }
            turn::Error::Other(err.to_string())
        })?;
        if !self.gate.may_relay(&device) {
            // The password is not checked yet (the server does that next), so this
            // is the device the client claims to be.
            tracing::warn!(%device, %src, "refused TURN request: device may not relay (no longer a member)");
            return Err(turn::Error::Other(format!("device {device} may not relay")));
        }
        Ok(device)
    }
}

impl turn::auth::AuthHandler for Gatekeeper {
    fn auth_handle(&self, username: &str, realm: &str, src: SocketAddr) -> Result<Vec<u8>, turn::Error> {
        let checked = self.check(username, realm, src);
        *self.current.lock().expect("relay current-device lock poisoned") = checked.as_ref().ok().copied();
        checked?;
        let password = password_for(&self.secret, username);
        Ok(turn::auth::generate_auth_key(username, realm, &password))
    }
}
