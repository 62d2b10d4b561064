//! TUN offloads on Linux (`IFF_VNET_HDR` with `TUNSETOFFLOAD`): every read and write on
//! the device starts with a 10-byte `virtio_net_hdr`, and the kernel may hand over
//! - a TCP/IPv4 "super-segment" of up to 64 KiB (TSO, `gso_type` TCPV4): split here into
//!   segments of `gso_size` payload bytes, each with its own IP and TCP header and full
//!   checksums, as the kernel's own `tcp_gso_segment` would;
//! - a packet whose transport checksum is left partial (`NEEDS_CSUM`, checksum offload):
//!   completed here.
//!
//! One TUN read then carries a whole TCP burst instead of one packet, and the sender's
//! kernel skips segmenting it. The other way, [`Coalescer`] joins consecutive segments
//! of one TCP flow into one super-segment per write (GRO), so the receiving kernel's
//! stack handles a burst as one packet. A packet written alone, its checksums complete,
//! gets a header marked `DATA_VALID` (WireGuard's AEAD already proved it intact, and the
//! kernel's own WireGuard marks decrypted packets CHECKSUM_UNNECESSARY); whether a TUN
//! write honours that flag depends on the kernel, and without it the stack verifies the
//! checksum as before.

use crate::checksum::{checksum, fold, ipv4_pseudo_header_sum, set_ipv4_header_checksum, sum_bytes};

/// Size of `struct virtio_net_hdr` (without `num_buffers`), the TUN's default.
pub const VNET_HDR_LEN: usize = 10;

const F_NEEDS_CSUM: u8 = 1;
const F_DATA_VALID: u8 = 2;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_ECN: u8 = 0x80;

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
const TCP_CWR: u8 = 0x80;

/// The header for a packet written to the TUN alone: no offload, checksum verified.
const WRITE_HDR: [u8; VNET_HDR_LEN] = [F_DATA_VALID, GSO_NONE, 0, 0, 0, 0, 0, 0, 0, 0];
/// Most bytes one coalesced write carries: the IP total length is a 16-bit field.
const MAX_COALESCED: usize = 65_000;

/// Why a packet read from the TUN was dropped.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    #[error("read of {0} bytes is shorter than the virtio-net header")]
    NoHeader(usize),
    #[error("unsupported GSO type {0}")]
    GsoType(u8),
    #[error("malformed TCP/IPv4 super-segment: {0}")]
    Malformed(&'static str),
    #[error("checksum start {start} + offset {offset} lies outside a {len}-byte packet")]
    ChecksumOutside { start: usize, offset: usize, len: usize },
}

/// The fields of `virtio_net_hdr` that matter here (little-endian: x86 and ARM hosts; a
/// TUN uses the host's order unless told otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct VnetHdr {
    flags: u8,
    gso_type: u8,
    gso_size: u16,
    csum_start: u16,
    csum_offset: u16,
}

impl VnetHdr {
    fn parse(b: &[u8]) -> Self {
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Self {
            flags: b[0],
            gso_type: b[1],
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        }
    }
}

/// Turns one TUN read (`read`, header included) into the IP packets it carries, each
/// with complete checksums, and calls `each` for them in order. `scratch` holds one
/// segment at a time. Returns how many packets there were.
pub fn packets_of(
    read: &mut [u8],
    scratch: &mut Vec<u8>,
    mut each: impl FnMut(&[u8]),
) -> Result<usize, OffloadError> {
    if read.len() < VNET_HDR_LEN {
        return Err(OffloadError::NoHeader(read.len()));
    }
    let (hdr, packet) = read.split_at_mut(VNET_HDR_LEN);
    let hdr = VnetHdr::parse(hdr);
    match hdr.gso_type & !GSO_ECN {
        GSO_NONE => {
            if hdr.flags & F_NEEDS_CSUM != 0 {
                complete_checksum(packet, usize::from(hdr.csum_start), usize::from(hdr.csum_offset))?;
            }
            each(packet);
            Ok(1)
        }
        GSO_TCPV4 => split_tcp4(packet, usize::from(hdr.gso_size), scratch, each),
        other => Err(OffloadError::GsoType(other)),
    }
}

