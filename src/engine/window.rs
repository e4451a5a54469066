//! Window arithmetic: which epoch-aligned windows contain a time.
//!
//! Tumbling and hopping windows are `[start, start + size)` with `start` a
//! multiple of `advance` (of `size`, for tumbling) since the Unix epoch, so
//! an event at exactly `start + size` belongs to the next window.

use crate::time::{Duration, Timestamp};

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
