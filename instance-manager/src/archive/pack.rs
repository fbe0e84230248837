//! Packing a WAL file for the store and unpacking it again, in bounded memory.
//!
//! Packing reads the file in [`READ`]-sized pieces, compresses them as a stream, seals them when
//! encryption is on, and collects the result in [`CHUNK`]-sized pieces that become the upload's
//! payload without another copy. What an upload holds is the packed object (a few MiB for a
//! compressed segment) and a small compression context, never the 16 MiB segment beside its
//! compressed copy: four uploads in flight fit in a few tens of MiB.
//!
//! Unpacking decompresses (and opens) an object as a stream into a file, and comparing an
//! existing object with a local file decompresses it piece by piece against the file's pieces.
//! Blocking (CPU and file I/O): callers run these on blocking threads.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use bytes::Bytes;
use object_store::PutPayload;

use super::cipher::{Cipher, OpeningReader, SealingWriter};
use super::compress;
use crate::api::Compression;

/// Size of the pieces read from a WAL file.
const READ: usize = 64 * 1024;
/// Size of the pieces of a packed object.
const CHUNK: usize = 256 * 1024;

/// A packed object: the pieces of its bytes, in order.
#[derive(Default)]
pub struct Packed {
    chunks: Vec<Bytes>,
    current: Vec<u8>,
}

impl Packed {
    /// The object's size in bytes.
    pub fn len(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum::<usize>() + self.current.len()
    }

    /// Whether the object is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The object as an upload's payload (no copy).
    pub fn into_payload(mut self) -> PutPayload {
        self.seal_current();
        self.chunks.into_iter().collect()
    }

    fn seal_current(&mut self) {
        if !self.current.is_empty() {
            self.chunks.push(Bytes::from(std::mem::take(&mut self.current)));
        }
    }
}

impl Write for Packed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.current.capacity() == 0 {
            self.current.reserve_exact(CHUNK);
        }
        let n = buf.len().min(CHUNK - self.current.len());
        self.current.extend_from_slice(&buf[..n]);
        if self.current.len() == CHUNK {
            self.seal_current();
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads `path`, compresses it with `c` and seals it with `cipher`.
pub fn pack(path: &Path, c: Compression, cipher: Option<&Cipher>) -> io::Result<Packed> {
    let mut file = File::open(path)?;
    let mut out = Packed::default();
    match cipher {
        None => compress_into(&mut file, c, &mut out)?,
        Some(cipher) => {
            let mut sealer = SealingWriter::new(cipher.clone(), &mut out);
            compress_into(&mut file, c, &mut sealer)?;
            sealer.finish()?;
        }
    }
    Ok(out)
}

fn compress_into<W: Write + Send>(src: &mut File, c: Compression, dest: W) -> io::Result<()> {
    let mut encoder = compress::wal_encoder(c, dest)?;
    let mut buf = vec![0u8; READ];
    loop {
        let n = src.read(&mut buf)?;
        if n == 0 {
            break;
        }
        encoder.write_all(&buf[..n])?;
    }
    encoder.finish_stream()
}

/// A reader of the plain content of a packed object (`cipher`: see [`unpack_to`]).
fn unpacker<'a>(object: &'a [u8], c: Compression, cipher: Option<&Cipher>) -> io::Result<Box<dyn Read + Send + 'a>> {
    let opened: Box<dyn Read + Send + 'a> = match cipher {
        Some(cipher) => Box::new(OpeningReader::new(cipher.clone(), object)),
        None => Box::new(object),
    };
    compress::decoder(c, opened)
}

/// Writes the plain content of `object` to `dest`; returns its size. `cipher` opens a sealed
/// object and must be `None` for a plain one ([`super::store::Store::opener`] says which).
pub fn unpack_to(object: &[u8], c: Compression, cipher: Option<&Cipher>, dest: &mut File) -> io::Result<u64> {
    let mut reader = unpacker(object, c, cipher)?;
    let n = io::copy(&mut reader, dest)?;
    dest.flush()?;
    Ok(n)
}

/// The plain content of a small `object` (a history file), at most `limit` bytes.
pub fn unpack_small(object: &[u8], c: Compression, cipher: Option<&Cipher>, limit: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    unpacker(object, c, cipher)?.take(limit).read_to_end(&mut out)?;
    Ok(out)
}

