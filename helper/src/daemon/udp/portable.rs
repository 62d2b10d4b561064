//! One `recv_from`/`send_to` per datagram: the path for platforms without the Linux
//! batching (see `linux.rs`).

use std::io;
use std::net::SocketAddr;

use tokio::net::UdpSocket;

use super::MAX_DATAGRAM;
use crate::engine::Transmit;

#[derive(Debug)]
pub struct Udp {
    socket: UdpSocket,
    buf: Vec<u8>,
}

impl Udp {
    pub fn new(socket: UdpSocket) -> io::Result<Self> {
        Ok(Self { socket, buf: vec![0; MAX_DATAGRAM] })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Waits until a datagram may be waiting (it can be a false alarm).
    pub async fn readable(&self) -> io::Result<()> {
        self.socket.readable().await
    }

    /// Reads one datagram if one is waiting, without waiting; returns how many were read.
    pub fn try_recv_batch(&mut self, mut each: impl FnMut(SocketAddr, &[u8])) -> io::Result<usize> {
        match self.socket.try_recv_from(&mut self.buf) {
            Ok((n, from)) => {
                each(from, &self.buf[..n]);
                Ok(1)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Sends the datagrams in order; a failed one is logged and dropped.
    pub async fn send_batch(&mut self, transmits: &[Transmit]) {
        for t in transmits {
            if let Err(e) = self.socket.send_to(&t.payload, t.dst).await {
                tracing::debug!(dst = %t.dst, error = %e, "UDP send failed");
            }
        }
    }
}
