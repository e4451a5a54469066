//! Reading rule text: every problem at once, each with its path, line and
//! column (YAML and JSON), before and along with the semantic checks.

use std::path::Path;

use cepheus::rules::expr::{self, ExprLimits, Scope};
use cepheus::rules::{load, parse, Format, Problem, RuleLimits};

/// Whether the CEL compiler is in (it is a skeleton that refuses every
/// expression until the expression work lands). Tests that need a rule to
/// compile are skipped, loudly, without it.
fn expr_ready() -> bool {
    let ready = expr::compile("true", &Scope::default(), &ExprLimits::default()).is_ok();
    if !ready {
        eprintln!(
            "NOTE: the CEL compiler is a skeleton; the parts of this test that need it are skipped"
        );
    }
    ready
}

fn problems(text: &str, format: Format) -> Vec<Problem> {
    match load(text, format, 1, &RuleLimits::default()) {
        Ok(rule) => panic!("expected problems, got rule {}", rule.id),
        Err(problems) => {
            assert!(
                !problems.is_empty(),
                "an Err always holds at least one problem"
            );
            problems
        }
    }
}

/// The one problem at `path`, whatever else there is.
fn at<'a>(problems: &'a [Problem], path: &str) -> &'a Problem {
    let found: Vec<&Problem> = problems.iter().filter(|p| p.path == path).collect();
    match found.as_slice() {
        [one] => one,
        _ => panic!(
            "expected one problem at `{path}`, found {}: {problems:#?}",
            found.len()
        ),
    }
}

/// Problems other than the skeleton compiler refusing valid expressions.
fn real(problems: &[Problem]) -> Vec<&Problem> {
    problems
        .iter()
        .filter(|p| !p.message.starts_with("cannot compile"))
        .collect()
}

const SEVEN_MISTAKES: &str = r#"id: Login Burst
severity: hgh
sequence:
  within: 5 minutes
  contigity: strict
  steps:
    - name: failures
      match: type == "login_failed"
      times: {min: 5, max: 3}
    - name: failures
      match: type == "login_success"
      optional: maybe
"#;

#[test]
fn a_rule_with_seven_mistakes_lists_all_seven_with_path_line_and_column() {
    let found = problems(SEVEN_MISTAKES, Format::Yaml);
    let expected: [(&str, u32, u32, &str); 7] = [
        ("id", 1, 5, "`id` may use only lowercase letters, digits, `.`, `_` and `-`, but `Login Burst` has uppercase letters and spaces: try `login-burst`"),
        ("severity", 2, 11, "`severity` must be one of `info`, `low`, `medium`, `high`, `critical`, not `hgh` (did you mean `high`?)"),
        ("sequence.within", 4, 11, "`within` must be a duration such as 30s, 5m or 1h30m, not `5 minutes` (write `5m`)"),
        ("sequence.contigity", 5, 3, "unknown field `contigity` in `sequence` (did you mean `contiguity`?)"),
        ("sequence.steps[0].times", 9, 7, "`min` (5) is larger than `max` (3)"),
        ("sequence.steps[1].name", 10, 13, "step 1 is also named `failures`: step names must be unique"),
        ("sequence.steps[1].optional", 12, 17, "`optional` must be true or false, not `maybe`"),
    ];
    for (path, line, column, message) in expected {
        let p = at(&found, path);
        assert_eq!((p.line, p.column), (Some(line), Some(column)), "{p}");
        assert_eq!(p.message, message);
    }
    assert_eq!(real(&found).len(), 7, "{found:#?}");
    // Reading order.
    let lines: Vec<u32> = found.iter().filter_map(|p| p.line).collect();
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{lines:?}");
    assert_eq!(
        at(&found, "sequence.within").to_string(),
        "sequence.within (line 4, column 11): `within` must be a duration such as 30s, 5m or 1h30m, not `5 minutes` (write `5m`)"
    );
}

