//! The synthetic workload: keyed events in a realistic mix, with a known
//! share of keys completing each benchmark pattern.
//!
//! Every key follows a short script of events; rounds send event `r` of
//! every key's script, so keys interleave as real traffic does. Events
//! carry no `time` (the server stamps the receive time, as live producers
//! effectively do). Only the events that complete a pattern carry an id
//! (`lat-…`), which the alert lists, so the latency probe can find the
//! request that caused each alert.

use std::fmt::Write as _;

/// The three benchmark rules: one sequence, one absence, one threshold.
pub const RULES: [(&str, &str); 3] = [
    (
        "bench-sequence",
        "id: bench-sequence\nseverity: high\nsequence:\n  within: 5m\n  steps:\n    - name: failures\n      match: type == \"login_failed\"\n      times: {min: 3}\n    - name: success\n      match: type == \"login_success\"\n",
    ),
    (
        "bench-absence",
        "id: bench-absence\nseverity: medium\nabsence:\n  expect: type == \"heartbeat\"\n  within: 1h\n",
    ),
    (
        "bench-threshold",
        "id: bench-threshold\nseverity: high\nthreshold:\n  match: type == \"transfer\" && data.amount > 1000\n  window: {sliding: 1m}\n  aggregate: count\n  above: 5\n",
    ),
];

/// Shape of the workload.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Distinct entity keys.
    pub keys: usize,
    /// Events in all.
    pub events: usize,
    /// Share of keys that complete the sequence (and, separately, the threshold).
    pub complete: f64,
    /// Bytes of padding in each event's `data`.
    pub data_bytes: usize,
    /// A tag unique to this run, part of every probe id: a second run
    /// against the same server must not send ids it already accepted (they
    /// would be dropped as duplicates, and their alerts never come).
    pub run: String,
    /// Every event carries an id (as real producers' do), not only probes.
    pub ids: bool,
    /// Every event carries this `time` (RFC 3339); by default none (the
    /// server stamps the receive time). A time behind the entities' clocks
    /// makes every event late.
    pub time: Option<String>,
}

/// What a key does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Completes the sequence: three failures, then a success.
    Sequence,
    /// Completes the threshold: six large transfers.
    Threshold,
    /// Ordinary traffic that completes nothing.
    Ordinary,
}

impl Workload {
    fn role(&self, key: usize) -> Role {
        // Spread the roles evenly over the key space.
        let share = (self.complete * 1_000_000.0) as u64;
        let h = (key as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) % 1_000_000;
        if h < share {
            Role::Sequence
        } else if h < 2 * share {
            Role::Threshold
        } else {
            Role::Ordinary
        }
    }

    /// The `step`-th event of `key`'s script as one JSON line, and whether it
    /// completes a pattern (it then carries an id).
    fn event(&self, key: usize, step: usize, line: &mut String) -> bool {
        let (kind, amount, completes) = match (self.role(key), step % 10) {
            (Role::Sequence, 0..=2) => ("login_failed", 0, false),
            (Role::Sequence, 3) => ("login_success", 0, true),
            (Role::Threshold, 0..=5) => ("transfer", 5_000, step == 5),
            (_, 0 | 5) => ("heartbeat", 0, false),
            // NB: one failure per key at most: relaxed contiguity would let
            // failures from several cycles complete the sequence.
            (_, 1) if step < 10 => ("login_failed", 0, false),
            (_, 1 | 2 | 6 | 7) => ("login_success", 0, false),
            (_, _) => ("transfer", 10 * (key % 90) + 20, false),
        };
        line.clear();
        let _ = write!(line, "{{\"key\":\"k-{key}\",\"type\":\"{kind}\"");
        if completes {
            let _ = write!(line, ",\"id\":\"lat-{}-{key}-{step}\"", self.run);
        } else if self.ids {
            let _ = write!(line, ",\"id\":\"ev-{}-{key}-{step}\"", self.run);
        }
        if let Some(time) = &self.time {
            let _ = write!(line, ",\"time\":\"{time}\"");
        }
        let _ = write!(
            line,
            ",\"data\":{{\"amount\":{amount},\"ip\":\"10.{}.{}.{}\",\"pad\":\"",
            key % 251,
            step % 251,
            (key / 251) % 251
        );
        line.extend(std::iter::repeat_n('x', self.data_bytes));
        line.push_str("\"}}");
        completes
    }

