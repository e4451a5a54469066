//! What delivery keeps on disk: receivers and routes (versioned like
//! rules), each receiver's cursor over the alert log, the notifications it
//! could not deliver, the alerts it lost to retention, and silences.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `receivers` | name | the current version of a receiver |
//! | `receiver_versions` | name ++ 0x00 ++ version (u64 BE) | every version |
//! | `routes` | `current` | the current route list |
//! | `route_versions` | version (u64 BE) | every version |
//! | `delivery_cursors` | receiver name | the seq through which the receiver is done |
//! | `delivery_failures` | receiver ++ 0x00 ++ id (u64 BE) | a parked notification |
//! | `delivery_lost` | receiver ++ 0x00 ++ first seq (u64 BE) | alerts lost to retention |
//! | `silences` | id | a silence |
//!
//! NB: receivers hold their secrets here in clear (they are needed to sign
//! and send): the data directory must be protected like the config file.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::delivery::config::{ReceiverSpec, RouteSpec};
use crate::delivery::silence::Silence;
use crate::store::codec::{be, decode, encode, read_be};
use crate::store::{record, StoreResult};
use crate::time::Timestamp;

/// A receiver as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredReceiver {
    /// What the user wrote (secrets included).
    pub spec: ReceiverSpec,
    /// 1 when created, +1 per replacement.
    pub version: u64,
    /// When version 1 was created.
    pub created_at: Timestamp,
    /// When this version was stored.
    pub updated_at: Timestamp,
}
record!(StoredReceiver, "receiver", 1);

/// The route list as stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoredRoutes {
    /// The routes, in order.
    pub routes: Vec<RouteSpec>,
    /// 0 before any was stored, +1 per replacement.
    pub version: u64,
    /// When this version was stored.
    pub updated_at: Timestamp,
}
record!(StoredRoutes, "routes", 1);

/// A notification parked after its last failed attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FailedDelivery {
    /// Its id (per receiver).
    pub id: u64,
    /// Seqs of its alerts, in the alert log.
    pub seqs: Vec<u64>,
    /// Ids of its alerts.
    pub alert_ids: Vec<String>,
    /// Attempts made.
    pub attempts: u32,
    /// What the last attempt got.
    pub last_error: String,
    /// When it was parked.
    pub failed_at: Timestamp,
}
record!(FailedDelivery, "failed delivery", 1);

/// Alerts a receiver never saw: retention removed them from the alert log
/// before its cursor reached them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LostAlerts {
    /// The first seq lost.
    pub first_seq: u64,
    /// The last seq lost.
    pub last_seq: u64,
    /// When the loss was found.
    pub noticed_at: Timestamp,
}
record!(LostAlerts, "lost alerts", 1);

record!(Silence, "silence", 1);

/// The delivery trees.
pub struct DeliveryStore {
    db: sled::Db,
    receivers: sled::Tree,
    receiver_versions: sled::Tree,
    routes: sled::Tree,
    route_versions: sled::Tree,
    cursors: sled::Tree,
    failures: sled::Tree,
    lost: sled::Tree,
    silences: sled::Tree,
}

fn keyed(name: &str, n: u64) -> Vec<u8> {
    let mut k = name.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&be(n));
    k
}

fn prefix(name: &str) -> Vec<u8> {
    let mut k = name.as_bytes().to_vec();
    k.push(0);
    k
}

impl DeliveryStore {
    pub(crate) fn open(db: &sled::Db) -> StoreResult<DeliveryStore> {
        Ok(DeliveryStore {
            db: db.clone(),
            receivers: db.open_tree("receivers")?,
            receiver_versions: db.open_tree("receiver_versions")?,
            routes: db.open_tree("routes")?,
            route_versions: db.open_tree("route_versions")?,
            cursors: db.open_tree("delivery_cursors")?,
            failures: db.open_tree("delivery_failures")?,
            lost: db.open_tree("delivery_lost")?,
            silences: db.open_tree("silences")?,
        })
    }

    /// Stores a receiver version. A new receiver (`cursor` given) starts
    /// its cursor there (the last alert published: it gets the alerts after
    /// it), replacing any left by a receiver of the same name removed
    /// before; a replaced one keeps its cursor.
    pub fn put_receiver(&self, receiver: &StoredReceiver, cursor: Option<u64>) -> StoreResult<()> {
        let bytes = encode(receiver)?;
        let name = &receiver.spec.name;
        if let Some(cursor) = cursor {
            self.cursors.insert(name.as_bytes(), &be(cursor))?;
        }
        self.receiver_versions
            .insert(keyed(name, receiver.version), bytes.clone())?;
        self.receivers.insert(name.as_bytes(), bytes)?;
        Ok(())
    }

    /// The current version of receiver `name`.
    pub fn receiver(&self, name: &str) -> StoreResult<Option<StoredReceiver>> {
        self.receivers
            .get(name.as_bytes())?
            .map(|b| decode(&b))
            .transpose()
    }

    /// Every receiver, by name.
    pub fn receivers(&self) -> StoreResult<Vec<StoredReceiver>> {
        self.receivers.iter().map(|i| decode(&i?.1)).collect()
    }

    /// Every stored version of receiver `name`, oldest first.
    pub fn receiver_versions(&self, name: &str) -> StoreResult<Vec<StoredReceiver>> {
        self.receiver_versions
            .scan_prefix(prefix(name))
            .values()
            .map(|v| decode(&v?))
            .collect()
    }

