//! A file system in memory that remembers what was made durable, for
//! testing the segment log against torn writes, lost writes, failed I/O and
//! power cuts without a disk (the LazyFS tests do the same on a real one).
//!
//! Each file keeps its current bytes (what reads see) and its durable bytes
//! (as of its last `sync_data`), and the writes in between. A [`MemFs::crash`]
//! keeps the durable bytes and, of each later write, all, none or a random
//! set of its 512-byte sectors, as a disk losing power may; files whose
//! directory was not synced since they were created vanish, and files
//! removed without a directory sync come back.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::file::{JournalFile, JournalFs};

/// A fault-injecting file system in memory.
#[derive(Clone, Default)]
pub struct MemFs {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    files: BTreeMap<PathBuf, FileState>,
    /// Removed, but their directory was not synced since.
    removed: BTreeMap<PathBuf, FileState>,
    /// Writes (or allocations) still allowed before every one fails; `None`: no limit.
    writes_left: Option<usize>,
    /// Every `sync_data` fails.
    failing_syncs: bool,
    /// Every allocation fails with "no space".
    disk_full: bool,
}

#[derive(Clone, Default)]
struct FileState {
    data: Vec<u8>,
    durable: Vec<u8>,
    /// Writes since the last sync: offset and bytes (allocations as zeros).
    pending: Vec<(u64, Vec<u8>)>,
    /// The new length after a `set_len` since the last sync.
    pending_len: Option<u64>,
    /// Created, and the directory not synced since.
    entry_unsynced: bool,
}

struct MemFile {
    fs: MemFs,
    path: PathBuf,
}

fn io_error(kind: io::ErrorKind, what: &str) -> io::Error {
    io::Error::new(kind, what.to_owned())
}

impl MemFs {
    /// An empty file system.
    pub fn new() -> MemFs {
        MemFs::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Lets `n` more writes succeed, then fails every write and allocation
    /// (an I/O error), until [`MemFs::heal`].
    pub fn fail_writes_after(&self, n: usize) {
        self.with(|s| s.writes_left = Some(n));
    }

    /// Fails every `sync_data` until [`MemFs::heal`].
    pub fn fail_syncs(&self) {
        self.with(|s| s.failing_syncs = true);
    }

    /// Fails every allocation with "no space left" until [`MemFs::heal`].
    pub fn fill_disk(&self) {
        self.with(|s| s.disk_full = true);
    }

    /// Ends every injected fault.
    pub fn heal(&self) {
        self.with(|s| {
            s.writes_left = None;
            s.failing_syncs = false;
            s.disk_full = false;
        });
    }

    /// A power cut: every file goes back to its durable bytes plus a
    /// random part of what was written since (decided by `seed`).
    pub fn crash(&self, seed: u64) {
        let mut rng = XorShift(seed | 1);
        self.with(|s| {
            let mut files = BTreeMap::new();
            for (path, file) in std::mem::take(&mut s.removed) {
                if !file.entry_unsynced {
                    files.insert(path, file);
                }
            }
            for (path, file) in std::mem::take(&mut s.files) {
                if !file.entry_unsynced {
                    files.insert(path, file);
                }
            }
            for file in files.values_mut() {
                let mut data = std::mem::take(&mut file.durable);
                if let Some(len) = file.pending_len {
                    if rng.next_u64() % 2 == 0 {
                        data.resize(len as usize, 0);
                    }
                }
                for (offset, bytes) in std::mem::take(&mut file.pending) {
                    let offset = offset as usize;
                    let end = offset + bytes.len();
                    match rng.next_u64() % 3 {
                        0 => {}
                        1 => {
                            if data.len() < end {
                                data.resize(end, 0);
                            }
                            data[offset..end].copy_from_slice(&bytes);
                        }
                        _ => {
                            // Torn: a random set of sectors made it.
                            for start in (offset..end).step_by(512) {
                                let stop = (start + 512).min(end);
                                if rng.next_u64() % 2 == 0 {
                                    if data.len() < stop {
                                        data.resize(stop, 0);
                                    }
                                    data[start..stop]
                                        .copy_from_slice(&bytes[start - offset..stop - offset]);
                                }
                            }
                        }
                    }
                }
                file.durable = data.clone();
                file.data = data;
                file.pending_len = None;
            }
            s.files = files;
            s.writes_left = None;
            s.failing_syncs = false;
            s.disk_full = false;
        });
    }

    /// The current bytes of `path` (for tests that corrupt a file).
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        self.with(|s| s.files.get(path).map(|f| f.data.clone()))
    }

