//! The event log: one record per accepted batch, in acceptance order.
//!
//! The log seq is the order of acceptance across all requests; the service
//! appends under its sequencer lock, so seq order is delivery order. On
//! start, the log past the last checkpoint is replayed into the entities.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::event::Event;
use crate::store::codec::{be, decode, encode, read_be};
use crate::store::{record, StoreError, StoreResult};
use crate::time::Timestamp;

/// Largest log record cepheus writes when it can (an event larger than
/// this is a record on its own).
///
/// NB: sled 0.34 stores a tree node larger than a quarter of its 512 KiB
/// segment as a blob and counts it in its page cache by the size of the
/// pointer, not of the data, so such nodes are never evicted: memory grew
/// with every large record logged (a flood of 2,000-event batches grew the
/// server by the size of the log, whatever `storage.cache_bytes` said). A
/// leaf node holds up to 16 entries, so records under 8 KiB keep every
/// node under the threshold and the cache bound holds.
pub const MAX_RECORD_BYTES: usize = 6 * 1024;

/// Splits accepted events into records of about [`MAX_RECORD_BYTES`]
/// each (at least one event per record), in order. `size` estimates an
/// event's encoded size.
pub fn split_batch(
    events: Vec<Event>,
    accepted_at: Timestamp,
    size: impl Fn(&Event) -> usize,
) -> Vec<LogRecord> {
    let mut records = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for event in events {
        let n = size(&event);
        if !current.is_empty() && bytes + n > MAX_RECORD_BYTES {
            records.push(LogRecord {
                events: std::mem::take(&mut current),
                accepted_at,
            });
            bytes = 0;
        }
        bytes += n;
        current.push(event);
    }
    if !current.is_empty() {
        records.push(LogRecord {
            events: current,
            accepted_at,
        });
    }
    records
}

/// One accepted batch (or, for a large batch, one part of it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// The accepted events, normalized (time filled in), in request order.
    pub events: Vec<Event>,
    /// Wall time of acceptance.
    pub accepted_at: Timestamp,
}
record!(LogRecord, "event log batch", 1);

/// The `log` tree.
pub struct EventLog {
    tree: sled::Tree,
    next: AtomicU64,
    /// Bytes of the records held (their encoded size), kept up to date by
    /// `append` and `remove_through`; the records present at open are added
    /// by a background count (see [`EventLog::open`]).
    bytes: Arc<AtomicU64>,
    /// Whether the background count finished; compaction waits for it.
    counted: Arc<AtomicBool>,
}

impl EventLog {
    /// Opens the log. Its size is counted by a background thread, not here:
    /// counting reads every record, and a restart must serve again at once
    /// whatever the size of the log (a 10 GiB log took seconds).
    pub(crate) fn open(db: &sled::Db) -> StoreResult<EventLog> {
        let tree = db.open_tree("log")?;
        let next = tree
            .last()?
            .and_then(|(k, _)| read_be(&k))
            .map_or(1, |s| s + 1);
        let bytes = Arc::new(AtomicU64::new(0));
        let counted = Arc::new(AtomicBool::new(false));
        {
            // NB: only the records before `next`; later appends count
            // themselves.
            let (tree, bytes, counted) = (tree.clone(), Arc::clone(&bytes), Arc::clone(&counted));
            std::thread::Builder::new()
                .name("cepheus-log-size".into())
                .spawn(move || {
                    let mut sum = 0u64;
                    for (_, v) in tree.range(..be(next)).flatten() {
                        sum += v.len() as u64;
                    }
                    bytes.fetch_add(sum, Ordering::AcqRel);
                    counted.store(true, Ordering::Release);
                })
                .map_err(|e| StoreError::Sled(format!("cannot start the log size count: {e}")))?;
        }
        Ok(EventLog {
            tree,
            next: AtomicU64::new(next),
            bytes,
            counted,
        })
    }

