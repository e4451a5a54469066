//! Event-id deduplication per key (DESIGN §2): a repeat of an id already
//! accepted for the same key within the horizon is acknowledged and
//! ignored, so client retries never double count.
//!
//! Ids are remembered in the store's `dedup` tree (`key 0x00 id` → wall
//! time accepted), written under the sequencer lock in one transaction
//! with the log record, so they survive restarts exactly as the events
//! they guard.
//! Entries older than the horizon are ignored and purged in the background.

use std::collections::HashSet;

use crate::event::Event;
use crate::store::codec::read_be;
use crate::store::log::LogRecord;
use crate::store::{Store, StoreResult};
use crate::time::{Duration, Timestamp};

fn dedup_key(key: &str, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1 + id.len());
    k.extend_from_slice(key.as_bytes());
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

/// Moves the events of `events` not seen before (no id, or an id not seen
/// for this key within `horizon` of `now`, in the store or in `in_group`)
/// to `fresh`, remembering their ids in `in_group`; returns how many were
/// duplicates.
pub fn filter_into(
    store: &Store,
    events: Vec<(usize, Event)>,
    now: Timestamp,
    horizon: Duration,
    in_group: &mut HashSet<(String, String)>,
    fresh: &mut Vec<Event>,
) -> StoreResult<usize> {
    let tree = store.dedup_tree();
    let mut duplicates = 0;
    for (_, event) in events {
        if let Some(id) = &event.id {
            let seen_before = match tree.get(dedup_key(&event.key, id))? {
                Some(bytes) => {
                    read_be(&bytes).is_some_and(|t| Timestamp(t as i64).plus(horizon) > now)
                }
                None => false,
            };
            if seen_before || !in_group.insert((event.key.clone(), id.clone())) {
                duplicates += 1;
                continue;
            }
        }
        fresh.push(event);
    }
    Ok(duplicates)
}

/// The dedup entries (key, value) that remember the ids of `events`
/// accepted at `accepted_at`: the one place their stored form is made.
fn id_entries<'e>(
    events: impl IntoIterator<Item = &'e Event> + 'e,
    accepted_at: Timestamp,
) -> impl Iterator<Item = (Vec<u8>, [u8; 8])> + 'e {
    let value = (accepted_at.millis() as u64).to_be_bytes();
    events
        .into_iter()
        .filter_map(move |e| Some((dedup_key(&e.key, e.id.as_ref()?), value)))
}

/// The writes that remember the ids of accepted `events`, to be applied
/// with their log records ([`crate::store::log::EventLog::append_with`]).
pub fn remembering(records: &[LogRecord], now: Timestamp) -> sled::Batch {
    let mut batch = sled::Batch::default();
    for (key, value) in id_entries(records.iter().flat_map(|r| &r.events), now) {
        batch.insert(key, &value);
    }
    batch
}

/// Remembers the ids of accepted `events` with plain writes, for a record
/// appended without a transaction (see `ingest`). Also used by the replay
/// at start, which restores ids that a crash took from after the last
/// checkpoint: sled recovers a prefix of the writes, so a record can
/// survive without the ids written after it, but never a checkpoint that
/// was recorded after them.
pub fn remember(store: &Store, events: &[Event], accepted_at: Timestamp) -> StoreResult<()> {
    let tree = store.dedup_tree();
    for (key, value) in id_entries(events, accepted_at) {
        tree.insert(key, &value)?;
    }
    Ok(())
}

/// Removes ids older than `horizon`; returns how many. Scans at most
/// `budget` entries per call, resuming after `cursor` (returned updated).
pub fn purge(
    store: &Store,
    now: Timestamp,
    horizon: Duration,
    cursor: &mut Vec<u8>,
    budget: usize,
) -> StoreResult<usize> {
    use std::ops::Bound;
    let tree = store.dedup_tree();
    let start = if cursor.is_empty() {
        Bound::Unbounded
    } else {
        Bound::Excluded(cursor.clone())
    };
    let mut batch = sled::Batch::default();
    let mut removed = 0;
    let mut scanned = 0;
    for item in tree
        .range::<Vec<u8>, _>((start, Bound::Unbounded))
        .take(budget)
    {
        let (k, v) = item?;
        scanned += 1;
        if read_be(&v).is_some_and(|t| Timestamp(t as i64).plus(horizon) <= now) {
            batch.remove(k.clone());
            removed += 1;
        }
        *cursor = k.to_vec();
    }
    if scanned < budget {
        cursor.clear();
    }
    tree.apply_batch(batch)?;
    Ok(removed)
}
