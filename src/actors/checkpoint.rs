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

/// Log records at the end of the log whose event ids are remembered again
/// before serving (see [`remember_newest_ids`]).
const NEWEST_RECORDS: usize = 64;

/// Remembers again the event ids of the newest log records.
///
/// NB: a one-record append writes the record, then its ids, without a
/// transaction; a crash in between keeps the record without its ids. Only
/// the newest record can be in that state (appends are serialized and sled
/// recovers a prefix of its writes), and it must be remembered before a
/// retry of its events is served: the replay, running while cepheus
/// serves, may reach it too late. A few more than one, for good measure.
pub(crate) fn remember_newest_ids(runtime: &Arc<Runtime>) -> StoreResult<()> {
    for item in runtime.store.log().newest(NEWEST_RECORDS) {
        let (_, record) = item?;
        crate::ingest::dedup::remember(&runtime.store, &record.events, record.accepted_at)?;
    }
    Ok(())
}

/// Routes the log after the last checkpoint to the entities, including the
/// records appended while it runs, and ends the replay; returns how many
/// events were routed.
///
/// NB: while appends run, records are routed strictly in seq order: a scan
/// that finds a gap (a record appended while the iterator passed its
/// place) looks again from the first missing seq. The last pass holds the
/// sequencer lock, so nothing is appended meanwhile and no append slips
/// between it and the end of the replay.
pub(crate) fn replay(runtime: &Arc<Runtime>) -> StoreResult<u64> {
    let mut next = runtime.store.meta_u64(CHECKPOINT)?.unwrap_or(0) + 1;
    let mut routed = 0u64;
    loop {
        let before = next;
        routed += route_log_from(runtime, &mut next, AtGap::Stop)?;
        if next == before {
            break;
        }
    }
    let _order = runtime.sequencer.lock().unwrap_or_else(|p| p.into_inner());
    routed += route_log_from(runtime, &mut next, AtGap::Continue)?;
    runtime
        .replaying
        .store(false, std::sync::atomic::Ordering::Release);
    Ok(routed)
}

/// Holds the replay while the entities are at a limit that ingest answers
/// with 429 or 503 (live entities, events in flight): replaying ten million
/// keys must not take the memory that requests are refused. The passivation
/// sweep and the entities make room meanwhile.
///
/// NB: once at a limit it waits for a margin of a twentieth below it, not
/// for one free slot: routing one record per wake-up held a replay at the
/// limit to about 5,000 events a second.
fn wait_for_room(runtime: &Runtime) {
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

/// What a replay scan does at a gap in the log's seqs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AtGap {
    /// Stop: appends are running, the missing record may be on its way.
    Stop,
    /// Go on: nothing is being appended, the gap is in the log.
    Continue,
}

/// Routes the log records from seq `next` on, in order; advances `next`
/// past them.
fn route_log_from(runtime: &Arc<Runtime>, next: &mut u64, at_gap: AtGap) -> StoreResult<u64> {
    let engine = runtime.engine();
    let mut routed = 0u64;
    for item in runtime.store.log().read_from(*next) {
        let (seq, record) = item?;
        if seq != *next && at_gap == AtGap::Stop {
            break;
        }
        wait_for_room(runtime);
        crate::ingest::dedup::remember(&runtime.store, &record.events, record.accepted_at)?;
        let events: Vec<Arc<_>> = record.events.into_iter().map(Arc::new).collect();
        route_batch(runtime, &engine, seq, &events);
        routed += events.len() as u64;
        *next = seq + 1;
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
        if runtime.is_replaying() {
            // The entities have not seen the log past the last checkpoint
            // yet (a shutdown during the replay ends here).
            return Ok(runtime.store.meta_u64(CHECKPOINT)?.unwrap_or(0));
        }
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
