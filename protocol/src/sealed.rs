//! Sealed envelopes: signal messages between two devices that the server forwards but
//! can neither read nor forge.
//!
//! Each direction between two devices has its own key, derived with HKDF-SHA256 from
//! their x25519 shared secret and the ordered pair (sender, receiver), so a message
//! cannot be reflected back to its sender. XChaCha20-Poly1305 with a random 192-bit nonce
//! makes nonce reuse negligible even across restarts. The sender, receiver and a counter
//! are authenticated as associated data; the receiver accepts each sender's counters only
//! in increasing order, so a replayed envelope is refused.
//!
//! Counters are time-based (`max(last + 1, now in µs)`), so they keep increasing across
//! a sender's restarts without the sender storing anything.

use std::collections::HashMap;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use x25519_dalek::StaticSecret;

use crate::encoding;
use crate::keys::{derive_key, WeakKey};
use crate::PublicKey;

/// Largest payload a sealed envelope carries. Signal messages are a few hundred bytes.
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024;
const PURPOSE: &[u8] = b"trellis-seal-v1";

/// An encrypted, authenticated message from one device to another.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SealedEnvelope {
    pub from: PublicKey,
    pub to: PublicKey,
    pub counter: u64,
    #[serde(with = "encoding::array")]
    pub nonce: [u8; 24],
    #[serde(with = "encoding::bytes")]
    pub ciphertext: Vec<u8>,
}

/// Why an envelope was not sealed or not opened. Nothing is learned from which.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the envelope is addressed to {to:?}, not to this device")]
    NotForMe { to: PublicKey },
    #[error("payload of {len} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte limit")]
    TooLarge { len: usize },
    #[error(transparent)]
    WeakKey(#[from] WeakKey),
    #[error("the envelope from {from:?} failed authentication: tampered, truncated or forged")]
    Forged { from: PublicKey },
    #[error("the envelope from {from:?} is a replay (counter {counter} is not above {last})")]
    Replayed { from: PublicKey, counter: u64, last: u64 },
}

/// One device's end of sealed signaling: seals to and opens from any peer.
pub struct Sealer {
    secret: StaticSecret,
    public: PublicKey,
    last_sent: u64,
    last_received: HashMap<PublicKey, u64>,
    keys: HashMap<(PublicKey, PublicKey), XChaCha20Poly1305>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").field("public", &self.public).finish_non_exhaustive()
    }
}

impl Sealer {
    pub fn new(secret: StaticSecret) -> Self {
        let public = PublicKey::of(&secret);
        Self { secret, public, last_sent: 0, last_received: HashMap::new(), keys: HashMap::new() }
    }

    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    fn cipher(&mut self, from: PublicKey, to: PublicKey) -> Result<&XChaCha20Poly1305, WeakKey> {
        let peer = if from == self.public { to } else { from };
        if !self.keys.contains_key(&(from, to)) {
            let mut context = [0u8; 64];
            context[..32].copy_from_slice(from.as_bytes());
            context[32..].copy_from_slice(to.as_bytes());
            let key = derive_key(&self.secret, &peer, PURPOSE, &context)?;
            self.keys.insert((from, to), XChaCha20Poly1305::new(&key.into()));
        }
        Ok(&self.keys[&(from, to)])
    }

    fn associated_data(from: &PublicKey, to: &PublicKey, counter: u64) -> [u8; 72] {
        let mut aad = [0u8; 72];
        aad[..32].copy_from_slice(from.as_bytes());
        aad[32..64].copy_from_slice(to.as_bytes());
        aad[64..].copy_from_slice(&counter.to_be_bytes());
        aad
    }

