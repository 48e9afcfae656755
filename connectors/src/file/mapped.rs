//! Files read through a memory map: Parquet, and bounded uncompressed text.
//!
//! The Parquet reader asks for each column chunk as bytes. From a `File` it reads them into a
//! new buffer: the kernel copies the compressed pages out of its page cache into memory it
//! first has to fault in and zero (a fifth of Nexmark q2's time over a 785 MB file). Mapped,
//! a column chunk is a slice of the page cache itself, and the decompressor reads it there.
//! A text file (JSON Lines, JSON, CSV) read to its end, not tailed, is decoded in slices of
//! the map likewise, where `read` would copy it twice: into the reader's buffer and from there
//! into a chunk of whole lines.
//!
//! ```sql
//! CREATE STREAM q2 AS SELECT auction, price FROM bid WHERE auction % 123 = 0 INTO nowhere
//! WITH ('bid.type' = 'file_source', 'bid.path' = 'bids.parquet', 'nowhere.type' = 'blackhole');
//! ```
//!
//! The pages read are let go again as the reading moves on (`MADV_DONTNEED`; for Parquet 32
//! MiB behind the last read): they stay in the kernel's cache, but the process's resident
//! memory holds only what is being decoded, not the file.
//!
//! Tailed files (`watch`) and compressed files are read with `read`. A file written whole and
//! then renamed into place leaves a mapping of the old file intact, and one appended to is
//! read up to the length it had when opened. A file cut short in place *while* it is read
//! would stop the process (`SIGBUS`); where that can happen, `FERRIS_FILE_MMAP=0` reads every
//! file with `read` instead.

use std::fs::File;
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parquet::file::reader::{ChunkReader, Length};

/// How far behind the reads the file's pages stay mapped: a row group's column chunks are read
/// in order, and a chunk this far before the one asked for is not asked for again.
const KEPT_BEHIND: u64 = 32 << 20;

/// A file mapped into memory, read only, and how much of it has been let go.
pub(super) struct MappedFile {
    map: Arc<memmap2::Mmap>,
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

impl MappedFile {
    /// `file` mapped; `None` where it cannot be or should not be: an empty file (also what
    /// `/proc` files say they are), a pipe or device, a file system without `mmap`.
    pub(super) fn open(file: &File) -> Option<Self> {
        let meta = file.metadata().ok()?;
        if !meta.is_file() || meta.len() == 0 {
            return None;
        }
        // SAFETY: the map is read only, and nothing in this process writes the file. Another
        // process cutting it short while it is read is the documented exception above.
        let map = unsafe { memmap2::Mmap::map(file) }.ok()?;
        Some(Self { map: Arc::new(map), released: AtomicU64::new(0) })
    }

    /// The file's bytes.
    pub(super) fn bytes(&self) -> &[u8] {
        &self.map[..]
    }

    /// The file's bytes, shared: slices of them keep the map alive.
    fn shared(&self) -> Bytes {
        Bytes::from_owner(Shared(Arc::clone(&self.map)))
    }

    /// The file is read from start to end: the kernel reads ahead further.
    pub(super) fn read_sequentially(&self) {
        let _ = self.map.advise(memmap2::Advice::Sequential);
    }

    /// The pages before `offset` (rounded down to 64 KiB) are let go: they stay in the kernel's
    /// cache, and are mapped again, with the same bytes, should they be read again.
    pub(super) fn let_go_before(&self, offset: u64) {
        let upto = offset.min(self.map.len() as u64) & !0xFFFF;
        let from = self.released.fetch_max(upto, Ordering::AcqRel);
        if upto > from {
            // SAFETY: a shared mapping of a file opened read only: a page let go is read again
            // from the file (the kernel's cache) when touched, with the same bytes, so slices
            // of it still held stay valid.
            let _ = unsafe { self.map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, from as usize, (upto - from) as usize) };
        }
    }
}

/// A Parquet file's bytes: mapped, or read from the file where it cannot be mapped (an empty
/// file, a file system without `mmap`, or mapping turned off).
pub(super) enum ParquetData {
    /// The whole file, mapped; column chunks are slices of it.
    Mapped(Mapped),
    /// Read with `read` as the reader asks.
    File(File),
}

/// A mapped Parquet file.
pub(super) struct Mapped {
    file: MappedFile,
    bytes: Bytes,
    /// Reads go forward from here on (the footer has been read): pages far behind them are
    /// let go.
    forward: AtomicBool,
}

impl ParquetData {
    /// `file` mapped when it can be and `map` is true, else as it is.
    pub(super) fn open(file: File, map: bool) -> Self {
        match map.then(|| MappedFile::open(&file)).flatten() {
            Some(m) => Self::Mapped(Mapped { bytes: m.shared(), file: m, forward: AtomicBool::new(false) }),
            None => Self::File(file),
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
        if self.forward.load(Ordering::Acquire) {
            self.file.let_go_before(start.saturating_sub(KEPT_BEHIND));
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
        let mapped = ParquetData::open(File::open(&path).unwrap(), true);
        let ParquetData::Mapped(m) = &mapped else { panic!("mapped") };
        let early = mapped.get_bytes(1000, 5000).unwrap();
        mapped.reading_forward();
        assert_eq!(&mapped.get_bytes(39 << 20, 100).unwrap()[..], &data[(39 << 20)..(39 << 20) + 100]);
        assert_eq!(m.file.released.load(Ordering::Acquire), 7 << 20, "let go up to 32 MiB behind the read");
        assert_eq!(&early[..], &data[1000..6000]);
        assert_eq!(&mapped.get_bytes(0, 100).unwrap()[..], &data[..100]);
        assert_eq!(m.file.released.load(Ordering::Acquire), 7 << 20, "never moves back");
    }

    /// Mapped or not, the same bytes at the same offsets; past the end, an error.
    #[test]
    fn mapped_and_read_give_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let mapped = ParquetData::open(File::open(&path).unwrap(), true);
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
        let empty = ParquetData::open(File::open(&path).unwrap(), true);
        assert_eq!(empty.len(), 0);
        assert!(empty.get_bytes(0, 1).is_err());
    }
}
