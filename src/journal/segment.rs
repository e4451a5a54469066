//! The segment log: frames in order, in segment files named by the LSN of
//! their first frame (`00000000000000000001.seg`).
//!
//! One writer (the committer) appends frames to the active segment and syncs
//! them; readers scan sealed and active segments with their own reads.
//!
//! # Invariants
//! - LSNs are consecutive across the whole log: a segment's base LSN is one
//!   more than the previous segment's last.
//! - A frame is written whole at the end of the active segment and synced
//!   before the next one is written, so only the last frame of the log can
//!   be torn by a crash; [`SegmentLog::open`] cuts it off. A bad frame
//!   anywhere else is corruption: an error that names the file.
//! - A new segment's file, header and directory entry are durable before a
//!   frame is written to it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::journal::file::{JournalFile, JournalFs};
use crate::journal::frame::{
    self, encode_frame, frame_checksum_ok, read_frame_header, HeaderRead, FRAME_HEADER,
    SEGMENT_HEADER,
};
use crate::journal::JournalError;

/// How segments are sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentConfig {
    /// A segment is sealed once it holds this many bytes (a frame larger
    /// than this gets a segment of its own).
    pub segment_bytes: u64,
    /// Space allocated ahead of the writes at a time.
    pub allocate_bytes: u64,
}

impl Default for SegmentConfig {
    fn default() -> Self {
        SegmentConfig {
            segment_bytes: 64 << 20,
            allocate_bytes: 8 << 20,
        }
    }
}

/// A sparse index entry every this many bytes of a segment.
const INDEX_EVERY: u64 = 1 << 20;

/// One segment file.
pub struct Segment {
    /// LSN of its first frame.
    pub base: u64,
    /// Its path.
    pub path: PathBuf,
    file: Arc<dyn JournalFile>,
    /// LSN of its last frame (`base - 1` while empty).
    last: AtomicU64,
    /// Offset just past its last frame.
    end: AtomicU64,
    /// Wall time its first frame was written (ms; `i64::MAX` while empty).
    first_written_at: AtomicI64,
    /// (LSN, offset) of some frames, ascending: where a scan may start.
    index: Mutex<Vec<(u64, u64)>>,
}

impl Segment {
    /// LSN of its last frame (`base - 1` while empty).
    pub fn last(&self) -> u64 {
        self.last.load(Ordering::Acquire)
    }

    /// Bytes of its frames (and header).
    pub fn bytes(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }

    /// Wall time its first frame was written, ms.
    pub fn first_written_at(&self) -> i64 {
        self.first_written_at.load(Ordering::Acquire)
    }

    /// Where a scan for `lsn` may start: the offset of the latest indexed
    /// frame at or before it.
    fn start_for(&self, lsn: u64) -> (u64, u64) {
        let index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        match index.partition_point(|&(l, _)| l <= lsn) {
            0 => (self.base, SEGMENT_HEADER as u64),
            n => index[n - 1],
        }
    }

    fn note(&self, lsn: u64, offset: u64) {
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        let far_enough = index
            .last()
            .is_none_or(|&(l, o)| lsn > l && offset >= o + INDEX_EVERY);
        if far_enough {
            index.push((lsn, offset));
        }
    }
}

/// The file name of the segment starting at `base`.
fn segment_name(base: u64) -> String {
    format!("{base:020}.seg")
}

/// The base LSN a segment file name says, if it is one.
fn parse_segment_name(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 {
        return None;
    }
    digits.parse().ok()
}

/// The writer's position in the active segment.
struct Writer {
    active: Arc<Segment>,
    /// Bytes allocated in the active segment.
    allocated: u64,
    next_lsn: u64,
    /// A sync failed: what is on disk is unknown, nothing more is written.
    poisoned: Option<String>,
}

/// The log of segments.
pub struct SegmentLog {
    fs: Arc<dyn JournalFs>,
    dir: PathBuf,
    config: SegmentConfig,
    segments: RwLock<BTreeMap<u64, Arc<Segment>>>,
    writer: Mutex<Writer>,
}

/// What [`SegmentLog::open`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// LSN of the first frame held (`next` when empty).
    pub first: u64,
    /// LSN the next frame gets.
    pub next: u64,
    /// Bytes cut off the end (a torn last frame), if any.
    pub torn_bytes: u64,
}

