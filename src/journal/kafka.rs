//! The Kafka-API journal: the scale-out mode's implementation of
//! [`Journal`] over an Apache Kafka, Redpanda or tansu log (`docs/scale-out.md`).
//!
//! ```text
//! POST /v1/events ─► append: produce to the events topic (key = entity key,
//!                    partition = murmur2(key) mod P, acks=all, idempotent);
//!                    202 once every record is acknowledged
//! events topic ─► group consumer (this instance's partitions) ─► EventSink (the router)
//! entity alerts ─► append_records: produce to the alerts topic (one partition)
//! alerts topic ─► every instance reads it all, drops repeats by id, numbers
//!                 the rest (gap-free seq, the same everywhere) ─► DurableGroup
//! ```
//!
//! Positions: an event's place is `(offset + 1, 0)` in its partition, so an
//! entity (whose key lives in one partition) compares places within one
//! offset space. The journal's own single position (`routed_through`,
//! checkpoints, durable groups) is a local counter: a checkpoint takes a
//! mark, remembers each partition's routed offset under it, and once the
//! snapshots it covers are durable ([`Journal::checkpointed`]) those offsets
//! are stored for the group's commit. A crash re-delivers what follows the
//! committed offsets; entities skip the places their snapshots applied.
//!
//! # Invariants
//! - A request is answered only once the brokers acknowledged every one of
//!   its events (`acks=all`).
//! - Events reach the sink in offset order per partition, from one thread.
//! - An alert is published only once consumed back from the alerts topic,
//!   and numbered only if its id was not numbered before.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration as StdDuration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::watch;

use crate::event::Event;
use crate::journal::dedup::{Fingerprint, IdIndex};
use crate::journal::partition::partition_of;
use crate::journal::records::{AlertEntry, LetterEntry, LetterReason, Payload, Wanted};
use crate::journal::{
    Appended, ChangelogRecord, DurableGroup, EventSink, Journal, JournalError, JournalFuture,
    Ownership, Pace, PartitionState, Progress, Submission,
};
use crate::telemetry;
use crate::time::{wall_now, Duration, Timestamp};

/// The record header naming the format of a record's value.
pub const FORMAT_HEADER: &str = "cepheus-format";
/// The format this build writes: events as cepheus event JSON, alerts as
/// positional MessagePack of [`AlertEntry`].
pub const FORMAT: u32 = 1;

/// Turns a consumed record's value into an event, or says why it is not
/// one (the ingest path's format decoding, without HTTP framing; given by
/// the wire-up so the journal does not depend on ingest).
pub type RecordDecoder = Arc<dyn Fn(&[u8], Timestamp) -> Result<Event, String> + Send + Sync>;

/// Whether an alert id is already in the alert log (so it is not numbered
/// again after a restart).
pub type KnownAlert = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// How the Kafka journal is set up.
#[derive(Clone)]
pub struct KafkaConfig {
    /// Bootstrap brokers.
    pub brokers: String,
    /// The events topic.
    pub events_topic: String,
    /// The alerts topic.
    pub alerts_topic: String,
    /// The rules topic (compacted; read by `crate::cluster`).
    pub rules_topic: String,
    /// The dead-letter topic (one partition): every instance reads it and
    /// numbers its letters by offset.
    pub letters_topic: String,
    /// The dead-letter topic's offset to read from (the local store holds
    /// the letters before it: seq = offset + 1).
    pub letters_from: i64,
    /// The changelog topic: entity snapshots per partition (compacted,
    /// as many partitions as the events topic).
    pub changelog_topic: String,
    /// The repartition topic: events for the keys `partition_by` rules
    /// give them (as many partitions as the events topic).
    pub repartition_topic: String,
    /// The consumer group.
    pub group_id: String,
    /// The client id.
    pub client_id: String,
    /// Partitions of the events topic (the key space): created with this
    /// many when missing, refused when it has another number.
    pub partitions: u16,
    /// Replication factor of created topics.
    pub replication_factor: i32,
    /// librdkafka properties passed through (TLS, SASL, tuning).
    pub client: BTreeMap<String, String>,
    /// Longest wait for the brokers' acknowledgement.
    pub ack_timeout: StdDuration,
    /// The group's session timeout: how long a member that stopped
    /// heartbeating (a killed instance) keeps its partitions.
    pub session_timeout: StdDuration,
    /// How long an event id is remembered per key.
    pub dedup_horizon: Duration,
    /// Most event ids remembered (each of the two indexes).
    pub max_remembered_ids: usize,
    /// The first local position (after the last checkpoint and views).
    pub first_position: u64,
    /// The seq of the last alert already in the alert log.
    pub last_alert_seq: u64,
    /// Whether an alert id is in the alert log.
    pub known_alert: KnownAlert,
    /// Decodes consumed event records.
    pub decode: RecordDecoder,
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("events_topic", &self.events_topic)
            .field("alerts_topic", &self.alerts_topic)
            .field("group_id", &self.group_id)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

/// The base librdkafka configuration: brokers, client id, passed-through
/// properties (which win).
pub fn client_config(config: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers)
        .set("client.id", &config.client_id);
    for (name, value) in &config.client {
        c.set(name, value);
    }
    c
}

/// Sets a property cepheus chooses unless `[kafka.client]` sets it.
trait SetDefault {
    fn set_default_if_missing(
        &mut self,
        client: &BTreeMap<String, String>,
        name: &str,
        value: impl ToString,
    ) -> &mut Self;
}

impl SetDefault for ClientConfig {
    fn set_default_if_missing(
        &mut self,
        client: &BTreeMap<String, String>,
        name: &str,
        value: impl ToString,
    ) -> &mut Self {
        if !client.contains_key(name) {
            self.set(name, value.to_string());
        }
        self
    }
}

fn kafka_error(what: &str, e: KafkaError) -> JournalError {
    JournalError::Io(format!("{what}: {e}"))
}

/// What the consumer thread and the checkpoints share about partitions.
#[derive(Debug, Default)]
struct Partitions {
    /// Partitions assigned to this instance now.
    assigned: HashSet<i32>,
    /// Assigned partitions not yet read to their end since the assignment.
    restoring: HashSet<i32>,
    /// Assigned partitions whose state is restored from the changelog:
    /// their entities are evaluated here (events, timers, clock).
    evaluating: HashSet<i32>,
    /// An assignment (possibly empty) has been received.
    assignment_seen: bool,
    /// The next offset after the last routed record, per topic and
    /// partition (an events-topic record counts as routed once the records
    /// it gave the repartition topic are acknowledged).
    routed: HashMap<(Topic, i32), i64>,
    /// Each checkpoint mark's copy of `routed`.
    marks: BTreeMap<u64, HashMap<(Topic, i32), i64>>,
    /// The offsets the last durable checkpoint covers, per partition (the
    /// stop commits them).
    checkpointed: HashMap<(Topic, i32), i64>,
}

/// The two topics the group consumer reads, with the same partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Topic {
    /// Events, by their own key.
    Events,
    /// Events for the keys `partition_by` rules give them.
    Repartition,
}

impl Topic {
    fn name(self, events: &str, repartition: &str) -> String {
        match self {
            Topic::Events => events.to_owned(),
            Topic::Repartition => repartition.to_owned(),
        }
    }
}

/// Offsets to commit as a list for librdkafka.
fn offset_list(
    offsets: impl IntoIterator<Item = ((Topic, i32), i64)>,
    events: &str,
    repartition: &str,
) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    for ((topic, partition), offset) in offsets {
        let _ = list.add_partition_offset(
            &topic.name(events, repartition),
            partition,
            Offset::Offset(offset),
        );
    }
    list
}

/// Records assignments for the consumer thread (eager protocol: every
/// rebalance revokes all, then assigns), and moves entity state with them:
/// a revoked partition's entities are checkpointed and dropped before the
/// revocation completes, an assigned partition's state is restored from
/// the changelog before its first event is consumed.
struct GroupContext {
    partitions: Arc<Mutex<Partitions>>,
    rebalances: Arc<AtomicU64>,
    handoff: Arc<Handoff>,
}

