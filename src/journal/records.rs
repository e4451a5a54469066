//! What a frame's payload holds: sections of accepted events, alerts and
//! dead letters, each `[kind u8][length u32 LE][body]`.
//!
//! Events are the bulk of the journal and are written on the ingest path,
//! so they have a small binary layout of their own (lengths as LEB128
//! varints, `data` as its JSON text); alerts and dead letters are
//! positional MessagePack. A reader skips a section kind it does not know,
//! so a later build can add one; the frame header's format version says
//! when a known one changes.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::event::{Event, EventRef};
use crate::journal::JournalError;
use crate::rules::Severity;
use crate::time::Timestamp;

/// Section kind: accepted events.
const EVENTS: u8 = 1;
/// Section kind: alerts.
const ALERTS: u8 = 2;
/// Section kind: dead letters.
const DEAD_LETTERS: u8 = 3;

/// An alert as the journal holds it (and the alert log stores it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEntry {
    /// Gap-free position in the alert log.
    pub seq: u64,
    /// Deterministic id.
    pub id: String,
    /// Rule id.
    pub rule: String,
    /// Rule version.
    pub rule_version: u64,
    /// Entity key.
    pub key: String,
    /// Severity.
    pub severity: Severity,
    /// Event time the pattern completed.
    pub time: Timestamp,
    /// Wall time it was detected.
    pub detected_at: Timestamp,
    /// Rendered message.
    pub message: String,
    /// Explaining events.
    pub events: Vec<EventRef>,
    /// Explaining values, as JSON text (numbers round-trip exactly).
    pub values: String,
    /// From a rule in shadow mode.
    pub shadow: bool,
    /// On a resolution: the id of the alert it resolves. (Added in the
    /// journal's first format: older frames end before it, read as none.)
    #[serde(default)]
    pub resolves: Option<String>,
}

/// Why an event became a dead letter, as the journal holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LetterReason {
    /// Failed validation.
    Invalid,
    /// Older than its entity's watermark.
    Late,
    /// Late for a rule whose window for it has already closed.
    WindowClosed,
}

/// A dead letter as the journal holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LetterEntry {
    /// For a letter a replay of the journal makes again (a late event: its
    /// key and place), so it is listed once; `None` for invalid events.
    pub identity: Option<Vec<u8>>,
    /// Why.
    pub reason: LetterReason,
    /// The details, a sentence.
    pub error: String,
    /// The entity key, when known.
    pub key: Option<String>,
    /// When cepheus received it.
    pub received_at: Timestamp,
    /// The event as JSON text.
    pub event: String,
}

/// A frame's payload, decoded.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Payload {
    /// Accepted events, in acceptance order.
    pub events: Vec<Event>,
    /// Alerts, in seq order.
    pub alerts: Vec<AlertEntry>,
    /// Dead letters.
    pub letters: Vec<LetterEntry>,
}

/// Builds a payload; the events section is encoded as events arrive.
#[derive(Default)]
pub struct PayloadBuilder {
    events: Vec<u8>,
    event_count: u32,
    /// Write an events section even with no event (a frame must hold
    /// something: see `allow_empty`).
    empty_events_section: bool,
    alerts: Vec<AlertEntry>,
    letters: Vec<LetterEntry>,
}

