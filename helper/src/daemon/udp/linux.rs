//! Batched UDP on Linux through `quinn-udp`: `recvmmsg` with UDP GRO on receive, UDP GSO
//! (`UDP_SEGMENT`) on send. `quinn-udp` wraps the `unsafe` socket calls the workspace
//! denies, and turns GSO off by itself if the kernel or a driver refuses it.
//!
//! Side effects of `quinn-udp`'s socket setup: `IP_PKTINFO`, `IP_RECVTOS` and
//! `SO_TIMESTAMPNS` only add control messages on receive. It also forbids fragmentation
//! (`IP_MTU_DISCOVER = IP_PMTUDISC_PROBE`), which [`allow_fragmentation`] undoes: a
//! full-size datagram (1480 bytes with IP and UDP) must still cross a narrower path (a
//! cloud network's 1460, another VPN) fragmented, as before and as WireGuard's do.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;

use std::net::UdpSocket;

use quinn_udp::{RecvMeta, UdpSockRef, UdpSocketState};

use super::MAX_DATAGRAM;
use crate::engine::Transmit;

/// Buffers per `recvmmsg`. Each holds one datagram, or with GRO up to 64 KiB of
/// same-sized datagrams from one sender (about 44 full-size WireGuard datagrams), so a
/// few already cover a burst; `quinn-udp` reads at most its own `BATCH_SIZE` anyway.
const RECV_BUFFERS: usize = 8;
/// Largest GSO batch in bytes: the UDP length field caps one send at 64 KiB minus headers.
const MAX_GSO_BYTES: usize = 65_000;

pub struct Udp {
    socket: UdpSocket,
    state: UdpSocketState,
    /// `RECV_BUFFERS` buffers of `MAX_DATAGRAM` bytes, one after the other.
    recv: Vec<u8>,
    meta: [RecvMeta; RECV_BUFFERS],
    /// A GSO batch being assembled: equal-sized datagrams back to back.
    send: Vec<u8>,
}

impl std::fmt::Debug for Udp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Udp")
            .field("socket", &self.socket)
            .field("gso_segments", &self.state.max_gso_segments())
            .field("gro_segments", &self.state.gro_segments())
            .finish_non_exhaustive()
    }
}

impl Udp {
    /// Takes over `socket` and makes it non-blocking: the data plane's thread polls it
    /// (see `daemon::dataplane::linux`).
    pub fn new(socket: UdpSocket) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
        allow_fragmentation(&socket)?;
        tracing::debug!(
            gso_segments = state.max_gso_segments(),
            gro_segments = state.gro_segments(),
            "batched UDP"
        );
        Ok(Self {
            socket,
            state,
            // Zeroed by the allocator's fresh pages: only what datagrams touch becomes resident.
            recv: vec![0; RECV_BUFFERS * MAX_DATAGRAM],
            meta: [RecvMeta::default(); RECV_BUFFERS],
            send: Vec::with_capacity(MAX_DATAGRAM),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Reads what is waiting, up to one `recvmmsg`, without waiting, and calls `each` for
    /// every datagram in arrival order (a GRO buffer is split at its stride). Returns
    /// how many datagrams were read.
    pub fn try_recv_batch(&mut self, mut each: impl FnMut(SocketAddr, &[u8])) -> io::Result<usize> {
        let Self { socket, state, recv, meta, .. } = self;
        let mut chunks = recv.chunks_mut(MAX_DATAGRAM);
        let mut bufs: [IoSliceMut<'_>; RECV_BUFFERS] =
            std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
        let received = match state.recv(UdpSockRef::from(&*socket), &mut bufs, meta) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut datagrams = 0;
        for (m, buf) in meta.iter().zip(bufs.iter()).take(received) {
            let stride = if m.stride == 0 { m.len.max(1) } else { m.stride };
            for datagram in buf[..m.len].chunks(stride) {
                datagrams += 1;
                each(m.addr, datagram);
            }
        }
        Ok(datagrams)
    }

    /// Sends the datagrams in order: each run of equal-sized datagrams to one destination
    /// (the last of a run may be shorter) leaves in one GSO send. A failed send is logged
    /// and its datagrams dropped, like a lost packet. A full send buffer makes it wait for
    /// room, as a blocking socket would, rather than drop what does not fit.
    pub fn send_batch(&mut self, transmits: &[Transmit]) {
        let max_segments = self.state.max_gso_segments().max(1);
        let mut rest = transmits;
        while let Some(first) = rest.first() {
            let size = first.payload.len();
            let mut count = 1;
            // An empty datagram (never sent by the engine) goes alone.
            if let Some(fit) = MAX_GSO_BYTES.checked_div(size) {
                let fit = fit.clamp(1, max_segments);
                while count < rest.len().min(fit) {
                    let next = &rest[count];
                    if next.dst != first.dst || next.payload.len() > size || next.payload.is_empty() {
                        break;
                    }
                    count += 1;
                    if next.payload.len() < size {
                        break; // only the last segment may be shorter
                    }
                }
            }
            let (run, after) = rest.split_at(count);
            rest = after;
            let contents: &[u8] = if count == 1 {
                &first.payload
            } else {
                self.send.clear();
                for t in run {
                    self.send.extend_from_slice(&t.payload);
                }
                &self.send
            };
            let transmit = quinn_udp::Transmit {
                destination: first.dst,
                ecn: None,
                contents,
                segment_size: (count > 1).then_some(size),
                src_ip: None,
            };
            let sent = self.send_waiting(&transmit);
            match sent {
                Ok(()) => {}
                // A GSO send the kernel or a driver refuses (a segment wider than the
                // device's MTU: EINVAL; EIO) makes quinn-udp turn GSO off for good: the
                // run goes again one datagram at a time instead of being lost.
                Err(e) if count > 1 => {
                    tracing::debug!(dst = %first.dst, datagrams = count, error = %e, "GSO send failed; sending one by one");
                    for t in run {
                        let single = quinn_udp::Transmit {
                            destination: t.dst,
                            ecn: None,
                            contents: &t.payload,
                            segment_size: None,
                            src_ip: None,
                        };
                        if let Err(e) = self.send_waiting(&single) {
                            tracing::debug!(dst = %t.dst, error = %e, "UDP send failed");
                        }
                    }
                }
                Err(e) => tracing::debug!(dst = %first.dst, error = %e, "UDP send failed"),
            }
        }
    }
    /// One `sendmsg`; when the send buffer is full, the same call again on the socket
    /// made blocking for it. Waiting in the kernel needs no second registration with the
    /// data plane's poll, and the buffer drains onto the wire within microseconds.
    fn send_waiting(&self, transmit: &quinn_udp::Transmit<'_>) -> io::Result<()> {
        let send = || self.state.try_send(UdpSockRef::from(&self.socket), transmit);
        match send() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.socket.set_nonblocking(false)?;
                let sent = send();
                self.socket.set_nonblocking(true)?;
                sent
            }
            sent => sent,
        }
    }
}

impl std::os::fd::AsRawFd for Udp {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.socket.as_raw_fd()
    }
}

