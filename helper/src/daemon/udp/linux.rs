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
/// Longest a send waits for room in a full send buffer before its datagrams are dropped.
const SEND_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

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
        socket.set_write_timeout(Some(SEND_WAIT))?;
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
    /// every datagram in arrival order (a GRO buffer is split at its stride). Returns how
    /// many messages were read: 0 only when nothing was waiting. (An empty datagram counts
    /// as read but reaches `each` as nothing, so it cannot pass for an empty socket.)
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
        for (m, buf) in meta.iter().zip(bufs.iter()).take(received) {
            let stride = if m.stride == 0 { m.len.max(1) } else { m.stride };
            for datagram in buf[..m.len].chunks(stride) {
                each(m.addr, datagram);
            }
        }
        Ok(received)
    }

    /// Sends the datagrams in order: each run of equal-sized datagrams to one destination
    /// (the last of a run may be shorter) leaves in one GSO send. A failed send is logged
    /// and its datagrams dropped, like a lost packet. A full send buffer makes it wait for
    /// room, at most [`SEND_WAIT`], rather than drop what does not fit at once.
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

    /// One `sendmsg`; when the send buffer is full, the same call again on the socket made
    /// blocking for it, which the kernel gives up after [`SEND_WAIT`] (`SO_SNDTIMEO`, set
    /// in [`Udp::new`]): the buffer normally drains within microseconds, and a stalled
    /// queue must not stall the data plane. Waiting in the kernel needs no second
    /// registration with the data plane's poll.
    fn send_waiting(&self, transmit: &quinn_udp::Transmit<'_>) -> io::Result<()> {
        let send = || self.state.try_send(UdpSockRef::from(&self.socket), transmit);
        match send() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.socket.set_nonblocking(false)?;
                let sent = send();
                // Back to non-blocking whatever the send did: a blocking socket would make
                // the next `recvmmsg` wait for a full batch.
                if let Err(e) = self.socket.set_nonblocking(true) {
                    tracing::error!(error = %e, "cannot make the UDP socket non-blocking again");
                }
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
        let (batch, expected) = super::super::test_batch(100, 40, 17, &dsts);
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

    /// Empty datagrams (a port scan sends them) read as something: a batch of only empty
    /// ones must not look like an empty socket, or the data plane would stop reading the
    /// real datagrams behind them until another one arrives.
    #[test]
    fn empty_datagrams_do_not_read_as_nothing_waiting() {
        let mut receiver = Udp::new(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap()).unwrap();
        let sender = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let to = receiver.local_addr().unwrap();
        for _ in 0..RECV_BUFFERS + 1 {
            sender.send_to(&[], to).unwrap();
        }
        sender.send_to(b"real", to).unwrap();
        // Loopback queues a datagram before `send_to` returns: all are waiting now.
        let mut got: Vec<Vec<u8>> = Vec::new();
        let first = receiver.try_recv_batch(|_, d| got.push(d.to_vec())).unwrap();
        assert_eq!(first, RECV_BUFFERS, "a batch of empty datagrams counts as read");
        assert!(got.is_empty(), "empty datagrams reach nobody");
        let second = receiver.try_recv_batch(|_, d| got.push(d.to_vec())).unwrap();
        assert_eq!(second, 2);
        assert_eq!(got, vec![b"real".to_vec()]);
        assert_eq!(receiver.try_recv_batch(|_, _| {}).unwrap(), 0, "now the socket is empty");
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
