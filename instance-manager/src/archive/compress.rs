//! Compression of streams (WAL files, see [`super::pack`]; base backups) and of whole objects
//! in memory (small descriptions, tests and tools). Standard formats — zstd frames, lz4 frames, gzip — so `zstd -d`, `lz4 -d` and
//! `gunzip` read the archive without pgwarden. CPU-bound: callers run these on blocking
//! threads.

use std::io::{Read, Write};

use crate::api::Compression;

/// zstd level for base backups.
const ZSTD_LEVEL: i32 = 3;
/// zstd level for WAL: WAL compresses well at the lowest level, which takes about half the CPU
/// of level 3 (archiving competes with Postgres for the cores) and a 512 KiB window instead
/// of 2 MiB (each upload in flight holds one compression context).
const WAL_ZSTD_LEVEL: i32 = 1;

/// Compresses `data`.
pub fn compress(c: Compression, data: &[u8]) -> std::io::Result<Vec<u8>> {
    match c {
        Compression::None => Ok(data.to_vec()),
        Compression::Zstd => {
            let mut z = zstd::bulk::Compressor::new(ZSTD_LEVEL)?;
            z.set_parameter(zstd::stream::raw::CParameter::ChecksumFlag(true))?;
            z.compress(data)
        }
        Compression::Lz4 => {
            let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::with_capacity(data.len() / 2));
            enc.write_all(data)?;
            enc.finish().map_err(std::io::Error::other)
        }
        Compression::Gzip => {
            let mut enc =
                flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 2), flate2::Compression::fast());
            enc.write_all(data)?;
            enc.finish()
        }
    }
}

/// Decompresses `data`; `size_hint` is the expected size (a WAL segment's).
pub fn decompress(c: Compression, data: &[u8], size_hint: usize) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(size_hint);
    match c {
        Compression::None => out.extend_from_slice(data),
        Compression::Zstd => {
            zstd::stream::read::Decoder::new(data)?.read_to_end(&mut out)?;
        }
        Compression::Lz4 => {
            lz4_flex::frame::FrameDecoder::new(data).read_to_end(&mut out)?;
        }
        Compression::Gzip => {
            flate2::read::GzDecoder::new(data).read_to_end(&mut out)?;
        }
    }
    Ok(out)
}

/// A writer that compresses into `inner` (for streaming a base backup).
pub fn encoder<'a, W: Write + Send + 'a>(c: Compression, inner: W) -> std::io::Result<Box<dyn FinishWrite + 'a>> {
    Ok(match c {
        Compression::None => Box::new(Plain(inner)),
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(inner, ZSTD_LEVEL)?;
            // Multithreaded zstd would compete with Postgres for the cores.
            enc.include_checksum(true)?;
            Box::new(enc)
        }
        Compression::Lz4 => Box::new(lz4_flex::frame::FrameEncoder::new(inner)),
        Compression::Gzip => Box::new(flate2::write::GzEncoder::new(inner, flate2::Compression::fast())),
    })
}

/// A writer that compresses a WAL file into `inner`, with WAL's settings.
pub fn wal_encoder<'a, W: Write + Send + 'a>(c: Compression, inner: W) -> std::io::Result<Box<dyn FinishWrite + 'a>> {
    if c != Compression::Zstd {
        return encoder(c, inner);
    }
    let mut enc = zstd::stream::write::Encoder::new(inner, WAL_ZSTD_LEVEL)?;
    enc.include_checksum(true)?;
    Ok(Box::new(enc))
}

/// A reader that decompresses `inner` (for restoring a base backup).
pub fn decoder<'a, R: Read + Send + 'a>(c: Compression, inner: R) -> std::io::Result<Box<dyn Read + Send + 'a>> {
    Ok(match c {
        Compression::None => Box::new(inner),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(inner)?),
        Compression::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(inner)),
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(inner)),
    })
}

/// A compressing writer that must be finished to write its trailer.
pub trait FinishWrite: Write + Send {
    /// Writes the trailer and flushes.
    fn finish_stream(self: Box<Self>) -> std::io::Result<()>;
}

struct Plain<W>(W);

impl<W: Write> Write for Plain<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write + Send> FinishWrite for Plain<W> {
    fn finish_stream(mut self: Box<Self>) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write + Send> FinishWrite for zstd::stream::write::Encoder<'_, W> {
    fn finish_stream(self: Box<Self>) -> std::io::Result<()> {
        (*self).finish()?.flush()
    }
}

impl<W: Write + Send> FinishWrite for lz4_flex::frame::FrameEncoder<W> {
    fn finish_stream(self: Box<Self>) -> std::io::Result<()> {
        (*self).finish().map_err(std::io::Error::other)?.flush()
    }
}

impl<W: Write + Send> FinishWrite for flate2::write::GzEncoder<W> {
    fn finish_stream(self: Box<Self>) -> std::io::Result<()> {
        (*self).finish()?.flush()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const ALL: [Compression; 4] = [Compression::Zstd, Compression::Lz4, Compression::Gzip, Compression::None];

    fn sample() -> Vec<u8> {
        // WAL-like: structured, repetitive, some noise.
        (0..1_000_000u32).map(|i| if i % 7 == 0 { (i % 251) as u8 } else { 0 }).collect()
    }

    #[test]
    fn whole_objects_round_trip_and_shrink() {
        let data = sample();
        for c in ALL {
            let packed = compress(c, &data).unwrap();
            if c != Compression::None {
                assert!(packed.len() < data.len() / 4, "{c:?} compressed to {}", packed.len());
            }
            assert_eq!(decompress(c, &packed, data.len()).unwrap(), data, "{c:?}");
        }
    }

    #[test]
    fn streams_round_trip_and_are_standard_frames() {
        let data = sample();
        for c in ALL {
            let mut out = Vec::new();
            let mut enc = encoder(c, &mut out).unwrap();
            for chunk in data.chunks(65_536) {
                enc.write_all(chunk).unwrap();
            }
            enc.finish_stream().unwrap();
            // A stream decodes with the whole-object decoder too: one format per extension.
            assert_eq!(decompress(c, &out, data.len()).unwrap(), data, "{c:?}");
            let mut back = Vec::new();
            decoder(c, out.as_slice()).unwrap().read_to_end(&mut back).unwrap();
            assert_eq!(back, data, "{c:?}");
        }
    }

    #[test]
    fn corrupt_input_is_an_error_not_garbage() {
        let packed = compress(Compression::Zstd, &sample()).unwrap();
        let mut broken = packed.clone();
        let mid = broken.len() / 2;
        broken[mid] ^= 0xFF;
        assert!(decompress(Compression::Zstd, &broken, 0).is_err());
        assert!(decompress(Compression::Gzip, &packed, 0).is_err());
    }
}
