//! The passivation sweep: entities idle for `passivate_after` leave memory.
//!
//! One loop for all entities rather than a timer in every actor: a timer
//! per actor cost a few hundred bytes each and woke every live entity twice
//! per `passivate_after`. The sweep reads the idle time the actors publish
//! in their [`Liveness`](crate::actors::router::Liveness) and asks only
//! those idle long enough, in chunks:
//!
//! 1. [`EntityMsg::Passivate`] to each: the actor decides (it stays if its
//!    state cannot be persisted or a timer is about to fire) and hands over
//!    its snapshot;
//! 2. the chunk's snapshots are written together (a sled batch per tree:
//!    written one actor at a time, each batch sealed and wrote an I/O buffer
//!    of its own, and a million idle entities stalled the store);
//! 3. [`EntityMsg::Stop`] to each, telling whether the write succeeded: the
//!    actor leaves only if it did and nothing happened since.
//!
//! An actor stays dirty until step 3 says its snapshot is written, so a
//! checkpoint round in between writes it again rather than record a
//! position past a state that is nowhere on disk. The sweep takes no lock:
//! checkpoint rounds with millions of entities would starve it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::actors::entity::EntityMsg;
use crate::actors::Runtime;

/// Snapshots written (and entities stopped) together.
const CHUNK: usize = 10_000;

/// Entities asked at once; their answers are awaited in order.
const WINDOW: usize = 200_000;

/// The sweep loop: every half `passivate_after` (at least every 50 ms).
pub(crate) async fn run(runtime: Arc<Runtime>) {
    let idle = runtime.config.passivate_after;
    let mut interval = tokio::time::interval((idle / 2).max(Duration::from_millis(50)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let keys = runtime.router.idle_keys(idle);
        for window in keys.chunks(WINDOW) {
            passivate(&runtime, window).await;
        }
    }
}

/// Passivates those of `keys` that agree to.
///
/// NB: every request goes out before the first answer is awaited. Under
/// load an answer waits behind the backlog of the entities' threads, and
/// asking one chunk at a time paid that wait per chunk: a thousand
/// entities a second left while a hundred thousand new ones arrived.
async fn passivate(runtime: &Arc<Runtime>, keys: &[String]) {
    let mut replies = Vec::with_capacity(keys.len());
    for key in keys {
        let (tx, rx) = oneshot::channel();
        if runtime
            .router
            .deliver_if_live(key, EntityMsg::Passivate(tx))
        {
            replies.push((key, rx));
        }
    }
    let mut leaving = Vec::with_capacity(CHUNK);
    let mut writes = Vec::with_capacity(CHUNK);
    for (key, reply) in replies {
        if let Ok(Some(write)) = reply.await {
            writes.extend(write);
            leaving.push(key);
            if leaving.len() >= CHUNK {
                write_and_stop(runtime, &mut leaving, &mut writes).await;
            }
        }
    }
    write_and_stop(runtime, &mut leaving, &mut writes).await;
}

/// Writes the snapshots handed over and tells their entities whether that
/// worked.
async fn write_and_stop(
    runtime: &Arc<Runtime>,
    leaving: &mut Vec<&String>,
    writes: &mut Vec<crate::store::entities::SnapshotWrite>,
) {
    if leaving.is_empty() {
        return;
    }
    let written = match crate::actors::checkpoint::write_snapshots(runtime, writes).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, entities = leaving.len(), "cannot passivate entities; they stay live");
            false
        }
    };
    for key in leaving.drain(..) {
        runtime
            .router
            .deliver_if_live(key, EntityMsg::Stop { written });
    }
    writes.clear();
}
