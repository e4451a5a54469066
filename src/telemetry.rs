//! Metric names, chosen once, and the functions that record them.
//!
//! Exposed at `GET /metrics` in Prometheus text format by
//! `metrics-exporter-prometheus`. Handlers call these functions; nobody
//! spells a metric name anywhere else.

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::engine::DropCounters;

/// Events accepted by ingest.
pub const EVENTS_ACCEPTED: &str = "cepheus_events_accepted_total";
/// Events rejected by ingest (invalid).
pub const EVENTS_REJECTED: &str = "cepheus_events_rejected_total";
/// Events acknowledged as duplicates of an id seen before.
pub const EVENTS_DUPLICATE: &str = "cepheus_events_duplicate_total";
/// Events older than their entity's watermark.
pub const EVENTS_LATE: &str = "cepheus_events_late_total";
/// Events late for a rule, by rule and policy.
pub const EVENTS_LATE_BY_RULE: &str = "cepheus_rule_late_events_total";
/// Requests refused with 429.
pub const INGEST_OVERLOADED: &str = "cepheus_ingest_overloaded_total";
/// Alerts recorded, by rule.
pub const ALERTS: &str = "cepheus_alerts_total";
/// Live entity actors.
pub const ENTITIES_LIVE: &str = "cepheus_entities_live";
/// Entities activated (started or woken from disk).
pub const ENTITIES_ACTIVATED: &str = "cepheus_entities_activated_total";
/// Entities passivated (state to disk, actor stopped).
pub const ENTITIES_PASSIVATED: &str = "cepheus_entities_passivated_total";
/// Messages waiting in entity mailboxes.
pub const MAILBOX_DEPTH: &str = "cepheus_mailbox_depth";
/// Events accepted and not yet evaluated.
pub const INFLIGHT_EVENTS: &str = "cepheus_inflight_events";
/// Work dropped at a per-key limit, by kind.
pub const DROPPED: &str = "cepheus_dropped_total";
/// Bytes the data directory takes on disk.
pub const STORE_BYTES: &str = "cepheus_store_bytes";
/// Bytes of the event log's records (encoded).
pub const EVENT_LOG_BYTES: &str = "cepheus_event_log_bytes";
/// Entity snapshots that could not be read back.
pub const SNAPSHOT_RESTORE_FAILURES: &str = "cepheus_snapshot_restore_failures_total";
/// WebSocket subscribers connected.
pub const WS_SUBSCRIBERS: &str = "cepheus_ws_subscribers";
/// WebSocket subscribers disconnected for falling behind.
pub const WS_SLOW_DISCONNECTS: &str = "cepheus_ws_slow_disconnects_total";
/// Event ids forgotten before the dedup horizon because the index was full.
pub const DEDUP_IDS_FORGOTTEN: &str = "cepheus_dedup_ids_forgotten_total";
/// Time spent in each stage of the path of events and alerts, by stage
/// (see [`Stage`]).
pub const STAGE_SECONDS: &str = "cepheus_stage_seconds";
/// HTTP request latency, by method, route and status.
pub const HTTP_REQUEST_SECONDS: &str = "cepheus_http_request_duration_seconds";

/// Notifications a receiver accepted, by receiver.
pub const DELIVERY_NOTIFICATIONS: &str = "cepheus_delivery_notifications_total";
/// Alerts delivered, by receiver.
pub const DELIVERY_ALERTS: &str = "cepheus_delivery_alerts_total";
/// Notifications parked after their last failed attempt, by receiver.
pub const DELIVERY_FAILURES: &str = "cepheus_delivery_failures_total";
/// Alerts in parked notifications, by receiver.
pub const DELIVERY_FAILED_ALERTS: &str = "cepheus_delivery_failed_alerts_total";
/// Failed attempts followed by another, by receiver.
pub const DELIVERY_RETRIES: &str = "cepheus_delivery_retries_total";
/// Alerts published and not yet done by a receiver (its backlog), by receiver.
pub const DELIVERY_QUEUE: &str = "cepheus_delivery_queue_depth";
/// From an alert's detection to a receiver accepting it, by receiver.
pub const DELIVERY_LATENCY: &str = "cepheus_delivery_latency_seconds";
/// Alerts removed by retention before a receiver got them, by receiver.
pub const DELIVERY_LOST: &str = "cepheus_delivery_lost_alerts_total";
/// Alerts held back by a silence at send time, by receiver.
pub const DELIVERY_SILENCED: &str = "cepheus_delivery_silenced_alerts_total";
/// Alerts sent together because the receiver's rate limit held them, by receiver.
pub const DELIVERY_BATCHED: &str = "cepheus_delivery_rate_limited_alerts_total";
/// Parked notifications removed at `delivery.max_failures`, by receiver.
pub const DELIVERY_FAILURES_DROPPED: &str = "cepheus_delivery_failures_dropped_total";
/// Alerts silenced when detected, by rule.
pub const ALERTS_SILENCED: &str = "cepheus_alerts_silenced_total";

