//! The alert log: durable, gap-free, one copy per alert id.
//!
//! `seq` is assigned under a lock in write order, and sled recovers a
//! prefix of its writes, so after any crash the seqs present are exactly
//! `1..=last` (DESIGN §5: a gap-free cursor). The `alert_ids` index makes a
//! replayed match (same deterministic id) a no-op instead of a second alert.

use std::sync::Mutex;

use sled::Transactional;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::engine::Alert;
use crate::event::EventRef;
use crate::rules::Severity;
use crate::store::codec::{be, decode, encode, read_be};
use crate::store::{record, StoreError, StoreResult};
use crate::time::Timestamp;

/// An alert as stored and served (DESIGN §5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "id": "5f0c3a1d9b8e7f6a5f0c3a1d9b8e7f6a", "seq": 1874, "rule": "brute-force-login",
    "rule_version": 3, "key": "acct-42", "severity": "high",
    "time": "2026-01-01T00:03:12.000Z", "detected_at": "2026-11-27T09:00:00.101Z",
    "message": "acct-42: 4 failed logins, then a success from 10.0.0.9",
    "events": [{"id": "e-1001", "type": "login_failed", "time": "2026-01-01T00:00:01.123Z", "ordinal": 1}],
    "values": {"failures.count": 4, "success.count": 1}
}))]
pub struct StoredAlert {
    /// Deterministic for rule, rule version, key and match.
    pub id: String,
    /// Gap-free position in the alert log.
    pub seq: u64,
    /// The rule's id.
    pub rule: String,
    /// The rule version that produced it.
    pub rule_version: u64,
    /// The entity key.
    pub key: String,
    /// Severity.
    pub severity: Severity,
    /// Event time at which the pattern completed.
    pub time: Timestamp,
    /// Wall time at which cepheus detected it.
    pub detected_at: Timestamp,
    /// The rendered message.
    pub message: String,
    /// The events that explain it, oldest first.
    pub events: Vec<EventRef>,
    /// Named values that explain it.
    pub values: Map<String, Value>,
    /// Produced by a rule in shadow mode.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
}

/// The stored form: `values` as JSON text so numbers round-trip exactly.
#[derive(Serialize, Deserialize)]
struct AlertRecord {
    id: String,
    rule: String,
    rule_version: u64,
    key: String,
    severity: Severity,
    time: Timestamp,
    detected_at: Timestamp,
    message: String,
    events: Vec<EventRef>,
    values: String,
    shadow: bool,
}
record!(AlertRecord, "alert", 1);

/// Which alerts a query or subscription wants.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct AlertFilter {
    /// Only this rule.
    pub rule: Option<String>,
    /// Only this key.
    pub key: Option<String>,
    /// Only this severity or higher.
    pub severity: Option<Severity>,
    /// Include shadow alerts.
    pub shadow: bool,
}

impl AlertFilter {
    /// Whether `alert` passes.
    pub fn accepts(&self, alert: &StoredAlert) -> bool {
        self.rule.as_deref().is_none_or(|r| r == alert.rule)
            && self.key.as_deref().is_none_or(|k| k == alert.key)
            && self.severity.is_none_or(|s| alert.severity >= s)
            && (self.shadow || !alert.shadow)
    }
}

/// The `alerts` and `alert_ids` trees.
pub struct AlertLog {
    alerts: sled::Tree,
    ids: sled::Tree,
    /// The last seq written; the lock orders seq assignment with writes.
    last: Mutex<u64>,
}

impl AlertLog {
    pub(crate) fn open(db: &sled::Db) -> StoreResult<AlertLog> {
        let alerts = db.open_tree("alerts")?;
        let ids = db.open_tree("alert_ids")?;
        let last = alerts.last()?.and_then(|(k, _)| read_be(&k)).unwrap_or(0);
        Ok(AlertLog {
            alerts,
            ids,
            last: Mutex::new(last),
        })
    }