impl PayloadBuilder {
    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.event_count == 0 && self.alerts.is_empty() && self.letters.is_empty()
    }

    /// Lets the payload be empty of events, alerts and letters: it then
    /// holds an events section of none (a frame is never zero bytes).
    pub fn allow_empty(&mut self) {
        self.empty_events_section = true;
    }

    /// Events added so far.
    pub fn event_count(&self) -> u32 {
        self.event_count
    }

    /// Bytes of the events section so far (an estimate of the frame's size).
    pub fn event_bytes(&self) -> usize {
        self.events.len()
    }

    /// Adds an accepted event of `partition`.
    pub fn push_event(&mut self, event: &Event, partition: u16) {
        encode_event(&mut self.events, event, partition);
        self.event_count += 1;
    }

    /// Adds an event encoded beforehand ([`EncodedEvents`]).
    pub fn push_encoded(&mut self, encoded: &[u8]) {
        self.events.extend_from_slice(encoded);
        self.event_count += 1;
    }

    /// Starts with `buffer` (cleared) for the events, keeping its capacity.
    pub fn with_buffer(mut buffer: Vec<u8>) -> PayloadBuilder {
        buffer.clear();
        PayloadBuilder {
            events: buffer,
            ..PayloadBuilder::default()
        }
    }

    /// Takes the alerts and dead letters out, and gives back the events
    /// buffer for the next builder.
    pub fn into_parts(self) -> (Vec<AlertEntry>, Vec<LetterEntry>, Vec<u8>) {
        (self.alerts, self.letters, self.events)
    }

    /// Adds an alert.
    pub fn push_alert(&mut self, alert: AlertEntry) {
        self.alerts.push(alert);
    }

    /// Adds a dead letter.
    pub fn push_letter(&mut self, letter: LetterEntry) {
        self.letters.push(letter);
    }

    /// The alerts added (they are published once the frame is durable).
    pub fn alerts(&self) -> &[AlertEntry] {
        &self.alerts
    }

    /// The dead letters added.
    pub fn letters(&self) -> &[LetterEntry] {
        &self.letters
    }

    /// The payload's bytes.
    pub fn finish(&self) -> Result<Vec<u8>, JournalError> {
        let mut out = Vec::with_capacity(self.events.len() + 64);
        self.finish_into(&mut out)?;
        Ok(out)
    }

    /// Appends the payload's bytes to `out`.
    pub fn finish_into(&self, out: &mut Vec<u8>) -> Result<(), JournalError> {
        if self.event_count > 0 || self.empty_events_section {
            out.push(EVENTS);
            out.extend_from_slice(&(4 + self.events.len() as u32).to_le_bytes());
            out.extend_from_slice(&self.event_count.to_le_bytes());
            out.extend_from_slice(&self.events);
        }
        if !self.alerts.is_empty() {
            section(out, ALERTS, &pack(&self.alerts, "alerts")?);
        }
        if !self.letters.is_empty() {
            section(out, DEAD_LETTERS, &pack(&self.letters, "dead letters")?);
        }
        Ok(())
    }
}

/// A request's events encoded before it takes the sequencer's turn, so the
/// work under the lock is a copy (and the time of events sent without one).
#[derive(Debug, Default)]
pub struct EncodedEvents {
    bytes: Vec<u8>,
    /// Per event: where its bytes start and where its time is.
    spans: Vec<(usize, usize)>,
}

impl EncodedEvents {
    /// Encodes `events`, each with its partition.
    pub fn encode(events: &[Event], partition: impl Fn(&str) -> u16) -> EncodedEvents {
        let mut encoded = EncodedEvents {
            bytes: Vec::with_capacity(events.len() * 96),
            spans: Vec::with_capacity(events.len()),
        };
        for event in events {
            let start = encoded.bytes.len();
            let time_at = encode_event(&mut encoded.bytes, event, partition(&event.key));
            encoded.spans.push((start, time_at));
        }
        encoded
    }

    /// Sets the time of event `i` (an event sent without one gets the
    /// acceptance time).
    pub fn set_time(&mut self, i: usize, time: Timestamp) {
        if let Some(&(_, at)) = self.spans.get(i) {
            self.bytes[at..at + 8].copy_from_slice(&time.millis().to_le_bytes());
        }
    }

    /// The bytes of event `i`.
    pub fn event(&self, i: usize) -> &[u8] {
        let start = self.spans[i].0;
        let end = self.spans.get(i + 1).map_or(self.bytes.len(), |s| s.0);
        &self.bytes[start..end]
    }
}

fn pack<T: Serialize>(value: &T, what: &str) -> Result<Vec<u8>, JournalError> {
    rmp_serde::to_vec(value).map_err(|e| JournalError::Encode(format!("{what}: {e}")))
}

