//! Event-id deduplication (DESIGN §2) off the commit path.
//!
//! A repeat of an id already accepted for the same key within the horizon
//! is acknowledged and ignored. The ids are remembered in memory
//! ([`IdIndex`]: a 128-bit fingerprint of key and id, and when it was
//! accepted), checked and updated under the journal's sequencer with no
//! write of their own. They survive restarts through the id log
//! ([`IdLog`]): fingerprints written behind the journal, only once the
//! frame holding their events is durable, in files that outlive the
//! journal's retention. At start the index is rebuilt from the id log and
//! the journal frames after the last one it covers.
//!
//! Memory is bounded: at `max_ids` the oldest ids are forgotten early,
//! counted (`cepheus_dedup_ids_forgotten_total`) and logged, which shortens
//! the horizon for the oldest ids rather than grow without bound.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::journal::file::{JournalFile, JournalFs};
use crate::journal::JournalError;
use crate::time::{Duration, Timestamp};

/// 128 bits of xxh3 over an event's key and id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(pub u64, pub u64);

impl std::hash::Hash for Fingerprint {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // NB: already uniformly distributed; see `PassThrough`.
        state.write_u64(self.0 ^ self.1);
    }
}

impl Fingerprint {
    /// The fingerprint of `id` under `key`.
    pub fn of(key: &str, id: &str) -> Fingerprint {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        // NB: the key's length first, so ("ab", "c") and ("a", "bc") differ.
        h.update(&(key.len() as u32).to_le_bytes());
        h.update(key.as_bytes());
        h.update(id.as_bytes());
        let v = h.digest128();
        Fingerprint((v >> 64) as u64, v as u64)
    }

    fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.0.to_le_bytes());
        b[8..].copy_from_slice(&self.1.to_le_bytes());
        b
    }

    fn from_bytes(b: &[u8]) -> Fingerprint {
        Fingerprint(
            u64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
            u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")),
        )
    }
}

/// A hasher that passes a fingerprint's bits through.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The ids accepted within the horizon, oldest first.
pub struct IdIndex {
    set: HashSet<Fingerprint, BuildHasherDefault<PassThrough>>,
    /// Acceptance order: (fingerprint, accepted at), times never go back.
    order: VecDeque<(Fingerprint, i64)>,
    horizon: Duration,
    max_ids: usize,
    /// Ids forgotten before their horizon because of `max_ids`.
    forgotten: u64,
}

impl IdIndex {
    /// An empty index.
    pub fn new(horizon: Duration, max_ids: usize) -> IdIndex {
        IdIndex {
            set: HashSet::default(),
            order: VecDeque::new(),
            horizon,
            max_ids: max_ids.max(1),
            forgotten: 0,
        }
    }

    /// An empty index with the same horizon and bound.
    pub fn emptied(&self) -> IdIndex {
        IdIndex::new(self.horizon, self.max_ids)
    }

    /// Whether `fp` was accepted within the horizon before `now`; if not,
    /// remembers it as accepted at `now`.
    pub fn check_and_remember(&mut self, fp: Fingerprint, now: Timestamp) -> bool {
        self.expire(now);
        if self.set.contains(&fp) {
            return true;
        }
        self.remember(fp, now);
        false
    }

    /// Remembers `fp` as accepted at `at` (rebuilding at start).
    pub fn remember(&mut self, fp: Fingerprint, at: Timestamp) {
        if self.set.insert(fp) {
            self.order.push_back((fp, at.millis()));
        }
        while self.order.len() > self.max_ids {
            if let Some((old, _)) = self.order.pop_front() {
                self.set.remove(&old);
                self.forgotten += 1;
            }
        }
    }

    /// Forgets ids older than the horizon.
    pub fn expire(&mut self, now: Timestamp) {
        let cutoff = now.minus(self.horizon).millis();
        while let Some(&(fp, at)) = self.order.front() {
            if at > cutoff {
                break;
            }
            self.order.pop_front();
            self.set.remove(&fp);
        }
    }