/// Installs the Prometheus recorder; the handle renders `/metrics`.
/// Installing twice (tests) returns a handle of a local recorder.
pub fn install() -> PrometheusHandle {
    let builder = || {
        PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(HTTP_REQUEST_SECONDS.into()),
                &[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ],
            )
            .and_then(|b| {
                b.set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(STAGE_SECONDS.into()),
                    STAGE_BUCKETS,
                )
            })
            .and_then(|b| {
                b.set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(DELIVERY_LATENCY.into()),
                    &[
                        0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 1800.0, 3600.0,
                    ],
                )
            })
            .expect("bucket lists are not empty")
    };
    match builder().install_recorder() {
        Ok(handle) => handle,
        Err(_) => builder().build_recorder().handle(),
    }
}

/// Counts ingest results.
pub fn ingested(accepted: usize, rejected: usize, duplicates: usize) {
    counter!(EVENTS_ACCEPTED).increment(accepted as u64);
    counter!(EVENTS_REJECTED).increment(rejected as u64);
    counter!(EVENTS_DUPLICATE).increment(duplicates as u64);
}

/// Counts event ids forgotten early (the index reached `max_remembered_ids`).
pub fn dedup_ids_forgotten(n: u64) {
    counter!(DEDUP_IDS_FORGOTTEN).increment(n);
    tracing::warn!(
        ids = n,
        "the dedup index is full (history.max_remembered_ids): the oldest event ids were forgotten before the dedup horizon"
    );
}

