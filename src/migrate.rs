//! Migration of a data directory written by the previous layout (store
//! format 1: the event log, event ids and late-letter ids in sled, snapshots
//! keyed by an xxh3 partition) to this one (the journal beside the store,
//! snapshots keyed by Kafka's partitioner). Runs at the first start; never
//! empties anything silently.
//!
//! 1. The old log's records become journal frames with the same numbers
//!    (a record's seq is the frame's LSN, so the places entity snapshots
//!    applied keep their meaning), the event ids of the dedup horizon go to
//!    the id log, and the identities of late events already dead-lettered
//!    go with their frames (so the first replay does not list them again).
//!    All of it is written in `journal.migrating/`, synced, then renamed to
//!    `journal/`: a crash before the rename starts over.
//! 2. Snapshots are moved to their new partition, the old trees dropped,
//!    the store marked format 2 and flushed. Each step can run again.

use std::path::Path;
use std::sync::Arc;

use crate::journal::dedup::{Fingerprint, IdLog};
use crate::journal::file::{sync_dir, JournalFs, OsFs};
use crate::journal::records::PayloadBuilder;
use crate::journal::segment::{SegmentConfig, SegmentLog};
use crate::journal::{LetterEntry, LetterReason};
use crate::store::codec::read_be;
use crate::store::deadletters::DeadLetterReason;
use crate::store::Store;
use crate::time::{wall_now, Duration, Timestamp};

/// What a migration did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// Log records that became frames.
    pub frames: u64,
    /// Event ids carried over.
    pub ids: u64,
    /// Snapshots moved to their new partition.
    pub snapshots: u64,
}

/// Migrates a format-1 store in place, with its journal in `journal_dir`.
pub fn from_format_1(
    store: &Store,
    journal_dir: &Path,
    segments: SegmentConfig,
    dedup_horizon: Duration,
) -> anyhow::Result<Migrated> {
    use anyhow::Context as _;
    let mut migrated = Migrated::default();
    let checkpoint = store.meta_u64("checkpoint")?.unwrap_or(0);
    let mut last = checkpoint;
    if !journal_dir.exists() {
        let staging = journal_dir.with_extension("migrating");
        if staging.exists() {
            std::fs::remove_dir_all(&staging)
                .with_context(|| format!("cannot remove {}", staging.display()))?;
        }
        let fs: Arc<dyn JournalFs> = Arc::new(OsFs);
        let records: Vec<(u64, crate::store::legacy::LogRecord)> =
            store.legacy_log()?.collect::<Result<_, _>>()?;
        let first = records.first().map_or(checkpoint + 1, |(seq, _)| *seq);
        let late = late_letters(store)?;
        let (log, _) = SegmentLog::open(Arc::clone(&fs), &staging, segments, first)?;
        let mut next = first;
        for (seq, record) in &records {
            // NB: a seq missing in the old log becomes an empty frame, so
            // LSNs stay consecutive.
            while next < *seq {
                log.write(next, record.accepted_at.millis(), &empty_frame()?)?;
                next += 1;
            }
            let mut payload = PayloadBuilder::default();
            payload.allow_empty();
            for event in &record.events {
                let partition =
                    crate::journal::partition::partition_of(&event.key, store.partitions());
                payload.push_event(event, partition);
            }
            for letter in late.iter().filter(|(lsn, _)| lsn == seq) {
                payload.push_letter(letter.1.clone());
            }
            log.write(*seq, record.accepted_at.millis(), &payload.finish()?)?;
            next = seq + 1;
            migrated.frames += 1;
        }
        log.sync()?;
        last = next - 1;
        let since = wall_now().minus(dedup_horizon);
        let (mut ids, _) = IdLog::open(Arc::clone(&fs), &staging.join("ids"), since)?;
        let entries: Vec<(Fingerprint, Timestamp)> = store
            .legacy_ids()?
            .filter_map(Result::ok)
            .filter(|(_, _, at)| *at >= since)
            .map(|(key, id, at)| (Fingerprint::of(&key, &id), at))
            .collect();
        migrated.ids = entries.len() as u64;
        let mut entries = entries;
        entries.sort_by_key(|(_, at)| *at);
        ids.append(last, &entries)?;
        ids.sync()?;
        drop(ids);
        drop(log);
        sync_dir(&staging).with_context(|| format!("cannot sync {}", staging.display()))?;
        std::fs::rename(&staging, journal_dir).with_context(|| {
            format!(
                "cannot rename {} to {}",
                staging.display(),
                journal_dir.display()
            )
        })?;
        if let Some(parent) = journal_dir.parent() {
            sync_dir(parent).with_context(|| format!("cannot sync {}", parent.display()))?;
        }
    }
    migrated.snapshots = store.entities().rekey_snapshots()?;
    // The old store's alerts and dead letters are its views already.
    let views = store.meta_u64("views")?.unwrap_or(0).max(last);
    store.set_meta_u64("views", views)?;
    store.set_meta_u64("views_letter_seq", store.deadletters().last_seq()? + 1)?;
    store.drop_legacy_trees()?;
    store.set_current_format()?;
    store.flush_blocking()?;
    Ok(migrated)
}

/// A frame holding nothing (for a seq the old log skipped).
fn empty_frame() -> anyhow::Result<Vec<u8>> {
    let mut payload = PayloadBuilder::default();
    payload.allow_empty();
    Ok(payload.finish()?)
}

/// The late-event dead letters the old store listed, by the log seq of
/// their event, with their identity (key, seq, index: the same bytes as
/// the journal's).
fn late_letters(store: &Store) -> anyhow::Result<Vec<(u64, LetterEntry)>> {
    let mut late = Vec::new();
    let ids = store.db().open_tree("deadletter_ids")?;
    for item in ids.iter() {
        let (identity, seq) = item?;
        let Some(split) = identity.iter().position(|&b| b == 0) else {
            continue;
        };
        let Some(lsn) = read_be(&identity[split + 1..]) else {
            continue;
        };
        let Some(seq) = read_be(&seq) else {
            continue;
        };
        let Some(letter) = store.deadletters().list(seq - 1, 1)?.into_iter().next() else {
            continue;
        };
        late.push((
            lsn,
            LetterEntry {
                identity: Some(identity.to_vec()),
                reason: match letter.reason {
                    DeadLetterReason::Invalid => LetterReason::Invalid,
                    DeadLetterReason::Late => LetterReason::Late,
                    DeadLetterReason::WindowClosed => LetterReason::WindowClosed,
                },
                error: letter.error,
                key: letter.key,
                received_at: letter.received_at,
                event: letter.event.to_string(),
            },
        ));
    }
    late.sort_by_key(|(lsn, _)| *lsn);
    Ok(late)
}