/// Whether `object` unpacks to exactly the content of the file at `local`.
pub fn same_content(object: &[u8], c: Compression, cipher: Option<&Cipher>, local: &Path) -> io::Result<bool> {
    let mut theirs = unpacker(object, c, cipher)?;
    let mut ours = File::open(local)?;
    let (mut a, mut b) = (vec![0u8; READ], vec![0u8; READ]);
    loop {
        let n = read_full(&mut ours, &mut a)?;
        let m = match read_full(&mut theirs, &mut b) {
            Ok(m) => m,
            // A corrupt or foreign object is a difference, not an I/O failure.
            Err(e) if e.kind() != io::ErrorKind::Interrupted => return Ok(false),
            Err(e) => return Err(e),
        };
        if n != m || a[..n] != b[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the end; returns how much was read.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const ALL: [Compression; 4] = [Compression::None, Compression::Zstd, Compression::Lz4, Compression::Gzip];

    /// A WAL-like file: 2 MiB (many chunks), compressible runs and some noise.
    fn segment(dir: &Path) -> (std::path::PathBuf, Vec<u8>) {
        let mut data = vec![0u8; 2 << 20];
        let mut x = 0x9e37_79b9_u32;
        for (i, b) in data.iter_mut().enumerate() {
            if i % 8192 < 3000 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = (x % 7) as u8 + b'a';
            }
        }
        let path = dir.join("000000010000000000000003");
        std::fs::write(&path, &data).unwrap();
        (path, data)
    }

    fn payload_bytes(p: Packed) -> Vec<u8> {
        let payload = p.into_payload();
        payload.iter().flat_map(|b| b.iter().copied()).collect()
    }

    #[test]
    fn packs_and_unpacks_every_compression_with_and_without_encryption() {
        let dir = tempfile::tempdir().unwrap();
        let (path, data) = segment(dir.path());
        let cipher = Cipher::new(&[7u8; 32]);
        for c in ALL {
            for key in [None, Some(&cipher)] {
                // (`key` both seals and opens: packed objects are sealed exactly when it is set.)
                let packed = pack(&path, c, key).unwrap();
                let size = packed.len();
                if c != Compression::None {
                    assert!(size < data.len() / 2, "{c:?} packed to {size}");
                }
                let object = payload_bytes(packed);
                assert_eq!(object.len(), size);
                assert_eq!(super::super::cipher::is_sealed(&object), key.is_some());
                // The standard formats: the whole-object decompressor reads it.
                if key.is_none() {
                    assert_eq!(compress::decompress(c, &object, data.len()).unwrap(), data, "{c:?}");
                }
                let out_path = dir.path().join("restored");
                let mut out = File::create(&out_path).unwrap();
                assert_eq!(unpack_to(&object, c, key, &mut out).unwrap(), data.len() as u64);
                assert_eq!(std::fs::read(&out_path).unwrap(), data, "{c:?} {:?}", key.is_some());
                assert!(same_content(&object, c, key, &path).unwrap(), "{c:?}");
            }
        }
    }

    #[test]
    fn a_different_or_corrupt_object_is_not_the_same_content() {
        let dir = tempfile::tempdir().unwrap();
        let (path, data) = segment(dir.path());
        let other = dir.path().join("other");
        let mut changed = data.clone();
        changed[(3 << 20) / 2] ^= 1;
        std::fs::write(&other, &changed).unwrap();
        for c in ALL {
            let object = payload_bytes(pack(&other, c, None).unwrap());
            assert!(!same_content(&object, c, None, &path).unwrap(), "{c:?}");
            let mut truncated = payload_bytes(pack(&path, c, None).unwrap());
            truncated.truncate(truncated.len() - 100);
            assert!(!same_content(&truncated, c, None, &path).unwrap(), "{c:?}");
        }
        let cipher = Cipher::new(&[1u8; 32]);
        let sealed = payload_bytes(pack(&path, Compression::Zstd, Some(&cipher)).unwrap());
        let wrong = Cipher::new(&[2u8; 32]);
        assert!(!same_content(&sealed, Compression::Zstd, Some(&wrong), &path).unwrap());
    }
}
