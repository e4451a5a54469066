//! Service settings: embedded defaults, overridden by an optional TOML file,
//! overridden by flags and `CEPHEUS_*` environment variables.
//!
//! Every limit cepheus enforces is a field here with its default in the
//! doc comment; `docs/limits.md` lists them in one table.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::api::auth::TokenConfig;
use crate::delivery::config::DeliverySettings;
use crate::engine::EngineConfig;
use crate::event::EventLimits;
use crate::rules::limits::RuleLimits;
use crate::time::Duration;

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (default).
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// Everything `cepheus serve` can be told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on (default `127.0.0.1:8080`).
    pub listen: String,
    /// The data directory (default `./data`).
    pub data_dir: PathBuf,
    /// A folder of rule files loaded at start (default none).
    pub rules_dir: Option<PathBuf>,
    /// Log format (default `human`).
    pub log_format: LogFormat,
    /// Log filter, `tracing` syntax (default `info`; `RUST_LOG` wins).
    pub log_level: String,
    /// Threads for entity actors (default 0: one per core).
    pub arbiters: usize,
    /// Threads serving HTTP (default 0: one per core).
    pub http_workers: usize,
    /// Partitions of the key space (default 64; fixed once data exists).
    pub partitions: u16,
    /// Pattern engine settings.
    pub engine: EngineConfig,
    /// Limits on requests, events and rules.
    pub limits: Limits,
    /// Timing of background work.
    pub timing: Timing,
    /// Storage settings.
    pub storage: Storage,
    /// How much of the accepted event log is kept (for backtests).
    pub history: History,
    /// API tokens.
    pub auth: AuthSettings,
    /// Receivers, routes and the limits of delivery (`docs/delivery.md`).
    pub delivery: DeliverySettings,
    /// TLS certificate and key; plain HTTP when absent.
    pub tls: Option<TlsSettings>,
    /// Listen on a non-loopback address without tokens (default false:
    /// refused, so an open API is never exposed by accident).
    pub insecure: bool,
    /// The scale-out mode: a Kafka-API log instead of the embedded journal
    /// (`docs/scale-out.md`); off while `kafka.brokers` is empty.
    pub kafka: KafkaSettings,
}

/// The Kafka-API log of the scale-out mode (`docs/scale-out.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSettings {
    /// Bootstrap brokers, `host:port,host:port` (default empty: the
    /// embedded journal; `--kafka` sets it).
    pub brokers: String,
    /// The consumer group the instances of one deployment share (default
    /// `cepheus`).
    pub group_id: String,
    /// The client id the brokers see (default `cepheus`).
    pub client_id: String,
    /// Replication factor of the topics cepheus creates when they are
    /// missing (default 1; 3 on a production cluster). Topics are created
    /// with the top-level `partitions` (events) and one partition (alerts).
    pub replication_factor: i32,
    /// Longest wait for the brokers to acknowledge a request's events before
    /// the request fails with 503 (default `10s`).
    pub ack_timeout: Duration,
    /// How long the group waits for a member that stopped heartbeating (a
    /// killed instance) before its partitions move to the others (default
    /// `10s`; Kafka's own default is 45 s). The brokers bound it with their
    /// `group.min.session.timeout.ms` and `group.max.session.timeout.ms`.
    pub session_timeout: Duration,
    /// This instance's id in the instances directory (default empty: a
    /// random id made at the first start and kept in the data directory).
    pub instance_id: String,
    /// The URL other instances reach this one's HTTP API at, for forwarded
    /// entity requests and clock advances (default empty:
    /// `http://<listen>`, `https://` with TLS).
    pub advertised_url: String,
    /// How often this instance refreshes its entry in the instances
    /// directory (default `2s`); it also publishes at once when its
    /// partitions change.
    pub heartbeat: Duration,
    /// An entry not refreshed for this many heartbeats is taken as gone
    /// (default 3).
    pub missed_heartbeats: u32,
    /// Topic names.
    pub topics: KafkaTopics,
    /// librdkafka properties passed through as they are, e.g.
    /// `"security.protocol" = "SASL_SSL"`, `"sasl.mechanism" = "SCRAM-SHA-512"`,
    /// `"ssl.ca.location" = "/etc/ssl/ca.pem"` (default none).
    pub client: std::collections::BTreeMap<String, String>,
}

