//! Record and frame codec (`no_std`, no alloc): CRC-32C, frame headers, postcard envelopes.
//!
//! A frame is a 36-byte header followed by `count` records, each `varint(len) ‖
//! postcard(Envelope)` (layout in `docs/buffer-format.md` §5): data records (variant 0, or 2
//! with the producer's [`OriginV1`]) and the gap markers format 1 wrote (variant 1). Encoding writes into any
//! [`FrameBuf`] — a `heapless::Vec<u8, N>` on a microcontroller ([`HeaplessFrame`]), a `Vec<u8>`
//! on the gateway — and never panics on a full buffer: the failed record is rolled back and
//! [`CodecError::BufferFull`] returned. Decoding borrows from the input ([`FrameView`]).

use serde::{Deserialize, Serialize};

/// Frame magic, stored little-endian (`F1 B0`).
pub const FRAME_MAGIC: u16 = 0xB0F1;
/// Frame format version.
pub const FRAME_VERSION: u8 = 1;
/// Bytes of a frame header.
pub const FRAME_HEADER_LEN: usize = 36;
/// Largest frame body.
pub const MAX_BODY_LEN: u32 = 1 << 20;
/// Largest `key.len() + payload.len()` of one data record, leaving room for the envelope.
pub const MAX_RECORD_LEN: usize = MAX_BODY_LEN as usize - 32;
/// Frame flag: the frame holds at least one gap marker.
pub const FLAG_GAP: u8 = 0x01;
/// Offset of the first byte after the CRC field.
const CRC_END: usize = 12;

/// The frame CRC: over everything but the CRC field itself (bytes 0..8 and 12..).
fn frame_crc(frame: &[u8]) -> u32 {
    let mut h = Crc32c::new();
    h.update(&frame[..8]);
    h.update(&frame[CRC_END..]);
    h.finish()
}

// ---------------------------------------------------------------------------------------------
// CRC-32C (Castagnoli), from maintained crates.
//
// With `std` (the gateway): `crc32c`, which uses the CPU's CRC-32C instructions when it finds
// them at run time (SSE 4.2 on x86_64; the CRC extension on aarch64, which the Cortex-A53/A72/
// A76 of Raspberry Pi 3/4/5 class boards all have) and slice-by-8 tables otherwise. It needs
// std (run-time detection), so without `std` (sensor firmware) the `crc` crate's byte-wise
// table (1 KiB of flash) does it. `buffer-bench` prints both beside the slice-by-8 this crate
// used to carry; the unit tests hold both to a bit-by-bit reference.

/// The no_std CRC-32C (also checked by the std unit tests).
#[cfg_attr(feature = "std", allow(dead_code))]
const CASTAGNOLI: crc::Crc<u32, crc::Table<1>> =
    crc::Crc::<u32, crc::Table<1>>::new(&crc::CRC_32_ISCSI);

/// Incremental CRC-32C.
#[derive(Clone)]
pub struct Crc32c(
    #[cfg(feature = "std")] u32,
    #[cfg(not(feature = "std"))] crc::Digest<'static, u32, crc::Table<1>>,
);

impl core::fmt::Debug for Crc32c {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("Crc32c").field(&self.finish()).finish()
    }
}

impl Default for Crc32c {
    fn default() -> Self {
        Self::new()
    }
}

impl Crc32c {
    /// A fresh hasher.
    pub const fn new() -> Self {
        #[cfg(feature = "std")]
        return Crc32c(0);
        #[cfg(not(feature = "std"))]
        return Crc32c(CASTAGNOLI.digest());
    }

    /// Feeds `data`.
    pub fn update(&mut self, data: &[u8]) {
        #[cfg(feature = "std")]
        {
            self.0 = crc32c::crc32c_append(self.0, data);
        }
        #[cfg(not(feature = "std"))]
        self.0.update(data);
    }

    /// The CRC of everything fed so far.
    pub fn finish(&self) -> u32 {
        #[cfg(feature = "std")]
        return self.0;
        #[cfg(not(feature = "std"))]
        return self.0.clone().finalize();
    }
}

/// CRC-32C of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    #[cfg(feature = "std")]
    return crc32c::crc32c(data);
    #[cfg(not(feature = "std"))]
    return CASTAGNOLI.checksum(data);
}

// ---------------------------------------------------------------------------------------------
// Errors.

