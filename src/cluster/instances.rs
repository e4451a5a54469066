//! The scale-out mode's instances directory (`docs/scale-out.md`): which
//! instance evaluates which partitions, and where its HTTP API is.
//!
//! ```text
//! journal.ownership() ─► publisher thread ─► instances topic (compacted, one partition,
//!   (polled; a change        (key = instance id, value = InstanceEntry as JSON;
//!    publishes at once,       no value: the instance stopped)
//!    else every heartbeat)          │
//!                                   ▼
//!                  every instance's reader thread ─► Directory ─► forwarding, GET /v1/instances
//! ```
//!
//! Liveness is judged from each entry's own `heartbeat_at` against the
//! reader's wall clock ([`Directory::live`]), so an instance that was
//! killed without its tombstone drops out `missed_heartbeats` heartbeats
//! after its last one — also for an instance that reads the topic from
//! its beginning at start.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::journal::kafka::{client_config, KafkaConfig};
use crate::journal::{Journal, Ownership};
use crate::store::Store;
use crate::time::{wall_now, Duration, Timestamp};

/// The version of cepheus this build is, as entries carry it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Meta key of the instance id made at the first start.
const INSTANCE_ID: &str = "instance_id";

/// How often the publisher looks at the journal's ownership.
const TICK: StdDuration = StdDuration::from_millis(100);

/// One instance as the instances topic carries it (JSON). Readers ignore
/// fields they do not know, so a newer build may add some.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceEntry {
    /// The instance id (also the record's key).
    pub id: String,
    /// Where its HTTP API is reached, e.g. `http://10.0.0.5:8080`.
    pub url: String,
    /// Partitions the group assigned to it.
    pub assigned: Vec<i32>,
    /// Assigned partitions it has not read up to their end yet.
    pub restoring: Vec<i32>,
    /// When it started.
    pub started_at: Timestamp,
    /// When it wrote this entry (its wall clock).
    pub heartbeat_at: Timestamp,
    /// Its cepheus version.
    pub version: String,
}

impl InstanceEntry {
    /// Whether the entry was refreshed within `ttl` of `now`. An entry
    /// from a clock ahead of ours counts as fresh.
    pub fn is_fresh(&self, now: Timestamp, ttl: Duration) -> bool {
        now.millis().saturating_sub(self.heartbeat_at.millis()) <= ttl.millis()
    }
}

/// What this instance says about itself; fixed at the start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The instance id.
    pub id: String,
    /// The advertised URL of its HTTP API.
    pub url: String,
    /// When it started.
    pub started_at: Timestamp,
}

impl Identity {
    /// This instance's entry with `ownership` as of `now`.
    pub fn entry(&self, ownership: &Ownership, now: Timestamp) -> InstanceEntry {
        InstanceEntry {
            id: self.id.clone(),
            url: self.url.clone(),
            assigned: ownership.assigned.clone(),
            restoring: ownership.restoring.clone(),
            started_at: self.started_at,
            heartbeat_at: now,
            version: VERSION.to_owned(),
        }
    }
}

/// The entries read from the instances topic, latest per id. Pure: the
/// time is passed in.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    entries: BTreeMap<String, InstanceEntry>,
}

impl Directory {
    /// Applies one record: an entry, or the tombstone of a stopped
    /// instance. Returns whether the id is new to the directory (or gone).
    pub fn apply(&mut self, id: &str, entry: Option<InstanceEntry>) -> bool {
        match entry {
            Some(entry) => self.entries.insert(id.to_owned(), entry).is_none(),
            None => self.entries.remove(id).is_some(),
        }
    }

    /// The entries refreshed within `ttl` of `now`, by id.
    pub fn live(&self, now: Timestamp, ttl: Duration) -> impl Iterator<Item = &InstanceEntry> {
        self.entries.values().filter(move |e| e.is_fresh(now, ttl))
    }

    /// The live instance, other than `except`, that says it owns
    /// `partition`; during a rebalance two may say so for a moment, and
    /// the one that said it last wins.
    pub fn owner_of(
        &self,
        partition: i32,
        except: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> Option<&InstanceEntry> {
        self.live(now, ttl)
            .filter(|e| e.id != except && e.assigned.contains(&partition))
            .max_by_key(|e| e.heartbeat_at)
    }
}

/// The directory as the API sees it: this instance, and the others as the
/// instances topic tells them (none in the embedded mode).
#[derive(Debug)]
pub struct Instances {
    identity: Identity,
    /// An entry not refreshed for this long is gone.
    ttl: Duration,
    directory: Mutex<Directory>,
    /// Whether another process was seen publishing under this id.
    duplicate_seen: AtomicBool,
}

impl Instances {
    /// The directory of `identity`, taking entries not refreshed for `ttl`
    /// as gone.
    pub fn new(identity: Identity, ttl: StdDuration) -> Instances {
        Instances {
            identity,
            ttl: Duration(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)),
            directory: Mutex::new(Directory::default()),
            duplicate_seen: AtomicBool::new(false),
        }
    }