#[test]
fn unknown_fields_get_a_suggestion_or_the_list_of_fields() {
    let found = problems(
        "id: a\ndescripton: x\ncolour: red\nabsence: {expect: 'true', within: 5m}\n",
        Format::Yaml,
    );
    let p = at(&found, "descripton");
    assert_eq!(
        p.message,
        "unknown field `descripton` in the rule (did you mean `description`?)"
    );
    assert_eq!((p.line, p.column), (Some(2), Some(1)));
    let p = at(&found, "colour");
    assert!(
        p.message.starts_with(
            "unknown field `colour` in the rule; the fields here are `id`, `description`"
        ),
        "{p}"
    );
}

#[test]
fn a_field_at_the_wrong_level_is_told_where_it_belongs() {
    let found = problems(
        "id: a\nwithin: 5m\nabsence: {expect: 'true', within: 5m}\n",
        Format::Yaml,
    );
    let p = at(&found, "within");
    assert!(
        p.message.starts_with(
            "`within` is not a field of the rule; it belongs in `sequence` or `absence`"
        ),
        "{p}"
    );
}

#[test]
fn repeated_keys_are_reported_at_the_repeat() {
    let found = problems(
        "id: a\nid: b\nabsence: {expect: 'true', within: 5m}\n",
        Format::Yaml,
    );
    let p = at(&found, "id");
    assert_eq!(
        p.message,
        "`id` is given more than once (first on line 1): keep one"
    );
    assert_eq!(p.line, Some(2));
}

#[test]
fn wrong_types_are_named() {
    let text = "id: [a]\nenabled: 1\nabsence:\n  expect: {a: 1}\n  within: 5m\nthreshold: [x]\n";
    let found = problems(text, Format::Yaml);
    assert_eq!(at(&found, "id").message, "`id` must be text, not a list");
    assert_eq!(
        at(&found, "enabled").message,
        "`enabled` must be true or false, not the number 1"
    );
    assert_eq!(
        at(&found, "absence.expect").message,
        "`expect` must be text, not a mapping"
    );
    let p = at(&found, "threshold");
    assert!(
        p.message
            .starts_with("`threshold` must be a mapping with the fields `match`, `window`"),
        "{p}"
    );
    // The unreadable `threshold` still counts as a second pattern kind…
    assert!(
        found
            .iter()
            .any(|p| p.message.starts_with("a rule has exactly one pattern kind")),
        "{found:#?}"
    );
    // …but its missing window and comparison are not reported again.
    assert!(
        !found.iter().any(|p| p.path.starts_with("threshold.")),
        "{found:#?}"
    );
}

#[test]
fn numbers_and_booleans_are_taken_as_written_where_text_is_expected() {
    let text = "id: 42\nabsence: {expect: true, within: 30}\n";
    let found = problems(text, Format::Yaml);
    // `within: 30` is read as the text `30`, then found to lack a unit.
    let p = at(&found, "absence.within");
    assert_eq!(p.message, "`within` must be a duration such as 30s, 5m or 1h30m, not `30` (add a unit: `30s`, `30m`, `30h`)");
    assert!(!found.iter().any(|p| p.path == "id"), "{found:#?}");
}

#[test]
fn missing_required_fields_point_at_their_parent() {
    let text = "id: a\nabsence:\n  after: type == \"order_placed\"\n";
    let found = problems(text, Format::Yaml);
    let p = at(&found, "absence.expect");
    assert!(p.message.starts_with("`expect` is required: "), "{p}");
    assert_eq!((p.line, p.column), (Some(2), Some(1)));
    assert!(at(&found, "absence.within")
        .message
        .starts_with("`within` is required: "));
    let found = problems(
        "description: no id\nabsence: {expect: 'true', within: 5m}\n",
        Format::Yaml,
    );
    let p = at(&found, "id");
    assert!(p.message.starts_with("`id` is required"), "{p}");
    assert_eq!((p.line, p.column), (Some(1), Some(1)));
}

#[test]
fn empty_values_of_required_fields_are_reported() {
    let found = problems("id: a\nabsence:\n  expect:\n  within: 5m\n", Format::Yaml);
    assert!(at(&found, "absence.expect")
        .message
        .starts_with("`expect` is empty: "));
}

