//! The scale-out mode against a real Kafka-API broker (tansu, started by
//! each test on a free port): the real binary with `[kafka]` settings.
//!
//! Where tansu is missing outside CI each test says so and passes; under
//! `CI` it fails (`.ci/run` installs tansu). The first scenarios also run
//! on librdkafka's mock cluster (in this test process, on a real port),
//! which needs nothing installed: the topics are made beforehand, since it
//! has no CreateTopics.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::kafka::{balanced, wait_owning, PARTITIONS};
use common::tansu::Tansu;
use common::{wait_until, Server, PATIENCE};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};

const TWO_STEPS: &str = r#"
id: a-then-b
severity: high
sequence:
  within: 1h
  steps:
    - name: first
      match: type == "a"
    - name: second
      match: type == "b"
alert:
  message: "{{key}}: a then b"
"#;

/// A Kafka-API broker for a test.
trait Broker {
    /// `bootstrap.servers`.
    fn brokers(&self) -> String;
}

impl Broker for Tansu {
    fn brokers(&self) -> String {
        Tansu::brokers(self)
    }
}

/// librdkafka's mock cluster with the topics made.
struct Mock(MockCluster<'static, DefaultProducerContext>);

impl Mock {
    fn start() -> Mock {
        let cluster = MockCluster::new(1).expect("a mock cluster");
        // Every topic cepheus uses, with its partitions (the mock cluster
        // has no CreateTopics).
        let topics = [
            ("cepheus.events", PARTITIONS),
            ("cepheus.alerts", 1),
            ("cepheus.rules", 1),
            ("cepheus.changelog", PARTITIONS),
            ("cepheus.instances", 1),
            ("cepheus.delivery", 1),
            ("cepheus.repartition", PARTITIONS),
            ("cepheus.deadletters", 1),
        ];
        for (topic, partitions) in topics {
            cluster
                .create_topic(topic, partitions, 1)
                .unwrap_or_else(|e| panic!("the topic {topic}: {e}"));
        }
        Mock(cluster)
    }
}

impl Broker for Mock {
    fn brokers(&self) -> String {
        self.0.bootstrap_servers()
    }
}

/// A config for an instance of the deployment on `broker`.
fn config(broker: &dyn Broker) -> String {
    common::kafka::config(&broker.brokers())
}

/// Every record of `topic`, read from the start: (key, value).
fn read_topic(broker: &dyn Broker, topic: &str, partitions: i32) -> Vec<(String, Value)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .set("group.id", "cepheus-test-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .expect("a test consumer");
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(topic, p, Offset::Beginning)
            .expect("a partition to read");
    }
    consumer.assign(&list).expect("the topic is assigned");
    let mut records = Vec::new();
    let mut ended = HashSet::new();
    let deadline = Instant::now() + PATIENCE;
    while ended.len() < partitions as usize && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                let value =
                    serde_json::from_slice(m.payload().unwrap_or_default()).unwrap_or(Value::Null);
                records.push((key, value));
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                ended.insert(p);
            }
            _ => {}
        }
    }
    records
}

/// A producer as another application would use (idempotent, acks=all).
fn producer(broker: &dyn Broker) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .create()
        .expect("a test producer")
}

#[test]
fn events_posted_in_kafka_mode_give_alerts_over_rest_and_websocket() {
    let Some(broker) = Tansu::start() else { return };
    posted_events_give_alerts(&broker);
}

#[test]
fn events_posted_in_kafka_mode_give_alerts_on_the_mock_cluster() {
    posted_events_give_alerts(&Mock::start());
}

