//! The instances directory of the scale-out mode against tansu: every
//! instance knows the others, entity requests reach the owner of the key's
//! partition from any instance, and a clock advance reaches every instance.
//!
//! Where tansu is missing outside CI each test says so and passes; under
//! `CI` it fails (`.ci/run` installs tansu).

mod common;

use std::collections::BTreeSet;

use common::kafka::{balanced, config_with, wait_owning, PARTITIONS};
use common::tansu::Tansu;
use common::{wait_until, Server};
use serde_json::{json, Value};

/// Fast heartbeats, so a stopped instance leaves the directory quickly.
const HEARTBEATS: &str = r#"
heartbeat = "300ms"
missed_heartbeats = 5
"#;

/// Two instances of one deployment on `broker`, each owning half of the
/// partitions; returns them with what each owns.
fn two_instances(broker: &Tansu) -> ((Server, Vec<i64>), (Server, Vec<i64>)) {
    let config = config_with(&broker.brokers(), HEARTBEATS);
    let first = Server::start(&config);
    wait_owning(&first, PARTITIONS as usize);
    let second = Server::start(&config);
    let shares = wait_until("the partitions split between the two", || {
        balanced(&[&first, &second], PARTITIONS as usize)
    });
    let [owned_first, owned_second] = <[Vec<i64>; 2]>::try_from(shares).expect("two shares");
    ((first, owned_first), (second, owned_second))
}

/// A key whose partition is in `owned`.
fn key_owned_by(owned: &[i64], prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|key| {
            let partition = cepheus::journal::partition::partition_of(key, PARTITIONS as u16);
            owned.contains(&i64::from(partition))
        })
        .expect("some key falls in the partitions")
}

/// `GET /v1/instances` once it lists `count` instances that each have
/// read their partitions.
fn wait_directory(server: &Server, count: usize) -> Value {
    wait_until(&format!("a directory of {count} instance(s)"), || {
        let list = server.get_json("/v1/instances");
        let instances = list["instances"].as_array()?;
        let settled = instances.len() == count
            && list["unowned"].as_array()?.is_empty()
            && instances
                .iter()
                .all(|i| i["restoring"].as_array().is_some_and(Vec::is_empty));
        settled.then_some(list)
    })
}

fn partitions(instance: &Value) -> BTreeSet<i64> {
    instance["assigned"]
        .as_array()
        .expect("`assigned` is an array")
        .iter()
        .filter_map(Value::as_i64)
        .collect()
}