#[test]
fn bad_steps_keep_their_index() {
    let text = "id: a\nsequence:\n  steps:\n    - just text\n    - match: type == \"b\"\n      times: lots\n";
    let found = problems(text, Format::Yaml);
    let p = at(&found, "sequence.steps[0]");
    assert!(
        p.message
            .starts_with("step 1 must be a mapping with the fields `name`, `match`"),
        "{p}"
    );
    assert_eq!(p.line, Some(4));
    let p = at(&found, "sequence.steps[1].times");
    assert_eq!(
        p.message,
        "`times` must be a whole number such as 3, or a range such as {min: 2, max: 5}, not `lots`"
    );
    let found = problems("id: a\nsequence:\n  steps: {match: x}\n", Format::Yaml);
    assert!(at(&found, "sequence.steps")
        .message
        .starts_with("`steps` must be a list of steps"));
    let found = problems("id: a\nsequence:\n  within: 5m\n", Format::Yaml);
    assert!(at(&found, "sequence.steps")
        .message
        .starts_with("`steps` is required"));
}

#[test]
fn negative_and_fractional_counts_are_refused() {
    let text = "id: a\nsequence:\n  steps:\n    - match: x\n      times: -2\n    - match: y\n      times: {min: 1.5}\n";
    let found = problems(text, Format::Yaml);
    assert_eq!(
        at(&found, "sequence.steps[0].times").message,
        "`times` must be a whole number of 0 or more, not -2"
    );
    assert_eq!(
        at(&found, "sequence.steps[1].times.min").message,
        "`min` must be a whole number such as 3, not the number 1.5"
    );
}

#[test]
fn non_finite_numbers_are_not_numbers() {
    let found = problems(
        "id: a\nthreshold: {window: {sliding: 1m}, above: .nan}\n",
        Format::Yaml,
    );
    assert_eq!(
        at(&found, "threshold.above").message,
        "`above` must be a number such as 100 or 0.5, not `.nan`"
    );
}

#[test]
fn yaml_syntax_errors_are_one_located_problem() {
    let found = problems("id: a\nsequence: [x\nmore: 1\n", Format::Yaml);
    assert_eq!(found.len(), 1);
    assert!(
        found[0].message.starts_with("this is not valid YAML: "),
        "{}",
        found[0]
    );
    assert!(found[0].line.is_some());
    assert_eq!(found[0].path, "");
}

#[test]
fn one_rule_per_file() {
    let found = problems("id: a\n---\nid: b\n", Format::Yaml);
    assert_eq!(found.len(), 1);
    assert!(
        found[0].message.starts_with("one rule per file"),
        "{}",
        found[0]
    );
}

#[test]
fn empty_and_non_mapping_documents_are_refused() {
    assert!(problems("", Format::Yaml)[0]
        .message
        .starts_with("the document is empty"));
    assert!(problems("  \n# nothing\n", Format::Yaml)[0]
        .message
        .starts_with("the document is empty"));
    assert!(problems("[]", Format::Json)[0]
        .message
        .starts_with("a rule must be a mapping"));
    assert!(problems("just words", Format::Yaml)[0]
        .message
        .starts_with("a rule must be a mapping"));
    assert!(problems("null", Format::Json)[0]
        .message
        .starts_with("the document is empty"));
}

#[test]
fn oversize_documents_are_refused_before_parsing() {
    let limits = RuleLimits {
        max_rule_bytes: 100,
        ..RuleLimits::default()
    };
    // Not even valid YAML: proves it is never parsed.
    let text = format!("id: a\n{}: [", "x".repeat(200));
    let found = load(&text, Format::Yaml, 1, &limits).expect_err("too large");
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].message,
        "the rule is 209 bytes long; the limit (`max_rule_bytes`) is 100 bytes"
    );
    let default_limit = "x".repeat(64 * 1024 + 1);
    let found =
        load(&default_limit, Format::Yaml, 1, &RuleLimits::default()).expect_err("too large");
    assert!(
        found[0]
            .message
            .contains("(`max_rule_bytes`) is 65536 bytes"),
        "{}",
        found[0]
    );
}

