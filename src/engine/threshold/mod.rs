//! Thresholds: an aggregate over a window compared with a limit.
//!
//! Only events matching the threshold's `match` (and, for `sum`, `avg`,
//! `min`, `max`, `distinct`, whose expression yields a number or value)
//! enter a window. Each window kind has its file, with its semantics:
//! `sliding.rs`, `aligned.rs` (tumbling and hopping), `session.rs`,
//! `count.rs`; the
//! alert they fire is assembled in `alert.rs`. The rule syntax is
//! `rules::schema::WindowDoc`, compiled in `rules/compile/threshold.rs` into
//! a `rules::WindowSpec`, which [`WindowSpec`] and [`ThresholdState`] pair
//! here, in one place ([`bind`]).

mod alert;
mod aligned;
mod count;
mod session;
mod sliding;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::aggregate::Samples;
use crate::engine::alert::Alert;
use crate::engine::counters::DropCounters;
use crate::engine::env::RuleEnv;
use crate::event::Event;
use crate::rules::{Condition, ThresholdPattern, WindowSpec};
use crate::time::{Duration, Timestamp};

pub use aligned::AlignedWindows;
pub use count::CountWindow;
pub use session::Sessions;
pub use sliding::SlidingWindow;

/// What a threshold did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// It entered its windows.
    Entered,
    /// It does not feed the aggregate (`match` or the expression refused it).
    Ignored,
    /// Every window it belongs to has already closed.
    WindowClosed,
}

/// Window state of one threshold rule for one key, one variant per window
/// kind (tumbling and hopping share theirs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdState {
    /// A sliding window.
    Sliding(SlidingWindow),
    /// Open tumbling or hopping windows.
    Aligned(AlignedWindows),
    /// Open sessions.
    Sessions(Sessions),
    /// The last N events.
    Count(CountWindow),
}