/// What the rebalance callbacks need to move state (shared with the
/// journal, which sets `state` in [`Journal::hand_over`]).
struct Handoff {
    state: std::sync::OnceLock<Arc<dyn PartitionState>>,
    /// Reads the changelog topic (assigned partition by partition; no
    /// group membership).
    reader: BaseConsumer<ReaderContext>,
    changelog_topic: String,
    events_topic: String,
    repartition_topic: String,
    closing: Arc<AtomicBool>,
    /// Event ids of the owned partitions seen within the dedup horizon:
    /// the consumer thread drops repeats, and an assignment fills it from
    /// the records before the committed offset, so a repeat is dropped
    /// also when its first copy was evaluated by the previous owner.
    seen_ids: Mutex<IdIndex>,
    /// Decodes event records.
    decode: RecordDecoder,
}

/// Records read back per partition at an assignment to learn the event ids
/// its previous owner saw (see `Handoff::seen_ids`).
const ID_BACKFILL: i64 = 10_000;

/// Changelog records restored per store write.
const RESTORE_BATCH: usize = 10_000;

impl Handoff {
    /// Brings the local store up to the changelog of `partitions`: reads
    /// each from the local store's position to its end. Blocks until done
    /// (or the journal closes).
    fn restore(&self, partitions: &[i32]) {
        let Some(state) = self.state.get() else {
            return;
        };
        let started = std::time::Instant::now();
        let mut list = TopicPartitionList::new();
        for &partition in partitions {
            let from = state.changelog_position(partition).unwrap_or_else(|e| {
                tracing::warn!(partition, error = %e, "cannot read the local changelog position; reading the changelog from its beginning");
                0
            });
            let _ =
                list.add_partition_offset(&self.changelog_topic, partition, Offset::Offset(from));
        }
        if let Err(e) = self.reader.assign(&list) {
            tracing::error!(error = %e, "cannot read the changelog; the partitions are evaluated on the local state");
            return;
        }
        let mut pending: HashSet<i32> = partitions.iter().copied().collect();
        let mut batches: HashMap<i32, (Vec<ChangelogRecord>, i64)> = HashMap::new();
        let mut restored = 0u64;
        let mut reported = std::time::Instant::now();
        let flush = |partition: i32, batch: &mut (Vec<ChangelogRecord>, i64)| {
            if batch.0.is_empty() {
                return;
            }
            let records = std::mem::take(&mut batch.0);
            if let Err(e) = state.restore(partition, records, batch.1) {
                tracing::error!(partition, error = %e, "cannot write restored entity state");
            }
        };
        while !pending.is_empty() && !self.closing.load(Ordering::Acquire) {
            match self.reader.poll(StdDuration::from_millis(100)) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    if let Some(batch) = batches.get_mut(&partition) {
                        flush(partition, batch);
                    }
                    pending.remove(&partition);
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "cannot read the changelog; retrying")
                }
                Some(Ok(message)) => {
                    let partition = message.partition();
                    let Some(key) = message.key().and_then(|k| std::str::from_utf8(k).ok()) else {
                        continue;
                    };
                    let batch = batches.entry(partition).or_default();
                    batch.0.push(ChangelogRecord {
                        key: key.to_owned(),
                        snapshot: message.payload().map(<[u8]>::to_vec),
                    });
                    batch.1 = message.offset() + 1;
                    restored += 1;
                    if batch.0.len() >= RESTORE_BATCH {
                        flush(partition, batch);
                    }
                }
            }
            if reported.elapsed() > StdDuration::from_secs(10) {
                reported = std::time::Instant::now();
                tracing::info!(restored, partitions = ?pending, "restoring entity state from the changelog");
            }
        }
        let _ = self.reader.unassign();
        telemetry::kafka_restored(restored);
        state.restored(partitions);
        tracing::info!(
            partitions = ?partitions,
            records = restored,
            seconds = started.elapsed().as_secs_f64(),
            "restored the partitions' entity state from the changelog"
        );
    }

    /// Starts the id index afresh with the event ids of the last records
    /// before the committed offset of each of `partitions` (at most
    /// [`ID_BACKFILL`] each), so the owner drops a repeat whose first copy
    /// its previous owner evaluated.
    ///
    /// NB: afresh, because consumption resumes at the committed offset: an
    /// id remembered from a record after it (this instance's earlier
    /// ownership) would drop that very record, which the restored state may
    /// not reflect.
    fn backfill_ids(&self, consumer: &BaseConsumer<GroupContext>, partitions: &[i32]) {
        let fresh = {
            let ids = self.seen_ids.lock().unwrap_or_else(|p| p.into_inner());
            ids.emptied()
        };
        *self.seen_ids.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
        let mut wanted = TopicPartitionList::new();
        for &partition in partitions {
            wanted.add_partition(&self.events_topic, partition);
        }
        let Ok(committed) = consumer.committed_offsets(wanted, StdDuration::from_secs(10)) else {
            return;
        };
        let mut list = TopicPartitionList::new();
        let mut until: HashMap<i32, i64> = HashMap::new();
        for e in committed.elements() {
            if let Offset::Offset(next) = e.offset() {
                if next > 0 {
                    let from = (next - ID_BACKFILL).max(0);
                    let _ = list.add_partition_offset(
                        &self.events_topic,
                        e.partition(),
                        Offset::Offset(from),
                    );
                    until.insert(e.partition(), next);
                }
            }
        }
        if until.is_empty() || self.reader.assign(&list).is_err() {
            return;
        }
        let mut learned = 0u64;
        let mut progressed = std::time::Instant::now();
        let mut ids = self.seen_ids.lock().unwrap_or_else(|p| p.into_inner());
        while !until.is_empty()
            && !self.closing.load(Ordering::Acquire)
            && progressed.elapsed() < READ_STALL
        {
            match self.reader.poll(StdDuration::from_millis(100)) {
                Some(Ok(message)) => {
                    progressed = std::time::Instant::now();
                    let partition = message.partition();
                    let Some(&end) = until.get(&partition) else {
                        continue;
                    };
                    if message.offset() + 1 >= end {
                        until.remove(&partition);
                    }
                    if message.offset() >= end {
                        continue;
                    }
                    let time = message
                        .timestamp()
                        .to_millis()
                        .map(Timestamp)
                        .unwrap_or_else(wall_now);
                    if let Some(event) = message.payload().and_then(|v| (self.decode)(v, time).ok())
                    {
                        if let Some(id) = &event.id {
                            ids.check_and_remember(Fingerprint::of(&event.key, id), time);
                            learned += 1;
                        }
                    }
                }
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    until.remove(&partition);
                }
                _ => {}
            }
        }
        drop(ids);
        let _ = self.reader.unassign();
        tracing::debug!(
            learned,
            "learned the event ids before the committed offsets"
        );
    }

    /// Checkpoints and drops the entities of `revoked`, then commits the
    /// offsets their snapshots reflect, so the next owner goes on from
    /// there. A failure commits nothing: the next owner then re-reads from
    /// the last commit, and entities skip what their snapshots applied.
    fn release(
        &self,
        consumer: &BaseConsumer<GroupContext>,
        revoked: &[i32],
        routed: Vec<((Topic, i32), i64)>,
    ) {
        let Some(state) = self.state.get() else {
            return;
        };
        if self.closing.load(Ordering::Acquire) {
            // The stop's final checkpoint wrote the entities and committed.
            return;
        }
        match state.release(revoked) {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(partitions = ?revoked, "some entities of the revoked partitions could not be persisted; their offsets are not committed");
                return;
            }
            Err(e) => {
                tracing::warn!(partitions = ?revoked, error = %e, "cannot checkpoint the revoked partitions; their next owner re-reads from the last commit");
                return;
            }
        }
        let list = offset_list(routed, &self.events_topic, &self.repartition_topic);
        if list.count() > 0 {
            if let Err(e) = consumer.commit(&list, rdkafka::consumer::CommitMode::Sync) {
                tracing::warn!(error = %e, "cannot commit the revoked partitions' offsets; their next owner re-reads from the last commit");
            }
        }
    }
}

/// The changelog reader's context: the end of a partition is its signal,
/// not a fault worth a log line.
struct ReaderContext;

impl ClientContext for ReaderContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if !is_end_of_partition(&error) {
            tracing::warn!(error = %error, reason, "librdkafka (changelog reader)");
        }
    }
}

impl ConsumerContext for ReaderContext {}

fn is_end_of_partition(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
    )
}

