//! What a user writes to say where alerts go: receivers, routes and the
//! `[delivery]` settings (serde types, checked here; the runtime is in
//! `worker.rs`). The same types are read from the config file and over REST.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::rules::{Mode, Severity};
use crate::time::Duration;

/// A value that is written but never read back: an HMAC key or a secret
/// header. `Debug` and the REST form hide it; only the store and the
/// worker that signs or sends see the text.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The body a receiver is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFormat {
    /// cepheus's own JSON: the notification with its alerts in their REST form.
    #[default]
    Cepheus,
    /// CloudEvents 1.0, structured mode (a batch for several alerts).
    Cloudevents,
    /// A Slack-compatible message: `{"text": "..."}`.
    Slack,
}

/// At most `rate` notifications per `per`, with bursts up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Notifications allowed per `per`.
    pub rate: u32,
    /// The period (default `1m`).
    #[serde(default = "one_minute")]
    #[schema(value_type = String, example = "1m")]
    pub per: Duration,
    /// Notifications that may go at once after a quiet time (default `rate`).
    #[serde(default)]
    pub burst: Option<u32>,
}

fn one_minute() -> Duration {
    Duration::from_secs(60)
}

/// A webhook receiver as written (config file or REST).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "name": "fraud-queue", "url": "https://hooks.example.com/cepheus", "format": "cepheus",
    "headers": {"X-Team": "fraud"}, "secret_headers": {"Authorization": "Bearer s3cr3t"},
    "hmac_secret": "shared-key", "timeout": "10s", "rate_limit": {"rate": 10, "per": "1m"}
}))]
pub struct ReceiverSpec {
    /// `[a-z0-9._-]`, unique.
    pub name: String,
    /// `http://` or `https://` URL the notifications are POSTed to.
    pub url: String,
    /// Body format (default `cepheus`).
    #[serde(default)]
    pub format: PayloadFormat,
    /// Headers sent with every notification (shown back).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Headers whose values are secret (an `Authorization` token): written,
    /// never shown back or logged.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, String>)]
    pub secret_headers: BTreeMap<String, Secret>,
    /// Key of the HMAC-SHA256 signature of the body, sent as
    /// `X-Cepheus-Signature: sha256=<hex>`; write-only.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub hmac_secret: Option<Secret>,
    /// How long one attempt may take (default `delivery.timeout`).
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "10s")]
    pub timeout: Option<Duration>,
    /// Notifications per period; alerts over it wait and ride in the next
    /// notification (never dropped).
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// Attempts before a notification is parked as a failed delivery
    /// (default `delivery.max_attempts`).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Also tell this receiver when an alert is resolved: resolutions
    /// (alert-log entries with `resolves`) are sent only to receivers that
    /// ask; firing alerts are sent either way.
    #[serde(default)]
    pub send_resolved: bool,
}

/// What a route matches; every field given must match.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// Rule id, a glob (`*` any run of characters, `?` one).
    #[serde(default)]
    pub rule: Option<String>,
    /// Entity key, a glob.
    #[serde(default)]
    pub key: Option<String>,
    /// This severity or higher.
    #[serde(default)]
    pub severity: Option<Severity>,
    /// The rule's mode (default `live`: shadow alerts are delivered only by
    /// routes that ask for them).
    #[serde(default)]
    pub mode: Option<Mode>,
}

/// One route: alerts it matches go to its receiver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "receiver": "fraud-queue", "match": {"rule": "brute-*", "severity": "high"},
    "group_by": ["rule"], "group_wait": "30s", "group_interval": "5m", "continue": false
}))]
pub struct RouteSpec {
    /// The receiver's name.
    pub receiver: String,
    /// What the route matches (default: every live alert).
    #[serde(default, rename = "match")]
    pub matches: RouteMatch,
    /// Keep looking at the next routes after this one matched (default
    /// false: the first matching route wins, as in Alertmanager).
    #[serde(default, rename = "continue")]
    pub continue_matching: bool,
    /// Group alerts by `rule`, `key`, `severity` or `values.<name>` and send
    /// one notification per group; empty: each alert on its own.
    #[serde(default)]
    pub group_by: Vec<String>,
    /// How long a new group waits for more alerts before its first
    /// notification (default `30s` when grouping).
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "30s")]
    pub group_wait: Option<Duration>,
    /// How long a group waits before notifying about alerts added since its
    /// last notification (default `5m`).
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "5m")]
    pub group_interval: Option<Duration>,
    /// How long a group with no new alerts stays open (default `4h`); see
    /// `docs/delivery.md`.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "4h")]
    pub repeat_interval: Option<Duration>,
}

/// `[delivery]`: receivers, routes, and the limits of delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliverySettings {
    /// Allow webhook URLs that point at loopback, link-local or private
    /// addresses (default false: refused with 400).
    pub allow_private_urls: bool,
    /// Most receivers (default 100).
    pub max_receivers: usize,
    /// Most routes (default 1,000).
    pub max_routes: usize,
    /// Most silences not yet expired (default 1,000).
    pub max_silences: usize,
    /// Alerts a receiver reads ahead of its cursor and holds in memory
    /// (default 10,000); the rest wait in the alert log.
    pub queue_len: usize,
    /// Most alerts in one notification (default 1,000); a group or a
    /// rate-limited batch with more is split.
    pub max_batch_alerts: usize,
    /// Attempts before a notification is parked (default 8).
    pub max_attempts: u32,
    /// Wait before the first retry, doubled each time (default `1s`).
    pub backoff_initial: Duration,
    /// Longest wait between attempts (default `5m`).
    pub backoff_max: Duration,
    /// How long one attempt may take (default `10s`).
    pub timeout: Duration,
    /// Failed deliveries kept per receiver (default 10,000); beyond, the
    /// oldest are removed and counted.
    pub max_failures: usize,
    /// PEM file of the certificate authorities `https://` receivers are
    /// checked against (default none: the system's bundle, or
    /// `SSL_CERT_FILE`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Receivers loaded at start (created, or replaced when they differ).
    pub receivers: Vec<ReceiverSpec>,
    /// Routes loaded at start (replace the stored ones when they differ).
    pub routes: Vec<RouteSpec>,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            allow_private_urls: false,
            max_receivers: 100,
            max_routes: 1_000,
            max_silences: 1_000,
            queue_len: 10_000,
            max_batch_alerts: 1_000,
            max_attempts: 8,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            timeout: Duration::from_secs(10),
            max_failures: 10_000,
            ca_file: None,
            receivers: Vec::new(),
            routes: Vec::new(),
        }
    }
}

