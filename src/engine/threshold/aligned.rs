//! Tumbling and hopping windows (`window: {tumbling: 1h}`,
//! `{hopping: {size: 10m, advance: 1m}}`): epoch-aligned windows that fire
//! at close. Compiled from `WindowSpec::Tumbling` / `WindowSpec::Hopping`
//! (`rules/compile/threshold.rs`).
//!
//! Windows are `[start, start + size)` with `start` a multiple of `advance`
//! (of `size`, for tumbling) since the Unix epoch, so an event at exactly
//! `start + size` belongs to the next window. Each event enters every window
//! containing it; a window closes when the watermark reaches its end, and
//! fires once if its aggregate satisfies the condition. Windows with no
//! events do not exist and never fire, and a closed window never reopens.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::alert::{closed_window_alert, window_json};
use crate::engine::aggregate::{Accumulator, Samples};
use crate::engine::alert::Alert;
use crate::engine::counters::DropCounters;
use crate::engine::env::RuleEnv;
use crate::event::{Event, EventRef};
use crate::rules::ThresholdPattern;
use crate::time::{Duration, Timestamp};

/// Open epoch-aligned windows, by start.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AlignedWindows {
    windows: BTreeMap<i64, Accumulator>,
}

impl AlignedWindows {
    /// True when no window is open.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// Open windows.
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    /// The watermark at which the oldest open window closes.
    pub fn next_deadline(&self, size: Duration) -> Option<Timestamp> {
        self.windows
            .keys()
            .next()
            .map(|start| Timestamp(*start).plus(size))
    }

    /// Whether every window containing `time` has ended by `watermark`.
    pub fn closed_for(
        &self,
        time: Timestamp,
        size: Duration,
        advance: Duration,
        watermark: Timestamp,
    ) -> bool {
        starts_containing(time, size, advance).all(|s| Timestamp(s).plus(size) <= watermark)
    }

    /// Closes every window whose end the watermark reached, oldest first.
    pub(super) fn advance(
        &mut self,
        env: &RuleEnv<'_>,
        pattern: &ThresholdPattern,
        size: Duration,
        watermark: Timestamp,
        alerts: &mut Vec<Alert>,
    ) {
        while let Some(entry) = self.windows.first_entry() {
            let start = Timestamp(*entry.key());
            let end = start.plus(size);
            if end > watermark {
                break;
            }
            let acc = entry.remove();
            if let Some(alert) = closed_window_alert(env, pattern, "window", start, end, &acc) {
                alerts.push(alert);
            }
        }
    }

    /// A JSON view of the open windows.
    pub fn view(&self) -> Value {
        json!({
            "kind": "windows",
            "windows": self.windows.iter().map(|(start, acc)| window_json(Timestamp(*start), acc)).collect::<Vec<_>>(),
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn add(
        &mut self,
        time: Timestamp,
        size: Duration,
        advance: Duration,
        watermark: Timestamp,
        sample: &Samples,
        reference: EventRef,
        full: Option<&Arc<Event>>,
        limits: (usize, usize),
        dropped: &mut DropCounters,
    ) {
        for start in starts_containing(time, size, advance) {
            if Timestamp(start).plus(size) <= watermark {
                // Closed already: a window fires once.
                continue;
            }
            if !self.windows.contains_key(&start) && self.windows.len() >= limits.0 {
                dropped.window_entries += 1;
                continue;
            }
            let acc = self.windows.entry(start).or_default();
            if !acc.add(sample, reference.clone(), full, limits) {
                dropped.window_entries += 1;
            }
        }
    }
}

/// Starts of every window of `size` (starting every `advance`) that contains
/// `time`, ascending.
pub(crate) fn starts_containing(
    time: Timestamp,
    size: Duration,
    advance: Duration,
) -> impl Iterator<Item = i64> {
    let (t, size, advance) = (time.millis(), size.millis().max(1), advance.millis().max(1));
    let last = t.div_euclid(advance) * advance;
    // The earliest start s with s + size > t, rounded up to a multiple of advance.
    let lowest = t - size + 1;
    let first = lowest.div_euclid(advance) * advance
        + if lowest.rem_euclid(advance) == 0 {
            0
        } else {
            advance
        };
    (0..)
        .map(move |i: i64| first + i * advance)
        .take_while(move |s| *s <= last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn starts(t: i64, size: i64, advance: i64) -> Vec<i64> {
        starts_containing(Timestamp(t), Duration(size), Duration(advance)).collect()
    }

    #[test]
    fn tumbling_windows_include_start_and_exclude_end() {
        assert_eq!(starts(0, 60, 60), vec![0]);
        assert_eq!(starts(59, 60, 60), vec![0]);
        assert_eq!(starts(60, 60, 60), vec![60]);
        assert_eq!(starts(-1, 60, 60), vec![-60]);
    }

    #[test]
    fn hopping_windows_cover_every_start_whose_window_holds_the_time() {
        // size 10, advance 3: windows [0,10) [3,13) [6,16) [9,19) hold 9.
        assert_eq!(starts(9, 10, 3), vec![0, 3, 6, 9]);
        // 10 is outside [0,10).
        assert_eq!(starts(10, 10, 3), vec![3, 6, 9]);
        assert_eq!(starts(0, 10, 5), vec![-5, 0]);
    }
}