    /// Request bodies of `batch` events each (NDJSON; a single event is a
    /// plain JSON object), in send order.
    pub fn bodies(&self, batch: usize) -> Vec<Body> {
        let batch = batch.max(1);
        let keys = self.keys.max(1);
        let mut bodies = Vec::with_capacity(self.events / batch + 1);
        let mut current = Body::default();
        let mut line = String::new();
        for i in 0..self.events {
            let (round, key) = (i / keys, i % keys);
            let completes = self.event(key, round, &mut line);
            if completes {
                current
                    .probes
                    .push(format!("lat-{}-{key}-{round}", self.run));
            }
            current.text.push_str(&line);
            current.text.push('\n');
            current.events += 1;
            if current.events == batch {
                bodies.push(std::mem::take(&mut current));
            }
        }
        if current.events > 0 {
            bodies.push(current);
        }
        bodies
    }
}

impl Workload {
    /// The bodies (of `batch` events, as [`Workload::bodies`] cuts them)
    /// holding the previous event of some key of body `index`: they must be
    /// acknowledged before it is sent, or two requests in flight at once
    /// could reorder a key's script (a success before the third failure
    /// completes no sequence).
    pub fn predecessors(&self, index: usize, batch: usize) -> std::ops::Range<usize> {
        let (batch, keys) = (batch.max(1), self.keys.max(1));
        let first = index * batch;
        let last = ((index + 1) * batch).min(self.events).saturating_sub(1);
        if last < keys {
            return 0..0;
        }
        (first.saturating_sub(keys) / batch)..((last - keys) / batch + 1)
    }
}

/// One request body.
#[derive(Debug, Clone, Default)]
pub struct Body {
    /// NDJSON text.
    pub text: String,
    /// Events in it.
    pub events: usize,
    /// Ids of the events in it that complete a pattern.
    pub probes: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_waits_for_the_bodies_holding_its_keys_previous_events() {
        let w = Workload {
            keys: 200,
            events: 4_000,
            complete: 0.2,
            data_bytes: 0,
            run: "t".into(),
            ids: false,
            time: None,
        };
        // Two bodies per round: body 2 repeats body 0's keys, body 3 body 1's.
        assert_eq!(w.predecessors(0, 100), 0..0);
        assert_eq!(w.predecessors(1, 100), 0..0);
        assert_eq!(w.predecessors(2, 100), 0..1);
        assert_eq!(w.predecessors(3, 100), 1..2);
        // Rounds not aligned with bodies: events 150..300 follow 0..100 and 100..150.
        assert_eq!(w.predecessors(1, 150), 0..1);
        assert_eq!(w.predecessors(2, 150), 0..2);
        // One key: each body follows the one before.
        let one = Workload { keys: 1, ..w };
        assert_eq!(one.predecessors(5, 1), 4..5);
    }

    #[test]
    fn bodies_hold_every_event_once_and_completing_keys_complete() {
        let w = Workload {
            keys: 100,
            events: 1_000,
            complete: 0.1,
            data_bytes: 8,
            run: "t".into(),
            ids: false,
            time: None,
        };
        let bodies = w.bodies(64);
        assert_eq!(bodies.iter().map(|b| b.events).sum::<usize>(), 1_000);
        let probes: usize = bodies.iter().map(|b| b.probes.len()).sum();
        // Roughly 10 sequence keys and 10 threshold keys complete once each.
        assert!((10..=40).contains(&probes), "{probes}");
        for line in bodies[0].text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(v["key"].as_str().unwrap().starts_with("k-"));
        }
    }
}