/// Why encoding or decoding failed. Values carry what was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The output buffer cannot take the record or header.
    #[error("frame buffer full: need {need} more bytes, {free} free")]
    BufferFull { need: usize, free: usize },
    /// A record larger than [`MAX_RECORD_LEN`].
    #[error("record of {len} bytes exceeds the maximum of {MAX_RECORD_LEN}")]
    RecordTooLarge { len: usize },
    /// Fewer bytes than the header or body needs.
    #[error("truncated frame: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
    /// Magic is not `0xB0F1`.
    #[error("bad frame magic {found:#06x}")]
    BadMagic { found: u16 },
    /// Unknown frame version.
    #[error("unsupported frame version {found}")]
    BadVersion { found: u8 },
    /// `body_len`, `count` or `first_seq` out of bounds.
    #[error(
        "frame header out of bounds: body_len {body_len}, count {count}, first_seq {first_seq}"
    )]
    BadHeader {
        body_len: u32,
        count: u32,
        first_seq: u64,
    },
    /// The CRC does not match.
    #[error("frame crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Crc { stored: u32, computed: u32 },
    /// A record's length prefix or envelope does not parse.
    #[error("malformed record {index} in frame: {what}")]
    BadRecord { index: u32, what: &'static str },
    /// A frame with no record cannot be written.
    #[error("empty frame")]
    Empty,
    /// Seqs start at 1, and a frame's last seq must fit a u64: `first_seq` 0, or one more
    /// record than `first_seq + count` can number.
    #[error("seq out of range: first_seq {first_seq} with {count} records (seqs are 1..=u64::MAX)")]
    SeqOutOfRange { first_seq: u64, count: u32 },
}

// ---------------------------------------------------------------------------------------------
// Envelope.

/// Raw bytes, serialised with `serialize_bytes` (postcard: varint length + bytes).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Bytes<'a>(pub &'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Bytes<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'a [u8]>::deserialize(d).map(Bytes)
    }
}

/// A data record (envelope variant 0).
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
pub struct DataV1<'a> {
    /// Ingest time relative to the frame's `base_ts_ms`.
    pub ts_delta_ms: i64,
    /// Input index in the configuration (or a firmware-defined sensor id).
    pub source: u16,
    /// MQTT topic, OPC-UA node id, or empty.
    #[serde(borrow)]
    pub key: Bytes<'a>,
    /// Raw source bytes.
    #[serde(borrow)]
    pub payload: Bytes<'a>,
}

/// Why records were dropped.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
pub enum GapReason {
    /// `max_bytes` reached, oldest segment deleted.
    RetentionBytes,
    /// `max_age` reached, expired segment deleted.
    RetentionAge,
    /// ENOSPC or `min_free_bytes`.
    DiskFull,
    /// `drop_newest` policy shed incoming records.
    DropNewest,
    /// Corrupt frames skipped.
    Corrupt,
    /// Permanently rejected by the upstream.
    Rejected,
}

impl GapReason {
    /// The label used in metrics.
    pub const fn label(self) -> &'static str {
        match self {
            GapReason::RetentionBytes => "retention_bytes",
            GapReason::RetentionAge => "retention_age",
            GapReason::DiskFull => "disk_full",
            GapReason::DropNewest => "drop_newest",
            GapReason::Corrupt => "corrupt",
            GapReason::Rejected => "rejected",
        }
    }

    /// The reason at `index` of [`GapReason::ALL`] (its declaration order).
    pub const fn from_index(index: u8) -> Option<Self> {
        match index {
            0 => Some(GapReason::RetentionBytes),
            1 => Some(GapReason::RetentionAge),
            2 => Some(GapReason::DiskFull),
            3 => Some(GapReason::DropNewest),
            4 => Some(GapReason::Corrupt),
            5 => Some(GapReason::Rejected),
            _ => None,
        }
    }

    /// All reasons, for metrics.
    pub const ALL: [GapReason; 6] = [
        GapReason::RetentionBytes,
        GapReason::RetentionAge,
        GapReason::DiskFull,
        GapReason::DropNewest,
        GapReason::Corrupt,
        GapReason::Rejected,
    ];
}

/// A gap marker (envelope variant 1): records `first_seq ..= last_seq` are gone.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
pub struct GapV1 {
    /// Why.
    pub reason: GapReason,
    /// First lost seq, 0 when the records never had one.
    pub first_seq: u64,
    /// Last lost seq, 0 when the records never had one.
    pub last_seq: u64,
    /// Number of lost records.
    pub records: u64,
    /// Payload bytes lost.
    pub bytes: u64,
}

/// The identity a producer gave a record, so that a resend of the same record is recognised
/// and not stored twice (`docs/buffer-format.md` §5 and §11).
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
pub enum OriginV1 {
    /// Record number `n` of the producer named by the record's `key` (a TCP connection that
    /// began with `hello`); a producer numbers its records one by one, across connections.
    Numbered(u64),
    /// The packet identifier of the MQTT QoS 1 PUBLISH the record arrived in.
    Packet(u16),
}

