//! Short-lived TURN credentials, in the "TURN REST API" scheme that coturn and most
//! TURN clients know: the username is `<expires_unix>:<device id>` and the password
//! is `base64(HMAC-SHA1(secret, username))`.
//!
//! Why this scheme: the relay keeps no per-device password table. Whoever knows the
//! secret (the signal server, which already authenticated the device over its
//! WebSocket) can mint credentials; the relay checks them with the same secret, and
//! they stop working on their own when they expire.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use trellis_protocol::signal::TurnCredentials;
use trellis_protocol::DeviceId;

type HmacSha1 = Hmac<Sha1>;

/// How long issued credentials are accepted: 10 minutes.
///
/// Why: the relay checks credentials on every authenticated TURN request (allocate,
/// refresh, create-permission, channel-bind), and the allocation itself does not
/// depend on the credentials that created it, so a device can keep relaying by
/// sending its next refresh with fresh credentials (one cheap request on the
/// WebSocket it holds anyway). A short life means a leaked username/password pair
/// is worthless within minutes. Ten minutes also matches TURN's default allocation
/// lifetime (RFC 8656 §3.2), so one set of credentials covers at least one refresh.
pub const CREDENTIAL_TTL: Duration = Duration::from_secs(10 * 60);

/// The key shared by the signal server (which issues credentials) and the relay
/// (which checks them). 256 random bits; `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct RelaySecret([u8; 32]);

impl RelaySecret {
    /// A fresh secret from the operating system's random number generator.
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
        Self(bytes)
    }

    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn mac(&self) -> HmacSha1 {
        // HMAC accepts keys of any length; a 32-byte key cannot fail.
        HmacSha1::new_from_slice(&self.0).expect("HMAC-SHA1 takes keys of any length")
    }
}

impl fmt::Debug for RelaySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RelaySecret(<redacted>)")
    }
}

/// Why a TURN username or password is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("TURN username {username:?} is not \"<expires_unix>:<device id>\"")]
    Malformed { username: String },
    #[error("TURN credentials of device {device} expired at {expires_at} (now {now})")]
    Expired { device: DeviceId, expires_at: u64, now: u64 },
    #[error("TURN password for username {username:?} does not match")]
    WrongPassword { username: String },
}

/// Credentials that let `device` use the relay until `now_unix + CREDENTIAL_TTL`.
pub fn issue_credentials(
    secret: &RelaySecret,
    device: DeviceId,
    now_unix: u64,
    realm: &str,
) -> TurnCredentials {
    let expires_at = now_unix.saturating_add(CREDENTIAL_TTL.as_secs());
    let username = format!("{expires_at}:{device}");
    let password = password_for(secret, &username);
    TurnCredentials { username, password, expires_at, realm: realm.to_string() }
}

/// Checks a username and password as [`issue_credentials`] makes them, and says
/// which device they belong to.
pub fn verify_credentials(
    secret: &RelaySecret,
    username: &str,
    password: &str,
    now_unix: u64,
) -> Result<DeviceId, CredentialError> {
    let device = check_username(username, now_unix)?;
    let wrong = || CredentialError::WrongPassword { username: username.to_string() };
    let tag = BASE64.decode(password).map_err(|_| wrong())?;
    let mut mac = secret.mac();
    mac.update(username.as_bytes());
    // `verify_slice` compares in constant time.
    mac.verify_slice(&tag).map_err(|_| wrong())?;
    Ok(device)
}

/// The password that belongs to `username`. The TURN server never sees the
/// password itself (the client proves it knows it through MESSAGE-INTEGRITY), so
/// the relay derives it to compute the key the server checks against.
pub(super) fn password_for(secret: &RelaySecret, username: &str) -> String {
    let mut mac = secret.mac();
    mac.update(username.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

/// Parses `<expires_unix>:<device id>` and checks that it has not expired.
/// Says nothing about the password.
pub(super) fn check_username(username: &str, now_unix: u64) -> Result<DeviceId, CredentialError> {
    let malformed = || CredentialError::Malformed { username: username.to_string() };
    let (expires, device) = username.split_once(':').ok_or_else(malformed)?;
    // `u64::from_str` accepts a leading '+'; only plain digits are a canonical username.
    if expires.is_empty() || !expires.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed());
    }
    let expires_at = u64::from_str(expires).map_err(|_| malformed())?;
    let device = DeviceId::from_str(device).map_err(|_| malformed())?;
    if expires_at < now_unix {
        return Err(CredentialError::Expired { device, expires_at, now: now_unix });
    }
    Ok(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    #[test]
    fn issued_credentials_verify_until_they_expire() {
        let secret = RelaySecret::random();
        let device = DeviceId::random();
        let creds = issue_credentials(&secret, device, NOW, "trellis");
        assert_eq!(creds.expires_at, NOW + CREDENTIAL_TTL.as_secs());
        assert_eq!(creds.username, format!("{}:{device}", creds.expires_at));
        assert_eq!(creds.realm, "trellis");

        assert_eq!(verify_credentials(&secret, &creds.username, &creds.password, NOW), Ok(device));
        assert_eq!(
            verify_credentials(&secret, &creds.username, &creds.password, creds.expires_at),
            Ok(device)
        );
        assert_eq!(
            verify_credentials(&secret, &creds.username, &creds.password, creds.expires_at + 1),
            Err(CredentialError::Expired { device, expires_at: creds.expires_at, now: creds.expires_at + 1 })
        );
    }

    #[test]
    fn tampered_or_foreign_credentials_fail() {
        let secret = RelaySecret::random();
        let device = DeviceId::random();
        let creds = issue_credentials(&secret, device, NOW, "trellis");

        // Extending the expiry or swapping the device breaks the HMAC.
        let later = format!("{}:{device}", creds.expires_at + 3600);
        let other = format!("{}:{}", creds.expires_at, DeviceId::random());
        for username in [later, other] {
            assert!(matches!(
                verify_credentials(&secret, &username, &creds.password, NOW),
                Err(CredentialError::WrongPassword { .. })
            ));
        }
        // Another server's secret, or a password that is not even base64.
        assert!(matches!(
            verify_credentials(&RelaySecret::random(), &creds.username, &creds.password, NOW),
            Err(CredentialError::WrongPassword { .. })
        ));
        assert!(matches!(
            verify_credentials(&secret, &creds.username, "not base64!", NOW),
            Err(CredentialError::WrongPassword { .. })
        ));
    }

    #[test]
    fn malformed_usernames_are_refused() {
        let device = DeviceId::random();
        for username in [
            String::new(),
            "no-colon".to_string(),
            format!(":{device}"),
            format!("+{NOW}:{device}"),
            format!("{NOW}:not-a-device"),
            format!("{NOW}:{device}:extra"),
            format!("{NOW}"),
        ] {
            assert!(
                matches!(check_username(&username, NOW), Err(CredentialError::Malformed { .. })),
                "{username:?} should be malformed"
            );
        }
    }

    #[test]
    fn secret_debug_is_redacted() {
        let secret = RelaySecret::from_bytes([0xab; 32]);
        let shown = format!("{secret:?}");
        assert!(!shown.contains("ab") && !shown.contains("171"), "{shown}");
        assert_eq!(secret.as_bytes(), &[0xab; 32]);
    }
}
