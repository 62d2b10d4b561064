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

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};

    use super::*;

    /// A batch arrives intact and in order (the Linux twin of this test, in `linux.rs`,
    /// also crosses GSO and GRO). Small enough to fit a receive buffer, since one datagram
    /// per call gives the receiver no chance to read before the batch is out.
    #[tokio::test]
    async fn a_batch_arrives_as_the_same_datagrams_in_order() {
        let bind = |port| tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, port));
        let mut sender = Udp::new(bind(0).await.unwrap()).unwrap();
        let receivers = [bind(0).await.unwrap(), bind(0).await.unwrap()];
        let dsts: Vec<SocketAddr> = receivers.iter().map(|r| r.local_addr().unwrap()).collect();
        let mut receivers = receivers.map(|r| Udp::new(r).unwrap());
        let (batch, expected) = super::super::test_batch(20, 8, 5, &dsts);
        sender.send_batch(&batch).await;
        for (r, want) in receivers.iter_mut().zip(expected) {
            let mut got: Vec<Vec<u8>> = Vec::new();
            let receive = async {
                while got.len() < want.len() {
                    r.readable().await.unwrap();
                    r.try_recv_batch(|from, d| {
                        assert_eq!(from, sender.local_addr().unwrap());
                        got.push(d.to_vec());
                    })
                    .unwrap();
                }
            };
            let arrived = tokio::time::timeout(std::time::Duration::from_secs(10), receive).await;
            assert!(arrived.is_ok(), "{} of {} datagrams after 10 s", got.len(), want.len());
            assert_eq!(got, want);
        }
    }
}
