//! The few IPv4 and ICMP bits the engine needs: reading addresses to route TUN packets, and
//! building and recognising the ICMP echoes of [`super::Engine::ping`].

use std::net::Ipv4Addr;

use crate::checksum::{checksum, set_ipv4_header_checksum};

const IPV4_HEADER_LEN: usize = 20;
const PROTO_ICMP: u8 = 1;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_HEADER_LEN: usize = 8;
/// TTL of our echo requests: the usual default of Linux and macOS.
const TTL: u8 = 64;

/// The source address of an IPv4 packet.
pub(crate) fn ipv4_source(p: &[u8]) -> Option<Ipv4Addr> {
    (p.len() >= IPV4_HEADER_LEN && p[0] >> 4 == 4).then(|| Ipv4Addr::new(p[12], p[13], p[14], p[15]))
}

/// The destination address of an IPv4 packet.
pub(crate) fn ipv4_destination(p: &[u8]) -> Option<Ipv4Addr> {
    (p.len() >= IPV4_HEADER_LEN && p[0] >> 4 == 4).then(|| Ipv4Addr::new(p[16], p[17], p[18], p[19]))
}

/// An ICMP echo request or reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Echo {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub reply: bool,
    pub id: u16,
    pub seq: u16,
    pub payload: Vec<u8>,
}

impl Echo {
    /// The IPv4 packet, with valid header and ICMP checksums.
    pub(crate) fn to_packet(&self) -> Vec<u8> {
        let icmp_len = ICMP_HEADER_LEN + self.payload.len();
        let total = IPV4_HEADER_LEN + icmp_len;
        let mut p = vec![0u8; total];
        p[0] = 0x45; // version 4, 5 words of header
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[6] = 0x40; // don't fragment
        p[8] = TTL;
        p[9] = PROTO_ICMP;
        p[12..16].copy_from_slice(&self.src.octets());
        p[16..20].copy_from_slice(&self.dst.octets());
        set_ipv4_header_checksum(&mut p[..IPV4_HEADER_LEN]);
        let icmp = &mut p[IPV4_HEADER_LEN..];
        icmp[0] = if self.reply { ICMP_ECHO_REPLY } else { ICMP_ECHO_REQUEST };
        icmp[4..6].copy_from_slice(&self.id.to_be_bytes());
        icmp[6..8].copy_from_slice(&self.seq.to_be_bytes());
        icmp[ICMP_HEADER_LEN..].copy_from_slice(&self.payload);
        let sum = checksum(icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        p
    }

    /// Reads an ICMP echo request or reply with valid checksums; `None` for anything else.
    pub(crate) fn parse(p: &[u8]) -> Option<Echo> {
        if p.len() < IPV4_HEADER_LEN + ICMP_HEADER_LEN || p[0] != 0x45 || p[9] != PROTO_ICMP {
            return None;
        }
        let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
        if total > p.len()
            || total < IPV4_HEADER_LEN + ICMP_HEADER_LEN
            || checksum(&p[..IPV4_HEADER_LEN]) != 0
        {
            return None;
        }
        let icmp = &p[IPV4_HEADER_LEN..total];
        if checksum(icmp) != 0 || icmp[1] != 0 {
            return None;
        }
        let reply = match icmp[0] {
            ICMP_ECHO_REPLY => true,
            ICMP_ECHO_REQUEST => false,
            _ => return None,
        };
        Some(Echo {
            src: ipv4_source(p)?,
            dst: ipv4_destination(p)?,
            reply,
            id: u16::from_be_bytes([icmp[4], icmp[5]]),
            seq: u16::from_be_bytes([icmp[6], icmp[7]]),
            payload: icmp[ICMP_HEADER_LEN..].to_vec(),
        })
    }

    /// The reply a host's IP stack gives to this request (the tests' stand-in for it).
    #[cfg(test)]
    pub(crate) fn answer(&self) -> Echo {
        Echo { src: self.dst, dst: self.src, reply: true, ..self.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Echo {
        Echo {
            src: Ipv4Addr::new(100, 64, 0, 1),
            dst: Ipv4Addr::new(100, 64, 0, 2),
            reply: false,
            id: 0x5472,
            seq: 9,
            payload: b"trellis ping".to_vec(),
        }
    }

    #[test]
    fn echo_round_trips_with_valid_checksums() {
        let p = request().to_packet();
        assert_eq!(checksum(&p[..20]), 0, "header checksum");
        assert_eq!(Echo::parse(&p), Some(request()));
        assert_eq!(ipv4_source(&p), Some(Ipv4Addr::new(100, 64, 0, 1)));
        assert_eq!(ipv4_destination(&p), Some(Ipv4Addr::new(100, 64, 0, 2)));
        let reply = Echo::parse(&request().answer().to_packet()).unwrap();
        assert!(reply.reply);
        assert_eq!((reply.src, reply.dst, reply.seq), (request().dst, request().src, 9));
    }

    #[test]
    fn odd_length_payload_checksums() {
        let e = Echo { payload: b"odd".to_vec(), ..request() };
        assert_eq!(Echo::parse(&e.to_packet()), Some(e));
    }

    #[test]
    fn corrupted_or_other_packets_are_not_echoes() {
        let mut p = request().to_packet();
        p[30] ^= 1;
        assert_eq!(Echo::parse(&p), None, "payload bit flipped");
        let mut udp = request().to_packet();
        udp[9] = 17;
        assert_eq!(Echo::parse(&udp), None);
        assert_eq!(Echo::parse(&[0x45; 10]), None);
        assert_eq!(ipv4_destination(&[0x60; 40]), None, "IPv6 is not routed");
    }
}
