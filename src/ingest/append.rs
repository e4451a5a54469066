//! Group append: concurrent requests enter the event log together.
//!
//! Each request queues its events and waits for the turn; whoever gets the
//! turn appends every request queued so far under the sequencer lock, as
//! one acceptance with one log write (or one transaction), and answers
//! each. Most requests find their events already appended when their turn
//! comes. One event per request otherwise paid the whole critical section
//! (stamp, dedup, encode, sled insert, routing) per request, serialized: the
//! server idled at a bit over one core while clients waited.
//!
//! # Invariants
//! - A request's events are appended whole or not at all, in their order,
//!   and the log's order is every key's order (appends and routing happen
//!   under the sequencer lock, as the checkpoint expects).
//! - An id seen twice within one group is a duplicate the second time, as
//!   if the requests had come one after the other.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::actors::checkpoint::route_batch;
use crate::actors::{wall_now, Runtime};
use crate::event::Event;
use crate::ingest::{dedup, encoded_size};
use crate::store::log::split_batch;
use crate::store::{StoreError, StoreResult};
use crate::time::Duration;

/// Events of one request waiting to be appended.
struct Pending {
    events: Vec<(usize, Event)>,
    untimed: Vec<usize>,
    done: oneshot::Sender<StoreResult<Appended>>,
}

/// What became of one request's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Events appended.
    pub accepted: usize,
    /// Events dropped as duplicates.
    pub duplicates: usize,
}

/// The queue of requests and the turn to append them.
#[derive(Default)]
pub struct GroupAppend {
    queue: Mutex<Vec<Pending>>,
    turn: tokio::sync::Mutex<()>,
}

impl GroupAppend {
    /// Appends `events` (`untimed`: positions of those sent without a time)
    /// with whatever other requests are waiting; returns once they are in
    /// the log and routed (not yet durable: see `Store::sync`).
    pub async fn append(
        &self,
        runtime: &Arc<Runtime>,
        events: Vec<(usize, Event)>,
        untimed: Vec<usize>,
        horizon: Duration,
    ) -> StoreResult<Appended> {
        let (done, mut answer) = oneshot::channel();
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Pending {
                events,
                untimed,
                done,
            });
        let _turn = self.turn.lock().await;
        if let Ok(result) = answer.try_recv() {
            return result;
        }
        let group = std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()));
        append_group(runtime, group, horizon);
        answer
            .await
            .unwrap_or_else(|_| Err(StoreError::Sled("the append was abandoned".into())))
    }
}

/// Appends a group of requests and answers each.
fn append_group(runtime: &Arc<Runtime>, group: Vec<Pending>, horizon: Duration) {
    let mut answers = Vec::with_capacity(group.len());
    let mut requests = Vec::with_capacity(group.len());
    for p in group {
        answers.push(p.done);
        requests.push((p.events, p.untimed));
    }
    match append_locked(runtime, requests, horizon) {
        Ok(counts) => {
            for (done, count) in answers.into_iter().zip(counts) {
                let _ = done.send(Ok(count));
            }
        }
        Err(e) => {
            for done in answers {
                let _ = done.send(Err(e.clone()));
            }
        }
    }
}

/// Under the sequencer lock: stamps, deduplicates, logs and routes the
/// requests' events; returns what became of each request's.
fn append_locked(
    runtime: &Arc<Runtime>,
    requests: Vec<(Vec<(usize, Event)>, Vec<usize>)>,
    horizon: Duration,
) -> StoreResult<Vec<Appended>> {
    let engine = runtime.engine();
    let mut last_accepted = runtime.sequencer.lock().unwrap_or_else(|p| p.into_inner());
    // NB: the acceptance time is taken under the lock and never goes back,
    // and events sent without `time` get it, so their times follow log
    // order. Stamped at decoding (before the lock), two concurrent requests
    // could enter the log in the other order, and the earlier stamp was
    // then late for its entity: dead-lettered, not evaluated.
    let accepted_at = wall_now().max(*last_accepted);
    *last_accepted = accepted_at;
    let mut in_group = HashSet::new();
    let mut fresh = Vec::new();
    let mut counts = Vec::with_capacity(requests.len());
    for (mut events, untimed) in requests {
        for i in untimed {
            if let Some((_, event)) = events.get_mut(i) {
                event.time = accepted_at;
            }
        }
        let before = fresh.len();
        let duplicates = dedup::filter_into(
            &runtime.store,
            events,
            accepted_at,
            horizon,
            &mut in_group,
            &mut fresh,
        )?;
        counts.push(Appended {
            accepted: fresh.len() - before,
            duplicates,
        });
    }
    if fresh.is_empty() {
        return Ok(counts);
    }
    let records = split_batch(fresh, accepted_at, encoded_size);
    let first = match records.as_slice() {
        // NB: every sled transaction seals and writes its I/O buffer (two
        // syscalls). One record is atomic by itself; its ids follow as
        // plain writes, and a crash that keeps the record without them also
        // loses the next checkpoint, so the replay at start remembers them
        // again before any retry is served.
        [record] => {
            let seq = runtime.store.log().append(record)?;
            dedup::remember(&runtime.store, &record.events, accepted_at)?;
            seq
        }
        // Several records go in one transaction with their ids: every
        // request of the group is kept whole or not at all.
        _ => {
            let ids = dedup::remembering(&records, accepted_at);
            runtime
                .store
                .log()
                .append_with(&records, (runtime.store.dedup_tree(), &ids))?
        }
    };
    if runtime.is_replaying() {
        // The replay routes these when it reaches them, after every record
        // before them (see `Runtime::start`).
        return Ok(counts);
    }
    for (seq, record) in (first..).zip(records) {
        let events: Vec<Arc<Event>> = record.events.into_iter().map(Arc::new).collect();
        route_batch(runtime, &engine, seq, &events);
    }
    Ok(counts)
}
