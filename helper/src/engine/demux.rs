//! Sorting the one UDP socket's datagrams by their first bytes, and reading the few header
//! fields the engine routes by (STUN class, transaction id and USERNAME; WireGuard receiver
//! index), without decoding whole messages.
//!
//! RFC 7983 §7 splits the first byte into ranges. WireGuard's message type is a
//! little-endian u32 whose three high bytes are zero, so its first byte is 1..=4 and bytes
//! 1..4 are zero. STUN's first byte is 0..=3 too, but a STUN message has the magic cookie
//! 0x2112A442 at bytes 4..8: check STUN first, by the cookie.

/// What a datagram on the shared socket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// STUN (ICE checks, STUN binding, TURN control and Data indications): first byte
    /// 0x00..=0x03 and the magic cookie at bytes 4..8.
    Stun,
    /// TURN ChannelData: first byte 0x40..=0x7F (channel numbers 0x4000..=0x7FFF).
    ChannelData,
    /// WireGuard: message type 1..=4 as little-endian u32 (first byte 1..=4, then 3 zeros).
    WireGuard,
    /// Anything else: dropped.
    Unknown,
}

const STUN_MAGIC_COOKIE: [u8; 4] = 0x2112_A442_u32.to_be_bytes();
const STUN_HEADER_LEN: usize = 20;
const STUN_ATTR_USERNAME: u16 = 0x0006;
const CHANNEL_DATA_HEADER_LEN: usize = 4;
/// The smallest WireGuard message is a keepalive: 16-byte header + 16-byte tag.
const WIREGUARD_MIN_LEN: usize = 32;

/// Classifies a datagram by its first bytes.
pub(crate) fn classify(d: &[u8]) -> Kind {
    match d.first() {
        Some(0x00..=0x03) if d.len() >= STUN_HEADER_LEN && d[4..8] == STUN_MAGIC_COOKIE => Kind::Stun,
        Some(1..=4) if d.len() >= WIREGUARD_MIN_LEN && d[1..4] == [0, 0, 0] => Kind::WireGuard,
        Some(0x40..=0x7F) if d.len() >= CHANNEL_DATA_HEADER_LEN => Kind::ChannelData,
        _ => Kind::Unknown,
    }
}

/// The class of a STUN message (RFC 8489 §5: bits C1 and C0 of the message type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StunClass {
    Request,
    Indication,
    SuccessResponse,
    ErrorResponse,
}

/// The class of a datagram that [`classify`] called [`Kind::Stun`].
pub(crate) fn stun_class(d: &[u8]) -> StunClass {
    let typ = u16::from_be_bytes([d[0], d[1]]);
    match ((typ >> 7) & 0b10) | ((typ >> 4) & 0b01) {
        0b00 => StunClass::Request,
        0b01 => StunClass::Indication,
        0b10 => StunClass::SuccessResponse,
        _ => StunClass::ErrorResponse,
    }
}

/// The 96-bit transaction id of a datagram that [`classify`] called [`Kind::Stun`].
pub(crate) fn stun_transaction_id(d: &[u8]) -> [u8; 12] {
    let mut id = [0u8; 12];
    id.copy_from_slice(&d[8..20]);
    id
}

/// The receiver's part of an ICE check's USERNAME (`receiver-ufrag:sender-ufrag`,
/// RFC 8445 §7.2.2): the local ufrag of the agent the check is for.
pub(crate) fn stun_username_receiver(d: &[u8]) -> Option<&str> {
    let declared = usize::from(u16::from_be_bytes([d[2], d[3]]));
    let end = (STUN_HEADER_LEN + declared).min(d.len());
    let mut at = STUN_HEADER_LEN;
    while at + 4 <= end {
        let typ = u16::from_be_bytes([d[at], d[at + 1]]);
        let len = usize::from(u16::from_be_bytes([d[at + 2], d[at + 3]]));
        let value = d.get(at + 4..at + 4 + len)?;
        if typ == STUN_ATTR_USERNAME {
            let text = std::str::from_utf8(value).ok()?;
            return text.split_once(':').map(|(receiver, _)| receiver);
        }
        // Attributes are padded to 4 bytes.
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

/// The receiver index of a WireGuard handshake response, cookie reply or data message:
/// the index the receiving `Tunn` chose for its session. `None` for a handshake
/// initiation, which names no receiver (its sender is found by decrypting its static key).
pub(crate) fn wireguard_receiver_index(d: &[u8]) -> Option<u32> {
    let at = match d[0] {
        2 => 8,
        3 | 4 => 4,
        _ => return None,
    };
    Some(u32::from_le_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]]))
}

