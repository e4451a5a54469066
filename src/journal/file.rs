//! The file layer under the segment log: what the journal asks of a file
//! system, so tests can put a fault-injecting one in its place
//! (`memfs.rs`: torn and lost writes, failed syncs, power cuts).
//!
//! The real implementation is plain `std::fs` plus the three calls std
//! does not expose: `fallocate` (segments are allocated ahead of the
//! writes, so an fdatasync need not also write a new file size),
//! `fdatasync`, and an fsync of a directory (a created, renamed or removed
//! file is durable only once its directory is).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A file of the journal, opened for reading and (when created) writing.
pub trait JournalFile: Send + Sync {
    /// Writes all of `bytes` at `offset`.
    fn write_all_at(&self, bytes: &[u8], offset: u64) -> io::Result<()>;
    /// Reads up to `buf.len()` bytes at `offset`; returns how many (0 at the end).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Makes every write before it durable, with the metadata needed to
    /// read them back (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
    /// Allocates `[offset, offset + len)` so later writes there need no
    /// allocation (the file grows to cover it; the new bytes read as zeros).
    fn allocate(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Shrinks or grows the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// The file's length in bytes.
    fn byte_len(&self) -> io::Result<u64>;
}

/// The operations on directories and files the journal needs.
pub trait JournalFs: Send + Sync {
    /// Creates `dir` and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Creates a new file (an error if it exists), for reading and writing.
    fn create(&self, path: &Path) -> io::Result<Arc<dyn JournalFile>>;
    /// Opens an existing file for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Arc<dyn JournalFile>>;
    /// The files directly in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsFs;

struct OsFile(std::fs::File);

impl JournalFile for OsFile {
    fn write_all_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(&self.0, bytes, offset)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(&self.0, buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn allocate(&self, offset: u64, len: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd as _;
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "allocation out of range",
            ));
        };
        // SAFETY: a plain system call on a file descriptor this value owns.
        let rc = unsafe { libc::fallocate(self.0.as_raw_fd(), 0, offset, len) };
        if rc == 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            // NB: file systems without fallocate (some FUSE ones): grow the
            // file instead; writes then allocate as they go.
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => {
                let end = (offset + len) as u64;
                if self.0.metadata()?.len() < end {
                    self.0.set_len(end)?;
                }
                Ok(())
            }
            _ => Err(error),
        }
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn byte_len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
}

impl JournalFs for OsFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn JournalFile>> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(Arc::new(OsFile(file)))
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn JournalFile>> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        Ok(Arc::new(OsFile(file)))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                paths.push(entry.path());
            }
        }
        Ok(paths)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        sync_dir(dir)
    }
}

/// fsyncs a directory, so the files created, renamed or removed in it are
/// durable (a file's own fsync does not cover its directory entry).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
