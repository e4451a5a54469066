//! The byte layout of segment files: a header, then frames, then zeros.
//!
//! ```text
//! segment header (32 bytes): magic "CEPHEUSJ" | format u32 | base LSN u64 | crc32c u32 | 8 zero bytes
//! frame header   (32 bytes): payload length u32 | crc32c u32 | LSN u64 | written_at i64 (wall ms)
//!                            | frame format u8 | 7 zero bytes
//! payload        (length bytes)
//! ```
//!
//! All integers are little-endian. A frame's CRC32C covers its header from
//! the LSN on and its payload, so a frame is whole or detected as torn. A
//! frame is one group commit: written with one `write` and made durable by
//! one `fdatasync` before the next is written, so at most the last frame of
//! the log can be torn by a crash. Segments are allocated ahead of the
//! writes, so the bytes after the last frame read as zeros.

use crate::journal::JournalError;

/// Magic bytes at the start of every segment.
pub const SEGMENT_MAGIC: &[u8; 8] = b"CEPHEUSJ";
/// Layout version of segment files written by this build.
pub const SEGMENT_FORMAT: u32 = 1;
/// Layout version of frames written by this build.
pub const FRAME_FORMAT: u8 = 1;
/// Bytes of the segment header.
pub const SEGMENT_HEADER: usize = 32;
/// Bytes of a frame header.
pub const FRAME_HEADER: usize = 32;
/// Largest payload a frame may claim; a header claiming more is corrupt.
pub const MAX_PAYLOAD: usize = 1 << 30;

/// The segment header for a segment whose first frame is `base_lsn`.
pub fn segment_header(base_lsn: u64) -> [u8; SEGMENT_HEADER] {
    let mut h = [0u8; SEGMENT_HEADER];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&SEGMENT_FORMAT.to_le_bytes());
    h[12..20].copy_from_slice(&base_lsn.to_le_bytes());
    let crc = crc32c::crc32c(&h[..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Reads a segment header: the base LSN, or why it is not one.
pub fn read_segment_header(h: &[u8]) -> Result<u64, String> {
    if h.len() < SEGMENT_HEADER || h.iter().all(|&b| b == 0) {
        return Err("no segment header (the file is empty)".into());
    }
    if &h[..8] != SEGMENT_MAGIC {
        return Err("not a cepheus journal segment (wrong magic bytes)".into());
    }
    let crc = u32::from_le_bytes(h[20..24].try_into().expect("4 bytes"));
    if crc != crc32c::crc32c(&h[..20]) {
        return Err("the segment header's checksum does not match".into());
    }
    let format = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes"));
    if format != SEGMENT_FORMAT {
        return Err(format!(
            "segment format {format}; this build reads format {SEGMENT_FORMAT}: upgrade cepheus"
        ));
    }
    Ok(u64::from_le_bytes(h[12..20].try_into().expect("8 bytes")))
}

/// A frame's header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload bytes.
    pub len: usize,
    /// The frame's LSN.
    pub lsn: u64,
    /// Wall time the frame was written, in ms (retention by age).
    pub written_at: i64,
    /// Frame layout version.
    pub format: u8,
}

/// Encodes a whole frame: header and payload, one buffer for one write.
pub fn encode_frame(lsn: u64, written_at: i64, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(FRAME_HEADER + payload.len());
    frame.extend_from_slice(&[0; FRAME_HEADER]);
    frame.extend_from_slice(payload);
    seal_frame(&mut frame, lsn, written_at);
    frame
}

/// Fills in the frame header at the start of `frame` (its first
/// [`FRAME_HEADER`] bytes, reserved by the caller, the payload after them).
pub fn seal_frame(frame: &mut [u8], lsn: u64, written_at: i64) {
    let len = (frame.len() - FRAME_HEADER) as u32;
    frame[..4].copy_from_slice(&len.to_le_bytes());
    frame[8..16].copy_from_slice(&lsn.to_le_bytes());
    frame[16..24].copy_from_slice(&written_at.to_le_bytes());
    frame[24] = FRAME_FORMAT;
    frame[25..32].fill(0);
    let crc = crc32c::crc32c(&frame[8..]);
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// What a frame header says.
#[derive(Debug, PartialEq, Eq)]
pub enum HeaderRead {
    /// Zeros: the end of the written part of the segment.
    End,
    /// A plausible header; the payload's checksum is still to be checked.
    Frame(FrameHeader, u32),
    /// Not a header (garbage, or a torn write).
    Bad(String),
}

/// Reads a frame header from `h` (at least [`FRAME_HEADER`] bytes).
pub fn read_frame_header(h: &[u8]) -> HeaderRead {
    if h.len() < FRAME_HEADER {
        return HeaderRead::Bad("a frame header runs past the end of the file".into());
    }
    if h[..FRAME_HEADER].iter().all(|&b| b == 0) {
        return HeaderRead::End;
    }
    let len = u32::from_le_bytes(h[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(h[4..8].try_into().expect("4 bytes"));
    let lsn = u64::from_le_bytes(h[8..16].try_into().expect("8 bytes"));
    let written_at = i64::from_le_bytes(h[16..24].try_into().expect("8 bytes"));
    let format = h[24];
    if len == 0 || len > MAX_PAYLOAD {
        return HeaderRead::Bad(format!("a frame claims {len} bytes"));
    }
    HeaderRead::Frame(
        FrameHeader {
            len,
            lsn,
            written_at,
            format,
        },
        crc,
    )
}

/// Checks a frame's checksum over its header (`h`) and payload.
pub fn frame_checksum_ok(h: &[u8], payload: &[u8], crc: u32) -> bool {
    let c = crc32c::crc32c(&h[8..FRAME_HEADER]);
    crc32c::crc32c_append(c, payload) == crc
}

/// Refuses a frame of a format this build does not read.
pub fn check_frame_format(header: &FrameHeader) -> Result<(), JournalError> {
    if header.format == FRAME_FORMAT {
        Ok(())
    } else {
        Err(JournalError::UnknownFormat {
            what: "journal frame",
            found: u32::from(header.format),
            expected: u32::from(FRAME_FORMAT),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_reads_back_and_any_flipped_bit_is_detected() {
        let frame = encode_frame(42, 1_700, b"hello journal");
        let HeaderRead::Frame(header, crc) = read_frame_header(&frame) else {
            panic!("not a frame");
        };
        assert_eq!(header.lsn, 42);
        assert_eq!(header.len, 13);
        assert_eq!(header.written_at, 1_700);
        let payload = &frame[FRAME_HEADER..];
        assert!(frame_checksum_ok(&frame, payload, crc));
        for bit in (8 * 8)..(frame.len() * 8) {
            let mut bad = frame.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let ok = match read_frame_header(&bad) {
                HeaderRead::Frame(h, crc) => {
                    h.len == 13 && frame_checksum_ok(&bad, &bad[FRAME_HEADER..], crc)
                }
                _ => false,
            };
            assert!(!ok, "bit {bit} flipped unnoticed");
        }
        assert_eq!(read_frame_header(&[0; FRAME_HEADER]), HeaderRead::End);
    }

    #[test]
    fn segment_headers_name_their_base_and_refuse_strangers() {
        assert_eq!(read_segment_header(&segment_header(77)), Ok(77));
        let mut bad = segment_header(77);
        bad[13] ^= 1;
        assert!(read_segment_header(&bad).unwrap_err().contains("checksum"));
        assert!(read_segment_header(&[0; 32]).unwrap_err().contains("empty"));
        assert!(
            read_segment_header(b"SQLite format 3\0 and then some bytes")
                .unwrap_err()
                .contains("magic")
        );
    }
}
