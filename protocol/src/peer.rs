//! Signal between the helpers of two peers: the ICE credentials and candidates each side
//! needs to find a path to the other. It travels as the payload of a
//! [`SealedEnvelope`](crate::sealed::SealedEnvelope), so the signal server forwards it but
//! can neither read nor forge it.
//!
//! # ICE sessions
//! Each side numbers its own ICE sessions: a *session* is one set of its ICE credentials
//! (ufrag and password) with the candidates gathered for it. A side that (re)starts ICE with
//! a peer makes a new session and sends [`PeerSignal::IceCredentials`] followed by one
//! [`PeerSignal::Candidate`] per local candidate (more may trickle later).
//!
//! * Credentials of a session the receiver has not seen yet mean the sender restarted ICE:
//!   the receiver resets its own ICE checks and answers with its credentials and candidates.
//! * `peer_session` names the receiver's session the sender currently holds. When it is not
//!   the receiver's current session (or `None`), the sender lacks the receiver's credentials
//!   and the receiver sends them (again). That closes every race: simultaneous restarts,
//!   a restart crossing an answer, a peer whose helper restarted and forgot everything.
//! * Candidates carry the session they belong to; candidates of any other session than the
//!   one the receiver holds are stale and dropped.
//!
//! Envelopes between two devices arrive in order and at most once (see
//! [`crate::sealed`]), so a session's credentials always come before its candidates.
//! Session numbers are opaque identifiers: only equality matters.

use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

use crate::sealed::MAX_PAYLOAD_BYTES;

/// Lengths of an ICE username fragment, in characters (RFC 8839 §5.4).
pub const ICE_UFRAG_LEN: RangeInclusive<usize> = 4..=256;
/// Lengths of an ICE password, in characters (RFC 8839 §5.4).
pub const ICE_PWD_LEN: RangeInclusive<usize> = 22..=256;
/// Longest candidate text, in bytes. An SDP `candidate` value is about 100 bytes; the limit
/// leaves room for long IPv6 addresses and extensions, and keeps any message far below the
/// sealed envelope's [`MAX_PAYLOAD_BYTES`].
pub const MAX_CANDIDATE_LEN: usize = 512;

/// One message from a peer's helper to another's, inside a sealed envelope.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PeerSignal {
    /// The sender's ICE credentials for its ICE session `session`.
    IceCredentials {
        /// The sender's ICE session these credentials belong to.
        session: u64,
        ufrag: String,
        pwd: String,
        /// The receiver's session whose credentials the sender holds now, if any.
        peer_session: Option<u64>,
    },
    /// One of the sender's local candidates (host, server-reflexive or relayed) for its
    /// session `session`: an SDP `candidate` attribute value, as rtc-ice's
    /// `Candidate::marshal` writes it.
    Candidate { session: u64, candidate: String },
}

/// Why bytes are not a usable [`PeerSignal`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPeerSignal {
    #[error("peer signal of {len} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte limit")]
    TooLarge { len: usize },
    #[error("peer signal is not a known message: {0}")]
    Malformed(String),
    #[error("ICE ufrag {ufrag:?} is not 4 to 256 ICE characters (letters, digits, '+', '/')")]
    Ufrag { ufrag: String },
    #[error("ICE password of {len} characters is not 22 to 256 ICE characters (letters, digits, '+', '/')")]
    Pwd { len: usize },
    #[error("ICE candidate of {len} bytes is empty, longer than {MAX_CANDIDATE_LEN} bytes or spans lines")]
    Candidate { len: usize },
}

