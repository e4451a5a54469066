//! When to try a failed notification again: exponential backoff with
//! jitter, so receivers coming back are not hit by every cepheus at once.

use std::time::Duration;

/// The wait before attempt `attempt + 1` after `attempt` failures (1 for
/// the first failure): `initial · 2^(attempt-1)`, capped at `max`, then
/// "equal jitter": between half of that and all of it, `unit` (in [0, 1))
/// choosing where.
pub fn backoff(attempt: u32, initial: Duration, max: Duration, unit: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(32);
    let base = initial.saturating_mul(1u32 << exp.min(31)).min(max);
    let half = base / 2;
    half + half.mul_f64(unit.clamp(0.0, 1.0))
}

/// A number in [0, 1) that differs between calls and between processes:
/// enough to spread retries (not for anything secret).
pub fn jitter() -> f64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mixed = xxhash_rust::xxh3::xxh3_64(&[nanos.to_le_bytes(), n.to_le_bytes()].concat());
    (mixed >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_and_jitter_stays_in_the_upper_half() {
        let s = Duration::from_secs;
        assert_eq!(backoff(1, s(1), s(60), 0.0), Duration::from_millis(500));
        assert_eq!(backoff(1, s(1), s(60), 0.999_999).as_millis(), 999);
        assert_eq!(backoff(3, s(1), s(60), 0.0), s(2));
        assert_eq!(backoff(20, s(1), s(60), 0.0), s(30));
        assert_eq!(backoff(u32::MAX, s(1), s(60), 0.0), s(30));
        for _ in 0..100 {
            let u = jitter();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