/// A data record with its producer's identity (envelope variant 2). postcard writes it as
/// [`DataV1`]'s fields followed by `origin`.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
pub struct DataV2<'a> {
    /// The record.
    #[serde(borrow)]
    pub data: DataV1<'a>,
    /// The producer's identity of the record.
    pub origin: OriginV1,
}

/// One record; the postcard variant index is the schema version.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
pub enum Envelope<'a> {
    /// Variant 0.
    #[serde(borrow)]
    Data(DataV1<'a>),
    /// Variant 1.
    Gap(GapV1),
    /// Variant 2.
    #[serde(borrow)]
    DataV2(DataV2<'a>),
}

// ---------------------------------------------------------------------------------------------
// Varints (postcard's LEB128 and zigzag).

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint<B: FrameBuf + ?Sized>(buf: &mut B, mut v: u64) -> Result<(), CodecError> {
    let mut tmp = [0u8; 10];
    let mut n = 0;
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            tmp[n] = b;
            n += 1;
            break;
        }
        tmp[n] = b | 0x80;
        n += 1;
    }
    buf.extend(&tmp[..n])
}

/// Reads a varint from the front of `input`; returns the value and the bytes used.
fn get_varint(input: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for (i, &b) in input.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

const fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// `(variant, value)` of an origin as postcard writes it (both varints).
const fn origin_parts(o: OriginV1) -> (u64, u64) {
    match o {
        OriginV1::Numbered(n) => (0, n),
        OriginV1::Packet(p) => (1, p as u64),
    }
}

/// Exact postcard length of a data envelope (variant index 0 or 2 is one byte).
fn data_envelope_len(d: &DataV1<'_>, origin: Option<OriginV1>) -> usize {
    let origin_len = origin.map_or(0, |o| {
        let (v, x) = origin_parts(o);
        varint_len(v) + varint_len(x)
    });
    1 + varint_len(zigzag(d.ts_delta_ms))
        + varint_len(u64::from(d.source))
        + varint_len(d.key.0.len() as u64)
        + d.key.0.len()
        + varint_len(d.payload.0.len() as u64)
        + d.payload.0.len()
        + origin_len
}

// ---------------------------------------------------------------------------------------------
// Output buffers.

/// A growable byte buffer a frame is encoded into.
pub trait FrameBuf {
    /// Appends `data` or returns `BufferFull` leaving the buffer unchanged.
    fn extend(&mut self, data: &[u8]) -> Result<(), CodecError>;
    /// Current length.
    fn len(&self) -> usize;
    /// True when empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Shrinks to `len` (rollback).
    fn truncate(&mut self, len: usize);
    /// The bytes written so far.
    fn bytes_mut(&mut self) -> &mut [u8];
    /// Bytes that can still be appended.
    fn free(&self) -> usize;
}

impl<const N: usize> FrameBuf for heapless::Vec<u8, N> {
    fn extend(&mut self, data: &[u8]) -> Result<(), CodecError> {
        self.extend_from_slice(data)
            .map_err(|_| CodecError::BufferFull {
                need: data.len(),
                free: N - heapless::Vec::len(self),
            })
    }
    fn len(&self) -> usize {
        self.as_slice().len()
    }
    fn truncate(&mut self, len: usize) {
        heapless::Vec::truncate(self, len)
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        self.as_mut_slice()
    }
    fn free(&self) -> usize {
        N - self.as_slice().len()
    }
}

#[cfg(feature = "std")]
impl FrameBuf for std::vec::Vec<u8> {
    fn extend(&mut self, data: &[u8]) -> Result<(), CodecError> {
        self.extend_from_slice(data);
        Ok(())
    }
    fn len(&self) -> usize {
        std::vec::Vec::len(self)
    }
    fn truncate(&mut self, len: usize) {
        std::vec::Vec::truncate(self, len)
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        self.as_mut_slice()
    }
    fn free(&self) -> usize {
        usize::MAX - std::vec::Vec::len(self)
    }
}

// ---------------------------------------------------------------------------------------------
// Frame header.

/// A decoded frame header.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FrameHeader {
    /// Flags (`FLAG_GAP`).
    pub flags: u8,
    /// Body bytes.
    pub body_len: u32,
    /// Stored CRC.
    pub crc: u32,
    /// Records in the frame.
    pub count: u32,
    /// Seq of the first record.
    pub first_seq: u64,
    /// Ingest time base (unix ms).
    pub base_ts_ms: i64,
    /// Writer epoch.
    pub epoch: u32,
}

impl FrameHeader {
    /// Seq of the last record.
    pub fn last_seq(&self) -> u64 {
        self.first_seq + u64::from(self.count) - 1
    }

    /// Whole frame length.
    pub fn frame_len(&self) -> usize {
        FRAME_HEADER_LEN + self.body_len as usize
    }

