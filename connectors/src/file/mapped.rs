//! A Parquet file read through a memory map.
//!
//! The Parquet reader asks for each column chunk as bytes. From a `File` it reads them into a
//! new buffer: the kernel copies the compressed pages out of its page cache into memory it
//! first has to fault in and zero (a fifth of Nexmark q2's time over a 785 MB file). Mapped,
//! a column chunk is a slice of the page cache itself, and the decompressor reads it there.
//!
//! ```sql
//! CREATE STREAM q2 AS SELECT auction, price FROM bid WHERE auction % 123 = 0 INTO nowhere
//! WITH ('bid.type' = 'file_source', 'bid.path' = 'bids.parquet', 'nowhere.type' = 'blackhole');
//! ```
//!
//! The pages read are let go again as the reading moves on (`MADV_DONTNEED`, 32 MiB behind the
//! last read): they stay in the kernel's cache, but the process's resident memory holds only
//! the row groups being decoded, not the file.
//!
//! Parquet files are never tailed (`watch` refuses them), and a Parquet file is written whole
//! and then renamed into place, which leaves a mapping of the old file intact. A file cut
//! short in place *while* it is read would stop the process (`SIGBUS`); where that can happen,
//! `FERRIS_PARQUET_MMAP=0` reads with `read` instead.

use std::fs::File;
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parquet::file::reader::{ChunkReader, Length};

/// How far behind the reads the file's pages stay mapped: a row group's column chunks are read
/// in order, and a chunk this far before the one asked for is not asked for again.
const KEPT_BEHIND: u64 = 32 << 20;

/// A Parquet file's bytes: mapped, or read from the file where it cannot be mapped (an empty
/// file, a file system without `mmap`, or mapping turned off).
pub(super) enum ParquetData {
    /// The whole file, mapped; column chunks are slices of it.
    Mapped(Mapped),
    /// Read with `read` as the reader asks.
    File(File),
}

/// A mapped file, and how much of it has been let go.
pub(super) struct Mapped {
    map: Arc<memmap2::Mmap>,
    bytes: Bytes,
    /// Reads go forward from here on (the footer has been read): pages far behind them are
    /// let go.
    forward: AtomicBool,
    /// The pages before this offset are let go (they are mapped again if read).
    released: AtomicU64,
}

/// The map as the owner of [`Bytes`].
struct Shared(Arc<memmap2::Mmap>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0[..]
    }
}

impl ParquetData {
    /// `file` mapped when it can be, else as it is.
    pub(super) fn open(file: File) -> Self {
        if std::env::var("FERRIS_PARQUET_MMAP").is_ok_and(|v| v == "0") {
            return Self::File(file);
        }
        // SAFETY: the map is read only, and nothing in this process writes the file. Another
        // process cutting it short while it is read is the documented exception above.
        match unsafe { memmap2::Mmap::map(&file) } {
            Ok(map) => {
                let map = Arc::new(map);
                let bytes = Bytes::from_owner(Shared(Arc::clone(&map)));
                Self::Mapped(Mapped { map, bytes, forward: AtomicBool::new(false), released: AtomicU64::new(0) })
            }
            Err(_) => Self::File(file),
        }
    }

    /// The footer is read: from here on the reads go forward through the row groups, and the
    /// mapped pages far behind them are let go, so that the process does not count the whole
    /// file as its memory (each page stays in the kernel's cache).
    pub(super) fn reading_forward(&self) {
        if let Self::Mapped(m) = self {
            m.forward.store(true, Ordering::Release);
        }
    }
}

impl Mapped {
    /// A read at `start`: the pages more than [`KEPT_BEHIND`] before it are let go.
    fn read_at(&self, start: u64) {
        if !self.forward.load(Ordering::Acquire) {
            return;
        }
        let upto = start.saturating_sub(KEPT_BEHIND) & !0xFFFF;
        let from = self.released.fetch_max(upto, Ordering::AcqRel);
        if upto > from {
            // SAFETY: a shared mapping of a file opened read only: a page let go is read again
            // from the file (the kernel's cache) when touched, with the same bytes, so slices
            // of it still held stay valid.
            let _ = unsafe { self.map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, from as usize, (upto - from) as usize) };
        }
    }
}

impl Length for ParquetData {
    fn len(&self) -> u64 {
        match self {
            Self::Mapped(m) => m.bytes.len() as u64,
            Self::File(f) => f.len(),
        }
    }
}

impl ChunkReader for ParquetData {
    type T = Box<dyn Read + Send>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(match self {
            Self::Mapped(m) => {
                m.read_at(start);
                Box::new(m.bytes.get_read(start)?)
            }
            Self::File(f) => Box::new(f.get_read(start)?),
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        match self {
            Self::Mapped(m) => {
                m.read_at(start);
                m.bytes.get_bytes(start, length)
            }
            Self::File(f) => f.get_bytes(start, length),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages let go behind the reads are read again, the same bytes, when asked for again
    /// (also through a slice taken before they were let go).
    #[test]
    fn pages_let_go_are_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        let data: Vec<u8> = (0..(40u32 << 20)).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let mapped = ParquetData::open(File::open(&path).unwrap());
        let ParquetData::Mapped(m) = &mapped else { panic!("mapped") };
        let early = mapped.get_bytes(1000, 5000).unwrap();
        mapped.reading_forward();
        assert_eq!(&mapped.get_bytes(39 << 20, 100).unwrap()[..], &data[(39 << 20)..(39 << 20) + 100]);
        assert_eq!(m.released.load(Ordering::Acquire), 7 << 20, "let go up to 32 MiB behind the read");
        assert_eq!(&early[..], &data[1000..6000]);
        assert_eq!(&mapped.get_bytes(0, 100).unwrap()[..], &data[..100]);
        assert_eq!(m.released.load(Ordering::Acquire), 7 << 20, "never moves back");
    }

    /// Mapped or not, the same bytes at the same offsets; past the end, an error.
    #[test]
    fn mapped_and_read_give_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let mapped = ParquetData::open(File::open(&path).unwrap());
        assert!(matches!(mapped, ParquetData::Mapped(_)));
        mapped.reading_forward();
        let read = ParquetData::File(File::open(&path).unwrap());
        for d in [&mapped, &read] {
            assert_eq!(d.len(), 10_000);
            assert_eq!(&d.get_bytes(1234, 100).unwrap()[..], &data[1234..1334]);
            let mut rest = Vec::new();
            d.get_read(9_990).unwrap().read_to_end(&mut rest).unwrap();
            assert_eq!(rest, &data[9_990..]);
            assert!(d.get_bytes(9_990, 100).is_err());
        }
        // an empty file: no bytes
        std::fs::write(&path, b"").unwrap();
        let empty = ParquetData::open(File::open(&path).unwrap());
        assert_eq!(empty.len(), 0);
        assert!(empty.get_bytes(0, 1).is_err());
    }
}