/// The topics of the scale-out mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaTopics {
    /// Events, keyed by entity key (default `cepheus.events`).
    pub events: String,
    /// Alerts, one partition (default `cepheus.alerts`).
    pub alerts: String,
    /// Entity snapshots per partition, compacted, as many partitions as the
    /// events topic (default `cepheus.changelog`): a partition's new owner
    /// restores its entities from here.
    pub changelog: String,
    /// Rules shared by all instances, compacted, one partition (default
    /// `cepheus.rules`).
    pub rules: String,
    /// The instances directory: each instance's URL and partitions,
    /// compacted, one partition (default `cepheus.instances`).
    pub instances: String,
    /// Receivers, routes, silences and the sending instance's cursors,
    /// compacted, one partition (default `cepheus.delivery`): every
    /// instance has the same delivery configuration, and one sends.
    pub delivery: String,
    /// Events for the keys `partition_by` rules give them, as many
    /// partitions as the events topic (default `cepheus.repartition`).
    pub repartition: String,
    /// Dead letters, one partition, every instance reads them all (default
    /// `cepheus.deadletters`).
    pub deadletters: String,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            brokers: String::new(),
            group_id: "cepheus".into(),
            client_id: "cepheus".into(),
            replication_factor: 1,
            ack_timeout: Duration::from_secs(10),
            session_timeout: Duration::from_secs(10),
            instance_id: String::new(),
            advertised_url: String::new(),
            heartbeat: Duration::from_secs(2),
            missed_heartbeats: 3,
            topics: KafkaTopics::default(),
            client: Default::default(),
        }
    }
}

impl Default for KafkaTopics {
    fn default() -> Self {
        KafkaTopics {
            events: "cepheus.events".into(),
            alerts: "cepheus.alerts".into(),
            changelog: "cepheus.changelog".into(),
            rules: "cepheus.rules".into(),
            instances: "cepheus.instances".into(),
            delivery: "cepheus.delivery".into(),
            repartition: "cepheus.repartition".into(),
            deadletters: "cepheus.deadletters".into(),
        }
    }
}

/// Retention of the accepted event log: in the background, the oldest
/// records are removed while they are older than `retention` or the log is
/// over `max_bytes`; records after the last checkpoint are always kept
/// (recovery needs them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct History {
    /// Keep accepted events this long (default `7d`).
    pub retention: Duration,
    /// Keep at most this many bytes of log (default 10 GiB).
    pub max_bytes: u64,
    /// How often the log is compacted (default `1m`).
    pub compact_every: Duration,
    /// Keep alerts and dead letters this long (default `30d`); a cursor older
    /// than what is held gets `410 gone` naming the oldest seq held.
    pub alert_retention: Duration,
    /// Most event ids remembered for deduplication (default 10,000,000,
    /// about 450 MB); beyond it the oldest are forgotten before the dedup
    /// horizon, counted in `cepheus_dedup_ids_forgotten_total`.
    pub max_remembered_ids: usize,
}

impl Default for History {
    fn default() -> Self {
        History {
            retention: Duration::from_secs(7 * 24 * 3600),
            max_bytes: 10 * 1024 * 1024 * 1024,
            compact_every: Duration::from_secs(60),
            alert_retention: Duration::from_secs(30 * 24 * 3600),
            max_remembered_ids: 10_000_000,
        }
    }
}

/// API tokens (see `src/api/auth.rs`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// The tokens, as `[[auth.tokens]]` tables with `name`, `sha256` and
    /// `scopes` (`cepheus token` prints one). None: the API is open.
    pub tokens: Vec<TokenConfig>,
}

/// TLS with rustls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM file of the certificate chain.
    pub cert: PathBuf,
    /// PEM file of the private key.
    pub key: PathBuf,
}

/// Limits on requests, events and rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest request body in bytes (default 16 MiB).
    pub max_body_bytes: usize,
    /// Most events per request (default 100,000).
    pub max_events_per_request: usize,
    /// Per-event limits (key 256 B, type 128 B, id 256 B, data 64 KiB and 32 levels).
    pub event: EventLimits,
    /// Per-rule limits.
    pub rules: RuleLimits,
    /// Most events accepted and not yet evaluated; ingest answers 429 beyond
    /// it (default 1,000,000).
    pub max_inflight_events: usize,
    /// Most entities live in memory at once; ingest answers 429 at it until
    /// idle ones are passivated (default 4,000,000: about 9 GiB).
    pub max_live_entities: usize,
    /// Most WebSocket subscribers at once (default 1,000).
    pub max_subscribers: usize,
    /// Alerts a WebSocket subscriber may fall behind before it is closed
    /// (default 1,024).
    pub subscriber_backlog: usize,
    /// Most items per page of alerts or dead letters (default 1,000).
    pub max_page: usize,
}

/// Timing of background work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timing {
    /// Idle time after which an entity is passivated (default `60s`).
    pub passivate_after: Duration,
    /// How often due timers are looked for (default `100ms`).
    pub timer_tick: Duration,
    /// How often changed entities are snapshotted (default `5s`).
    pub checkpoint_interval: Duration,
    /// How long event ids are remembered per key (default `24h`).
    pub dedup_horizon: Duration,
    /// How long shutdown waits for in-flight requests (default `10s`).
    pub shutdown_grace: Duration,
}

