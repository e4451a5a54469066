//! The alert hub: puts alerts and dead letters into the journal, and once
//! the journal says they are durable, stores their queryable copies and
//! broadcasts the alerts to live subscribers — from memory, no read-back.
//!
//! An alert gets its gap-free `seq` here, before it is journalled, and a
//! second copy of a match (same deterministic id, from a replay after a
//! crash) is dropped before it gets one. The publisher thread takes each
//! durable group in journal order: alerts are written to the store (so REST
//! sees them), then broadcast; dead letters are numbered and written. So a
//! subscriber never sees an alert a crash could take back, and what REST
//! serves is what subscribers were sent.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde_json::Value;
use tokio::sync::{broadcast, watch};

use crate::actors::{wall_now, Runtime};
use crate::engine::Alert;
use crate::journal::records::Wanted;
use crate::journal::{AlertEntry, DurableGroup, Journal, LetterEntry};
use crate::store::alerts::StoredAlert;
use crate::store::{Store, StoreError, StoreResult};
use crate::telemetry::{self, Stage};

/// Meta key: the journal LSN through which alerts and dead letters are in
/// the store (recorded by each checkpoint).
const VIEWS: &str = "views";
/// Meta key: the seq the next dead letter after [`VIEWS`] gets.
const VIEWS_LETTER_SEQ: &str = "views_letter_seq";

/// What the hub decides under its lock.
struct Ledger {
    /// The seq the next alert gets.
    next_seq: u64,
    /// Ids of alerts journalled and not yet in the store, and when they
    /// were detected (for the `alert_durable` stage).
    pending: HashMap<String, Instant>,
    /// Identities of late-event dead letters the journal already holds for
    /// the events being replayed, so the replay does not list them twice.
    replayed_letters: HashSet<Vec<u8>>,
}

/// How far the store's copies have followed the journal.
#[derive(Debug, Clone, Copy, Default)]
pub struct ViewPosition {
    /// Every alert and dead letter of frames up to this LSN is stored.
    pub through: u64,
    /// The seq the next dead letter gets.
    pub next_letter_seq: u64,
}

/// Journals, publishes and stores alerts and dead letters.
pub struct AlertHub {
    store: Store,
    journal: Arc<dyn Journal>,
    live: broadcast::Sender<Arc<StoredAlert>>,
    /// The last seq broadcast: every alert up to it is durable, stored and
    /// was sent.
    published: AtomicU64,
    ledger: Mutex<Ledger>,
    views: Mutex<ViewPosition>,
    /// The LSN through which the store holds the journal's alerts and dead
    /// letters (`views.through`, watched by requests that must read them).
    stored: watch::Sender<u64>,
    /// Becomes true when the service shuts down: subscribers close.
    closing: watch::Sender<bool>,
    /// The last seq published, watched by the receivers' delivery tasks
    /// (a watch, not the broadcast: they read the alert log themselves and
    /// must not count as WebSocket subscribers).
    published_watch: watch::Sender<u64>,
}