    /// Serialises the header.
    pub fn encode(&self) -> [u8; FRAME_HEADER_LEN] {
        let mut h = [0u8; FRAME_HEADER_LEN];
        h[0..2].copy_from_slice(&FRAME_MAGIC.to_le_bytes());
        h[2] = FRAME_VERSION;
        h[3] = self.flags;
        h[4..8].copy_from_slice(&self.body_len.to_le_bytes());
        h[8..12].copy_from_slice(&self.crc.to_le_bytes());
        h[12..16].copy_from_slice(&self.count.to_le_bytes());
        h[16..24].copy_from_slice(&self.first_seq.to_le_bytes());
        h[24..32].copy_from_slice(&self.base_ts_ms.to_le_bytes());
        h[32..36].copy_from_slice(&self.epoch.to_le_bytes());
        h
    }

    /// Parses and bounds-checks a header (the CRC is checked by [`FrameView::parse`]).
    pub fn parse(b: &[u8]) -> Result<Self, CodecError> {
        if b.len() < FRAME_HEADER_LEN {
            return Err(CodecError::Truncated {
                need: FRAME_HEADER_LEN,
                have: b.len(),
            });
        }
        let magic = u16::from_le_bytes([b[0], b[1]]);
        if magic != FRAME_MAGIC {
            return Err(CodecError::BadMagic { found: magic });
        }
        if b[2] != FRAME_VERSION {
            return Err(CodecError::BadVersion { found: b[2] });
        }
        let le32 = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let le64 = |o: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(a)
        };
        let h = FrameHeader {
            flags: b[3],
            body_len: le32(4),
            crc: le32(8),
            count: le32(12),
            first_seq: le64(16),
            base_ts_ms: le64(24) as i64,
            epoch: le32(32),
        };
        if h.body_len == 0
            || h.body_len > MAX_BODY_LEN
            || h.count == 0
            || h.count > h.body_len / 2
            || h.first_seq == 0
            || h.first_seq.checked_add(u64::from(h.count)).is_none()
            || h.flags & !FLAG_GAP != 0
        {
            return Err(CodecError::BadHeader {
                body_len: h.body_len,
                count: h.count,
                first_seq: h.first_seq,
            });
        }
        Ok(h)
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding.

/// Builds one frame at the end of a [`FrameBuf`]: `begin`, `push_*`, `finish`.
#[derive(Debug)]
pub struct FrameEncoder {
    start: usize,
    count: u32,
    first_seq: u64,
    base_ts_ms: i64,
    epoch: u32,
    flags: u8,
}

impl FrameEncoder {
    /// Reserves the header at the end of `buf`.
    pub fn begin<B: FrameBuf + ?Sized>(
        buf: &mut B,
        first_seq: u64,
        base_ts_ms: i64,
        epoch: u32,
    ) -> Result<Self, CodecError> {
        // The same bounds as `FrameHeader::parse`: a frame no reader accepts is never written.
        if first_seq == 0 || first_seq == u64::MAX {
            return Err(CodecError::SeqOutOfRange {
                first_seq,
                count: 0,
            });
        }
        let start = buf.len();
        buf.extend(&[0u8; FRAME_HEADER_LEN])?;
        Ok(FrameEncoder {
            start,
            count: 0,
            first_seq,
            base_ts_ms,
            epoch,
            flags: 0,
        })
    }

    /// Records pushed so far.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Seq the next pushed record gets.
    pub fn next_seq(&self) -> u64 {
        self.first_seq + u64::from(self.count)
    }

    /// `SeqOutOfRange` unless one more record can be numbered (`first_seq + count + 1` fits
    /// a u64, as `FrameHeader::parse` demands).
    fn check_seq_room(&self) -> Result<(), CodecError> {
        let room = self
            .first_seq
            .checked_add(u64::from(self.count))
            .and_then(|n| n.checked_add(1));
        match (room, self.count.checked_add(1)) {
            (Some(_), Some(_)) => Ok(()),
            _ => Err(CodecError::SeqOutOfRange {
                first_seq: self.first_seq,
                count: self.count,
            }),
        }
    }

    /// Body bytes so far.
    pub fn body_len<B: FrameBuf + ?Sized>(&self, buf: &B) -> usize {
        buf.len() - self.start - FRAME_HEADER_LEN
    }

    /// Bytes a data record would add to the body.
    pub fn data_cost(
        key: &[u8],
        payload: &[u8],
        ts_delta_ms: i64,
        source: u16,
        origin: Option<OriginV1>,
    ) -> usize {
        let d = DataV1 {
            ts_delta_ms,
            source,
            key: Bytes(key),
            payload: Bytes(payload),
        };
        let n = data_envelope_len(&d, origin);
        varint_len(n as u64) + n
    }

