//! The Internet checksum (RFC 1071): the engine's ICMP echoes, and on Linux the TUN
//! offloads' IP, TCP and UDP checksums.

/// The checksum of `data`, ready to store; 0 when `data` includes a correct checksum.
pub(crate) fn checksum(data: &[u8]) -> u16 {
    !fold(sum_bytes(data, 0))
}

/// Sets an IPv4 header's checksum (bytes 10 and 11) for the header as it is now.
pub(crate) fn set_ipv4_header_checksum(header: &mut [u8]) {
    header[10..12].fill(0);
    let sum = checksum(header);
    header[10..12].copy_from_slice(&sum.to_be_bytes());
}

/// The not yet folded sum of the pseudo-header a TCP or UDP checksum over IPv4 covers:
/// the addresses (bytes 12 to 19 of `ip_header`), the protocol and the transport length.
/// Only the TUN offloads need it, and they are Linux's.
#[cfg(target_os = "linux")]
pub(crate) fn ipv4_pseudo_header_sum(ip_header: &[u8], protocol: u8, transport_len: usize) -> u64 {
    sum_bytes(&ip_header[12..20], u64::from(protocol) + transport_len as u64)
}

/// The one's-complement sum of `bytes` as big-endian 16-bit words (an odd last byte
/// padded with zero), added to `initial`, not yet folded.
pub(crate) fn sum_bytes(bytes: &[u8], initial: u64) -> u64 {
    let mut sum = initial;
    let mut words = bytes.chunks_exact(4);
    for w in &mut words {
        sum += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    let mut pairs = rest.chunks_exact(2);
    for p in &mut pairs {
        sum += u64::from(u16::from_be_bytes([p[0], p[1]]));
    }
    if let [last] = pairs.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

/// Folds a wide one's-complement sum into 16 bits.
pub(crate) fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sum_matches_a_word_by_word_sum_at_every_length() {
        let bytes: Vec<u8> = (0..301u32).map(|i| (i * 31 % 256) as u8).collect();
        for len in 0..bytes.len() {
            let slow = bytes[..len]
                .chunks(2)
                .map(|w| u64::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
                .sum::<u64>();
            assert_eq!(fold(sum_bytes(&bytes[..len], 0)), fold(slow), "length {len}");
        }
    }

    #[test]
    fn a_correct_checksum_checks_to_zero() {
        let mut header = [0x45, 0, 0, 28, 0, 1, 0, 0, 64, 1, 0, 0, 100, 64, 0, 1, 100, 64, 0, 2];
        let sum = checksum(&header);
        header[10..12].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(checksum(&header), 0);
        header[15] ^= 1;
        assert_ne!(checksum(&header), 0, "a flipped bit shows");
    }
}