impl AlertHub {
    pub(crate) fn new(store: Store, journal: Arc<dyn Journal>, backlog: usize) -> AlertHub {
        AlertHub {
            store,
            journal,
            live: broadcast::channel(backlog.max(1)).0,
            published: AtomicU64::new(0),
            ledger: Mutex::new(Ledger {
                next_seq: 1,
                pending: HashMap::new(),
                replayed_letters: HashSet::new(),
            }),
            views: Mutex::new(ViewPosition::default()),
            stored: watch::Sender::new(0),
            closing: watch::Sender::new(false),
            published_watch: watch::Sender::new(0),
        }
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Journals the alerts whose ids are new, giving each its seq; they are
    /// published once durable. A replayed match (an id seen before) is
    /// dropped.
    pub fn record(&self, alerts: &[Alert]) -> StoreResult<()> {
        let detected_at = wall_now();
        let mut ledger = self.ledger();
        let mut entries = Vec::with_capacity(alerts.len());
        for alert in alerts {
            if ledger.pending.contains_key(&alert.id)
                || self.store.alerts().contains_id(&alert.id)?
            {
                continue;
            }
            let seq = ledger.next_seq;
            ledger.next_seq += 1;
            ledger.pending.insert(alert.id.clone(), Instant::now());
            telemetry::alert_fired(&alert.rule);
            entries.push(AlertEntry {
                seq,
                id: alert.id.clone(),
                rule: alert.rule.to_string(),
                rule_version: alert.rule_version,
                key: alert.key.clone(),
                severity: alert.severity,
                time: alert.time,
                detected_at,
                message: alert.message.clone(),
                events: alert.events.clone(),
                values: Value::Object(alert.values.clone()).to_string(),
                shadow: alert.mode == crate::rules::Mode::Shadow,
                resolves: alert.resolves.clone(),
            });
        }
        if entries.is_empty() {
            return Ok(());
        }
        // NB: journalled under the ledger's lock, so seqs are in journal order.
        self.journal
            .append_records(entries, Vec::new())
            .map_err(|e| StoreError::Sled(e.to_string()))?;
        Ok(())
    }

    /// Journals dead letters; a late event's letter that the journal holds
    /// already for an event being replayed is not journalled again.
    pub fn record_letters(&self, letters: Vec<LetterEntry>) -> StoreResult<()> {
        let ledger = self.ledger();
        let letters: Vec<LetterEntry> = letters
            .into_iter()
            .filter(|l| {
                l.identity
                    .as_ref()
                    .is_none_or(|id| !ledger.replayed_letters.contains(id))
            })
            .collect();
        if letters.is_empty() {
            return Ok(());
        }
        self.journal
            .append_records(Vec::new(), letters)
            .map_err(|e| StoreError::Sled(e.to_string()))?;
        Ok(())
    }

    /// Whether an alert recorded here is not published yet.
    pub fn has_unpublished(&self) -> bool {
        !self.ledger().pending.is_empty()
    }

    /// The last seq given to an alert (published or not yet).
    pub fn last_recorded(&self) -> u64 {
        self.ledger().next_seq - 1
    }

    /// Waits until the store holds the alerts and dead letters of frame
    /// `lsn` (a request's 202 then means its dead letters can be read).
    pub async fn wait_stored(&self, lsn: u64) {
        let mut stored = self.stored.subscribe();
        let _ = stored.wait_for(|through| *through >= lsn).await;
    }

    /// How far the store's copies have followed the journal (a checkpoint
    /// records it, after a flush that covers them).
    pub fn views(&self) -> ViewPosition {
        *self.views.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the view position in the store's meta tree (durable with the
    /// next flush).
    pub fn persist_views(&self, views: ViewPosition) -> StoreResult<()> {
        self.store.set_meta_u64(VIEWS, views.through)?;
        self.store
            .set_meta_u64(VIEWS_LETTER_SEQ, views.next_letter_seq)
    }

    /// Brings the store's copies up to the journal (after a crash the store
    /// may have lost what was written after the last checkpoint), and
    /// remembers the late-event letters the journal holds after
    /// `checkpoint`, which the replay would make again. Call before serving.
    pub fn catch_up(&self, checkpoint: u64) -> StoreResult<()> {
        let through = self.store.meta_u64(VIEWS)?.unwrap_or(0);
        let mut next_letter_seq = match self.store.meta_u64(VIEWS_LETTER_SEQ)? {
            Some(seq) => seq,
            None => self.store.deadletters().last_seq()? + 1,
        };
        let durable = self.journal.durable_lsn();
        let from = through.min(checkpoint) + 1;
        let wanted = Wanted {
            events: false,
            alerts: true,
            letters: true,
        };
        let mut replayed = HashSet::new();
        let mut written = 0usize;
        for frame in self.journal.read(from, durable, wanted) {
            let (lsn, _, payload) = frame.map_err(|e| StoreError::Sled(e.to_string()))?;
            if lsn > through {
                self.store.alerts().materialize(&payload.alerts)?;
                self.store
                    .deadletters()
                    .materialize(next_letter_seq, &payload.letters)?;
                next_letter_seq += payload.letters.len() as u64;
                written += payload.alerts.len() + payload.letters.len();
            }
            if lsn > checkpoint {
                replayed.extend(payload.letters.into_iter().filter_map(|l| l.identity));
            }
        }
        if written > 0 {
            tracing::info!(
                records = written,
                "stored again the alerts and dead letters a crash took from the store"
            );
        }
        let last = self.store.alerts().last_seq()?;
        self.published.store(last, Ordering::Release);
        self.published_watch.send_replace(last);
        {
            let mut ledger = self.ledger();
            ledger.next_seq = last + 1;
            ledger.replayed_letters = replayed;
        }
        *self.views.lock().unwrap_or_else(|p| p.into_inner()) = ViewPosition {
            through: durable.max(through),
            next_letter_seq,
        };
        self.stored.send_replace(durable.max(through));
        Ok(())
    }

    /// Forgets the letters of the replay once a checkpoint after it has
    /// run: its snapshot requests queued behind every replayed event, so
    /// they are all evaluated (not merely routed, as at the replay's end).
    pub(crate) fn replay_checkpointed(&self) {
        let mut ledger = self.ledger();
        if !ledger.replayed_letters.is_empty() {
            ledger.replayed_letters = HashSet::new();
        }
    }

    /// A receiver of live alerts, and the last seq published before it
    /// started receiving: alerts after that seq arrive on the receiver
    /// (possibly with some at or before it, which callers skip).
    pub fn subscribe(&self) -> (broadcast::Receiver<Arc<StoredAlert>>, u64) {
        let receiver = self.live.subscribe();
        (receiver, self.published.load(Ordering::Acquire))
    }

    /// Watches the last seq published (it changes after the alerts are
    /// stored, so a reader of the alert log finds them).
    pub fn watch_published(&self) -> watch::Receiver<u64> {
        self.published_watch.subscribe()
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

    /// Stores and publishes one durable group.
    fn publish(&self, group: DurableGroup) {
        let started = Instant::now();
        let mut views = *self.views.lock().unwrap_or_else(|p| p.into_inner());
        if !group.alerts.is_empty() {
            // NB: on a store error the alerts are still published (they are
            // durable in the journal); the next start stores them again.
            if let Err(e) = self.store.alerts().materialize(&group.alerts) {
                tracing::error!(error = %e, "cannot store alerts; they are published and stored again at the next start");
            }
            let mut ledger = self.ledger();
            for alert in &group.alerts {
                if let Some(detected) = ledger.pending.remove(&alert.id) {
                    telemetry::stage(Stage::AlertDurable, detected.elapsed());
                }
            }
        }
        if !group.letters.is_empty() {
            let first = group.letters_at.unwrap_or(views.next_letter_seq);
            if let Err(e) = self.store.deadletters().materialize(first, &group.letters) {
                tracing::error!(error = %e, "cannot store dead letters; they are stored again at the next start");
            }
            views.next_letter_seq = views
                .next_letter_seq
                .max(first + group.letters.len() as u64);
        }
        views.through = views.through.max(group.lsn);
        *self.views.lock().unwrap_or_else(|p| p.into_inner()) = views;
        self.stored.send_replace(views.through);
        let busy = !group.alerts.is_empty() || !group.letters.is_empty();
        for alert in group.alerts {
            // NB: `published` moves before the broadcast, so an alert a
            // subscriber has received is already visible to REST queries
            // (which read up to `published`).
            self.published.store(alert.seq, Ordering::Release);
            let _ = self.live.send(Arc::new(StoredAlert::from_entry(alert)));
        }
        if busy {
            self.published_watch.send_replace(self.published());
        }
        if busy {
            telemetry::stage(Stage::Publish, started.elapsed());
        }
    }
}

/// Starts the publisher thread: it stores and broadcasts what each durable
/// group holds, in journal order.
pub(crate) fn start_publisher(
    runtime: Arc<Runtime>,
    groups: std::sync::mpsc::Receiver<DurableGroup>,
) -> StoreResult<()> {
    std::thread::Builder::new()
        .name("cepheus-publish".into())
        .spawn(move || {
            for group in groups {
                let now = wall_now();
                for alert in &group.alerts {
                    runtime.history.alert(now, &alert.rule);
                }
                runtime.alerts.publish(group);
            }
        })
        .map(|_| ())
        .map_err(|e| StoreError::Sled(format!("cannot start the alert publisher: {e}")))
}
