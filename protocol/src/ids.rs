//! Identifiers and names. Newtypes so that a network id is never passed where a
//! device id is expected, and so that every name that reaches the server is valid.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a text is not a valid identifier or name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidName {
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error("{what} is {len} characters long; at most {max} are allowed")]
    TooLong { what: &'static str, len: usize, max: usize },
    #[error("{what} {text:?} contains {bad:?}; {allowed}")]
    BadCharacter { what: &'static str, text: String, bad: char, allowed: &'static str },
    #[error("{what} {text:?} must not start or end with '-'")]
    EdgeHyphen { what: &'static str, text: String },
    #[error("{what} {text:?} is not {len} hexadecimal digits")]
    NotHex { what: &'static str, text: String, len: usize },
}

macro_rules! random_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; 16]);

        impl $name {
            /// A fresh random id (128 bits: never collides in practice).
            pub fn random() -> Self {
                let mut bytes = [0u8; 16];
                rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
                Self(bytes)
            }

            pub const fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(bytes)
            }

            pub fn as_bytes(&self) -> &[u8; 16] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self)
            }
        }

        impl FromStr for $name {
            type Err = InvalidName;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let not_hex = || InvalidName::NotHex { what: $what, text: s.to_string(), len: 32 };
                if s.len() != 32 || !s.is_ascii() {
                    return Err(not_hex());
                }
                let mut bytes = [0u8; 16];
                for (i, byte) in bytes.iter_mut().enumerate() {
                    *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| not_hex())?;
                }
                Ok(Self(bytes))
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

random_id!(
    /// A network: a group of devices that reach each other.
    NetworkId,
    "network id"
);
random_id!(
    /// A device, named by its public key (see [`DeviceId::of_key`]): the same in every
    /// network it belongs to, so that no table is needed to map one to the other.
    DeviceId,
    "device id"
);

impl DeviceId {
    /// The id of the device holding `key`: the first 128 bits of a domain-separated
    /// SHA-256 of the key.
    pub fn of_key(key: &crate::PublicKey) -> Self {
        use sha2::{Digest, Sha256};
        let digest =
            Sha256::new().chain_update(b"trellis-device-id-v1").chain_update(key.as_bytes()).finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        Self(bytes)
    }
}

/// An invite, as its owner lists and revokes it. It is the non-secret first group of
/// the invite code (see [`crate::invite`]), so it never reveals the whole code.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InviteId(pub String);

impl fmt::Display for InviteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A device's name in its network: a DNS label (`a-z`, `0-9`, `-`), so that it can
/// later become a host name. Parsing is case-insensitive.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize)]
#[serde(transparent)]
pub struct DeviceName(String);

impl DeviceName {
    pub const MAX_LEN: usize = 63;

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Makes a valid name out of any text, such as a machine's host name:
    /// lowercased, runs of other characters become one '-'. Falls back to "device".
    pub fn sanitize(text: &str) -> Self {
        let mut out = String::new();
        for c in text.chars().flat_map(char::to_lowercase) {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                out.push(c);
            } else if !out.ends_with('-') {
                out.push('-');
            }
        }
        let trimmed: String = out.trim_matches('-').chars().take(Self::MAX_LEN).collect();
        let trimmed = trimmed.trim_end_matches('-');
        if trimmed.is_empty() {
            Self("device".into())
        } else {
            Self(trimmed.to_string())
        }
    }

    /// This name with a numeric suffix ("laptop-2"), shortened to stay within the
    /// length limit; used when a name is already taken in a network.
    pub fn with_suffix(&self, n: u32) -> Self {
        let suffix = format!("-{n}");
        let keep = Self::MAX_LEN - suffix.len();
        let base: String = self.0.chars().take(keep).collect();
        Self(format!("{}{suffix}", base.trim_end_matches('-')))
    }
}

impl fmt::Display for DeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for DeviceName {
    type Err = InvalidName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const WHAT: &str = "device name";
        let name = s.trim().to_ascii_lowercase();
        if name.is_empty() {
            return Err(InvalidName::Empty { what: WHAT });
        }
        let len = name.chars().count();
        if len > Self::MAX_LEN {
            return Err(InvalidName::TooLong { what: WHAT, len, max: Self::MAX_LEN });
        }
        if let Some(bad) = name.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(InvalidName::BadCharacter {
                what: WHAT,
                text: s.to_string(),
                bad,
                allowed: "use letters, digits and '-'",
            });
        }
        if name.starts_with('-') || name.ends_with('-') {
            return Err(InvalidName::EdgeHyphen { what: WHAT, text: s.to_string() });
        }
        Ok(Self(name))
    }
}

impl<'de> Deserialize<'de> for DeviceName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// A network's display name: free text without control characters.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize)]
#[serde(transparent)]
pub struct NetworkName(String);

impl NetworkName {
    pub const MAX_LEN: usize = 64;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NetworkName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for NetworkName {
    type Err = InvalidName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const WHAT: &str = "network name";
        let name = s.trim();
        if name.is_empty() {
            return Err(InvalidName::Empty { what: WHAT });
        }
        let len = name.chars().count();
        if len > Self::MAX_LEN {
            return Err(InvalidName::TooLong { what: WHAT, len, max: Self::MAX_LEN });
        }
        if let Some(bad) = name.chars().find(|c| c.is_control()) {
            return Err(InvalidName::BadCharacter {
                what: WHAT,
                text: s.to_string(),
                bad,
                allowed: "control characters are not allowed",
            });
        }
        Ok(Self(name.to_string()))
    }
}

impl<'de> Deserialize<'de> for NetworkName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_as_hex() {
        let id = NetworkId::random();
        assert_eq!(id.to_string().len(), 32);
        assert_eq!(id.to_string().parse::<NetworkId>().unwrap(), id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<NetworkId>(&json).unwrap(), id);
        assert!("xyz".parse::<DeviceId>().is_err());
        assert!("é".repeat(16).parse::<DeviceId>().is_err());
    }

    #[test]
    fn device_names_are_dns_labels() {
        assert_eq!("Laptop-2".parse::<DeviceName>().unwrap().as_str(), "laptop-2");
        assert!(matches!("".parse::<DeviceName>(), Err(InvalidName::Empty { .. })));
        assert!(matches!("a b".parse::<DeviceName>(), Err(InvalidName::BadCharacter { bad: ' ', .. })));
        assert!(matches!("-a".parse::<DeviceName>(), Err(InvalidName::EdgeHyphen { .. })));
        assert!(matches!("a".repeat(64).parse::<DeviceName>(), Err(InvalidName::TooLong { len: 64, .. })));
        assert!(serde_json::from_str::<DeviceName>("\"no spaces\"").is_err());
    }

    #[test]
    fn sanitize_and_suffix_stay_valid() {
        assert_eq!(DeviceName::sanitize("Alice's MacBook Pro").as_str(), "alice-s-macbook-pro");
        assert_eq!(DeviceName::sanitize("!!!").as_str(), "device");
        let long = DeviceName::sanitize(&"x".repeat(100));
        let suffixed = long.with_suffix(12);
        assert_eq!(suffixed.as_str().len(), DeviceName::MAX_LEN);
        assert!(suffixed.as_str().parse::<DeviceName>().is_ok());
    }

    #[test]
    fn network_names_reject_control_characters() {
        assert_eq!("  Home  ".parse::<NetworkName>().unwrap().as_str(), "Home");
        assert!("a\nb".parse::<NetworkName>().is_err());
        assert!("".parse::<NetworkName>().is_err());
    }
}