fn io_error(path: &Path, what: &str, e: std::io::Error) -> JournalError {
    JournalError::Io(format!("{what} {}: {e}", path.display()))
}

impl SegmentLog {
    /// Opens the log in `dir` (created if missing), cutting off a torn
    /// last frame; an empty log starts at `first_lsn`.
    pub fn open(
        fs: Arc<dyn JournalFs>,
        dir: &Path,
        config: SegmentConfig,
        first_lsn: u64,
    ) -> Result<(SegmentLog, Opened), JournalError> {
        fs.create_dir_all(dir)
            .map_err(|e| io_error(dir, "cannot create", e))?;
        let mut bases: Vec<(u64, PathBuf)> = fs
            .list(dir)
            .map_err(|e| io_error(dir, "cannot list", e))?
            .into_iter()
            .filter_map(|p| Some((parse_segment_name(&p)?, p)))
            .collect();
        bases.sort();
        let mut segments = BTreeMap::new();
        let mut torn_bytes = 0;
        let count = bases.len();
        for (i, (base, path)) in bases.into_iter().enumerate() {
            let file = fs
                .open(&path)
                .map_err(|e| io_error(&path, "cannot open", e))?;
            let is_last = i + 1 == count;
            let mut header = [0u8; SEGMENT_HEADER];
            let n = file
                .read_at(&mut header, 0)
                .map_err(|e| io_error(&path, "cannot read", e))?;
            let read = if n < SEGMENT_HEADER {
                Err("the file is shorter than a segment header".into())
            } else {
                frame::read_segment_header(&header)
            };
            match read {
                Ok(found) if found == base => {}
                Ok(found) => {
                    return Err(JournalError::Corrupt {
                        path,
                        offset: 0,
                        reason: format!("its header says it starts at LSN {found}"),
                    })
                }
                Err(_) if is_last && frames_absent(&*file, n) => {
                    // A crash while the segment was being created: nothing
                    // was ever written to it.
                    drop(file);
                    fs.remove(&path)
                        .map_err(|e| io_error(&path, "cannot remove", e))?;
                    fs.sync_dir(dir)
                        .map_err(|e| io_error(dir, "cannot sync", e))?;
                    continue;
                }
                Err(reason) => {
                    return Err(JournalError::Corrupt {
                        path,
                        offset: 0,
                        reason,
                    })
                }
            }
            let len = file
                .byte_len()
                .map_err(|e| io_error(&path, "cannot stat", e))?;
            let segment = Arc::new(Segment {
                base,
                path: path.clone(),
                file,
                last: AtomicU64::new(base - 1),
                end: AtomicU64::new(len),
                first_written_at: AtomicI64::new(i64::MAX),
                index: Mutex::new(Vec::new()),
            });
            if let Some(first) = read_first_header(&segment)? {
                segment
                    .first_written_at
                    .store(first.written_at, Ordering::Release);
            }
            segments.insert(base, segment);
        }
        // Sealed segments' last LSNs follow from the next one's base.
        let bases: Vec<u64> = segments.keys().copied().collect();
        for pair in bases.windows(2) {
            segments[&pair[0]]
                .last
                .store(pair[1] - 1, Ordering::Release);
        }
        let (writer, first, next) = match segments.values().next_back().cloned() {
            Some(active) => {
                let scan = scan_active(&active)?;
                torn_bytes = scan.torn_bytes;
                if scan.torn_bytes > 0 {
                    active
                        .file
                        .set_len(scan.end)
                        .and_then(|()| active.file.sync_data())
                        .map_err(|e| io_error(&active.path, "cannot cut the torn end of", e))?;
                }
                active.last.store(scan.last, Ordering::Release);
                active.end.store(scan.end, Ordering::Release);
                let allocated = active
                    .file
                    .byte_len()
                    .map_err(|e| io_error(&active.path, "cannot stat", e))?;
                let first = *segments.keys().next().expect("one segment at least");
                (
                    Writer {
                        active,
                        allocated,
                        next_lsn: scan.last + 1,
                        poisoned: None,
                    },
                    first,
                    scan.last + 1,
                )
            }
            None => {
                let (active, allocated) =
                    create_segment(&*fs, dir, first_lsn, config.allocate_bytes)?;
                segments.insert(first_lsn, Arc::clone(&active));
                (
                    Writer {
                        active,
                        allocated,
                        next_lsn: first_lsn,
                        poisoned: None,
                    },
                    first_lsn,
                    first_lsn,
                )
            }
        };
        let log = SegmentLog {
            fs,
            dir: dir.to_owned(),
            config,
            segments: RwLock::new(segments),
            writer: Mutex::new(writer),
        };
        Ok((
            log,
            Opened {
                first,
                next,
                torn_bytes,
            },
        ))
    }

