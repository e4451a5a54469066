//! Checks and compiles `threshold:`.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Checker;
use crate::rules::expr::Scope;
use crate::rules::model::{
    Aggregate, CompareOp, Comparison, Condition, NamedAggregate, ThresholdPattern, WindowSpec,
};
use crate::rules::schema::{ThresholdDoc, WindowDoc};
use crate::rules::suggest;

const WINDOW: &str = "threshold.window";
const AGGREGATE: &str = "threshold.aggregate";
const AGGREGATES: &[&str] = &["count", "sum", "avg", "min", "max", "distinct"];
const AGGREGATE_FORMS: &str = "count, sum(expr), avg(expr), min(expr), max(expr) or distinct(expr)";

/// Most aggregates one threshold may compute.
pub const MAX_AGGREGATES: usize = 16;

/// Names an aggregate may not take: the alert's values and the message's
/// variables already use them.
pub const RESERVED_AGGREGATE_NAMES: [&str; 16] = [
    "value",
    "count",
    "limit",
    "window_start",
    "window_end",
    "aggregate",
    "condition",
    "events_omitted",
    "rule",
    "severity",
    "last",
    "key",
    "entity",
    "type",
    "time",
    "data",
];

impl Checker<'_> {
    pub(super) fn threshold(&mut self, doc: &ThresholdDoc) -> Option<ThresholdPattern> {
        let scope = Scope::default();
        // NB: without `match`, every event the rule sees (after `when`) counts.
        let predicate = match doc.match_.as_deref() {
            Some(source) => self.expression("threshold.match", source, &scope),
            None => self.expression("threshold.match", "true", &scope),
        };
        let window = self.window(&doc.window);
        let (aggregates, condition) = match &doc.aggregates {
            Some(written) => self.several(doc, written),
            None => {
                if doc.condition.is_some() {
                    self.report(
                        "threshold.condition",
                        "`condition` goes with `aggregates`: name the aggregates it compares, e.g. \
                         aggregates: {n: count, total: sum(data.amount)}, or use `aggregate` with `above`, \
                         `at_least`, `below` or `at_most`",
                    );
                }
                let aggregate = self.aggregate(AGGREGATE, doc.aggregate.as_deref());
                let comparison = self.comparison(doc);
                let named = aggregate.map(|aggregate| {
                    vec![NamedAggregate {
                        name: Arc::from("value"),
                        aggregate,
                    }]
                });
                (named, comparison.map(Condition::Compare))
            }
        };
        Some(ThresholdPattern {
            predicate: predicate?,
            window: window?,
            aggregates: aggregates?,
            condition: condition?,
        })
    }

    /// `aggregates: {name: aggregate, ...}` with `condition`.
    fn several(
        &mut self,
        doc: &ThresholdDoc,
        written: &BTreeMap<String, String>,
    ) -> (Option<Vec<NamedAggregate>>, Option<Condition>) {
        const PATH: &str = "threshold.aggregates";
        let mut usable = true;
        if doc.aggregate.is_some() {
            self.report(
                AGGREGATE,
                "a threshold has either `aggregate` (with `above`, `at_least`, `below` or `at_most`) or \
                 `aggregates` (with `condition`), not both: move this one into `aggregates` under a name",
            );
            usable = false;
        }
        for (name, given) in [
            ("above", doc.above.is_some()),
            ("at_least", doc.at_least.is_some()),
            ("below", doc.below.is_some()),
            ("at_most", doc.at_most.is_some()),
        ] {
            if given {
                self.report(
                    &format!("threshold.{name}"),
                    format!(
                        "with `aggregates`, the limit goes into `condition` (e.g. condition: n > 5 && total > \
                         10000), not `{name}`"
                    ),
                );
                usable = false;
            }
        }
        if written.is_empty() {
            self.report(
                PATH,
                "`aggregates` needs at least one, e.g. {n: count, total: sum(data.amount)}",
            );
            return (None, None);
        }
        if written.len() > MAX_AGGREGATES {
            self.report(
                PATH,
                format!(
                    "`aggregates` has {} entries; a threshold computes at most {MAX_AGGREGATES}",
                    written.len()
                ),
            );
            return (None, None);
        }
        let mut aggregates = Vec::with_capacity(written.len());
        let mut names: Vec<Arc<str>> = Vec::with_capacity(written.len());
        for (name, text) in written {
            let path = format!("{PATH}.{name}");
            if let Some(problem) = aggregate_name_problem(name) {
                self.report(&path, problem);
                usable = false;
                names.push(Arc::from(format!("__unusable_{}", names.len())));
            } else {
                names.push(Arc::from(name.as_str()));
            }
            match self.aggregate(&path, Some(text)) {
                Some(aggregate) => aggregates.push(NamedAggregate {
                    name: Arc::from(name.as_str()),
                    aggregate,
                }),
                None => usable = false,
            }
        }
        let condition = match doc.condition.as_deref() {
            None => {
                self.report(
                    PATH,
                    format!(
                        "`aggregates` needs a `condition` over them that says when to fire, e.g. condition: {} > 5",
                        names
                            .iter()
                            .find(|n| !n.starts_with("__"))
                            .map_or("n", |n| &**n)
                    ),
                );
                None
            }
            Some(source) => {
                let scope = Scope {
                    bindings: Vec::new(),
                    variables: names,
                };
                self.expression("threshold.condition", source, &scope)
            }
        };
        if !usable {
            return (None, None);
        }
        (Some(aggregates), condition.map(Condition::Expr))
    }

    fn window(&mut self, doc: &WindowDoc) -> Option<WindowSpec> {
        let kinds: Vec<&str> = [
            ("sliding", doc.sliding.is_some()),
            ("tumbling", doc.tumbling.is_some()),
            ("hopping", doc.hopping.is_some()),
            ("session", doc.session.is_some()),
            ("count", doc.count.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, present)| present.then_some(name))
        .collect();
        match kinds.as_slice() {
            [] => {
                self.report(
                    WINDOW,
                    "`window` needs one kind: sliding: 1m, tumbling: 1h, hopping: {size: 10m, advance: 1m}, \
                     session: {gap: 30s} or count: 100",
                );
                return None;
            }
            [_] => {}
            [first, rest @ ..] => {
                for extra in rest {
                    self.report(
                        &format!("{WINDOW}.{extra}"),
                        format!("a window has exactly one kind, but this one has `{first}` and `{extra}`: keep one"),
                    );
                }
                return None;
            }
        }
        if let Some(size) = &doc.sliding {
            return Some(WindowSpec::Sliding {
                size: self.duration(&format!("{WINDOW}.sliding"), size)?,
            });
        }
        if let Some(size) = &doc.tumbling {
            return Some(WindowSpec::Tumbling {
                size: self.duration(&format!("{WINDOW}.tumbling"), size)?,
            });
        }
        if let Some(events) = doc.count {
            let path = format!("{WINDOW}.count");
            let limit = self.limits.max_count_window;
            if events == 0 {
                self.report(
                    &path,
                    "`count` must be at least 1: the window holds the last `count` matching events",
                );
                return None;
            }
            if events > limit {
                self.report(
                    &path,
                    format!("`count` is {events}; the limit (`max_count_window`) is {limit}"),
                );
                return None;
            }
            return Some(WindowSpec::Count { events });
        }
        if let Some(session) = &doc.session {
            return Some(WindowSpec::Session {
                gap: self.duration(&format!("{WINDOW}.session.gap"), &session.gap)?,
            });
        }
        let hopping = doc.hopping.as_ref()?;
        let size = self.duration(&format!("{WINDOW}.hopping.size"), &hopping.size);
        let advance_path = format!("{WINDOW}.hopping.advance");
        let advance = self.duration(&advance_path, &hopping.advance);
        let (size, advance) = (size?, advance?);
        if advance > size {
            self.report(
                &advance_path,
                format!("`advance` ({advance}) must not be longer than `size` ({size})"),
            );
            return None;
        }
        if size.millis() % advance.millis() != 0 {
            self.report(
                &advance_path,
                format!(
                    "`size` ({size}) must be a whole multiple of `advance` ({advance}), so that every event \
                     falls in the same number of windows"
                ),
            );
            return None;
        }
        let open = size.millis() / advance.millis();
        let limit = self.limits.max_open_windows;
        if open > i64::from(limit) {
            self.report(
                &advance_path,
                format!(
                    "`size / advance` is {open}: that many windows would be open at once for each key; the limit \
                     (`max_open_windows`) is {limit}: make `advance` longer or `size` shorter"
                ),
            );
            return None;
        }
        Some(WindowSpec::Hopping { size, advance })
    }

    /// `count` (the default), `sum(expr)`, `avg(expr)`, `min(expr)`,
    /// `max(expr)` or `distinct(expr)`.
    fn aggregate(&mut self, path: &str, text: Option<&str>) -> Option<Aggregate> {
        let Some(text) = text else {
            return Some(Aggregate::Count);
        };
        // Byte offsets into `text`: where the name starts, where what follows it starts.
        let name_start = text.len() - text.trim_start().len();
        let name_len = text[name_start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .count();
        let name = &text[name_start..name_start + name_len];
        let after_name = &text[name_start + name_len..];
        let rest_start = name_start + name_len + (after_name.len() - after_name.trim_start().len());
        let rest = text[rest_start..].trim_end();
        if !AGGREGATES.contains(&name) {
            let hint = suggest::did_you_mean(name, AGGREGATES);
            self.report(
                path,
                format!(
                    "`{}` must be {AGGREGATE_FORMS}, not `{}`{hint}",
                    super::field_name(path),
                    crate::rules::located::shorten(text)
                ),
            );
            return None;
        }
        if name == "count" {
            if rest.is_empty() || rest == "()" {
                return Some(Aggregate::Count);
            }
            self.report(
                path,
                "`count` takes no expression: write `count`, or distinct(expr) to count distinct values",
            );
            return None;
        }
        let inner = rest
            .strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .filter(|inner| !inner.trim().is_empty());
        let Some(inner) = inner else {
            self.report(
                path,
                format!("`{name}` needs an expression in parentheses, e.g. {name}(data.amount)"),
            );
            return None;
        };
        // `inner` starts just after the `(` at `rest_start`.
        let offset = text[..rest_start + 1].chars().count();
        let expr = self.expression_in(path, text, offset, inner, &Scope::default())?;
        Some(match name {
            "sum" => Aggregate::Sum(expr),
            "avg" => Aggregate::Avg(expr),
            "min" => Aggregate::Min(expr),
            "max" => Aggregate::Max(expr),
            _ => Aggregate::Distinct(expr),
        })
    }

    fn comparison(&mut self, doc: &ThresholdDoc) -> Option<Comparison> {
        let given: Vec<(&str, CompareOp, f64)> = [
            ("above", CompareOp::Above, doc.above),
            ("at_least", CompareOp::AtLeast, doc.at_least),
            ("below", CompareOp::Below, doc.below),
            ("at_most", CompareOp::AtMost, doc.at_most),
        ]
        .into_iter()
        .filter_map(|(name, op, limit)| limit.map(|l| (name, op, l)))
        .collect();
        let Some(&(first, op, limit)) = given.first() else {
            self.report(
                "threshold",
                "a threshold needs a comparison: one of `above`, `at_least`, `below` or `at_most`, e.g. above: 100",
            );
            return None;
        };
        for (extra, _, _) in &given[1..] {
            self.report(
                &format!("threshold.{extra}"),
                format!("a threshold has exactly one comparison, but this one has `{first}` and `{extra}`: keep one"),
            );
        }
        if !limit.is_finite() {
            self.report(
                &format!("threshold.{first}"),
                format!("`{first}` must be a finite number"),
            );
            return None;
        }
        (given.len() == 1).then_some(Comparison { op, limit })
    }
}

/// Whether `name` can name an aggregate: an identifier, not reserved.
fn aggregate_name_problem(name: &str) -> Option<String> {
    let mut chars = name.chars();
    let starts_well = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !starts_well || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Some(format!(
            "aggregate name `{}` is not an identifier: use letters, digits and `_`, starting with a letter or \
             `_` (the condition refers to it by name, as in n > 5)",
            crate::rules::located::shorten(name)
        ));
    }
    if RESERVED_AGGREGATE_NAMES.contains(&name) {
        return Some(format!(
            "aggregate name `{name}` is reserved (the alert and its message use {}): choose another, e.g. n or total",
            RESERVED_AGGREGATE_NAMES
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if super::CEL_RESERVED.contains(&name) {
        return Some(format!(
            "aggregate name `{name}` is a CEL keyword: choose another"
        ));
    }
    None
}