    /// This instance.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    fn directory(&self) -> std::sync::MutexGuard<'_, Directory> {
        self.directory.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live instance, other than this one, that owns `partition`.
    pub fn owner_of(&self, partition: i32, now: Timestamp) -> Option<InstanceEntry> {
        self.directory()
            .owner_of(partition, &self.identity.id, now, self.ttl)
            .cloned()
    }

    /// The other live instances.
    pub fn peers(&self, now: Timestamp) -> Vec<InstanceEntry> {
        self.directory()
            .live(now, self.ttl)
            .filter(|e| e.id != self.identity.id)
            .cloned()
            .collect()
    }

    /// Applies a record of the instances topic, read at `now`.
    fn apply(&self, id: &str, entry: Option<InstanceEntry>, now: Timestamp) {
        let mine = id == self.identity.id;
        // NB: two processes with one id (a copied data directory) would
        // take each other's requests.
        if mine
            && entry
                .as_ref()
                .is_some_and(|e| e.started_at > self.identity.started_at)
            && !self.duplicate_seen.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(id, "another instance publishes under this instance's id; give each its own `kafka.instance_id` or data directory");
        }
        let live = entry
            .as_ref()
            .map(|e| (e.is_fresh(now, self.ttl), e.url.clone()));
        if self.directory().apply(id, entry) && !mine {
            match live {
                Some((true, url)) => {
                    tracing::info!(instance = id, url, "an instance joined the directory")
                }
                Some((false, _)) => {}
                None => tracing::info!(instance = id, "an instance left the directory"),
            }
        }
    }
}

/// This instance's id: `configured` when set, else the one made at the
/// first start and kept in the store (a random 64-bit number in hex).
pub fn instance_id(configured: &str, store: &Store) -> anyhow::Result<String> {
    if !configured.trim().is_empty() {
        return Ok(configured.trim().to_owned());
    }
    let id = match store.meta_u64(INSTANCE_ID)? {
        Some(id) => id,
        None => {
            let id = random_u64()?;
            store.set_meta_u64(INSTANCE_ID, id)?;
            store.flush_blocking()?;
            id
        }
    };
    Ok(format!("cepheus-{id:016x}"))
}

fn random_u64() -> std::io::Result<u64> {
    use std::io::Read;
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(u64::from_le_bytes(bytes))
}

/// The URL other instances reach this one at: `configured` when set, else
/// `http://<listen>` (`https://` with TLS). When `shared` (the scale-out
/// mode), says so in the log if the listen address is unspecified
/// (`0.0.0.0`, `[::]`) and no URL was set: the others could not reach it
/// from another host.
pub fn advertised_url(configured: &str, listen: &str, tls: bool, shared: bool) -> String {
    let configured = configured.trim().trim_end_matches('/');
    if !configured.is_empty() {
        return configured.to_owned();
    }
    let unspecified = listen
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.ip().is_unspecified());
    let url = format!("{}://{listen}", if tls { "https" } else { "http" });
    if unspecified && shared {
        tracing::warn!(listen, url, "listening on an unspecified address with no `kafka.advertised_url`: other instances are told {url}, which reaches this one only from its own host; set `kafka.advertised_url`");
    }
    url
}

/// How the instances topic is used.
#[derive(Debug, Clone)]
pub struct InstanceLogConfig {
    /// The topic.
    pub topic: String,
    /// How often the entry is refreshed.
    pub heartbeat: StdDuration,
}

/// The instances topic's publisher and reader threads.
pub struct InstanceLog {
    closing: Arc<AtomicBool>,
    publisher: Option<std::thread::JoinHandle<()>>,
}

