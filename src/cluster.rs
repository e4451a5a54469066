//! The scale-out mode's shared rules (`docs/scale-out.md`): a rule registered
//! on one instance is live on all of them.
//!
//! Every local change of the catalog is produced to the compacted rules
//! topic (key = rule id, value = the stored rule as JSON with its version
//! and state policy, no value for a deletion); every instance reads the
//! whole topic, in its one partition's order, and applies what other
//! instances changed ([`Catalog::apply_remote`]).
//!
//! [`instances`] is the directory of instances, shared the same way.

pub mod delivery;
pub mod instances;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::actors::Runtime;
use crate::catalog::{Catalog, RuleChange};
use crate::journal::kafka::{client_config, KafkaConfig};
use crate::store::rules::StoredRule;

/// The rules topic's producer and reader threads.
pub struct RuleLog {
    closing: Arc<AtomicBool>,
}

impl RuleLog {
    /// Starts sharing `catalog`'s changes through `config.rules_topic`.
    pub fn start(
        config: &KafkaConfig,
        catalog: Arc<Catalog>,
        runtime: Arc<Runtime>,
    ) -> anyhow::Result<RuleLog> {
        let producer: FutureProducer = client_config(config)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .create()?;
        let consumer: BaseConsumer = client_config(config)
            .set("group.id", format!("{}-rules", config.group_id))
            .set("enable.auto.commit", "false")
            .create()?;
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&config.rules_topic, 0, Offset::Beginning)?;
        consumer.assign(&list)?;
        let (tx, rx) = std::sync::mpsc::channel::<RuleChange>();
        catalog.tell_changes(tx);
        let closing = Arc::new(AtomicBool::new(false));
        let topic = config.rules_topic.clone();
        std::thread::Builder::new()
            .name("cepheus-rules-out".into())
            .spawn(move || produce(&producer, &topic, rx))?;
        let stop = Arc::clone(&closing);
        std::thread::Builder::new()
            .name("cepheus-rules-in".into())
            .spawn(move || consume(&consumer, &catalog, &runtime, &stop))?;
        Ok(RuleLog { closing })
    }

    /// Stops reading the rules topic.
    pub fn stop(&self) {
        self.closing.store(true, Ordering::Release);
    }
}

/// Produces each local change, retrying until the brokers take it.
fn produce(producer: &FutureProducer, topic: &str, changes: std::sync::mpsc::Receiver<RuleChange>) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    else {
        tracing::error!("cannot start the rules producer: rule changes stay on this instance");
        return;
    };
    for change in changes {
        let (id, value) = match &change {
            RuleChange::Stored(stored) => match serde_json::to_vec(stored) {
                Ok(value) => (stored.document.id.clone(), Some(value)),
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode a rule for the rules topic");
                    continue;
                }
            },
            RuleChange::Deleted(id) => (id.clone(), None),
        };
        produce_retrying(&runtime, producer, topic, &id, value.as_deref());
    }
}

/// Produces `value` (`None`: a removal) under `key` to the one partition
/// of `topic`, retrying until the brokers take it (the rules, delivery
/// and other shared compacted topics).
pub(crate) fn produce_retrying(
    runtime: &tokio::runtime::Runtime,
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    value: Option<&[u8]>,
) {
    for attempt in 0u32.. {
        let mut record = FutureRecord::<str, [u8]>::to(topic).key(key).partition(0);
        if let Some(value) = value {
            record = record.payload(value);
        }
        match runtime.block_on(producer.send(record, Duration::from_secs(5))) {
            Ok(_) => return,
            Err((e, _)) => {
                tracing::warn!(topic, key, error = %e, attempt, "cannot write a change to a shared topic; retrying");
                std::thread::sleep(Duration::from_millis(200 * u64::from(attempt.min(10) + 1)));
            }
        }
    }
}

/// Reads a shared topic until `closing`, calling `apply` with each
/// record's key and value (`None`: a removal).
pub(crate) fn read_shared(
    consumer: &BaseConsumer,
    closing: &AtomicBool,
    mut apply: impl FnMut(&str, Option<&[u8]>),
) {
    while !closing.load(Ordering::Acquire) {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        match message {
            Ok(message) => {
                let key = String::from_utf8_lossy(message.key().unwrap_or_default());
                apply(&key, message.payload());
            }
            Err(e) => tracing::warn!(error = %e, "cannot read a shared topic; retrying"),
        }
    }
}

/// Applies the changes other instances made, in topic order.
fn consume(consumer: &BaseConsumer, catalog: &Catalog, runtime: &Runtime, closing: &AtomicBool) {
    read_shared(consumer, closing, |id, value| {
        let change = match value {
            None => RuleChange::Deleted(id.to_owned()),
            Some(value) => match serde_json::from_slice::<StoredRule>(value) {
                Ok(stored) => RuleChange::Stored(Box::new(stored)),
                Err(e) => {
                    tracing::warn!(rule = %id, error = %e, "skipping a rules-topic record this version cannot read");
                    return;
                }
            },
        };
        match catalog.apply_remote(runtime, change) {
            Ok(true) => tracing::info!(rule = %id, "applied a rule change from the rules topic"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(rule = %id, error = %e, "cannot apply a rule change from the rules topic")
            }
        }
    });
}