    /// The highest version ever stored for receiver `name` (0 if none).
    pub fn latest_receiver_version(&self, name: &str) -> StoreResult<u64> {
        Ok(self
            .receiver_versions
            .scan_prefix(prefix(name))
            .keys()
            .last()
            .transpose()?
            .and_then(|k| read_be(&k[name.len() + 1..]))
            .unwrap_or(0))
    }

    /// Removes receiver `name` with its cursor, failures and losses (its
    /// versions are kept, so a re-created receiver continues their
    /// numbers). Returns whether it existed.
    pub fn delete_receiver(&self, name: &str) -> StoreResult<bool> {
        let existed = self.receivers.remove(name.as_bytes())?.is_some();
        self.cursors.remove(name.as_bytes())?;
        for tree in [&self.failures, &self.lost] {
            for key in tree.scan_prefix(prefix(name)).keys() {
                tree.remove(key?)?;
            }
        }
        Ok(existed)
    }

    /// The current routes.
    pub fn routes(&self) -> StoreResult<StoredRoutes> {
        Ok(self
            .routes
            .get("current")?
            .map(|b| decode(&b))
            .transpose()?
            .unwrap_or_default())
    }

    /// Stores a route list version.
    pub fn put_routes(&self, routes: &StoredRoutes) -> StoreResult<()> {
        let bytes = encode(routes)?;
        self.route_versions
            .insert(be(routes.version), bytes.clone())?;
        self.routes.insert("current", bytes)?;
        Ok(())
    }

    /// Version `version` of the routes.
    pub fn route_version(&self, version: u64) -> StoreResult<Option<StoredRoutes>> {
        self.route_versions
            .get(be(version))?
            .map(|b| decode(&b))
            .transpose()
    }

    /// The seq through which receiver `name` is done.
    pub fn cursor(&self, name: &str) -> StoreResult<Option<u64>> {
        Ok(self
            .cursors
            .get(name.as_bytes())?
            .as_deref()
            .and_then(read_be))
    }

    /// Moves receiver `name`'s cursor (durable with the store's next
    /// flush; until then a crash only sends alerts again).
    pub fn set_cursor(&self, name: &str, seq: u64) -> StoreResult<()> {
        self.cursors.insert(name.as_bytes(), &be(seq))?;
        Ok(())
    }

    /// Parks a failed notification, giving it its id; keeps at most `max`
    /// per receiver, removing the oldest. Returns the id and how many old
    /// ones were removed.
    pub fn park(
        &self,
        name: &str,
        mut failure: FailedDelivery,
        max: usize,
    ) -> StoreResult<(u64, usize)> {
        failure.id = self.db.generate_id()?;
        self.failures
            .insert(keyed(name, failure.id), encode(&failure)?)?;
        let mut removed = 0;
        let held = self.failures.scan_prefix(prefix(name)).count();
        for key in self
            .failures
            .scan_prefix(prefix(name))
            .keys()
            .take(held.saturating_sub(max.max(1)))
        {
            self.failures.remove(key?)?;
            removed += 1;
        }
        Ok((failure.id, removed))
    }

    /// Receiver `name`'s parked notifications, oldest first.
    pub fn failures(&self, name: &str) -> StoreResult<Vec<FailedDelivery>> {
        self.failures
            .scan_prefix(prefix(name))
            .values()
            .map(|v| decode(&v?))
            .collect()
    }

    /// One parked notification.
    pub fn failure(&self, name: &str, id: u64) -> StoreResult<Option<FailedDelivery>> {
        self.failures
            .get(keyed(name, id))?
            .map(|b| decode(&b))
            .transpose()
    }

    /// Replaces a parked notification (after a failed re-send).
    pub fn update_failure(&self, name: &str, failure: &FailedDelivery) -> StoreResult<()> {
        self.failures
            .insert(keyed(name, failure.id), encode(failure)?)?;
        Ok(())
    }

    /// Removes a parked notification; returns whether it was there.
    pub fn remove_failure(&self, name: &str, id: u64) -> StoreResult<bool> {
        Ok(self.failures.remove(keyed(name, id))?.is_some())
    }

    /// Records alerts lost by receiver `name`.
    pub fn record_lost(&self, name: &str, lost: &LostAlerts) -> StoreResult<()> {
        self.lost
            .insert(keyed(name, lost.first_seq), encode(lost)?)?;
        Ok(())
    }

    /// Receiver `name`'s lost alerts, oldest first.
    pub fn lost(&self, name: &str) -> StoreResult<Vec<LostAlerts>> {
        self.lost
            .scan_prefix(prefix(name))
            .values()
            .map(|v| decode(&v?))
            .collect()
    }

    /// A new id (unique in the store, across restarts).
    pub fn new_id(&self) -> StoreResult<u64> {
        Ok(self.db.generate_id()?)
    }

    /// Stores a silence.
    pub fn put_silence(&self, silence: &Silence) -> StoreResult<()> {
        self.silences
            .insert(silence.id.as_bytes(), encode(silence)?)?;
        Ok(())
    }

    /// Removes a silence.
    pub fn remove_silence(&self, id: &str) -> StoreResult<()> {
        self.silences.remove(id.as_bytes())?;
        Ok(())
    }

    /// Every stored silence.
    pub fn silences(&self) -> StoreResult<Vec<Silence>> {
        self.silences.iter().values().map(|v| decode(&v?)).collect()
    }
}
