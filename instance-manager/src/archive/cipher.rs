//! Client-side encryption of archived WAL and base backup data (`store.encryption.keyFile`).
//!
//! Format of a sealed object (chunked XChaCha20-Poly1305, the STREAM construction):
//!
//! ```text
//! "PGWENC01" | 16 random bytes (nonce prefix) | chunk 0 | chunk 1 | ... | last chunk
//! chunk i   = XChaCha20-Poly1305(key, nonce = prefix ‖ i as u64 big-endian,
//!                                aad = [1 if last else 0], up to 64 KiB of plaintext) ‖ tag
//! ```
//!
//! Every chunk is authenticated, and so is the end: a truncated, reordered or altered object
//! fails to open. The prefix is random per object, so one key serves a whole archive.
//! Sealing happens after compression (encrypted data does not compress). Descriptions
//! (`backup.json`, `cluster.json`) stay readable: they hold positions and sizes, not data.

use std::io::{Read, Write};
use std::path::Path;

use chacha20poly1305::aead::rand_core::RngCore;
use chacha20poly1305::aead::{Aead, KeyInit, OsRng, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};

/// The first bytes of every sealed object.
pub const MAGIC: &[u8; 8] = b"PGWENC01";
const PREFIX: usize = 16;
const CHUNK: usize = 64 * 1024;
const TAG: usize = 16;

/// Why a key file or a sealed object cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CipherError {
    /// The key file cannot be read.
    #[error(transparent)]
    KeyFile(#[from] crate::osuser::Error),
    /// The key file does not hold a key.
    #[error("{path} must hold 64 hexadecimal characters (32 bytes); create one with `openssl rand -hex 32`")]
    NotAKey {
        /// The key file.
        path: String,
    },
    /// A sealed object that does not open: another key, or altered or truncated data.
    #[error(transparent)]
    Open(std::io::Error),
}

/// A key, ready to seal and open.
#[derive(Clone)]
pub struct Cipher(XChaCha20Poly1305);

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher(***)")
    }
}

/// Whether `data` starts like a sealed object.
pub fn is_sealed(data: &[u8]) -> bool {
    data.starts_with(MAGIC)
}

fn nonce(prefix: &[u8; PREFIX], counter: u64) -> XNonce {
    let mut n = [0u8; 24];
    n[..PREFIX].copy_from_slice(prefix);
    n[PREFIX..].copy_from_slice(&counter.to_be_bytes());
    XNonce::from(n)
}

impl Cipher {
    /// A cipher from 32 key bytes.
    pub fn new(key: &[u8; 32]) -> Self {
        Self(XChaCha20Poly1305::new(Key::from_slice(key)))
    }

    /// Reads a key file: 64 hexadecimal characters (a trailing newline is fine).
    pub fn from_key_file(path: &Path) -> Result<Self, CipherError> {
        let secret = crate::osuser::read_secret(path)?;
        let hex = secret.expose().trim();
        let not_a_key = || CipherError::NotAKey { path: path.display().to_string() };
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(not_a_key());
        }
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| not_a_key())?;
        }
        Ok(Self::new(&key))
    }

    /// Seals a whole object.
    pub fn seal(&self, plain: &[u8]) -> Vec<u8> {
        let mut w = SealingWriter::new(self.clone(), Vec::with_capacity(plain.len() + plain.len() / CHUNK * TAG + 64));
        // Writing to a Vec cannot fail.
        let _ = w.write_all(plain);
        w.finish().unwrap_or_default()
    }

    /// Opens a whole sealed object.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, CipherError> {
        let mut out = Vec::with_capacity(sealed.len());
        OpeningReader::new(self.clone(), sealed).read_to_end(&mut out).map_err(CipherError::Open)?;
        Ok(out)
    }
}

/// Seals what is written to it into `inner`; [`finish`](Self::finish) writes the last chunk.
pub struct SealingWriter<W: Write> {
    cipher: Cipher,
    inner: W,
    prefix: [u8; PREFIX],
    counter: u64,
    buf: Vec<u8>,
    header_written: bool,
}

impl<W: Write> SealingWriter<W> {
    /// A writer sealing into `inner` with a fresh random prefix.
    pub fn new(cipher: Cipher, inner: W) -> Self {
        let mut prefix = [0u8; PREFIX];
        OsRng.fill_bytes(&mut prefix);
        Self { cipher, inner, prefix, counter: 0, buf: Vec::with_capacity(CHUNK), header_written: false }
    }

    fn emit(&mut self, last: bool) -> std::io::Result<()> {
        if !self.header_written {
            self.inner.write_all(MAGIC)?;
            self.inner.write_all(&self.prefix)?;
            self.header_written = true;
        }
        let aad = [u8::from(last)];
        let sealed = self
            .cipher
            .0
            .encrypt(&nonce(&self.prefix, self.counter), Payload { msg: &self.buf, aad: &aad })
            .map_err(|_| std::io::Error::other("encryption failed"))?;
        self.counter += 1;
        self.buf.clear();
        self.inner.write_all(&sealed)
    }