impl ClientContext for GroupContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let assigned = self
            .partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .assigned
            .clone();
        for topic in statistics.topics.values() {
            for (&partition, stats) in &topic.partitions {
                // NB: -1 (the internal partition, or no fetch yet) is skipped.
                if assigned.contains(&partition) && stats.consumer_lag >= 0 {
                    telemetry::kafka_consumer_lag(partition, stats.consumer_lag);
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // NB: with `enable.partition.eof` the end of a partition comes as a
        // "global error" too; it is the consumer thread's signal, not a fault.
        if !is_end_of_partition(&error) {
            tracing::warn!(error = %error, reason, "librdkafka");
        }
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let mut revoked: Vec<i32> = list.elements().iter().map(|e| e.partition()).collect();
            revoked.sort_unstable();
            revoked.dedup();
            let routed: Vec<((Topic, i32), i64)> = {
                let mut p = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
                for partition in &revoked {
                    // NB: first, so timers and clock advances stop reaching
                    // these entities before they are written and dropped.
                    p.evaluating.remove(partition);
                }
                p.routed
                    .iter()
                    .filter(|((_, partition), _)| revoked.contains(partition))
                    .map(|(k, o)| (*k, *o))
                    .collect()
            };
            if !revoked.is_empty() {
                self.handoff.release(consumer, &revoked, routed);
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let assigned: HashSet<i32> =
                    list.elements().iter().map(|e| e.partition()).collect();
                tracing::info!(partitions = ?sorted(&assigned), "partitions assigned");
                {
                    let mut p = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
                    p.restoring = assigned.clone();
                    p.assigned = assigned.clone();
                    p.assignment_seen = true;
                }
                self.rebalances.fetch_add(1, Ordering::Relaxed);
                telemetry::kafka_rebalance();
                // NB: in the callback, so no event of these partitions is
                // consumed before their state is restored.
                self.handoff.restore(&sorted(&assigned));
                self.handoff.backfill_ids(consumer, &sorted(&assigned));
                let mut p = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
                p.evaluating = assigned;
            }
            Rebalance::Revoke(list) => {
                let mut p = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
                for e in list.elements() {
                    // NB: a revoked partition's lag is not this instance's.
                    telemetry::kafka_consumer_lag(e.partition(), 0);
                    p.assigned.remove(&e.partition());
                    p.restoring.remove(&e.partition());
                    p.evaluating.remove(&e.partition());
                    let partition = e.partition();
                    p.routed.retain(|(_, q), _| *q != partition);
                    p.checkpointed.retain(|(_, q), _| *q != partition);
                }
                tracing::info!("partitions revoked");
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance failed"),
        }
    }
}

fn sorted(set: &HashSet<i32>) -> Vec<i32> {
    let mut v: Vec<i32> = set.iter().copied().collect();
    v.sort_unstable();
    v
}

/// Where consumed events go (set by [`Journal::attach`]).
struct Attached {
    sink: Arc<dyn EventSink>,
    pace: Pace,
}

/// The Kafka-API journal.
pub struct KafkaJournal {
    config: KafkaConfig,
    producer: FutureProducer,
    consumer: Arc<BaseConsumer<GroupContext>>,
    partitions: Arc<Mutex<Partitions>>,
    rebalances: Arc<AtomicU64>,
    handoff: Arc<Handoff>,
    /// Ids this instance produced, for the 202's `duplicates`.
    produced_ids: Mutex<IdIndex>,
    /// The local position: checkpoint marks and durable groups.
    position: AtomicU64,
    /// Sends durable groups, in position order (the lock keeps the order).
    groups: Mutex<Option<std::sync::mpsc::Sender<DurableGroup>>>,
    progress: watch::Sender<Progress>,
    attached: Mutex<Option<Attached>>,
    /// Alerts to produce (the producer thread retries until acknowledged).
    outgoing: Mutex<Option<std::sync::mpsc::Sender<Shared>>>,
    /// The next dead-letter-topic offset read back, and the local position
    /// of the group that handed it back (a request's `202` waits for its
    /// letters to be readable here).
    letters_read: watch::Sender<(i64, u64)>,
    /// Alerts handed to the producer thread since the start (under the
    /// `outgoing` lock), and how many of them the brokers acknowledged (in
    /// order): a snapshot may be written only once the alerts its entity
    /// fired before it are acknowledged ([`Journal::sync_routed`]), or a
    /// crash would leave a completed pattern whose alert nobody has.
    alerts_handed: AtomicU64,
    alerts_acked: watch::Sender<u64>,
    closing: Arc<AtomicBool>,
    /// Events routed since the start.
    routed_events: AtomicU64,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl KafkaJournal {
    /// Connects, creates the topics when missing (refusing an events topic
    /// with another number of partitions), joins the group and starts the
    /// consumers. Returns the journal and the receiver of durable groups.
    pub async fn open(
        config: KafkaConfig,
    ) -> Result<(Arc<KafkaJournal>, std::sync::mpsc::Receiver<DurableGroup>), JournalError> {
        ensure_topics(&config).await?;
        let producer: FutureProducer = client_config(&config)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            // NB: Kafka's Java default; records carry an explicit partition
            // anyway (journal::partition), so both agree.
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "1")
            // NB: a checkpoint hands the changelog every changed entity at
            // once; librdkafka's default queue (100,000) would make the
            // rest wait for room.
            .set("queue.buffering.max.messages", "1000000")
            .set(
                "message.timeout.ms",
                config.ack_timeout.as_millis().max(1).to_string(),
            )
            .create()
            .map_err(|e| kafka_error("cannot create the Kafka producer", e))?;
        let partitions = Arc::new(Mutex::new(Partitions::default()));
        let rebalances = Arc::new(AtomicU64::new(0));
        let closing = Arc::new(AtomicBool::new(false));
        // NB: no group membership (`assign`, nothing committed): the
        // changelog is read by whichever instance restores a partition.
        let reader: BaseConsumer<ReaderContext> = client_config(&config)
            .set("group.id", format!("{}-changelog", config.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            // NB: the end of a partition is known only from a fetch that
            // comes back empty; the default wait (500 ms) was most of an
            // assignment's time with nothing to restore.
            .set("fetch.wait.max.ms", "20")
            .create_with_context(ReaderContext)
            .map_err(|e| kafka_error("cannot create the changelog reader", e))?;
        let handoff = Arc::new(Handoff {
            state: std::sync::OnceLock::new(),
            reader,
            changelog_topic: config.changelog_topic.clone(),
            events_topic: config.events_topic.clone(),
            repartition_topic: config.repartition_topic.clone(),
            closing: Arc::clone(&closing),
            seen_ids: Mutex::new(IdIndex::new(
                config.dedup_horizon,
                config.max_remembered_ids,
            )),
            decode: Arc::clone(&config.decode),
        });
        let session_ms = config.session_timeout.as_millis().clamp(1_000, 3_600_000);
        let consumer: BaseConsumer<GroupContext> = client_config(&config)
            .set("group.id", &config.group_id)
            // NB: eager assignment; tansu's cooperative-sticky is broken,
            // and the Partitions bookkeeping assumes revoke-all-then-assign.
            .set("partition.assignment.strategy", "range")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            // Offsets are stored only for what a durable checkpoint covers
            // (`checkpointed`), and committed by librdkafka from there.
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("statistics.interval.ms", "5000")
            // NB: a revocation checkpoints the partitions' entities and an
            // assignment restores them from the changelog, inside the
            // rebalance callbacks; the default poll interval (5 minutes)
            // bounds how long that may take.
            // NB: a broker that holds an empty fetch for the whole wait
            // (tansu does) made every alert wait up to twice 500 ms, the
            // default (BENCHMARKS.md, the scale-out mode).
            .set_default_if_missing(&config.client, "fetch.wait.max.ms", FETCH_WAIT_MS)
            .set_default_if_missing(&config.client, "session.timeout.ms", session_ms)
            .set_default_if_missing(
                &config.client,
                "heartbeat.interval.ms",
                (session_ms / 4).max(100),
            )
            .create_with_context(GroupContext {
                partitions: Arc::clone(&partitions),
                rebalances: Arc::clone(&rebalances),
                handoff: Arc::clone(&handoff),
            })
            .map_err(|e| kafka_error("cannot create the Kafka consumer", e))?;
        // NB: the range assignor gives each member the same partition
        // numbers of both topics (they have as many partitions), so an
        // entity's own events and those repartitioned to it meet here.
        consumer
            .subscribe(&[
                config.events_topic.as_str(),
                config.repartition_topic.as_str(),
            ])
            .map_err(|e| kafka_error("cannot subscribe to the events topic", e))?;
        let (group_tx, group_rx) = std::sync::mpsc::channel();
        let (alert_tx, alert_rx) = std::sync::mpsc::channel();
        let journal = Arc::new(KafkaJournal {
            produced_ids: Mutex::new(IdIndex::new(
                config.dedup_horizon,
                config.max_remembered_ids,
            )),
            position: AtomicU64::new(config.first_position.max(1)),
            groups: Mutex::new(Some(group_tx)),
            progress: watch::Sender::new(Progress {
                durable: config.first_position.saturating_sub(1),
                stalled: None,
                failed: None,
            }),
            attached: Mutex::new(None),
            outgoing: Mutex::new(Some(alert_tx)),
            letters_read: watch::Sender::new((config.letters_from, 0)),
            alerts_handed: AtomicU64::new(0),
            alerts_acked: watch::Sender::new(0),
            closing,
            handoff,
            routed_events: AtomicU64::new(0),
            threads: Mutex::new(Vec::new()),
            consumer: Arc::new(consumer),
            partitions,
            rebalances,
            producer,
            config,
        });
        // NB: no group membership (`assign`, nothing committed): every
        // instance reads the whole alerts topic itself. librdkafka wants a
        // group id all the same.
        let alert_consumer: BaseConsumer = client_config(&journal.config)
            .set_default_if_missing(&journal.config.client, "fetch.wait.max.ms", FETCH_WAIT_MS)
            .set("group.id", format!("{}-alerts", journal.config.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("isolation.level", "read_committed")
            .create()
            .map_err(|e| kafka_error("cannot create the alerts consumer", e))?;
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&journal.config.alerts_topic, 0, Offset::Beginning)
            .map_err(|e| kafka_error("cannot assign the alerts topic", e))?;
        alert_consumer
            .assign(&list)
            .map_err(|e| kafka_error("cannot assign the alerts topic", e))?;
        let letter_consumer: BaseConsumer = client_config(&journal.config)
            .set("group.id", format!("{}-letters", journal.config.group_id))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .create()
            .map_err(|e| kafka_error("cannot create the dead-letter consumer", e))?;
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(
            &journal.config.letters_topic,
            0,
            Offset::Offset(journal.config.letters_from.max(0)),
        )
        .map_err(|e| kafka_error("cannot assign the dead-letter topic", e))?;
        letter_consumer
            .assign(&list)
            .map_err(|e| kafka_error("cannot assign the dead-letter topic", e))?;
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|e| JournalError::Io(format!("cannot start {name}: {e}")))
        };
        let events = {
            let journal = Arc::clone(&journal);
            spawn(
                "cepheus-kafka-events",
                Box::new(move || journal.consume_events()),
            )?
        };
        let alerts = {
            let journal = Arc::clone(&journal);
            spawn(
                "cepheus-kafka-alerts",
                Box::new(move || journal.consume_alerts(alert_consumer)),
            )?
        };
        let letters = {
            let journal = Arc::clone(&journal);
            spawn(
                "cepheus-kafka-letters",
                Box::new(move || journal.consume_letters(letter_consumer)),
            )?
        };
        let producer = {
            let journal = Arc::clone(&journal);
            spawn(
                "cepheus-kafka-produce",
                Box::new(move || journal.produce_alerts(alert_rx)),
            )?
        };
        journal
            .threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend([events, alerts, letters, producer]);
        Ok((journal, group_rx))
    }

    fn partitions_state(&self) -> MutexGuard<'_, Partitions> {
        self.partitions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends a durable group at the next position.
    fn hand_back(&self, alerts: Vec<AlertEntry>, letters: Vec<LetterEntry>) -> u64 {
        self.hand_back_at(alerts, letters, None)
    }

    /// Sends a durable group at the next position, its letters at seqs
    /// from `letters_at` when given.
    fn hand_back_at(
        &self,
        alerts: Vec<AlertEntry>,
        letters: Vec<LetterEntry>,
        letters_at: Option<u64>,
    ) -> u64 {
        let sender = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        let lsn = self.position.fetch_add(1, Ordering::AcqRel);
        if let Some(tx) = &*sender {
            let _ = tx.send(DurableGroup {
                lsn,
                alerts,
                letters,
                letters_at,
            });
        }
        self.progress
            .send_modify(|p| p.durable = p.durable.max(lsn));
        lsn
    }

    /// The consumer thread of the events and repartition topics: decodes,
    /// drops repeated ids, routes in offset order per partition, and sends
    /// the keys `partition_by` rules give an event through the repartition
    /// topic.
    fn consume_events(&self) {
        let mut outbox = Outbox::default();
        // NB: the first poll joins the group, and an assignment restores
        // state and routes events: both need the service attached.
        while !self.closing.load(Ordering::Acquire)
            && self
                .attached
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_none()
        {
            std::thread::sleep(StdDuration::from_millis(10));
        }
        while !self.closing.load(Ordering::Acquire) {
            self.drain_outbox(&mut outbox);
            let Some(message) = self.consumer.poll(StdDuration::from_millis(100)) else {
                continue;
            };
            let message = match message {
                Ok(message) => message,
                Err(KafkaError::PartitionEOF(partition)) => {
                    // NB: librdkafka does not say which topic ended; the
                    // events topic is the one that matters for readiness.
                    let mut p = self.partitions_state();
                    if p.restoring.remove(&partition) {
                        tracing::info!(partition, "partition read to its end");
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot consume the events topic; retrying");
                    continue;
                }
            };
            let partition = message.partition();
            let offset = message.offset();
            let received_at = message
                .timestamp()
                .to_millis()
                .map(Timestamp)
                .unwrap_or_else(wall_now);
            if message.topic() == self.config.repartition_topic {
                self.route_repartitioned(&message, received_at);
                self.partitions_state()
                    .routed
                    .insert((Topic::Repartition, partition), offset + 1);
                continue;
            }
            let mut sends = Vec::new();
            match self.decode_event(&message, received_at) {
                Ok(event) => {
                    let repeat = event.id.as_ref().is_some_and(|id| {
                        self.handoff
                            .seen_ids
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .check_and_remember(Fingerprint::of(&event.key, id), received_at)
                    });
                    if !repeat {
                        sends = self.route(partition, offset, event);
                    }
                }
                Err(error) => {
                    let key = message
                        .key()
                        .map(|k| String::from_utf8_lossy(k).into_owned());
                    let event = String::from_utf8_lossy(message.payload().unwrap_or_default());
                    tracing::debug!(partition, offset, %error, "an events-topic record is not an event");
                    let _ = self.append_records(
                        Vec::new(),
                        vec![LetterEntry {
                            identity: Some(format!("kafka:{partition}:{offset}").into_bytes()),
                            reason: LetterReason::Invalid,
                            error,
                            key,
                            received_at: wall_now(),
                            event: event.into_owned(),
                        }],
                    );
                }
            }
            if sends.is_empty() && outbox.pending.is_empty() {
                self.partitions_state()
                    .routed
                    .insert((Topic::Events, partition), offset + 1);
            } else {
                outbox.pending.push_back(Pending {
                    partition,
                    next: offset + 1,
                    sends,
                });
            }
        }
    }

    /// Marks as routed the events-topic records whose repartitioned copies
    /// are acknowledged, in order; sends again what failed.
    fn drain_outbox(&self, outbox: &mut Outbox) {
        use futures_util::FutureExt;
        while let Some(front) = outbox.pending.front_mut() {
            let mut waiting = false;
            for send in &mut front.sends {
                let Some(ack) = send.ack.as_mut() else {
                    continue;
                };
                match ack.now_or_never() {
                    None => waiting = true,
                    Some(Ok(Ok(_))) => send.ack = None,
                    Some(Ok(Err((e, _)))) => {
                        tracing::warn!(key = %send.record.key, error = %e, "cannot write to the repartition topic; retrying");
                        send.ack = Some(self.send_repartitioned(&send.record));
                        waiting = true;
                    }
                    Some(Err(_)) => {
                        send.ack = Some(self.send_repartitioned(&send.record));
                        waiting = true;
                    }
                }
            }
            if waiting {
                return;
            }
            let mut p = self.partitions_state();
            // NB: a partition revoked meanwhile is not this instance's to
            // commit (an offset from before could move its commit back).
            if p.assigned.contains(&front.partition) {
                p.routed
                    .insert((Topic::Events, front.partition), front.next);
            }
            drop(p);
            outbox.pending.pop_front();
        }
    }

    /// Produces one repartitioned event (waiting while the producer's
    /// queue is full).
    fn send_repartitioned(
        &self,
        record: &Repartitioned,
    ) -> rdkafka::producer::future_producer::DeliveryFuture {
        loop {
            let headers = format_headers().insert(Header {
                key: SOURCE_HEADER,
                value: Some(record.source.as_bytes()),
            });
            let future = FutureRecord::to(&self.config.repartition_topic)
                .key(record.key.as_str())
                .partition(record.partition)
                .payload(&record.value)
                .headers(headers);
            match self.producer.send_result(future) {
                Ok(ack) => return ack,
                Err((e, _)) => {
                    tracing::debug!(error = %e, "the producer's queue is full; waiting");
                    std::thread::sleep(StdDuration::from_millis(5));
                }
            }
        }
    }

    /// Routes a repartition-topic record to the key it names.
    fn route_repartitioned(
        &self,
        message: &rdkafka::message::BorrowedMessage<'_>,
        received_at: Timestamp,
    ) {
        let source = message.headers().and_then(|headers| {
            headers
                .iter()
                .find(|h| h.key == SOURCE_HEADER)
                .and_then(|h| std::str::from_utf8(h.value?).ok())
                .and_then(|v| {
                    let (partition, offset) = v.split_once(':')?;
                    Some((partition.parse::<u16>().ok()?, offset.parse::<u64>().ok()?))
                })
        });
        let key = message.key().and_then(|k| std::str::from_utf8(k).ok());
        let (Some(source), Some(key), Some(value)) = (source, key, message.payload()) else {
            tracing::warn!(
                offset = message.offset(),
                "skipping a repartition-topic record without its source, key or value"
            );
            return;
        };
        let event = match (self.config.decode)(value, received_at) {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!(offset = message.offset(), error = %e, "skipping a repartition-topic record that is not an event");
                return;
            }
        };
        let attached = self.attached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = &*attached {
            (a.pace)();
            a.sink.repartitioned(key, source, Arc::new(event));
        }
    }

    /// One consumed record as an event.
    fn decode_event(
        &self,
        message: &rdkafka::message::BorrowedMessage<'_>,
        received_at: Timestamp,
    ) -> Result<Event, String> {
        if let Some(headers) = message.headers() {
            for header in headers.iter() {
                if header.key == FORMAT_HEADER {
                    let format = header
                        .value
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .and_then(|v| v.trim().parse::<u32>().ok());
                    if format != Some(FORMAT) {
                        return Err(format!(
                            "the record has {FORMAT_HEADER} {:?}; this cepheus reads format {FORMAT}: upgrade it",
                            header.value.map(String::from_utf8_lossy)
                        ));
                    }
                }
            }
        }
        let payload = message
            .payload()
            .ok_or("the record has no value; it must be a cepheus event or a CloudEvent")?;
        let event = (self.config.decode)(payload, received_at)?;
        if let Some(key) = message.key() {
            if key != event.key.as_bytes() {
                return Err(format!(
                    "the record's key {:?} is not the event's key {:?}; a record must be keyed by its entity key",
                    String::from_utf8_lossy(key),
                    event.key
                ));
            }
        }
        Ok(event)
    }

    /// Routes one event at place `(offset + 1, 0)` to its own key, and
    /// sends it to the keys `partition_by` rules give it through the
    /// repartition topic; returns those sends.
    fn route(&self, partition: i32, offset: i64, event: Event) -> Vec<Outgoing> {
        let attached = self.attached.lock().unwrap_or_else(|p| p.into_inner());
        let Some(a) = &*attached else {
            return Vec::new();
        };
        (a.pace)();
        let derived = a.sink.partition_routes(&event);
        let event = Arc::new(event);
        a.sink
            .accepted_own(offset as u64 + 1, 0, std::slice::from_ref(&event));
        self.routed_events.fetch_add(1, Ordering::Relaxed);
        if derived.is_empty() {
            return Vec::new();
        }
        let value = match serde_json::to_vec(&*event) {
            Ok(value) => value,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode an event for the repartition topic");
                return Vec::new();
            }
        };
        let source = format!("{partition}:{offset}");
        derived
            .into_iter()
            .map(|key| {
                let record = Repartitioned {
                    partition: i32::from(partition_of(&key, self.config.partitions)),
                    key,
                    value: value.clone(),
                    source: source.clone(),
                };
                let ack = Some(self.send_repartitioned(&record));
                Outgoing { record, ack }
            })
            .collect()
    }

    /// The consumer thread of the alerts topic: every alert, in order;
    /// repeats by id dropped, the rest numbered and handed back.
    fn consume_alerts(&self, consumer: BaseConsumer) {
        let mut next_seq = self.config.last_alert_seq + 1;
        let mut numbered: HashSet<String> = HashSet::new();
        while !self.closing.load(Ordering::Acquire) {
            let Some(message) = consumer.poll(StdDuration::from_millis(100)) else {
                continue;
            };
            let message = match message {
                Ok(message) => message,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot consume the alerts topic; retrying");
                    continue;
                }
            };
            let Some(payload) = message.payload() else {
                continue;
            };
            let mut alert: AlertEntry = match rmp_serde::from_slice(payload) {
                Ok(alert) => alert,
                Err(e) => {
                    tracing::warn!(offset = message.offset(), error = %e, "skipping an alerts-topic record that is not an alert of this format");
                    continue;
                }
            };
            if numbered.contains(&alert.id) || (self.config.known_alert)(&alert.id) {
                continue;
            }
            numbered.insert(alert.id.clone());
            alert.seq = next_seq;
            next_seq += 1;
            self.hand_back(vec![alert], Vec::new());
        }
    }

    /// The alert producer thread: produces each alert and retries until
    /// the brokers acknowledge it (an alert is lost only with the process,
    /// and then its entity's replay makes it again).
    fn produce_alerts(&self, alerts: std::sync::mpsc::Receiver<Shared>) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the alert producer");
                return;
            }
        };
        // NB: everything waiting is sent before the first acknowledgement
        // is awaited (one alert per round trip held a burst of alerts, and
        // every checkpoint waiting for them, for seconds); the idempotent
        // producer keeps their order in the one partition.
        while let Ok(first) = alerts.recv() {
            let mut batch = vec![first];
            while batch.len() < ALERT_BATCH {
                match alerts.try_recv() {
                    Ok(record) => batch.push(record),
                    Err(_) => break,
                }
            }
            let encoded: Vec<(String, Vec<u8>, &str)> = batch
                .into_iter()
                .filter_map(|record| match record.encode(&self.config) {
                    Ok(encoded) => Some(encoded),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot encode an alert or dead letter");
                        self.alerts_acked.send_modify(|n| *n += 1);
                        None
                    }
                })
                .collect();
            let sends = encoded
                .iter()
                .map(|(id, payload, topic)| self.send_alert(topic, id, payload));
            let results = runtime.block_on(futures_util::future::join_all(sends));
            for ((id, payload, topic), result) in encoded.iter().zip(results) {
                if !matches!(result, Ok(Ok(_))) {
                    self.produce_alert_until_acknowledged(&runtime, topic, id, payload);
                }
                self.alerts_acked.send_modify(|n| *n += 1);
            }
        }
    }

    fn send_alert(
        &self,
        topic: &str,
        id: &str,
        payload: &[u8],
    ) -> rdkafka::producer::future_producer::DeliveryFuture {
        loop {
            let record = FutureRecord::to(topic)
                .key(id.as_bytes())
                .partition(0)
                .payload(payload)
                .headers(format_headers());
            match self.producer.send_result(record) {
                Ok(ack) => return ack,
                // The producer's queue is full: wait for room.
                Err(_) => std::thread::sleep(StdDuration::from_millis(5)),
            }
        }
    }

    /// Produces one alert again until the brokers take it (an alert is
    /// lost only with the process, and then its entity's replay makes it
    /// again: its snapshot waits for the acknowledgement).
    fn produce_alert_until_acknowledged(
        &self,
        runtime: &tokio::runtime::Runtime,
        topic: &str,
        id: &str,
        payload: &[u8],
    ) {
        let mut backoff = StdDuration::from_millis(50);
        loop {
            match runtime.block_on(self.send_alert(topic, id, payload)) {
                Ok(Ok(_)) => return,
                Ok(Err((e, _))) => {
                    if self.closing.load(Ordering::Acquire) && backoff > StdDuration::from_secs(1) {
                        tracing::error!(id, error = %e, "an alert was not produced before the shutdown; the entity's replay makes it again");
                        return;
                    }
                    tracing::warn!(id, error = %e, "cannot produce an alert; retrying");
                }
                Err(_) => {}
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(StdDuration::from_secs(2));
        }
    }

    async fn append_events(&self, submission: Submission) -> Result<Appended, JournalError> {
        if self.closing.load(Ordering::Acquire) {
            return Err(JournalError::Closed);
        }
        let Submission {
            mut events,
            untimed,
            letters,
        } = submission;
        let accepted_at = wall_now();
        for i in untimed {
            if let Some(event) = events.get_mut(i) {
                event.time = accepted_at;
            }
        }
        let mut duplicates = 0;
        let mut records = Vec::with_capacity(events.len());
        {
            let mut ids = self.produced_ids.lock().unwrap_or_else(|p| p.into_inner());
            for event in &events {
                if let Some(id) = &event.id {
                    if ids.check_and_remember(Fingerprint::of(&event.key, id), accepted_at) {
                        duplicates += 1;
                        continue;
                    }
                }
                let value = serde_json::to_vec(event)
                    .map_err(|e| JournalError::Encode(format!("an event: {e}")))?;
                let partition = i32::from(partition_of(&event.key, self.config.partitions));
                records.push((event.key.as_str(), partition, value));
            }
        }
        let sends = records.iter().map(|(key, partition, value)| {
            let record = FutureRecord::to(&self.config.events_topic)
                .key(*key)
                .partition(*partition)
                .payload(value)
                .headers(format_headers());
            self.producer.send(record, self.config.ack_timeout)
        });
        let results = futures_util::future::join_all(sends).await;
        if let Some((e, _)) = results.into_iter().find_map(Result::err) {
            // NB: the events acknowledged before the failure stay in the
            // topic; a retry of the request (same ids) is dropped as a
            // repeat by the partition's owner.
            self.forget_ids(&events);
            return Err(match e {
                KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut) => {
                    JournalError::Timeout(self.config.ack_timeout.as_secs())
                }
                e => {
                    JournalError::Stalled(format!("the Kafka brokers did not take the events: {e}"))
                }
            });
        }
        let accepted = records.len();
        let lsn = if letters.is_empty() {
            self.position.load(Ordering::Acquire).saturating_sub(1)
        } else {
            self.letters_readable(letters).await?
        };
        Ok(Appended {
            accepted,
            duplicates,
            lsn,
        })
    }

    /// Produces a request's dead letters to the dead-letter topic and waits
    /// until this instance has read them back (so a `202` means they can
    /// be read here); returns the local position of that read.
    async fn letters_readable(&self, letters: Vec<LetterEntry>) -> Result<u64, JournalError> {
        let mut encoded = Vec::with_capacity(letters.len());
        for letter in letters {
            encoded.push(
                Shared::Letter(letter)
                    .encode(&self.config)
                    .map_err(JournalError::Encode)?,
            );
        }
        let sends = encoded
            .iter()
            .map(|(id, payload, topic)| self.send_alert(topic, id, payload));
        let mut end = 0;
        for result in futures_util::future::join_all(sends).await {
            match result {
                Ok(Ok(delivery)) => end = end.max(delivery.offset + 1),
                _ => {
                    return Err(JournalError::Stalled(
                        "the Kafka brokers did not take the dead letters".into(),
                    ))
                }
            }
        }
        let mut read = self.letters_read.subscribe();
        let waited = tokio::time::timeout(
            self.config.ack_timeout,
            read.wait_for(|(next, _)| *next >= end),
        )
        .await;
        Ok(match waited {
            Ok(Ok(read)) => read.1,
            _ => self.position.load(Ordering::Acquire).saturating_sub(1),
        })
    }

    /// The consumer thread of the dead-letter topic: every letter, in
    /// order, stored at seq = offset + 1 (the same on every instance);
    /// a repeat of a letter's identity (an event evaluated again after a
    /// partition moved) is skipped.
    fn consume_letters(&self, consumer: BaseConsumer) {
        let mut seen: HashSet<Vec<u8>> = HashSet::new();
        while !self.closing.load(Ordering::Acquire) {
            let Some(message) = consumer.poll(StdDuration::from_millis(100)) else {
                continue;
            };
            let message = match message {
                Ok(message) => message,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot consume the dead-letter topic; retrying");
                    continue;
                }
            };
            let offset = message.offset();
            let letter = message
                .payload()
                .and_then(|p| rmp_serde::from_slice::<LetterEntry>(p).ok());
            let lsn = match letter {
                Some(letter)
                    if letter
                        .identity
                        .as_ref()
                        .is_none_or(|identity| seen.insert(identity.clone())) =>
                {
                    self.hand_back_at(Vec::new(), vec![letter], Some(offset as u64 + 1))
                }
                Some(_) => self.position.load(Ordering::Acquire).saturating_sub(1),
                None => {
                    tracing::warn!(
                        offset,
                        "skipping a dead-letter-topic record that is not a letter of this format"
                    );
                    self.position.load(Ordering::Acquire).saturating_sub(1)
                }
            };
            self.letters_read.send_replace((offset + 1, lsn));
        }
    }

    /// Produces entity snapshots to the changelog (their partition's, of
    /// the partitions this instance owns) and, once acknowledged, records
    /// the local store as current through them.
    async fn produce_snapshots(&self, records: Vec<ChangelogRecord>) -> Result<(), JournalError> {
        let assigned = self.partitions_state().assigned.clone();
        let records: Vec<(i32, ChangelogRecord)> = records
            .into_iter()
            .map(|r| (i32::from(partition_of(&r.key, self.config.partitions)), r))
            // NB: an entity woken here after its partition moved (a timer
            // racing the revocation) must not overwrite its new owner's.
            .filter(|(partition, _)| assigned.contains(partition))
            .collect();
        if records.is_empty() {
            return Ok(());
        }
        let sends = records.iter().map(|(partition, r)| {
            let record = FutureRecord::<str, [u8]>::to(&self.config.changelog_topic)
                .key(r.key.as_str())
                .partition(*partition)
                .headers(format_headers());
            let record = match &r.snapshot {
                Some(bytes) => record.payload(bytes.as_slice()),
                // No value: the entity is gone (compaction removes it).
                None => record,
            };
            self.producer.send(record, self.config.ack_timeout)
        });
        let mut next: HashMap<i32, i64> = HashMap::new();
        for result in futures_util::future::join_all(sends).await {
            match result {
                Ok(delivery) => {
                    let end = next.entry(delivery.partition).or_default();
                    *end = (*end).max(delivery.offset + 1);
                }
                Err((e, _)) => {
                    return Err(JournalError::Stalled(format!(
                        "the Kafka brokers did not take the entity snapshots for the changelog: {e}"
                    )))
                }
            }
        }
        telemetry::kafka_changelog_records(records.len() as u64);
        if let Some(state) = self.handoff.state.get() {
            for (partition, end) in next {
                if let Err(e) = state.set_changelog_position(partition, end) {
                    tracing::warn!(partition, error = %e, "cannot record the changelog position; the next restore reads more of it");
                }
            }
        }
        Ok(())
    }

    /// Forgets the ids of a request that failed, so its retry is produced.
    fn forget_ids(&self, events: &[Event]) {
        // NB: IdIndex has no removal; a fresh index loses only the
        // accepting instance's view (the owner still drops repeats).
        if events.iter().any(|e| e.id.is_some()) {
            *self.produced_ids.lock().unwrap_or_else(|p| p.into_inner()) =
                IdIndex::new(self.config.dedup_horizon, self.config.max_remembered_ids);
        }
    }
}

