//! The event log: one record per accepted batch, in acceptance order.
//!
//! The log seq is the order of acceptance across all requests; the service
//! appends under its sequencer lock, so seq order is delivery order. On
//! start, the log past the last checkpoint is replayed into the entities.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::event::Event;
use crate::store::codec::{be, decode, encode, read_be};
use crate::store::{record, StoreError, StoreResult};
use crate::time::Timestamp;

/// One accepted batch.
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
}

impl EventLog {
    pub(crate) fn open(db: &sled::Db) -> StoreResult<EventLog> {
        let tree = db.open_tree("log")?;
        let next = tree.last()?.and_then(|(k, _)| read_be(&k)).map_or(1, |s| s + 1);
        Ok(EventLog {
            tree,
            next: AtomicU64::new(next),
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
        self.tree.insert(be(seq), bytes)?;
        self.next.store(seq + 1, Ordering::Release);
        Ok(seq)
    }

    /// Appends a batch together with `ids`, writes to another tree (the
    /// event ids the batch makes known), in one transaction: after a crash
    /// both are there or neither. Returns the seq.
    ///
    /// NB: two separate writes are not enough. sled recovers a prefix of
    /// the writes, and a record kept without its ids would be accepted
    /// again, and evaluated twice, when the client retries the request
    /// whose answer the crash took.
    ///
    /// # Invariants
    /// As [`EventLog::append`].
    pub fn append_with(&self, record: &LogRecord, ids: (&sled::Tree, &sled::Batch)) -> StoreResult<u64> {
        use sled::transaction::TransactionError;
        use sled::Transactional;
        let bytes = encode(record)?;
        let seq = self.next.load(Ordering::Acquire);
        (&self.tree, ids.0)
            .transaction(|(log, other)| {
                log.insert(&be(seq)[..], bytes.as_slice())?;
                other.apply_batch(ids.1)?;
                Ok(())
            })
            .map_err(|e: TransactionError<()>| match e {
                TransactionError::Storage(e) => StoreError::from(e),
                TransactionError::Abort(()) => StoreError::Sled("the log transaction aborted".into()),
            })?;
        self.next.store(seq + 1, Ordering::Release);
        Ok(seq)
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
        let mut batch = sled::Batch::default();
        for item in self.tree.range(..=be(through)) {
            let (k, _) = item?;
            batch.remove(k);
            removed += 1;
            if removed % 10_000 == 0 {
                self.tree.apply_batch(std::mem::take(&mut batch))?;
            }
        }
        self.tree.apply_batch(batch)?;
        Ok(removed)
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