    /// The LSN the next frame gets.
    pub fn next_lsn(&self) -> u64 {
        self.lock_writer().next_lsn
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the frame `lsn` (the next one), not yet synced; seals the
    /// active segment and starts a new one first if it is full.
    ///
    /// NB: a failed write leaves the LSN unused and the end where it was, so
    /// the frame can be written again; bytes of the failed attempt are
    /// overwritten by the next frame (or cut off as a torn end at open).
    pub fn write(&self, lsn: u64, written_at: i64, payload: &[u8]) -> Result<(), JournalError> {
        self.write_frame(lsn, written_at, &encode_frame(lsn, written_at, payload))
    }

    /// As [`SegmentLog::write`], for a frame already sealed
    /// ([`frame::seal_frame`]) with this `lsn` and `written_at`.
    pub fn write_frame(&self, lsn: u64, written_at: i64, bytes: &[u8]) -> Result<(), JournalError> {
        let mut writer = self.lock_writer();
        if let Some(reason) = &writer.poisoned {
            return Err(JournalError::Failed(reason.clone()));
        }
        assert_eq!(lsn, writer.next_lsn, "frames are written in LSN order");
        let end = writer.active.bytes();
        let holds_frames = writer.active.last() >= writer.active.base;
        if holds_frames && end + bytes.len() as u64 > self.config.segment_bytes {
            self.rotate(&mut writer, lsn)?;
        }
        let active = Arc::clone(&writer.active);
        let offset = active.bytes();
        let needed = offset + bytes.len() as u64;
        if needed > writer.allocated {
            let step = self.config.allocate_bytes.max(needed - writer.allocated);
            let wanted = writer.allocated + step;
            // NB: short of space, allocate only what this frame needs.
            let allocated = active
                .file
                .allocate(writer.allocated, step)
                .map(|()| wanted)
                .or_else(|_| {
                    active
                        .file
                        .allocate(writer.allocated, needed - writer.allocated)
                        .map(|()| needed)
                })
                .map_err(|e| io_error(&active.path, "cannot allocate space in", e))?;
            writer.allocated = allocated;
        }
        active
            .file
            .write_all_at(bytes, offset)
            .map_err(|e| io_error(&active.path, "cannot write to", e))?;
        if active.last() < active.base {
            active.first_written_at.store(written_at, Ordering::Release);
        }
        active.note(lsn, offset);
        active.end.store(needed, Ordering::Release);
        active.last.store(lsn, Ordering::Release);
        writer.next_lsn = lsn + 1;
        Ok(())
    }

    /// Makes every frame written so far durable.
    ///
    /// NB: after a failed fdatasync the kernel may have dropped the unsynced
    /// pages and report success next time, so what is on disk is unknown:
    /// the log refuses every later write until a restart re-reads it.
    pub fn sync(&self) -> Result<(), JournalError> {
        let mut writer = self.lock_writer();
        if let Some(reason) = &writer.poisoned {
            return Err(JournalError::Failed(reason.clone()));
        }
        if let Err(e) = writer.active.file.sync_data() {
            let reason = format!(
                "fdatasync of {} failed ({e}); restart cepheus to recover from what is on disk",
                writer.active.path.display()
            );
            writer.poisoned = Some(reason.clone());
            return Err(JournalError::Failed(reason));
        }
        Ok(())
    }

    /// Seals the active segment (trimmed to its frames, synced) and starts
    /// the segment for `next`.
    fn rotate(&self, writer: &mut Writer, next: u64) -> Result<(), JournalError> {
        let sealed = Arc::clone(&writer.active);
        let (fresh, allocated) =
            create_segment(&*self.fs, &self.dir, next, self.config.allocate_bytes)?;
        sealed
            .file
            .set_len(sealed.bytes())
            .and_then(|()| sealed.file.sync_data())
            .map_err(|e| io_error(&sealed.path, "cannot seal", e))?;
        self.segments
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(next, Arc::clone(&fresh));
        writer.active = fresh;
        writer.allocated = allocated;
        Ok(())
    }

    /// The segments, oldest first.
    pub fn segments(&self) -> Vec<Arc<Segment>> {
        self.segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// LSN of the oldest frame held.
    pub fn first_lsn(&self) -> u64 {
        self.segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .next()
            .copied()
            .unwrap_or(0)
    }

    /// Bytes of all segments' frames.
    pub fn bytes(&self) -> u64 {
        self.segments().iter().map(|s| s.bytes()).sum()
    }

    /// Removes the oldest sealed segments for which `remove(segment, next)`
    /// holds (`next`: the segment after it), stopping at the first that is
    /// kept; returns how many were removed. The active segment stays.
    pub fn remove_oldest(
        &self,
        mut remove: impl FnMut(&Segment, &Segment) -> bool,
    ) -> Result<usize, JournalError> {
        let segments = self.segments();
        let mut removed = 0;
        for pair in segments.windows(2) {
            if !remove(&pair[0], &pair[1]) {
                break;
            }
            self.segments
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&pair[0].base);
            self.fs
                .remove(&pair[0].path)
                .map_err(|e| io_error(&pair[0].path, "cannot remove", e))?;
            removed += 1;
        }
        if removed > 0 {
            self.fs
                .sync_dir(&self.dir)
                .map_err(|e| io_error(&self.dir, "cannot sync", e))?;
        }
        Ok(removed)
    }

    /// Frames with LSN in `[from, through]`, in order.
    pub fn read(&self, from: u64, through: u64) -> FrameReader {
        FrameReader {
            segments: self.segments(),
            next: from.max(self.first_lsn()),
            through,
            current: None,
        }
    }
}

/// Whether a segment whose header could not be read holds no frame either
/// (`n`: header bytes read): all zeros after the header position.
fn frames_absent(file: &dyn JournalFile, n: usize) -> bool {
    if n < SEGMENT_HEADER {
        return true;
    }
    let mut h = [0u8; FRAME_HEADER];
    matches!(file.read_at(&mut h, SEGMENT_HEADER as u64), Ok(k) if k < FRAME_HEADER || h.iter().all(|&b| b == 0))
}

/// Creates the segment starting at `base`: file, allocation and header
/// durable, then its directory entry.
fn create_segment(
    fs: &dyn JournalFs,
    dir: &Path,
    base: u64,
    allocate: u64,
) -> Result<(Arc<Segment>, u64), JournalError> {
    let path = dir.join(segment_name(base));
    let file = fs
        .create(&path)
        .map_err(|e| io_error(&path, "cannot create", e))?;
    // NB: short of space, allocate the header only; frames then allocate
    // what they need as they come.
    let header = SEGMENT_HEADER as u64;
    let allocated = file
        .allocate(0, allocate.max(header))
        .map(|()| allocate.max(header))
        .or_else(|_| file.allocate(0, header).map(|()| header));
    let mut size = header;
    let made = allocated
        .and_then(|n| {
            size = n;
            file.write_all_at(&frame::segment_header(base), 0)
        })
        .and_then(|()| file.sync_data())
        .and_then(|()| fs.sync_dir(dir));
    if let Err(e) = made {
        // NB: leave no half-made segment behind for the next attempt.
        let _ = fs.remove(&path);
        return Err(io_error(&path, "cannot create", e));
    }
    let segment = Arc::new(Segment {
        base,
        path,
        file,
        last: AtomicU64::new(base - 1),
        end: AtomicU64::new(SEGMENT_HEADER as u64),
        first_written_at: AtomicI64::new(i64::MAX),
        index: Mutex::new(Vec::new()),
    });
    Ok((segment, size))
}

fn read_first_header(segment: &Segment) -> Result<Option<frame::FrameHeader>, JournalError> {
    let mut h = [0u8; FRAME_HEADER];
    let n = segment
        .file
        .read_at(&mut h, SEGMENT_HEADER as u64)
        .map_err(|e| io_error(&segment.path, "cannot read", e))?;
    if n < FRAME_HEADER {
        return Ok(None);
    }
    Ok(match read_frame_header(&h) {
        HeaderRead::Frame(header, _) => Some(header),
        _ => None,
    })
}

struct ActiveScan {
    last: u64,
    end: u64,
    torn_bytes: u64,
}

/// Reads every frame of the active segment: where it ends, and whether a
/// torn frame follows.
fn scan_active(segment: &Arc<Segment>) -> Result<ActiveScan, JournalError> {
    let len = segment
        .file
        .byte_len()
        .map_err(|e| io_error(&segment.path, "cannot stat", e))?;
    let mut reader = ChunkReader::new(Arc::clone(segment), SEGMENT_HEADER as u64, len);
    let mut expected = segment.base;
    loop {
        let offset = reader.offset;
        match reader.next_frame()? {
            Step::Frame(header, _) if header.lsn == expected => {
                segment.note(header.lsn, offset);
                expected += 1;
            }
            Step::Frame(header, _) => {
                return Err(JournalError::Corrupt {
                    path: segment.path.clone(),
                    offset,
                    reason: format!("frame LSN {} where {expected} belongs", header.lsn),
                });
            }
            Step::End => {
                return Ok(ActiveScan {
                    last: expected - 1,
                    end: offset,
                    torn_bytes: 0,
                })
            }
            Step::Bad { reason, next } => {
                // NB: only the last frame can be torn (frames are synced one
                // at a time). A bad frame followed by a good one is damage
                // to a frame that was durable.
                if let Some(next) = next {
                    let mut after = ChunkReader::new(Arc::clone(segment), next, len);
                    if let Step::Frame(h, _) = after.next_frame()? {
                        if h.lsn == expected + 1 {
                            return Err(JournalError::Corrupt {
                                path: segment.path.clone(),
                                offset,
                                reason: format!("frame {expected}: {reason}, and frames follow it"),
                            });
                        }
                    }
                }
                tracing::warn!(
                    path = %segment.path.display(),
                    offset,
                    lsn = expected,
                    reason = %reason,
                    "cutting off a torn frame at the end of the journal (a crash while it was written)"
                );
                return Ok(ActiveScan {
                    last: expected - 1,
                    end: offset,
                    torn_bytes: len - offset,
                });
            }
        }
    }
}

enum Step {
    Frame(frame::FrameHeader, Vec<u8>),
    End,
    /// Not a good frame; `next`: where the frame after it would start, if
    /// its header was readable.
    Bad {
        reason: String,
        next: Option<u64>,
    },
}

/// Reads frames sequentially from a segment, in large reads.
struct ChunkReader {
    segment: Arc<Segment>,
    /// Offset of the next frame.
    offset: u64,
    limit: u64,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    buf_at: u64,
}

const CHUNK: usize = 1 << 20;

impl ChunkReader {
    fn new(segment: Arc<Segment>, offset: u64, limit: u64) -> Self {
        ChunkReader {
            segment,
            offset,
            limit,
            buf: Vec::new(),
            buf_at: offset,
        }
    }

