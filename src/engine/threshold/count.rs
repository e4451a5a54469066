//! Count windows (`window: {count: 100}`): the last N matching events, as
//! Esper's `win:length` and Siddhi's `#window.length`. Compiled from
//! `WindowSpec::Count` (`rules/compile/threshold.rs`).
//!
//! Each matching event enters the window and, once it holds more than N
//! events, pushes the oldest out (by event time, ties in acceptance order).
//! The condition is evaluated after every event and fires when it becomes
//! true (edge-triggered), re-arming when it becomes false, like a sliding
//! window. Nothing expires with time: the window has no timers, and holds at
//! most N events per key. The alert's `window_start` is the time of the
//! oldest event in the window, `window_end` the newest.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::sliding::SlidingWindow;
use crate::engine::aggregate::Samples;
use crate::engine::alert::Alert;
use crate::engine::counters::DropCounters;
use crate::engine::env::RuleEnv;
use crate::event::{Event, EventRef};
use crate::rules::ThresholdPattern;

/// The last N matching events of one key and the edge-trigger state.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CountWindow {
    window: SlidingWindow,
}

impl CountWindow {
    /// True when nothing needs remembering.
    pub fn is_empty(&self) -> bool {
        self.window.is_empty()
    }

    /// Events held.
    pub fn len(&self) -> usize {
        self.window.len()
    }

    /// Adds one matching event and evaluates the condition.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn add(
        &mut self,
        env: &RuleEnv<'_>,
        pattern: &ThresholdPattern,
        n: u32,
        event: &Arc<Event>,
        ordinal: u64,
        sample: Samples,
        reference: EventRef,
        full: Option<&Arc<Event>>,
        alerts: &mut Vec<Alert>,
        dropped: &mut DropCounters,
    ) {
        self.window.add_last(
            env, pattern, n, event, ordinal, sample, reference, full, alerts, dropped,
        );
    }

    /// A JSON view of the window.
    pub fn view(&self) -> Value {
        let mut view = self.window.view();
        view["kind"] = Value::from("count");
        view
    }
}
