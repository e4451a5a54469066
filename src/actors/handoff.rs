//! Moving entity state with partitions, for a journal shared by a group of
//! instances (the scale-out mode, `docs/scale-out.md`): the service's side
//! of [`PartitionState`].
//!
//! - A revoked partition's live entities hand over their last snapshot and
//!   leave; the snapshots are written locally and to the changelog before
//!   the revocation completes, so the next owner restores them.
//! - An assigned partition's changelog records (from the local store's
//!   position in it on) are written into the local store before its first
//!   event is evaluated; entities then activate from there as usual.
//!
//! The journal calls these from its consumer thread and waits; the release
//! runs on an arbiter of its own, since it talks to actors.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::actors::checkpoint::write_snapshots;
use crate::actors::entity::EntityMsg;
use crate::actors::Runtime;
use crate::journal::{ChangelogRecord, PartitionState};
use crate::store::entities::{EncodedSnapshot, Progress, SnapshotWrite};

/// Longest wait for a release: past it the revocation goes on without the
/// final snapshots, and the next owner re-reads from the last commit.
const RELEASE_WAIT: Duration = Duration::from_secs(120);

/// A request to release partitions, answered on `done`.
struct Release {
    partitions: Vec<i32>,
    done: std::sync::mpsc::Sender<Result<bool, String>>,
}

/// The service's side of moving partitions.
pub(crate) struct Handoff {
    runtime: Arc<Runtime>,
    requests: mpsc::UnboundedSender<Release>,
}

impl Handoff {
    /// Starts the arbiter that releases partitions.
    pub(crate) fn start(runtime: &Arc<Runtime>) -> Arc<Handoff> {
        let (requests, mut pending) = mpsc::unbounded_channel::<Release>();
        let worker = Arc::clone(runtime);
        actix::Arbiter::new().spawn(async move {
            while let Some(request) = pending.recv().await {
                let released = release(&worker, &request.partitions).await;
                let _ = request.done.send(released);
            }
        });
        Arc::new(Handoff {
            runtime: Arc::clone(runtime),
            requests,
        })
    }
}

/// The store's meta entry holding the changelog position of `partition`.
fn position_name(partition: i32) -> String {
    format!("changelog.{partition}")
}

impl PartitionState for Handoff {
    fn changelog_position(&self, partition: i32) -> Result<i64, String> {
        let position = self
            .runtime
            .store
            .meta_u64(&position_name(partition))
            .map_err(|e| e.to_string())?;
        Ok(position.unwrap_or(0) as i64)
    }

    fn restore(
        &self,
        partition: i32,
        records: Vec<ChangelogRecord>,
        next: i64,
    ) -> Result<(), String> {
        // NB: per key, the record furthest along wins, not the last one:
        // an instance that lost the partition without noticing (cut off
        // from the group) can still write an older state after its
        // successor's; the further state reflects every event the older
        // one does (the same events give the same state).
        let entities = self.runtime.store.entities();
        let mut winners: HashMap<String, (Option<EncodedSnapshot>, Option<Progress>)> =
            HashMap::new();
        for r in records {
            let (snapshot, progress) = match r.snapshot {
                None => (None, None),
                Some(bytes) => match EncodedSnapshot::from_bytes(bytes) {
                    Ok((snapshot, progress)) => (Some(snapshot), Some(progress)),
                    Err(e) => {
                        tracing::error!(key = %r.key, partition, error = %e, "a changelog record is not a snapshot this build reads; the entity keeps its local state");
                        continue;
                    }
                },
            };
            let current = match winners.get(&r.key) {
                Some((_, progress)) => *progress,
                None => entities.get(&r.key).ok().flatten().map(|s| s.progress()),
            };
            if let (Some(current), Some(progress)) = (current, progress) {
                if current > progress {
                    continue;
                }
            }
            winners.insert(r.key, (snapshot, progress));
        }
        // NB: the local snapshot's timer entry is left: at worst an early
        // wake.
        let writes: Vec<SnapshotWrite> = winners
            .into_iter()
            .map(|(key, (snapshot, _))| SnapshotWrite {
                key,
                snapshot,
                old_timer: None,
            })
            .collect();
        let store = &self.runtime.store;
        store.entities().write(&writes).map_err(|e| e.to_string())?;
        store
            .set_meta_u64(&position_name(partition), next.max(0) as u64)
            .map_err(|e| e.to_string())?;
        store.flush_blocking().map_err(|e| e.to_string())
    }

    fn restored(&self, _partitions: &[i32]) {
        self.runtime.timers.rescan();
    }

    fn set_changelog_position(&self, partition: i32, next: i64) -> Result<(), String> {
        // NB: made durable by the store's next flush; a position lost to a
        // crash only makes the next restore read more.
        self.runtime
            .store
            .set_meta_u64(&position_name(partition), next.max(0) as u64)
            .map_err(|e| e.to_string())
    }

    fn release(&self, partitions: &[i32]) -> Result<bool, String> {
        let (done, answer) = std::sync::mpsc::channel();
        self.requests
            .send(Release {
                partitions: partitions.to_vec(),
                done,
            })
            .map_err(|_| "the service is stopping".to_owned())?;
        answer
            .recv_timeout(RELEASE_WAIT)
            .map_err(|_| format!("the entities were not released within {RELEASE_WAIT:?}"))?
    }
}

/// Writes the snapshots of the live entities of `partitions` and drops
/// them; answers whether every one could be persisted.
///
/// NB: under the checkpoint round's lock: a round that asked an entity for
/// its snapshot before the release must not write that older state after
/// the release wrote the newer one.
async fn release(runtime: &Arc<Runtime>, partitions: &[i32]) -> Result<bool, String> {
    let _round = runtime.checkpoint_round.lock().await;
    let started = std::time::Instant::now();
    let wanted: HashSet<u16> = partitions
        .iter()
        .filter_map(|p| u16::try_from(*p).ok())
        .collect();
    let entities = runtime.store.entities();
    let keys: Vec<String> = runtime
        .router
        .live_keys()
        .into_iter()
        .filter(|key| wanted.contains(&entities.partition_of(key)))
        .collect();
    let mut replies = Vec::with_capacity(keys.len());
    for key in &keys {
        let (tx, rx) = oneshot::channel();
        if runtime.router.deliver_if_live(key, EntityMsg::Release(tx)) {
            replies.push(rx);
        }
    }
    let mut writes = Vec::new();
    let mut persisted = true;
    for reply in replies {
        match reply.await {
            Ok(Ok(Some(write))) => writes.push(write),
            Ok(Ok(None)) => {}
            Ok(Err(())) => persisted = false,
            // Passivated meanwhile: its snapshot is written.
            Err(_) => {}
        }
    }
    write_snapshots(runtime, &writes)
        .await
        .map_err(|e| e.to_string())?;
    runtime.store.sync().await.map_err(|e| e.to_string())?;
    crate::telemetry::kafka_released(keys.len() as u64);
    tracing::info!(
        partitions = ?partitions,
        entities = keys.len(),
        written = writes.len(),
        seconds = started.elapsed().as_secs_f64(),
        "released the revoked partitions' entities"
    );
    Ok(persisted)
}