    /// Writes the last chunk and returns the inner writer.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.emit(true)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for SealingWriter<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() == CHUNK && !data.is_empty() {
            // More follows: the full chunk is not the last one.
            self.emit(false)?;
        }
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Opens a sealed stream read from `inner`.
pub struct OpeningReader<R: Read> {
    cipher: Cipher,
    inner: R,
    prefix: Option<[u8; PREFIX]>,
    counter: u64,
    plain: Vec<u8>,
    pos: usize,
    /// The next sealed chunk, read ahead to learn whether the current one is the last.
    next: Vec<u8>,
    done: bool,
}

impl<R: Read> OpeningReader<R> {
    /// A reader opening `inner`.
    pub fn new(cipher: Cipher, inner: R) -> Self {
        Self { cipher, inner, prefix: None, counter: 0, plain: Vec::new(), pos: 0, next: Vec::new(), done: false }
    }

    fn read_full(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(n);
        (&mut self.inner).take(n as u64).read_to_end(&mut out)?;
        Ok(out)
    }

    fn refill(&mut self) -> std::io::Result<()> {
        let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
        let prefix = match self.prefix {
            Some(p) => p,
            None => {
                let header = self.read_full(MAGIC.len() + PREFIX)?;
                if header.len() != MAGIC.len() + PREFIX || !header.starts_with(MAGIC) {
                    return Err(bad("not an encrypted pgwarden object"));
                }
                let mut p = [0u8; PREFIX];
                p.copy_from_slice(&header[MAGIC.len()..]);
                self.prefix = Some(p);
                self.next = self.read_full(CHUNK + TAG)?;
                p
            }
        };
        let current = std::mem::take(&mut self.next);
        if current.len() < TAG {
            return Err(bad("encrypted object is truncated"));
        }
        self.next = self.read_full(CHUNK + TAG)?;
        let last = self.next.is_empty();
        let aad = [u8::from(last)];
        self.plain = self
            .cipher
            .0
            .decrypt(&nonce(&prefix, self.counter), Payload { msg: &current, aad: &aad })
            .map_err(|_| bad("encrypted object fails authentication: wrong key, or altered or truncated data"))?;
        self.counter += 1;
        self.pos = 0;
        self.done = last;
        Ok(())
    }
}

impl<R: Read> Read for OpeningReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.plain.len() {
            if self.done {
                return Ok(0);
            }
            self.refill()?;
        }
        let n = buf.len().min(self.plain.len() - self.pos);
        buf[..n].copy_from_slice(&self.plain[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key(b: u8) -> Cipher {
        Cipher::new(&[b; 32])
    }

    #[test]
    fn round_trips_at_chunk_boundaries() {
        let c = key(7);
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 5] {
            let plain: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let sealed = c.seal(&plain);
            assert!(is_sealed(&sealed));
            assert_eq!(c.open(&sealed).unwrap(), plain, "length {len}");
            // Written in odd pieces, read back in odd pieces.
            let mut w = SealingWriter::new(c.clone(), Vec::new());
            for piece in plain.chunks(7919) {
                w.write_all(piece).unwrap();
            }
            let sealed = w.finish().unwrap();
            let mut r = OpeningReader::new(c.clone(), sealed.as_slice());
            let mut back = Vec::new();
            let mut buf = [0u8; 1000];
            loop {
                let n = r.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                back.extend_from_slice(&buf[..n]);
            }
            assert_eq!(back, plain, "length {len}, streamed");
        }
    }

    #[test]
    fn tampering_truncation_and_wrong_keys_are_detected() {
        let c = key(1);
        let plain: Vec<u8> = (0..3 * CHUNK).map(|i| (i % 13) as u8).collect();
        let sealed = c.seal(&plain);
        assert!(key(2).open(&sealed).is_err(), "wrong key");
        let mut flipped = sealed.clone();
        flipped[40] ^= 1;
        assert!(c.open(&flipped).is_err(), "altered byte");
        // Dropping the last chunk: the new last chunk was sealed as "not last".
        let cut = MAGIC.len() + PREFIX + 2 * (CHUNK + TAG);
        assert!(c.open(&sealed[..cut]).is_err(), "truncated at a chunk boundary");
        assert!(c.open(&sealed[..sealed.len() - 1]).is_err(), "truncated");
        assert!(c.open(b"not sealed at all").is_err());
    }

    #[test]
    fn the_same_plaintext_seals_differently_each_time() {
        let c = key(3);
        assert_ne!(c.seal(b"wal"), c.seal(b"wal"));
    }

    #[test]
    fn key_files_must_hold_64_hex_characters() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("key");
        std::fs::write(&f, "abc\n").unwrap();
        assert!(Cipher::from_key_file(&f).unwrap_err().to_string().contains("openssl rand -hex 32"));
        std::fs::write(&f, format!("{}\n", "0f".repeat(32))).unwrap();
        let c = Cipher::from_key_file(&f).unwrap();
        assert_eq!(c.open(&Cipher::new(&[0x0f; 32]).seal(b"x")).unwrap(), b"x");
    }
}
