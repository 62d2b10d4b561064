//! The data plane's one UDP socket, read and written in batches where the platform can.
//!
//! On Linux ([`linux`]) one `recvmmsg` reads many datagrams, UDP GRO lets the kernel hand
//! over a run of same-sized datagrams from one sender as one buffer, and runs of datagrams
//! to one destination leave in one `sendmsg` with UDP GSO: the per-datagram cost of a
//! syscall and of a pass through the IP stack (and every netfilter hook on the way) is
//! paid once per batch; the socket is non-blocking and polled by the data plane's own
//! thread. Elsewhere ([`portable`]) it is one `recv_from`/`send_to` per datagram on a
//! tokio socket. Both offer [`Udp::try_recv_batch`] and `send_batch` (async in
//! `portable`), and `portable` adds `readable` for its tokio loop.

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

/// Test datagrams for two receivers: `count` of them, numbered, full-size but every
/// `short_every`-th (300 bytes), every `switch_every`-th to the second receiver. Returns
/// the batch and what each receiver should get, in order.
#[cfg(test)]
fn test_batch(
    count: u32,
    switch_every: u32,
    short_every: u32,
    dsts: &[std::net::SocketAddr],
) -> (Vec<crate::engine::Transmit>, [Vec<Vec<u8>>; 2]) {
    let mut batch = Vec::new();
    let mut expected = [Vec::new(), Vec::new()];
    for i in 0..count {
        let to = usize::from(i % switch_every == switch_every - 1);
        let len = if i % short_every == short_every - 1 { 300 } else { 1452 };
        let mut payload = vec![(i % 251) as u8; len];
        payload[..4].copy_from_slice(&i.to_be_bytes());
        expected[to].push(payload.clone());
        batch.push(crate::engine::Transmit { dst: dsts[to], payload });
    }
    (batch, expected)
}
