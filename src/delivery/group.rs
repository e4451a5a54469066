//! What a receiver holds between reading alerts and sending them: groups
//! waiting for their time, single alerts waiting for their turn, and the
//! token bucket of its rate limit. Pure: time (milliseconds) is passed in.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use crate::delivery::config::RateLimit;
use crate::delivery::route::Grouping;
use crate::store::alerts::StoredAlert;

/// The alerts of one notification and the group they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// `field=value` pairs of the group (empty for an ungrouped alert or a
    /// batch).
    pub labels: Vec<(String, String)>,
    /// The alerts, oldest first.
    pub alerts: Vec<Arc<StoredAlert>>,
}

type GroupKey = (usize, Vec<(String, String)>);

struct Group {
    grouping: Grouping,
    alerts: Vec<Arc<StoredAlert>>,
    created: i64,
    last_sent: Option<i64>,
}

impl Group {
    /// When the group's next notification is due (if it has alerts).
    fn due(&self) -> i64 {
        match self.last_sent {
            None => self.created.saturating_add(self.grouping.wait.millis()),
            Some(sent) => sent.saturating_add(self.grouping.interval.millis()),
        }
    }
}

/// Alerts waiting to be sent to one receiver.
#[derive(Default)]
pub struct Batcher {
    groups: BTreeMap<GroupKey, Group>,
    single: VecDeque<Arc<StoredAlert>>,
    held: usize,
}

impl Batcher {
    /// Adds an alert routed with `grouping` at time `now`.
    pub fn add(&mut self, alert: Arc<StoredAlert>, grouping: &Grouping, now: i64) {
        self.held += 1;
        if grouping.by.is_empty() {
            self.single.push_back(alert);
            return;
        }
        let key = grouping.key(&alert);
        let group = self.groups.entry(key).or_insert_with(|| Group {
            grouping: grouping.clone(),
            alerts: Vec::new(),
            created: now,
            last_sent: None,
        });
        group.alerts.push(alert);
    }

    /// Alerts held.
    pub fn len(&self) -> usize {
        self.held
    }

    /// True when no alert is held.
    pub fn is_empty(&self) -> bool {
        self.held == 0
    }

    /// The earliest time a notification is due, if any alert is held.
    pub fn next_due(&self) -> Option<i64> {
        let singles = (!self.single.is_empty()).then_some(i64::MIN);
        let groups = self
            .groups
            .values()
            .filter(|g| !g.alerts.is_empty())
            .map(Group::due)
            .min();
        singles.into_iter().chain(groups).min()
    }

    /// The next notification due at `now`, of at most `max` alerts. Single
    /// alerts go one per notification, unless `batch` says the receiver
    /// was held back by its rate limit: then all waiting go together.
    pub fn take_due(&mut self, now: i64, max: usize, batch: bool) -> Option<Notification> {
        let max = max.max(1);
        if !self.single.is_empty() {
            let n = if batch { self.single.len().min(max) } else { 1 };
            let alerts: Vec<_> = self.single.drain(..n).collect();
            self.held -= alerts.len();
            return Some(Notification {
                labels: Vec::new(),
                alerts,
            });
        }
        let key = self
            .groups
            .iter()
            .filter(|(_, g)| !g.alerts.is_empty() && g.due() <= now)
            .min_by_key(|(_, g)| g.due())
            .map(|(k, _)| k.clone())?;
        let group = self.groups.get_mut(&key)?;
        let n = group.alerts.len().min(max);
        let alerts: Vec<_> = group.alerts.drain(..n).collect();
        // NB: a group split by `max` sends the rest at its next interval,
        // like any alert that arrives after a notification.
        group.last_sent = Some(now);
        self.held -= alerts.len();
        Some(Notification {
            labels: key.1,
            alerts,
        })
    }

    /// Forgets groups with no alert waiting that have been quiet for their
    /// `repeat_interval`: the next alert of such a group starts a new one
    /// (and waits `group_wait` again).
    pub fn close_quiet_groups(&mut self, now: i64) {
        self.groups.retain(|_, g| {
            !g.alerts.is_empty()
                || g.last_sent
                    .unwrap_or(g.created)
                    .saturating_add(g.grouping.repeat.millis())
                    > now
        });
    }

    /// Drops held alerts for which `drop` is true (silenced at send time),
    /// returning them.
    pub fn remove(&mut self, drop: impl Fn(&StoredAlert) -> bool) -> Vec<Arc<StoredAlert>> {
        let mut removed = Vec::new();
        self.single.retain(|a| {
            let keep = !drop(a);
            if !keep {
                removed.push(Arc::clone(a));
            }
            keep
        });
        for group in self.groups.values_mut() {
            group.alerts.retain(|a| {
                let keep = !drop(a);
                if !keep {
                    removed.push(Arc::clone(a));
                }
                keep
            });
        }
        self.held -= removed.len();
        removed
    }
}