    /// Replaces the bytes of `path`, durably (bit rot, a bad copy).
    pub fn overwrite_file(&self, path: &Path, bytes: Vec<u8>) {
        self.with(|s| {
            if let Some(f) = s.files.get_mut(path) {
                f.durable = bytes.clone();
                f.data = bytes;
                f.pending.clear();
            }
        });
    }

    /// Paths of every file, sorted.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.with(|s| s.files.keys().cloned().collect())
    }
}

impl State {
    fn take_write(&mut self) -> io::Result<()> {
        match &mut self.writes_left {
            Some(0) => Err(io_error(io::ErrorKind::Other, "injected write failure")),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn file(&mut self, path: &Path) -> io::Result<&mut FileState> {
        self.files
            .get_mut(path)
            .ok_or_else(|| io_error(io::ErrorKind::NotFound, "no such file"))
    }
}

impl JournalFile for MemFile {
    fn write_all_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        self.fs.with(|s| {
            s.take_write()?;
            let file = s.file(&self.path)?;
            let (start, end) = (offset as usize, offset as usize + bytes.len());
            if file.data.len() < end {
                file.data.resize(end, 0);
            }
            file.data[start..end].copy_from_slice(bytes);
            file.pending.push((offset, bytes.to_vec()));
            Ok(())
        })
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.fs.with(|s| {
            let file = s.file(&self.path)?;
            let start = (offset as usize).min(file.data.len());
            let n = buf.len().min(file.data.len() - start);
            buf[..n].copy_from_slice(&file.data[start..start + n]);
            Ok(n)
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.fs.with(|s| {
            if s.failing_syncs {
                return Err(io_error(io::ErrorKind::Other, "injected sync failure"));
            }
            let file = s.file(&self.path)?;
            file.durable = file.data.clone();
            file.pending.clear();
            file.pending_len = None;
            Ok(())
        })
    }

    fn allocate(&self, offset: u64, len: u64) -> io::Result<()> {
        self.fs.with(|s| {
            if s.disk_full {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            s.take_write()?;
            let file = s.file(&self.path)?;
            let end = (offset + len) as usize;
            if file.data.len() < end {
                let from = file.data.len();
                file.data.resize(end, 0);
                file.pending.push((from as u64, vec![0; end - from]));
            }
            Ok(())
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.fs.with(|s| {
            s.take_write()?;
            let file = s.file(&self.path)?;
            file.data.resize(len as usize, 0);
            file.pending_len = Some(len);
            Ok(())
        })
    }

    fn byte_len(&self) -> io::Result<u64> {
        self.fs.with(|s| Ok(s.file(&self.path)?.data.len() as u64))
    }
}

impl JournalFs for MemFs {
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn JournalFile>> {
        self.with(|s| {
            if s.files.contains_key(path) {
                return Err(io_error(io::ErrorKind::AlreadyExists, "file exists"));
            }
            s.take_write()?;
            s.removed.remove(path);
            s.files.insert(
                path.to_owned(),
                FileState {
                    entry_unsynced: true,
                    ..FileState::default()
                },
            );
            Ok(())
        })?;
        Ok(Arc::new(MemFile {
            fs: self.clone(),
            path: path.to_owned(),
        }))
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn JournalFile>> {
        self.with(|s| s.file(path).map(|_| ()))?;
        Ok(Arc::new(MemFile {
            fs: self.clone(),
            path: path.to_owned(),
        }))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        Ok(self.with(|s| {
            s.files
                .keys()
                .filter(|p| p.parent() == Some(dir))
                .cloned()
                .collect()
        }))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.with(|s| {
            let file = s
                .files
                .remove(path)
                .ok_or_else(|| io_error(io::ErrorKind::NotFound, "no such file"))?;
            s.removed.insert(path.to_owned(), file);
            Ok(())
        })
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.with(|s| {
            for (path, file) in s.files.iter_mut() {
                if path.parent() == Some(dir) {
                    file.entry_unsynced = false;
                }
            }
            s.removed.retain(|path, _| path.parent() != Some(dir));
            Ok(())
        })
    }
}

/// A small deterministic random number generator (xorshift64*).
pub struct XorShift(pub u64);

impl XorShift {
    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}
