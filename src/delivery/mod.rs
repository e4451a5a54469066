//! Delivery: alerts pushed to receivers (webhooks), chosen by routes,
//! grouped, rate-limited, retried, muted by silences (issue 14).
//!
//! Each receiver has one task ([`worker`]) with a durable cursor over the
//! alert log (the store's alert view, by seq): it reads the alerts after
//! its cursor, keeps those its routes send it, groups them, and sends one
//! notification at a time, in order, retrying with backoff; after its
//! last attempt a notification is parked as a failed delivery. The cursor
//! moves once every alert up to it was delivered, parked or skipped, so
//! after a crash a receiver gets again at most what it may not have had:
//! delivery is at least once. The alert log is the queue: ingest never
//! waits for a receiver, and a receiver never waits for another.
//!
//! | file | job |
//! |---|---|
//! | `config.rs` | what the user writes: receivers, routes, `[delivery]` |
//! | `url.rs` | which URLs may be called |
//! | `route.rs` | which receiver gets an alert, and its group |
//! | `group.rs` | groups, batches and the rate limit's token bucket |
//! | `backoff.rs` | when to try again |
//! | `payload.rs` | the body in each format |
//! | `sign.rs` | the HMAC signature |
//! | `silence.rs` | silences |
//! | `worker.rs` | the task of one receiver, and sending |

pub mod backoff;
pub mod config;
pub mod group;
pub mod payload;
pub mod route;
pub mod sign;
pub mod silence;
pub mod url;
pub mod worker;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;
use tokio::sync::watch;
use utoipa::ToSchema;

use crate::actors::{wall_now, Runtime};
use crate::delivery::config::{
    check_receiver, check_routes, DeliverySettings, ReceiverSpec, RouteSpec,
};
use crate::delivery::silence::{Silence, SilenceSpec, SilenceState};
use crate::store::alerts::StoredAlert;
use crate::store::delivery::{FailedDelivery, StoredReceiver, StoredRoutes};
use crate::store::{Store, StoreError};
use crate::time::Timestamp;

/// Something delivery cannot do; each message says what to change.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeliveryError {
    /// The document is invalid: every problem, each with its field.
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
    /// Nothing with that name or id.
    #[error("{0}")]
    NotFound(String),
    /// It exists already, or is still in use.
    #[error("{0}")]
    Conflict(String),
    /// A configured limit is reached.
    #[error("{0}")]
    Limit(String),
    /// The alerts of a parked notification are no longer in the alert log.
    #[error("{0}")]
    Gone(String),
    /// The receiver failed again.
    #[error("{0}")]
    Failed(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a receiver's task is doing, for `GET /v1/receivers/{name}` and
/// the page.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct ReceiverStatus {
    /// Every alert up to this seq is delivered, parked or not for it.
    pub cursor: u64,
    /// Alerts published after the cursor.
    pub backlog: u64,
    /// Alerts read and waiting in groups or for their turn.
    pub held: usize,
    /// The last attempt failed and the notification waits to be tried again.
    pub retrying: bool,
    /// What the last failed attempt got.
    pub last_error: Option<String>,
    /// When a notification last went through.
    pub last_delivered_at: Option<Timestamp>,
    /// Parked notifications.
    pub failures: usize,
    /// Alerts lost to retention before they could be sent.
    pub lost: u64,
}

/// Receivers and routes as the tasks read them.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    /// Receivers by name.
    pub receivers: BTreeMap<String, StoredReceiver>,
    /// The routes.
    pub routes: StoredRoutes,
}