fn section(out: &mut Vec<u8>, kind: u8, body: &[u8]) {
    out.push(kind);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
}

/// Which sections [`decode`] reads (the others are skipped unread).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    /// Accepted events.
    pub events: bool,
    /// Alerts.
    pub alerts: bool,
    /// Dead letters.
    pub letters: bool,
}

impl Wanted {
    /// Every section.
    pub const ALL: Wanted = Wanted {
        events: true,
        alerts: true,
        letters: true,
    };
}

/// Decodes the sections of a payload that `wanted` names.
pub fn decode(payload: &[u8], wanted: Wanted) -> Result<Payload, String> {
    let mut out = Payload::default();
    let mut rest = payload;
    while !rest.is_empty() {
        let (kind, body, after) = take_section(rest)?;
        rest = after;
        match kind {
            EVENTS if wanted.events => out.events = decode_events(body)?,
            ALERTS if wanted.alerts => {
                out.alerts = rmp_serde::from_slice(body).map_err(|e| format!("alerts: {e}"))?
            }
            DEAD_LETTERS if wanted.letters => {
                out.letters =
                    rmp_serde::from_slice(body).map_err(|e| format!("dead letters: {e}"))?
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The (key, id) pairs of the events of a payload that carry an id,
/// without decoding their data.
pub fn event_ids(payload: &[u8]) -> Result<Vec<(String, String)>, String> {
    let mut rest = payload;
    let mut ids = Vec::new();
    while !rest.is_empty() {
        let (kind, body, after) = take_section(rest)?;
        rest = after;
        if kind == EVENTS {
            let mut r = Reader::new(body);
            let count = r.u32()?;
            for _ in 0..count {
                let fields = r.event_fields()?;
                if let Some(id) = fields.id {
                    ids.push((fields.key.to_owned(), id.to_owned()));
                }
            }
        }
    }
    Ok(ids)
}

fn take_section(rest: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
    if rest.len() < 5 {
        return Err("a section header is cut short".into());
    }
    let kind = rest[0];
    let len = u32::from_le_bytes(rest[1..5].try_into().expect("4 bytes")) as usize;
    let body = rest
        .get(5..5 + len)
        .ok_or_else(|| format!("a section of {len} bytes runs past the frame"))?;
    Ok((kind, body, &rest[5 + len..]))
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// The event layout: partition u16 | flags u8 (bit 0: has id) | key | [id]
/// | type | time i64 | data (JSON text; empty for `{}`). Returns where the
/// time is.
fn encode_event(out: &mut Vec<u8>, event: &Event, partition: u16) -> usize {
    out.extend_from_slice(&partition.to_le_bytes());
    out.push(u8::from(event.id.is_some()));
    put_bytes(out, event.key.as_bytes());
    if let Some(id) = &event.id {
        put_bytes(out, id.as_bytes());
    }
    put_bytes(out, event.event_type.as_bytes());
    let time_at = out.len();
    out.extend_from_slice(&event.time.millis().to_le_bytes());
    if event.data.is_empty() {
        put_varint(out, 0);
    } else {
        // NB: serializing a JSON object cannot fail.
        let data = serde_json::to_vec(&event.data).unwrap_or_default();
        put_bytes(out, &data);
    }
    time_at
}

struct Reader<'a> {
    bytes: &'a [u8],
}

struct EventFields<'a> {
    key: &'a str,
    id: Option<&'a str>,
    event_type: &'a str,
    time: i64,
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.bytes.len() < n {
            return Err("an event is cut short".into());
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            n |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(n);
            }
        }
        Err("a length is too long".into())
    }

    fn text(&mut self) -> Result<&'a str, String> {
        let n = self.varint()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| "text is not UTF-8".to_owned())
    }

    fn event_fields(&mut self) -> Result<EventFields<'a>, String> {
        let _partition = self.take(2)?;
        let flags = self.take(1)?[0];
        let key = self.text()?;
        let id = if flags & 1 == 1 {
            Some(self.text()?)
        } else {
            None
        };
        let event_type = self.text()?;
        let time = i64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes"));
        let n = self.varint()? as usize;
        let data = self.take(n)?;
        Ok(EventFields {
            key,
            id,
            event_type,
            time,
            data,
        })
    }
}

