//! The end of the blocking side of a backup: the compressed stream is counted, hashed
//! (SHA-256 of the stored bytes) and handed to the async uploader in chunks through a
//! bounded channel, so a slow store slows the reader down instead of filling memory.

use std::io::{self, Write};

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

/// Bytes handed to the uploader at once.
pub const CHUNK: usize = 1024 * 1024;

/// What the blocking side sends to the uploader.
#[derive(Debug)]
pub enum Piece {
    /// Stored bytes, in order.
    Data(Bytes),
    /// The data directory has been read: stop the backup and send the label.
    Walked,
}

/// A writer of stored bytes into the uploader's channel.
pub struct ChunkSink {
    tx: mpsc::Sender<Piece>,
    buf: BytesMut,
    hasher: Sha256,
    bytes: u64,
}

impl ChunkSink {
    /// A sink sending to `tx`.
    pub fn new(tx: mpsc::Sender<Piece>) -> Self {
        Self { tx, buf: BytesMut::with_capacity(CHUNK), hasher: Sha256::new(), bytes: 0 }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.buf.reserve(CHUNK);
        self.tx
            .blocking_send(Piece::Data(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped"))
    }

    /// Sends what is left; the SHA-256 (hex) and the size of everything written.
    pub fn finish(mut self) -> io::Result<(String, u64)> {
        self.send()?;
        Ok((hex(&self.hasher.finalize()), self.bytes))
    }
}

impl Write for ChunkSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        // Never beyond the buffer's capacity: growing it would double the allocation that
        // every chunk then keeps until its part is uploaded.
        let n = data.len().min(CHUNK - self.buf.len());
        self.hasher.update(&data[..n]);
        self.bytes += n as u64;
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Chunks go when full or at the end: a flush in the middle (the compressor's) must not
        // make small parts.
        Ok(())
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn chunks_arrive_in_order_with_their_hash() {
        let (tx, mut rx) = mpsc::channel(64);
        let data: Vec<u8> = (0..(3 * CHUNK + 123)).map(|i| (i % 251) as u8).collect();
        let mut sink = ChunkSink::new(tx);
        for part in data.chunks(10_000) {
            sink.write_all(part).unwrap();
        }
        let (sha, n) = sink.finish().unwrap();
        let mut got = Vec::new();
        while let Ok(Piece::Data(b)) = rx.try_recv() {
            assert!(b.len() <= CHUNK);
            got.extend_from_slice(&b);
        }
        assert_eq!(got, data);
        assert_eq!(n, data.len() as u64);
        assert_eq!(sha, hex(&Sha256::digest(&data)));
        assert_eq!(hex(&Sha256::digest(b"abc"))[..16], *"ba7816bf8f01cfea");
    }

    #[test]
    fn a_gone_uploader_stops_the_writer() {
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let mut sink = ChunkSink::new(tx);
        let err = sink.write_all(&vec![0u8; CHUNK]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
