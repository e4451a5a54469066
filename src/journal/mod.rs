//! The journal: what cepheus accepted, in order — events, alerts and dead
//! letters — with positions, durable before anyone is told (DESIGN §1, §7).
//!
//! ```text
//! ingest ──submit──► sequencer: stamp, dedup, place ──► open group ──► committer: write + fdatasync
//!                        │ routes each event (EventSink)                   │
//!                        ▼                                                 ▼
//!                   entity actors ──alerts, late events──► open group   durable: 202s answered,
//!                                                                       alerts published (DurableGroup)
//! ```
//!
//! [`Journal`] is the one interface the service uses; [`embedded`] is its
//! default implementation, an append-only segment log on local files
//! ([`segment`], [`frame`], [`records`]) with event-id dedup kept off the
//! commit path ([`dedup`]). The Kafka-API log of the scale-out mode is the
//! second implementation (see `docs/journal.md` for what it needs).
//!
//! A place in the journal is `(lsn, index)`: the frame (one group commit)
//! and the event's index among the frame's events. Places only grow, so an
//! entity compares them with the last place it applied to skip what a
//! replay brings again.

pub mod dedup;
pub mod embedded;
pub mod file;
pub mod frame;
pub mod kafka;
#[cfg(test)]
pub mod memfs;
pub mod partition;
pub mod records;
pub mod segment;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use crate::event::Event;
use crate::time::Timestamp;

pub use embedded::{EmbeddedJournal, JournalConfig};
pub use records::{AlertEntry, LetterEntry, LetterReason, Payload, Wanted};

/// Holds a journal's own consumer while the entities are at a limit (the
/// wait the replay's `pace` does).
pub type Pace = Arc<dyn Fn() + Send + Sync>;

/// A future the journal returns (boxed: the trait is used as `dyn Journal`).
pub type JournalFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, JournalError>> + Send + 'a>>;

/// What was accepted, in order: the one interface the service uses for
/// sequencing, dedup, append, group commit and reading back.
///
/// # What an implementation promises
/// - [`Journal::append`] answers only once the events are durable, and
///   routes them to the sink in journal order (not during a replay).
/// - Alerts and dead letters given to [`Journal::append_records`] are
///   handed back as a [`DurableGroup`] once durable, in journal order, and
///   only then.
/// - Positions (`lsn`) only grow; [`Journal::read`] gives what is durable.
///
/// The embedded journal ([`EmbeddedJournal`]) has one position space for
/// all partitions; a Kafka-API journal has one per partition, which is why
/// every event carries its partition (`docs/journal.md`).
pub trait Journal: Send + Sync {
    /// Number of partitions of the key space.
    fn partitions(&self) -> u16;

