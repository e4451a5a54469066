//! Entity snapshots and the timers of passivated entities.
//!
//! A snapshot holds an entity's engine state plus what the service needs to
//! resume it: the last journal place applied (a replay skips older events) and the
//! anchor of its wall-clock-driven clock. Timers are a second index, keyed
//! by due wall time, so the timer service finds due passivated entities
//! with one range scan.

use serde::{Deserialize, Serialize};

use crate::engine::KeyState;
use crate::store::codec::decode;
use crate::store::StoreResult;
use crate::time::Timestamp;

/// Where an entity's clock was last set by an event: between events the
/// clock runs on from `clock` at wall-clock speed since `wall`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockAnchor {
    /// The entity's clock at the anchor.
    pub clock: Timestamp,
    /// Wall time at the anchor.
    pub wall: Timestamp,
}

impl ClockAnchor {
    /// The entity's clock at wall time `now`.
    pub fn clock_at(&self, now: Timestamp) -> Timestamp {
        self.clock
            .plus(now.since(self.wall).max(crate::time::Duration::ZERO))
    }

    /// The wall time at which the clock reaches `clock`.
    pub fn wall_at(&self, clock: Timestamp) -> Timestamp {
        self.wall
            .plus(clock.since(self.clock).max(crate::time::Duration::ZERO))
    }
}

/// What is stored for one entity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntitySnapshot {
    /// The engine state.
    pub state: KeyState,
    /// Place (journal LSN, index among the frame's events) of the last
    /// event applied to this entity; a replay skips events at or before it.
    pub applied: (u64, u32),
    /// The clock's wall anchor.
    pub anchor: Option<ClockAnchor>,
    /// Wall time of the timer entry written with this snapshot, if any.
    pub timer_due: Option<Timestamp>,
    /// Scale-out mode: per partition of the events topic, the offset of
    /// the last record applied that came through the repartition topic
    /// (a `partition_by` rule's). Absent from snapshots written before it
    /// existed: they read as none.
    #[serde(default)]
    pub repartitioned: Vec<(u16, u64)>,
}
/// How far a snapshot's entity got in the events it was given: the place
/// of the last event applied, then the sum of its repartitioned marks.
/// Between two snapshots of one entity the one further along is the newer
/// state (the same events give the same state).
pub type Progress = (u64, u32, u64);

impl EntitySnapshot {
    /// How far the entity got (see [`Progress`]).
    pub fn progress(&self) -> Progress {
        (
            self.applied.0,
            self.applied.1,
            self.repartitioned.iter().map(|(_, o)| *o).sum(),
        )
    }
}

// NB: format 2 is format 1 written positionally (arrays, no field names):
// a third of the bytes. The decoder reads both.
impl crate::store::codec::Record for EntitySnapshot {
    const KIND: &'static str = "entity snapshot";
    const FORMAT: u8 = 2;
    const READS_SINCE: u8 = 1;
    const POSITIONAL: bool = true;
}

/// The same layout as [`EntitySnapshot`], borrowing the state: an entity
/// encodes its snapshot in place instead of cloning its state to hand over.
#[derive(Serialize)]
struct EntitySnapshotRef<'s> {
    state: &'s KeyState,
    applied: (u64, u32),
    anchor: Option<ClockAnchor>,
    timer_due: Option<Timestamp>,
    repartitioned: &'s [(u16, u64)],
}

/// A snapshot encoded for the store, with the timer entry it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedSnapshot {
    bytes: Vec<u8>,
    timer_due: Option<Timestamp>,
}

impl EncodedSnapshot {
    /// Encodes the snapshot of `state` (positional, [`EntitySnapshot`]'s
    /// current format).
    pub fn encode(
        state: &KeyState,
        applied: (u64, u32),
        anchor: Option<ClockAnchor>,
        timer_due: Option<Timestamp>,
        repartitioned: &[(u16, u64)],
    ) -> StoreResult<EncodedSnapshot> {
        let bytes = crate::store::codec::encode_as::<EntitySnapshot, _>(&EntitySnapshotRef {
            state,
            applied,
            anchor,
            timer_due,
            repartitioned,
        })?;
        Ok(EncodedSnapshot { bytes, timer_due })
    }

