//! Checkpoints and recovery.
//!
//! A checkpoint at log seq `R` means: every event in log records up to `R`
//! is reflected in a durable entity snapshot. Each round takes `R` under the
//! sequencer lock (so every batch up to `R` is already in some mailbox),
//! asks every entity touched since the previous round for its snapshot (the
//! request queues behind those batches: mailboxes are FIFO), writes the
//! snapshots, flushes, and only then records `R`. Passivated entities wrote
//! their snapshot before leaving the router, and the round's flush covers
//! that write too.
//!
//! On start, the log after the checkpoint is routed again; entities skip
//! events at or before the position their snapshot applied, and the alert
//! log drops replayed alert ids, so nothing is applied or published twice.

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::actors::entity::{Delivery, EntityMsg};
use crate::actors::router::Touched;
use crate::actors::Runtime;
use crate::store::entities::SnapshotWrite;
use crate::store::StoreResult;

/// Name of the checkpoint in the store's meta tree.
pub const CHECKPOINT: &str = "checkpoint";

/// Snapshots written per store batch.
const WRITE_BATCH: usize = 1_000;

/// Routes the log after the last checkpoint to the entities; returns how
/// many events were routed.
pub(crate) fn replay(runtime: &Arc<Runtime>) -> StoreResult<u64> {
    let checkpoint = runtime.store.meta_u64(CHECKPOINT)?.unwrap_or(0);
    let engine = runtime.engine();
    let mut routed = 0u64;
    for item in runtime.store.log().read_from(checkpoint + 1) {
        let (seq, record) = item?;
        crate::ingest::dedup::remember(&runtime.store, &record.events, record.accepted_at)?;
        let events: Vec<Arc<_>> = record.events.into_iter().map(Arc::new).collect();
        route_batch(runtime, &engine, seq, &events);
        routed += events.len() as u64;
    }
    if routed > 0 {
        tracing::info!(
            events = routed,
            after = checkpoint,
            "replayed the event log"
        );
    }
    Ok(routed)
}

/// Delivers a logged batch: each key gets one message with its events in
/// batch order. Callers hold the sequencer lock (or are alone, at start).
pub(crate) fn route_batch(
    runtime: &Arc<Runtime>,
    engine: &crate::engine::Engine,
    seq: u64,
    events: &[Arc<crate::event::Event>],
) {
    use std::borrow::Cow;
    // Groups in order of first appearance; keys borrowed from the events
    // where they are the events' own (the common case: no copy).
    let mut groups: Vec<(Cow<'_, str>, Vec<Delivery>)> = Vec::new();
    let mut group_of: rustc_hash::FxHashMap<Cow<'_, str>, usize> = Default::default();
    for (index, event) in events.iter().enumerate() {
        let own = std::iter::once(Cow::Borrowed(event.key.as_str()));
        let others = engine.partition_routes(event).into_iter().map(Cow::Owned);
        for key in own.chain(others) {
            let delivery = Delivery {
                seq,
                index: index as u32,
                event: Arc::clone(event),
            };
            match group_of.get(&key) {
                Some(&g) => groups[g].1.push(delivery),
                None => {
                    group_of.insert(key.clone(), groups.len());
                    groups.push((key, vec![delivery]));
                }
            }
        }
    }
    runtime
        .router
        .mark_touched_many(groups.iter().map(|(key, _)| key.as_ref()));
    for (key, deliveries) in groups {
        let n = deliveries.len();
        runtime
            .router
            .send(runtime, &key, EntityMsg::Deliver(deliveries), n);
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

/// One checkpoint round; returns the seq checkpointed.
///
/// NB: if writing fails, the round's keys go back into the touched set with
/// `force`, because their actors already handed over (and forgot) the
/// changes; the next round asks them for a full snapshot again.
pub async fn checkpoint(runtime: &Arc<Runtime>) -> StoreResult<u64> {
    let _round = runtime.checkpoint_round.lock().await;
    let (through, touched) = {
        let _order = runtime.sequencer.lock().unwrap_or_else(|p| p.into_inner());
        (
            runtime.store.log().next_seq() - 1,
            runtime.router.take_touched(),
        )
    };
    let result = persist(runtime, &touched).await;
    if result.is_err() {
        runtime.router.retouch(touched);
    }
    result?;
    runtime.store.set_meta_u64(CHECKPOINT, through)?;
    // Durable, then recorded beside the store: a start that finds sled
    // holding less knows its files lost data (see `Store::open`).
    runtime.store.sync().await?;
    runtime.store.mark_durable_checkpoint(through)?;
    Ok(through)
}

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
    let mut writes: Vec<SnapshotWrite> = Vec::with_capacity(WRITE_BATCH);
    for reply in replies {
        if let Ok(Some(write)) = reply.await {
            writes.push(write);
            if writes.len() >= WRITE_BATCH {
                runtime
                    .store
                    .entities()
                    .write(&std::mem::take(&mut writes))?;
            }
        }
    }
    runtime.store.entities().write(&writes)?;
    runtime.store.sync().await
}
