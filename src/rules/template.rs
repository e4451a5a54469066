//! Alert message templates: text with `{{ expr }}` placeholders.
//!
//! Each placeholder holds an expression (see [`crate::rules::expr`]),
//! compiled against the same scope as the rule's predicates:
//! `"{{key}}: {{failures.count}} failed logins, then a success from {{success.data.ip}}"`.
//!
//! Rendering a placeholder gives strings as they are; numbers, bools,
//! timestamps and durations in the canonical text of
//! [`Expr::text`](crate::rules::expr::Expr::text); lists, maps and events as
//! compact JSON; and `<no value>` for null or when the expression cannot be
//! evaluated (a missing key, say). Rendering never fails.
//!
//! The text between `{{` and the next `}}` is the expression, so an
//! expression cannot itself contain `}}` (not even inside a string
//! literal). There is no escape for a literal `{{`. A `}}` outside a
//! placeholder is plain text.

use crate::rules::expr::{self, EvalContext, Expr, ExprError, ExprLimits, Scope};

/// What a placeholder that cannot be evaluated renders as.
pub const NO_VALUE: &str = "<no value>";

/// A compiled message template.
#[derive(Debug, Clone)]
pub struct Template {
    source: String,
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone)]
enum Piece {
    Text(String),
    Placeholder(Expr),
}

impl Template {
    /// Compiles every placeholder of `text` against `scope`.
    ///
    /// All problems are reported, each with its 1-based column (in
    /// characters) within the whole template: errors inside a placeholder
    /// point into it; a `{{` without a closing `}}`, and an empty
    /// placeholder, point at the `{{`.
    pub fn compile(
        text: &str,
        scope: &Scope,
        limits: &ExprLimits,
    ) -> Result<Template, Vec<ExprError>> {
        let mut pieces = Vec::new();
        let mut errors = Vec::new();
        let mut rest = text;
        // Byte offset of `rest` within `text`.
        let mut offset = 0;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_owned()));
            }
            let open_column = column(text, offset + open);
            let inner_start = open + 2;
            let Some(close) = rest[inner_start..].find("}}") else {
                errors.push(ExprError {
                    message: "`{{` has no closing `}}`".to_owned(),
                    column: Some(open_column),
                });
                rest = "";
                break;
            };
            let inner = &rest[inner_start..inner_start + close];
            if inner.trim().is_empty() {
                errors.push(ExprError {
                    message: "the placeholder `{{ }}` is empty; put an expression inside, such as {{key}}".to_owned(),
                    column: Some(open_column),
                });
            } else {
                match expr::compile(inner, scope, limits) {
                    Ok(e) => pieces.push(Piece::Placeholder(e)),
                    Err(inner_errors) => {
                        // Columns inside the placeholder, shifted to the whole text.
                        let shift = column(text, offset + inner_start) - 1;
                        for e in inner_errors {
                            let e = ExprError {
                                column: e.column.map(|c| c + shift),
                                ..e
                            };
                            // NB: problems with the scope itself come back from
                            // every placeholder; report them once.
                            if !errors.contains(&e) {
                                errors.push(e);
                            }
                        }
                    }
                }
            }
            let consumed = inner_start + close + 2;
            offset += consumed;
            rest = &rest[consumed..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        if errors.is_empty() {
            Ok(Template {
                source: text.to_owned(),
                pieces,
            })
        } else {
            Err(errors)
        }
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders the template; a placeholder that cannot be evaluated renders as `<no value>`.
    pub fn render(&self, ctx: &EvalContext<'_>) -> String {
        let mut out = String::with_capacity(self.source.len());
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Placeholder(e) => match e.render(ctx) {
                    Some(text) => out.push_str(&text),
                    None => out.push_str(NO_VALUE),
                },
            }
        }
        out
    }

    /// The compiled placeholders, in order (for alerts that list the values
    /// that explain them).
    pub fn placeholders(&self) -> impl Iterator<Item = &Expr> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Placeholder(e) => Some(e),
            Piece::Text(_) => None,
        })
    }

    /// Binding slots any placeholder reads, ascending, without duplicates.
    pub fn binding_slots(&self) -> Vec<usize> {
        let mut slots: Vec<usize> = self
            .placeholders()
            .flat_map(|e| e.binding_slots().iter().copied())
            .collect();
        slots.sort_unstable();
        slots.dedup();
        slots
    }
}