    /// Appends the alerts whose ids are new, assigning their seqs; returns
    /// the ones appended (a replayed match returns nothing).
    pub fn append(
        &self,
        alerts: &[Alert],
        detected_at: Timestamp,
    ) -> StoreResult<Vec<StoredAlert>> {
        let mut last = self
            .last
            .lock()
            .map_err(|_| StoreError::Sled("alert log lock poisoned".into()))?;
        let mut appended = Vec::with_capacity(alerts.len());
        for alert in alerts {
            if self.ids.contains_key(alert.id.as_bytes())? {
                continue;
            }
            let seq = *last + 1;
            let stored = StoredAlert {
                id: alert.id.clone(),
                seq,
                rule: alert.rule.to_string(),
                rule_version: alert.rule_version,
                key: alert.key.clone(),
                severity: alert.severity,
                time: alert.time,
                detected_at,
                message: alert.message.clone(),
                events: alert.events.clone(),
                values: alert.values.clone(),
                shadow: alert.mode == crate::rules::Mode::Shadow,
            };
            // NB: the alert and its id in one transaction, which sled
            // recovers whole or not at all. Written one after the other, a
            // crash between them kept the alert without its id, and the
            // replayed match was appended again under a new seq.
            let record = encode(&to_record(&stored))?;
            (&self.alerts, &self.ids)
                .transaction(|(alerts, ids)| {
                    alerts.insert(&be(seq)[..], record.as_slice())?;
                    ids.insert(alert.id.as_bytes(), &be(seq)[..])?;
                    Ok(())
                })
                .map_err(|e: sled::transaction::TransactionError<()>| match e {
                    sled::transaction::TransactionError::Storage(e) => StoreError::from(e),
                    sled::transaction::TransactionError::Abort(()) => {
                        StoreError::Sled("the alert transaction aborted".into())
                    }
                })?;
            *last = seq;
            appended.push(stored);
        }
        Ok(appended)
    }

    /// The last seq in the log (0 when empty).
    pub fn last_seq(&self) -> u64 {
        self.last.lock().map(|l| *l).unwrap_or(0)
    }

    /// The alert at `seq`.
    pub fn get(&self, seq: u64) -> StoreResult<Option<StoredAlert>> {
        match self.alerts.get(be(seq))? {
            Some(bytes) => Ok(Some(from_record(seq, decode(&bytes)?))),
            None => Ok(None),
        }
    }

    /// The alert with `id`.
    pub fn get_by_id(&self, id: &str) -> StoreResult<Option<StoredAlert>> {
        match self.ids.get(id.as_bytes())?.as_deref().and_then(read_be) {
            Some(seq) => self.get(seq),
            None => Ok(None),
        }
    }

    /// Up to `limit` alerts with seq in `(after, through]` passing `filter`,
    /// oldest first, looking at no more than `scan_limit` alerts. Returns the
    /// alerts and the seq to continue after.
    pub fn query(
        &self,
        filter: &AlertFilter,
        after: u64,
        through: u64,
        limit: usize,
        scan_limit: usize,
    ) -> StoreResult<(Vec<StoredAlert>, u64)> {
        let mut found = Vec::new();
        let mut next = after;
        for item in self
            .alerts
            .range(be(after.saturating_add(1))..=be(through))
            .take(scan_limit)
        {
            let (k, v) = item?;
            let seq = read_be(&k).unwrap_or(0);
            let alert = from_record(seq, decode(&v)?);
            next = seq;
            if filter.accepts(&alert) {
                found.push(alert);
                if found.len() >= limit {
                    break;
                }
            }
        }
        Ok((found, next))
    }

    /// Number of alerts held.
    pub fn len(&self) -> usize {
        self.alerts.len()
    }

    /// True when the log is empty.
    pub fn is_empty(&self) -> bool {
        self.alerts.is_empty()
    }
}

fn to_record(a: &StoredAlert) -> AlertRecord {
    AlertRecord {
        id: a.id.clone(),
        rule: a.rule.clone(),
        rule_version: a.rule_version,
        key: a.key.clone(),
        severity: a.severity,
        time: a.time,
        detected_at: a.detected_at,
        message: a.message.clone(),
        events: a.events.clone(),
        values: Value::Object(a.values.clone()).to_string(),
        shadow: a.shadow,
    }
}

fn from_record(seq: u64, r: AlertRecord) -> StoredAlert {
    StoredAlert {
        id: r.id,
        seq,
        rule: r.rule,
        rule_version: r.rule_version,
        key: r.key,
        severity: r.severity,
        time: r.time,
        detected_at: r.detected_at,
        message: r.message,
        events: r.events,
        values: match serde_json::from_str(&r.values) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        },
        shadow: r.shadow,
    }
}