    /// Number of ids held.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True when no id is held.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Takes the count of ids forgotten early since the last call.
    pub fn take_forgotten(&mut self) -> u64 {
        std::mem::take(&mut self.forgotten)
    }
}

/// Bytes of one id-log entry: fingerprint and acceptance time.
const ENTRY: usize = 24;
/// Bytes of a chunk header: entry count u32 | LSN covered u64 | crc32c u32.
const CHUNK_HEADER: usize = 16;
/// An id-log file is closed once it holds this many bytes.
const FILE_BYTES: u64 = 64 << 20;

/// The id log: chunks of `(fingerprint, accepted at)` entries, each chunk
/// saying the journal LSN it covers, in files `NNNNNNNNNNNNNNNNNNNN.ids`
/// named by the first LSN they cover. Written by one thread, behind the
/// journal.
pub struct IdLog {
    fs: Arc<dyn JournalFs>,
    dir: PathBuf,
    file: Option<(PathBuf, Arc<dyn JournalFile>, u64)>,
    /// The newest LSN written (whether synced or not).
    written_lsn: u64,
    /// The newest entry time written to the current file.
    newest_in_file: i64,
    /// Closed files with the newest entry time they hold.
    closed: Vec<(PathBuf, i64)>,
}

/// What reading the id log gave.
pub struct IdLogContents {
    /// Entries in order.
    pub entries: Vec<(Fingerprint, Timestamp)>,
    /// The newest journal LSN the log covers (0 when empty).
    pub lsn: u64,
}

fn io_error(path: &Path, what: &str, e: std::io::Error) -> JournalError {
    JournalError::Io(format!("{what} {}: {e}", path.display()))
}

fn parse_name(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_suffix(".ids")?.parse().ok()
}

impl IdLog {
    /// Opens the id log in `dir` and reads the entries accepted after
    /// `since`. A torn last chunk is cut off.
    pub fn open(
        fs: Arc<dyn JournalFs>,
        dir: &Path,
        since: Timestamp,
    ) -> Result<(IdLog, IdLogContents), JournalError> {
        fs.create_dir_all(dir)
            .map_err(|e| io_error(dir, "cannot create", e))?;
        let mut files: Vec<(u64, PathBuf)> = fs
            .list(dir)
            .map_err(|e| io_error(dir, "cannot list", e))?
            .into_iter()
            .filter_map(|p| Some((parse_name(&p)?, p)))
            .collect();
        files.sort();
        let mut contents = IdLogContents {
            entries: Vec::new(),
            lsn: 0,
        };
        let mut closed = Vec::new();
        for (_, path) in &files {
            let file = fs
                .open(path)
                .map_err(|e| io_error(path, "cannot open", e))?;
            let len = file
                .byte_len()
                .map_err(|e| io_error(path, "cannot stat", e))?;
            let mut bytes = vec![0u8; len as usize];
            let mut got = 0;
            while got < bytes.len() {
                let n = file
                    .read_at(&mut bytes[got..], got as u64)
                    .map_err(|e| io_error(path, "cannot read", e))?;
                if n == 0 {
                    break;
                }
                got += n;
            }
            bytes.truncate(got);
            let (newest, good) = read_chunks(&bytes, since, &mut contents);
            if good < bytes.len() {
                // A torn chunk (a crash while it was written): cut it off.
                file.set_len(good as u64)
                    .and_then(|()| file.sync_data())
                    .map_err(|e| io_error(path, "cannot cut the torn end of", e))?;
            }
            closed.push((path.clone(), newest));
        }
        let log = IdLog {
            fs,
            dir: dir.to_owned(),
            file: None,
            written_lsn: contents.lsn,
            newest_in_file: i64::MIN,
            closed,
        };
        Ok((log, contents))
    }