/// The delivery service: receivers, routes and silences, and the tasks.
pub struct Delivery {
    runtime: Arc<Runtime>,
    settings: DeliverySettings,
    directory: RwLock<Arc<Directory>>,
    silences: RwLock<Arc<Vec<Silence>>>,
    /// Bumped on every change of receivers, routes or silences: tasks wake.
    changed: watch::Sender<u64>,
    status: Mutex<HashMap<String, ReceiverStatus>>,
    /// Where receiver tasks run (set by [`Delivery::start`]).
    arbiter: Mutex<Option<actix::ArbiterHandle>>,
    /// Serialises writes of receivers and routes (checks then writes).
    writing: Mutex<()>,
    /// The TLS client configuration for `https://` receivers.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Where local changes are told (the scale-out mode's delivery topic);
    /// changes made before it is set wait in `untold`.
    changes: Mutex<Option<std::sync::mpsc::Sender<DeliveryChange>>>,
    untold: Mutex<Vec<DeliveryChange>>,
}

/// A change of receivers, routes, silences or a receiver's cursor, as the
/// scale-out mode shares it between instances (`src/cluster/delivery.rs`):
/// every instance keeps the same configuration, and the one instance that
/// sends ([`Delivery::sends_here`]) tells how far each receiver got, so
/// the next one goes on from there.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryChange {
    /// A receiver created or replaced.
    Receiver(Box<StoredReceiver>),
    /// A receiver removed.
    ReceiverDeleted(String),
    /// The routes replaced.
    Routes(StoredRoutes),
    /// A silence created or expired.
    Silence(Box<Silence>),
    /// A silence forgotten.
    SilenceRemoved(String),
    /// Receiver `.0` finished every alert up to seq `.1`.
    Cursor(String, u64),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Delivery {
    /// Opens delivery over the runtime's store: loads receivers, routes and
    /// silences, then applies the config file's receivers and routes
    /// (created, or replaced when they differ). Starts no task.
    pub fn open(
        runtime: Arc<Runtime>,
        settings: DeliverySettings,
    ) -> Result<Arc<Delivery>, DeliveryError> {
        let tls = worker::tls_config(settings.ca_file.as_deref())
            .map_err(|e| DeliveryError::Invalid(vec![format!("delivery.ca_file: {e}")]))?;
        let delivery = Arc::new(Delivery {
            tls,
            settings: DeliverySettings {
                receivers: Vec::new(),
                routes: Vec::new(),
                ..settings.clone()
            },
            directory: RwLock::new(Arc::new(Directory::default())),
            silences: RwLock::new(Arc::new(Vec::new())),
            changed: watch::Sender::new(0),
            status: Mutex::new(HashMap::new()),
            arbiter: Mutex::new(None),
            writing: Mutex::new(()),
            changes: Mutex::new(None),
            untold: Mutex::new(Vec::new()),
            runtime,
        });
        delivery.reload()?;
        *delivery.silences.write().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(delivery.store().delivery().silences()?);
        let mut problems = Vec::new();
        for spec in &settings.receivers {
            if let Err(e) = url::check_url(&spec.url, settings.allow_private_urls) {
                problems.push(format!("delivery.receivers `{}`: {e}", spec.name));
                continue;
            }
            let current = delivery.directory().receivers.get(&spec.name).cloned();
            let result = match current {
                Some(c) if c.spec == *spec => continue,
                Some(_) => delivery.put_receiver(spec.clone(), false),
                None => delivery.put_receiver(spec.clone(), true),
            };
            if let Err(e) = result {
                problems.push(format!("delivery.receivers `{}`: {e}", spec.name));
            }
        }
        if !settings.routes.is_empty() && delivery.directory().routes.routes != settings.routes {
            if let Err(e) = delivery.put_routes(settings.routes.clone()) {
                problems.push(format!("delivery.routes: {e}"));
            }
        }
        if !problems.is_empty() {
            return Err(DeliveryError::Invalid(problems));
        }
        Ok(delivery)
    }

    /// Starts one task per receiver (and the count of silenced alerts) on
    /// a thread of their own: sending never competes with HTTP workers or
    /// entity actors for a thread.
    pub fn start(self: &Arc<Self>) {
        let arbiter = actix::Arbiter::new();
        let handle = arbiter.handle();
        *lock(&self.arbiter) = Some(handle.clone());
        for name in self.directory().receivers.keys() {
            self.spawn_worker(name.clone());
        }
        handle.spawn(worker::count_silenced(Arc::clone(self)));
        // NB: the arbiter runs until the process ends; dropping this handle
        // does not stop it.
        std::mem::forget(arbiter);
    }

    /// Tells every later local change to `changes`, starting with those
    /// made since the open (the config file's).
    pub fn tell_changes(&self, changes: std::sync::mpsc::Sender<DeliveryChange>) {
        for change in lock(&self.untold).drain(..) {
            let _ = changes.send(change);
        }
        *lock(&self.changes) = Some(changes);
    }

    fn told(&self, change: DeliveryChange) {
        match lock(&self.changes).as_ref() {
            Some(changes) => {
                let _ = changes.send(change);
            }
            None if self.runtime.journal.ownership().is_some() => lock(&self.untold).push(change),
            None => {}
        }
    }

    /// Whether this instance sends notifications. In the scale-out mode
    /// only one instance of the group does: the one evaluating partition 0
    /// of the events topic (the group gives it to exactly one member), so
    /// each alert is delivered once for the whole group. The others follow
    /// its cursors.
    pub fn sends_here(&self) -> bool {
        let journal = &self.runtime.journal;
        match journal.ownership() {
            None => true,
            Some(ownership) => ownership.assigned.contains(&0) && journal.evaluates(0),
        }
    }

    /// Tells the other instances how far receiver `name` got (the sending
    /// instance's workers call this as their cursor moves).
    pub fn tell_cursor(&self, name: &str, cursor: u64) {
        if lock(&self.changes).is_some() {
            self.told(DeliveryChange::Cursor(name.to_owned(), cursor));
        }
    }

    /// Applies a change another instance made; answers whether anything
    /// changed here.
    pub fn apply_remote(self: &Arc<Self>, change: DeliveryChange) -> Result<bool, DeliveryError> {
        let _writing = lock(&self.writing);
        let store = self.store().delivery();
        match change {
            DeliveryChange::Receiver(stored) => {
                let current = store.receiver(&stored.spec.name)?;
                if current.as_ref() == Some(&*stored) {
                    return Ok(false);
                }
                let cursor = current.is_none().then(|| self.runtime.alerts.published());
                store.put_receiver(&stored, cursor)?;
                self.reload()?;
                if current.is_none() {
                    self.spawn_worker(stored.spec.name.clone());
                }
            }
            DeliveryChange::ReceiverDeleted(name) => {
                if !store.delete_receiver(&name)? {
                    return Ok(false);
                }
                lock(&self.status).remove(&name);
                self.reload()?;
            }
            DeliveryChange::Routes(stored) => {
                if self.directory().routes == stored {
                    return Ok(false);
                }
                store.put_routes(&stored)?;
                self.reload()?;
            }
            DeliveryChange::Silence(silence) => {
                if self.silences().contains(&silence) {
                    return Ok(false);
                }
                store.put_silence(&silence)?;
                self.replace_silences(move |all| {
                    match all.iter_mut().find(|s| s.id == silence.id) {
                        Some(s) => *s = *silence,
                        None => all.push(*silence),
                    }
                });
            }
            DeliveryChange::SilenceRemoved(id) => {
                if !self.silences().iter().any(|s| s.id == id) {
                    return Ok(false);
                }
                store.remove_silence(&id)?;
                self.replace_silences(|all| all.retain(|s| s.id != id));
            }
            DeliveryChange::Cursor(name, seq) => {
                // NB: the sending instance's own cursor is its workers'.
                if self.sends_here() || store.cursor(&name)?.is_some_and(|c| c >= seq) {
                    return Ok(false);
                }
                store.set_cursor(&name, seq)?;
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn spawn_worker(self: &Arc<Self>, name: String) {
        if let Some(arbiter) = lock(&self.arbiter).as_ref() {
            let delivery = Arc::clone(self);
            // NB: the HTTP client is not `Send`: the task is made on the
            // arbiter's thread and stays there.
            arbiter.spawn_fn(move || {
                actix::spawn(worker::run(delivery, name));
            });
        }
    }

    fn reload(&self) -> Result<(), DeliveryError> {
        let store = self.store().delivery();
        let receivers = store
            .receivers()?
            .into_iter()
            .map(|r| (r.spec.name.clone(), r))
            .collect();
        let routes = store.routes()?;
        *self.directory.write().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(Directory { receivers, routes });
        self.changed.send_modify(|n| *n += 1);
        Ok(())
    }

    /// The TLS client configuration for `https://` receivers.
    pub fn tls(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.tls.clone()
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.runtime.store
    }

    /// The runtime (alert hub, store).
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The `[delivery]` settings (without the receivers and routes of the
    /// config file).
    pub fn settings(&self) -> &DeliverySettings {
        &self.settings
    }

    /// Receivers and routes now.
    pub fn directory(&self) -> Arc<Directory> {
        Arc::clone(&self.directory.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Silences (all, expired ones included: they explain `silenced` marks).
    pub fn silences(&self) -> Arc<Vec<Silence>> {
        Arc::clone(&self.silences.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Watches changes of receivers, routes and silences.
    pub fn watch_changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Sets `alert.silenced` from the silences.
    pub fn mark(&self, alert: &mut StoredAlert) {
        alert.silenced = silence::mutes(&self.silences(), alert, None);
    }

    /// Checks a webhook URL against the URL policy. Blocking (resolves
    /// names): call it from `web::block`.
    pub fn check_url(&self, url: &str) -> Result<(), DeliveryError> {
        url::check_url(url, self.settings.allow_private_urls)
            .map_err(|e| DeliveryError::Invalid(vec![e]))
    }

    /// Creates (`create`) or replaces a receiver. On replacement, secrets
    /// left out are kept (they cannot be read back to be sent again) and
    /// secrets given as `""` are removed. The URL policy is checked by the
    /// caller ([`Delivery::check_url`]).
    pub fn put_receiver(
        self: &Arc<Self>,
        mut spec: ReceiverSpec,
        create: bool,
    ) -> Result<StoredReceiver, DeliveryError> {
        let _writing = lock(&self.writing);
        let store = self.store().delivery();
        let current = store.receiver(&spec.name)?;
        match (&current, create) {
            (Some(_), true) => {
                return Err(DeliveryError::Conflict(format!(
                    "a receiver named `{}` exists; replace it with PUT /v1/receivers/{}",
                    spec.name, spec.name
                )))
            }
            (None, false) => {
                return Err(DeliveryError::NotFound(format!(
                    "no receiver named `{}`",
                    spec.name
                )))
            }
            _ => {}
        }
        if let Some(old) = &current {
            if spec.hmac_secret.is_none() {
                spec.hmac_secret = old.spec.hmac_secret.clone();
            }
            for (name, value) in &old.spec.secret_headers {
                spec.secret_headers
                    .entry(name.clone())
                    .or_insert_with(|| value.clone());
            }
        }
        if spec.hmac_secret.as_ref().is_some_and(|s| s.0.is_empty()) {
            spec.hmac_secret = None;
        }
        spec.secret_headers.retain(|_, v| !v.0.is_empty());
        let problems = check_receiver(&spec);
        if !problems.is_empty() {
            return Err(DeliveryError::Invalid(problems));
        }
        let count = self.directory().receivers.len();
        if current.is_none() && count >= self.settings.max_receivers {
            return Err(DeliveryError::Limit(format!(
                "the limit of {} receivers (delivery.max_receivers) is reached",
                self.settings.max_receivers
            )));
        }
        let now = wall_now();
        let stored = StoredReceiver {
            version: store.latest_receiver_version(&spec.name)? + 1,
            created_at: current.as_ref().map_or(now, |c| c.created_at),
            updated_at: now,
            spec,
        };
        let cursor = current.is_none().then(|| self.runtime.alerts.published());
        store.put_receiver(&stored, cursor)?;
        self.reload()?;
        if current.is_none() {
            self.spawn_worker(stored.spec.name.clone());
        }
        self.told(DeliveryChange::Receiver(Box::new(stored.clone())));
        Ok(stored)
    }

    /// Removes a receiver (refused while a route names it).
    pub fn delete_receiver(&self, name: &str) -> Result<(), DeliveryError> {
        let _writing = lock(&self.writing);
        let routes = self.directory().routes.routes.clone();
        if let Some(i) = routes.iter().position(|r| r.receiver == name) {
            return Err(DeliveryError::Conflict(format!(
                "routes[{i}] sends alerts to `{name}`; change the routes first"
            )));
        }
        if !self.store().delivery().delete_receiver(name)? {
            return Err(DeliveryError::NotFound(format!(
                "no receiver named `{name}`"
            )));
        }
        lock(&self.status).remove(name);
        self.reload()?;
        self.told(DeliveryChange::ReceiverDeleted(name.to_owned()));
        Ok(())
    }

    /// Replaces the route list (version + 1).
    pub fn put_routes(&self, routes: Vec<RouteSpec>) -> Result<StoredRoutes, DeliveryError> {
        let _writing = lock(&self.writing);
        let directory = self.directory();
        let mut problems = check_routes(&routes, |name| directory.receivers.contains_key(name));
        if routes.len() > self.settings.max_routes {
            problems.push(format!(
                "routes: {} routes, more than the limit of {} (delivery.max_routes)",
                routes.len(),
                self.settings.max_routes
            ));
        }
        if !problems.is_empty() {
            return Err(DeliveryError::Invalid(problems));
        }
        let stored = StoredRoutes {
            routes,
            version: directory.routes.version + 1,
            updated_at: wall_now(),
        };
        self.store().delivery().put_routes(&stored)?;
        self.reload()?;
        self.told(DeliveryChange::Routes(stored.clone()));
        Ok(stored)
    }

    /// Creates a silence.
    pub fn create_silence(&self, spec: SilenceSpec) -> Result<Silence, DeliveryError> {
        let _writing = lock(&self.writing);
        let now = wall_now();
        let live = self
            .silences()
            .iter()
            .filter(|s| s.state(now) != SilenceState::Expired)
            .count();
        if live >= self.settings.max_silences {
            return Err(DeliveryError::Limit(format!(
                "the limit of {} silences not yet expired (delivery.max_silences) is reached; expire some first",
                self.settings.max_silences
            )));
        }
        let id = format!(
            "{:016x}",
            xxhash_rust::xxh3::xxh3_64(
                &[
                    self.store().delivery().new_id()?.to_le_bytes(),
                    now.0.to_le_bytes()
                ]
                .concat()
            )
        );
        let silence = Silence::new(id, spec, now).map_err(DeliveryError::Invalid)?;
        self.store().delivery().put_silence(&silence)?;
        // NB: expired silences are kept for their marks only as long as the
        // alerts they can mark (`history.alert_retention`); older ones go
        // here, so they never pile up.
        let forget_before = now.minus(self.runtime.config.upkeep.alert_retention);
        let old: Vec<String> = self
            .silences()
            .iter()
            .filter(|s| s.ends_at < forget_before)
            .map(|s| s.id.clone())
            .collect();
        for id in &old {
            self.store().delivery().remove_silence(id)?;
            self.told(DeliveryChange::SilenceRemoved(id.clone()));
        }
        self.replace_silences(|all| {
            all.retain(|s| !old.contains(&s.id));
            all.push(silence.clone());
        });
        self.told(DeliveryChange::Silence(Box::new(silence.clone())));
        Ok(silence)
    }

    /// Expires a silence now (it is kept, so the alerts it muted stay
    /// marked).
    pub fn expire_silence(&self, id: &str) -> Result<Silence, DeliveryError> {
        let _writing = lock(&self.writing);
        let mut silence = self
            .silences()
            .iter()
            .find(|s| s.id == id)
            .cloned()
            .ok_or_else(|| DeliveryError::NotFound(format!("no silence with id `{id}`")))?;
        silence.expire(wall_now());
        self.store().delivery().put_silence(&silence)?;
        let copy = silence.clone();
        self.replace_silences(move |all| {
            if let Some(s) = all.iter_mut().find(|s| s.id == copy.id) {
                *s = copy;
            }
        });
        self.told(DeliveryChange::Silence(Box::new(silence.clone())));
        Ok(silence)
    }

    fn replace_silences(&self, change: impl FnOnce(&mut Vec<Silence>)) {
        let mut guard = self.silences.write().unwrap_or_else(|p| p.into_inner());
        let mut all = (**guard).clone();
        change(&mut all);
        *guard = Arc::new(all);
        drop(guard);
        self.changed.send_modify(|n| *n += 1);
    }

    /// The status of receiver `name`'s task.
    pub fn status(&self, name: &str) -> ReceiverStatus {
        let mut status = lock(&self.status).get(name).cloned().unwrap_or_default();
        let store = self.store().delivery();
        if status.cursor == 0 {
            status.cursor = store.cursor(name).ok().flatten().unwrap_or(0);
        }
        status.backlog = self
            .runtime
            .alerts
            .published()
            .saturating_sub(status.cursor);
        status.failures = store.failures(name).map_or(0, |f| f.len());
        status.lost = store
            .lost(name)
            .map_or(0, |l| l.iter().map(|l| l.last_seq - l.first_seq + 1).sum());
        status
    }

    fn update_status(&self, name: &str, change: impl FnOnce(&mut ReceiverStatus)) {
        change(lock(&self.status).entry(name.to_owned()).or_default());
    }

    /// Sends a parked notification again, once, now; removes it when it
    /// goes through, records the new failure when it does not.
    pub async fn resend(&self, name: &str, id: u64) -> Result<(), DeliveryError> {
        let store = self.store().delivery();
        let receiver = store
            .receiver(name)?
            .ok_or_else(|| DeliveryError::NotFound(format!("no receiver named `{name}`")))?;
        let mut failure: FailedDelivery = store.failure(name, id)?.ok_or_else(|| {
            DeliveryError::NotFound(format!("receiver `{name}` has no failed delivery {id}"))
        })?;
        let mut alerts = Vec::new();
        for seq in &failure.seqs {
            match self.store().alerts().get(*seq)? {
                Some(mut alert) => {
                    self.mark(&mut alert);
                    alerts.push(Arc::new(alert));
                }
                None => {
                    return Err(DeliveryError::Gone(format!(
                        "alert seq {seq} of failed delivery {id} is no longer in the alert log (history.alert_retention)"
                    )))
                }
            }
        }
        let notification = group::Notification {
            labels: Vec::new(),
            alerts,
        };
        let client = worker::client(self.tls());
        match worker::send(
            &client,
            &receiver.spec,
            &notification,
            self.settings.timeout,
        )
        .await
        {
            Ok(()) => {
                crate::telemetry::delivered(name, &notification.alerts, wall_now());
                store.remove_failure(name, id)?;
                Ok(())
            }
            Err(e) => {
                failure.attempts += 1;
                failure.last_error = e.message.clone();
                failure.failed_at = wall_now();
                store.update_failure(name, &failure)?;
                Err(DeliveryError::Failed(format!(
                    "receiver `{name}` failed again: {}",
                    e.message
                )))
            }
        }
    }
}
