//! What store format 1 held that the journal holds now: the event log tree
//! (one record per accepted batch) and the tree of event ids. Read once, by
//! the migration of a format-1 data directory (`crate::migrate`), then
//! dropped.

use serde::{Deserialize, Serialize};

use crate::event::Event;
use crate::store::codec::{decode, read_be};
use crate::store::{record, Store, StoreResult};
use crate::time::Timestamp;

/// One accepted batch, as format 1 logged it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// The accepted events, normalized (time filled in), in request order.
    pub events: Vec<Event>,
    /// Wall time of acceptance.
    pub accepted_at: Timestamp,
}
record!(LogRecord, "event log batch", 1);

/// The trees format 1 kept and format 2 does not.
pub const LEGACY_TREES: [&str; 3] = ["log", "dedup", "deadletter_ids"];

impl Store {
    /// The format-1 event log's records in seq order.
    pub fn legacy_log(&self) -> StoreResult<impl Iterator<Item = StoreResult<(u64, LogRecord)>>> {
        let tree = self.db().open_tree("log")?;
        Ok(tree.iter().map(|item| {
            let (k, v) = item?;
            Ok((read_be(&k).unwrap_or(0), decode::<LogRecord>(&v)?))
        }))
    }

    /// The format-1 event ids: (key, id, accepted at).
    pub fn legacy_ids(
        &self,
    ) -> StoreResult<impl Iterator<Item = StoreResult<(String, String, Timestamp)>>> {
        let tree = self.db().open_tree("dedup")?;
        Ok(tree.iter().filter_map(|item| {
            let (k, v) = match item {
                Ok(kv) => kv,
                Err(e) => return Some(Err(e.into())),
            };
            let split = k.iter().position(|&b| b == 0)?;
            let key = String::from_utf8(k[..split].to_vec()).ok()?;
            let id = String::from_utf8(k[split + 1..].to_vec()).ok()?;
            let at = Timestamp(read_be(&v)? as i64);
            Some(Ok((key, id, at)))
        }))
    }

    /// Drops the format-1 trees.
    pub fn drop_legacy_trees(&self) -> StoreResult<()> {
        for name in LEGACY_TREES {
            self.db().drop_tree(name)?;
        }
        Ok(())
    }
}