#[test]
fn every_instance_lists_the_others_and_forwards_entity_requests_to_the_owner() {
    let Some(broker) = Tansu::start() else { return };
    let ((first, owned_first), (mut second, owned_second)) = two_instances(&broker);

    // Each instance lists both, itself first, with disjoint partitions
    // covering the key space.
    let mut ids = Vec::new();
    for (server, owned) in [(&first, &owned_first), (&second, &owned_second)] {
        let list = wait_directory(server, 2);
        assert_eq!(list["partitions"], PARTITIONS, "{list}");
        let instances = list["instances"].as_array().expect("instances");
        assert_eq!(instances[0]["self"], true, "{list}");
        assert_eq!(instances[1]["self"], false, "{list}");
        assert_eq!(
            instances[0]["url"],
            format!("http://127.0.0.1:{}", server.port()),
            "{list}"
        );
        let mine = partitions(&instances[0]);
        let theirs = partitions(&instances[1]);
        assert_eq!(mine, owned.iter().copied().collect(), "{list}");
        assert!(mine.is_disjoint(&theirs), "{list}");
        assert_eq!(mine.len() + theirs.len(), PARTITIONS as usize, "{list}");
        ids.push(instances[0]["id"].as_str().expect("an id").to_owned());
    }
    assert_ne!(ids[0], ids[1]);
    let listed_by_first = first.get_json("/v1/instances");
    assert_eq!(listed_by_first["instances"][1]["id"], ids[1].as_str());

    // PUT on the instance that does not own the key: the owner stores it
    // and its view comes back.
    let key = key_owned_by(&owned_second, "acct");
    let put = first.put(
        &format!("/v1/entities/{key}"),
        "application/json",
        json!({"attributes": {"tier": "gold"}}).to_string(),
    );
    assert_eq!(put.status(), 200);
    assert_eq!(
        put.headers()
            .get("cepheus-answered-by")
            .and_then(|v| v.to_str().ok()),
        Some(ids[1].as_str())
    );
    let put: Value = put.json().expect("an entity");
    assert_eq!(put["attributes"]["tier"], "gold", "{put}");
    assert_eq!(second.entity(&key)["attributes"]["tier"], "gold");
    // GET on the non-owner answers the owner's view.
    second.send_events(&json!([
        {"id": "e-1", "key": key, "type": "login", "time": "2026-01-01T00:00:00Z"},
    ]));
    let on_owner = wait_until("the event evaluated by the owner", || {
        let entity = second.entity(&key);
        (entity["events_seen"] == 1).then_some(entity)
    });
    let through_first = first.entity(&key);
    assert_eq!(through_first["attributes"], on_owner["attributes"]);
    assert_eq!(through_first["events_seen"], 1);
    assert_eq!(through_first["clock"], on_owner["clock"]);
    // A missing entity is the owner's 404.
    let missing = first.get(&format!(
        "/v1/entities/{}",
        key_owned_by(&owned_second, "nobody")
    ));
    assert_eq!(missing.status(), 404);

    // A request already forwarded is not forwarded again: the instance
    // that does not own the key says no instance owns it for it now.
    let looped = first
        .http()
        .get(first.url(&format!("/v1/entities/{key}")))
        .header("cepheus-forwarded-by", "some-instance")
        .send()
        .expect("GET is answered");
    assert_eq!(looped.status(), 503);
    assert_eq!(
        looped
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body: Value = looped.json().expect("an error body");
    assert_eq!(body["error"], "no_owner", "{body}");
    let partition = cepheus::journal::partition::partition_of(&key, PARTITIONS as u16);
    assert_eq!(body["partition"], partition, "{body}");

    // A graceful stop takes the instance out of the directory (its
    // tombstone), and the other takes all partitions.
    second.stop();
    wait_owning(&first, PARTITIONS as usize);
    let alone = wait_directory(&first, 1);
    assert_eq!(alone["instances"][0]["id"], ids[0].as_str());
    assert_eq!(
        partitions(&alone["instances"][0]).len(),
        PARTITIONS as usize
    );
}

const CART_ABANDONED: &str = r#"
id: cart-abandoned
severity: low
absence:
  after: type == "cart_item_added"
  expect: type in ["cart_item_added", "checkout_completed"]
  within: 30m
alert:
  message: "cart of {{key}} abandoned"
"#;

#[test]
fn a_clock_advance_on_one_instance_fires_absences_on_the_others() {
    let Some(broker) = Tansu::start() else { return };
    let ((first, owned_first), (second, owned_second)) = two_instances(&broker);
    wait_directory(&first, 2);
    first.create_rule(CART_ABANDONED);
    wait_until("the rule on the second instance", || {
        (second.get("/v1/rules/cart-abandoned").status() == 200).then_some(())
    });
    // One cart on each instance's partitions, both posted to the first.
    let theirs = key_owned_by(&owned_second, "cart");
    let mine = key_owned_by(&owned_first, "cart");
    for key in [&theirs, &mine] {
        first.send_events(&json!([
            {"id": format!("{key}-1"), "key": key, "type": "cart_item_added",
             "time": "2026-01-01T00:00:00Z", "data": {"sku": "x"}},
        ]));
    }
    wait_until("both carts evaluated by their owners", || {
        let seen = |server: &Server, key: &str| {
            let response = server.get(&format!("/v1/entities/{key}"));
            response.status() == 200
                && response.json::<Value>().expect("an entity")["events_seen"] == 1
        };
        (seen(&second, &theirs) && seen(&first, &mine)).then_some(())
    });

    let answer = first.advance_clock("2026-01-01T01:00:00Z");
    assert_eq!(answer["instances"]["reached"], 2, "{answer}");
    assert_eq!(answer["instances"]["failed"], json!([]), "{answer}");
    assert_eq!(answer["alert_seq"], 2, "{answer}");
    // Both alerts are published on the instance that was asked by the
    // time it answers, the one from the other instance's entity included.
    let alerts = first.alerts("limit=10");
    let keys: BTreeSet<&str> = alerts.iter().filter_map(|a| a["key"].as_str()).collect();
    assert_eq!(
        keys,
        BTreeSet::from([theirs.as_str(), mine.as_str()]),
        "{alerts:?}"
    );
    let on_second = second.wait_alerts("limit=10", 2);
    let ids = |alerts: &[Value]| -> Vec<(Value, Value)> {
        alerts
            .iter()
            .map(|a| (a["seq"].clone(), a["id"].clone()))
            .collect()
    };
    assert_eq!(
        ids(&on_second),
        ids(&alerts),
        "the same alerts with the same seq"
    );
}
