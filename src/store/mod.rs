//! The store: sled trees for state — and, with the journal
//! (`crate::journal`), the only code in cepheus that touches disk.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `meta` | name | store-wide facts (format, checkpoint, view position, clock floor) |
//! | `snapshots` | partition (u16 BE) ++ entity key | entity state |
//! | `timers` | due wall time ++ entity key | (empty): passivated entities to wake |
//! | `rules` | rule id | the current version of a rule |
//! | `rule_versions` | rule id ++ 0x00 ++ version (u64 BE) | every version |
//! | `alerts` | alert seq (u64 BE) | an alert (written behind the journal) |
//! | `alert_ids` | alert id | alert seq |
//! | `deadletters` | seq (u64 BE) | a rejected or late event and why (written behind the journal) |
//! | `receivers`, `routes`, `delivery_*`, `silences` | see `delivery.rs` | where alerts go, how far each receiver got, silences |
//!
//! Every value carries a format version (`codec.rs`). Entity snapshots are
//! grouped by partition (`murmur2(key) mod P`, Kafka's partitioner) so a
//! partition's state can be moved on its own when cepheus scales out.
//!
//! # Durability
//! A write is durable once a flush that started after it completes.
//! [`Store::sync`] waits for that, and concurrent callers share one flush
//! (group commit). NB: sled recovers a prefix of its log, so a record
//! written after another (by the same thread) never survives a crash
//! without it. Nothing here is the only copy of an acknowledged event or a
//! published alert: the journal is; what sled holds is derived from the
//! journal up to a position recorded with it (the checkpoint, the view
//! position), and rebuilt from the journal after it.

pub mod alerts;
pub mod codec;
pub mod deadletters;
pub mod delivery;
pub mod entities;
pub mod legacy;
pub mod rules;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::store::codec::read_be;

/// Version of the store's layout as a whole (the set of trees and their keys).
/// Format 1 also held the event log and event ids (now in the journal) and
/// keyed snapshots by an xxh3 partition: it is migrated (`crate::migrate`).
pub const STORE_FORMAT: u64 = 2;

/// Something went wrong with the store. Each message says what and where.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// sled reported an I/O or corruption error.
    #[error("storage error: {0}")]
    Sled(String),
    /// A record could not be encoded.
    #[error("could not encode a {0} record: {1}")]
    Encode(&'static str, String),
    /// A record could not be decoded.
    #[error("a stored {0} record is corrupt: {1}")]
    Corrupt(&'static str, String),
    /// A record was written by another version of cepheus.
    #[error("a stored {kind} record has format {found}, this build reads format {expected}; upgrade cepheus or restore a matching data directory")]
    UnknownFormat {
        /// Record kind.
        kind: &'static str,
        /// Version found.
        found: u8,
        /// Version this build writes.
        expected: u8,
    },
    /// The data directory could not be opened.
    #[error("cannot open the data directory {path}: {reason}")]
    Open {
        /// The directory.
        path: PathBuf,
        /// What sled said.
        reason: String,
    },
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Sled(e.to_string())
    }
}

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// How the store is opened.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The data directory.
    pub path: PathBuf,
    /// sled's page cache, in bytes.
    pub cache_bytes: u64,
    /// Number of partitions (fixed per deployment; see DESIGN §1).
    pub partitions: u16,
    /// Whether sled compresses what it writes (zstd). Chosen when the
    /// directory is created: sled refuses to reopen a store with the other
    /// setting, so an existing store keeps the one it was created with.
    pub compression: bool,
}

/// zstd level of sled's compression: level 3 cost no measurable ingest
/// throughput in `cepheus load` runs where sled's default (5) cost ~15 %.
const COMPRESSION_LEVEL: i32 = 3;

/// The compression an existing store was created with (read from sled's
/// `conf` file), else the configured one.
fn compression_of(config: &StoreConfig) -> bool {
    // NB: sled's `conf` is text lines followed by a binary checksum.
    let stored = std::fs::read(config.path.join("conf"))
        .ok()
        .and_then(|conf| {
            String::from_utf8_lossy(&conf)
                .lines()
                .find_map(|line| line.strip_prefix("use_compression:"))
                .and_then(|value| value.trim().parse::<bool>().ok())
        });
    match stored {
        Some(stored) if stored != config.compression => {
            tracing::warn!(
                data_dir = %config.path.display(),
                stored,
                "storage.compression differs from the setting this data directory was created with; keeping the directory's"
            );
            stored
        }
        Some(stored) => stored,
        None => config.compression,
    }
}