    /// The wall time of the timer entry it carries.
    pub fn timer_due(&self) -> Option<Timestamp> {
        self.timer_due
    }

    /// The encoded bytes, as the store holds them.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// A snapshot encoded elsewhere (read from the scale-out mode's
    /// changelog), with the timer entry it carries, and its progress; an
    /// error if it is not a snapshot this build reads.
    pub fn from_bytes(bytes: Vec<u8>) -> StoreResult<(EncodedSnapshot, Progress)> {
        let snapshot: EntitySnapshot = decode(&bytes)?;
        let progress = snapshot.progress();
        Ok((
            EncodedSnapshot {
                bytes,
                timer_due: snapshot.timer_due,
            },
            progress,
        ))
    }
}

/// The `snapshots` and `timers` trees.
pub struct EntityStore {
    snapshots: sled::Tree,
    timers: sled::Tree,
    partitions: u16,
}

/// One snapshot write: the new snapshot (or `None` to delete the entity)
/// and the timer entry the previous snapshot wrote (to remove).
pub struct SnapshotWrite {
    /// Entity key.
    pub key: String,
    /// New snapshot; `None` deletes.
    pub snapshot: Option<EncodedSnapshot>,
    /// The previous snapshot's timer entry.
    pub old_timer: Option<Timestamp>,
}

impl EntityStore {
    pub(crate) fn open(db: &sled::Db, partitions: u16) -> StoreResult<EntityStore> {
        Ok(EntityStore {
            snapshots: db.open_tree("snapshots")?,
            timers: db.open_tree("timers")?,
            partitions: partitions.max(1),
        })
    }

    /// The partition of `key`: `hash(key) mod P` (DESIGN §1).
    pub fn partition_of(&self, key: &str) -> u16 {
        partition_of(key, self.partitions)
    }

    fn snapshot_key(&self, key: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(2 + key.len());
        k.extend_from_slice(&self.partition_of(key).to_be_bytes());
        k.extend_from_slice(key.as_bytes());
        k
    }

    /// The stored snapshot of `key`.
    pub fn get(&self, key: &str) -> StoreResult<Option<EntitySnapshot>> {
        match self.snapshots.get(self.snapshot_key(key))? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Writes a batch of snapshots.
    ///
    /// NB: new timer entries are written before the snapshots and stale ones
    /// removed after, so a crash in between leaves at worst an extra timer
    /// (a harmless early wake), never a snapshot whose timer is missing.
    pub fn write(&self, writes: &[SnapshotWrite]) -> StoreResult<()> {
        // NB: plain writes, not sled batches: applying a batch takes sled's
        // process-wide write lock, and a checkpoint's batches of a thousand
        // snapshots stopped every other read and write (ingest, alerts,
        // activations) for tens of milliseconds each, a second in all per
        // round at 100,000 entities. Nothing here needs a batch's
        // atomicity: sled recovers a prefix of the writes, and the order
        // (new timers, snapshots, stale timers) keeps every snapshot's timer
        // on disk before the snapshot, whatever prefix survives.
        for w in writes {
            if let Some(due) = w.snapshot.as_ref().and_then(|s| s.timer_due) {
                self.timers.insert(timer_key(due, &w.key), &[])?;
            }
        }
        // NB: in key order: consecutive writes land in the same leaf, which
        // sled then rewrites once rather than once per scattered write.
        let mut keyed: Vec<(Vec<u8>, &SnapshotWrite)> = writes
            .iter()
            .map(|w| (self.snapshot_key(&w.key), w))
            .collect();
        keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (key, w) in keyed {
            match &w.snapshot {
                Some(s) => {
                    self.snapshots.insert(key, s.bytes.as_slice())?;
                }
                None => {
                    self.snapshots.remove(key)?;
                }
            }
        }
        for w in writes {
            let new_due = w.snapshot.as_ref().and_then(|s| s.timer_due);
            if let Some(old) = w.old_timer.filter(|old| Some(*old) != new_due) {
                self.timers.remove(timer_key(old, &w.key))?;
            }
        }
        Ok(())
    }

    /// Timer entries after the scan position `cursor` (exclusive; empty for
    /// the beginning) and due at or before `until`, earliest first, at most
    /// `limit`; and the position to continue from.
    pub fn due_timers(
        &self,
        cursor: &[u8],
        until: Timestamp,
        limit: usize,
    ) -> StoreResult<(Vec<DueTimer>, Vec<u8>)> {
        use std::ops::Bound;
        let end = timer_key_bound(until);
        let start = if cursor.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(cursor.to_vec())
        };
        let mut due = Vec::new();
        let mut next = cursor.to_vec();
        for item in self
            .timers
            .range::<Vec<u8>, _>((start, Bound::Included(end.clone())))
            .take(limit)
        {
            let (k, _) = item?;
            if let Some(entry) = parse_timer_key(&k) {
                due.push(entry);
            }
            next = k.to_vec();
        }
        if due.len() < limit && next < end {
            next = end;
        }
        Ok((due, next))
    }

