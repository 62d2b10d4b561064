//! Batched UDP on Linux through `quinn-udp`: `recvmmsg` with UDP GRO on receive, UDP GSO
//! (`UDP_SEGMENT`) on send. `quinn-udp` wraps the `unsafe` socket calls the workspace
//! denies, and turns GSO off by itself if the kernel or a driver refuses it.
//!
//! Side effects of `quinn-udp`'s socket setup, none of which changes what is sent:
//! `IP_PKTINFO`, `IP_RECVTOS` and `SO_TIMESTAMPNS` only add control messages on receive;
//! `IP_MTU_DISCOVER = IP_PMTUDISC_PROBE` sets Don't Fragment. Trellis's largest datagram
//! is 1484 bytes with IP and UDP (1420-byte overlay MTU + 32 WireGuard + 4 ChannelData +
//! 28), which fits a 1500-byte path unfragmented; a path narrower than that now drops it
//! where it used to be fragmented.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;

use quinn_udp::{RecvMeta, UdpSockRef, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;

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
    pub fn new(socket: UdpSocket) -> io::Result<Self> {
        let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
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

    /// Waits until datagrams may be waiting (it can be a false alarm).
    pub async fn readable(&self) -> io::Result<()> {
        self.socket.readable().await
    }

    /// Reads what is waiting, up to one `recvmmsg`, without waiting, and calls `each` for
    /// every datagram in arrival order (a GRO buffer is split at its stride). Returns
    /// how many datagrams were read.
    pub fn try_recv_batch(&mut self, mut each: impl FnMut(SocketAddr, &[u8])) -> io::Result<usize> {
        let Self { socket, state, recv, meta, .. } = self;
        let mut chunks = recv.chunks_mut(MAX_DATAGRAM);
        let mut bufs: [IoSliceMut<'_>; RECV_BUFFERS] =
            std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
        let received = match socket
            .try_io(Interest::READABLE, || state.recv(UdpSockRef::from(&*socket), &mut bufs, meta))
        {
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
    /// and its datagrams dropped, like a lost packet.
    pub async fn send_batch(&mut self, transmits: &[Transmit]) {
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
            let (socket, state) = (&self.socket, &self.state);
            let sent = socket
                .async_io(Interest::WRITABLE, || state.try_send(UdpSockRef::from(socket), &transmit))
                .await;
            if let Err(e) = sent {
                tracing::debug!(dst = %first.dst, datagrams = count, error = %e, "UDP send failed");
            }
        }
    }
}