/// The open store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    path: PathBuf,
    meta: sled::Tree,
    /// Entity snapshots and passivated timers.
    pub entities: entities::EntityStore,
    /// Rules and their versions.
    pub rules: rules::RuleStore,
    /// The alert log.
    pub alerts: alerts::AlertLog,
    /// Dead letters.
    pub deadletters: deadletters::DeadLetters,
    /// Receivers, routes, cursors, failed deliveries, silences.
    pub delivery: delivery::DeliveryStore,
    commit: GroupCommit,
    partitions: u16,
    /// The layout version found at open (1: to migrate).
    format: u64,
}

impl Store {
    /// Opens (or creates) the store in `config.path`.
    pub fn open(config: &StoreConfig) -> StoreResult<Store> {
        std::fs::create_dir_all(&config.path).map_err(|e| StoreError::Open {
            path: config.path.clone(),
            reason: e.to_string(),
        })?;
        let db = sled::Config::new()
            .path(&config.path)
            .cache_capacity(config.cache_bytes)
            // NB: we flush ourselves (group commit); sled's background flush
            // would only add writes we do not wait for.
            .flush_every_ms(None)
            .use_compression(compression_of(config))
            .compression_factor(COMPRESSION_LEVEL)
            .open()
            .map_err(|e| StoreError::Open {
                path: config.path.clone(),
                reason: describe_open_error(&config.path, &e),
            })?;
        let meta = db.open_tree("meta")?;
        let durable = read_marker(&config.path)?;
        check_against_marker(&meta, config, durable)?;
        let format = check_format(&meta, config)?;
        let partitions = match meta.get("partitions")?.as_deref().and_then(read_be) {
            Some(p) => p as u16,
            None => {
                meta.insert("partitions", &codec::be(u64::from(config.partitions)))?;
                config.partitions
            }
        };
        let inner = Inner {
            entities: entities::EntityStore::open(&db, partitions)?,
            rules: rules::RuleStore::open(&db)?,
            alerts: alerts::AlertLog::open(&db)?,
            deadletters: deadletters::DeadLetters::open(&db)?,
            delivery: delivery::DeliveryStore::open(&db)?,
            commit: GroupCommit::new(),
            format,
            path: config.path.clone(),
            meta,
            db,
            partitions,
        };
        let store = Store {
            inner: Arc::new(inner),
        };
        if durable.is_none() {
            // A new store (or one made before the marker existed): what
            // sled holds now is durable, then the marker says so.
            store.flush_blocking()?;
            store.mark_durable_checkpoint(store.meta_u64(CHECKPOINT_META)?.unwrap_or(0))?;
        }
        Ok(store)
    }

