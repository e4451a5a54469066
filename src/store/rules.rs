//! Stored rules: the current version of each, and every version.

use serde::{Deserialize, Serialize};

use crate::rules::RuleDocument;
use crate::store::codec::{be, decode, encode};
use crate::store::{record, StoreResult};
use crate::time::Timestamp;

/// A rule as stored: its document and bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRule {
    /// The document.
    pub document: RuleDocument,
    /// 1 for a new rule, +1 per replacement.
    pub version: u64,
    /// When version 1 was created.
    pub created_at: Timestamp,
    /// When this version was stored.
    pub updated_at: Timestamp,
    /// The oldest version whose per-key state this version continues (its
    /// own version unless it replaced the previous one with `keep`).
    #[serde(default)]
    pub state_since: u64,
}
record!(StoredRule, "rule", 1);

impl StoredRule {
    /// `state_since`, reading a record written before the field existed as
    /// "its own version".
    pub fn state_since(&self) -> u64 {
        if self.state_since == 0 {
            self.version
        } else {
            self.state_since
        }
    }
}

/// The `rules` and `rule_versions` trees.
pub struct RuleStore {
    current: sled::Tree,
    versions: sled::Tree,
}

impl RuleStore {
    pub(crate) fn open(db: &sled::Db) -> StoreResult<RuleStore> {
        Ok(RuleStore {
            current: db.open_tree("rules")?,
            versions: db.open_tree("rule_versions")?,
        })
    }

    /// Stores `rule` as the current version of its id and in the history.
    pub fn put(&self, rule: &StoredRule) -> StoreResult<()> {
        let bytes = encode(rule)?;
        self.versions
            .insert(version_key(&rule.document.id, rule.version), bytes.clone())?;
        self.current.insert(rule.document.id.as_bytes(), bytes)?;
        Ok(())
    }

    /// The current version of rule `id`.
    pub fn get(&self, id: &str) -> StoreResult<Option<StoredRule>> {
        match self.current.get(id.as_bytes())? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Every current rule, by id.
    pub fn list(&self) -> StoreResult<Vec<StoredRule>> {
        self.current.iter().map(|item| decode(&item?.1)).collect()
    }

    /// Removes rule `id` (its history is kept, so a re-created rule
    /// continues its version numbers). Returns whether it existed.
    pub fn delete(&self, id: &str) -> StoreResult<bool> {
        Ok(self.current.remove(id.as_bytes())?.is_some())
    }

    /// Every stored version of rule `id`, oldest first.
    pub fn versions(&self, id: &str) -> StoreResult<Vec<StoredRule>> {
        let mut prefix = id.as_bytes().to_vec();
        prefix.push(0);
        self.versions
            .scan_prefix(prefix)
            .map(|item| decode(&item?.1))
            .collect()
    }

    /// Version `version` of rule `id`.
    pub fn version(&self, id: &str, version: u64) -> StoreResult<Option<StoredRule>> {
        match self.versions.get(version_key(id, version))? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// The highest version ever stored for `id` (0 if none).
    pub fn latest_version(&self, id: &str) -> StoreResult<u64> {
        Ok(self.versions(id)?.last().map_or(0, |r| r.version))
    }
}

fn version_key(id: &str, version: u64) -> Vec<u8> {
    let mut k = id.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&be(version));
    k
}
