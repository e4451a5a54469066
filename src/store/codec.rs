//! The byte format of everything cepheus writes to sled.
//!
//! Every value is `[format version: u8][MessagePack, fields by name]`. The
//! version is per record kind (see each kind's `FORMAT` constant); a reader
//! that meets a version it does not know refuses the record with an error
//! naming it, instead of misreading it — so the next change of layout is a
//! migration, not a data loss (STYLE habit 9).

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::store::StoreError;

/// A record kind stored in sled, with its current layout version.
pub trait Record: Serialize + DeserializeOwned {
    /// Short name of the kind, for error messages.
    const KIND: &'static str;
    /// Layout version written by this build.
    const FORMAT: u8;
    /// The oldest layout version this build still reads (with the same
    /// decoder: MessagePack reads a struct written as a map of names or as
    /// an array, and fields added at the end with `#[serde(default)]`).
    const READS_SINCE: u8 = Self::FORMAT;
    /// Whether structs are written as arrays (positional, compact) rather
    /// than maps of field names. Positional records must not skip fields:
    /// no `skip_serializing_if`, new fields only at the end, with
    /// `#[serde(default)]`.
    const POSITIONAL: bool = false;
}

/// Encodes `value` with its kind's current version.
pub fn encode<T: Record>(value: &T) -> Result<Vec<u8>, StoreError> {
    let mut bytes = Vec::with_capacity(64);
    bytes.push(T::FORMAT);
    let written = if T::POSITIONAL {
        rmp_serde::encode::write(&mut bytes, value)
    } else {
        rmp_serde::encode::write_named(&mut bytes, value)
    };
    written.map_err(|e| StoreError::Encode(T::KIND, e.to_string()))?;
    Ok(bytes)
}

/// Encodes `value` as a record of kind `T` (a borrowing type with `T`'s
/// serialized layout, so nothing is cloned to be written).
pub fn encode_as<T: Record, V: Serialize>(value: &V) -> Result<Vec<u8>, StoreError> {
    let mut bytes = Vec::with_capacity(128);
    bytes.push(T::FORMAT);
    let written = if T::POSITIONAL {
        rmp_serde::encode::write(&mut bytes, value)
    } else {
        rmp_serde::encode::write_named(&mut bytes, value)
    };
    written.map_err(|e| StoreError::Encode(T::KIND, e.to_string()))?;
    Ok(bytes)
}

/// Decodes a record written by [`encode`].
pub fn decode<T: Record>(bytes: &[u8]) -> Result<T, StoreError> {
    let Some((&format, body)) = bytes.split_first() else {
        return Err(StoreError::Corrupt(T::KIND, "empty record".into()));
    };
    if !(T::READS_SINCE..=T::FORMAT).contains(&format) {
        return Err(StoreError::UnknownFormat {
            kind: T::KIND,
            found: format,
            expected: T::FORMAT,
        });
    }
    rmp_serde::from_slice(body).map_err(|e| StoreError::Corrupt(T::KIND, e.to_string()))
}

/// Big-endian bytes of `n`, so sled's byte order is numeric order.
pub fn be(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

/// Reads a big-endian `u64` key (or the first 8 bytes of one).
pub fn read_be(bytes: &[u8]) -> Option<u64> {
    bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        a: u32,
        b: String,
    }
    impl Record for Sample {
        const KIND: &'static str = "sample";
        const FORMAT: u8 = 3;
    }

    #[test]
    fn records_round_trip_and_unknown_versions_are_refused() {
        let s = Sample {
            a: 7,
            b: "x".into(),
        };
        let bytes = encode(&s).unwrap();
        assert_eq!(bytes[0], 3);
        assert_eq!(decode::<Sample>(&bytes).unwrap(), s);
        let mut newer = bytes.clone();
        newer[0] = 4;
        assert!(matches!(
            decode::<Sample>(&newer),
            Err(StoreError::UnknownFormat { found: 4, .. })
        ));
        assert!(matches!(
            decode::<Sample>(&[]),
            Err(StoreError::Corrupt(..))
        ));
    }
}