/// `ice-char = ALPHA / DIGIT / "+" / "/"` (RFC 8839 §5.4).
fn is_ice_text(text: &str, lengths: &RangeInclusive<usize>) -> bool {
    lengths.contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

impl PeerSignal {
    /// The session of the sender this message belongs to.
    pub fn session(&self) -> u64 {
        match self {
            PeerSignal::IceCredentials { session, .. } | PeerSignal::Candidate { session, .. } => *session,
        }
    }

    /// Checks the fields' lengths and character sets.
    pub fn validate(&self) -> Result<(), InvalidPeerSignal> {
        match self {
            PeerSignal::IceCredentials { ufrag, pwd, .. } => {
                if !is_ice_text(ufrag, &ICE_UFRAG_LEN) {
                    return Err(InvalidPeerSignal::Ufrag { ufrag: ufrag.clone() });
                }
                if !is_ice_text(pwd, &ICE_PWD_LEN) {
                    return Err(InvalidPeerSignal::Pwd { len: pwd.len() });
                }
            }
            PeerSignal::Candidate { candidate, .. } => {
                if candidate.is_empty()
                    || candidate.len() > MAX_CANDIDATE_LEN
                    || candidate.contains(['\r', '\n'])
                {
                    return Err(InvalidPeerSignal::Candidate { len: candidate.len() });
                }
            }
        }
        Ok(())
    }

    /// The payload to seal: JSON.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a PeerSignal has only strings and numbers: it always serializes")
    }

    /// Reads and validates an opened envelope's payload.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, InvalidPeerSignal> {
        if bytes.len() > MAX_PAYLOAD_BYTES {
            return Err(InvalidPeerSignal::TooLarge { len: bytes.len() });
        }
        let signal: PeerSignal =
            serde_json::from_slice(bytes).map_err(|e| InvalidPeerSignal::Malformed(e.to_string()))?;
        signal.validate()?;
        Ok(signal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CANDIDATE: &str = "2130706431 1 udp 2130706431 192.0.2.10 51820 typ host";

    fn credentials() -> PeerSignal {
        PeerSignal::IceCredentials {
            session: 7,
            ufrag: "abcdEFGHijklMNOP".into(),
            pwd: "abcdefghijklmnopqrstuvwxyzABCDEF".into(),
            peer_session: Some(3),
        }
    }

    #[test]
    fn wire_form_is_tagged_snake_case() {
        let json = String::from_utf8(credentials().to_bytes()).unwrap();
        assert_eq!(
            json,
            r#"{"type":"ice_credentials","session":7,"ufrag":"abcdEFGHijklMNOP","pwd":"abcdefghijklmnopqrstuvwxyzABCDEF","peer_session":3}"#
        );
        let candidate = PeerSignal::Candidate { session: 7, candidate: CANDIDATE.into() };
        let json = String::from_utf8(candidate.to_bytes()).unwrap();
        assert!(json.starts_with(r#"{"type":"candidate","session":7,"#), "{json}");
    }

    #[test]
    fn unknown_kinds_and_fields_are_refused() {
        assert!(matches!(
            PeerSignal::from_bytes(br#"{"type":"offer","sdp":"v=0"}"#),
            Err(InvalidPeerSignal::Malformed(_))
        ));
        assert!(matches!(
            PeerSignal::from_bytes(br#"{"type":"candidate","session":1,"candidate":"x","extra":1}"#),
            Err(InvalidPeerSignal::Malformed(_))
        ));
    }

    #[test]
    fn bad_fields_are_refused() {
        let bad_ufrag = PeerSignal::IceCredentials {
            session: 1,
            ufrag: "a:b".into(),
            pwd: "abcdefghijklmnopqrstuvwxyzABCDEF".into(),
            peer_session: None,
        };
        assert!(matches!(bad_ufrag.validate(), Err(InvalidPeerSignal::Ufrag { .. })));
        let short_pwd = PeerSignal::IceCredentials {
            session: 1,
            ufrag: "abcd".into(),
            pwd: "short".into(),
            peer_session: None,
        };
        assert_eq!(short_pwd.validate(), Err(InvalidPeerSignal::Pwd { len: 5 }));
        let two_lines = PeerSignal::Candidate { session: 1, candidate: format!("{CANDIDATE}\r\na=evil") };
        assert!(matches!(two_lines.validate(), Err(InvalidPeerSignal::Candidate { .. })));
        let long = PeerSignal::Candidate { session: 1, candidate: "x".repeat(MAX_CANDIDATE_LEN + 1) };
        assert!(PeerSignal::from_bytes(&long.to_bytes()).is_err());
        assert!(matches!(
            PeerSignal::from_bytes(&vec![b' '; MAX_PAYLOAD_BYTES + 1]),
            Err(InvalidPeerSignal::TooLarge { .. })
        ));
    }

    fn ice_text(lengths: RangeInclusive<usize>) -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                proptest::char::range('a', 'z'),
                proptest::char::range('A', 'Z'),
                proptest::char::range('0', '9'),
                Just('+'),
                Just('/')
            ],
            lengths,
        )
        .prop_map(|chars| chars.into_iter().collect())
    }

    fn signal() -> impl Strategy<Value = PeerSignal> {
        prop_oneof![
            (any::<u64>(), ice_text(ICE_UFRAG_LEN), ice_text(ICE_PWD_LEN), any::<Option<u64>>()).prop_map(
                |(session, ufrag, pwd, peer_session)| PeerSignal::IceCredentials {
                    session,
                    ufrag,
                    pwd,
                    peer_session
                }
            ),
            (any::<u64>(), "[ -~]{1,512}")
                .prop_map(|(session, candidate)| PeerSignal::Candidate { session, candidate }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn round_trips_within_the_envelope_limit(signal in signal()) {
            let bytes = signal.to_bytes();
            prop_assert!(bytes.len() <= MAX_PAYLOAD_BYTES);
            prop_assert_eq!(PeerSignal::from_bytes(&bytes).unwrap(), signal);
        }
    }
}
