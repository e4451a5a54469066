//! Routes: which receivers an alert goes to, and how it is grouped there.
//!
//! An ordered list, read like Alertmanager's route tree one level deep:
//! the first route that matches wins, unless it says `continue`, in which
//! case the routes after it are tried too. Pure: no I/O.

use crate::delivery::config::{RouteMatch, RouteSpec};
use crate::rules::Mode;
use crate::store::alerts::StoredAlert;
use crate::time::Duration;

/// Default `group_wait` of a grouping route (Alertmanager's).
pub const DEFAULT_GROUP_WAIT: Duration = Duration(30_000);
/// Default `group_interval`.
pub const DEFAULT_GROUP_INTERVAL: Duration = Duration(300_000);
/// Default `repeat_interval`.
pub const DEFAULT_REPEAT_INTERVAL: Duration = Duration(4 * 3_600_000);

/// How a receiver groups the alerts one route sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct Grouping {
    /// The route's place in the list (groups of two routes never mix).
    pub route: usize,
    /// Fields the group key is made of; empty: no grouping.
    pub by: Vec<String>,
    /// Wait of a new group.
    pub wait: Duration,
    /// Wait between a group's notifications.
    pub interval: Duration,
    /// How long a quiet group stays open.
    pub repeat: Duration,
}

impl Grouping {
    /// The group an alert belongs to: the route and the values of the
    /// `group_by` fields, as `field=value` pairs.
    pub fn key(&self, alert: &StoredAlert) -> (usize, Vec<(String, String)>) {
        let labels = self
            .by
            .iter()
            .map(|field| (field.clone(), field_value(alert, field)))
            .collect();
        (self.route, labels)
    }
}

fn field_value(alert: &StoredAlert, field: &str) -> String {
    match field {
        "rule" => alert.rule.clone(),
        "key" => alert.key.clone(),
        "severity" => alert.severity.as_str().to_owned(),
        other => match other
            .strip_prefix("values.")
            .and_then(|v| alert.values.get(v))
        {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(value) => value.to_string(),
            None => String::new(),
        },
    }
}

/// Whether `text` matches `pattern`, where `*` is any run of characters
/// and `?` one character.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // NB: the classic two-pointer matcher with one backtrack point: linear
    // in practice, never exponential, whatever the pattern.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

impl RouteMatch {
    /// Whether `alert` passes every field given.
    pub fn accepts(&self, alert: &StoredAlert) -> bool {
        let mode = if alert.shadow {
            Mode::Shadow
        } else {
            Mode::Live
        };
        self.rule.as_deref().is_none_or(|p| glob(p, &alert.rule))
            && self.key.as_deref().is_none_or(|p| glob(p, &alert.key))
            && self.severity.is_none_or(|s| alert.severity >= s)
            && self.mode.unwrap_or(Mode::Live) == mode
    }
}

/// For the receiver `receiver`, the grouping of the first route that sends
/// `alert` to it, or `None` when no route does.
pub fn route_for(routes: &[RouteSpec], receiver: &str, alert: &StoredAlert) -> Option<Grouping> {
    for (i, route) in routes.iter().enumerate() {
        if !route.matches.accepts(alert) {
            continue;
        }
        if route.receiver == receiver {
            let grouping = !route.group_by.is_empty();
            return Some(Grouping {
                route: i,
                by: route.group_by.clone(),
                wait: route.group_wait.unwrap_or(if grouping {
                    DEFAULT_GROUP_WAIT
                } else {
                    Duration::ZERO
                }),
                interval: route.group_interval.unwrap_or(DEFAULT_GROUP_INTERVAL),
                repeat: route.repeat_interval.unwrap_or(DEFAULT_REPEAT_INTERVAL),
            });
        }
        if !route.continue_matching {
            return None;
        }
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::rules::Severity;
    use serde_json::json;

    pub(crate) fn alert(seq: u64, rule: &str, key: &str, severity: Severity) -> StoredAlert {
        StoredAlert {
            id: format!("id-{seq}"),
            seq,
            rule: rule.into(),
            rule_version: 1,
            key: key.into(),
            severity,
            time: crate::time::Timestamp(0),
            detected_at: crate::time::Timestamp(0),
            message: format!("alert {seq}"),
            events: vec![],
            values: serde_json::Map::new(),
            shadow: false,
            state: Default::default(),
            resolves: None,
            resolved: None,
            silenced: false,
        }
    }

    fn routes(value: serde_json::Value) -> Vec<RouteSpec> {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn globs_match_runs_and_single_characters() {
        assert!(glob("brute-*", "brute-force-login"));
        assert!(glob("*", ""));
        assert!(glob("acct-?", "acct-4"));
        assert!(!glob("acct-?", "acct-42"));
        assert!(glob("*-login", "brute-force-login"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
    }

    #[test]
    fn the_first_matching_route_wins_unless_it_continues() {
        let table = routes(json!([
            {"receiver": "pager", "match": {"severity": "high"}},
            {"receiver": "chat", "match": {"rule": "brute-*"}},
            {"receiver": "all"}
        ]));
        let high = alert(1, "brute-force", "k", Severity::High);
        let low = alert(2, "brute-force", "k", Severity::Low);
        assert!(route_for(&table, "pager", &high).is_some());
        assert!(
            route_for(&table, "chat", &high).is_none(),
            "pager stopped the walk"
        );
        assert!(route_for(&table, "chat", &low).is_some());
        assert!(route_for(&table, "all", &low).is_none());
        let table = routes(json!([
            {"receiver": "pager", "match": {"severity": "high"}, "continue": true},
            {"receiver": "all"}
        ]));
        assert!(route_for(&table, "pager", &high).is_some());
        assert!(route_for(&table, "all", &high).is_some());
    }

    #[test]
    fn keys_modes_and_grouping_defaults() {
        let table = routes(json!([
            {"receiver": "r", "match": {"key": "acct-*"}, "group_by": ["rule", "values.ip"]},
            {"receiver": "shadow", "match": {"mode": "shadow"}}
        ]));
        let mut a = alert(1, "x", "acct-1", Severity::Low);
        a.values.insert("ip".into(), json!("10.0.0.1"));
        let g = route_for(&table, "r", &a).unwrap();
        assert_eq!(g.wait, DEFAULT_GROUP_WAIT);
        assert_eq!(
            g.key(&a),
            (
                0,
                vec![
                    ("rule".into(), "x".into()),
                    ("values.ip".into(), "10.0.0.1".into())
                ]
            )
        );
        assert!(route_for(&table, "r", &alert(2, "x", "dev-1", Severity::Low)).is_none());
        a.shadow = true;
        assert!(
            route_for(&table, "r", &a).is_none(),
            "shadow alerts need mode: shadow"
        );
        assert!(route_for(&table, "shadow", &a).is_some());
    }
}