    /// Appends a data record (envelope variant 0); returns its seq. On error the buffer is
    /// unchanged.
    pub fn push_data<B: FrameBuf + ?Sized>(
        &mut self,
        buf: &mut B,
        ts_ms: i64,
        source: u16,
        key: &[u8],
        payload: &[u8],
    ) -> Result<u64, CodecError> {
        self.push_data_with(buf, ts_ms, source, key, payload, None)
    }

    /// Appends a data record, with its producer's identity when there is one (envelope
    /// variant 2, else 0); returns its seq. On error the buffer is unchanged.
    pub fn push_data_with<B: FrameBuf + ?Sized>(
        &mut self,
        buf: &mut B,
        ts_ms: i64,
        source: u16,
        key: &[u8],
        payload: &[u8],
        origin: Option<OriginV1>,
    ) -> Result<u64, CodecError> {
        self.check_seq_room()?;
        if key.len() + payload.len() > MAX_RECORD_LEN {
            return Err(CodecError::RecordTooLarge {
                len: key.len() + payload.len(),
            });
        }
        let d = DataV1 {
            ts_delta_ms: ts_ms.wrapping_sub(self.base_ts_ms),
            source,
            key: Bytes(key),
            payload: Bytes(payload),
        };
        let n = data_envelope_len(&d, origin);
        let mark = buf.len();
        if self.body_len(buf) + varint_len(n as u64) + n > MAX_BODY_LEN as usize {
            return Err(CodecError::BufferFull {
                need: n,
                free: MAX_BODY_LEN as usize - self.body_len(buf),
            });
        }
        let r = (|| {
            put_varint(buf, n as u64)?;
            buf.extend(&[if origin.is_some() { 2 } else { 0 }])?; // variant 0 or 2
            put_varint(buf, zigzag(d.ts_delta_ms))?;
            put_varint(buf, u64::from(source))?;
            put_varint(buf, key.len() as u64)?;
            buf.extend(key)?;
            put_varint(buf, payload.len() as u64)?;
            buf.extend(payload)?;
            if let Some(o) = origin {
                let (v, x) = origin_parts(o);
                put_varint(buf, v)?;
                put_varint(buf, x)?;
            }
            Ok(())
        })();
        if let Err(e) = r {
            buf.truncate(mark);
            return Err(e);
        }
        self.count += 1;
        Ok(self.next_seq() - 1)
    }

    /// Appends a gap marker; returns its seq. On error the buffer is unchanged.
    pub fn push_gap<B: FrameBuf + ?Sized>(
        &mut self,
        buf: &mut B,
        gap: &GapV1,
    ) -> Result<u64, CodecError> {
        self.check_seq_room()?;
        let mut tmp = [0u8; 64];
        let enc = postcard::to_slice(&Envelope::Gap(*gap), &mut tmp)
            .map_err(|_| CodecError::BufferFull { need: 64, free: 64 })?;
        let n = enc.len();
        let mark = buf.len();
        let r = put_varint(buf, n as u64).and_then(|_| buf.extend(&tmp[..n]));
        if let Err(e) = r {
            buf.truncate(mark);
            return Err(e);
        }
        self.count += 1;
        self.flags |= FLAG_GAP;
        Ok(self.next_seq() - 1)
    }

    /// Fills the header and CRC; returns the frame length. An empty frame is removed and
    /// `Empty` returned.
    pub fn finish<B: FrameBuf + ?Sized>(self, buf: &mut B) -> Result<usize, CodecError> {
        if self.count == 0 {
            buf.truncate(self.start);
            return Err(CodecError::Empty);
        }
        let body_len = self.body_len(buf) as u32;
        let mut h = FrameHeader {
            flags: self.flags,
            body_len,
            crc: 0,
            count: self.count,
            first_seq: self.first_seq,
            base_ts_ms: self.base_ts_ms,
            epoch: self.epoch,
        };
        let start = self.start;
        let bytes = buf.bytes_mut();
        let enc = h.encode();
        bytes[start..start + FRAME_HEADER_LEN].copy_from_slice(&enc);
        h.crc = frame_crc(&bytes[start..]);
        bytes[start + 8..start + 12].copy_from_slice(&h.crc.to_le_bytes());
        Ok(FRAME_HEADER_LEN + body_len as usize)
    }
}

/// A frame built in a fixed `heapless` buffer, for firmware: `new`, `push`, `finish`.
pub struct HeaplessFrame<const N: usize> {
    buf: heapless::Vec<u8, N>,
    enc: Option<FrameEncoder>,
}

impl<const N: usize> HeaplessFrame<N> {
    /// Starts a frame whose first record gets `first_seq`.
    pub fn new(first_seq: u64, base_ts_ms: i64, epoch: u32) -> Result<Self, CodecError> {
        let mut buf = heapless::Vec::new();
        let enc = FrameEncoder::begin(&mut buf, first_seq, base_ts_ms, epoch)?;
        Ok(HeaplessFrame {
            buf,
            enc: Some(enc),
        })
    }