    /// Appends a batch and returns its seq.
    ///
    /// # Invariants
    /// Callers serialize appends (the sequencer lock), so seqs are assigned
    /// and written in one order.
    pub fn append(&self, record: &LogRecord) -> StoreResult<u64> {
        let bytes = encode(record)?;
        let seq = self.next.load(Ordering::Acquire);
        let size = bytes.len() as u64;
        self.tree.insert(be(seq), bytes)?;
        self.next.store(seq + 1, Ordering::Release);
        self.bytes.fetch_add(size, Ordering::AcqRel);
        Ok(seq)
    }

    /// Appends records together with `ids`, writes to another tree (the
    /// event ids they make known), in one transaction: after a crash all
    /// are there or none. The records get consecutive seqs; returns the
    /// first.
    ///
    /// NB: two separate writes are not enough. sled recovers a prefix of
    /// the writes, and a record kept without its ids would be accepted
    /// again, and evaluated twice, when the client retries the request
    /// whose answer the crash took.
    ///
    /// # Invariants
    /// As [`EventLog::append`]. Callers keep each record under
    /// [`MAX_RECORD_BYTES`] when they can ([`split_batch`]).
    pub fn append_with(
        &self,
        records: &[LogRecord],
        ids: (&sled::Tree, &sled::Batch),
    ) -> StoreResult<u64> {
        use sled::transaction::TransactionError;
        use sled::Transactional;
        let encoded = records
            .iter()
            .map(encode)
            .collect::<StoreResult<Vec<_>>>()?;
        let first = self.next.load(Ordering::Acquire);
        (&self.tree, ids.0)
            .transaction(|(log, other)| {
                for (seq, bytes) in (first..).zip(&encoded) {
                    log.insert(&be(seq)[..], bytes.as_slice())?;
                }
                other.apply_batch(ids.1)?;
                Ok(())
            })
            .map_err(|e: TransactionError<()>| match e {
                TransactionError::Storage(e) => StoreError::from(e),
                TransactionError::Abort(()) => {
                    StoreError::Sled("the log transaction aborted".into())
                }
            })?;
        self.next
            .store(first + encoded.len() as u64, Ordering::Release);
        let size: usize = encoded.iter().map(Vec::len).sum();
        self.bytes.fetch_add(size as u64, Ordering::AcqRel);
        Ok(first)
    }

    /// The seq the next append will get.
    pub fn next_seq(&self) -> u64 {
        self.next.load(Ordering::Acquire)
    }

    /// Records with seq `>= from`, in order.
    pub fn read_from(&self, from: u64) -> impl Iterator<Item = StoreResult<(u64, LogRecord)>> {
        self.tree.range(be(from)..).map(|item| {
            let (k, v) = item?;
            let seq = read_be(&k).unwrap_or(0);
            Ok((seq, decode::<LogRecord>(&v)?))
        })
    }

    /// The newest `n` records, newest first.
    pub fn newest(&self, n: usize) -> impl Iterator<Item = StoreResult<(u64, LogRecord)>> {
        self.tree.iter().rev().take(n).map(|item| {
            let (k, v) = item?;
            let seq = read_be(&k).unwrap_or(0);
            Ok((seq, decode::<LogRecord>(&v)?))
        })
    }

    /// The oldest record's seq and acceptance time, if any.
    pub fn first(&self) -> StoreResult<Option<(u64, LogRecord)>> {
        match self.tree.first()? {
            Some((k, v)) => Ok(Some((read_be(&k).unwrap_or(0), decode(&v)?))),
            None => Ok(None),
        }
    }

    /// Removes records with seq `<= through`; returns how many.
    pub fn remove_through(&self, through: u64) -> StoreResult<usize> {
        let mut removed = 0;
        let mut freed = 0u64;
        let mut batch = sled::Batch::default();
        for item in self.tree.range(..=be(through)) {
            let (k, v) = item?;
            batch.remove(k);
            freed += v.len() as u64;
            removed += 1;
            if removed % 10_000 == 0 {
                self.tree.apply_batch(std::mem::take(&mut batch))?;
            }
        }
        self.tree.apply_batch(batch)?;
        self.bytes.fetch_sub(
            freed.min(self.bytes.load(Ordering::Acquire)),
            Ordering::AcqRel,
        );
        Ok(removed)
    }