/// Bucket bounds of [`STAGE_SECONDS`]: 10 µs to 5 s.
pub const STAGE_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A stage of the path of events and alerts, timed in [`STAGE_SECONDS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Parsing a request body into events.
    Decode,
    /// A request waiting for its turn at the journal's sequencer.
    SequencerWait,
    /// Stamping, deduplicating, placing and routing a group of requests.
    Sequence,
    /// Writing a frame to the journal.
    Write,
    /// The fdatasync of a frame.
    Fsync,
    /// A request waiting, once sequenced, for its frame to be durable.
    CommitWait,
    /// Events waiting in an entity's mailbox.
    MailboxWait,
    /// An entity evaluating the events of one message.
    Evaluate,
    /// An alert from its detection to its frame being durable and stored.
    AlertDurable,
    /// Storing and broadcasting one durable group's alerts and letters.
    Publish,
}

impl Stage {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::SequencerWait => "sequencer_wait",
            Stage::Sequence => "sequence",
            Stage::Write => "write",
            Stage::Fsync => "fsync",
            Stage::CommitWait => "commit_wait",
            Stage::MailboxWait => "mailbox_wait",
            Stage::Evaluate => "evaluate",
            Stage::AlertDurable => "alert_durable",
            Stage::Publish => "publish",
        }
    }
}

impl Stage {
    const ALL: [Stage; 10] = [
        Stage::Decode,
        Stage::SequencerWait,
        Stage::Sequence,
        Stage::Write,
        Stage::Fsync,
        Stage::CommitWait,
        Stage::MailboxWait,
        Stage::Evaluate,
        Stage::AlertDurable,
        Stage::Publish,
    ];
}

/// Records time spent in `stage`.
///
/// NB: the histogram handles are looked up once: looking one up per call
/// (the recorder's registry) cost more than the work timed in some stages.
pub fn stage(stage: Stage, took: std::time::Duration) {
    static HANDLES: std::sync::OnceLock<Vec<metrics::Histogram>> = std::sync::OnceLock::new();
    let handles = HANDLES.get_or_init(|| {
        Stage::ALL
            .iter()
            .map(|s| histogram!(STAGE_SECONDS, "stage" => s.as_str()))
            .collect()
    });
    if let Some(h) = Stage::ALL
        .iter()
        .position(|s| *s == stage)
        .and_then(|i| handles.get(i))
    {
        h.record(took.as_secs_f64());
    }
}

/// Counts a request refused for overload.
pub fn overloaded() {
    counter!(INGEST_OVERLOADED).increment(1);
}

/// Counts late events.
pub fn events_late(n: usize) {
    counter!(EVENTS_LATE).increment(n as u64);
}

/// Counts an event late for `rule`, and what the rule did with it
/// (`dead_letter` or `evaluate`).
pub fn late_for_rule(rule: &str, policy: &'static str) {
    counter!(EVENTS_LATE_BY_RULE, "rule" => rule.to_owned(), "policy" => policy).increment(1);
}

/// Counts one alert of `rule`.
pub fn alert_fired(rule: &str) {
    counter!(ALERTS, "rule" => rule.to_owned()).increment(1);
}

/// Counts an activation.
pub fn activated() {
    counter!(ENTITIES_ACTIVATED).increment(1);
}

/// Counts a passivation.
pub fn passivated() {
    counter!(ENTITIES_PASSIVATED).increment(1);
}

/// Counts a snapshot that could not be restored.
pub fn snapshot_restore_failed() {
    counter!(SNAPSHOT_RESTORE_FAILURES).increment(1);
}

/// Counts drops at per-key limits.
pub fn dropped(d: &DropCounters) {
    if d.is_empty() {
        return;
    }
    counter!(DROPPED, "kind" => "partial_match").increment(d.partial_matches);
    counter!(DROPPED, "kind" => "window_entry").increment(d.window_entries);
    counter!(DROPPED, "kind" => "pending_deadline").increment(d.pending_deadlines);
    counter!(DROPPED, "kind" => "expired_match").increment(d.expired_matches);
    counter!(DROPPED, "kind" => "released_early").increment(d.released_early);
}

/// Sets the gauges read at scrape time.
pub fn gauges(live: usize, mailbox: u64, inflight: usize, subscribers: usize) {
    gauge!(ENTITIES_LIVE).set(live as f64);
    gauge!(MAILBOX_DEPTH).set(mailbox as f64);
    gauge!(INFLIGHT_EVENTS).set(inflight as f64);
    gauge!(WS_SUBSCRIBERS).set(subscribers as f64);
}

/// Sets the store's size gauges, read at scrape time.
pub fn store_gauges(store_bytes: u64, log_bytes: u64) {
    gauge!(STORE_BYTES).set(store_bytes as f64);
    gauge!(EVENT_LOG_BYTES).set(log_bytes as f64);
}

/// Scale-out mode: records this instance still has to consume, per
/// partition of the events topic it owns (from librdkafka's statistics).
pub const KAFKA_CONSUMER_LAG: &str = "cepheus_kafka_consumer_lag";
/// Scale-out mode: partitions of the events topic this instance owns.
pub const KAFKA_PARTITIONS_ASSIGNED: &str = "cepheus_kafka_partitions_assigned";
/// Scale-out mode: owned partitions not yet read up to their end.
pub const KAFKA_PARTITIONS_RESTORING: &str = "cepheus_kafka_partitions_restoring";
/// Scale-out mode: assignments received from the group.
pub const KAFKA_REBALANCES: &str = "cepheus_kafka_rebalances_total";

/// Scale-out mode: entity snapshots read from the changelog into the
/// local store when partitions were assigned here.
pub const KAFKA_RESTORED_SNAPSHOTS: &str = "cepheus_kafka_restored_snapshots_total";
/// Scale-out mode: live entities checkpointed and dropped because their
/// partition was revoked.
pub const KAFKA_RELEASED_ENTITIES: &str = "cepheus_kafka_released_entities_total";
/// Scale-out mode: entity snapshots written to the changelog.
pub const KAFKA_CHANGELOG_RECORDS: &str = "cepheus_kafka_changelog_records_total";

/// Counts snapshots restored from the changelog.
pub fn kafka_restored(snapshots: u64) {
    counter!(KAFKA_RESTORED_SNAPSHOTS).increment(snapshots);
}

/// Counts entities released with their revoked partition.
pub fn kafka_released(entities: u64) {
    counter!(KAFKA_RELEASED_ENTITIES).increment(entities);
}

/// Counts snapshots written to the changelog.
pub fn kafka_changelog_records(records: u64) {
    counter!(KAFKA_CHANGELOG_RECORDS).increment(records);
}

/// Sets the consumer lag of one owned partition.
pub fn kafka_consumer_lag(partition: i32, lag: i64) {
    gauge!(KAFKA_CONSUMER_LAG, "partition" => partition.to_string()).set(lag.max(0) as f64);
}

/// Sets the ownership gauges, read at scrape time.
pub fn kafka_ownership(assigned: usize, restoring: usize) {
    gauge!(KAFKA_PARTITIONS_ASSIGNED).set(assigned as f64);
    gauge!(KAFKA_PARTITIONS_RESTORING).set(restoring as f64);
}

/// Counts an assignment from the group.
pub fn kafka_rebalance() {
    counter!(KAFKA_REBALANCES).increment(1);
}

/// Counts a slow WebSocket subscriber disconnected.
pub fn ws_slow_disconnect() {
    counter!(WS_SLOW_DISCONNECTS).increment(1);
}

/// Records one HTTP request.
pub fn http_request(method: &str, route: &str, status: u16, seconds: f64) {
    histogram!(
        HTTP_REQUEST_SECONDS,
        "method" => method.to_owned(),
        "route" => route.to_owned(),
        "status" => status.to_string()
    )
    .record(seconds);
}

/// Counts a notification a receiver accepted, its alerts, and their
/// latency from detection.
pub fn delivered(
    receiver: &str,
    alerts: &[std::sync::Arc<crate::store::alerts::StoredAlert>],
    now: crate::time::Timestamp,
) {
    counter!(DELIVERY_NOTIFICATIONS, "receiver" => receiver.to_owned()).increment(1);
    counter!(DELIVERY_ALERTS, "receiver" => receiver.to_owned()).increment(alerts.len() as u64);
    let latency = histogram!(DELIVERY_LATENCY, "receiver" => receiver.to_owned());
    for alert in alerts {
        latency.record(now.since(alert.detected_at).millis().max(0) as f64 / 1000.0);
    }
}

/// Counts a parked notification of `alerts` alerts.
pub fn delivery_failed(receiver: &str, alerts: usize) {
    counter!(DELIVERY_FAILURES, "receiver" => receiver.to_owned()).increment(1);
    counter!(DELIVERY_FAILED_ALERTS, "receiver" => receiver.to_owned()).increment(alerts as u64);
}

/// Counts a retry.
pub fn delivery_retry(receiver: &str) {
    counter!(DELIVERY_RETRIES, "receiver" => receiver.to_owned()).increment(1);
}

/// Sets a receiver's backlog.
pub fn delivery_queue(receiver: &str, backlog: u64) {
    gauge!(DELIVERY_QUEUE, "receiver" => receiver.to_owned()).set(backlog as f64);
}

/// Counts alerts a receiver lost to retention.
pub fn delivery_lost(receiver: &str, alerts: u64) {
    counter!(DELIVERY_LOST, "receiver" => receiver.to_owned()).increment(alerts);
}

/// Counts an alert held back by a silence at send time.
pub fn delivery_silenced(receiver: &str) {
    counter!(DELIVERY_SILENCED, "receiver" => receiver.to_owned()).increment(1);
}

/// Counts alerts that rode together because of the rate limit.
pub fn delivery_batched(receiver: &str, alerts: usize) {
    counter!(DELIVERY_BATCHED, "receiver" => receiver.to_owned()).increment(alerts as u64);
}

/// Counts parked notifications removed at the limit.
pub fn delivery_failures_dropped(receiver: &str, removed: usize) {
    counter!(DELIVERY_FAILURES_DROPPED, "receiver" => receiver.to_owned())
        .increment(removed as u64);
}

/// Counts an alert silenced when detected.
pub fn alert_silenced(rule: &str) {
    counter!(ALERTS_SILENCED, "rule" => rule.to_owned()).increment(1);
}
