//! Checkpoints and recovery.
//!
//! A checkpoint at journal LSN `R` means: every event in frames up to `R` is
//! reflected in a durable entity snapshot. Each round takes `R` (every
//! event routed so far is in a frame up to `R` or in the group being
//! filled), asks every entity touched since the previous round for its
//! snapshot (the request queues behind those events: mailboxes are FIFO),
//! waits until the journal is durable past everything routed (so no
//! snapshot ever reflects an event a crash could still take back), writes
//! the snapshots, flushes, and only then records `R` with the position of
//! the alert and dead-letter views.
//!
//! On start, the journal after the checkpoint is routed again; entities
//! skip events at or before the place their snapshot applied, and the alert
//! hub drops replayed alert ids, so nothing is applied or published twice.

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::actors::entity::EntityMsg;
use crate::actors::router::{Routing, Touched};
use crate::actors::Runtime;
use crate::journal::ChangelogRecord;
use crate::store::entities::SnapshotWrite;
use crate::store::{Store, StoreError, StoreResult};

/// Name of the checkpoint in the store's meta tree.
pub const CHECKPOINT: &str = "checkpoint";

/// Snapshots written per store batch.
const WRITE_BATCH: usize = 1_000;

/// The journal LSN of the last checkpoint (0: none).
pub fn last_checkpoint(store: &Store) -> StoreResult<u64> {
    Ok(store.meta_u64(CHECKPOINT)?.unwrap_or(0))
}

/// Routes the journal after `checkpoint` to the entities, including frames
/// appended while it runs, and ends the replay; returns how many events
/// were routed.
pub(crate) fn replay(runtime: &Arc<Runtime>, checkpoint: u64) -> StoreResult<u64> {
    runtime
        .journal
        .replay(checkpoint + 1, &Routing::new(runtime), &mut || {
            wait_for_room(runtime)
        })
        .map_err(|e| StoreError::Sled(e.to_string()))
}

/// Holds the replay while the entities are at a limit that ingest answers
/// with 429 (live entities, events in flight): the replay must not grow
/// memory past what ingest is allowed to.
///
/// NB: once at a limit it waits for a margin of a twentieth below it, not
/// for one free slot: routing one record per wake-up held a replay at the
/// limit to about 5,000 events a second.
pub(crate) fn wait_for_room(runtime: &Runtime) {
    let (max_live, max_inflight) = (
        runtime.config.max_live_entities,
        runtime.config.max_inflight_events,
    );
    let live = || runtime.router.live_count();
    let inflight = || runtime.router.inflight_events();
    if live() < max_live && inflight() < max_inflight {
        return;
    }
    while live() > max_live - max_live / 20 || inflight() > max_inflight - max_inflight / 20 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The checkpoint loop.
pub(crate) async fn run(runtime: Arc<Runtime>) {
    let mut interval = tokio::time::interval(runtime.config.checkpoint_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        interval.tick().await;
        if let Err(e) = checkpoint(&runtime).await {
            tracing::warn!(error = %e, "checkpoint failed; the next round retries");
        }
    }
}

/// One checkpoint round; returns the LSN checkpointed.
///
/// NB: if writing fails, the round's keys go back into the touched set with
/// `force`, because their actors already handed over (and forgot) the
/// changes; the next round asks them for a full snapshot again.
pub async fn checkpoint(runtime: &Arc<Runtime>) -> StoreResult<u64> {
    let _round = runtime.checkpoint_round.lock().await;
    if runtime.is_replaying() {
        // The entities have not seen the journal past the last checkpoint
        // yet (a shutdown during the replay ends here).
        return last_checkpoint(&runtime.store);
    }
    // NB: the LSN before the touched keys: an event routed in between is in
    // a later frame, and its entity's snapshot waits for the next round.
    let through = runtime.journal.routed_through();
    let touched = runtime.router.take_touched();
    let result = persist(runtime, &touched).await;
    if result.is_err() {
        runtime.router.retouch(touched);
    }
    result?;
    // The views' position is read after the journal is durable through
    // `through` (persist waited), so frames up to it are published or about
    // to be; a position behind `through` is recorded as it is.
    let views = runtime.alerts.views();
    runtime.store.set_meta_u64(CHECKPOINT, through)?;
    runtime.alerts.persist_views(views)?;
    // Durable, then recorded beside the store: a start that finds sled
    // holding less knows its files lost data (see `Store::open`).
    runtime.store.sync().await?;
    runtime.store.mark_durable_checkpoint(through)?;
    runtime.journal.checkpointed(through);
    runtime.alerts.replay_checkpointed();
    Ok(through)
}

/// Asks the touched entities for their snapshots and writes them, once the
/// journal holds durably everything they may reflect.
async fn persist(runtime: &Arc<Runtime>, touched: &Touched) -> StoreResult<()> {
    let mut replies = Vec::with_capacity(touched.keys.len());
    for key in &touched.keys {
        let (tx, rx) = oneshot::channel();
        let force = touched.force.contains(key);
        if runtime
            .router
            .deliver_if_live(key, EntityMsg::Persist { force, done: tx })
        {
            replies.push(rx);
        }
    }
    let mut writes: Vec<SnapshotWrite> = Vec::with_capacity(replies.len());
    for reply in replies {
        if let Ok(Some(write)) = reply.await {
            writes.push(write);
        }
    }
    write_snapshots(runtime, &writes).await?;
    runtime.store.sync().await
}

/// Writes snapshots once the journal is durable past everything routed so
/// far (sled must never hold state derived from an event a crash could
/// still take back: that event's place would be given to another).
pub(crate) async fn write_snapshots(
    runtime: &Arc<Runtime>,
    writes: &[SnapshotWrite],
) -> StoreResult<()> {
    if writes.is_empty() {
        return Ok(());
    }
    runtime
        .journal
        .sync_routed()
        .await
        .map_err(|e| StoreError::Sled(e.to_string()))?;
    for chunk in writes.chunks(WRITE_BATCH) {
        runtime.store.entities().write(chunk)?;
    }
    if runtime.journal.keeps_changelog() {
        // NB: after the local write: a crash in between leaves the local
        // store ahead of the changelog, which is safe (the group's offsets
        // advance only past what both hold).
        let records = writes
            .iter()
            .map(|w| ChangelogRecord {
                key: w.key.clone(),
                snapshot: w.snapshot.as_ref().map(|s| s.bytes().to_vec()),
            })
            .collect();
        runtime
            .journal
            .log_snapshots(records)
            .await
            .map_err(|e| StoreError::Sled(e.to_string()))?;
    }
    Ok(())
}