    /// Seals `payload` for `to`. `now_micros` is the current Unix time in microseconds.
    pub fn seal(
        &mut self,
        to: PublicKey,
        payload: &[u8],
        now_micros: u64,
    ) -> Result<SealedEnvelope, SealError> {
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(SealError::TooLarge { len: payload.len() });
        }
        let counter = now_micros.max(self.last_sent + 1);
        let mut nonce = [0u8; 24];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
        let from = self.public;
        let aad = Self::associated_data(&from, &to, counter);
        let ciphertext = self
            .cipher(from, to)?
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: payload, aad: &aad })
            .expect("XChaCha20-Poly1305 encrypts any payload below 256 GiB");
        self.last_sent = counter;
        Ok(SealedEnvelope { from, to, counter, nonce, ciphertext })
    }

    /// Opens an envelope addressed to this device, refusing forgeries and replays.
    /// A refused envelope changes nothing.
    pub fn open(&mut self, envelope: &SealedEnvelope) -> Result<Vec<u8>, SealError> {
        if envelope.to != self.public {
            return Err(SealError::NotForMe { to: envelope.to });
        }
        let from = envelope.from;
        let last = self.last_received.get(&from).copied().unwrap_or(0);
        let aad = Self::associated_data(&from, &envelope.to, envelope.counter);
        let plaintext = self
            .cipher(from, envelope.to)?
            .decrypt(XNonce::from_slice(&envelope.nonce), Payload { msg: &envelope.ciphertext, aad: &aad })
            .map_err(|_| SealError::Forged { from })?;
        // Checked after authentication so that a forged counter cannot be used to
        // probe or move the replay window.
        if envelope.counter <= last {
            return Err(SealError::Replayed { from, counter: envelope.counter, last });
        }
        self.last_received.insert(from, envelope.counter);
        Ok(plaintext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::generate_secret;
    use proptest::prelude::*;

    fn pair() -> (Sealer, Sealer) {
        (Sealer::new(generate_secret()), Sealer::new(generate_secret()))
    }

    #[test]
    fn sealed_message_opens_once() {
        let (mut alice, mut bob) = pair();
        let env = alice.seal(bob.public_key(), b"hello", 1_000).unwrap();
        assert_eq!(bob.open(&env).unwrap(), b"hello");
        assert!(matches!(bob.open(&env), Err(SealError::Replayed { counter: 1_000, last: 1_000, .. })));
    }

    #[test]
    fn counters_increase_even_if_the_clock_does_not() {
        let (mut alice, mut bob) = pair();
        let first = alice.seal(bob.public_key(), b"1", 500).unwrap();
        let second = alice.seal(bob.public_key(), b"2", 400).unwrap();
        assert!(second.counter > first.counter);
        assert!(bob.open(&first).is_ok());
        assert!(bob.open(&second).is_ok());
    }

    #[test]
    fn a_third_party_cannot_open_or_forge() {
        let (mut alice, mut bob) = pair();
        let mut mallory = Sealer::new(generate_secret());
        let env = alice.seal(bob.public_key(), b"secret", 1).unwrap();
        assert!(matches!(mallory.open(&env), Err(SealError::NotForMe { .. })));

        // Mallory seals to Bob but claims to be Alice.
        let mut forged = mallory.seal(bob.public_key(), b"evil", 2).unwrap();
        forged.from = alice.public_key();
        assert!(matches!(bob.open(&forged), Err(SealError::Forged { .. })));
    }

    #[test]
    fn reflection_is_refused() {
        let (mut alice, bob) = pair();
        let env = alice.seal(bob.public_key(), b"x", 1).unwrap();
        // Swapping sender and receiver does not give a valid message back to Alice.
        let reflected = SealedEnvelope { from: env.to, to: env.from, ..env };
        assert!(matches!(alice.open(&reflected), Err(SealError::Forged { .. })));
    }

    #[test]
    fn oversized_payload_is_refused() {
        let (mut alice, bob) = pair();
        let big = vec![0u8; MAX_PAYLOAD_BYTES + 1];
        assert!(matches!(alice.seal(bob.public_key(), &big, 1), Err(SealError::TooLarge { .. })));
    }

    #[test]
    fn survives_json() {
        let (mut alice, mut bob) = pair();
        let env = alice.seal(bob.public_key(), b"json", 9).unwrap();
        let back: SealedEnvelope = serde_json::from_str(&serde_json::to_string(&env).unwrap()).unwrap();
        assert_eq!(bob.open(&back).unwrap(), b"json");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn any_tampering_is_detected(
            payload in proptest::collection::vec(any::<u8>(), 0..512),
            field in 0usize..4,
            index in any::<usize>(),
            flip in 1u8..=255,
        ) {
            let (mut alice, mut bob) = pair();
            let mut env = alice.seal(bob.public_key(), &payload, 77).unwrap();
            match field {
                0 if !env.ciphertext.is_empty() => { let i = index % env.ciphertext.len(); env.ciphertext[i] ^= flip }
                0 | 1 => { let i = index % 24; env.nonce[i] ^= flip }
                2 => env.counter ^= u64::from(flip),
                _ => { let keep = index % env.ciphertext.len(); env.ciphertext.truncate(keep) }
            }
            let forged = matches!(bob.open(&env), Err(SealError::Forged { .. }));
            prop_assert!(forged, "tampered envelope was accepted");
            // A rejected envelope must not move the replay window.
            let fresh = alice.seal(bob.public_key(), &payload, 78).unwrap();
            prop_assert_eq!(bob.open(&fresh).unwrap(), payload);
        }

        #[test]
        fn round_trips(payload in proptest::collection::vec(any::<u8>(), 0..2048), now in 1u64..u64::MAX / 2) {
            let (mut alice, mut bob) = pair();
            let env = alice.seal(bob.public_key(), &payload, now).unwrap();
            prop_assert_eq!(bob.open(&env).unwrap(), payload);
        }
    }
}