impl InstanceLog {
    /// Creates the topic when missing, then publishes this instance's
    /// entry (from `journal`'s ownership) and reads everyone's into
    /// `instances`.
    pub async fn start(
        kafka: &KafkaConfig,
        config: InstanceLogConfig,
        instances: Arc<Instances>,
        journal: Arc<dyn Journal>,
    ) -> anyhow::Result<InstanceLog> {
        ensure_topic(kafka, &config.topic).await?;
        let producer: FutureProducer = client_config(kafka)
            .set("acks", "all")
            // NB: a heartbeat that cannot be written within a few beats is
            // stale anyway; the next one is tried instead.
            .set(
                "message.timeout.ms",
                (config.heartbeat.as_millis() * 3)
                    .clamp(1_000, 30_000)
                    .to_string(),
            )
            .create()?;
        let consumer: BaseConsumer = client_config(kafka)
            .set("group.id", format!("{}-instances", kafka.group_id))
            .set("enable.auto.commit", "false")
            .create()?;
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&config.topic, 0, Offset::Beginning)?;
        consumer.assign(&list)?;
        let closing = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&closing);
        let readers = Arc::clone(&instances);
        std::thread::Builder::new()
            .name("cepheus-instances-in".into())
            .spawn(move || consume(&consumer, &readers, &stop))?;
        let stop = Arc::clone(&closing);
        let publisher = std::thread::Builder::new()
            .name("cepheus-instances-out".into())
            .spawn(move || publish(&producer, &config, &instances, journal.as_ref(), &stop))?;
        Ok(InstanceLog {
            closing,
            publisher: Some(publisher),
        })
    }

    /// Writes this instance's tombstone (the others stop forwarding to it
    /// at once) and stops reading the topic.
    pub fn stop(&mut self) {
        self.closing.store(true, Ordering::Release);
        if let Some(publisher) = self.publisher.take() {
            let _ = publisher.join();
        }
    }
}

/// Publishes this instance's entry when its partitions change and every
/// heartbeat; the tombstone once `closing`.
fn publish(
    producer: &FutureProducer,
    config: &InstanceLogConfig,
    instances: &Instances,
    journal: &dyn Journal,
    closing: &AtomicBool,
) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    else {
        tracing::error!(
            "cannot start the instances publisher: other instances will not find this one"
        );
        return;
    };
    let identity = instances.identity();
    let send = |value: Option<Vec<u8>>| {
        let mut record = FutureRecord::<str, [u8]>::to(&config.topic)
            .key(&identity.id)
            .partition(0);
        if let Some(value) = &value {
            record = record.payload(value);
        }
        runtime
            .block_on(producer.send(record, StdDuration::from_secs(5)))
            .map(|_| ())
            .map_err(|(e, _)| e)
    };
    let mut published: Option<Ownership> = None;
    let mut next_beat = Instant::now();
    while !closing.load(Ordering::Acquire) {
        let mut ownership = journal.ownership().unwrap_or_default();
        // NB: rebalances count is not part of the entry; a change of it
        // alone is no reason to publish.
        ownership.rebalances = 0;
        if published.as_ref() != Some(&ownership) || Instant::now() >= next_beat {
            let entry = identity.entry(&ownership, wall_now());
            match serde_json::to_vec(&entry)
                .map_err(|e| e.to_string())
                .and_then(|value| send(Some(value)).map_err(|e| e.to_string()))
            {
                Ok(()) => {
                    if published.as_ref() != Some(&ownership) {
                        tracing::debug!(assigned = ?ownership.assigned, restoring = ?ownership.restoring, "published this instance's partitions");
                    }
                    published = Some(ownership);
                    next_beat = Instant::now() + config.heartbeat;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot publish this instance's entry to the instances topic; retrying");
                    next_beat = Instant::now() + config.heartbeat.min(StdDuration::from_secs(1));
                }
            }
        }
        std::thread::sleep(TICK);
    }
    match send(None) {
        Ok(()) => tracing::info!("left the instances directory"),
        Err(e) => {
            tracing::warn!(error = %e, "cannot write this instance's tombstone; the others drop it after missed heartbeats")
        }
    }
}

/// Reads the whole instances topic into `instances`.
fn consume(consumer: &BaseConsumer, instances: &Instances, closing: &AtomicBool) {
    while !closing.load(Ordering::Acquire) {
        let Some(message) = consumer.poll(StdDuration::from_millis(200)) else {
            continue;
        };
        let message = match message {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the instances topic; retrying");
                continue;
            }
        };
        let id = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
        let entry = match message.payload() {
            None => None,
            Some(value) => match serde_json::from_slice::<InstanceEntry>(value) {
                Ok(entry) if entry.id == id => Some(entry),
                Ok(entry) => {
                    tracing::warn!(key = %id, id = %entry.id, "skipping an instances-topic record whose key is not its id");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(instance = %id, error = %e, "skipping an instances-topic record this version cannot read");
                    continue;
                }
            },
        };
        instances.apply(&id, entry, wall_now());
    }
}