/// Reads the whole events topic, each partition from its beginning to its
/// end at the start, as one-event payloads (per key in order; keys of
/// different partitions interleave). Records that are not events are
/// skipped: they are dead letters already.
struct TopicReader {
    consumer: BaseConsumer<ReaderContext>,
    pending: HashSet<i32>,
    decode: RecordDecoder,
    /// When a record or an end last arrived.
    progressed: std::time::Instant,
}

/// Longest wait for the brokers while reading the events topic back.
const READ_STALL: StdDuration = StdDuration::from_secs(30);

impl TopicReader {
    fn open(config: &KafkaConfig) -> Result<TopicReader, JournalError> {
        let consumer: BaseConsumer<ReaderContext> = client_config(config)
            .set("group.id", format!("{}-backtest", config.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .create_with_context(ReaderContext)
            .map_err(|e| kafka_error("cannot read the events topic", e))?;
        let mut list = TopicPartitionList::new();
        for partition in 0..i32::from(config.partitions.max(1)) {
            list.add_partition_offset(&config.events_topic, partition, Offset::Beginning)
                .map_err(|e| kafka_error("cannot read the events topic", e))?;
        }
        consumer
            .assign(&list)
            .map_err(|e| kafka_error("cannot read the events topic", e))?;
        Ok(TopicReader {
            consumer,
            pending: (0..i32::from(config.partitions.max(1))).collect(),
            decode: Arc::clone(&config.decode),
            progressed: std::time::Instant::now(),
        })
    }
}

impl Iterator for TopicReader {
    type Item = Result<(u64, Timestamp, Payload), JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.pending.is_empty() {
            if self.progressed.elapsed() > READ_STALL {
                self.pending.clear();
                return Some(Err(JournalError::Io(format!(
                    "the Kafka brokers sent nothing of the events topic for {READ_STALL:?}"
                ))));
            }
            match self.consumer.poll(StdDuration::from_millis(100)) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    self.progressed = std::time::Instant::now();
                    self.pending.remove(&partition);
                }
                Some(Err(e)) => tracing::debug!(error = %e, "reading the events topic back"),
                Some(Ok(message)) => {
                    self.progressed = std::time::Instant::now();
                    let time = message
                        .timestamp()
                        .to_millis()
                        .map(Timestamp)
                        .unwrap_or_else(wall_now);
                    let Some(value) = message.payload() else {
                        continue;
                    };
                    if let Ok(event) = (self.decode)(value, time) {
                        let payload = Payload {
                            events: vec![event],
                            ..Payload::default()
                        };
                        return Some(Ok((message.offset() as u64 + 1, time, payload)));
                    }
                }
            }
        }
        None
    }
}