/// A token bucket: `rate` tokens per `per`, holding at most `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    per_ms: f64,
    tokens: f64,
    last: i64,
}

impl TokenBucket {
    /// A full bucket for `limit` at time `now`.
    pub fn new(limit: &RateLimit, now: i64) -> TokenBucket {
        let capacity = f64::from(limit.burst.unwrap_or(limit.rate).max(1));
        TokenBucket {
            capacity,
            per_ms: f64::from(limit.rate.max(1)) / limit.per.millis().max(1) as f64,
            tokens: capacity,
            last: now,
        }
    }

    fn refill(&mut self, now: i64) {
        let elapsed = now.saturating_sub(self.last).max(0) as f64;
        self.tokens = (self.tokens + elapsed * self.per_ms).min(self.capacity);
        self.last = self.last.max(now);
    }

    /// Takes a token if one is there at `now`.
    pub fn try_take(&mut self, now: i64) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// When the next token will be there.
    pub fn ready_at(&mut self, now: i64) -> i64 {
        self.refill(now);
        if self.tokens >= 1.0 {
            return now;
        }
        now + ((1.0 - self.tokens) / self.per_ms).ceil() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::route::tests::alert;
    use crate::rules::Severity;
    use crate::time::Duration;

    fn grouping(by: &[&str]) -> Grouping {
        Grouping {
            route: 0,
            by: by.iter().map(|s| s.to_string()).collect(),
            wait: Duration(1_000),
            interval: Duration(10_000),
            repeat: Duration(60_000),
        }
    }

    #[test]
    fn a_group_waits_then_sends_one_notification_then_waits_its_interval() {
        let g = grouping(&["rule"]);
        let mut b = Batcher::default();
        for seq in 1..=3 {
            b.add(
                Arc::new(alert(seq, "r1", &format!("k{seq}"), Severity::High)),
                &g,
                0,
            );
        }
        b.add(Arc::new(alert(4, "r2", "k", Severity::High)), &g, 0);
        assert_eq!(b.next_due(), Some(1_000));
        assert!(b.take_due(999, 100, false).is_none());
        let first = b.take_due(1_000, 100, false).unwrap();
        let second = b.take_due(1_000, 100, false).unwrap();
        let mut sizes = [first.alerts.len(), second.alerts.len()];
        sizes.sort();
        assert_eq!(sizes, [1, 3]);
        assert!(b.is_empty());
        b.add(Arc::new(alert(5, "r1", "k", Severity::High)), &g, 2_000);
        assert!(
            b.take_due(5_000, 100, false).is_none(),
            "group_interval not yet over"
        );
        let third = b.take_due(11_000, 100, false).unwrap();
        assert_eq!(third.labels, vec![("rule".to_string(), "r1".to_string())]);
        b.close_quiet_groups(71_000);
        b.add(Arc::new(alert(6, "r1", "k", Severity::High)), &g, 71_000);
        assert_eq!(
            b.next_due(),
            Some(72_000),
            "a quiet group closed; a new one waits again"
        );
    }

    #[test]
    fn single_alerts_go_one_by_one_unless_batched_and_groups_split_at_max() {
        let none = grouping(&[]);
        let mut b = Batcher::default();
        for seq in 1..=5 {
            b.add(Arc::new(alert(seq, "r", "k", Severity::Low)), &none, 0);
        }
        assert_eq!(b.take_due(0, 100, false).unwrap().alerts[0].seq, 1);
        let batch = b.take_due(0, 3, true).unwrap();
        assert_eq!(
            batch.alerts.iter().map(|a| a.seq).collect::<Vec<_>>(),
            [2, 3, 4]
        );
        assert_eq!(b.len(), 1);
        let removed = b.remove(|a| a.seq == 5);
        assert_eq!(removed.len(), 1);
        assert!(b.is_empty());
    }

    #[test]
    fn the_bucket_refills_at_its_rate_up_to_its_burst() {
        let limit = RateLimit {
            rate: 2,
            per: Duration(1_000),
            burst: Some(3),
        };
        let mut bucket = TokenBucket::new(&limit, 0);
        assert!(bucket.try_take(0) && bucket.try_take(0) && bucket.try_take(0));
        assert!(!bucket.try_take(0));
        assert_eq!(bucket.ready_at(0), 500);
        assert!(bucket.try_take(500));
        assert!(!bucket.try_take(500));
        assert!(bucket.try_take(100_000) && bucket.try_take(100_000) && bucket.try_take(100_000));
        assert!(!bucket.try_take(100_000), "never more than the burst");
    }
}
