//! The task of one receiver: read the alert log after the cursor, keep
//! what the routes send here, group, send in order with retries, park what
//! keeps failing, move the cursor.
//!
//! NB (invariant): the cursor never passes an alert that is neither
//! delivered, parked nor skipped (not routed here, silenced, lost): it is
//! the seq before the oldest alert still held, or the last seq read when
//! none is held. So a crash re-sends at most what was held or sent after
//! the last cursor write that reached the disk.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use crate::actors::wall_now;
use crate::delivery::backoff::{backoff, jitter};
use crate::delivery::config::ReceiverSpec;
use crate::delivery::group::{Batcher, Notification, TokenBucket};
use crate::delivery::payload::render;
use crate::delivery::sign::{signature, SIGNATURE_HEADER};
use crate::delivery::{route, silence, Delivery};
use crate::settings::std_duration;
use crate::store::alerts::AlertFilter;
use crate::store::delivery::{FailedDelivery, LostAlerts, StoredReceiver};
use crate::telemetry;
use crate::time::Duration;

/// Alerts read from the log per pass.
const READ_PAGE: usize = 500;
/// Longest sleep of an idle task (it also wakes on new alerts and changes).
const IDLE_WAKE: StdDuration = StdDuration::from_secs(1);
/// Shortest interval between two cursors told to the other instances
/// while busy (the scale-out mode): a new sender re-sends at most this
/// much, with the same idempotency keys.
const CURSOR_TELL: StdDuration = StdDuration::from_millis(250);

/// Why an attempt failed.
#[derive(Debug, Clone)]
pub struct SendError {
    /// What happened, for people (never holds a secret).
    pub message: String,
    /// Whether trying again may help (5xx, 408, 429, timeouts, refused
    /// connections; not other 4xx).
    pub retryable: bool,
    /// The receiver's `Retry-After`, if it sent one.
    pub retry_after: Option<StdDuration>,
}

/// An HTTP client for notifications: no redirects (a redirect could lead
/// past the URL policy); `https://` with rustls when `tls` is given.
pub fn client(tls: Option<Arc<rustls::ClientConfig>>) -> awc::Client {
    let mut connector = awc::Connector::new();
    if let Some(tls) = tls {
        connector = connector.rustls_0_23(tls);
    }
    awc::Client::builder()
        .connector(connector)
        .disable_redirects()
        .timeout(StdDuration::from_secs(600))
        .finish()
}