fn posted_events_give_alerts(broker: &dyn Broker) {
    let server = Server::start(&config(broker));
    wait_owning(&server, PARTITIONS as usize);
    server.create_rule(TWO_STEPS);
    let mut socket = server.ws("");
    let answer = server.send_events(&json!([
        {"id": "e-1", "key": "acct-1", "type": "a", "time": "2026-01-01T00:00:00Z"},
        {"id": "e-2", "key": "acct-1", "type": "b", "time": "2026-01-01T00:00:01Z"},
    ]));
    assert_eq!(answer["accepted"], 2, "{answer}");
    let live = socket.next_alert();
    assert_eq!(live["message"], "acct-1: a then b");
    assert_eq!(live["seq"], 1);
    let rest = server.get_json(&format!("/v1/alerts/{}", live["id"].as_str().unwrap()));
    assert_eq!(rest, live);
    // A repeat the accepting instance saw is counted as such.
    let again = server.send_events(&json!([
        {"id": "e-2", "key": "acct-1", "type": "b", "time": "2026-01-01T00:00:01Z"},
    ]));
    assert_eq!(
        (again["accepted"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(1))
    );
    // Ownership and consumer lag (librdkafka's statistics, every 5 s).
    assert_eq!(
        server.metric("cepheus_kafka_partitions_assigned"),
        Some(4.0)
    );
    wait_until("the consumer lag per partition in /metrics", || {
        server
            .metrics()
            .lines()
            .any(|l| l.starts_with("cepheus_kafka_consumer_lag{partition="))
            .then_some(())
    });
    socket.close();
    // A graceful stop and a start: the alert log keeps its seq, nothing is
    // evaluated or numbered twice, and the entity goes on where it was.
    let mut server = server;
    server.stop();
    server.restart();
    wait_owning(&server, PARTITIONS as usize);
    server.send_events(&json!([
        {"id": "e-3", "key": "acct-1", "type": "a", "time": "2026-01-01T00:01:00Z"},
        {"id": "e-4", "key": "acct-1", "type": "b", "time": "2026-01-01T00:01:01Z"},
    ]));
    let alerts = server.wait_alerts("", 2);
    let seqs: Vec<u64> = alerts.iter().map(|a| a["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2], "{alerts:?}");
    assert_eq!(alerts[0], live);
}

#[test]
fn an_accepted_request_is_in_the_topic() {
    let Some(broker) = Tansu::start() else { return };
    accepted_events_are_in_the_topic(&broker);
}

#[test]
fn an_accepted_request_is_in_the_topic_on_the_mock_cluster() {
    accepted_events_are_in_the_topic(&Mock::start());
}

fn accepted_events_are_in_the_topic(broker: &dyn Broker) {
    let server = Server::start(&config(broker));
    let events: Vec<Value> = (0..20)
        .map(|i| json!({"id": format!("e-{i}"), "key": format!("k-{}", i % 7), "type": "t"}))
        .collect();
    let answer = server.send_events(&Value::Array(events));
    assert_eq!(answer["accepted"], 20, "{answer}");
    // The 202 came after acks=all: every event can be read back now, each
    // keyed by its entity and in the partition Kafka's partitioner gives.
    let records = read_topic(broker, "cepheus.events", PARTITIONS);
    let ids: HashSet<String> = records
        .iter()
        .filter_map(|(_, v)| v["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(ids.len(), 20, "{records:?}");
    for (key, value) in &records {
        assert_eq!(value["key"].as_str(), Some(key.as_str()));
        assert!(
            value["time"].is_string(),
            "an untimed event is stored with its acceptance time: {value}"
        );
    }
}

#[test]
fn events_written_to_the_topic_by_another_producer_are_evaluated() {
    let Some(broker) = Tansu::start() else { return };
    direct_records_are_evaluated(&broker);
}

#[test]
fn events_written_to_the_topic_directly_are_evaluated_on_the_mock_cluster() {
    direct_records_are_evaluated(&Mock::start());
}

fn direct_records_are_evaluated(broker: &dyn Broker) {
    let server = Server::start(&config(broker));
    wait_owning(&server, PARTITIONS as usize);
    server.create_rule(TWO_STEPS);
    let producer = producer(broker);
    let plain = json!({"id": "x-1", "key": "dev-9", "type": "a", "time": "2026-01-01T00:00:00Z"});
    let cloud = json!({"specversion": "1.0", "id": "x-2", "source": "/sensors", "subject": "dev-9",
        "type": "b", "time": "2026-01-01T00:00:02Z", "data": {"v": 1}});
    let broken = "not json";
    for (key, value) in [
        ("dev-9", plain.to_string()),
        ("dev-9", cloud.to_string()),
        ("dev-9", broken.to_string()),
    ] {
        producer
            .send(
                BaseRecord::to("cepheus.events")
                    .key(key)
                    .payload(&value)
                    .headers(OwnedHeaders::new().insert(Header {
                        key: "cepheus-format",
                        value: Some("1"),
                    })),
            )
            .expect("the record is queued");
    }
    producer
        .flush(Duration::from_secs(20))
        .expect("the records are acknowledged");
    let alerts = server.wait_alerts("", 1);
    assert_eq!(alerts[0]["key"], "dev-9");
    let events: Vec<&str> = alerts[0]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert_eq!(events, ["x-1", "x-2"]);
    // The record that is not an event is a dead letter, with the reason.
    let letters = wait_until("the broken record's dead letter", || {
        let letters = server.deadletters();
        (!letters.is_empty()).then_some(letters)
    });
    assert!(
        letters[0]["error"]
            .as_str()
            .unwrap_or("")
            .contains("not valid JSON"),
        "{letters:?}"
    );
}

#[test]
fn two_instances_split_the_partitions_and_serve_every_alert_alike() {
    let Some(broker) = Tansu::start() else { return };
    two_instances_share_the_work(&broker);
}

fn two_instances_share_the_work(broker: &dyn Broker) {
    let first = Server::start(&config(broker));
    wait_owning(&first, PARTITIONS as usize);
    let second = Server::start(&config(broker));
    let shares = wait_until("the partitions split between the two", || {
        balanced(&[&first, &second], PARTITIONS as usize)
    });
    let owned_first = &shares[0];
    // A rule registered on one instance is live on all (the rules topic).
    first.create_rule(TWO_STEPS);
    let shared = wait_until("the rule on the second instance", || {
        let response = second.get("/v1/rules/a-then-b");
        (response.status() == 200).then(|| response.json::<Value>().expect("a rule"))
    });
    assert_eq!(shared["version"], 1, "{shared}");
    let keys: Vec<String> = (0..16).map(|i| format!("acct-{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        let to = if i % 2 == 0 { &first } else { &second };
        to.send_events(&json!([
            {"id": format!("{key}-a"), "key": key, "type": "a", "time": "2026-01-01T00:00:00Z"},
            {"id": format!("{key}-b"), "key": key, "type": "b", "time": "2026-01-01T00:00:01Z"},
        ]));
    }
    let on_first = first.wait_alerts("limit=1000", keys.len());
    let on_second = second.wait_alerts("limit=1000", keys.len());
    let by_id = |alerts: &[Value]| -> HashMap<String, (u64, String)> {
        alerts
            .iter()
            .map(|a| {
                (
                    a["id"].as_str().unwrap().to_owned(),
                    (
                        a["seq"].as_u64().unwrap(),
                        a["key"].as_str().unwrap().to_owned(),
                    ),
                )
            })
            .collect()
    };
    assert_eq!(on_first.len(), keys.len(), "one alert per key, none twice");
    assert_eq!(
        by_id(&on_first),
        by_id(&on_second),
        "the same alerts with the same seq"
    );
    let seqs: Vec<u64> = on_first
        .iter()
        .map(|a| a["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (1..=keys.len() as u64).collect::<Vec<_>>(),
        "gap-free"
    );
    // An entity is read on the instance that owns its partition; the other
    // forwards the request there (tests/kafka_instances.rs has more).
    let key = &keys[0];
    let partition = i64::from(cepheus::journal::partition::partition_of(
        key,
        PARTITIONS as u16,
    ));
    let (owner, other) = if owned_first.contains(&partition) {
        (&first, &second)
    } else {
        (&second, &first)
    };
    let on_owner = owner.entity(key);
    let forwarded = wait_until("the entity read through the other instance", || {
        let response = other.get(&format!("/v1/entities/{key}"));
        (response.status() == 200).then(|| response.json::<Value>().expect("an entity"))
    });
    assert_eq!(forwarded["events_seen"], on_owner["events_seen"]);
}

/// kill -9 in the middle of patterns: after the restart nothing
/// acknowledged is lost (each half-matched pattern completes) and no alert
/// is published twice. On the mock cluster: tansu never reassigns a killed
/// member's partitions; the mock does after the session timeout.
#[test]
fn a_killed_instance_resumes_its_partitions_on_the_mock_cluster() {
    let broker = Mock::start();
    let mut server = Server::start(&config(&broker));
    wait_owning(&server, PARTITIONS as usize);
    server.create_rule(TWO_STEPS);
    let keys: Vec<String> = (0..8).map(|i| format!("acct-{i}")).collect();
    for key in &keys {
        server.send_events(&json!([
            {"id": format!("{key}-a"), "key": key, "type": "a", "time": "2026-01-01T00:00:00Z"},
        ]));
    }
    // Some keys complete before the crash, the rest after it.
    for key in &keys[..3] {
        server.send_events(&json!([
            {"id": format!("{key}-b"), "key": key, "type": "b", "time": "2026-01-01T00:00:01Z"},
        ]));
    }
    server.wait_alerts("", 3);
    server.kill9();
    server.restart();
    wait_owning(&server, PARTITIONS as usize);
    for key in &keys {
        server.send_events(&json!([
            {"id": format!("{key}-b"), "key": key, "type": "b", "time": "2026-01-01T00:00:01Z"},
        ]));
    }
    let alerts = server.wait_alerts("limit=100", keys.len());
    std::thread::sleep(Duration::from_secs(1));
    let alerts_later = server.alerts("limit=100");
    assert_eq!(
        alerts_later.len(),
        keys.len(),
        "no alert twice: {alerts_later:?}"
    );
    let seqs: Vec<u64> = alerts.iter().map(|a| a["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=keys.len() as u64).collect::<Vec<_>>());
    let alerted: HashSet<&str> = alerts.iter().filter_map(|a| a["key"].as_str()).collect();
    assert_eq!(
        alerted.len(),
        keys.len(),
        "every key's pattern completed: {alerts:?}"
    );
}

/// A backtest in this mode reads what the events topic retains: every
/// partition, also the events other instances evaluated.
#[test]
fn a_backtest_reads_the_events_topic_on_the_mock_cluster() {
    let broker = Mock::start();
    let server = Server::start(&config(&broker));
    wait_owning(&server, PARTITIONS as usize);
    server.create_rule(TWO_STEPS);
    for i in 0..6 {
        let key = format!("acct-{i}");
        let mut events = vec![json!({"key": key, "type": "a", "time": "2026-01-01T00:00:00Z"})];
        if i % 2 == 0 {
            events.push(json!({"key": key, "type": "b", "time": "2026-01-01T00:00:01Z"}));
        }
        server.send_events(&Value::Array(events));
    }
    server.wait_alerts("", 3);
    let request = json!({
        "rule": {"id": "a-then-b"},
        "compare": {"yaml": TWO_STEPS.replace("type == \"b\"", "type == \"a\" || type == \"b\"")},
        "from": "2026-01-01T00:00:00Z",
        "to": "2026-01-02T00:00:00Z",
    });
    let response = server
        .http()
        .post(server.url("/v1/rules/backtest?wait=true"))
        .json(&request)
        .send()
        .expect("the backtest answers");
    assert_eq!(response.status(), 200);
    let job: Value = response.json().expect("a job");
    assert_eq!(job["status"], "done", "{job}");
    let result = &job["result"];
    assert_eq!(result["events"], 9, "every event of the topic: {result}");
    assert_eq!(result["runs"][0]["alerts_total"], 3, "{result}");
    assert_eq!(result["runs"][1]["alerts_total"], 3, "{result}");
}
