//! Background upkeep of the store: the event log kept within its retention,
//! and event ids older than the dedup horizon forgotten.

use std::sync::Arc;

use crate::actors::checkpoint::CHECKPOINT;
use crate::actors::{wall_now, Runtime};
use crate::ingest::dedup;

/// Dedup entries examined per round, so one round never stalls the store.
const DEDUP_BUDGET: usize = 100_000;

/// The upkeep loop.
pub(crate) async fn run(runtime: Arc<Runtime>) {
    let config = runtime.config.upkeep.clone();
    let mut interval = tokio::time::interval(config.every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dedup_cursor = Vec::new();
    loop {
        interval.tick().await;
        let now = wall_now();
        let checkpoint = runtime
            .store
            .meta_u64(CHECKPOINT)
            .ok()
            .flatten()
            .unwrap_or(0);
        match runtime.store.log().compact(
            now.minus(config.retention),
            config.max_log_bytes,
            checkpoint,
        ) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(records = n, "compacted the event log"),
            Err(e) => tracing::warn!(error = %e, "cannot compact the event log"),
        }
        if let Err(e) = dedup::purge(
            &runtime.store,
            now,
            config.dedup_horizon,
            &mut dedup_cursor,
            DEDUP_BUDGET,
        ) {
            tracing::warn!(error = %e, "cannot purge old event ids");
        }
    }
}