    /// Appends the ids of journal frames through `lsn` (not yet synced).
    pub fn append(
        &mut self,
        lsn: u64,
        entries: &[(Fingerprint, Timestamp)],
    ) -> Result<(), JournalError> {
        if entries.is_empty() {
            self.written_lsn = self.written_lsn.max(lsn);
            return Ok(());
        }
        let mut chunk = Vec::with_capacity(CHUNK_HEADER + ENTRY * entries.len());
        chunk.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        chunk.extend_from_slice(&lsn.to_le_bytes());
        chunk.extend_from_slice(&[0; 4]);
        for (fp, at) in entries {
            chunk.extend_from_slice(&fp.to_bytes());
            chunk.extend_from_slice(&at.millis().to_le_bytes());
        }
        let crc = crc32c::crc32c_append(crc32c::crc32c(&chunk[..12]), &chunk[CHUNK_HEADER..]);
        chunk[12..16].copy_from_slice(&crc.to_le_bytes());
        if self.file.as_ref().is_none_or(|f| f.2 >= FILE_BYTES) {
            self.start_file(lsn)?;
        }
        let (path, file, end) = self.file.as_mut().expect("a file was just started");
        file.write_all_at(&chunk, *end)
            .map_err(|e| io_error(path, "cannot write to", e))?;
        *end += chunk.len() as u64;
        self.written_lsn = lsn;
        if let Some((_, at)) = entries.last() {
            self.newest_in_file = self.newest_in_file.max(at.millis());
        }
        Ok(())
    }

    /// The newest journal LSN appended.
    pub fn written_lsn(&self) -> u64 {
        self.written_lsn
    }

    /// Makes what was appended durable.
    pub fn sync(&self) -> Result<(), JournalError> {
        if let Some((path, file, _)) = &self.file {
            file.sync_data()
                .map_err(|e| io_error(path, "cannot sync", e))?;
        }
        Ok(())
    }

    /// Removes the closed files whose newest id is older than `oldest`.
    pub fn remove_older_than(&mut self, oldest: Timestamp) -> Result<usize, JournalError> {
        let before = self.closed.len();
        let mut kept = Vec::new();
        for (path, newest) in std::mem::take(&mut self.closed) {
            if newest < oldest.millis() {
                self.fs
                    .remove(&path)
                    .map_err(|e| io_error(&path, "cannot remove", e))?;
            } else {
                kept.push((path, newest));
            }
        }
        self.closed = kept;
        let removed = before - self.closed.len();
        if removed > 0 {
            self.fs
                .sync_dir(&self.dir)
                .map_err(|e| io_error(&self.dir, "cannot sync", e))?;
        }
        Ok(removed)
    }

    fn start_file(&mut self, lsn: u64) -> Result<(), JournalError> {
        if let Some((path, file, _)) = self.file.take() {
            file.sync_data()
                .map_err(|e| io_error(&path, "cannot sync", e))?;
            self.closed.push((path, self.newest_in_file));
        }
        let path = self.dir.join(format!("{lsn:020}.ids"));
        // NB: a crash can leave an empty file of this name behind.
        let file = match self.fs.create(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => self
                .fs
                .open(&path)
                .and_then(|f| f.set_len(0).map(|()| f))
                .map_err(|e| io_error(&path, "cannot reuse", e))?,
            Err(e) => return Err(io_error(&path, "cannot create", e)),
        };
        self.fs
            .sync_dir(&self.dir)
            .map_err(|e| io_error(&self.dir, "cannot sync", e))?;
        self.file = Some((path, file, 0));
        self.newest_in_file = i64::MIN;
        Ok(())
    }
}