    /// Appends a request's events and dead letters, routing the events to
    /// `sink`; resolves once they are durable.
    fn append<'a>(
        &'a self,
        submission: Submission,
        sink: &'a dyn EventSink,
    ) -> JournalFuture<'a, Appended>;

    /// Adds alerts and dead letters to the next group commit; returns its
    /// position. They come back as a [`DurableGroup`] once durable.
    fn append_records(
        &self,
        alerts: Vec<AlertEntry>,
        letters: Vec<LetterEntry>,
    ) -> Result<u64, JournalError>;

    /// The position through which every routed event is in the journal (a
    /// checkpoint may record it once the entities applied what they got).
    fn routed_through(&self) -> u64;

    /// Resolves once everything routed so far is durable.
    fn sync_routed(&self) -> JournalFuture<'_, ()>;

    /// The durable position and health.
    fn progress(&self) -> Progress;

    /// The durable position.
    fn durable_lsn(&self) -> u64 {
        self.progress().durable
    }

    /// The oldest position held.
    fn first_lsn(&self) -> u64;

    /// Bytes the journal takes.
    fn bytes(&self) -> u64;

    /// Frames in `from..=through` that are durable, decoded as `wanted` says.
    fn read(
        &self,
        from: u64,
        through: u64,
        wanted: Wanted,
    ) -> Box<dyn Iterator<Item = Result<(u64, Timestamp, Payload), JournalError>> + Send + '_>;

    /// Gives a journal whose events arrive from elsewhere (the Kafka
    /// journal's group consumer) the sink to route them to, in order per
    /// partition. The embedded journal routes in `append` and ignores it.
    fn attach(&self, sink: Arc<dyn EventSink>, pace: Pace) {
        let _ = (sink, pace);
    }

    /// Called once a checkpoint at `through` (a value [`Journal::routed_through`]
    /// gave) is durable: the Kafka journal then lets the group commit the
    /// offsets it covered. The embedded journal needs nothing.
    fn checkpointed(&self, through: u64) {
        let _ = through;
    }

    /// The partitions this instance owns, for a journal shared by a group
    /// of instances (the Kafka journal); `None` for the embedded one, which
    /// owns them all.
    fn ownership(&self) -> Option<Ownership> {
        None
    }

    /// Whether this instance evaluates the entities of `partition` now: it
    /// owns the partition and has restored its state. Timers and clock
    /// advances reach only such entities. Always true for the embedded
    /// journal.
    fn evaluates(&self, partition: u16) -> bool {
        let _ = partition;
        true
    }

    /// Whether snapshots written to the local store must also go to the
    /// journal's changelog ([`Journal::log_snapshots`]).
    fn keeps_changelog(&self) -> bool {
        false
    }

    /// Writes entity snapshots just written to the local store to the
    /// changelog (the Kafka journal's compacted topic, from which another
    /// instance restores a partition it takes over); resolves once the
    /// brokers hold them. Snapshots of partitions this instance does not
    /// own are left out.
    fn log_snapshots(&self, records: Vec<ChangelogRecord>) -> JournalFuture<'_, ()> {
        let _ = records;
        Box::pin(async { Ok(()) })
    }

    /// Gives a journal shared by a group of instances what moves entity
    /// state with partitions; called before [`Journal::attach`].
    fn hand_over(&self, state: Arc<dyn PartitionState>) {
        let _ = state;
    }

    /// Starts a replay: appends stop routing until [`Journal::replay`] has
    /// caught up.
    fn begin_replay(&self);

    /// Routes everything from `from` on to `sink` (also what is appended
    /// meanwhile), calling `pace` between slices; ends the replay.
    fn replay(
        &self,
        from: u64,
        sink: &dyn EventSink,
        pace: &mut dyn FnMut(),
    ) -> Result<u64, JournalError>;

    /// Whether a replay has not caught up yet.
    fn is_replaying(&self) -> bool;

    /// Drops what is no longer needed: before `keep_from`, and older than
    /// `oldest` or beyond `max_bytes`.
    fn retain(
        &self,
        keep_from: u64,
        oldest: Timestamp,
        max_bytes: u64,
    ) -> Result<usize, JournalError>;

    /// Writes what is pending and stops.
    fn close(&self);
}

/// Something went wrong in the journal. Each message says what and where.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JournalError {
    /// A file operation failed.
    #[error("journal I/O error: {0}")]
    Io(String),
    /// A durable frame or file is damaged.
    #[error("the journal file {path} is damaged at byte {offset}: {reason}; restore the data directory from a backup or move it aside")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// Written by another version of cepheus.
    #[error("a {what} has format {found}; this build reads format {expected}: upgrade cepheus")]
    UnknownFormat {
        /// What.
        what: &'static str,
        /// Found.
        found: u32,
        /// Read by this build.
        expected: u32,
    },
    /// A record could not be encoded.
    #[error("cannot encode {0}")]
    Encode(String),
    /// A sync failed: nothing more is accepted until a restart.
    #[error("the journal stopped: {0}")]
    Failed(String),
    /// Writing is failing for now (for example the disk is full).
    #[error("the journal cannot write for now: {0}")]
    Stalled(String),
    /// Not made durable within the wait.
    #[error("not made durable within {0} s")]
    Timeout(u64),
    /// The journal is shutting down.
    #[error("the journal is shutting down")]
    Closed,
}

/// One entity snapshot for the changelog: the entity key and its encoded
/// snapshot (`None`: the entity was deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangelogRecord {
    /// The entity key.
    pub key: String,
    /// The encoded snapshot, as the store holds it.
    pub snapshot: Option<Vec<u8>>,
}

/// What a journal shared by a group of instances needs of the service to
/// move entity state with partitions (`docs/scale-out.md`): the local
/// store's position in each partition's changelog, restoring snapshots read
/// from it, and checkpointing and dropping the entities of partitions taken
/// away. Called from the journal's consumer thread; each call may block.
pub trait PartitionState: Send + Sync {
    /// The changelog offset from which partition `partition` must be read
    /// for the local store to be current (0: from the beginning).
    fn changelog_position(&self, partition: i32) -> Result<i64, String>;