    /// Makes `[offset, offset + len)` available in `buf`; false if the
    /// segment ends first.
    fn fill(&mut self, offset: u64, len: usize) -> Result<bool, JournalError> {
        if offset + len as u64 > self.limit {
            return Ok(false);
        }
        let in_buf =
            offset >= self.buf_at && offset + len as u64 <= self.buf_at + self.buf.len() as u64;
        if in_buf {
            return Ok(true);
        }
        let want = len.max(CHUNK).min((self.limit - offset) as usize);
        self.buf.resize(want, 0);
        let mut got = 0;
        while got < want {
            let n = self
                .segment
                .file
                .read_at(&mut self.buf[got..], offset + got as u64)
                .map_err(|e| io_error(&self.segment.path, "cannot read", e))?;
            if n == 0 {
                break;
            }
            got += n;
        }
        self.buf.truncate(got);
        self.buf_at = offset;
        Ok(got >= len)
    }

    fn slice(&self, offset: u64, len: usize) -> &[u8] {
        let start = (offset - self.buf_at) as usize;
        &self.buf[start..start + len]
    }

    fn next_frame(&mut self) -> Result<Step, JournalError> {
        let offset = self.offset;
        if !self.fill(offset, FRAME_HEADER)? {
            return Ok(if offset >= self.limit {
                Step::End
            } else {
                Step::Bad {
                    reason: "a frame header runs past the end of the file".into(),
                    next: None,
                }
            });
        }
        let (header, crc) = match read_frame_header(self.slice(offset, FRAME_HEADER)) {
            HeaderRead::End => return Ok(Step::End),
            HeaderRead::Bad(reason) => return Ok(Step::Bad { reason, next: None }),
            HeaderRead::Frame(header, crc) => (header, crc),
        };
        let total = FRAME_HEADER + header.len;
        let next = offset + total as u64;
        if !self.fill(offset, total)? {
            return Ok(Step::Bad {
                reason: format!(
                    "a frame of {} bytes runs past the end of the file",
                    header.len
                ),
                next: None,
            });
        }
        let bytes = self.slice(offset, total);
        if !frame_checksum_ok(bytes, &bytes[FRAME_HEADER..], crc) {
            return Ok(Step::Bad {
                reason: "checksum mismatch".into(),
                next: Some(next),
            });
        }
        let payload = bytes[FRAME_HEADER..].to_vec();
        self.offset = next;
        Ok(Step::Frame(header, payload))
    }
}

/// One frame read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Its LSN.
    pub lsn: u64,
    /// Wall time it was written, ms.
    pub written_at: i64,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// Iterates frames of a range of LSNs, across segments.
pub struct FrameReader {
    segments: Vec<Arc<Segment>>,
    next: u64,
    through: u64,
    current: Option<ChunkReader>,
}

impl FrameReader {
    /// A reader positioned at frame `self.next`, or `None` if no segment
    /// holds it.
    fn seek(&self) -> Result<Option<ChunkReader>, JournalError> {
        let Some(segment) = self
            .segments
            .iter()
            .rev()
            .find(|s| s.base <= self.next)
            .cloned()
        else {
            return Ok(None);
        };
        if segment.last() < self.next {
            return Ok(None);
        }
        let (mut lsn, offset) = segment.start_for(self.next);
        let limit = segment.bytes();
        let mut reader = ChunkReader::new(Arc::clone(&segment), offset, limit);
        while lsn < self.next {
            let at = reader.offset;
            match reader.next_frame()? {
                Step::Frame(..) => lsn += 1,
                _ => return Err(bad_frame(&segment, at, lsn)),
            }
        }
        Ok(Some(reader))
    }