/// Where the system keeps its certificate authorities (Debian, Red Hat,
/// Alpine and macOS layouts); `SSL_CERT_FILE` wins.
const CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// The TLS client configuration: the roots of `ca_file` when given (an
/// error if it holds none), else of the system's bundle (`SSL_CERT_FILE`,
/// else the first of [`CA_BUNDLES`]). `Ok(None)` (logged) when the system
/// has none: `https://` receivers then fail to connect, with that reason in
/// their `last_error`.
pub fn tls_config(
    ca_file: Option<&std::path::Path>,
) -> Result<Option<Arc<rustls::ClientConfig>>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let from_env = std::env::var("SSL_CERT_FILE").ok();
    let path = match ca_file {
        Some(path) => path.to_owned(),
        None => match from_env
            .as_deref()
            .into_iter()
            .chain(CA_BUNDLES.iter().copied())
            .find(|p| std::path::Path::new(p).exists())
        {
            Some(path) => path.into(),
            None => {
                tracing::warn!("no CA bundle found (set SSL_CERT_FILE or delivery.ca_file): https:// receivers cannot be reached");
                return Ok(None);
            }
        },
    };
    let certs = CertificateDer::pem_file_iter(&path)
        .map(|certs| certs.filter_map(Result::ok).collect::<Vec<_>>())
        .map_err(|e| format!("cannot read the CA bundle {}: {e}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!(
            "the CA bundle {} holds no usable certificate",
            path.display()
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

/// One attempt: POSTs `notification` to the receiver.
pub async fn send(
    client: &awc::Client,
    spec: &ReceiverSpec,
    notification: &Notification,
    default_timeout: Duration,
) -> Result<(), SendError> {
    let rendered = render(spec.format, &spec.name, notification);
    let timeout = std_duration(spec.timeout.unwrap_or(default_timeout));
    let mut request = client
        .post(&spec.url)
        .timeout(timeout)
        .insert_header(("Content-Type", rendered.content_type))
        .insert_header(("User-Agent", concat!("cepheus/", env!("CARGO_PKG_VERSION"))))
        .insert_header(("Idempotency-Key", rendered.idempotency_key.as_str()))
        .insert_header((
            "X-Cepheus-Alert-Count",
            notification.alerts.len().to_string(),
        ));
    if let [one] = notification.alerts.as_slice() {
        request = request.insert_header(("X-Cepheus-Alert-Id", one.id.as_str()));
    }
    for (name, value) in &spec.headers {
        request = request.insert_header((name.as_str(), value.as_str()));
    }
    for (name, value) in &spec.secret_headers {
        request = request.insert_header((name.as_str(), value.0.as_str()));
    }
    if let Some(secret) = &spec.hmac_secret {
        request = request.insert_header((SIGNATURE_HEADER, signature(&secret.0, &rendered.body)));
    }
    match request.send_body(rendered.body).await {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => {
            let status = response.status();
            let retry_after = response
                .headers()
                .get("Retry-After")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(StdDuration::from_secs);
            Err(SendError {
                message: format!("the receiver answered {status}"),
                retryable: status.is_server_error()
                    || status.as_u16() == 408
                    || status.as_u16() == 429,
                retry_after,
            })
        }
        Err(awc::error::SendRequestError::Timeout) => Err(SendError {
            message: format!("no answer within {} ms", timeout.as_millis()),
            retryable: true,
            retry_after: None,
        }),
        Err(e) => Err(SendError {
            message: format!("cannot reach the receiver: {e}"),
            retryable: true,
            retry_after: None,
        }),
    }
}

/// What became of a notification.
enum Outcome {
    /// Delivered, parked, or held back whole by a silence.
    Done,
    /// The receiver was removed while it was being retried.
    Abandoned,
}

/// The task of receiver `name`; ends when the receiver is removed.
pub async fn run(delivery: Arc<Delivery>, name: String) {
    let store = delivery.store().clone();
    let settings = delivery.settings().clone();
    let client = client(delivery.tls());
    let mut published = delivery.runtime().alerts.watch_published();
    let mut changes = delivery.watch_changes();
    let mut cursor = match store.delivery().cursor(&name) {
        Ok(Some(cursor)) => cursor,
        Ok(None) => delivery.runtime().alerts.published(),
        Err(e) => {
            tracing::error!(receiver = %name, error = %e, "cannot read the receiver's cursor; it sends nothing until restarted");
            return;
        }
    };
    // NB: a cursor that may not be on disk yet is made durable before any
    // sending: otherwise a crash could restart it later in the log and
    // skip what was published meanwhile.
    if store.delivery().set_cursor(&name, cursor).is_err() || store.sync().await.is_err() {
        tracing::warn!(receiver = %name, "cannot persist the receiver's cursor");
    }
    let mut read = cursor;
    let mut held: BTreeSet<u64> = BTreeSet::new();
    let mut batcher = Batcher::default();
    let mut bucket: Option<(crate::delivery::config::RateLimit, TokenBucket)> = None;
    let mut throttled = false;
    // The change version and time of the last check of held alerts against
    // the silences.
    let mut silences_checked = (u64::MAX, i64::MIN);
    let all = AlertFilter {
        shadow: true,
        silenced: true,
        ..AlertFilter::default()
    };
    // NB: the receiver this task serves is the one created at this time: a
    // receiver removed and created again under the same name gets a task
    // of its own, and this one ends.
    let Some(created_at) = delivery
        .directory()
        .receivers
        .get(&name)
        .map(|r| r.created_at)
    else {
        return;
    };
    tracing::debug!(receiver = %name, cursor, "delivery task started");
    // The cursor last told to the other instances, and when.
    let mut told = (cursor, std::time::Instant::now());
    loop {
        if !delivery.sends_here() {
            // Another instance of the group sends (the scale-out mode):
            // hold nothing, follow the cursor it tells, and go on from
            // there if this one becomes the sender.
            batcher = Batcher::default();
            held.clear();
            if let Ok(Some(shared)) = store.delivery().cursor(&name) {
                cursor = cursor.max(shared);
            }
            read = cursor;
            told = (cursor, std::time::Instant::now());
            delivery.update_status(&name, |s| {
                s.cursor = cursor;
                s.held = 0;
            });
            if delivery
                .directory()
                .receivers
                .get(&name)
                .map(|r| r.created_at)
                != Some(created_at)
            {
                return;
            }
            tokio::select! {
                _ = changes.changed() => {}
                _ = tokio::time::sleep(IDLE_WAKE) => {}
            }
            continue;
        }
        let directory = delivery.directory();
        let Some(receiver) = directory
            .receivers
            .get(&name)
            .filter(|r| r.created_at == created_at)
            .cloned()
        else {
            tracing::info!(receiver = %name, "receiver removed; its task ends");
            return;
        };
        let silences = delivery.silences();
        let now = wall_now();
        // Read what the routes send here, up to the read-ahead bound.
        let last = delivery.runtime().alerts.published();
        let read_before = read;
        while read < last && batcher.len() < settings.queue_len.max(1) {
            let first = store.alerts().first_seq().unwrap_or(read + 1);
            if read + 1 < first {
                let lost = LostAlerts {
                    first_seq: read + 1,
                    last_seq: first - 1,
                    noticed_at: now,
                };
                tracing::warn!(receiver = %name, first = lost.first_seq, last = lost.last_seq,
                    "alerts were removed by retention before this receiver got them; they are listed as lost");
                telemetry::delivery_lost(&name, lost.last_seq - lost.first_seq + 1);
                if let Err(e) = store.delivery().record_lost(&name, &lost) {
                    tracing::error!(receiver = %name, error = %e, "cannot record lost alerts");
                }
                read = first - 1;
            }
            let room = settings.queue_len.max(1) - batcher.len();
            let (page, scanned) =
                match store
                    .alerts()
                    .query(&all, read, last, room.min(READ_PAGE), READ_PAGE * 4)
                {
                    Ok(page) => page,
                    Err(e) => {
                        tracing::error!(receiver = %name, error = %e, "cannot read the alert log");
                        break;
                    }
                };
            for mut alert in page {
                alert.silenced = silence::mutes(&silences, &alert, None);
                if alert.silenced {
                    continue;
                }
                // Resolutions go only to receivers that ask for them.
                if alert.resolves.is_some() && !receiver.spec.send_resolved {
                    continue;
                }
                let Some(grouping) = route::route_for(&directory.routes.routes, &name, &alert)
                else {
                    continue;
                };
                if silence::mutes(&silences, &alert, Some(now)) {
                    telemetry::delivery_silenced(&name);
                    continue;
                }
                held.insert(alert.seq);
                batcher.add(Arc::new(alert), &grouping, now.millis());
            }
            if scanned <= read {
                break;
            }
            read = scanned;
        }
        // A silence holds back, at send time, what it matches. NB: alerts
        // are checked as they are read; those held are checked again when
        // the silences change and once a second (a pending silence starts
        // by time alone), not on every pass: that is held × silences.
        let version = *changes.borrow();
        if version != silences_checked.0 || now.millis() - silences_checked.1 >= 1_000 {
            silences_checked = (version, now.millis());
            for alert in batcher.remove(|a| silence::mutes(&silences, a, Some(now))) {
                held.remove(&alert.seq);
                telemetry::delivery_silenced(&name);
            }
        }
        batcher.close_quiet_groups(now.millis());
        // Send one notification if one is due and the rate limit allows.
        let mut wake_at = batcher.next_due();
        if wake_at.is_some_and(|due| due <= now.millis()) {
            let limit = receiver.spec.rate_limit;
            if bucket.as_ref().map(|(l, _)| Some(*l)) != Some(limit) {
                bucket = limit.map(|l| (l, TokenBucket::new(&l, now.millis())));
            }
            let allowed = match &mut bucket {
                Some((_, b)) => b.try_take(now.millis()),
                None => true,
            };
            if allowed {
                if let Some(notification) =
                    batcher.take_due(now.millis(), settings.max_batch_alerts, throttled)
                {
                    if throttled && notification.alerts.len() > 1 {
                        telemetry::delivery_batched(&name, notification.alerts.len());
                    }
                    throttled = false;
                    let seqs: Vec<u64> = notification.alerts.iter().map(|a| a.seq).collect();
                    match deliver(&delivery, &client, &receiver, notification, &mut changes).await {
                        Outcome::Abandoned => return,
                        Outcome::Done => {
                            for seq in seqs {
                                held.remove(&seq);
                            }
                        }
                    }
                }
                wake_at = Some(now.millis());
            } else {
                throttled = true;
                wake_at = bucket.as_mut().map(|(_, b)| b.ready_at(now.millis()));
            }
        }
        // Move the cursor past everything finished.
        let done = held.first().map_or(read, |first| first - 1);
        if done != cursor {
            cursor = done;
            if let Err(e) = store.delivery().set_cursor(&name, cursor) {
                tracing::error!(receiver = %name, error = %e, "cannot persist the receiver's cursor");
            }
        }
        if cursor != told.0 && told.1.elapsed() >= CURSOR_TELL {
            delivery.tell_cursor(&name, cursor);
            told = (cursor, std::time::Instant::now());
        }
        let backlog = delivery.runtime().alerts.published().saturating_sub(cursor);
        telemetry::delivery_queue(&name, backlog);
        delivery.update_status(&name, |s| {
            s.cursor = cursor;
            s.held = batcher.len();
        });
        if wake_at.is_some_and(|at| at <= wall_now().millis()) {
            continue;
        }
        // NB: only while reading makes progress: a seq published but not
        // in the store (a failed store write, rebuilt at the next start)
        // must not spin this loop.
        if read > read_before
            && read < delivery.runtime().alerts.published()
            && batcher.len() < settings.queue_len.max(1)
        {
            continue;
        }
        if cursor != told.0 {
            delivery.tell_cursor(&name, cursor);
            told = (cursor, std::time::Instant::now());
        }
        let sleep = wake_at.map_or(IDLE_WAKE, |at| {
            StdDuration::from_millis(at.saturating_sub(wall_now().millis()).max(1) as u64)
                .min(IDLE_WAKE)
        });
        tokio::select! {
            _ = published.changed() => {}
            _ = changes.changed() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// Sends `notification` until it goes through or its attempts are spent
/// (then parks it). Before each attempt it reads the receiver again, so a
/// corrected URL or secret applies to the next one, and drops the alerts a
/// silence now holds back.
async fn deliver(
    delivery: &Arc<Delivery>,
    client: &awc::Client,
    first: &StoredReceiver,
    mut notification: Notification,
    changes: &mut tokio::sync::watch::Receiver<u64>,
) -> Outcome {
    let settings = delivery.settings();
    let name = first.spec.name.as_str();
    let current = || {
        delivery
            .directory()
            .receivers
            .get(name)
            .filter(|r| r.created_at == first.created_at)
            .cloned()
    };
    let notification = &mut notification;
    let mut attempt = 0u32;
    loop {
        let Some(receiver) = current() else {
            return Outcome::Abandoned;
        };
        let silences = delivery.silences();
        let now = wall_now();
        notification.alerts.retain(|a| {
            let muted = silence::mutes(&silences, a, Some(now));
            if muted {
                telemetry::delivery_silenced(name);
            }
            !muted
        });
        if notification.alerts.is_empty() {
            return Outcome::Done;
        }
        attempt += 1;
        let result = send(client, &receiver.spec, notification, settings.timeout).await;
        let error = match result {
            Ok(()) => {
                let now = wall_now();
                telemetry::delivered(name, &notification.alerts, now);
                delivery.update_status(name, |s| {
                    s.retrying = false;
                    s.last_delivered_at = Some(now);
                });
                return Outcome::Done;
            }
            Err(e) => e,
        };
        tracing::warn!(receiver = %name, attempt, error = %error.message, alerts = notification.alerts.len(), "a notification failed");
        let max_attempts = receiver
            .spec
            .max_attempts
            .unwrap_or(settings.max_attempts)
            .max(1);
        delivery.update_status(name, |s| s.last_error = Some(error.message.clone()));
        if !error.retryable || attempt >= max_attempts {
            park(delivery, name, notification, attempt, error.message);
            delivery.update_status(name, |s| s.retrying = false);
            return Outcome::Done;
        }
        telemetry::delivery_retry(name);
        delivery.update_status(name, |s| s.retrying = true);
        let mut wait = backoff(
            attempt,
            std_duration(settings.backoff_initial),
            std_duration(settings.backoff_max),
            jitter(),
        );
        if let Some(asked) = error.retry_after {
            wait = wait.max(asked.min(std_duration(settings.backoff_max)));
        }
        let until = tokio::time::Instant::now() + wait;
        // NB: a change (the receiver fixed or removed, a silence) ends the
        // wait early: the next attempt uses it at once.
        tokio::select! {
            _ = tokio::time::sleep_until(until) => {}
            changed = changes.changed() => {
                if changed.is_ok() && current().is_none() {
                    return Outcome::Abandoned;
                }
            }
        }
    }
}

fn park(
    delivery: &Delivery,
    name: &str,
    notification: &Notification,
    attempts: u32,
    error: String,
) {
    let failure = FailedDelivery {
        id: 0,
        seqs: notification.alerts.iter().map(|a| a.seq).collect(),
        alert_ids: notification.alerts.iter().map(|a| a.id.clone()).collect(),
        attempts,
        last_error: error,
        failed_at: wall_now(),
    };
    telemetry::delivery_failed(name, notification.alerts.len());
    match delivery
        .store()
        .delivery()
        .park(name, failure, delivery.settings().max_failures)
    {
        Ok((id, removed)) => {
            tracing::warn!(receiver = %name, failure = id, alerts = notification.alerts.len(), "a notification is parked as a failed delivery");
            if removed > 0 {
                telemetry::delivery_failures_dropped(name, removed);
            }
        }
        Err(e) => {
            tracing::error!(receiver = %name, error = %e, "cannot park a failed delivery; its alerts are not listed")
        }
    }
}

/// Counts the alerts silenced when detected, per rule
/// (`cepheus_alerts_silenced_total`), following the alert log from the
/// last seq published at start.
pub async fn count_silenced(delivery: Arc<Delivery>) {
    let mut published = delivery.runtime().alerts.watch_published();
    let mut read = delivery.runtime().alerts.published();
    let all = AlertFilter {
        shadow: true,
        silenced: true,
        ..AlertFilter::default()
    };
    loop {
        let last = delivery.runtime().alerts.published();
        let silences = delivery.silences();
        while read < last && !silences.is_empty() {
            match delivery
                .store()
                .alerts()
                .query(&all, read, last, READ_PAGE, READ_PAGE * 4)
            {
                Ok((page, scanned)) => {
                    for alert in page {
                        if silence::mutes(&silences, &alert, None) {
                            telemetry::alert_silenced(&alert.rule);
                        }
                    }
                    if scanned <= read {
                        break;
                    }
                    read = scanned;
                }
                Err(_) => break,
            }
        }
        read = read.max(last);
        if published.changed().await.is_err() {
            return;
        }
    }
}