/// Reads the whole chunks of `bytes` into `contents` (entries at or after
/// `since`); returns the newest entry time and the bytes of whole chunks.
fn read_chunks(bytes: &[u8], since: Timestamp, contents: &mut IdLogContents) -> (i64, usize) {
    let mut at = 0;
    let mut newest = i64::MIN;
    while bytes.len() - at >= CHUNK_HEADER {
        let h = &bytes[at..at + CHUNK_HEADER];
        let count = u32::from_le_bytes(h[..4].try_into().expect("4 bytes")) as usize;
        let lsn = u64::from_le_bytes(h[4..12].try_into().expect("8 bytes"));
        let crc = u32::from_le_bytes(h[12..16].try_into().expect("4 bytes"));
        let end = at + CHUNK_HEADER + count * ENTRY;
        if count == 0 || end > bytes.len() {
            break;
        }
        let body = &bytes[at + CHUNK_HEADER..end];
        if crc32c::crc32c_append(crc32c::crc32c(&h[..12]), body) != crc {
            break;
        }
        for entry in body.chunks_exact(ENTRY) {
            let time = i64::from_le_bytes(entry[16..].try_into().expect("8 bytes"));
            newest = newest.max(time);
            if time >= since.millis() {
                contents
                    .entries
                    .push((Fingerprint::from_bytes(entry), Timestamp(time)));
            }
        }
        contents.lsn = contents.lsn.max(lsn);
        at = end;
    }
    (newest, at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::memfs::MemFs;

    #[test]
    fn an_id_is_a_duplicate_within_the_horizon_and_new_after_it() {
        let mut index = IdIndex::new(Duration::from_secs(10), 100);
        let a = Fingerprint::of("acct-1", "e-1");
        assert_ne!(a, Fingerprint::of("acct-2", "e-1"));
        assert_ne!(Fingerprint::of("ab", "c"), Fingerprint::of("a", "bc"));
        assert!(!index.check_and_remember(a, Timestamp(1_000)));
        assert!(index.check_and_remember(a, Timestamp(10_999)));
        assert!(!index.check_and_remember(a, Timestamp(11_000)));
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn at_its_limit_the_index_forgets_the_oldest_and_counts_them() {
        let mut index = IdIndex::new(Duration::from_secs(3600), 3);
        for i in 0..5 {
            index.check_and_remember(Fingerprint::of("k", &i.to_string()), Timestamp(i));
        }
        assert_eq!(index.len(), 3);
        assert_eq!(index.take_forgotten(), 2);
        assert!(!index.check_and_remember(Fingerprint::of("k", "0"), Timestamp(9)));
        assert!(index.check_and_remember(Fingerprint::of("k", "4"), Timestamp(9)));
    }

    #[test]
    fn the_id_log_reads_back_what_was_synced_and_cuts_a_torn_chunk() {
        let fs = MemFs::new();
        let dir = Path::new("/data/ids");
        let (mut log, contents) = IdLog::open(Arc::new(fs.clone()), dir, Timestamp(0)).unwrap();
        assert!(contents.entries.is_empty());
        let first: Vec<_> = (0..3)
            .map(|i| (Fingerprint::of("k", &i.to_string()), Timestamp(100 + i)))
            .collect();
        log.append(5, &first).unwrap();
        log.sync().unwrap();
        let second = vec![(Fingerprint::of("k", "x"), Timestamp(200))];
        log.append(9, &second).unwrap();
        // Power cut before the second chunk was synced: it may survive
        // whole, torn, or not at all; the first always does.
        for seed in 1..40 {
            let copy = MemFs::new();
            for path in fs.paths() {
                copy.create(&path).unwrap();
                let file = copy.open(&path).unwrap();
                file.write_all_at(&fs.read_file(&path).unwrap(), 0).unwrap();
                file.sync_data().unwrap();
            }
            copy.sync_dir(dir).unwrap();
            // Unsynced in the copy: the second chunk's bytes.
            let path = copy.paths()[0].clone();
            let synced = 16 + 3 * 24;
            let all = copy.read_file(&path).unwrap();
            copy.overwrite_file(&path, all[..synced].to_vec());
            copy.open(&path)
                .unwrap()
                .write_all_at(&all[synced..], synced as u64)
                .unwrap();
            copy.crash(seed);
            let (_, read) = IdLog::open(Arc::new(copy), dir, Timestamp(0)).unwrap();
            assert_eq!(&read.entries[..3], &first[..], "seed {seed}");
            match read.entries.len() {
                3 => assert_eq!(read.lsn, 5),
                4 => assert_eq!(read.lsn, 9),
                n => panic!("{n} entries"),
            }
        }
        // Reading from a later time leaves older entries out.
        let (_, read) = IdLog::open(Arc::new(fs), dir, Timestamp(102)).unwrap();
        assert_eq!(read.entries.len(), 2);
    }
}