/// Back to the kernel's default for the socket's datagrams, `IP_PMTUDISC_WANT`: fragment
/// what is wider than the path instead of dropping it (see the module comment). Neither
/// std, tokio, socket2 nor nix offers this option, hence the one `setsockopt` call.
#[allow(unsafe_code)]
fn allow_fragmentation(socket: &UdpSocket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let value: libc::c_int = libc::IP_PMTUDISC_WANT;
    // SAFETY: the descriptor belongs to `socket`, which is open for the whole call; the
    // value is a c_int that outlives the call, and its exact size is passed with it.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    use mio::unix::SourceFd;
    use mio::{Events, Poll, Token};

    use super::*;

    /// Many datagrams out in one batch (runs of one size to one destination, then a
    /// shorter one, then another destination) arrive intact and in order: whatever the
    /// kernel coalesces on the way (GSO, GRO), the receiver sees the same datagrams.
    #[test]
    fn a_batch_arrives_as_the_same_datagrams_in_order() {
        let bind = || Udp::new(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap()).unwrap();
        let mut sender = bind();
        let mut receivers = [bind(), bind()];
        let dsts: Vec<SocketAddr> = receivers.iter().map(|r| r.local_addr().unwrap()).collect();
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
        sender.send_batch(&batch);
        let mut poll = Poll::new().unwrap();
        let mut events = Events::with_capacity(4);
        for (i, (r, want)) in receivers.iter_mut().zip(expected).enumerate() {
            poll.registry()
                .register(&mut SourceFd(&r.as_raw_fd()), Token(i), mio::Interest::READABLE)
                .unwrap();
            let mut got: Vec<Vec<u8>> = Vec::new();
            while got.len() < want.len() {
                let read = r
                    .try_recv_batch(|from, d| {
                        assert_eq!(from, sender.local_addr().unwrap());
                        got.push(d.to_vec());
                    })
                    .unwrap();
                if read == 0 {
                    // Edge-triggered: waited on only once a read found nothing.
                    poll.poll(&mut events, Some(Duration::from_secs(10))).unwrap();
                    assert!(
                        !events.is_empty(),
                        "receiver {i}: {} of {} datagrams after 10 s",
                        got.len(),
                        want.len()
                    );
                }
            }
            assert_eq!(got, want);
        }
    }

    /// What `IP_MTU_DISCOVER` the socket has now.
    #[allow(unsafe_code)]
    fn mtu_discover(socket: &UdpSocket) -> libc::c_int {
        use std::os::fd::AsRawFd;
        let mut value: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: an open descriptor, and a c_int with its size to write into.
        let result = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                std::ptr::from_mut(&mut value).cast(),
                &mut len,
            )
        };
        assert_eq!(result, 0, "getsockopt: {}", io::Error::last_os_error());
        value
    }

    #[test]
    fn datagrams_may_be_fragmented_on_a_narrow_path() {
        let socket = UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0)).unwrap();
        let udp = Udp::new(socket).unwrap();
        assert_eq!(
            mtu_discover(&udp.socket),
            libc::IP_PMTUDISC_WANT,
            "quinn-udp's Don't Fragment is still set"
        );
    }
}