/// Fills in a partial transport checksum: the field holds the pseudo-header's sum, and
/// the checksum covers everything from `start` to the end (as `skb_checksum_help` does).
fn complete_checksum(packet: &mut [u8], start: usize, offset: usize) -> Result<(), OffloadError> {
    let at = start + offset;
    if at + 2 > packet.len() {
        return Err(OffloadError::ChecksumOutside { start, offset, len: packet.len() });
    }
    let mut sum = checksum(&packet[start..]);
    // A UDP checksum that comes out as 0 is sent as all ones: 0 means "none" in UDP.
    if sum == 0 && packet.get(9) == Some(&IPPROTO_UDP) && packet[0] >> 4 == 4 {
        sum = 0xffff;
    }
    packet[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    Ok(())
}

/// Splits a TCP/IPv4 super-segment into segments of at most `mss` payload bytes: IP total
/// length, identification (counting up) and header checksum per segment; TCP sequence
/// number per segment, FIN and PSH only on the last, CWR only on the first; the TCP
/// checksum computed in full.
fn split_tcp4(
    packet: &[u8],
    mss: usize,
    scratch: &mut Vec<u8>,
    mut each: impl FnMut(&[u8]),
) -> Result<usize, OffloadError> {
    use OffloadError::Malformed;
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return Err(Malformed("not IPv4"));
    }
    let ip_len = usize::from(packet[0] & 0x0f) * 4;
    if ip_len < 20 || packet[9] != IPPROTO_TCP || packet.len() < ip_len + 20 {
        return Err(Malformed("not TCP, or headers cut short"));
    }
    let tcp_len = usize::from(packet[ip_len + 12] >> 4) * 4;
    let headers = ip_len + tcp_len;
    if tcp_len < 20 || packet.len() < headers {
        return Err(Malformed("TCP header cut short"));
    }
    if mss == 0 {
        return Err(Malformed("segment size 0"));
    }
    let payload = &packet[headers..];
    let id = u16::from_be_bytes([packet[4], packet[5]]);
    let seq = u32::from_be_bytes(packet[ip_len + 4..ip_len + 8].try_into().unwrap_or_default());
    let flags = packet[ip_len + 13];
    let count = payload.len().div_ceil(mss).max(1);
    for (i, chunk) in payload.chunks(mss).chain(payload.is_empty().then_some(&[][..])).enumerate() {
        scratch.clear();
        scratch.extend_from_slice(&packet[..headers]);
        scratch.extend_from_slice(chunk);
        let total = scratch.len();
        let (ip, tcp) = scratch.split_at_mut(ip_len);
        ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&id.wrapping_add(i as u16).to_be_bytes());
        set_ipv4_header_checksum(ip);
        tcp[4..8].copy_from_slice(&seq.wrapping_add((i * mss) as u32).to_be_bytes());
        let mut f = flags;
        if i + 1 < count {
            f &= !(TCP_FIN | TCP_PSH);
        }
        if i > 0 {
            f &= !TCP_CWR;
        }
        tcp[13] = f;
        tcp[16..18].copy_from_slice(&[0, 0]);
        let pseudo = ipv4_pseudo_header_sum(ip, IPPROTO_TCP, tcp.len());
        let tcp_sum = !fold(sum_bytes(tcp, pseudo));
        tcp[16..18].copy_from_slice(&tcp_sum.to_be_bytes());
        each(scratch);
    }
    Ok(count)
}

/// Joins packets on their way to the TUN into as few writes as it can: consecutive TCP
/// segments of one flow (same addresses, ports, IP and TCP header fields but for length,
/// id, sequence number and checksums; the next sequence number; full-sized but for the
/// last; plain ACK, PSH only on the last) become one TCP/IPv4 super-segment with a GSO
/// header, as the kernel's own GRO would join them. Anything else is written alone.
#[derive(Debug, Default)]
pub struct Coalescer {
    /// The pending write: header, then the packet or super-segment.
    buf: Vec<u8>,
    /// Set while `buf` holds TCP segments that more may join.
    flow: Option<Flow>,
}

#[derive(Debug, Clone, Copy)]
struct Flow {
    headers: usize,
    ip_len: usize,
    gso_size: usize,
    next_seq: u32,
    segments: usize,
    /// The last segment was short or had PSH: nothing more may join.
    closed: bool,
}