/// The longest a fetch of the events or alerts topic waits for records
/// (librdkafka's default is 500 ms), unless `[kafka.client]` sets it.
const FETCH_WAIT_MS: u32 = 20;

/// An alert or a dead letter for its topic.
pub enum Shared {
    /// To the alerts topic.
    Alert(AlertEntry),
    /// To the dead-letter topic.
    Letter(LetterEntry),
}

impl Shared {
    /// Its record: key, value (positional MessagePack) and topic.
    fn encode<'c>(&self, config: &'c KafkaConfig) -> Result<(String, Vec<u8>, &'c str), String> {
        match self {
            Shared::Alert(alert) => rmp_serde::to_vec(alert)
                .map(|v| (alert.id.clone(), v, config.alerts_topic.as_str()))
                .map_err(|e| format!("alert {}: {e}", alert.id)),
            Shared::Letter(letter) => {
                let key = letter
                    .identity
                    .as_ref()
                    .map(|i| i.iter().map(|b| format!("{b:02x}")).collect())
                    .unwrap_or_default();
                rmp_serde::to_vec(letter)
                    .map(|v| (key, v, config.letters_topic.as_str()))
                    .map_err(|e| format!("a dead letter: {e}"))
            }
        }
    }
}

/// Alerts sent before their acknowledgements are awaited.
const ALERT_BATCH: usize = 1_000;