    /// Adds a data record; `BufferFull` means: finish this frame and start another.
    pub fn push(
        &mut self,
        ts_ms: i64,
        source: u16,
        key: &[u8],
        payload: &[u8],
    ) -> Result<u64, CodecError> {
        match self.enc.as_mut() {
            Some(e) => e.push_data(&mut self.buf, ts_ms, source, key, payload),
            None => Err(CodecError::Empty),
        }
    }

    /// Closes the frame and returns its bytes.
    pub fn finish(&mut self) -> Result<&[u8], CodecError> {
        let enc = self.enc.take().ok_or(CodecError::Empty)?;
        enc.finish(&mut self.buf)?;
        Ok(self.buf.as_slice())
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding.

/// A validated frame borrowed from a byte slice.
#[derive(Clone, Copy, Debug)]
pub struct FrameView<'a> {
    /// The header.
    pub header: FrameHeader,
    /// The body.
    pub body: &'a [u8],
}

/// A decoded record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// A data record with its absolute ingest time (envelope variant 0, or 2 with `origin`).
    Data {
        ts_ms: i64,
        source: u16,
        key: &'a [u8],
        payload: &'a [u8],
        origin: Option<OriginV1>,
    },
    /// A gap marker.
    Gap(GapV1),
    /// An envelope variant this version does not know (a newer writer); its bytes.
    Unknown(&'a [u8]),
}

impl<'a> FrameView<'a> {
    /// Parses and CRC-checks the frame at the start of `b`.
    pub fn parse(b: &'a [u8]) -> Result<Self, CodecError> {
        let header = FrameHeader::parse(b)?;
        let len = header.frame_len();
        if b.len() < len {
            return Err(CodecError::Truncated {
                need: len,
                have: b.len(),
            });
        }
        let computed = frame_crc(&b[..len]);
        if computed != header.crc {
            return Err(CodecError::Crc {
                stored: header.crc,
                computed,
            });
        }
        Ok(FrameView {
            header,
            body: &b[FRAME_HEADER_LEN..len],
        })
    }

    /// Whether a record of the frame is envelope variant `variant` (without decoding any).
    pub fn has_variant(&self, variant: u8) -> bool {
        let mut rest = self.body;
        for _ in 0..self.header.count {
            let Some((n, used)) = get_varint(rest) else {
                return false;
            };
            let Some(env) = rest.get(used..used.saturating_add(n as usize)) else {
                return false;
            };
            if env.first() == Some(&variant) {
                return true;
            }
            rest = &rest[used + env.len()..];
        }
        false
    }

    /// The records with their seqs.
    pub fn records(&self) -> RecordIter<'a> {
        RecordIter {
            rest: self.body,
            index: 0,
            header: self.header,
        }
    }
}

/// Iterator over the records of a [`FrameView`].
pub struct RecordIter<'a> {
    rest: &'a [u8],
    index: u32,
    header: FrameHeader,
}

impl<'a> RecordIter<'a> {
    fn data(&self, d: DataV1<'a>, origin: Option<OriginV1>) -> Record<'a> {
        Record::Data {
            ts_ms: self.header.base_ts_ms.wrapping_add(d.ts_delta_ms),
            source: d.source,
            key: d.key.0,
            payload: d.payload.0,
            origin,
        }
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<(u64, Record<'a>), CodecError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.index >= self.header.count {
            return None;
        }
        let index = self.index;
        self.index += 1;
        let bad = |what| Some(Err(CodecError::BadRecord { index, what }));
        let Some((n, used)) = get_varint(self.rest) else {
            self.index = self.header.count;
            return bad("length varint");
        };
        let Some(end) = used
            .checked_add(n as usize)
            .filter(|&e| e <= self.rest.len())
        else {
            self.index = self.header.count;
            return bad("length beyond body");
        };
        let env = &self.rest[used..end];
        self.rest = &self.rest[end..];
        let seq = self.header.first_seq + u64::from(index);
        let rec = match postcard::from_bytes::<Envelope<'a>>(env) {
            Ok(Envelope::Data(d)) => self.data(d, None),
            Ok(Envelope::DataV2(d)) => self.data(d.data, Some(d.origin)),
            Ok(Envelope::Gap(g)) => Record::Gap(g),
            Err(_) if env.first().is_some_and(|&t| t > 2) => Record::Unknown(env),
            Err(_) => return bad("envelope"),
        };
        Some(Ok((seq, rec)))
    }
}