impl Coalescer {
    /// Adds a packet, calling `write` for every write that can no longer grow.
    pub fn push<E>(&mut self, packet: &[u8], mut write: impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        if let Some(flow) = self.flow.as_mut() {
            if let Some((seq, payload_len, psh)) = joins(&self.buf[VNET_HDR_LEN..], flow, packet) {
                self.buf.extend_from_slice(&packet[flow.headers..]);
                flow.next_seq = seq.wrapping_add(payload_len as u32);
                flow.segments += 1;
                flow.closed = psh || payload_len < flow.gso_size;
                if psh {
                    self.buf[VNET_HDR_LEN + flow.ip_len + 13] |= TCP_PSH;
                }
                return Ok(());
            }
        }
        // Queued even when writing what was pending failed: that write's loss is the
        // error returned, not this packet's.
        let flushed = self.flush(&mut write);
        self.buf.extend_from_slice(&WRITE_HDR);
        self.buf.extend_from_slice(packet);
        self.flow = starts_flow(packet);
        flushed
    }

    /// Writes what is pending.
    pub fn flush<E>(&mut self, mut write: impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Some(flow) = self.flow.take().filter(|f| f.segments > 1) {
            finish_super_segment(&mut self.buf, &flow);
        }
        let written = write(&self.buf);
        self.buf.clear();
        written
    }
}

/// The flow a TCP/IPv4 segment could start: a plain ACK (PSH allowed, which closes it
/// at once), no IP options or fragments, with payload.
fn starts_flow(p: &[u8]) -> Option<Flow> {
    if p.len() < 40 || p[0] != 0x45 || p[9] != IPPROTO_TCP || p[6] & 0x3f != 0 || p[7] != 0 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
    let tcp_len = usize::from(p[32] >> 4) * 4;
    let headers = 20 + tcp_len;
    let flags = p[33];
    if total != p.len()
        || tcp_len < 20
        || p.len() <= headers
        || flags & !(TCP_ACK | TCP_PSH) != 0
        || flags & TCP_ACK == 0
    {
        return None;
    }
    let seq = u32::from_be_bytes([p[24], p[25], p[26], p[27]]);
    let gso_size = p.len() - headers;
    Some(Flow {
        headers,
        ip_len: 20,
        gso_size,
        next_seq: seq.wrapping_add(gso_size as u32),
        segments: 1,
        closed: flags & TCP_PSH != 0,
    })
}

/// Whether `p` continues the flow in `pending` (the packet being built): returns its
/// sequence number, payload length and PSH flag if so.
fn joins(pending: &[u8], flow: &Flow, p: &[u8]) -> Option<(u32, usize, bool)> {
    if flow.closed || p.len() <= flow.headers || pending.len() + p.len() - flow.headers > MAX_COALESCED {
        return None;
    }
    let next = starts_flow(p)?;
    let payload_len = p.len() - flow.headers;
    let seq = u32::from_be_bytes([p[24], p[25], p[26], p[27]]);
    let same_ip = pending[0..2] == p[0..2] && pending[6..10] == p[6..10] && pending[12..20] == p[12..20];
    // Ports, acknowledgment number, header length, window, urgent pointer and options
    // equal; flags equal but for PSH.
    let h = flow.headers;
    let same_tcp = pending[20..24] == p[20..24]
        && pending[28..33] == p[28..33]
        && (pending[33] | TCP_PSH) == (p[33] | TCP_PSH)
        && pending[34..36] == p[34..36]
        && pending[38..h] == p[38..h];
    (next.headers == flow.headers
        && same_ip
        && same_tcp
        && seq == flow.next_seq
        && payload_len <= flow.gso_size)
        .then_some((seq, payload_len, p[33] & TCP_PSH != 0))
}

