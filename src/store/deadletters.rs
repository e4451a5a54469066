//! Dead letters' queryable copy: rejected and late events with the
//! reason, by seq, in sled.
//!
//! Dead letters are made durable by the journal; the publisher writes them
//! here once durable, numbering them as it goes. The numbering restarts
//! from the view position recorded at each checkpoint, so writing again
//! what the journal holds after it (after a crash) gives every letter the
//! same seq: idempotent.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::journal::{LetterEntry, LetterReason};
use crate::store::codec::{be, decode, encode, read_be};
use crate::store::{record, StoreResult};
use crate::time::Timestamp;

/// Why an event became a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterReason {
    /// The event failed validation.
    Invalid,
    /// The event was older than its entity's watermark.
    Late,
    /// The event was late for a rule that evaluates late events, but every
    /// window of that rule it belongs to had already closed.
    WindowClosed,
}

/// A rejected or late event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeadLetter {
    /// Position in the dead-letter log.
    pub seq: u64,
    /// Why.
    pub reason: DeadLetterReason,
    /// The details, a sentence.
    pub error: String,
    /// The entity key, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// When cepheus received it.
    #[schema(value_type = String, format = DateTime)]
    pub received_at: Timestamp,
    /// The event as received (invalid) or as accepted (late).
    pub event: Value,
}

/// Stored form (the JSON value is kept as text: MessagePack cannot carry
/// every JSON number exactly, and dead letters must show what was sent).
#[derive(Serialize, Deserialize)]
struct StoredDeadLetter {
    reason: DeadLetterReason,
    error: String,
    key: Option<String>,
    received_at: Timestamp,
    event: String,
}
record!(StoredDeadLetter, "dead letter", 1);

impl From<LetterReason> for DeadLetterReason {
    fn from(reason: LetterReason) -> Self {
        match reason {
            LetterReason::Invalid => DeadLetterReason::Invalid,
            LetterReason::Late => DeadLetterReason::Late,
            LetterReason::WindowClosed => DeadLetterReason::WindowClosed,
        }
    }
}

/// The `deadletters` tree.
pub struct DeadLetters {
    tree: sled::Tree,
}

impl DeadLetters {
    pub(crate) fn open(db: &sled::Db) -> StoreResult<DeadLetters> {
        Ok(DeadLetters {
            tree: db.open_tree("deadletters")?,
        })
    }

    /// Writes durable dead letters with seqs from `first` on.
    pub fn materialize(&self, first: u64, letters: &[LetterEntry]) -> StoreResult<()> {
        for (seq, letter) in (first..).zip(letters) {
            let stored = StoredDeadLetter {
                reason: letter.reason.into(),
                error: letter.error.clone(),
                key: letter.key.clone(),
                received_at: letter.received_at,
                event: letter.event.clone(),
            };
            self.tree.insert(be(seq), encode(&stored)?)?;
        }
        Ok(())
    }

    /// Removes the oldest dead letters received before `oldest`, at most
    /// `budget`, keeping the newest always; returns how many were removed.
    pub fn remove_older_than(&self, oldest: Timestamp, budget: usize) -> StoreResult<usize> {
        let last = self.last_seq()?;
        let mut removed = 0;
        for item in self.tree.iter().take(budget) {
            let (k, v) = item?;
            let stored: StoredDeadLetter = decode(&v)?;
            if read_be(&k).unwrap_or(0) >= last || stored.received_at >= oldest {
                break;
            }
            self.tree.remove(k)?;
            removed += 1;
        }
        Ok(removed)
    }

    /// The last seq stored (0 when empty).
    pub fn last_seq(&self) -> StoreResult<u64> {
        Ok(self
            .tree
            .last()?
            .and_then(|(k, _)| read_be(&k))
            .unwrap_or(0))
    }

    /// Dead letters with seq `> after`, oldest first, at most `limit`.
    pub fn list(&self, after: u64, limit: usize) -> StoreResult<Vec<DeadLetter>> {
        self.tree
            .range(be(after.saturating_add(1))..)
            .take(limit)
            .map(|item| {
                let (k, v) = item?;
                let stored: StoredDeadLetter = decode(&v)?;
                Ok(DeadLetter {
                    seq: read_be(&k).unwrap_or(0),
                    reason: stored.reason,
                    error: stored.error,
                    key: stored.key,
                    received_at: stored.received_at,
                    event: serde_json::from_str(&stored.event)
                        .unwrap_or(Value::String(stored.event)),
                })
            })
            .collect()
    }

    /// Number held.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// True when none is held.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }
}