    /// Removes one timer entry.
    pub fn remove_timer(&self, due: Timestamp, key: &str) -> StoreResult<()> {
        self.timers.remove(timer_key(due, key))?;
        Ok(())
    }

    /// Number of stored snapshots.
    pub fn len(&self) -> usize {
        self.snapshots.len()
    }

    /// True when no snapshot is stored.
    pub fn is_empty(&self) -> bool {
        self.snapshots.is_empty()
    }

    /// Moves every snapshot under the partition this build computes for its
    /// key (store format 1 used xxh3); returns how many moved. Idempotent: a
    /// crash in the middle leaves keys under one partition or the other,
    /// never both, and a second run finishes the job.
    pub fn rekey_snapshots(&self) -> StoreResult<u64> {
        let mut moved = 0;
        let keys: Vec<sled::IVec> = self.snapshots.iter().keys().collect::<Result<_, _>>()?;
        for old in keys {
            let Some(key) = old.get(2..).and_then(|k| std::str::from_utf8(k).ok()) else {
                continue;
            };
            let new = self.snapshot_key(key);
            if new[..] == old[..] {
                continue;
            }
            if let Some(value) = self.snapshots.get(&old)? {
                // NB: the new key first; a crash between the two writes
                // leaves both, and the next run removes the old one.
                self.snapshots.insert(new, value)?;
                self.snapshots.remove(old)?;
                moved += 1;
            }
        }
        Ok(moved)
    }

    /// Every stored entity key (for tests and administration; O(n)).
    pub fn keys(&self) -> impl Iterator<Item = StoreResult<String>> {
        self.snapshots.iter().map(|item| {
            let (k, _) = item?;
            Ok(String::from_utf8_lossy(k.get(2..).unwrap_or_default()).into_owned())
        })
    }
}

/// A stored timer: when it is due, and whose.
pub type DueTimer = (Timestamp, String);

/// The partition of `key`: `murmur2(key) mod partitions`, as Kafka's
/// default partitioner computes it (DESIGN §1).
pub fn partition_of(key: &str, partitions: u16) -> u16 {
    crate::journal::partition::partition_of(key, partitions)
}

/// Sortable bytes of a time: i64 with the sign bit flipped, big-endian.
fn time_bytes(t: Timestamp) -> [u8; 8] {
    ((t.millis() as u64) ^ (1 << 63)).to_be_bytes()
}

