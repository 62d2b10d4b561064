//! Line framing for the IPC: one JSON message per `\n`-terminated line.
//!
//! Unlike `tokio_util`'s `LinesCodec`, an over-long line is not an error that ends the
//! stream: it is skipped up to its newline and reported as [`Frame::TooLong`], so the
//! other side can be told and the connection stays usable.

use std::io;

use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_util::bytes::BytesMut;
use tokio_util::codec::Decoder;

#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// One line, without its `\n` (or `\r\n`).
    Line(BytesMut),
    /// A line longer than the limit, skipped; `len` is its length in bytes.
    TooLong { len: usize },
}

#[derive(Debug)]
pub struct LineCodec {
    max_len: usize,
    /// Bytes of an over-long line skipped so far, while looking for its end.
    discarding: Option<usize>,
    /// Where to resume looking for `\n` in the buffer.
    scanned: usize,
}

impl LineCodec {
    pub fn new(max_len: usize) -> Self {
        Self { max_len, discarding: None, scanned: 0 }
    }
}

impl Decoder for LineCodec {
    type Item = Frame;
    type Error = io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Option<Frame>> {
        let newline = buf[self.scanned..].iter().position(|b| *b == b'\n').map(|i| i + self.scanned);
        if let Some(skipped) = self.discarding {
            return Ok(match newline {
                Some(end) => {
                    let _ = buf.split_to(end + 1);
                    self.discarding = None;
                    self.scanned = 0;
                    Some(Frame::TooLong { len: skipped + end })
                }
                None => {
                    self.discarding = Some(skipped + buf.len());
                    buf.clear();
                    None
                }
            });
        }
        match newline {
            Some(end) if end > self.max_len => {
                let _ = buf.split_to(end + 1);
                self.scanned = 0;
                Ok(Some(Frame::TooLong { len: end }))
            }
            Some(end) => {
                let mut line = buf.split_to(end + 1);
                line.truncate(end);
                if line.last() == Some(&b'\r') {
                    line.truncate(end - 1);
                }
                self.scanned = 0;
                Ok(Some(Frame::Line(line)))
            }
            None if buf.len() > self.max_len => {
                self.discarding = Some(buf.len());
                buf.clear();
                self.scanned = 0;
                Ok(None)
            }
            None => {
                self.scanned = buf.len();
                Ok(None)
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> io::Result<Option<Frame>> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        self.scanned = 0;
        if let Some(skipped) = self.discarding.take() {
            return Ok(Some(Frame::TooLong { len: skipped }));
        }
        if buf.is_empty() {
            Ok(None)
        } else {
            // A last line without its newline still counts.
            Ok(Some(Frame::Line(buf.split())))
        }
    }
}

/// Serializes `message` as one line.
pub fn encode_line<T: Serialize>(message: &T) -> Vec<u8> {
    let mut line = serde_json::to_vec(message).expect("IPC messages always serialize");
    line.push(b'\n');
    line
}

/// Writes one already-encoded line.
pub async fn write_line<W: AsyncWrite + Unpin + ?Sized>(writer: &mut W, line: &[u8]) -> io::Result<()> {
    writer.write_all(line).await?;
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(codec: &mut LineCodec, chunks: &[&[u8]]) -> Vec<Frame> {
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Some(frame) = codec.decode(&mut buf).unwrap() {
                frames.push(frame);
            }
        }
        while let Some(frame) = codec.decode_eof(&mut buf).unwrap() {
            frames.push(frame);
        }
        frames
    }

    fn line(text: &str) -> Frame {
        Frame::Line(BytesMut::from(text.as_bytes()))
    }

    #[test]
    fn lines_split_across_chunks_are_joined() {
        let frames = decode_all(&mut LineCodec::new(16), &[b"ab", b"c\nde", b"f\r\n", b"\n", b"tail"]);
        assert_eq!(frames, vec![line("abc"), line("def"), line(""), line("tail")]);
    }

    #[test]
    fn an_over_long_line_is_skipped_and_the_next_one_read() {
        let long = [b'x'; 40];
        let frames = decode_all(&mut LineCodec::new(16), &[&long[..10], &long[10..], b"\nok\n"]);
        assert_eq!(frames, vec![Frame::TooLong { len: 40 }, line("ok")]);
        // In one chunk too, and exactly at the limit is still fine.
        let mut chunk = vec![b'y'; 17];
        chunk.extend_from_slice(b"\n");
        chunk.extend_from_slice(&[b'z'; 16]);
        chunk.extend_from_slice(b"\n");
        let frames = decode_all(&mut LineCodec::new(16), &[&chunk]);
        assert_eq!(frames, vec![Frame::TooLong { len: 17 }, line(&"z".repeat(16))]);
    }

    #[test]
    fn an_over_long_line_cut_by_eof_is_reported() {
        let frames = decode_all(&mut LineCodec::new(4), &[b"ok\n", b"123456789"]);
        assert_eq!(frames, vec![line("ok"), Frame::TooLong { len: 9 }]);
    }
}