/// Creates `topic` (one partition, compacted) when missing; refuses one of
/// more partitions (the directory needs one order).
pub(crate) async fn ensure_topic(config: &KafkaConfig, topic: &str) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = client_config(config)
        // NB: asking for a missing topic's metadata must not create it
        // with the broker's default settings.
        .set("allow.auto.create.topics", "false")
        .create()?;
    let partitions_of = || -> anyhow::Result<Option<usize>> {
        let metadata = admin
            .inner()
            .fetch_metadata(Some(topic), StdDuration::from_secs(10))?;
        Ok(metadata
            .topics()
            .first()
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .map(|t| t.partitions().len()))
    };
    if partitions_of()?.is_none() {
        let new = NewTopic::new(topic, 1, TopicReplication::Fixed(config.replication_factor))
            .set("cleanup.policy", "compact");
        let options = AdminOptions::new()
            .operation_timeout(Some(StdDuration::from_secs(10)))
            .request_timeout(Some(StdDuration::from_secs(10)));
        // NB: a failure is not final yet (another instance may have created
        // it meanwhile); the metadata below decides.
        match admin.create_topics([&new], &options).await {
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
            Err(e) => tracing::warn!(topic, error = %e, "cannot create a Kafka topic"),
        }
    }
    for _ in 0..40 {
        match partitions_of()? {
            Some(1) => return Ok(()),
            Some(found) => anyhow::bail!(
                "the topic {topic} has {found} partitions; it must have one, so that every instance reads it in one order"
            ),
            // NB: a topic just created may take a moment to show in metadata.
            None => tokio::time::sleep(StdDuration::from_millis(250)).await,
        }
    }
    anyhow::bail!("the Kafka topic {topic} does not exist and could not be created; create it with one partition and cleanup.policy=compact")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, assigned: &[i32], heartbeat_at: i64) -> InstanceEntry {
        InstanceEntry {
            id: id.into(),
            url: format!("http://{id}"),
            assigned: assigned.to_vec(),
            restoring: Vec::new(),
            started_at: Timestamp(0),
            heartbeat_at: Timestamp(heartbeat_at),
            version: VERSION.into(),
        }
    }

    const TTL: Duration = Duration(6_000);

    #[test]
    fn an_entry_not_refreshed_within_the_ttl_is_gone() {
        let mut directory = Directory::default();
        directory.apply("a", Some(entry("a", &[0, 1], 10_000)));
        directory.apply("b", Some(entry("b", &[2, 3], 1_000)));
        let live: Vec<&str> = directory
            .live(Timestamp(12_000), TTL)
            .map(|e| e.id.as_str())
            .collect();
        assert_eq!(live, ["a"]);
        assert_eq!(directory.owner_of(2, "me", Timestamp(12_000), TTL), None);
        assert_eq!(
            directory
                .owner_of(1, "me", Timestamp(12_000), TTL)
                .map(|e| e.id.as_str()),
            Some("a")
        );
    }

    #[test]
    fn a_tombstone_removes_the_entry_and_the_latest_claim_wins() {
        let mut directory = Directory::default();
        assert!(directory.apply("a", Some(entry("a", &[0], 1_000))));
        assert!(!directory.apply("a", Some(entry("a", &[0], 2_000))));
        directory.apply("b", Some(entry("b", &[0], 2_500)));
        let owner = |d: &Directory| {
            d.owner_of(0, "me", Timestamp(3_000), TTL)
                .map(|e| e.id.clone())
        };
        assert_eq!(owner(&directory).as_deref(), Some("b"));
        assert!(directory.apply("b", None));
        assert_eq!(owner(&directory).as_deref(), Some("a"));
        // This instance is never its own forwarding target.
        assert_eq!(directory.owner_of(0, "a", Timestamp(3_000), TTL), None);
    }

    #[test]
    fn the_advertised_url_defaults_to_the_listen_address() {
        assert_eq!(
            advertised_url("", "127.0.0.1:8080", false, true),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            advertised_url("", "0.0.0.0:8443", true, true),
            "https://0.0.0.0:8443"
        );
        assert_eq!(
            advertised_url("http://node-1:8080/", "0.0.0.0:8080", false, true),
            "http://node-1:8080"
        );
    }

    #[test]
    fn an_entry_from_a_newer_build_with_more_fields_is_read() {
        let json = r#"{"id":"a","url":"http://a","assigned":[1],"restoring":[],
            "started_at":"2026-01-01T00:00:00Z","heartbeat_at":"2026-01-01T00:00:02Z",
            "version":"9.0.0","zone":"eu-1"}"#;
        let read: InstanceEntry = serde_json::from_str(json).expect("an entry");
        assert_eq!(read.assigned, [1]);
    }
}