    /// Records, in a file beside sled's ([`MARKER_FILE`]), that the
    /// checkpoint at log seq `seq` is durable in sled. Call only after a
    /// flush that covers it.
    ///
    /// NB: sled recovers a prefix of its writes, so after any crash the
    /// checkpoint it holds is at least the one recorded here; one behind it
    /// at start means sled's files lost data (corrupt, truncated or
    /// replaced), which sled itself opens as a shorter or empty store.
    pub fn mark_durable_checkpoint(&self, seq: u64) -> StoreResult<()> {
        use std::io::Write as _;
        let marker = self.inner.path.join(MARKER_FILE);
        let temporary = self.inner.path.join(format!("{MARKER_FILE}.new"));
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&temporary)?;
            write!(file, "{MARKER_HEADER}\ncheckpoint {seq}\n")?;
            file.sync_all()?;
            std::fs::rename(&temporary, &marker)?;
            // NB: the rename is durable only once the directory is synced;
            // until then a power cut can bring back the previous marker.
            std::fs::File::open(&self.inner.path)?.sync_all()
        };
        write().map_err(|e| StoreError::Sled(format!("cannot write {}: {e}", marker.display())))
    }

    /// Entity snapshots and timers.
    pub fn entities(&self) -> &entities::EntityStore {
        &self.inner.entities
    }

    /// Rules.
    pub fn rules(&self) -> &rules::RuleStore {
        &self.inner.rules
    }

    /// The alert log.
    pub fn alerts(&self) -> &alerts::AlertLog {
        &self.inner.alerts
    }

    /// Dead letters.
    pub fn deadletters(&self) -> &deadletters::DeadLetters {
        &self.inner.deadletters
    }

    /// Receivers, routes, delivery cursors and failures, silences.
    pub fn delivery(&self) -> &delivery::DeliveryStore {
        &self.inner.delivery
    }

    /// The layout version found at open: 1 means the directory still has
    /// to be migrated (`crate::migrate`) before it is used.
    pub fn format(&self) -> u64 {
        self.inner.format
    }

    /// Records that the directory now has this build's layout.
    pub fn set_current_format(&self) -> StoreResult<()> {
        self.inner.meta.insert("format", &codec::be(STORE_FORMAT))?;
        Ok(())
    }

    pub(crate) fn db(&self) -> &sled::Db {
        &self.inner.db
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Number of partitions.
    pub fn partitions(&self) -> u16 {
        self.inner.partitions
    }

    /// Reads a `u64` from the meta tree.
    pub fn meta_u64(&self, name: &str) -> StoreResult<Option<u64>> {
        Ok(self.inner.meta.get(name)?.as_deref().and_then(read_be))
    }

    /// Writes a `u64` to the meta tree.
    pub fn set_meta_u64(&self, name: &str, value: u64) -> StoreResult<()> {
        self.inner.meta.insert(name, &codec::be(value))?;
        Ok(())
    }

    /// Waits until every write made before this call is durable. Callers
    /// that overlap share one flush.
    pub async fn sync(&self) -> StoreResult<()> {
        self.inner.commit.sync(&self.inner.db).await
    }

    /// Flushes synchronously (shutdown, tests).
    pub fn flush_blocking(&self) -> StoreResult<()> {
        self.inner.db.flush()?;
        Ok(())
    }

    /// Bytes the store occupies on disk.
    pub fn size_on_disk(&self) -> StoreResult<u64> {
        Ok(self.inner.db.size_on_disk()?)
    }

    /// The last error the store's background work hit, if any (disk full,
    /// permissions); `/readyz` reports it.
    pub fn health(&self) -> Result<(), String> {
        match self.inner.commit.last_error.lock() {
            Ok(e) => match &*e {
                Some(message) => Err(message.clone()),
                None => Ok(()),
            },
            Err(_) => Err("the store's flush state is poisoned".into()),
        }
    }
}

/// The file beside sled's that records the last checkpoint known durable.
pub const MARKER_FILE: &str = "cepheus-durable";

const MARKER_HEADER: &str = "cepheus store: the checkpoint below was durable in sled";

/// The meta key of the checkpoint (written by `crate::actors::checkpoint`).
const CHECKPOINT_META: &str = "checkpoint";

/// The checkpoint the marker file records, if there is one.
fn read_marker(path: &Path) -> StoreResult<Option<u64>> {
    let marker = path.join(MARKER_FILE);
    let text = match std::fs::read_to_string(&marker) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(StoreError::Open {
                path: path.to_owned(),
                reason: format!("cannot read {}: {e}", marker.display()),
            })
        }
    };
    text.lines()
        .find_map(|line| line.strip_prefix("checkpoint ")?.trim().parse().ok())
        .map(Some)
        .ok_or_else(|| StoreError::Open {
            path: path.to_owned(),
            reason: format!(
                "{} is corrupt (no `checkpoint` line); restore the directory from a backup or move it aside",
                marker.display()
            ),
        })
}