#[test]
fn json_syntax_errors_are_located() {
    let found = problems(
        "{\"id\": \"a\",\n \"absence\": {\"expect\": \"true\" \"within\": \"5m\"}}",
        Format::Json,
    );
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].message,
        "this is not valid JSON: expected `,` or `}`"
    );
    assert_eq!((found[0].line, found[0].column), (Some(2), Some(31)));
    // YAML-only syntax is not JSON.
    assert!(problems("id: a\n", Format::Json)[0]
        .message
        .starts_with("this is not valid JSON: "));
    assert!(problems("{\"id\": \"a\",}", Format::Json)[0]
        .message
        .starts_with("this is not valid JSON: "));
}

#[test]
fn json_problems_carry_lines_and_columns() {
    let text = r#"{
  "id": "a",
  "sevrity": "high",
  "absence": {"expect": "true", "within": "5 minutes"},
  "alert": {"message": 7}
}"#;
    let found = problems(text, Format::Json);
    let p = at(&found, "sevrity");
    assert_eq!(
        p.message,
        "unknown field `sevrity` in the rule (did you mean `severity`?)"
    );
    assert_eq!((p.line, p.column), (Some(3), Some(3)));
    let p = at(&found, "absence.within");
    assert_eq!((p.line, p.column), (Some(4), Some(43)));
    // `"message": 7` is taken as the text `7`, a valid template.
    assert_eq!(real(&found).len(), 2, "{found:#?}");
}

#[test]
fn json_repeated_keys_are_reported() {
    let found = problems(
        "{\"id\": \"a\", \"id\": \"b\", \"absence\": {\"expect\": \"true\", \"within\": \"5m\"}}",
        Format::Json,
    );
    assert!(at(&found, "id")
        .message
        .starts_with("`id` is given more than once"));
}

#[test]
fn parse_alone_returns_document_locations_and_problems() {
    let parsed = parse::parse(
        "id: a\nseverity: high\nfoo: 1\n",
        Format::Yaml,
        &RuleLimits::default(),
    );
    let document = parsed.document.expect("readable");
    assert_eq!(document.id, "a");
    assert_eq!(parsed.problems.len(), 1);
    assert_eq!(
        parsed.locations.of("severity").map(|p| (p.line, p.column)),
        Some((2, 11))
    );
}

#[test]
fn formats_come_from_file_names_and_content_types() {
    assert_eq!(
        Format::from_path(Path::new("rules/a.yaml")),
        Some(Format::Yaml)
    );
    assert_eq!(Format::from_path(Path::new("a.YML")), Some(Format::Yaml));
    assert_eq!(Format::from_path(Path::new("a.json")), Some(Format::Json));
    assert_eq!(Format::from_path(Path::new("a.txt")), None);
    assert_eq!(Format::from_path(Path::new("yaml")), None);
    assert_eq!(
        Format::from_content_type("application/json; charset=utf-8"),
        Some(Format::Json)
    );
    assert_eq!(
        Format::from_content_type("Application/YAML"),
        Some(Format::Yaml)
    );
    assert_eq!(
        Format::from_content_type("application/x-yaml"),
        Some(Format::Yaml)
    );
    assert_eq!(Format::from_content_type("text/yaml"), Some(Format::Yaml));
    assert_eq!(
        Format::from_content_type("application/vnd.cepheus+json"),
        Some(Format::Json)
    );
    assert_eq!(Format::from_content_type("text/plain"), None);
}

#[test]
fn a_valid_rule_loads_from_yaml_and_json_alike() {
    if !expr_ready() {
        return;
    }
    let yaml = "id: brute-force-login\nseverity: high\nsequence:\n  within: 5m\n  steps:\n    - name: failures\n      match: type == \"login_failed\"\n      times: {min: 3}\n    - name: success\n      match: type == \"login_success\"\n";
    let from_yaml = load(yaml, Format::Yaml, 3, &RuleLimits::default()).expect("valid");
    let json = serde_json::to_string(&from_yaml.document).expect("serializes");
    let from_json = load(&json, Format::Json, 3, &RuleLimits::default()).expect("valid");
    assert_eq!(from_yaml.document, from_json.document);
    assert_eq!(&*from_json.id, "brute-force-login");
    assert_eq!(from_json.version, 3);
}