/// Turns the header and the first segment's headers in `buf` into those of the whole
/// super-segment: GSO header (TCPV4, segment size, partial checksum from the TCP header
/// on), IP total length and header checksum, and the TCP checksum field holding the
/// pseudo-header's sum, as a partial checksum must.
fn finish_super_segment(buf: &mut [u8], flow: &Flow) {
    let (hdr, packet) = buf.split_at_mut(VNET_HDR_LEN);
    hdr[0] = F_NEEDS_CSUM;
    hdr[1] = GSO_TCPV4;
    hdr[2..4].copy_from_slice(&(flow.headers as u16).to_le_bytes());
    hdr[4..6].copy_from_slice(&(flow.gso_size as u16).to_le_bytes());
    hdr[6..8].copy_from_slice(&(flow.ip_len as u16).to_le_bytes());
    hdr[8..10].copy_from_slice(&16u16.to_le_bytes());
    let total = packet.len();
    packet[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    set_ipv4_header_checksum(&mut packet[..flow.ip_len]);
    let pseudo = fold(ipv4_pseudo_header_sum(&packet[..flow.ip_len], IPPROTO_TCP, total - flow.ip_len));
    let check = flow.ip_len + 16;
    packet[check..check + 2].copy_from_slice(&pseudo.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: [u8; 4] = [100, 64, 0, 1];
    const DST: [u8; 4] = [100, 64, 0, 2];

    /// A TCP/IPv4 packet as the kernel hands it over with offloads: the IP checksum
    /// filled in, the TCP checksum left as the pseudo-header's sum.
    fn tcp_packet(payload: &[u8], seq: u32, flags: u8, options: usize) -> Vec<u8> {
        let tcp_len = 20 + options;
        let total = 20 + tcp_len + payload.len();
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total.min(0xffff) as u16).to_be_bytes());
        p[4..6].copy_from_slice(&0xfff0u16.to_be_bytes());
        p[6] = 0x40; // DF
        p[8] = 64;
        p[9] = IPPROTO_TCP;
        p[12..16].copy_from_slice(&SRC);
        p[16..20].copy_from_slice(&DST);
        let ip_sum = !fold(sum_bytes(&p[..20], 0));
        p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
        p[20..22].copy_from_slice(&5201u16.to_be_bytes());
        p[22..24].copy_from_slice(&40000u16.to_be_bytes());
        p[24..28].copy_from_slice(&seq.to_be_bytes());
        p[32] = ((tcp_len / 4) as u8) << 4;
        p[33] = flags;
        p[40..40 + options].iter_mut().for_each(|b| *b = 1); // NOPs
        p[40 + options..].copy_from_slice(payload);
        p
    }

    fn with_header(gso_type: u8, flags: u8, gso_size: u16, csum: (u16, u16), packet: &[u8]) -> Vec<u8> {
        let mut read = vec![flags, gso_type, 0, 0];
        read.extend_from_slice(&gso_size.to_le_bytes());
        read.extend_from_slice(&csum.0.to_le_bytes());
        read.extend_from_slice(&csum.1.to_le_bytes());
        read.extend_from_slice(packet);
        read
    }

    /// Whether the packet's IPv4 header and TCP or UDP checksums verify, computed
    /// independently of the code under test's order of summing.
    fn checksums_verify(p: &[u8]) -> bool {
        let ip_len = usize::from(p[0] & 0x0f) * 4;
        let ip_ok = fold(sum_bytes(&p[..ip_len], 0)) == 0xffff;
        let l4 = &p[ip_len..];
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&p[12..20]);
        pseudo.extend_from_slice(&[0, p[9]]);
        pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        pseudo.extend_from_slice(l4);
        if pseudo.len() % 2 == 1 {
            pseudo.push(0);
        }
        let mut sum: u32 = 0;
        for w in pseudo.chunks(2) {
            sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        ip_ok && sum == 0xffff
    }

    #[test]
    fn a_super_segment_becomes_segments_a_receiver_accepts() {
        let payload: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let flags = 0x10 | TCP_PSH | TCP_FIN | TCP_CWR; // ACK, PSH, FIN, CWR
        let mut read = with_header(
            GSO_TCPV4 | GSO_ECN,
            F_NEEDS_CSUM,
            1368,
            (40, 16),
            &tcp_packet(&payload, 0xffff_f000, flags, 12),
        );
        let mut segments: Vec<Vec<u8>> = Vec::new();
        let count = packets_of(&mut read, &mut Vec::new(), |p| segments.push(p.to_vec())).unwrap();
        assert_eq!(count, 8, "10,000 bytes in segments of 1368");
        assert_eq!(segments.len(), 8);
        let mut joined = Vec::new();
        for (i, s) in segments.iter().enumerate() {
            assert!(checksums_verify(s), "segment {i}: a checksum does not verify");
            assert_eq!(
                usize::from(u16::from_be_bytes([s[2], s[3]])),
                s.len(),
                "segment {i}: IP total length"
            );
            assert_eq!(
                u16::from_be_bytes([s[4], s[5]]),
                0xfff0u16.wrapping_add(i as u16),
                "segment {i}: IP id"
            );
            let seq = u32::from_be_bytes(s[24..28].try_into().unwrap());
            assert_eq!(seq, 0xffff_f000u32.wrapping_add(i as u32 * 1368), "segment {i}: sequence number");
            let last = i == segments.len() - 1;
            assert_eq!(s[33] & (TCP_FIN | TCP_PSH) != 0, last, "segment {i}: FIN/PSH only on the last");
            assert_eq!(s[33] & TCP_CWR != 0, i == 0, "segment {i}: CWR only on the first");
            assert_eq!(s[33] & 0x10, 0x10, "segment {i}: ACK kept");
            let original = &read[VNET_HDR_LEN..];
            assert_eq!(&s[20..24], &original[20..24], "segment {i}: ports kept");
            assert_eq!(&s[28..32], &original[28..32], "segment {i}: acknowledgment number kept");
            assert_eq!(&s[34..36], &original[34..36], "segment {i}: window kept");
            assert_eq!(&s[40..52], &[1; 12], "segment {i}: TCP options kept");
            assert!(s.len() - 52 <= 1368);
            joined.extend_from_slice(&s[52..]);
        }
        assert_eq!(joined, payload, "the payload, in order, once");
    }

    #[test]
    fn a_packet_with_a_partial_checksum_is_completed() {
        let mut packet = tcp_packet(b"hello, peer", 1, 0x18, 0);
        // The kernel's partial: the pseudo-header's sum, in the checksum field.
        let tcp_len = (packet.len() - 20) as u64;
        let pseudo = fold(sum_bytes(&SRC, 0) + sum_bytes(&DST, 0) + u64::from(IPPROTO_TCP) + tcp_len);
        packet[36..38].copy_from_slice(&pseudo.to_be_bytes());
        let mut read = with_header(GSO_NONE, F_NEEDS_CSUM, 0, (20, 16), &packet);
        let mut out = Vec::new();
        assert_eq!(packets_of(&mut read, &mut Vec::new(), |p| out.push(p.to_vec())), Ok(1));
        assert!(checksums_verify(&out[0]));
        assert_eq!(&out[0][40..], b"hello, peer");
    }

    #[test]
    fn a_plain_packet_passes_unchanged() {
        let packet = tcp_packet(b"x", 1, 0x10, 0);
        let mut read = with_header(GSO_NONE, 0, 0, (0, 0), &packet);
        let mut out = Vec::new();
        assert_eq!(packets_of(&mut read, &mut Vec::new(), |p| out.push(p.to_vec())), Ok(1));
        assert_eq!(out, vec![packet]);
    }

    #[test]
    fn malformed_reads_are_refused_and_deliver_nothing() {
        let mut delivered = 0;
        let mut count = |read: &mut Vec<u8>| packets_of(read, &mut Vec::new(), |_| delivered += 1);
        assert_eq!(count(&mut vec![0; 5]), Err(OffloadError::NoHeader(5)));
        let tcp = tcp_packet(&[0; 3000], 1, 0x10, 0);
        assert_eq!(count(&mut with_header(4, 0, 1000, (0, 0), &tcp)), Err(OffloadError::GsoType(4)));
        assert!(matches!(
            count(&mut with_header(GSO_TCPV4, 0, 0, (0, 0), &tcp)),
            Err(OffloadError::Malformed(_))
        ));
        assert!(matches!(
            count(&mut with_header(GSO_TCPV4, 0, 1000, (0, 0), &tcp[..30])),
            Err(OffloadError::Malformed(_))
        ));
        let mut udp = tcp.clone();
        udp[9] = IPPROTO_UDP;
        assert!(matches!(
            count(&mut with_header(GSO_TCPV4, 0, 1000, (0, 0), &udp)),
            Err(OffloadError::Malformed(_))
        ));
        assert!(matches!(
            count(&mut with_header(GSO_NONE, F_NEEDS_CSUM, 0, (3030, 16), &tcp)),
            Err(OffloadError::ChecksumOutside { .. })
        ));
        assert_eq!(delivered, 0);
    }

    /// The segments a super-segment of `len` payload bytes becomes, as `packets_of` makes
    /// them (valid checksums, ids counting up).
    fn segments_of(len: usize, seq: u32, flags: u8, mss: u16) -> Vec<Vec<u8>> {
        let payload: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        let mut read =
            with_header(GSO_TCPV4, F_NEEDS_CSUM, mss, (20, 16), &tcp_packet(&payload, seq, flags, 12));
        let mut out = Vec::new();
        packets_of(&mut read, &mut Vec::new(), |p| out.push(p.to_vec())).unwrap();
        out
    }

    fn coalesce(packets: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut coalescer = Coalescer::default();
        let mut writes = Vec::new();
        let mut record = |w: &[u8]| {
            writes.push(w.to_vec());
            Ok::<_, ()>(())
        };
        for p in packets {
            coalescer.push(p, &mut record).unwrap();
        }
        coalescer.flush(&mut record).unwrap();
        writes
    }

    #[test]
    fn a_burst_of_one_flow_is_written_as_one_super_segment_that_splits_back_into_it() {
        let segments = segments_of(20_000, 7, TCP_ACK | TCP_PSH, 1368);
        assert_eq!(segments.len(), 15);
        let mut writes = coalesce(&segments);
        assert_eq!(writes.len(), 1, "one write for the burst");
        let hdr = VnetHdr::parse(&writes[0]);
        assert_eq!(
            hdr,
            VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: GSO_TCPV4,
                gso_size: 1368,
                csum_start: 20,
                csum_offset: 16
            }
        );
        assert_eq!(writes[0].len(), VNET_HDR_LEN + 20 + 32 + 20_000);
        let packet = &writes[0][VNET_HDR_LEN..];
        assert_eq!(fold(sum_bytes(&packet[..20], 0)), 0xffff, "IP header checksum");
        assert_eq!(usize::from(u16::from_be_bytes([packet[2], packet[3]])), packet.len());
        let pseudo = fold(
            sum_bytes(&SRC, 0) + sum_bytes(&DST, 0) + u64::from(IPPROTO_TCP) + (packet.len() - 20) as u64,
        );
        assert_eq!(packet[36..38], pseudo.to_be_bytes(), "TCP checksum field: the pseudo-header's sum");
        let mut again = Vec::new();
        packets_of(&mut writes[0], &mut Vec::new(), |p| again.push(p.to_vec())).unwrap();
        assert_eq!(again, segments, "splitting the write gives back the segments");
    }

    #[test]
    fn only_what_may_join_is_joined() {
        let a = segments_of(5 * 1000, 100, TCP_ACK, 1000);
        let later = segments_of(3 * 1000, 100 + 5000 + 1000, TCP_ACK, 1000); // a gap of 1000
        let mut other_flow = segments_of(2 * 1000, 100, TCP_ACK, 1000);
        for s in &mut other_flow {
            s[20..22].copy_from_slice(&5202u16.to_be_bytes());
        }
        let pushed = segments_of(4 * 1000, 9000, TCP_ACK | TCP_PSH, 1000); // PSH on the last only
        let short_then_more = segments_of(2 * 1000 + 500, 20_000, TCP_ACK, 1000);
        let udp = {
            let mut u = tcp_packet(b"dns?", 0, 0, 0);
            u[9] = IPPROTO_UDP;
            u
        };
        let mut packets: Vec<Vec<u8>> = Vec::new();
        packets.extend(a.iter().cloned()); // 5 join
        packets.extend(later.iter().cloned()); // 3 join, apart from `a`
        packets.push(other_flow[0].clone()); // another flow: alone between
        packets.push(udp.clone()); // not TCP: alone
        packets.push(other_flow[1].clone()); // does not rejoin across the UDP packet
        packets.extend(pushed.iter().cloned()); // 4 join, the last with PSH
        packets.extend(short_then_more.iter().cloned()); // 2 full + 1 short join
        packets.push(segments_of(1000, 20_000 + 2500, TCP_ACK, 1000)[0].clone()); // after a short one: alone
        let writes = coalesce(&packets);
        let sizes: Vec<usize> = writes
            .iter()
            .map(|w| if w[1] == GSO_TCPV4 { (w.len() - VNET_HDR_LEN - 52) / 1000 } else { 1 })
            .collect();
        assert_eq!(sizes, vec![5, 3, 1, 1, 1, 4, 2, 1]);
        assert_eq!(writes[3], [&WRITE_HDR[..], &udp].concat(), "the UDP packet as it was, marked verified");
        assert_eq!(writes[2], [&WRITE_HDR[..], &other_flow[0]].concat());
        let pushed_write = &writes[5][VNET_HDR_LEN..];
        assert_eq!(pushed_write[33], TCP_ACK | TCP_PSH, "PSH of the last segment kept");
        let short_write = &writes[6];
        assert_eq!(short_write.len(), VNET_HDR_LEN + 52 + 2500, "two full segments and the short one");
    }
}