/// The header of a repartition-topic record naming its event's place in
/// the events topic, `partition:offset` (the entity's dedup of records the
/// repartition topic holds twice after a crash).
const SOURCE_HEADER: &str = "cepheus-source";

/// Events-topic records whose repartitioned copies are not acknowledged
/// yet, in consumption order: a record counts as routed (its offset may be
/// committed) only once they are, or a crash could lose them.
#[derive(Default)]
struct Outbox {
    pending: std::collections::VecDeque<Pending>,
}

/// One events-topic record in the outbox.
struct Pending {
    partition: i32,
    next: i64,
    sends: Vec<Outgoing>,
}

/// One repartitioned copy and its acknowledgement (`None` once received).
struct Outgoing {
    record: Repartitioned,
    ack: Option<rdkafka::producer::future_producer::DeliveryFuture>,
}

/// An event for the repartition topic.
struct Repartitioned {
    key: String,
    partition: i32,
    value: Vec<u8>,
    source: String,
}

fn format_headers() -> OwnedHeaders {
    OwnedHeaders::new().insert(Header {
        key: FORMAT_HEADER,
        value: Some(FORMAT.to_string().as_bytes()),
    })
}

/// Creates the events and alerts topics when missing; refuses an events
/// topic whose partitions differ from the key space's, and an alerts topic
/// of more than one partition.
async fn ensure_topics(config: &KafkaConfig) -> Result<(), JournalError> {
    let admin: AdminClient<DefaultClientContext> = client_config(config)
        // NB: asking for a missing topic's metadata must not create it
        // with the broker's default partitions.
        .set("allow.auto.create.topics", "false")
        .create()
        .map_err(|e| kafka_error("cannot create the Kafka admin client", e))?;
    let wanted = [
        (config.events_topic.as_str(), config.partitions.max(1)),
        (config.alerts_topic.as_str(), 1),
        (config.rules_topic.as_str(), 1),
        (config.letters_topic.as_str(), 1),
        (config.changelog_topic.as_str(), config.partitions.max(1)),
        (config.repartition_topic.as_str(), config.partitions.max(1)),
    ];
    let compacted = [config.rules_topic.as_str(), config.changelog_topic.as_str()];
    let partitions_of = |topic: &str| -> Result<Option<usize>, JournalError> {
        let metadata = admin
            .inner()
            .fetch_metadata(Some(topic), StdDuration::from_secs(10))
            .map_err(|e| {
                kafka_error("cannot read the topics' metadata from the Kafka brokers", e)
            })?;
        Ok(metadata
            .topics()
            .first()
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .map(|t| t.partitions().len()))
    };
    let mut missing = Vec::new();
    for (topic, partitions) in wanted {
        if partitions_of(topic)?.is_none() {
            let new = NewTopic::new(
                topic,
                i32::from(partitions),
                TopicReplication::Fixed(config.replication_factor),
            );
            // The rules topic keeps the last record of each rule id, the
            // changelog the last snapshot of each entity.
            missing.push(if compacted.contains(&topic) {
                new.set("cleanup.policy", "compact")
            } else {
                new
            });
        }
    }
    if !missing.is_empty() {
        let options = AdminOptions::new()
            .operation_timeout(Some(StdDuration::from_secs(10)))
            .request_timeout(Some(StdDuration::from_secs(10)));
        // NB: a failure is not final yet (another instance may have created
        // the topic meanwhile); the metadata below decides.
        match admin.create_topics(&missing, &options).await {
            Ok(results) => {
                for result in results {
                    match result {
                        Ok(topic) => tracing::info!(topic, "created a Kafka topic"),
                        Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                        Err((topic, code)) => {
                            tracing::warn!(topic, error = %code, "cannot create a Kafka topic")
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot create the Kafka topics"),
        }
    }
    for (topic, partitions) in wanted {
        // NB: a topic just created may take a moment to show in metadata.
        let mut found = partitions_of(topic)?;
        for _ in 0..20 {
            if found.is_some() {
                break;
            }
            tokio::time::sleep(StdDuration::from_millis(250)).await;
            found = partitions_of(topic)?;
        }
        match found {
            None => {
                return Err(JournalError::Io(format!(
                    "the Kafka topic {topic} does not exist and could not be created; create it with {partitions} partition(s)"
                )))
            }
            Some(found) if found != usize::from(partitions) => {
                return Err(JournalError::Io(if topic == config.changelog_topic
                    || topic == config.repartition_topic
                {
                    format!(
                        "the changelog topic {topic} has {found} partitions and the events topic {partitions}: \
                         they must be equal (an entity's snapshots and repartitioned events go to its partition's number)"
                    )
                } else if topic == config.events_topic {
                    format!(
                        "the events topic {topic} has {found} partitions and cepheus is set to {partitions} (`partitions`): \
                         every producer and instance must agree on the partition of a key, so set `partitions = {found}`"
                    )
                } else {
                    format!("the topic {topic} has {found} partitions; it must have one, so that every instance reads it in one order")
                }))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

impl Journal for KafkaJournal {
    fn partitions(&self) -> u16 {
        self.config.partitions
    }

    fn append<'a>(
        &'a self,
        submission: Submission,
        _sink: &'a dyn EventSink,
    ) -> JournalFuture<'a, Appended> {
        // NB: events are routed when consumed back, by the owner of their
        // partition, which may be another instance.
        Box::pin(self.append_events(submission))
    }

    fn append_records(
        &self,
        alerts: Vec<AlertEntry>,
        letters: Vec<LetterEntry>,
    ) -> Result<u64, JournalError> {
        // NB: both go to their topics; every instance reads them back and
        // publishes them (alerts) or stores them (letters) from there.
        let records = alerts
            .into_iter()
            .map(Shared::Alert)
            .chain(letters.into_iter().map(Shared::Letter));
        let outgoing = self.outgoing.lock().unwrap_or_else(|p| p.into_inner());
        let tx = outgoing.as_ref().ok_or(JournalError::Closed)?;
        for record in records {
            tx.send(record).map_err(|_| JournalError::Closed)?;
            self.alerts_handed.fetch_add(1, Ordering::AcqRel);
        }
        Ok(self.position.load(Ordering::Acquire))
    }

    fn routed_through(&self) -> u64 {
        let mut p = self.partitions_state();
        let mark = self.position.fetch_add(1, Ordering::AcqRel);
        let routed = p.routed.clone();
        p.marks.insert(mark, routed);
        mark
    }

    fn sync_routed(&self) -> JournalFuture<'_, ()> {
        // Whatever was routed was consumed from the brokers: durable there.
        // The alerts the entities fired so far must be too.
        Box::pin(async move {
            let handed = {
                let _outgoing = self.outgoing.lock().unwrap_or_else(|p| p.into_inner());
                self.alerts_handed.load(Ordering::Acquire)
            };
            let mut acked = self.alerts_acked.subscribe();
            let waited =
                tokio::time::timeout(self.config.ack_timeout, acked.wait_for(|n| *n >= handed))
                    .await
                    .map(|r| r.is_ok());
            match waited {
                Ok(true) => Ok(()),
                Ok(false) => Err(JournalError::Closed),
                Err(_) => Err(JournalError::Timeout(self.config.ack_timeout.as_secs())),
            }
        })
    }

    fn checkpointed(&self, through: u64) {
        let offsets = {
            let mut p = self.partitions_state();
            let mut kept = p.marks.split_off(&(through + 1));
            std::mem::swap(&mut kept, &mut p.marks);
            let Some(offsets) = kept.remove(&through) else {
                return;
            };
            let offsets: Vec<((Topic, i32), i64)> = offsets
                .into_iter()
                .filter(|((_, partition), _)| p.assigned.contains(partition))
                .collect();
            p.checkpointed.extend(offsets.iter().copied());
            offsets
        };
        if offsets.is_empty() {
            return;
        }
        let list = offset_list(
            offsets,
            &self.config.events_topic,
            &self.config.repartition_topic,
        );
        if let Err(e) = self.consumer.store_offsets(&list) {
            // A partition revoked meanwhile: its new owner goes on from the
            // last commit, and entities skip what they applied.
            tracing::debug!(error = %e, "cannot store some consumed offsets");
        }
    }

    fn progress(&self) -> Progress {
        self.progress.borrow().clone()
    }

    fn first_lsn(&self) -> u64 {
        0
    }

    fn bytes(&self) -> u64 {
        0
    }

    fn read(
        &self,
        _from: u64,
        _through: u64,
        _wanted: Wanted,
    ) -> Box<dyn Iterator<Item = Result<(u64, Timestamp, Payload), JournalError>> + Send + '_> {
        // NB: the topics are the log: a backtest reads what the events
        // topic retains, every partition up to its end now (positions do
        // not apply: each partition has its own offsets).
        match TopicReader::open(&self.config) {
            Ok(reader) => Box::new(reader),
            Err(e) => Box::new(std::iter::once(Err(e))),
        }
    }

    fn attach(&self, sink: Arc<dyn EventSink>, pace: Pace) {
        *self.attached.lock().unwrap_or_else(|p| p.into_inner()) = Some(Attached { sink, pace });
    }

    fn evaluates(&self, partition: u16) -> bool {
        self.partitions_state()
            .evaluating
            .contains(&i32::from(partition))
    }

    fn keeps_changelog(&self) -> bool {
        true
    }

    fn log_snapshots(&self, records: Vec<ChangelogRecord>) -> JournalFuture<'_, ()> {
        Box::pin(self.produce_snapshots(records))
    }

    fn hand_over(&self, state: Arc<dyn PartitionState>) {
        let _ = self.handoff.state.set(state);
    }

    fn ownership(&self) -> Option<Ownership> {
        let p = self.partitions_state();
        Some(Ownership {
            assigned: sorted(&p.assigned),
            restoring: sorted(&p.restoring),
            rebalances: self.rebalances.load(Ordering::Relaxed),
        })
    }

    fn begin_replay(&self) {}

    fn replay(
        &self,
        _from: u64,
        _sink: &dyn EventSink,
        _pace: &mut dyn FnMut(),
    ) -> Result<u64, JournalError> {
        // The consumer thread routes; the replay is over once the first
        // assignment is read to its end.
        while !self.closing.load(Ordering::Acquire) && self.is_replaying() {
            std::thread::sleep(StdDuration::from_millis(20));
        }
        Ok(self.routed_events.load(Ordering::Relaxed))
    }

    fn is_replaying(&self) -> bool {
        let p = self.partitions_state();
        !p.assignment_seen || !p.restoring.is_empty()
    }

    fn retain(
        &self,
        _keep_from: u64,
        _oldest: Timestamp,
        _max_bytes: u64,
    ) -> Result<usize, JournalError> {
        // The brokers' retention settings apply.
        Ok(0)
    }

    fn close(&self) {
        if self.closing.swap(true, Ordering::AcqRel) {
            return;
        }
        drop(
            self.outgoing
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for thread in threads {
            let _ = thread.join();
        }
        let list = {
            let p = self.partitions_state();
            offset_list(
                p.checkpointed
                    .iter()
                    .filter(|((_, partition), _)| p.assigned.contains(partition))
                    .map(|(k, o)| (*k, *o)),
                &self.config.events_topic,
                &self.config.repartition_topic,
            )
        };
        if list.count() > 0 {
            // NB: what the final checkpoint covers, not the consumer's
            // position: records past it are not in any durable snapshot.
            if let Err(e) = self
                .consumer
                .commit(&list, rdkafka::consumer::CommitMode::Sync)
            {
                tracing::warn!(error = %e, "cannot commit the consumed offsets at the stop; the next owner reads from the last commit");
            }
        }
        // NB: leave the group now (LeaveGroup), so the partitions move at
        // once instead of after the session timeout; what arrives meanwhile
        // is not routed, and its offsets are not stored.
        match self.consumer.close_queue() {
            Ok(()) => {
                let deadline = std::time::Instant::now() + StdDuration::from_secs(10);
                while !self.consumer.closed() && std::time::Instant::now() < deadline {
                    let _ = self.consumer.poll(StdDuration::from_millis(100));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot leave the consumer group; its partitions move after the session timeout")
            }
        }
        let _ = self.producer.flush(StdDuration::from_secs(5));
        drop(
            self.attached
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
        drop(self.groups.lock().unwrap_or_else(|p| p.into_inner()).take());
    }
}
