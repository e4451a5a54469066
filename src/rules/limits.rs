//! Limits on the size and complexity of one rule, checked when it is loaded.
//!
//! They keep a hostile or careless rule from costing unbounded memory or CPU
//! (DESIGN §7); a rule that exceeds one is refused with a message naming the
//! limit.

use serde::{Deserialize, Serialize};

use crate::rules::expr::ExprLimits;
use crate::time::Duration;

/// Limits on one rule. Every field has a default; a settings file may
/// override any of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleLimits {
    /// Largest rule text, in bytes, refused before it is parsed (default 64 KiB).
    pub max_rule_bytes: usize,
    /// Most steps in one sequence (default 32).
    pub max_steps: usize,
    /// Limits on each CEL expression: length and nesting depth (default 4096
    /// bytes, 32 levels).
    pub expr: ExprLimits,
    /// Longest alert message template, in bytes (default 4 KiB).
    pub max_template_bytes: usize,
    /// Longest `within`, window `size`/`advance` and session `gap` (default 90 days).
    pub max_duration: Duration,
    /// Largest number in a quantifier (`times: n`, `min`, `max`) (default 10,000).
    pub max_quantifier: u32,
    /// Most hopping windows open at once per key, i.e. the largest
    /// `size / advance` (default 1,000).
    pub max_open_windows: u32,
    /// Largest count window (`window: {count: n}`), in events (default 10,000).
    pub max_count_window: u32,
}

impl Default for RuleLimits {
    fn default() -> Self {
        RuleLimits {
            max_rule_bytes: 64 * 1024,
            max_steps: 32,
            expr: ExprLimits::default(),
            max_template_bytes: 4 * 1024,
            max_duration: Duration::from_secs(90 * 24 * 3600),
            max_quantifier: 10_000,
            max_open_windows: 1_000,
            max_count_window: 10_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let l = RuleLimits::default();
        assert_eq!(l.max_rule_bytes, 65_536);
        assert_eq!(l.max_steps, 32);
        assert_eq!(l.max_template_bytes, 4_096);
        assert_eq!(l.max_duration.to_string(), "90d");
        assert_eq!(l.max_quantifier, 10_000);
        assert_eq!(l.max_open_windows, 1_000);
        assert_eq!(l.max_count_window, 10_000);
    }

    #[test]
    fn settings_override_some_fields_and_keep_the_rest() {
        let l: RuleLimits =
            serde_json::from_str(r#"{"max_steps": 8, "max_duration": "7d"}"#).expect("valid");
        assert_eq!(l.max_steps, 8);
        assert_eq!(l.max_duration, Duration::from_secs(7 * 24 * 3600));
        assert_eq!(l.max_quantifier, 10_000);
        assert!(serde_json::from_str::<RuleLimits>(r#"{"max_stepz": 8}"#).is_err());
    }
}