/// Refuses a store that holds less than the marker says was durable.
fn check_against_marker(
    meta: &sled::Tree,
    config: &StoreConfig,
    durable: Option<u64>,
) -> StoreResult<()> {
    let Some(durable) = durable else {
        return Ok(());
    };
    let db = config.path.join("db");
    let marker = config.path.join(MARKER_FILE);
    if meta.get("format")?.is_none() {
        return Err(StoreError::Open {
            path: config.path.clone(),
            reason: format!(
                "{} holds no cepheus data, yet {} says this directory held a store durable through log seq {durable}: \
                 sled's files are corrupt, truncated or were replaced; restore the directory from a backup or move it aside",
                db.display(),
                marker.display()
            ),
        });
    }
    let checkpoint = meta
        .get(CHECKPOINT_META)?
        .as_deref()
        .and_then(read_be)
        .unwrap_or(0);
    if checkpoint < durable {
        return Err(StoreError::Open {
            path: config.path.clone(),
            reason: format!(
                "sled recovered {} only up to the checkpoint at log seq {checkpoint}, but the one at {durable} was durable \
                 ({}): the file is corrupt or truncated; restore the directory from a backup or move it aside",
                db.display(),
                marker.display()
            ),
        });
    }
    Ok(())
}

/// The layout version of the directory (written as current when new).
fn check_format(meta: &sled::Tree, config: &StoreConfig) -> StoreResult<u64> {
    match meta.get("format")?.as_deref().and_then(read_be) {
        None => {
            meta.insert("format", &codec::be(STORE_FORMAT))?;
            Ok(STORE_FORMAT)
        }
        Some(format @ (1 | STORE_FORMAT)) => Ok(format),
        Some(other) => Err(StoreError::Open {
            path: config.path.clone(),
            reason: format!(
                "the data directory has store format {other}, this build reads formats 1 and {STORE_FORMAT}: upgrade cepheus"
            ),
        }),
    }
}

fn describe_open_error(path: &Path, e: &sled::Error) -> String {
    match e {
        sled::Error::Corruption { at, .. } => format!(
            "sled found corruption{} in {}; restore the directory from a backup or move it aside",
            at.map(|a| format!(" at {a:?}")).unwrap_or_default(),
            path.join("db").display()
        ),
        sled::Error::Io(io) => {
            format!("{io} (check that the directory exists, is writable and the disk has space)")
        }
        other => other.to_string(),
    }
}

/// Group commit: one flush serves every caller whose writes came before
/// it started.
///
/// Flushes run one at a time and are numbered as they start. A caller that
/// arrives while flush `n` runs cannot count on it (its writes may have
/// missed it) and needs flush `n + 1`, which starts only after it arrived;
/// every caller arriving during flush `n` shares that one.
struct GroupCommit {
    /// Number of flushes started.
    started: AtomicU64,
    /// Number of flushes completed successfully, in start order.
    completed: AtomicU64,
    /// The turn to flush.
    turn: tokio::sync::Mutex<()>,
    last_error: Mutex<Option<String>>,
}

impl GroupCommit {
    fn new() -> Self {
        GroupCommit {
            started: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            turn: tokio::sync::Mutex::new(()),
            last_error: Mutex::new(None),
        }
    }

    async fn sync(&self, db: &sled::Db) -> StoreResult<()> {
        let needed = self.started.load(Ordering::Acquire) + 1;
        let _turn = self.turn.lock().await;
        if self.completed.load(Ordering::Acquire) >= needed {
            return Ok(());
        }
        let number = self.started.fetch_add(1, Ordering::AcqRel) + 1;
        // NB: after an I/O error sled may never finish a flush; a bounded
        // wait turns that into an error the caller can answer (503) instead
        // of a request that hangs and holds every later flush.
        let result = match tokio::time::timeout(FLUSH_TIMEOUT, db.flush_async()).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err(format!(
                "no flush finished within {} s",
                FLUSH_TIMEOUT.as_secs()
            )),
        };
        let mut last_error = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(_) => {
                *last_error = None;
                self.completed.store(number, Ordering::Release);
                Ok(())
            }
            Err(e) => {
                let message = format!("flushing the data directory failed: {e}");
                *last_error = Some(message.clone());
                Err(StoreError::Sled(message))
            }
        }
    }
}

/// Longest wait for one flush before it counts as failed.
const FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Implements [`Record`] for a type with its kind name and format version.
macro_rules! record {
    ($t:ty, $kind:literal, $format:literal) => {
        impl $crate::store::codec::Record for $t {
            const KIND: &'static str = $kind;
            const FORMAT: u8 = $format;
        }
    };
}
pub(crate) use record;
