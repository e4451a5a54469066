//! The alert log's queryable copy: alerts by seq and by id, in sled.
//!
//! Alerts are made durable by the journal (each carries its gap-free seq,
//! assigned before it is journalled); once durable, the publisher writes
//! them here (plain inserts, no transaction, no flush of their own) and
//! only then broadcasts them, so REST sees every alert a subscriber has
//! received. Writes here are idempotent (an alert is keyed by its seq), so
//! after a crash the publisher simply writes again what the journal holds
//! after the last checkpoint's view position.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::event::EventRef;
use crate::journal::AlertEntry;
use crate::rules::Severity;
use crate::store::codec::{be, decode, encode, read_be};
use crate::store::{record, StoreResult};
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
    /// `firing`, or `resolved` once its pattern came to its natural end
    /// (and always on a resolution entry, which carries `resolves`).
    #[serde(default)]
    pub state: AlertState,
    /// On a resolution entry: the id of the alert it resolves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolves: Option<String>,
    /// On a resolved alert: when, by what, and the resolution's entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<Resolved>,
    /// Muted by a silence active when it was detected: stored, not
    /// delivered to receivers nor to subscribers that do not ask for it.
    /// NB: not stored with the alert; set when it is served, from the
    /// silences (`crate::delivery`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub silenced: bool,
}

/// Whether an alert's pattern still holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// Fired and not resolved (patterns without a natural end stay firing).
    #[default]
    Firing,
    /// Its pattern ended: the expected event came, the aggregate fell back.
    Resolved,
}

/// How a firing alert was resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Resolved {
    /// Event time of the resolution.
    pub time: Timestamp,
    /// The event that resolved it; none when time alone did (a window's
    /// entries left it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<EventRef>,
    /// The resolution's entry in the alert log.
    pub seq: u64,
    /// The resolution entry's id.
    pub id: String,
}

impl StoredAlert {
    /// The served form of a journalled alert.
    pub fn from_entry(e: AlertEntry) -> StoredAlert {
        StoredAlert {
            id: e.id,
            seq: e.seq,
            rule: e.rule,
            rule_version: e.rule_version,
            key: e.key,
            severity: e.severity,
            time: e.time,
            detected_at: e.detected_at,
            message: e.message,
            events: e.events,
            values: match serde_json::from_str(&e.values) {
                Ok(Value::Object(m)) => m,
                _ => Map::new(),
            },
            shadow: e.shadow,
            state: if e.resolves.is_some() {
                AlertState::Resolved
            } else {
                AlertState::Firing
            },
            resolves: e.resolves,
            resolved: None,
            silenced: false,
        }
    }
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
    #[serde(default)]
    resolves: Option<String>,
    #[serde(default)]
    resolved: Option<Resolved>,
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
    /// Include silenced alerts.
    pub silenced: bool,
}

impl AlertFilter {
    /// Whether `alert` passes.
    pub fn accepts(&self, alert: &StoredAlert) -> bool {
        self.rule.as_deref().is_none_or(|r| r == alert.rule)
            && self.key.as_deref().is_none_or(|k| k == alert.key)
            && self.severity.is_none_or(|s| alert.severity >= s)
            && (self.shadow || !alert.shadow)
            && (self.silenced || !alert.silenced)
    }
}

/// The `alerts` and `alert_ids` trees.
pub struct AlertLog {
    alerts: sled::Tree,
    ids: sled::Tree,
}

impl AlertLog {
    pub(crate) fn open(db: &sled::Db) -> StoreResult<AlertLog> {
        Ok(AlertLog {
            alerts: db.open_tree("alerts")?,
            ids: db.open_tree("alert_ids")?,
        })
    }

