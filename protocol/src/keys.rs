//! Device public keys and the proof-of-key handshake with the signal server.
//!
//! A device proves it holds the private key of its [`PublicKey`] without sending any
//! secret: the server sends a random challenge, the device answers with an HMAC over
//! the challenge keyed by the x25519 shared secret between the device key and the
//! server's static key. Only the two holders of those private keys can compute it.

use std::fmt;
use std::str::FromStr;

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use x25519_dalek::StaticSecret;

use crate::encoding;

/// An x25519 public key: a device's identity, also its WireGuard public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The public key belonging to `secret`.
    pub fn of(secret: &StaticSecret) -> Self {
        Self(x25519_dalek::PublicKey::from(secret).to_bytes())
    }

    /// The first characters of the base64 form: enough to tell peers apart in logs.
    pub fn short(&self) -> String {
        encoding::encode(&self.0)[..8].to_string()
    }

    /// A human-comparable fingerprint (SHA-256 of the key, 8 groups of 4 hex digits),
    /// for two friends to check they see the same key.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.0);
        digest[..16]
            .chunks(2)
            .map(|pair| format!("{:02x}{:02x}", pair[0], pair[1]))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl From<x25519_dalek::PublicKey> for PublicKey {
    fn from(key: x25519_dalek::PublicKey) -> Self {
        Self(key.to_bytes())
    }
}

impl From<PublicKey> for x25519_dalek::PublicKey {
    fn from(key: PublicKey) -> Self {
        x25519_dalek::PublicKey::from(key.0)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&encoding::encode(&self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.short())
    }
}

/// Why a text is not a public key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid public key: {0}")]
pub struct InvalidPublicKey(String);

impl FromStr for PublicKey {
    type Err = InvalidPublicKey;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        encoding::decode_array(s).map(Self).map_err(InvalidPublicKey)
    }
}

impl Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The x25519 shared secret could not be used: the other key is a low-order point
/// (all-zero shared secret), which an attacker would send to force a known secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the key {0:?} gives a non-contributory shared secret")]
pub struct WeakKey(pub PublicKey);

/// Derives a 32-byte key for `purpose` from the x25519 shared secret of `secret` and `their_key`.
pub(crate) fn derive_key(
    secret: &StaticSecret,
    their_key: &PublicKey,
    purpose: &[u8],
    context: &[u8],
) -> Result<[u8; 32], WeakKey> {
    let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(*their_key));
    if !shared.was_contributory() {
        return Err(WeakKey(*their_key));
    }
    let hkdf = Hkdf::<Sha256>::new(Some(purpose), shared.as_bytes());
    let mut key = [0u8; 32];
    hkdf.expand(context, &mut key).expect("32 bytes is a valid HKDF-SHA256 output length");
    Ok(key)
}

const AUTH_PURPOSE: &[u8] = b"trellis-auth-v1";

/// A random challenge the server sends to a connecting device.
pub type Challenge = [u8; 32];

/// The proof that the holder of `secret` (device or server) shares a key with `their_key`
/// for this `challenge`. Both sides compute it; they agree only if each holds its private key.
pub fn auth_proof(
    secret: &StaticSecret,
    their_key: &PublicKey,
    challenge: &Challenge,
    device_key: &PublicKey,
    server_key: &PublicKey,
) -> Result<[u8; 32], WeakKey> {
    let key = derive_key(secret, their_key, AUTH_PURPOSE, b"proof")?;
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(AUTH_PURPOSE);
    mac.update(challenge);
    mac.update(device_key.as_bytes());
    mac.update(server_key.as_bytes());
    Ok(mac.finalize().into_bytes().into())
}

/// Checks a device's proof in constant time. Used by the server with its own static secret.
pub fn verify_auth_proof(
    server_secret: &StaticSecret,
    device_key: &PublicKey,
    challenge: &Challenge,
    proof: &[u8; 32],
) -> bool {
    let server_key = PublicKey::of(server_secret);
    let Ok(key) = derive_key(server_secret, device_key, AUTH_PURPOSE, b"proof") else {
        return false;
    };
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(AUTH_PURPOSE);
    mac.update(challenge);
    mac.update(device_key.as_bytes());
    mac.update(server_key.as_bytes());
    mac.verify_slice(proof).is_ok()
}

/// A fresh random private key.
pub fn generate_secret() -> StaticSecret {
    StaticSecret::random_from_rng(rand_core::OsRng)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips() {
        let key = PublicKey::of(&generate_secret());
        let parsed: PublicKey = key.to_string().parse().unwrap();
        assert_eq!(parsed, key);
        let json = serde_json::to_string(&key).unwrap();
        assert_eq!(serde_json::from_str::<PublicKey>(&json).unwrap(), key);
    }

    #[test]
    fn malformed_keys_are_rejected() {
        assert!("not a key".parse::<PublicKey>().is_err());
        assert!("AAAA".parse::<PublicKey>().is_err(), "3 bytes is too short");
    }

    #[test]
    fn proof_verifies_only_with_the_right_keys() {
        let device = generate_secret();
        let server = generate_secret();
        let device_key = PublicKey::of(&device);
        let server_key = PublicKey::of(&server);
        let challenge = [7u8; 32];
        let proof = auth_proof(&device, &server_key, &challenge, &device_key, &server_key).unwrap();
        assert!(verify_auth_proof(&server, &device_key, &challenge, &proof));

        // Another challenge, another claimed key, or another prover all fail.
        assert!(!verify_auth_proof(&server, &device_key, &[8u8; 32], &proof));
        let impostor = PublicKey::of(&generate_secret());
        assert!(!verify_auth_proof(&server, &impostor, &challenge, &proof));
        let thief = generate_secret();
        let forged = auth_proof(&thief, &server_key, &challenge, &device_key, &server_key).unwrap();
        assert!(!verify_auth_proof(&server, &device_key, &challenge, &forged));
    }

    #[test]
    fn low_order_keys_are_refused() {
        let zero = PublicKey::from_bytes([0u8; 32]);
        let err = auth_proof(&generate_secret(), &zero, &[0; 32], &zero, &zero).unwrap_err();
        assert_eq!(err, WeakKey(zero));
        assert!(!verify_auth_proof(&generate_secret(), &zero, &[0; 32], &[0; 32]));
    }

    #[test]
    fn fingerprint_is_stable_and_readable() {
        let key = PublicKey::from_bytes([1u8; 32]);
        let fp = key.fingerprint();
        assert_eq!(fp, key.fingerprint());
        assert_eq!(fp.split(' ').count(), 8);
    }
}