/// A window spec with its state: every use matches this enum, so a new
/// window kind is a compile error until each handles it.
enum Bound<'a> {
    Sliding(Duration, &'a mut SlidingWindow),
    Aligned(Duration, Duration, &'a mut AlignedWindows),
    Session(Duration, &'a mut Sessions),
    Count(u32, &'a mut CountWindow),
}

/// Pairs `window` with `state`, the one place the two meet. NB: states are
/// created by [`ThresholdState::for_window`] for their rule's window and
/// dropped when the rule changes; were they ever to disagree, the state
/// would start afresh rather than be misread.
fn bind<'a>(window: &WindowSpec, state: &'a mut ThresholdState) -> Bound<'a> {
    let fits = matches!(
        (&*state, window),
        (ThresholdState::Sliding(_), WindowSpec::Sliding { .. })
            | (
                ThresholdState::Aligned(_),
                WindowSpec::Tumbling { .. } | WindowSpec::Hopping { .. }
            )
            | (ThresholdState::Sessions(_), WindowSpec::Session { .. })
            | (ThresholdState::Count(_), WindowSpec::Count { .. })
    );
    if !fits {
        *state = ThresholdState::for_window(window);
    }
    match (*window, state) {
        (WindowSpec::Sliding { size }, ThresholdState::Sliding(s)) => Bound::Sliding(size, s),
        (WindowSpec::Tumbling { size }, ThresholdState::Aligned(a)) => {
            Bound::Aligned(size, size, a)
        }
        (WindowSpec::Hopping { size, advance }, ThresholdState::Aligned(a)) => {
            Bound::Aligned(size, advance, a)
        }
        (WindowSpec::Session { gap }, ThresholdState::Sessions(s)) => Bound::Session(gap, s),
        (WindowSpec::Count { events }, ThresholdState::Count(c)) => Bound::Count(events, c),
        (
            WindowSpec::Sliding { .. }
            | WindowSpec::Tumbling { .. }
            | WindowSpec::Hopping { .. }
            | WindowSpec::Session { .. }
            | WindowSpec::Count { .. },
            _,
        ) => unreachable!("the state was just made for the window"),
    }
}

impl ThresholdState {
    /// Empty state for a window kind.
    pub fn for_window(window: &WindowSpec) -> ThresholdState {
        match window {
            WindowSpec::Sliding { .. } => ThresholdState::Sliding(SlidingWindow::default()),
            WindowSpec::Tumbling { .. } | WindowSpec::Hopping { .. } => {
                ThresholdState::Aligned(AlignedWindows::default())
            }
            WindowSpec::Session { .. } => ThresholdState::Sessions(Sessions::default()),
            WindowSpec::Count { .. } => ThresholdState::Count(CountWindow::default()),
        }
    }

    /// True when nothing needs remembering.
    pub fn is_empty(&self) -> bool {
        match self {
            ThresholdState::Sliding(s) => s.is_empty(),
            ThresholdState::Aligned(a) => a.is_empty(),
            ThresholdState::Sessions(s) => s.is_empty(),
            ThresholdState::Count(c) => c.is_empty(),
        }
    }

    /// Entries, windows or sessions held.
    pub fn len(&self) -> usize {
        match self {
            ThresholdState::Sliding(s) => s.len(),
            ThresholdState::Aligned(a) => a.len(),
            ThresholdState::Sessions(s) => s.len(),
            ThresholdState::Count(c) => c.len(),
        }
    }

    /// The watermark at which something next leaves or closes.
    pub fn next_deadline(&mut self, pattern: &ThresholdPattern) -> Option<Timestamp> {
        match bind(&pattern.window, self) {
            Bound::Sliding(size, s) => s.next_deadline(size),
            Bound::Aligned(size, _, a) => a.next_deadline(size),
            Bound::Session(gap, s) => s.next_deadline(gap),
            // Nothing leaves a count window with time.
            Bound::Count(..) => None,
        }
    }

    /// Adds the event to the windows it belongs to. `watermark` is the
    /// rule's: an event older than it (evaluated under `late: evaluate`)
    /// enters only windows still open, and is refused when none is.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_event(
        &mut self,
        env: &RuleEnv<'_>,
        pattern: &ThresholdPattern,
        event: &Arc<Event>,
        ordinal: u64,
        watermark: Timestamp,
        alerts: &mut Vec<Alert>,
        dropped: &mut DropCounters,
    ) -> Admission {
        let ctx = env.ctx(Some(event), &[]);
        if !pattern.predicate.matches(&ctx) {
            return Admission::Ignored;
        }
        let Some(sample) = Samples::of(&pattern.aggregates, &ctx) else {
            return Admission::Ignored;
        };
        let full = env.rule.message.is_some().then_some(event);
        let reference = env.reference(event, ordinal);
        let limits = (
            env.config.max_window_entries.max(1),
            env.config.max_explained_events,
        );
        let time = event.time;
        match bind(&pattern.window, self) {
            Bound::Sliding(size, s) => {
                if s.closed_for(time, size, watermark) {
                    return Admission::WindowClosed;
                }
                s.add(
                    env, pattern, size, event, ordinal, sample, reference, full, alerts, dropped,
                );
            }
            Bound::Aligned(size, advance, a) => {
                if a.closed_for(time, size, advance, watermark) {
                    return Admission::WindowClosed;
                }
                a.add(
                    time, size, advance, watermark, &sample, reference, full, limits, dropped,
                );
            }
            Bound::Session(gap, s) => {
                if s.closed_for(time, gap, watermark) {
                    return Admission::WindowClosed;
                }
                s.add(time, gap, &sample, reference, full, limits, dropped);
            }
            // NB: never closed: the last N events are always open to one more.
            Bound::Count(n, c) => c.add(
                env, pattern, n, event, ordinal, sample, reference, full, alerts, dropped,
            ),
        }
        Admission::Entered
    }

    /// Expires sliding entries, closes windows and sessions the watermark
    /// reached, in time order.
    pub(crate) fn advance(
        &mut self,
        env: &RuleEnv<'_>,
        pattern: &ThresholdPattern,
        watermark: Timestamp,
        alerts: &mut Vec<Alert>,
    ) {
        match bind(&pattern.window, self) {
            Bound::Sliding(size, s) => s.advance(env, pattern, size, watermark, alerts),
            Bound::Aligned(size, _, a) => a.advance(env, pattern, size, watermark, alerts),
            Bound::Session(gap, s) => s.advance(env, pattern, gap, watermark, alerts),
            Bound::Count(..) => {}
        }
    }

    /// A JSON view of the windows.
    pub fn view(&self) -> Value {
        match self {
            ThresholdState::Sliding(s) => s.view(),
            ThresholdState::Aligned(a) => a.view(),
            ThresholdState::Sessions(s) => s.view(),
            ThresholdState::Count(c) => c.view(),
        }
    }
}

/// Whether `pattern`'s condition holds for the aggregate values `value`
/// gives (by aggregate index): the single form compares the one aggregate
/// with its limit; `condition` sees every aggregate by name, null when it
/// has no value (a comparison with null is false).
pub(super) fn condition_holds(
    env: &RuleEnv<'_>,
    pattern: &ThresholdPattern,
    value: impl Fn(usize) -> Option<f64>,
) -> bool {
    match &pattern.condition {
        Condition::Compare(comparison) => value(0).is_some_and(|v| comparison.holds(v)),
        Condition::Expr(expr) => {
            let variables: Vec<Value> = (0..pattern.aggregates.len())
                .map(|i| value(i).map_or(Value::Null, alert::number))
                .collect();
            let mut ctx = env.ctx(None, &[]);
            ctx.variables = &variables;
            expr.matches(&ctx)
        }
    }
}