/// Group-by fields a route may name.
fn valid_group_field(field: &str) -> bool {
    matches!(field, "rule" | "key" | "severity")
        || field.strip_prefix("values.").is_some_and(|v| !v.is_empty())
}

/// Checks a receiver, listing every problem (URL policy is checked apart:
/// it resolves names, see `url.rs`).
pub fn check_receiver(spec: &ReceiverSpec) -> Vec<String> {
    let mut problems = Vec::new();
    if spec.name.is_empty()
        || spec.name.len() > 128
        || !spec
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    {
        problems.push(format!(
            "name: `{}` must be 1 to 128 characters of [a-z0-9._-]",
            spec.name
        ));
    }
    for (name, value) in spec
        .headers
        .iter()
        .map(|(n, v)| (n, v.as_str()))
        .chain(spec.secret_headers.iter().map(|(n, v)| (n, v.0.as_str())))
    {
        if actix_web::http::header::HeaderName::try_from(name.as_str()).is_err() {
            problems.push(format!("headers: `{name}` is not a valid header name"));
        } else if actix_web::http::header::HeaderValue::from_str(value).is_err() {
            problems.push(format!(
                "headers: the value of `{name}` is not a valid header value"
            ));
        }
    }
    if let Some(t) = spec.timeout {
        if t.millis() <= 0 || t > Duration::from_secs(300) {
            problems.push("timeout: must be above 0 and at most 5m".into());
        }
    }
    if let Some(limit) = &spec.rate_limit {
        if limit.rate == 0 || limit.per.millis() <= 0 || limit.burst == Some(0) {
            problems.push("rate_limit: `rate`, `per` and `burst` must be above 0".into());
        }
    }
    if spec.max_attempts == Some(0) {
        problems.push("max_attempts: must be at least 1".into());
    }
    if spec.hmac_secret.as_ref().is_some_and(|s| s.0.is_empty()) {
        problems.push("hmac_secret: must not be empty (omit it for no signature)".into());
    }
    problems
}

/// Checks a route list against the receivers that exist, listing every
/// problem, each prefixed with the route's place.
pub fn check_routes(routes: &[RouteSpec], receiver_exists: impl Fn(&str) -> bool) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, route) in routes.iter().enumerate() {
        let at = format!("routes[{i}]");
        if !receiver_exists(&route.receiver) {
            problems.push(format!(
                "{at}.receiver: no receiver named `{}`",
                route.receiver
            ));
        }
        for field in &route.group_by {
            if !valid_group_field(field) {
                problems.push(format!(
                    "{at}.group_by: `{field}` is not one of rule, key, severity, values.<name>"
                ));
            }
        }
        for (name, d) in [
            ("group_wait", route.group_wait),
            ("group_interval", route.group_interval),
            ("repeat_interval", route.repeat_interval),
        ] {
            if d.is_some_and(|d| d.millis() < 0) {
                problems.push(format!("{at}.{name}: must not be negative"));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let spec: ReceiverSpec = serde_json::from_value(serde_json::json!({
            "name": "a", "url": "http://x", "hmac_secret": "topsecret",
            "secret_headers": {"Authorization": "Bearer hidden"}
        }))
        .unwrap();
        let shown = format!("{spec:?}");
        assert!(
            !shown.contains("topsecret") && !shown.contains("hidden"),
            "{shown}"
        );
    }

    #[test]
    fn the_config_file_example_of_the_docs_reads() {
        let doc = include_str!("../../docs/delivery.md");
        let start = doc
            .find("```toml\n")
            .expect("docs/delivery.md has a toml block")
            + 8;
        let end = start + doc[start..].find("```").expect("the block ends");
        let settings: crate::settings::Settings =
            toml::from_str(&doc[start..end]).expect("the example is a valid config file");
        assert_eq!(settings.delivery.receivers[0].name, "fraud-queue");
        assert_eq!(
            settings.delivery.routes[0].matches.rule.as_deref(),
            Some("brute-*")
        );
        assert!(check_receiver(&settings.delivery.receivers[0]).is_empty());
    }

    #[test]
    fn every_problem_is_listed() {
        let spec: ReceiverSpec = serde_json::from_value(serde_json::json!({
            "name": "Bad Name", "url": "http://x", "max_attempts": 0,
            "rate_limit": {"rate": 0}
        }))
        .unwrap();
        assert_eq!(check_receiver(&spec).len(), 3);
        let routes: Vec<RouteSpec> = serde_json::from_value(serde_json::json!([
            {"receiver": "nobody", "group_by": ["rule", "colour"]}
        ]))
        .unwrap();
        assert_eq!(check_routes(&routes, |_| false).len(), 2);
    }
}
