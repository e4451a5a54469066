//! Silences: mute alerts by rule, key or severity for a time window, like
//! Alertmanager's. Pure matching here; the registry that holds them is in
//! `mod.rs`, their records in `store/delivery.rs`.
//!
//! An alert is *silenced* when a silence that matches it was active when it
//! was detected: it is stored and served marked `silenced`, and never
//! delivered. A silence also holds back, at the moment a notification would
//! be sent, the matching alerts detected before it and not yet delivered.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::delivery::route::glob;
use crate::rules::Severity;
use crate::store::alerts::StoredAlert;
use crate::time::{Duration, Timestamp};

/// What a silence mutes; every field given must match, and at least one
/// must be given.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SilenceMatchers {
    /// Rule id, a glob (`*`, `?`).
    #[serde(default)]
    pub rule: Option<String>,
    /// Entity key, a glob.
    #[serde(default)]
    pub key: Option<String>,
    /// Exactly this severity.
    #[serde(default)]
    pub severity: Option<Severity>,
}

impl SilenceMatchers {
    /// Whether `alert` passes every matcher given.
    pub fn accepts(&self, alert: &StoredAlert) -> bool {
        self.rule.as_deref().is_none_or(|p| glob(p, &alert.rule))
            && self.key.as_deref().is_none_or(|p| glob(p, &alert.key))
            && self.severity.is_none_or(|s| s == alert.severity)
    }

    fn is_empty(&self) -> bool {
        self.rule.is_none() && self.key.is_none() && self.severity.is_none()
    }
}

/// A silence as written in `POST /v1/silences`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "matchers": {"rule": "brute-force-login", "key": "acct-4*"},
    "duration": "2h", "created_by": "ana", "comment": "pen test on the acct-4x accounts"
}))]
pub struct SilenceSpec {
    /// What it mutes.
    pub matchers: SilenceMatchers,
    /// When it starts (default now).
    #[serde(default)]
    pub starts_at: Option<Timestamp>,
    /// When it ends; give this or `duration`.
    #[serde(default)]
    pub ends_at: Option<Timestamp>,
    /// How long it lasts from `starts_at`; give this or `ends_at`.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "2h")]
    pub duration: Option<Duration>,
    /// Who created it.
    pub created_by: String,
    /// Why.
    #[serde(default)]
    pub comment: String,
}

/// Whether a silence applies now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SilenceState {
    /// Starts later.
    Pending,
    /// Mutes matching alerts now.
    Active,
    /// Ended or expired.
    Expired,
}

/// A stored silence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Silence {
    /// Its id.
    pub id: String,
    /// What it mutes.
    pub matchers: SilenceMatchers,
    /// When it starts.
    pub starts_at: Timestamp,
    /// When it ends (moved to the time of expiry when expired early).
    pub ends_at: Timestamp,
    /// Who created it.
    pub created_by: String,
    /// Why.
    pub comment: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was expired by hand, if it was.
    #[serde(default)]
    pub expired_at: Option<Timestamp>,
}

impl Silence {
    /// A new silence from `spec`, created at `now` with `id`.
    pub fn new(id: String, spec: SilenceSpec, now: Timestamp) -> Result<Silence, Vec<String>> {
        let mut problems = Vec::new();
        if spec.matchers.is_empty() {
            problems.push(
                "matchers: give at least one of rule, key, severity (a silence never mutes everything)"
                    .to_owned(),
            );
        }
        if spec.created_by.trim().is_empty() {
            problems.push("created_by: say who creates the silence".to_owned());
        }
        let starts_at = spec.starts_at.unwrap_or(now);
        let ends_at = match (spec.ends_at, spec.duration) {
            (Some(end), None) => end,
            (None, Some(d)) => starts_at.plus(d),
            _ => {
                problems.push("ends_at: give exactly one of ends_at and duration".to_owned());
                starts_at
            }
        };
        if ends_at <= starts_at && problems.is_empty() {
            problems.push("ends_at: must be after starts_at".to_owned());
        }
        if ends_at <= now && problems.is_empty() {
            problems.push("ends_at: must be in the future".to_owned());
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Silence {
            id,
            matchers: spec.matchers,
            starts_at,
            ends_at,
            created_by: spec.created_by,
            comment: spec.comment,
            created_at: now,
            expired_at: None,
        })
    }

    /// Whether it applies at `t`.
    pub fn active_at(&self, t: Timestamp) -> bool {
        self.starts_at <= t && t < self.ends_at
    }

    /// Its state at `now`.
    pub fn state(&self, now: Timestamp) -> SilenceState {
        if now < self.starts_at {
            SilenceState::Pending
        } else if now < self.ends_at {
            SilenceState::Active
        } else {
            SilenceState::Expired
        }
    }

    /// Ends it at `now` (a pending silence ends before it starts).
    pub fn expire(&mut self, now: Timestamp) {
        if self.ends_at > now {
            self.ends_at = now.max(self.starts_at);
            self.expired_at = Some(now);
        }
    }
}

/// Whether a silence in `silences` mutes `alert`: one active when it was
/// detected (the alert is `silenced`) or, with `now`, one active now (it is
/// held back from delivery).
pub fn mutes(silences: &[Silence], alert: &StoredAlert, now: Option<Timestamp>) -> bool {
    silences.iter().any(|s| {
        s.matchers.accepts(alert)
            && (s.active_at(alert.detected_at) || now.is_some_and(|now| s.active_at(now)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::route::tests::alert;

    fn silence(rule: &str, from: i64, to: i64) -> Silence {
        Silence::new(
            "s".into(),
            SilenceSpec {
                matchers: SilenceMatchers {
                    rule: Some(rule.into()),
                    ..Default::default()
                },
                starts_at: Some(Timestamp(from)),
                ends_at: Some(Timestamp(to)),
                duration: None,
                created_by: "me".into(),
                comment: String::new(),
            },
            Timestamp(0),
        )
        .unwrap()
    }

    #[test]
    fn a_silence_mutes_what_it_matches_in_its_window_and_what_is_still_waiting() {
        let s = vec![silence("brute-*", 100, 200)];
        let mut a = alert(1, "brute-force", "k", Severity::High);
        a.detected_at = Timestamp(150);
        assert!(mutes(&s, &a, None));
        a.detected_at = Timestamp(50);
        assert!(!mutes(&s, &a, None), "detected before the silence");
        assert!(
            mutes(&s, &a, Some(Timestamp(120))),
            "held back while waiting"
        );
        assert!(!mutes(&s, &a, Some(Timestamp(200))), "the end is excluded");
        let other = alert(2, "other", "k", Severity::High);
        assert!(!mutes(&s, &other, Some(Timestamp(150))));
    }

    #[test]
    fn silences_need_a_matcher_an_author_and_a_future_end() {
        let spec = SilenceSpec {
            matchers: SilenceMatchers::default(),
            starts_at: None,
            ends_at: None,
            duration: None,
            created_by: " ".into(),
            comment: String::new(),
        };
        assert_eq!(
            Silence::new("x".into(), spec, Timestamp(0))
                .unwrap_err()
                .len(),
            3
        );
        let mut s = silence("r", 100, 200);
        assert_eq!(s.state(Timestamp(50)), SilenceState::Pending);
        assert_eq!(s.state(Timestamp(150)), SilenceState::Active);
        s.expire(Timestamp(160));
        assert_eq!(s.state(Timestamp(160)), SilenceState::Expired);
        assert_eq!(s.expired_at, Some(Timestamp(160)));
    }
}
