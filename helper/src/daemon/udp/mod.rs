//! The data plane's one UDP socket, read and written in batches where the platform can.
//!
//! On Linux ([`linux`]) one `recvmmsg` reads many datagrams, UDP GRO lets the kernel hand
//! over a run of same-sized datagrams from one sender as one buffer, and runs of datagrams
//! to one destination leave in one `sendmsg` with UDP GSO: the per-datagram cost of a
//! syscall and of a pass through the IP stack (and every netfilter hook on the way) is
//! paid once per batch. Elsewhere ([`portable`]) it is one `recv_from`/`send_to` per
//! datagram, as before. Both offer the same three calls: [`Udp::readable`],
//! [`Udp::try_recv_batch`], [`Udp::send_batch`].

#[cfg(target_os = "linux")]
mod linux;
#[cfg(not(target_os = "linux"))]
mod portable;

#[cfg(target_os = "linux")]
pub use linux::Udp;
#[cfg(not(target_os = "linux"))]
pub use portable::Udp;

/// Largest datagram sent or received (the UDP payload maximum, rounded up).
pub const MAX_DATAGRAM: usize = 65_536;

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};

    use super::*;
    use crate::engine::Transmit;

    /// Many datagrams out in one batch (runs of one size to one destination, then a
    /// shorter one, then another destination) arrive intact and in order: whatever the
    /// platform coalesces on the way, the receiver sees the same datagrams as without.
    #[tokio::test]
    async fn a_batch_arrives_as_the_same_datagrams_in_order() {
        let bind = |port| tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, port));
        let mut sender = Udp::new(bind(0).await.unwrap()).unwrap();
        let receivers = [bind(0).await.unwrap(), bind(0).await.unwrap()];
        let dsts: Vec<SocketAddr> = receivers.iter().map(|r| r.local_addr().unwrap()).collect();
        let mut receivers = receivers.map(|r| Udp::new(r).unwrap());
        let mut batch = Vec::new();
        let mut expected = [Vec::new(), Vec::new()];
        for i in 0..100u32 {
            let to = usize::from(i % 40 == 39);
            let len = if i % 17 == 16 { 300 } else { 1452 };
            let mut payload = vec![(i % 251) as u8; len];
            payload[..4].copy_from_slice(&i.to_be_bytes());
            expected[to].push(payload.clone());
            batch.push(Transmit { dst: dsts[to], payload });
        }
        sender.send_batch(&batch).await;
        for (r, want) in receivers.iter_mut().zip(expected) {
            let mut got: Vec<Vec<u8>> = Vec::new();
            while got.len() < want.len() {
                r.readable().await.unwrap();
                r.try_recv_batch(|from, d| {
                    assert_eq!(from, sender.local_addr().unwrap());
                    got.push(d.to_vec());
                })
                .unwrap();
            }
            assert_eq!(got, want);
        }
    }
}