fn timer_key(due: Timestamp, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key.len());
    k.extend_from_slice(&time_bytes(due));
    k.extend_from_slice(key.as_bytes());
    k
}

/// A bound above every timer key with due time `until`: keys are UTF-8,
/// which never contains the byte 0xff.
fn timer_key_bound(until: Timestamp) -> Vec<u8> {
    let mut k = time_bytes(until).to_vec();
    k.push(0xff);
    k
}

fn parse_timer_key(k: &[u8]) -> Option<(Timestamp, String)> {
    let time: [u8; 8] = k.get(..8)?.try_into().ok()?;
    let millis = (u64::from_be_bytes(time) ^ (1 << 63)) as i64;
    let key = String::from_utf8(k.get(8..)?.to_vec()).ok()?;
    Some((Timestamp(millis), key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_keys_sort_by_time_including_before_the_epoch() {
        let a = timer_key(Timestamp(-5), "z");
        let b = timer_key(Timestamp(3), "a");
        let c = timer_key(Timestamp(3), "b");
        assert!(a < b && b < c);
        assert_eq!(parse_timer_key(&c), Some((Timestamp(3), "b".into())));
        assert!(c < timer_key_bound(Timestamp(3)));
        assert!(timer_key(Timestamp(4), "") > timer_key_bound(Timestamp(3)));
    }

    #[test]
    fn snapshots_are_positional_and_the_named_format_before_them_still_reads() {
        use crate::store::codec::{decode, encode};
        let mut state = KeyState::new("acct-1");
        state
            .attributes
            .insert("tier".into(), serde_json::json!(["gold", 3, 1.5]));
        state.clock = Some(Timestamp(1_000));
        let snapshot = EntitySnapshot {
            state,
            applied: (7, 2),
            anchor: Some(ClockAnchor {
                clock: Timestamp(1_000),
                wall: Timestamp(9_000),
            }),
            timer_due: None,
            repartitioned: vec![(3, 17)],
        };
        let positional = encode(&snapshot).unwrap();
        assert_eq!(positional[0], 2);
        // What an entity hands over, encoded from its borrowed state, is the
        // same record.
        let borrowed = EncodedSnapshot::encode(
            &snapshot.state,
            snapshot.applied,
            snapshot.anchor,
            snapshot.timer_due,
            &snapshot.repartitioned,
        )
        .unwrap();
        assert_eq!(borrowed.bytes, positional);
        assert_eq!(decode::<EntitySnapshot>(&positional).unwrap(), snapshot);
        // Format 1, as the previous build wrote it: a map of field names.
        let mut named = vec![1u8];
        rmp_serde::encode::write_named(&mut named, &snapshot).unwrap();
        assert!(named.len() > positional.len());
        assert_eq!(decode::<EntitySnapshot>(&named).unwrap(), snapshot);
        // Written before `repartitioned` existed: the array is one shorter.
        #[derive(Serialize)]
        struct Before<'s>(
            &'s KeyState,
            (u64, u32),
            Option<ClockAnchor>,
            Option<Timestamp>,
        );
        let mut before = vec![2u8];
        rmp_serde::encode::write(
            &mut before,
            &Before(&snapshot.state, snapshot.applied, snapshot.anchor, None),
        )
        .unwrap();
        let read = decode::<EntitySnapshot>(&before).unwrap();
        assert_eq!(read.applied, snapshot.applied);
        assert!(read.repartitioned.is_empty());
    }

    #[test]
    fn the_clock_runs_from_its_anchor_at_wall_speed() {
        let anchor = ClockAnchor {
            clock: Timestamp(1_000),
            wall: Timestamp(50_000),
        };
        assert_eq!(anchor.clock_at(Timestamp(50_500)), Timestamp(1_500));
        assert_eq!(anchor.clock_at(Timestamp(40_000)), Timestamp(1_000));
        assert_eq!(anchor.wall_at(Timestamp(3_000)), Timestamp(52_000));
    }
}