    /// Removes the oldest records while they are older than `oldest` or the
    /// log holds more than `max_bytes`, but never a record after `keep_after`
    /// (the checkpoint: later records are needed for recovery). Returns how
    /// many records were removed.
    pub fn compact(
        &self,
        oldest: Timestamp,
        max_bytes: u64,
        keep_after: u64,
    ) -> StoreResult<usize> {
        // NB: the newest record always stays: on open, the next seq is read
        // from it, and seqs must never go back (entities compare them with
        // the position they applied).
        if !self.counted.load(Ordering::Acquire) {
            // The size is not known yet; the next round will do it.
            return Ok(0);
        }
        let keep_after = keep_after.min(self.next_seq().saturating_sub(2));
        let mut through = 0;
        let mut bytes = self.bytes.load(Ordering::Acquire);
        for item in self.tree.range(..=be(keep_after)) {
            let (k, v) = item?;
            let seq = read_be(&k).unwrap_or(0);
            let record: LogRecord = decode(&v)?;
            if record.accepted_at >= oldest && bytes <= max_bytes {
                break;
            }
            bytes = bytes.saturating_sub(v.len() as u64);
            through = seq;
        }
        if through == 0 {
            return Ok(0);
        }
        self.remove_through(through)
    }

    /// Whether the size of the records present at open is counted.
    pub fn is_counted(&self) -> bool {
        self.counted.load(Ordering::Acquire)
    }

    /// Bytes the records take (encoded); while [`EventLog::is_counted`] is
    /// false, only those appended since open.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    /// Number of records held.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// True when the log holds nothing.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(at: i64) -> LogRecord {
        LogRecord {
            events: vec![],
            accepted_at: Timestamp(at),
        }
    }

    #[test]
    fn large_batches_are_split_in_order_and_small_ones_are_not() {
        let event = |n: usize| Event {
            id: Some(n.to_string()),
            key: "k".into(),
            event_type: "t".into(),
            time: Timestamp(0),
            data: serde_json::Map::new(),
        };
        let size = |_: &Event| 1_000;
        let records = split_batch((0..15).map(event).collect(), Timestamp(7), size);
        let lens: Vec<usize> = records.iter().map(|r| r.events.len()).collect();
        assert_eq!(lens, [6, 6, 3]);
        let ids: Vec<String> = records
            .iter()
            .flat_map(|r| r.events.iter().map(|e| e.id.clone().unwrap()))
            .collect();
        assert_eq!(ids, (0..15).map(|n| n.to_string()).collect::<Vec<_>>());
        assert_eq!(
            split_batch(vec![event(0)], Timestamp(7), |_| 1 << 20).len(),
            1
        );
        assert!(split_batch(vec![], Timestamp(7), size).is_empty());
    }

    #[test]
    fn compaction_removes_old_records_but_never_past_the_checkpoint() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let log = EventLog::open(&db).unwrap();
        while !log.is_counted() {
            std::thread::yield_now();
        }
        for at in [10, 20, 30, 40, 50] {
            log.append(&record(at)).unwrap();
        }
        let per_record = log.bytes() / 5;
        // Older than 35, but only up to the checkpoint at seq 2.
        assert_eq!(log.compact(Timestamp(35), u64::MAX, 2).unwrap(), 2);
        assert_eq!(log.first().unwrap().unwrap().0, 3);
        // Checkpoint moved on: records 3 (30 < 35) goes; 4 and 5 stay.
        assert_eq!(log.compact(Timestamp(35), u64::MAX, 5).unwrap(), 1);
        // Over the size limit: the oldest go until it fits.
        assert_eq!(log.compact(Timestamp(0), per_record, 5).unwrap(), 1);
        assert_eq!(log.first().unwrap().unwrap().0, 5);
        assert_eq!(log.bytes(), per_record);
        // The newest record always stays, so seqs continue after a reopen.
        assert_eq!(log.compact(Timestamp(1_000), 0, 5).unwrap(), 0);
        drop(log);
        let log = EventLog::open(&db).unwrap();
        assert_eq!(log.next_seq(), 6);
        // The count at open finds the record left.
        while !log.is_counted() {
            std::thread::yield_now();
        }
        assert_eq!(log.bytes(), per_record);
    }
}