    fn step(&mut self) -> Result<Option<Frame>, JournalError> {
        if self.next > self.through {
            return Ok(None);
        }
        let exhausted = self
            .current
            .as_ref()
            .is_none_or(|r| r.segment.last() < self.next);
        if exhausted {
            self.current = self.seek()?;
        }
        let Some(reader) = self.current.as_mut() else {
            return Ok(None);
        };
        // The active segment grows while it is read.
        reader.limit = reader.segment.bytes();
        let offset = reader.offset;
        match reader.next_frame()? {
            Step::Frame(header, payload) if header.lsn == self.next => {
                frame::check_frame_format(&header)?;
                reader.segment.note(header.lsn, offset);
                self.next += 1;
                Ok(Some(Frame {
                    lsn: header.lsn,
                    written_at: header.written_at,
                    payload,
                }))
            }
            _ => Err(bad_frame(&reader.segment, offset, self.next)),
        }
    }
}

fn bad_frame(segment: &Segment, offset: u64, lsn: u64) -> JournalError {
    JournalError::Corrupt {
        path: segment.path.clone(),
        offset,
        reason: format!("frame {lsn} is damaged or missing"),
    }
}

impl Iterator for FrameReader {
    type Item = Result<Frame, JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.step() {
            Ok(Some(frame)) => Some(Ok(frame)),
            Ok(None) => None,
            Err(e) => {
                self.next = u64::MAX;
                self.through = 0;
                Some(Err(e))
            }
        }
    }
}