    /// Writes snapshots read from the changelog of `partition` into the
    /// local store, then records `next` as its position there.
    fn restore(
        &self,
        partition: i32,
        records: Vec<ChangelogRecord>,
        next: i64,
    ) -> Result<(), String>;

    /// `partitions` are restored and about to be evaluated here: timers
    /// due while they were elsewhere must fire now.
    fn restored(&self, partitions: &[i32]);

    /// Records `next` as the local store's position in the changelog of
    /// `partition` (after this instance wrote records there itself).
    fn set_changelog_position(&self, partition: i32, next: i64) -> Result<(), String>;

    /// Writes the snapshots of the live entities of `partitions` (locally
    /// and to the changelog) and drops them from memory; answers whether
    /// every one of them could be persisted (if not, the partitions'
    /// offsets must not be committed past the last checkpoint).
    fn release(&self, partitions: &[i32]) -> Result<bool, String>;
}

/// Receives accepted events in journal order: the router.
///
/// # Invariants
/// Called under the journal's sequencer, so two calls never overlap and
/// their order is the journal's order (DESIGN §7: per-key order is the
/// order of acceptance).
pub trait EventSink: Send + Sync {
    /// The events of frame `lsn` at indexes `first..first + events.len()`,
    /// for their own keys and the keys `partition_by` rules give them.
    fn accepted(&self, lsn: u64, first: u32, events: &[Arc<Event>]);

    /// As [`EventSink::accepted`], for the events' own keys only: a journal
    /// shared by a group sends the other keys' share through its
    /// repartition topic ([`EventSink::repartitioned`] on their owner).
    fn accepted_own(&self, lsn: u64, first: u32, events: &[Arc<Event>]) {
        self.accepted(lsn, first, events);
    }

    /// The keys other than its own that `partition_by` rules give `event`.
    fn partition_routes(&self, event: &Event) -> Vec<String> {
        let _ = event;
        Vec::new()
    }

    /// `event`, at `source` (partition, offset) of the events topic, for
    /// `key`, which a `partition_by` rule gives it.
    fn repartitioned(&self, key: &str, source: (u16, u64), event: Arc<Event>) {
        let _ = (key, source, event);
    }
}

/// One request's events, to append together.
#[derive(Debug, Default)]
pub struct Submission {
    /// Valid events, with their index in the request.
    pub events: Vec<Event>,
    /// Indexes (in `events`) of the events sent without a time: they get
    /// the acceptance time.
    pub untimed: Vec<usize>,
    /// Dead letters of the request's invalid events.
    pub letters: Vec<LetterEntry>,
}

/// What became of a submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Events appended.
    pub accepted: usize,
    /// Events dropped as repeats of an id accepted before.
    pub duplicates: usize,
    /// The frame they went into.
    pub lsn: u64,
}

/// Alerts and dead letters of a frame that is now durable: they may be
/// published.
#[derive(Debug, Clone, Default)]
pub struct DurableGroup {
    /// The frame.
    pub lsn: u64,
    /// Its alerts, in seq order.
    pub alerts: Vec<AlertEntry>,
    /// Its dead letters.
    pub letters: Vec<LetterEntry>,
    /// The seq of the first of `letters`, when the journal numbers them
    /// itself (the Kafka journal: the dead-letter topic's offset + 1, the
    /// same on every instance); `None`: the next seqs.
    pub letters_at: Option<u64>,
}

/// The partitions a group member owns (`/readyz`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Ownership {
    /// Partitions assigned to this instance.
    pub assigned: Vec<i32>,
    /// Assigned partitions not yet read up to their end: their entities
    /// are still catching up.
    pub restoring: Vec<i32>,
    /// Rebalances (assignments) since the start.
    pub rebalances: u64,
}

/// How the journal is doing, as waiters and `/readyz` see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// Every frame up to this LSN is durable.
    pub durable: u64,
    /// Writing fails for now (retried): new work is refused.
    pub stalled: Option<String>,
    /// A sync failed: nothing more is accepted until a restart.
    pub failed: Option<String>,
}