    /// Writes durable alerts (idempotent: keyed by their seq).
    pub fn materialize(&self, alerts: &[AlertEntry]) -> StoreResult<()> {
        for alert in alerts {
            let record = AlertRecord {
                id: alert.id.clone(),
                rule: alert.rule.clone(),
                rule_version: alert.rule_version,
                key: alert.key.clone(),
                severity: alert.severity,
                time: alert.time,
                detected_at: alert.detected_at,
                message: alert.message.clone(),
                events: alert.events.clone(),
                values: alert.values.clone(),
                shadow: alert.shadow,
                resolves: alert.resolves.clone(),
                resolved: None,
            };
            // NB: the alert before its id: a lookup by id never finds a seq
            // whose alert is missing (sled recovers a prefix of the writes).
            self.alerts.insert(be(alert.seq), encode(&record)?)?;
            self.ids.insert(alert.id.as_bytes(), &be(alert.seq)[..])?;
            if let Some(firing) = &alert.resolves {
                self.mark_resolved(firing, alert)?;
            }
        }
        Ok(())
    }

    /// Marks the alert `firing` resolved by the entry `resolution`
    /// (idempotent; nothing when retention already removed it).
    fn mark_resolved(&self, firing: &str, resolution: &AlertEntry) -> StoreResult<()> {
        let Some(seq) = self
            .ids
            .get(firing.as_bytes())?
            .as_deref()
            .and_then(read_be)
        else {
            return Ok(());
        };
        let Some(bytes) = self.alerts.get(be(seq))? else {
            return Ok(());
        };
        let mut record: AlertRecord = decode(&bytes)?;
        record.resolved = Some(Resolved {
            time: resolution.time,
            event: resolution.events.first().cloned(),
            seq: resolution.seq,
            id: resolution.id.clone(),
        });
        self.alerts.insert(be(seq), encode(&record)?)?;
        Ok(())
    }

    /// The first seq held (`last_seq() + 1` when none is).
    pub fn first_seq(&self) -> StoreResult<u64> {
        match self.alerts.first()? {
            Some((k, _)) => Ok(read_be(&k).unwrap_or(0)),
            None => Ok(self.last_seq()? + 1),
        }
    }

    /// Removes the oldest alerts detected before `oldest`, at most `budget`,
    /// keeping the newest always (the next seq follows from it); returns how
    /// many were removed.
    pub fn remove_older_than(&self, oldest: Timestamp, budget: usize) -> StoreResult<usize> {
        let last = self.last_seq()?;
        let mut removed = 0;
        for item in self.alerts.iter().take(budget) {
            let (k, v) = item?;
            let seq = read_be(&k).unwrap_or(0);
            let record: AlertRecord = decode(&v)?;
            if seq >= last || record.detected_at >= oldest {
                break;
            }
            // NB: the id first: a lookup by id never finds a removed seq.
            self.ids.remove(record.id.as_bytes())?;
            self.alerts.remove(k)?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Whether an alert with `id` is stored.
    pub fn contains_id(&self, id: &str) -> StoreResult<bool> {
        Ok(self.ids.contains_key(id.as_bytes())?)
    }

    /// The last seq stored (0 when empty).
    pub fn last_seq(&self) -> StoreResult<u64> {
        Ok(self
            .alerts
            .last()?
            .and_then(|(k, _)| read_be(&k))
            .unwrap_or(0))
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
        self.query_marked(filter, after, through, limit, scan_limit, |_| {})
    }

    /// As [`AlertLog::query`], with `mark` applied to each alert before
    /// the filter sees it (it sets `silenced`).
    pub fn query_marked(
        &self,
        filter: &AlertFilter,
        after: u64,
        through: u64,
        limit: usize,
        scan_limit: usize,
        mark: impl Fn(&mut StoredAlert),
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
            let mut alert = from_record(seq, decode(&v)?);
            mark(&mut alert);
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
        state: if r.resolves.is_some() || r.resolved.is_some() {
            AlertState::Resolved
        } else {
            AlertState::Firing
        },
        resolves: r.resolves,
        resolved: r.resolved,
        silenced: false,
    }
}
