//! Dead letters: events that were rejected or late, with the reason.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::store::codec::{be, decode, encode, read_be};
use crate::store::{record, StoreError, StoreResult};
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

/// The `deadletters` tree.
pub struct DeadLetters {
    tree: sled::Tree,
    /// Identity of each dead letter that a log replay could produce again
    /// (a late event: its key and log position) → its seq.
    ids: sled::Tree,
    /// The seq the next dead letter gets; the lock orders seq assignment
    /// with writes, so a reader paging with `after` never sees a later seq
    /// before an earlier one and skips it.
    next: Mutex<u64>,
}

impl DeadLetters {
    pub(crate) fn open(db: &sled::Db) -> StoreResult<DeadLetters> {
        let tree = db.open_tree("deadletters")?;
        let ids = db.open_tree("deadletter_ids")?;
        let next = tree
            .last()?
            .and_then(|(k, _)| read_be(&k))
            .map_or(1, |s| s + 1);
        Ok(DeadLetters {
            tree,
            ids,
            next: Mutex::new(next),
        })
    }

    /// Appends dead letters (their `seq` is assigned here).
    pub fn append(&self, letters: &[DeadLetter]) -> StoreResult<()> {
        let mut next = self
            .next
            .lock()
            .map_err(|_| StoreError::Sled("dead-letter lock poisoned".into()))?;
        let mut batch = sled::Batch::default();
        let mut seq = *next;
        for letter in letters {
            let stored = StoredDeadLetter {
                reason: letter.reason,
                error: letter.error.clone(),
                key: letter.key.clone(),
                received_at: letter.received_at,
                event: letter.event.to_string(),
            };
            batch.insert(&be(seq), encode(&stored)?);
            seq += 1;
        }
        self.tree.apply_batch(batch)?;
        *next = seq;
        Ok(())
    }

    /// Appends dead letters that a replay of the event log produces again
    /// (late events), each with an identity; one whose identity is held
    /// already is skipped, so a restart does not list it twice.
    pub fn append_once(&self, letters: &[(Vec<u8>, DeadLetter)]) -> StoreResult<()> {
        use sled::transaction::TransactionError;
        use sled::Transactional;
        let mut next = self
            .next
            .lock()
            .map_err(|_| StoreError::Sled("dead-letter lock poisoned".into()))?;
        for (identity, letter) in letters {
            if self.ids.contains_key(identity)? {
                continue;
            }
            let seq = *next;
            let bytes = encode(&StoredDeadLetter {
                reason: letter.reason,
                error: letter.error.clone(),
                key: letter.key.clone(),
                received_at: letter.received_at,
                event: letter.event.to_string(),
            })?;
            // NB: one transaction, recovered whole or not at all.
            (&self.tree, &self.ids)
                .transaction(|(tree, ids)| {
                    tree.insert(&be(seq)[..], bytes.as_slice())?;
                    ids.insert(identity.as_slice(), &be(seq)[..])?;
                    Ok(())
                })
                .map_err(|e: TransactionError<()>| match e {
                    TransactionError::Storage(e) => StoreError::from(e),
                    TransactionError::Abort(()) => {
                        StoreError::Sled("the dead-letter transaction aborted".into())
                    }
                })?;
            *next = seq + 1;
        }
        Ok(())
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