/// The 1-based character column of the byte offset `at` in `text`.
fn column(text: &str, at: usize) -> usize {
    text.get(..at).map_or(at, |prefix| prefix.chars().count()) + 1
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{json, Map, Value};

    use super::*;
    use crate::event::Event;
    use crate::rules::expr::Binding;
    use crate::time::Timestamp;

    fn event(data: Value) -> Event {
        Event {
            id: Some("e-1".into()),
            key: "acct-42".into(),
            event_type: "login_success".into(),
            time: Timestamp(1_767_225_600_000),
            data: data.as_object().cloned().unwrap_or_default(),
        }
    }

    fn scope() -> Scope {
        Scope {
            bindings: vec![Arc::from("failures"), Arc::from("success")],
            variables: vec![Arc::from("count")],
        }
    }

    fn compile(text: &str) -> Result<Template, Vec<ExprError>> {
        Template::compile(text, &scope(), &ExprLimits::default())
    }

    fn render(
        template: &Template,
        current: &Event,
        bindings: &[Binding<'_>],
        variables: &[Value],
    ) -> String {
        let entity = Map::new();
        let ctx = EvalContext {
            key: "acct-42",
            event: Some(current),
            entity: &entity,
            bindings,
            variables,
        };
        template.render(&ctx)
    }

    #[test]
    fn renders_the_design_example() {
        let failure = event(json!({"ip": "10.0.0.1"}));
        let success = event(json!({"ip": "10.0.0.7"}));
        let template = compile(
            "{{key}}: {{failures.count}} failed logins, then a success from {{success.data.ip}}",
        )
        .unwrap();
        let bindings = [
            Binding {
                count: 4,
                first: Some(&failure),
                last: Some(&failure),
            },
            Binding {
                count: 1,
                first: Some(&success),
                last: Some(&success),
            },
        ];
        assert_eq!(
            render(&template, &success, &bindings, &[json!(0)]),
            "acct-42: 4 failed logins, then a success from 10.0.0.7"
        );
        assert_eq!(template.binding_slots(), vec![0, 1]);
        assert_eq!(template.placeholders().count(), 3);
    }

    #[test]
    fn renders_each_kind_of_value() {
        let e = event(
            json!({"amount": 2.0, "ratio": 0.25, "ok": true, "tags": ["a", 1], "obj": {"k": null}, "none": null}),
        );
        let template = compile(
            "{{data.amount}}|{{data.ratio}}|{{data.ok}}|{{data.tags}}|{{data.obj}}|{{data.none}}|{{data.missing}}|{{time}}|{{duration('90s')}}|{{count}}|{{ {'b': 1, 'a': [true]} }}",
        )
        .unwrap();
        assert_eq!(
            render(&template, &e, &[Binding::default(), Binding::default()], &[json!(7)]),
            "2|0.25|true|[\"a\",1]|{\"k\":null}|<no value>|<no value>|2026-01-01T00:00:00.000Z|1m30s|7|{\"a\":[true],\"b\":1}"
        );
    }

    #[test]
    fn unbound_steps_and_missing_context_render_as_no_value() {
        let template = compile("last ip {{failures.last.data.ip}}, n={{failures.count}}").unwrap();
        let e = event(json!({}));
        assert_eq!(
            render(
                &template,
                &e,
                &[Binding::default(), Binding::default()],
                &[]
            ),
            "last ip <no value>, n=0"
        );
        // A context shorter than the scope is an evaluation error, not a panic.
        assert_eq!(
            render(&template, &e, &[], &[]),
            "last ip <no value>, n=<no value>"
        );
    }

    #[test]
    fn plain_text_and_stray_braces_are_kept() {
        let template = compile("no placeholders } here }}").unwrap();
        assert_eq!(
            render(&template, &event(json!({})), &[], &[]),
            "no placeholders } here }}"
        );
        assert_eq!(template.source(), "no placeholders } here }}");
        let template = compile("é{{type}}é").unwrap();
        assert_eq!(
            render(&template, &event(json!({})), &[], &[]),
            "élogin_successé"
        );
    }

    #[test]
    fn scope_problems_are_reported_once() {
        let scope = Scope {
            bindings: vec![Arc::from("data")],
            variables: Vec::new(),
        };
        let errors =
            Template::compile("{{key}} {{key}}", &scope, &ExprLimits::default()).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
    }

    #[test]
    fn unclosed_placeholder_is_an_error_at_its_opening() {
        let errors = compile("ok {{key}} then {{ data.x").unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].column, Some(17));
        assert!(
            errors[0].message.contains("no closing"),
            "{}",
            errors[0].message
        );
    }

    #[test]
    fn placeholder_errors_point_into_the_whole_text() {
        let errors = compile("é {{ nope }} and {{ data.x + }} and {{}}").unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            errors[0].message.contains("unknown name `nope`"),
            "{}",
            errors[0].message
        );
        assert_eq!(errors[0].column, Some(6));
        assert!(
            errors[1].message.starts_with("syntax error"),
            "{}",
            errors[1].message
        );
        assert_eq!(errors[1].column, Some(30));
        assert!(errors[2].message.contains("empty"), "{}", errors[2].message);
        assert_eq!(errors[2].column, Some(37));
    }
}
