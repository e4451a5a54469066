//! The alert hub: records alerts in the durable log and publishes them to
//! live subscribers once they are on disk.
//!
//! Entity actors call [`AlertHub::record`], which appends to the alert log
//! (assigning the gap-free seq and dropping replayed ids) and wakes the
//! publisher. The publisher waits for a flush covering those alerts, then
//! broadcasts them in seq order. So a subscriber never sees an alert that a
//! crash could take back, and the broadcast holds no queue of its own: the
//! log is the queue.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{broadcast, watch, Notify};

use crate::actors::{wall_now, Runtime};
use crate::engine::Alert;
use crate::store::alerts::StoredAlert;
use crate::store::{Store, StoreResult};
use crate::telemetry;

/// Records and publishes alerts.
pub struct AlertHub {
    store: Store,
    live: broadcast::Sender<Arc<StoredAlert>>,
    /// The last seq broadcast: every alert up to it is durable and was sent.
    published: AtomicU64,
    wake: Notify,
    /// Becomes true when the service shuts down: subscribers close.
    closing: watch::Sender<bool>,
}

impl AlertHub {
    pub(crate) fn new(store: Store, backlog: usize) -> AlertHub {
        let published = store.alerts().last_seq();
        AlertHub {
            store,
            live: broadcast::channel(backlog.max(1)).0,
            published: AtomicU64::new(published),
            wake: Notify::new(),
            closing: watch::Sender::new(false),
        }
    }

    /// Appends `alerts` to the log (replayed ids are skipped) and schedules
    /// their publication.
    pub fn record(&self, alerts: &[Alert]) -> StoreResult<()> {
        let stored = self.store.alerts().append(alerts, wall_now())?;
        for alert in &stored {
            telemetry::alert_fired(&alert.rule);
        }
        if !stored.is_empty() {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// A receiver of live alerts, and the last seq published before it
    /// started receiving: alerts after that seq arrive on the receiver
    /// (possibly with some at or before it, which callers skip).
    pub fn subscribe(&self) -> (broadcast::Receiver<Arc<StoredAlert>>, u64) {
        let receiver = self.live.subscribe();
        (receiver, self.published.load(Ordering::Acquire))
    }

    /// The last seq published.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Acquire)
    }

    /// Tells every subscriber to close ("going away"): the service is
    /// shutting down, and open WebSockets would hold the shutdown up.
    pub fn close_subscribers(&self) {
        self.closing.send_replace(true);
    }

    /// Watches for [`AlertHub::close_subscribers`].
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Number of live subscribers.
    pub fn subscribers(&self) -> usize {
        self.live.receiver_count()
    }
}

/// The publisher loop: flush, then broadcast what the flush made durable.
pub(crate) async fn run_publisher(runtime: Arc<Runtime>) {
    let hub = &runtime.alerts;
    loop {
        hub.wake.notified().await;
        let target = hub.store.alerts().last_seq();
        let mut from = hub.published.load(Ordering::Acquire);
        if target <= from {
            continue;
        }
        if let Err(e) = hub.store.sync().await {
            tracing::error!(error = %e, "cannot flush alerts; publication waits");
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            hub.wake.notify_one();
            continue;
        }
        while from < target {
            from += 1;
            // NB: `published` moves before the broadcast, so an alert a
            // subscriber has received is already visible to REST queries
            // (which read up to `published`). A subscriber that joins in
            // between skips it as "before it joined", or replays it.
            hub.published.store(from, Ordering::Release);
            match hub.store.alerts().get(from) {
                Ok(Some(alert)) => {
                    let _ = hub.live.send(Arc::new(alert));
                }
                Ok(None) => tracing::error!(seq = from, "alert missing from the log"),
                Err(e) => tracing::error!(seq = from, error = %e, "cannot read alert to publish"),
            }
        }
    }
}