/// Storage settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Storage {
    /// sled's page cache in bytes (default 256 MiB).
    pub cache_bytes: u64,
    /// Whether a new data directory is compressed (zstd; default false). An
    /// existing directory keeps the setting it was created with. NB: sled
    /// counts a cached page at its compressed size, so the cache then holds
    /// several times `cache_bytes` in memory.
    pub compression: bool,
    /// Size at which a journal segment file is closed and a new one started
    /// (default 64 MiB); retention removes whole segments.
    pub segment_bytes: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./data"),
            rules_dir: None,
            log_format: LogFormat::Human,
            log_level: "info".into(),
            arbiters: 0,
            http_workers: 0,
            partitions: 64,
            engine: EngineConfig::default(),
            limits: Limits::default(),
            timing: Timing::default(),
            storage: Storage::default(),
            history: History::default(),
            auth: AuthSettings::default(),
            delivery: DeliverySettings::default(),
            tls: None,
            insecure: false,
            kafka: KafkaSettings::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 16 * 1024 * 1024,
            max_events_per_request: 100_000,
            event: EventLimits::default(),
            rules: RuleLimits::default(),
            max_inflight_events: 1_000_000,
            max_live_entities: 4_000_000,
            max_subscribers: 1_000,
            subscriber_backlog: 1_024,
            max_page: 1_000,
        }
    }
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            passivate_after: Duration::from_secs(60),
            timer_tick: Duration(100),
            checkpoint_interval: Duration::from_secs(5),
            dedup_horizon: Duration::from_secs(24 * 3600),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            cache_bytes: 256 * 1024 * 1024,
            compression: false,
            segment_bytes: 64 * 1024 * 1024,
        }
    }
}

/// The settings could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The config file could not be read.
    #[error("cannot read the config file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// The config file is not valid.
    #[error("the config file {0} is invalid: {1}")]
    Parse(PathBuf, String),
}

impl Settings {
    /// Reads a TOML config file over the defaults.
    pub fn from_file(path: &Path) -> Result<Settings, SettingsError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| SettingsError::Read(path.to_owned(), e))?;
        toml::from_str(&text).map_err(|e| SettingsError::Parse(path.to_owned(), e.to_string()))
    }
}

/// `n`, or the number of cores when `n` is 0.
pub fn or_cores(n: usize) -> usize {
    if n > 0 {
        n
    } else {
        std::thread::available_parallelism().map_or(2, |c| c.get())
    }
}

/// std's duration from ours (negative becomes zero).
pub fn std_duration(d: Duration) -> std::time::Duration {
    std::time::Duration::from_millis(d.millis().max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_file_overrides_only_what_it_names() {
        let settings: Settings = toml::from_str(
            r#"
            listen = "0.0.0.0:9000"
            [timing]
            passivate_after = "5m"
            [limits.event]
            max_key_bytes = 64
            "#,
        )
        .unwrap();
        assert_eq!(settings.listen, "0.0.0.0:9000");
        assert_eq!(settings.timing.passivate_after, Duration::from_secs(300));
        assert_eq!(settings.timing.timer_tick, Duration(100));
        assert_eq!(settings.limits.event.max_key_bytes, 64);
        assert_eq!(settings.limits.event.max_type_bytes, 128);
    }

    #[test]
    fn the_documented_defaults_are_the_defaults() {
        let doc = include_str!("../docs/configuration.md");
        let start = doc
            .find("```toml\n")
            .expect("docs/configuration.md has a toml block")
            + 8;
        let end = start + doc[start..].find("```").expect("the block ends");
        let documented: Settings =
            toml::from_str(&doc[start..end]).expect("the documented block parses");
        assert_eq!(
            documented,
            Settings::default(),
            "docs/configuration.md is stale; the defaults are:\n{}",
            toml::to_string(&Settings::default()).unwrap_or_default()
        );
    }

    #[test]
    fn kafka_client_properties_pass_through() {
        let settings: Settings = toml::from_str(
            r#"
            [kafka]
            brokers = "k1:9092,k2:9092"
            [kafka.client]
            "security.protocol" = "SASL_SSL"
            "sasl.mechanism" = "PLAIN"
            "#,
        )
        .unwrap();
        assert_eq!(settings.kafka.brokers, "k1:9092,k2:9092");
        assert_eq!(settings.kafka.topics.events, "cepheus.events");
        assert_eq!(
            settings
                .kafka
                .client
                .get("security.protocol")
                .map(String::as_str),
            Some("SASL_SSL")
        );
    }

    #[test]
    fn unknown_config_keys_are_errors() {
        assert!(toml::from_str::<Settings>("lisen = \"x\"").is_err());
    }
}
