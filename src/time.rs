//! Event time and durations.
//!
//! cepheus keeps time as whole milliseconds since the Unix epoch (UTC), the
//! resolution Flink uses, so boundaries such as "299.999 s matches a 5 m
//! window, 300.000 s does not" are exact integer comparisons. Digits below a
//! millisecond in an RFC 3339 timestamp are truncated (see
//! `docs/decisions.md`).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The wall clock, in cepheus's time type. Only the service shell reads it
/// (the engine is given time, never reads it).
pub fn wall_now() -> Timestamp {
    Timestamp(chrono::Utc::now().timestamp_millis())
}

/// A point in event time: milliseconds since the Unix epoch, UTC.
///
/// Serialized as an RFC 3339 string with millisecond precision
/// (`2026-01-01T00:00:01.123Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

/// A length of time in milliseconds. Never negative in a valid rule.
///
/// Written in rules as a number followed by a unit (`ms`, `s`, `m`, `h`, `d`),
/// and units may be combined: `1h30m`, `2m30s`, `250ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub i64);

impl Timestamp {
    /// The earliest representable time; used as "no time yet".
    pub const MIN: Timestamp = Timestamp(i64::MIN);

    /// Milliseconds since the Unix epoch.
    pub fn millis(self) -> i64 {
        self.0
    }

    /// Parses an RFC 3339 timestamp; sub-millisecond digits are truncated.
    pub fn parse_rfc3339(text: &str) -> Result<Timestamp, TimeError> {
        let parsed = DateTime::parse_from_rfc3339(text)
            .map_err(|e| TimeError::BadTimestamp(text.to_owned(), e.to_string()))?;
        Ok(Timestamp(parsed.with_timezone(&Utc).timestamp_millis()))
    }

    /// Formats as RFC 3339 in UTC with exactly three fractional digits.
    pub fn to_rfc3339(self) -> String {
        match Utc.timestamp_millis_opt(self.0).single() {
            Some(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
            // NB: outside chrono's range (±262,000 years); print the raw value
            // rather than fail, so an explanation never breaks an alert.
            None => format!("@{}ms", self.0),
        }
    }

    /// `self + d`, saturating at the ends of the range.
    pub fn plus(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(d.0))
    }

    /// `self - d`, saturating at the ends of the range.
    pub fn minus(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(d.0))
    }

    /// The time elapsed from `earlier` to `self` (negative if `earlier` is later).
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&self.to_rfc3339())
        } else {
            serializer.serialize_i64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = String::deserialize(deserializer)?;
            Timestamp::parse_rfc3339(&text).map_err(serde::de::Error::custom)
        } else {
            i64::deserialize(deserializer).map(Timestamp)
        }
    }
}

impl Duration {
    /// Zero length.
    pub const ZERO: Duration = Duration(0);

    /// Length in milliseconds.
    pub fn millis(self) -> i64 {
        self.0
    }

    /// From whole seconds.
    pub fn from_secs(secs: i64) -> Duration {
        Duration(secs.saturating_mul(1000))
    }

    /// Parses `250ms`, `30s`, `5m`, `1h30m`, `2d`. A bare `0` is also accepted.
    pub fn parse(text: &str) -> Result<Duration, TimeError> {
        let bad = || TimeError::BadDuration(text.to_owned());
        let trimmed = text.trim();
        if trimmed == "0" {
            return Ok(Duration::ZERO);
        }
        if trimmed.is_empty() {
            return Err(bad());
        }
        let mut total: i64 = 0;
        let mut rest = trimmed;
        while !rest.is_empty() {
            let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
            if digits == 0 {
                return Err(bad());
            }
            let number: i64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest.chars().take_while(|c| c.is_ascii_alphabetic()).count();
            let unit_ms: i64 = match &rest[..unit_len] {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => return Err(bad()),
            };
            rest = &rest[unit_len..];
            let part = number.checked_mul(unit_ms).ok_or_else(bad)?;
            total = total.checked_add(part).ok_or_else(bad)?;
        }
        Ok(Duration(total))
    }
}

impl fmt::Display for Duration {
    /// The shortest exact spelling: `5m`, `1h30m`, `1500ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.0;
        if ms == 0 {
            return f.write_str("0s");
        }
        if ms < 0 {
            f.write_str("-")?;
            ms = ms.saturating_neg();
        }
        if ms % 1000 != 0 {
            return write!(f, "{ms}ms");
        }
        let mut secs = ms / 1000;
        for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
            if secs >= size {
                write!(f, "{}{unit}", secs / size)?;
                secs %= size;
            }
        }
        Ok(())
    }
}

impl FromStr for Duration {
    type Err = TimeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Duration::parse(s)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            serializer.serialize_i64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = String::deserialize(deserializer)?;
            Duration::parse(&text).map_err(serde::de::Error::custom)
        } else {
            i64::deserialize(deserializer).map(Duration)
        }
    }
}

/// A time value that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// Not an RFC 3339 timestamp.
    #[error("`{0}` is not an RFC 3339 timestamp such as 2026-01-01T00:00:00Z ({1})")]
    BadTimestamp(String, String),
    /// Not a duration.
    #[error(
        "`{0}` is not a duration: write a number and a unit (ms, s, m, h, d), e.g. 30s, 5m, 1h30m"
    )]
    BadDuration(String),
}

impl utoipa::PartialSchema for Timestamp {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .description(Some("RFC 3339 timestamp in UTC with millisecond precision"))
            .examples(["2026-01-01T00:00:01.123Z"])
            .into()
    }
}

impl utoipa::ToSchema for Timestamp {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print_round_trip() {
        for (text, ms) in [
            ("250ms", 250),
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h30m", 5_400_000),
            ("2d", 172_800_000),
            ("0", 0),
        ] {
            assert_eq!(Duration::parse(text), Ok(Duration(ms)), "{text}");
        }
        assert_eq!(Duration(5_400_000).to_string(), "1h30m");
        assert_eq!(Duration(1_500).to_string(), "1500ms");
        assert_eq!(Duration(172_800_000).to_string(), "2d");
    }

    #[test]
    fn bad_durations_are_rejected() {
        for text in [
            "",
            "5",
            "m",
            "5 m",
            "5min",
            "-5s",
            "1.5s",
            "99999999999999999999d",
        ] {
            assert!(Duration::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn timestamps_keep_milliseconds_and_truncate_below() {
        let t = Timestamp::parse_rfc3339("2026-01-01T00:00:01.123987Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-01-01T00:00:01.123Z");
        let offset = Timestamp::parse_rfc3339("2026-01-01T01:00:00+01:00").unwrap();
        assert_eq!(offset.to_rfc3339(), "2026-01-01T00:00:00.000Z");
        assert!(Timestamp::parse_rfc3339("yesterday").is_err());
    }
}
