//! The scale-out mode's shared delivery (`docs/scale-out.md`): receivers,
//! routes and silences are the same on every instance, and each alert is
//! delivered once for the whole group.
//!
//! ```text
//! local change (REST, config file) ─► producer thread ─► delivery topic (compacted, one partition)
//! sending instance's cursors ──────┘                          │
//!                                                             ▼
//!                               every instance's reader ─► Delivery::apply_remote
//! ```
//!
//! Records: key `receiver/NAME`, `routes`, `silence/ID` or `cursor/NAME`;
//! the value is the stored item as JSON (a cursor: its seq), no value for
//! a removal. Only the instance evaluating partition 0 sends
//! ([`Delivery::sends_here`]); it tells its receivers' cursors as they move,
//! and the others keep them, so the next sender goes on from there.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};

use crate::cluster::instances::ensure_topic;
use crate::cluster::{produce_retrying, read_shared};
use crate::delivery::{Delivery, DeliveryChange};
use crate::journal::kafka::{client_config, KafkaConfig};

/// The delivery topic's producer and reader threads.
pub struct DeliveryLog {
    closing: Arc<AtomicBool>,
}

impl DeliveryLog {
    /// Creates `topic` when missing, shares `delivery`'s local changes
    /// through it and applies the other instances'.
    pub async fn start(
        config: &KafkaConfig,
        topic: &str,
        delivery: Arc<Delivery>,
    ) -> anyhow::Result<DeliveryLog> {
        ensure_topic(config, topic).await?;
        let producer: FutureProducer = client_config(config)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .create()?;
        let consumer: BaseConsumer = client_config(config)
            .set("group.id", format!("{}-delivery", config.group_id))
            .set("enable.auto.commit", "false")
            .create()?;
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(topic, 0, Offset::Beginning)?;
        consumer.assign(&list)?;
        let (tx, rx) = std::sync::mpsc::channel::<DeliveryChange>();
        delivery.tell_changes(tx);
        let closing = Arc::new(AtomicBool::new(false));
        let out_topic = topic.to_owned();
        std::thread::Builder::new()
            .name("cepheus-delivery-out".into())
            .spawn(move || produce(&producer, &out_topic, rx))?;
        let stop = Arc::clone(&closing);
        std::thread::Builder::new()
            .name("cepheus-delivery-in".into())
            .spawn(move || consume(&consumer, &delivery, &stop))?;
        Ok(DeliveryLog { closing })
    }

    /// Stops reading the topic.
    pub fn stop(&self) {
        self.closing.store(true, Ordering::Release);
    }
}

/// A change as a record: its key and value (none for a removal).
fn record_of(change: &DeliveryChange) -> Result<(String, Option<Vec<u8>>), serde_json::Error> {
    Ok(match change {
        DeliveryChange::Receiver(r) => (
            format!("receiver/{}", r.spec.name),
            Some(serde_json::to_vec(r)?),
        ),
        DeliveryChange::ReceiverDeleted(name) => (format!("receiver/{name}"), None),
        DeliveryChange::Routes(routes) => ("routes".into(), Some(serde_json::to_vec(routes)?)),
        DeliveryChange::Silence(s) => (format!("silence/{}", s.id), Some(serde_json::to_vec(s)?)),
        DeliveryChange::SilenceRemoved(id) => (format!("silence/{id}"), None),
        DeliveryChange::Cursor(name, seq) => {
            (format!("cursor/{name}"), Some(serde_json::to_vec(seq)?))
        }
    })
}

/// A record as a change; `Err` says why it is not one this build reads.
fn change_of(key: &str, value: Option<&[u8]>) -> Result<Option<DeliveryChange>, String> {
    let decode_error = |e: serde_json::Error| format!("record `{key}`: {e}");
    let (kind, name) = key.split_once('/').unwrap_or((key, ""));
    Ok(Some(match (kind, value) {
        ("receiver", Some(v)) => {
            DeliveryChange::Receiver(Box::new(serde_json::from_slice(v).map_err(decode_error)?))
        }
        ("receiver", None) => DeliveryChange::ReceiverDeleted(name.to_owned()),
        ("routes", Some(v)) => {
            DeliveryChange::Routes(serde_json::from_slice(v).map_err(decode_error)?)
        }
        ("silence", Some(v)) => {
            DeliveryChange::Silence(Box::new(serde_json::from_slice(v).map_err(decode_error)?))
        }
        ("silence", None) => DeliveryChange::SilenceRemoved(name.to_owned()),
        ("cursor", Some(v)) => DeliveryChange::Cursor(
            name.to_owned(),
            serde_json::from_slice(v).map_err(decode_error)?,
        ),
        ("routes" | "cursor", None) => return Ok(None),
        _ => return Err(format!("unknown record key `{key}`")),
    }))
}

/// Produces each local change, retrying until the brokers take it.
fn produce(
    producer: &FutureProducer,
    topic: &str,
    changes: std::sync::mpsc::Receiver<DeliveryChange>,
) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    else {
        tracing::error!(
            "cannot start the delivery producer: delivery changes stay on this instance"
        );
        return;
    };
    for change in changes {
        let (key, value) = match record_of(&change) {
            Ok(record) => record,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a delivery change");
                continue;
            }
        };
        produce_retrying(&runtime, producer, topic, &key, value.as_deref());
    }
}

/// Applies the changes other instances made, in topic order.
fn consume(consumer: &BaseConsumer, delivery: &Arc<Delivery>, closing: &AtomicBool) {
    read_shared(consumer, closing, |key, value| {
        let change = match change_of(key, value) {
            Ok(Some(change)) => change,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "skipping a delivery-topic record this version cannot read");
                return;
            }
        };
        match delivery.apply_remote(change) {
            Ok(true) => tracing::info!(key, "applied a delivery change from the delivery topic"),
            Ok(false) => {}
            Err(e) => tracing::warn!(key, error = %e, "cannot apply a delivery change"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_reads_back_from_its_record() {
        for change in [
            DeliveryChange::ReceiverDeleted("ops".into()),
            DeliveryChange::SilenceRemoved("00ff".into()),
            DeliveryChange::Cursor("ops".into(), 42),
            DeliveryChange::Routes(Default::default()),
        ] {
            let (key, value) = record_of(&change).unwrap();
            assert_eq!(change_of(&key, value.as_deref()).unwrap(), Some(change));
        }
        assert!(change_of("nonsense", Some(b"1")).is_err());
    }
}
