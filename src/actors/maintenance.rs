//! Background upkeep: the journal kept within its retention (never dropping
//! what recovery or the store's views still need).

use std::sync::Arc;

use crate::actors::checkpoint::last_checkpoint;
use crate::actors::{wall_now, Runtime};

/// Alerts (and dead letters) removed per round at most, so a round never
/// stalls the store.
const PURGE_BUDGET: usize = 100_000;

/// The upkeep loop.
pub(crate) async fn run(runtime: Arc<Runtime>) {
    let config = runtime.config.upkeep.clone();
    let mut interval = tokio::time::interval(config.every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let checkpoint = last_checkpoint(&runtime.store).unwrap_or(0);
        let views = runtime.store.meta_u64("views").ok().flatten().unwrap_or(0);
        let keep_from = checkpoint.min(views) + 1;
        match runtime.journal.retain(
            keep_from,
            wall_now().minus(config.retention),
            config.max_log_bytes,
        ) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(segments = n, "removed old journal segments"),
            Err(e) => tracing::warn!(error = %e, "cannot remove old journal segments"),
        }
        let oldest = wall_now().minus(config.alert_retention);
        if let Err(e) = runtime
            .store
            .alerts()
            .remove_older_than(oldest, PURGE_BUDGET)
        {
            tracing::warn!(error = %e, "cannot remove old alerts");
        }
        if let Err(e) = runtime
            .store
            .deadletters()
            .remove_older_than(oldest, PURGE_BUDGET)
        {
            tracing::warn!(error = %e, "cannot remove old dead letters");
        }
    }
}
