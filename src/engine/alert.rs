//! Alerts as the engine produces them, and their deterministic ids.
//!
//! The service adds what only it knows (`seq`, `detected_at`); everything
//! else, including the id, is decided here from the rule, its version, the
//! key and the match, so replaying the same events after a crash yields the
//! same ids and the alert log can refuse a second copy.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use xxhash_rust::xxh3::Xxh3;

use crate::event::EventRef;
use crate::rules::{Mode, Severity};
use crate::time::Timestamp;

/// A completed pattern, with the explanation of why it fired (DESIGN §5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Deterministic for rule, rule version, key and match: 32 hex digits.
    pub id: String,
    /// The rule's id.
    pub rule: Arc<str>,
    /// The rule version that produced the alert.
    pub rule_version: u64,
    /// The entity key the rule ran under.
    pub key: String,
    /// Copied from the rule.
    pub severity: Severity,
    /// Copied from the rule: shadow alerts are not sent to ordinary subscribers.
    pub mode: Mode,
    /// Event time at which the pattern completed: the last matched event's
    /// time, or the deadline for alerts fired by a timer.
    pub time: Timestamp,
    /// The rendered message.
    pub message: String,
    /// The events that explain the alert, oldest first: in event-time order,
    /// ties in the order the entity accepted them (by ordinal) — the order
    /// the rule evaluated them, except for events it evaluated late under
    /// `late: evaluate` (bounded, see `EngineConfig::max_explained_events`).
    pub events: Vec<EventRef>,
    /// Named values that explain the alert, e.g. `failures.count`.
    pub values: Map<String, Value>,
    /// Set on a resolution: the id of the firing alert whose pattern came to
    /// its natural end (the expected event arrived, the aggregate fell back
    /// across its bound). A resolution is an entry of the alert log like any
    /// other, with its own deterministic id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolves: Option<String>,
}

impl Alert {
    /// True when this entry resolves an earlier alert.
    pub fn is_resolution(&self) -> bool {
        self.resolves.is_some()
    }
}

/// Builds an alert id from the parts that identify one match.
///
/// # Invariants
/// The same sequence of `add_*` calls always yields the same id, on every
/// platform and across releases: the hash is xxh3-128 over a fixed byte
/// encoding (lengths and integers little-endian). Changing the encoding
/// would re-publish alerts after an upgrade's replay, so it is frozen.
#[derive(Clone)]
pub struct AlertIdBuilder {
    hasher: Xxh3,
}

impl AlertIdBuilder {
    /// Starts an id for `rule` at `version` under `key`, for a match of `kind`
    /// (a short constant per pattern kind, so kinds never collide).
    pub fn new(rule: &str, version: u64, key: &str, kind: &str) -> AlertIdBuilder {
        let mut builder = AlertIdBuilder {
            hasher: Xxh3::new(),
        };
        builder
            .add_str(rule)
            .add_u64(version)
            .add_str(key)
            .add_str(kind);
        builder
    }

    /// Adds a string (length-prefixed, so "ab"+"c" differs from "a"+"bc").
    pub fn add_str(&mut self, s: &str) -> &mut Self {
        self.hasher.update(&(s.len() as u64).to_le_bytes());
        self.hasher.update(s.as_bytes());
        self
    }

    /// Adds an integer.
    pub fn add_u64(&mut self, n: u64) -> &mut Self {
        self.hasher.update(&n.to_le_bytes());
        self
    }

    /// Adds a signed integer (times).
    pub fn add_i64(&mut self, n: i64) -> &mut Self {
        self.hasher.update(&n.to_le_bytes());
        self
    }

    /// The id: 32 lowercase hex digits.
    pub fn finish(&self) -> String {
        format!("{:032x}", self.hasher.digest128())
    }
}

/// A running fingerprint of the events a partial match has taken, so two
/// matches that share their first and last events but differ in between (as
/// `any` contiguity produces) get different ids. Kept as two `u64` because
/// not every serialization format carries `u128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MatchFingerprint(pub u64, pub u64);

impl MatchFingerprint {
    /// The fingerprint after also taking the event with `ordinal`.
    pub fn with(self, ordinal: u64) -> MatchFingerprint {
        let mut bytes = [0u8; 24];
        bytes[..8].copy_from_slice(&self.0.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.1.to_le_bytes());
        bytes[16..].copy_from_slice(&ordinal.to_le_bytes());
        let h = xxhash_rust::xxh3::xxh3_128(&bytes);
        MatchFingerprint((h >> 64) as u64, h as u64)
    }
}

/// A bounded list of the events that explain a match: the first
/// `limit - 1` events are kept, and the last slot always holds the most
/// recent one, so the explanation shows how the match began and ended.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Explanation {
    /// The kept references, oldest first.
    pub events: Vec<EventRef>,
    /// How many events were taken but not kept.
    #[serde(default)]
    pub omitted: u64,
}

impl Explanation {
    /// Records one more event, keeping at most `limit` references.
    pub fn push(&mut self, event: EventRef, limit: usize) {
        let limit = limit.max(1);
        if self.events.len() < limit {
            self.events.push(event);
        } else {
            // NB: the slot we overwrite was the previous "most recent" event;
            // it stops being the last, so it joins the omitted ones.
            if let Some(last) = self.events.last_mut() {
                *last = event;
            }
            self.omitted += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinguish_their_parts() {
        let id = AlertIdBuilder::new("r", 1, "k", "seq").add_u64(7).finish();
        assert_eq!(
            id,
            AlertIdBuilder::new("r", 1, "k", "seq").add_u64(7).finish()
        );
        assert_eq!(id.len(), 32);
        assert_ne!(
            id,
            AlertIdBuilder::new("r", 2, "k", "seq").add_u64(7).finish()
        );
        assert_ne!(
            AlertIdBuilder::new("ab", 1, "c", "seq").finish(),
            AlertIdBuilder::new("a", 1, "bc", "seq").finish()
        );
    }

    #[test]
    fn fingerprints_depend_on_every_event() {
        let a = MatchFingerprint::default().with(1).with(2).with(5);
        let b = MatchFingerprint::default().with(1).with(3).with(5);
        assert_ne!(a, b);
        assert_eq!(a, MatchFingerprint::default().with(1).with(2).with(5));
    }

    #[test]
    fn explanation_keeps_the_beginning_and_the_latest_event() {
        let mut explanation = Explanation::default();
        for ordinal in 1..=10 {
            let r = EventRef {
                id: None,
                event_type: "t".into(),
                time: Timestamp(ordinal as i64),
                ordinal,
            };
            explanation.push(r, 4);
        }
        let ordinals: Vec<u64> = explanation.events.iter().map(|e| e.ordinal).collect();
        assert_eq!(ordinals, vec![1, 2, 3, 10]);
        assert_eq!(explanation.omitted, 6);
    }
}