fn decode_events(body: &[u8]) -> Result<Vec<Event>, String> {
    let mut r = Reader::new(body);
    let count = r.u32()? as usize;
    let mut events = Vec::with_capacity(count.min(body.len()));
    for _ in 0..count {
        let f = r.event_fields()?;
        let data: Map<String, Value> = if f.data.is_empty() {
            Map::new()
        } else {
            serde_json::from_slice(f.data).map_err(|e| format!("event data: {e}"))?
        };
        events.push(Event {
            id: f.id.map(str::to_owned),
            key: f.key.to_owned(),
            event_type: f.event_type.to_owned(),
            time: Timestamp(f.time),
            data,
        });
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(id: Option<&str>, key: &str, data: Value) -> Event {
        Event {
            id: id.map(str::to_owned),
            key: key.into(),
            event_type: "login_failed".into(),
            time: Timestamp(-5),
            data: data.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn a_payload_reads_back_section_by_section() {
        let events = vec![
            event(Some("e-1"), "acct-42", json!({"ip": "10.0.0.7", "n": 1.5})),
            event(None, "ключ", json!({})),
            event(
                Some(""),
                "k",
                json!({"deep": [1, {"x": null}], "big": u64::MAX}),
            ),
        ];
        let mut builder = PayloadBuilder::default();
        for (i, e) in events.iter().enumerate() {
            builder.push_event(e, i as u16);
        }
        let alert = AlertEntry {
            seq: 9,
            id: "a".repeat(32),
            rule: "r".into(),
            rule_version: 2,
            key: "acct-42".into(),
            severity: Severity::High,
            time: Timestamp(1),
            detected_at: Timestamp(2),
            message: "m".into(),
            events: vec![EventRef::of(&events[1], 4)],
            values: r#"{"n":3}"#.into(),
            shadow: false,
            resolves: Some("b".repeat(32)),
        };
        builder.push_alert(alert.clone());
        let letter = LetterEntry {
            identity: Some(b"k\0id".to_vec()),
            reason: LetterReason::Late,
            error: "late".into(),
            key: Some("k".into()),
            received_at: Timestamp(3),
            event: "{}".into(),
        };
        builder.push_letter(letter.clone());
        let bytes = builder.finish().unwrap();
        let read = decode(&bytes, Wanted::ALL).unwrap();
        assert_eq!(read.events, events);
        assert_eq!(read.alerts, vec![alert]);
        assert_eq!(read.letters, vec![letter]);
        let only_alerts = decode(
            &bytes,
            Wanted {
                events: false,
                alerts: true,
                letters: false,
            },
        )
        .unwrap();
        assert!(only_alerts.events.is_empty() && only_alerts.alerts.len() == 1);
        assert_eq!(
            event_ids(&bytes).unwrap(),
            vec![
                ("acct-42".to_owned(), "e-1".to_owned()),
                ("k".to_owned(), String::new())
            ]
        );
        // An unknown section is skipped.
        let mut newer = bytes.clone();
        section(&mut newer, 200, b"later");
        assert_eq!(decode(&newer, Wanted::ALL).unwrap(), read);
        // Events encoded beforehand, one given its time later, read the same.
        let mut encoded = EncodedEvents::encode(&events, |_| 0);
        encoded.set_time(1, Timestamp(77));
        let mut builder = PayloadBuilder::default();
        for i in 0..events.len() {
            builder.push_encoded(encoded.event(i));
        }
        let mut expected = events.clone();
        expected[1].time = Timestamp(77);
        assert_eq!(
            decode(&builder.finish().unwrap(), Wanted::ALL)
                .unwrap()
                .events,
            expected
        );
        // A cut payload is an error, not a panic.
        for cut in 0..bytes.len() {
            let _ = decode(&bytes[..cut], Wanted::ALL);
        }
    }
}
