//! A bulk transfer for the end-to-end tests, run inside the namespaces:
//!
//! * `e2e-transfer receive PORT`: accepts one TCP connection on 0.0.0.0:PORT, reads it to
//!   the end and prints `BYTES SHA256`;
//! * `e2e-transfer send IP:PORT BYTES`: sends BYTES pseudo-random bytes and prints
//!   `BYTES SHA256` of what it sent.
//!
//! The two lines must match: every byte arrived, in order, unaltered.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use sha2::{Digest, Sha256};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["receive", port] => {
            let listener = TcpListener::bind(("0.0.0.0", port.parse::<u16>()?))?;
            println!("listening");
            let (mut stream, _) = listener.accept()?;
            let (mut total, mut hash, mut buf) = (0u64, Sha256::new(), vec![0u8; 64 * 1024]);
            loop {
                let n = stream.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                total += n as u64;
                hash.update(&buf[..n]);
            }
            println!("{total} {:x}", hash.finalize());
        }
        ["send", addr, bytes] => {
            let bytes: u64 = bytes.parse()?;
            let mut stream = TcpStream::connect(addr)?;
            let (mut sent, mut hash, mut state) = (0u64, Sha256::new(), 0x9E37_79B9_7F4A_7C15u64);
            let mut buf = vec![0u8; 64 * 1024];
            while sent < bytes {
                let n = (bytes - sent).min(buf.len() as u64) as usize;
                for chunk in buf[..n].chunks_mut(8) {
                    // xorshift64: cheap bytes that compress badly, so nothing is flattered.
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
                }
                stream.write_all(&buf[..n])?;
                hash.update(&buf[..n]);
                sent += n as u64;
            }
            stream.shutdown(std::net::Shutdown::Write)?;
            println!("{sent} {:x}", hash.finalize());
        }
        _ => anyhow::bail!("usage: e2e-transfer receive PORT | e2e-transfer send IP:PORT BYTES"),
    }
    Ok(())
}
