//! Byte arrays as text in JSON: base64 (standard alphabet, padded), as WireGuard tools print keys.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{de, Deserialize, Deserializer, Serializer};

pub(crate) fn encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

pub(crate) fn decode_array<const N: usize>(text: &str) -> Result<[u8; N], String> {
    let bytes = STANDARD.decode(text.trim()).map_err(|e| format!("not base64: {e}"))?;
    <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| format!("expected {N} bytes, got {}", bytes.len()))
}

/// `#[serde(with = "crate::encoding::array")]` for fixed-size byte arrays.
pub(crate) mod array {
    use super::*;

    pub fn serialize<S: Serializer, const N: usize>(v: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(d: D) -> Result<[u8; N], D::Error> {
        let text = String::deserialize(d)?;
        decode_array(&text).map_err(de::Error::custom)
    }
}

/// `#[serde(with = "crate::encoding::bytes")]` for variable-length byte vectors.
pub(crate) mod bytes {
    use super::*;

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text.trim()).map_err(|e| de::Error::custom(format!("not base64: {e}")))
    }
}