/// Finds the first offset ≥ `from` in `b` where a complete, CRC-valid frame starts
/// (resynchronisation after corruption). `None` if there is none in `b`.
pub fn resync(b: &[u8], from: usize) -> Option<usize> {
    let magic = FRAME_MAGIC.to_le_bytes();
    let mut i = from;
    while i + FRAME_HEADER_LEN <= b.len() {
        if b[i] == magic[0] && b[i + 1] == magic[1] && FrameView::parse(&b[i..]).is_ok() {
            return Some(i);
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fuzz regression `buffer_frame/encoder-first-seq-overflow`: the encoders took any
    /// `first_seq`, then panicked (debug) or wrapped into a frame every reader refuses.
    #[test]
    fn encoder_refuses_seqs_the_decoder_refuses() {
        let mut buf = Vec::new();
        for first in [0, u64::MAX] {
            assert_eq!(
                FrameEncoder::begin(&mut buf, first, 0, 1).map(|_| ()),
                Err(CodecError::SeqOutOfRange {
                    first_seq: first,
                    count: 0
                })
            );
            assert!(buf.is_empty(), "a refused begin writes nothing");
            assert!(HeaplessFrame::<128>::new(first, 0, 1).is_err());
        }
        // The last numberable seq: one record fits, the next push is refused and changes
        // nothing, and the frame parses.
        let first = u64::MAX - 1;
        let mut enc = FrameEncoder::begin(&mut buf, first, 0, 1).expect("fits");
        assert_eq!(enc.push_data(&mut buf, 0, 0, b"k", b"v"), Ok(first));
        let len = buf.len();
        assert_eq!(
            enc.push_data(&mut buf, 0, 0, b"k", b"w"),
            Err(CodecError::SeqOutOfRange {
                first_seq: first,
                count: 1
            })
        );
        let gap = GapV1 {
            first_seq: 1,
            last_seq: 1,
            reason: GapReason::ALL[0],
            records: 1,
            bytes: 1,
        };
        assert!(enc.push_gap(&mut buf, &gap).is_err());
        assert_eq!(buf.len(), len, "a refused push changes nothing");
        enc.finish(&mut buf).expect("one record");
        let v = FrameView::parse(&buf).expect("the frame parses");
        assert_eq!((v.header.first_seq, v.header.last_seq()), (first, first));
        let mut hf = HeaplessFrame::<128>::new(first, 0, 1).expect("fits");
        assert_eq!(hf.push(0, 0, b"k", b"v"), Ok(first));
        assert!(matches!(
            hf.push(0, 0, b"k", b"v"),
            Err(CodecError::SeqOutOfRange { .. })
        ));
    }

    #[test]
    fn crc32c_check_values() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        // RFC 3720 B.4: 32 bytes of zeros and of 0xff.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62A8_AB43);
        let inc: [u8; 32] = core::array::from_fn(|i| i as u8);
        assert_eq!(crc32c(&inc), 0x46DD_794E);
        // incremental == one shot, across the 8-byte chunking
        let mut h = Crc32c::new();
        h.update(&inc[..5]);
        h.update(&inc[5..19]);
        h.update(&inc[19..]);
        assert_eq!(h.finish(), 0x46DD_794E);
    }

    /// Bit by bit, straight from the polynomial: the reference the SIMD kernels must match.
    fn crc32c_bitwise(data: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in data {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
            }
        }
        !c
    }

    #[test]
    fn crc32c_matches_the_bitwise_reference_at_every_length_and_split() {
        let data: [u8; 4099] =
            core::array::from_fn(|i| (i as u32).wrapping_mul(2_654_435_761) as u8);
        // Every length up to 300 (the kernels change strategy at 16, 32, 64, 128, 256 bytes),
        // then long ones, at odd offsets (unaligned starts).
        let lens = (0..=300).chain([511, 1024, 2049, 4096]);
        for len in lens {
            for off in [0usize, 3] {
                let d = &data[off..off + len];
                let want = crc32c_bitwise(d);
                assert_eq!(crc32c(d), want, "one shot, len {len} off {off}");
                let mut h = Crc32c::new();
                let cut = len / 3;
                h.update(&d[..cut]);
                h.update(&d[cut..]);
                assert_eq!(h.finish(), want, "split at {cut}, len {len} off {off}");
                assert_eq!(CASTAGNOLI.checksum(d), want, "no_std table, len {len}");
            }
        }
    }

    #[test]
    fn hand_encoding_matches_postcard() {
        let origins = [
            None,
            Some(OriginV1::Numbered(1)),
            Some(OriginV1::Numbered(u64::MAX)),
            Some(OriginV1::Packet(65_535)),
        ];
        for (ts, src, key, payload) in [
            (0i64, 0u16, &b""[..], &b"x"[..]),
            (-5, 300, b"sensors/t1", &[7u8; 200][..]),
            (i64::MAX, u16::MAX, b"k", &[0u8; 0][..]),
        ] {
            for origin in origins {
                let mut v: heapless::Vec<u8, 512> = heapless::Vec::new();
                let mut e = FrameEncoder::begin(&mut v, 1, 1000, 1).unwrap();
                e.push_data_with(&mut v, 1000i64.wrapping_add(ts), src, key, payload, origin)
                    .unwrap();
                let body = &v[FRAME_HEADER_LEN..];
                let (n, used) = get_varint(body).unwrap();
                let (key, payload) = (Bytes(key), Bytes(payload));
                let data = DataV1 {
                    ts_delta_ms: ts,
                    source: src,
                    key,
                    payload,
                };
                let env = match origin {
                    None => Envelope::Data(data),
                    Some(origin) => Envelope::DataV2(DataV2 { data, origin }),
                };
                let mut tmp = [0u8; 512];
                let pc = postcard::to_slice(&env, &mut tmp).unwrap();
                assert_eq!(&body[used..used + n as usize], &pc[..], "{origin:?}");
                assert_eq!(
                    FrameEncoder::data_cost(key.0, payload.0, ts, src, origin),
                    body.len(),
                    "cost formula"
                );
                e.finish(&mut v).unwrap();
                let f = FrameView::parse(&v).unwrap();
                match f.records().next().unwrap().unwrap().1 {
                    Record::Data { origin: o, .. } => assert_eq!(o, origin),
                    other => panic!("{other:?}"),
                }
                assert_eq!(f.has_variant(2), origin.is_some());
                assert_eq!(f.has_variant(0), origin.is_none());
            }
        }
    }

    #[test]
    fn frame_roundtrip_and_corruption_detected() {
        let mut f = HeaplessFrame::<1024>::new(42, 5_000, 7).unwrap();
        assert_eq!(f.push(5_010, 3, b"t/a", b"hello").unwrap(), 42);
        assert_eq!(f.push(4_990, 4, b"", b"world").unwrap(), 43);
        let bytes: heapless::Vec<u8, 1024> =
            heapless::Vec::from_slice(f.finish().unwrap()).unwrap();
        let v = FrameView::parse(&bytes).unwrap();
        assert_eq!(v.header.first_seq, 42);
        assert_eq!(v.header.epoch, 7);
        let recs: heapless::Vec<_, 4> = v.records().map(|r| r.unwrap()).collect();
        assert_eq!(
            recs[0],
            (
                42,
                Record::Data {
                    ts_ms: 5_010,
                    source: 3,
                    key: b"t/a",
                    payload: b"hello",
                    origin: None,
                }
            )
        );
        assert_eq!(
            recs[1].1,
            Record::Data {
                ts_ms: 4_990,
                source: 4,
                key: b"",
                payload: b"world",
                origin: None,
            }
        );
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut c = bytes.clone();
                c[i] ^= 1 << bit;
                assert!(
                    FrameView::parse(&c).is_err(),
                    "flip at {i}:{bit} undetected"
                );
            }
        }
        for cut in 0..bytes.len() {
            assert!(FrameView::parse(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn full_buffer_rolls_back() {
        let mut f = HeaplessFrame::<64>::new(1, 0, 1).unwrap();
        f.push(0, 0, b"", &[1u8; 10]).unwrap();
        let err = f.push(0, 0, b"", &[2u8; 40]).unwrap_err();
        assert!(matches!(err, CodecError::BufferFull { .. }));
        let bytes = f.finish().unwrap();
        let v = FrameView::parse(bytes).unwrap();
        assert_eq!(v.header.count, 1);
    }

    #[test]
    fn gap_marker_roundtrip_and_resync() {
        let mut v: heapless::Vec<u8, 512> = heapless::Vec::new();
        v.extend_from_slice(&[0xF1, 0xB0, 9, 9, 9]).unwrap(); // junk with a fake magic
        let mut e = FrameEncoder::begin(&mut v, 10, 0, 2).unwrap();
        let gap = GapV1 {
            reason: GapReason::RetentionBytes,
            first_seq: 1,
            last_seq: 9,
            records: 9,
            bytes: 900,
        };
        e.push_gap(&mut v, &gap).unwrap();
        e.finish(&mut v).unwrap();
        assert_eq!(resync(&v, 0), Some(5));
        let f = FrameView::parse(&v[5..]).unwrap();
        assert_eq!(f.header.flags, FLAG_GAP);
        let (seq, r) = f.records().next().unwrap().unwrap();
        assert_eq!((seq, r), (10, Record::Gap(gap)));
    }
}