/// Whether a datagram classified as WireGuard is a transport data message (type 4): the
/// traffic itself, rather than a handshake or cookie message.
pub(crate) fn is_wireguard_data(d: &[u8]) -> bool {
    d.first() == Some(&4)
}

/// Whether a WireGuard datagram is a keepalive: a data message with no payload (header
/// and tag only).
pub(crate) fn is_wireguard_keepalive(d: &[u8]) -> bool {
    is_wireguard_data(d) && d.len() == WIREGUARD_MIN_LEN
}

/// Whether a WireGuard datagram is a cookie reply (type 3, 64 bytes): the peer, under
/// load, did not answer our handshake message and asks for it again with the cookie.
pub(crate) fn is_wireguard_cookie_reply(d: &[u8]) -> bool {
    d.first() == Some(&3) && d.len() == 64
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc_stun::message::{Message, Setter, TransactionId, BINDING_REQUEST, BINDING_SUCCESS};
    use rtc_stun::textattrs::Username;

    fn binding(username: Option<&str>) -> Message {
        let mut m = Message::new();
        let mut attrs: Vec<Box<dyn Setter>> = vec![Box::new(TransactionId::new()), Box::new(BINDING_REQUEST)];
        if let Some(u) = username {
            attrs.push(Box::new(Username::new(rtc_stun::attributes::ATTR_USERNAME, u.to_string())));
        }
        m.build(&attrs).unwrap();
        m
    }

    #[test]
    fn stun_binding_request_is_stun_with_its_class_and_id() {
        let m = binding(Some("abcd:efgh"));
        assert_eq!(classify(&m.raw), Kind::Stun);
        assert_eq!(stun_class(&m.raw), StunClass::Request);
        assert_eq!(stun_transaction_id(&m.raw), m.transaction_id.0);
        assert_eq!(stun_username_receiver(&m.raw), Some("abcd"));
        assert_eq!(stun_username_receiver(&binding(None).raw), None);

        let mut resp = Message::new();
        resp.build(&[Box::new(m.clone()), Box::new(BINDING_SUCCESS)]).unwrap();
        assert_eq!(stun_class(&resp.raw), StunClass::SuccessResponse);
        assert_eq!(stun_transaction_id(&resp.raw), m.transaction_id.0);
    }

    #[test]
    fn truncated_username_is_not_read_past_the_end() {
        let m = binding(Some("receiver:sender"));
        for cut in STUN_HEADER_LEN..m.raw.len() {
            let _ = stun_username_receiver(&m.raw[..cut]);
        }
    }

    #[test]
    fn wireguard_types_are_wireguard() {
        for t in 1u32..=4 {
            let mut d = vec![0u8; 148];
            d[..4].copy_from_slice(&t.to_le_bytes());
            d[4..8].copy_from_slice(&0x0102_0304u32.to_le_bytes());
            d[8..12].copy_from_slice(&0x0506_0708u32.to_le_bytes());
            assert_eq!(classify(&d), Kind::WireGuard, "type {t}");
            let expected = match t {
                1 => None,
                2 => Some(0x0506_0708),
                _ => Some(0x0102_0304),
            };
            assert_eq!(wireguard_receiver_index(&d), expected, "type {t}");
        }
    }

    #[test]
    fn channel_data_is_channel_data() {
        let mut c = rtc_turn::proto::chandata::ChannelData {
            data: vec![1, 2, 3],
            number: rtc_turn::proto::channum::ChannelNumber(0x4001),
            ..Default::default()
        };
        c.encode();
        assert_eq!(classify(&c.raw), Kind::ChannelData);
    }

    #[test]
    fn short_or_odd_is_unknown() {
        assert_eq!(classify(&[]), Kind::Unknown);
        assert_eq!(classify(&[1, 0, 0, 0]), Kind::Unknown);
        assert_eq!(classify(&[0x80; 40]), Kind::Unknown);
    }
}
