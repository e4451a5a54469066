//! The body and headers of a notification, in the receiver's format.
//!
//! Every alert carries its `state` as of the entry being delivered:
//! `firing` for an alert, `resolved` for a resolution (which names the
//! alert it `resolves`); the notification's `status` is `resolved` when all
//! its entries are resolutions. Resolutions reach only receivers with
//! `send_resolved` (see `worker.rs`).

use serde_json::{json, Value};

use crate::delivery::config::PayloadFormat;
use crate::delivery::group::Notification;
use crate::store::alerts::StoredAlert;

/// Lines of a Slack message before the rest is summarised.
const SLACK_LINES: usize = 20;

/// A notification ready to POST.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The body.
    pub body: Vec<u8>,
    /// Its content type.
    pub content_type: &'static str,
    /// Same for the same alerts: receivers drop repeats by it.
    pub idempotency_key: String,
}

/// An alert as receivers see it: its REST form, with the state of the
/// entry delivered (an alert read back after its resolution still goes out
/// as `firing`: its resolution is an entry of its own).
pub fn alert_json(alert: &StoredAlert) -> Value {
    let mut value = serde_json::to_value(alert).unwrap_or(Value::Null);
    if let Value::Object(fields) = &mut value {
        fields.insert("state".into(), json!(state(alert)));
        fields.remove("resolved");
    }
    value
}

/// `firing` or `resolved`, as the delivered entry is.
fn state(alert: &StoredAlert) -> &'static str {
    if alert.resolves.is_some() {
        "resolved"
    } else {
        "firing"
    }
}

/// `resolved` when every entry is a resolution, else `firing`.
fn status(n: &Notification) -> &'static str {
    if n.alerts.iter().all(|a| a.resolves.is_some()) {
        "resolved"
    } else {
        "firing"
    }
}

/// The idempotency key of a set of alerts: the alert id for one alert, a
/// hash of the ids for several.
pub fn idempotency_key(alerts: &[impl AsRef<StoredAlert>]) -> String {
    match alerts {
        [one] => one.as_ref().id.clone(),
        many => {
            let ids: Vec<&str> = many.iter().map(|a| a.as_ref().id.as_str()).collect();
            format!(
                "batch-{:032x}",
                xxhash_rust::xxh3::xxh3_128(ids.join(",").as_bytes())
            )
        }
    }
}

/// Renders `notification` for receiver `receiver`.
pub fn render(format: PayloadFormat, receiver: &str, notification: &Notification) -> Rendered {
    let idempotency_key = idempotency_key(&notification.alerts);
    let (body, content_type) = match format {
        PayloadFormat::Cepheus => (
            cepheus(receiver, notification, &idempotency_key),
            "application/json",
        ),
        PayloadFormat::Cloudevents => cloudevents(receiver, notification),
        PayloadFormat::Slack => (slack(notification), "application/json"),
    };
    Rendered {
        body: serde_json::to_vec(&body).unwrap_or_default(),
        content_type,
        idempotency_key,
    }
}

fn cepheus(receiver: &str, n: &Notification, key: &str) -> Value {
    let labels: serde_json::Map<String, Value> = n
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    json!({
        "version": 1,
        "receiver": receiver,
        "status": status(n),
        "idempotency_key": key,
        "group_labels": labels,
        "alerts": n.alerts.iter().map(|a| alert_json(a)).collect::<Vec<_>>(),
    })
}

fn cloudevent(receiver: &str, alert: &StoredAlert) -> Value {
    json!({
        "specversion": "1.0",
        "id": alert.id,
        "source": format!("cepheus/receivers/{receiver}"),
        "type": format!("io.cepheus.alert.{}", state(alert)),
        "subject": alert.key,
        "time": alert.detected_at,
        "datacontenttype": "application/json",
        "data": alert_json(alert),
    })
}

fn cloudevents(receiver: &str, n: &Notification) -> (Value, &'static str) {
    match n.alerts.as_slice() {
        [one] => (cloudevent(receiver, one), "application/cloudevents+json"),
        many => (
            Value::Array(many.iter().map(|a| cloudevent(receiver, a)).collect()),
            "application/cloudevents-batch+json",
        ),
    }
}

fn slack(n: &Notification) -> Value {
    let mut lines: Vec<String> = n
        .alerts
        .iter()
        .take(SLACK_LINES)
        .map(|a| {
            format!(
                "[{}] {} {}: {}",
                if a.resolves.is_some() {
                    "RESOLVED".to_owned()
                } else {
                    a.severity.as_str().to_uppercase()
                },
                a.rule,
                a.key,
                a.message
            )
        })
        .collect();
    if n.alerts.len() > SLACK_LINES {
        lines.push(format!(
            "… and {} more alerts",
            n.alerts.len() - SLACK_LINES
        ));
    }
    json!({"text": lines.join("\n")})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::route::tests::alert;
    use crate::rules::Severity;
    use std::sync::Arc;

    fn notification(n: u64) -> Notification {
        Notification {
            labels: vec![("rule".into(), "r".into())],
            alerts: (1..=n)
                .map(|s| Arc::new(alert(s, "r", "k", Severity::High)))
                .collect(),
        }
    }

    #[test]
    fn each_format_has_its_shape_and_alerts_carry_their_state() {
        let one = notification(1);
        let r = render(PayloadFormat::Cepheus, "hook", &one);
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["alerts"][0]["state"], "firing");
        assert_eq!(body["group_labels"]["rule"], "r");
        assert_eq!(r.idempotency_key, "id-1");
        let r = render(PayloadFormat::Cloudevents, "hook", &one);
        assert_eq!(r.content_type, "application/cloudevents+json");
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            (body["specversion"].as_str(), body["id"].as_str()),
            (Some("1.0"), Some("id-1"))
        );
        let r = render(PayloadFormat::Cloudevents, "hook", &notification(2));
        assert_eq!(r.content_type, "application/cloudevents-batch+json");
        assert!(r.idempotency_key.starts_with("batch-"));
        let r = render(PayloadFormat::Slack, "hook", &notification(25));
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        let text = body["text"].as_str().unwrap();
        assert!(text.starts_with("[HIGH] r k: alert 1") && text.ends_with("and 5 more alerts"));
    }

    #[test]
    fn a_resolution_goes_out_as_resolved_and_its_alert_as_firing() {
        let mut fired = alert(1, "r", "k", Severity::High);
        fired.state = crate::store::alerts::AlertState::Resolved; // read back later
        let mut resolution = alert(2, "r", "k", Severity::High);
        resolution.resolves = Some("id-1".into());
        let n = |a: StoredAlert| Notification {
            labels: vec![],
            alerts: vec![Arc::new(a)],
        };
        let body: Value =
            serde_json::from_slice(&render(PayloadFormat::Cepheus, "h", &n(fired)).body).unwrap();
        assert_eq!(
            (body["status"].as_str(), body["alerts"][0]["state"].as_str()),
            (Some("firing"), Some("firing"))
        );
        let r = render(PayloadFormat::Cepheus, "h", &n(resolution.clone()));
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["status"], "resolved");
        assert_eq!(body["alerts"][0]["resolves"], "id-1");
        let r = render(PayloadFormat::Cloudevents, "h", &n(resolution.clone()));
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["type"], "io.cepheus.alert.resolved");
        let r = render(PayloadFormat::Slack, "h", &n(resolution));
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert!(body["text"].as_str().unwrap().starts_with("[RESOLVED]"));
    }
}
