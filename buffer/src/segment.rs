//! Segment files: naming, the 32-byte header, the cursor slots and a chunked frame scanner
//! shared by recovery and readers.

use crate::codec::{
    self, CodecError, FRAME_HEADER_LEN, FrameHeader, FrameView, GapReason, GapV1, MAX_BODY_LEN,
};
use crate::fs::FsFile;
use crate::gaps::{Gap, GapBook, MAX_GAPS};
use std::io;

/// Segment header length.
pub const SEG_HEADER_LEN: u64 = 32;
const SEG_MAGIC: &[u8; 8] = b"EDGEBUF1";
const SEG_VERSION: u16 = 1;

/// File name of the segment whose first seq is `base`.
pub fn seg_name(base: u64) -> String {
    format!("seg-{base:020}.log")
}

/// Parses a segment file name.
pub fn parse_seg_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Encodes a segment header.
pub fn encode_seg_header(base: u64, created_ms: i64) -> [u8; SEG_HEADER_LEN as usize] {
    let mut h = [0u8; SEG_HEADER_LEN as usize];
    h[0..8].copy_from_slice(SEG_MAGIC);
    h[8..10].copy_from_slice(&SEG_VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&base.to_le_bytes());
    h[20..28].copy_from_slice(&created_ms.to_le_bytes());
    let c = codec::crc32c(&h[0..28]);
    h[28..32].copy_from_slice(&c.to_le_bytes());
    h
}

/// Parses a segment header: `(base_seq, created_ms)` when valid.
pub fn parse_seg_header(h: &[u8]) -> Option<(u64, i64)> {
    if h.len() < SEG_HEADER_LEN as usize || &h[0..8] != SEG_MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes([h[28], h[29], h[30], h[31]]);
    if codec::crc32c(&h[0..28]) != crc || u16::from_le_bytes([h[8], h[9]]) != SEG_VERSION {
        return None;
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[12..20]);
    let base = u64::from_le_bytes(b);
    b.copy_from_slice(&h[20..28]);
    Some((base, i64::from_le_bytes(b)))
}

// ---------------------------------------------------------------------------------------------
// Cursor slots.

/// Cursor file length: two 512-byte slots.
pub const CURSOR_LEN: u64 = 1024;
const CURSOR_MAGIC_V1: &[u8; 8] = b"EBCURSR1";
const CURSOR_MAGIC_V2: &[u8; 8] = b"EBCURSR2";
const GAPS_OFF: usize = 136;
const GAP_LEN: usize = 40;
const SEQ_FLOOR_OFF: usize = 496;
const SLOT_CRC_OFF: usize = 508;

/// One cursor slot's content.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CursorSlot {
    /// Generation.
    pub generation: u64,
    /// Every seq ≤ `acked` is done.
    pub acked: u64,
    /// Writer epoch.
    pub epoch: u32,
    /// The gap ledger (empty in a version 1 slot).
    pub book: GapBook,
    /// Slot format version it was read from (1 or 2; 0 for a slot never written).
    pub version: u8,
}

fn le_u64(s: &[u8], o: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&s[o..o + 8]);
    u64::from_le_bytes(b)
}

fn le_u32(s: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([s[o], s[o + 1], s[o + 2], s[o + 3]])
}

impl CursorSlot {
    /// Encodes to 512 bytes (format version 2). A book holds at most [`MAX_GAPS`] gaps.
    pub fn encode(&self) -> [u8; 512] {
        let mut s = [0u8; 512];
        s[0..8].copy_from_slice(CURSOR_MAGIC_V2);
        s[8..16].copy_from_slice(&self.generation.to_le_bytes());
        s[16..24].copy_from_slice(&self.acked.to_le_bytes());
        s[24..28].copy_from_slice(&self.epoch.to_le_bytes());
        let b = &self.book;
        let n = b.gaps().len().min(MAX_GAPS);
        s[28] = n as u8;
        s[32..36].copy_from_slice(&b.next_serial().to_le_bytes());
        let (records, bytes) = (b.dropped_records(), b.dropped_bytes());
        for i in 0..6 {
            s[40 + 8 * i..48 + 8 * i].copy_from_slice(&records[i].to_le_bytes());
            s[88 + 8 * i..96 + 8 * i].copy_from_slice(&bytes[i].to_le_bytes());
        }
        for (i, g) in b.gaps().iter().take(n).enumerate() {
            let e = &mut s[GAPS_OFF + GAP_LEN * i..GAPS_OFF + GAP_LEN * (i + 1)];
            e[0..4].copy_from_slice(&g.serial.to_le_bytes());
            e[4] = g.gap.reason as u8;
            e[5] = u8::from(g.fixed);
            e[8..16].copy_from_slice(&g.gap.first_seq.to_le_bytes());
            e[16..24].copy_from_slice(&g.gap.last_seq.to_le_bytes());
            e[24..32].copy_from_slice(&g.gap.records.to_le_bytes());
            e[32..40].copy_from_slice(&g.gap.bytes.to_le_bytes());
        }
        s[SEQ_FLOOR_OFF..SEQ_FLOOR_OFF + 8].copy_from_slice(&b.max_seq().to_le_bytes());
        let c = codec::crc32c(&s[..SLOT_CRC_OFF]);
        s[SLOT_CRC_OFF..].copy_from_slice(&c.to_le_bytes());
        s
    }

    /// Decodes one slot, version 1 or 2; `None` when it is not a valid slot.
    pub fn decode(s: &[u8]) -> Option<Self> {
        if s.len() < 32 {
            return None;
        }
        let base = |version, book| CursorSlot {
            generation: le_u64(s, 8),
            acked: le_u64(s, 16),
            epoch: le_u32(s, 24),
            book,
            version,
        };
        if &s[0..8] == CURSOR_MAGIC_V1 {
            let crc = le_u32(s, 28);
            return (codec::crc32c(&s[0..28]) == crc).then(|| base(1, GapBook::default()));
        }
        if s.len() < 512 || &s[0..8] != CURSOR_MAGIC_V2 {
            return None;
        }
        let n = usize::from(s[28]);
        if codec::crc32c(&s[..SLOT_CRC_OFF]) != le_u32(s, SLOT_CRC_OFF) || n > MAX_GAPS {
            return None;
        }
        let (mut records, mut bytes) = ([0u64; 6], [0u64; 6]);
        for i in 0..6 {
            records[i] = le_u64(s, 40 + 8 * i);
            bytes[i] = le_u64(s, 88 + 8 * i);
        }
        let mut gaps = Vec::with_capacity(n);
        for i in 0..n {
            let e = &s[GAPS_OFF + GAP_LEN * i..GAPS_OFF + GAP_LEN * (i + 1)];
            gaps.push(Gap {
                serial: le_u32(e, 0),
                gap: GapV1 {
                    reason: GapReason::from_index(e[4])?,
                    first_seq: le_u64(e, 8),
                    last_seq: le_u64(e, 16),
                    records: le_u64(e, 24),
                    bytes: le_u64(e, 32),
                },
                fixed: e[5] & 1 != 0,
            });
        }
        let book = GapBook::from_parts(
            gaps,
            le_u32(s, 32),
            le_u64(s, SEQ_FLOOR_OFF),
            records,
            bytes,
        );
        Some(base(2, book))
    }

    /// The winning slot of a cursor file's bytes (highest valid generation, either version).
    pub fn pick(file: &[u8]) -> Option<Self> {
        let a = file.get(0..512).and_then(Self::decode);
        let b = file.get(512..1024).and_then(Self::decode);
        match (a, b) {
            (Some(a), Some(b)) => Some(if a.generation >= b.generation { a } else { b }),
            (a, b) => a.or(b),
        }
    }

    /// Index (0 = A, 1 = B) of the slot the next write goes to: the one not holding the
    /// winner.
    pub fn next_index(file: &[u8]) -> u64 {
        let a = file.get(0..512).and_then(Self::decode);
        let b = file.get(512..1024).and_then(Self::decode);
        match (a, b) {
            (Some(a), Some(b)) if b.generation > a.generation => 0,
            (Some(_), _) => 1,
            _ => 0,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Segment headers.

/// Reads and checks a segment file's header: `(base_seq, created_ms)`, or `None` when it is
/// damaged or cut.
pub fn read_seg_header(file: &dyn FsFile) -> io::Result<Option<(u64, i64)>> {
    let mut h = [0u8; SEG_HEADER_LEN as usize];
    let mut got = 0;
    while got < h.len() {
        let n = file.read_at(&mut h[got..], got as u64)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(parse_seg_header(&h[..got]))
}

/// Where scanning for frames starts: after a valid header, else at offset 0 (a damaged or cut
/// header: the frames are found by resynchronisation wherever they start).
pub fn frames_start(header: Option<(u64, i64)>) -> u64 {
    if header.is_some() { SEG_HEADER_LEN } else { 0 }
}

// ---------------------------------------------------------------------------------------------
// Scanner.

/// What the scanner found at its position.
#[derive(Debug)]
pub enum Scan {
    /// A valid frame at `offset`; its body is [`Scanner::view`].
    Frame { offset: u64, header: FrameHeader },
    /// Corrupt bytes `from..to` skipped; a valid frame starts at `to`.
    Skipped { from: u64, to: u64 },
    /// Corrupt or incomplete bytes from `from` to the end of the file: no valid frame follows.
    Tail { from: u64, len: u64 },
    /// Clean end of file.
    End,
}

/// Sequential frame reader over one segment file with a bounded buffer: 256 KiB normally,
/// growing to one maximal frame when a large frame must be held whole.
pub struct Scanner {
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    buf_off: u64,
    /// Valid bytes in `buf`.
    buf_len: usize,
    /// Next offset to examine.
    pub pos: u64,
    chunk: usize,
}

const CHUNK: usize = 256 * 1024;

impl Scanner {
    /// A scanner starting at `pos`.
    pub fn new(pos: u64) -> Self {
        Scanner {
            buf: Vec::new(),
            buf_off: pos,
            buf_len: 0,
            pos,
            chunk: CHUNK,
        }
    }

    /// Moves to `pos`, dropping buffered data.
    pub fn reset(&mut self, pos: u64) {
        self.pos = pos;
        self.buf_off = pos;
        self.buf_len = 0;
    }

    /// Releases a grown buffer.
    pub fn shrink(&mut self) {
        if self.buf.len() > CHUNK * 2 {
            self.buf = Vec::new();
            self.buf_len = 0;
            self.buf_off = self.pos;
        }
    }

    /// Ensures `buf` holds `need` bytes from `pos` if the file has them; returns how many it
    /// holds.
    fn fill(&mut self, file: &dyn FsFile, need: usize) -> io::Result<usize> {
        if self.pos < self.buf_off || self.pos >= self.buf_off + self.buf_len as u64 {
            self.buf_off = self.pos;
            self.buf_len = 0;
        }
        let start = (self.pos - self.buf_off) as usize;
        let have = self.buf_len - start;
        if have >= need {
            return Ok(have);
        }
        // Move the unread bytes to the front.
        if start > 0 {
            self.buf.copy_within(start..self.buf_len, 0);
            self.buf_off = self.pos;
            self.buf_len = have;
        }
        let want = need.max(self.chunk);
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        while self.buf_len < need {
            let n = file.read_at(
                &mut self.buf[self.buf_len..],
                self.buf_off + self.buf_len as u64,
            )?;
            if n == 0 {
                break;
            }
            self.buf_len += n;
        }
        Ok(self.buf_len)
    }

    /// The next frame, skip or end at `pos`. A valid frame is not consumed until
    /// [`Scanner::advance`]; `Skipped` moves `pos` to the frame after the gap; `Tail` leaves
    /// `pos` at the start of the tail.
    pub fn next(&mut self, file: &dyn FsFile) -> io::Result<Scan> {
        let have = self.fill(file, FRAME_HEADER_LEN)?;
        if have == 0 {
            return Ok(Scan::End);
        }
        let start = (self.pos - self.buf_off) as usize;
        let header = FrameHeader::parse(&self.buf[start..self.buf_len]);
        if let Ok(h) = header {
            let have = self.fill(file, h.frame_len())?;
            let start = (self.pos - self.buf_off) as usize;
            if have >= h.frame_len()
                && let Ok(view) = FrameView::parse(&self.buf[start..start + h.frame_len()])
            {
                return Ok(Scan::Frame {
                    offset: self.pos,
                    header: view.header,
                });
            }
        }
        // Corrupt: search forward for the next valid frame.
        let from = self.pos;
        let mut probe = self.pos + 1;
        loop {
            self.pos = probe;
            let have = self.fill(file, FRAME_HEADER_LEN)?;
            if have < FRAME_HEADER_LEN {
                self.pos = from;
                self.buf_off = from;
                self.buf_len = 0;
                let len = file.len()?.saturating_sub(from);
                return Ok(Scan::Tail { from, len });
            }
            let start = (self.pos - self.buf_off) as usize;
            let window = &self.buf[start..self.buf_len];
            // Candidates in the buffered window (frames may need more bytes: check each).
            let magic = codec::FRAME_MAGIC.to_le_bytes();
            let mut found = None;
            let mut i = 0;
            while i + FRAME_HEADER_LEN <= window.len() {
                if window[i] == magic[0]
                    && window[i + 1] == magic[1]
                    && FrameHeader::parse(&window[i..]).is_ok()
                {
                    found = Some(i);
                    break;
                }
                i += 1;
            }
            match found {
                None => {
                    // Keep the last header-length bytes (a header may straddle the boundary).
                    probe = self.pos + (window.len() - FRAME_HEADER_LEN + 1) as u64;
                }
                Some(i) => {
                    let cand = self.pos + i as u64;
                    self.pos = cand;
                    let ok = match self.frame_ok(file)? {
                        Some(len) => len > 0,
                        None => false,
                    };
                    if ok {
                        return Ok(Scan::Skipped { from, to: cand });
                    }
                    probe = cand + 1;
                }
            }
        }
    }

    /// Whether a complete valid frame starts at `pos`; its length.
    fn frame_ok(&mut self, file: &dyn FsFile) -> io::Result<Option<usize>> {
        self.fill(file, FRAME_HEADER_LEN)?;
        let start = (self.pos - self.buf_off) as usize;
        let Ok(h) = FrameHeader::parse(&self.buf[start..self.buf_len]) else {
            return Ok(None);
        };
        let have = self.fill(file, h.frame_len())?;
        if have < h.frame_len() {
            return Ok(None);
        }
        let start = (self.pos - self.buf_off) as usize;
        Ok(FrameView::parse(&self.buf[start..start + h.frame_len()])
            .ok()
            .map(|v| v.header.frame_len()))
    }

    /// The validated frame at `pos` that [`Scanner::next`] just returned.
    pub fn view(&self, header: FrameHeader) -> FrameView<'_> {
        let start = (self.pos - self.buf_off) as usize;
        FrameView {
            header,
            body: &self.buf[start + FRAME_HEADER_LEN..start + header.frame_len()],
        }
    }

    /// Consumes a frame of `len` bytes at `pos`.
    pub fn advance(&mut self, len: usize) {
        self.pos += len as u64;
    }
}

/// Reads and validates a whole small file region (used for cursor/meta).
pub fn read_all(file: &dyn FsFile, max: usize) -> io::Result<Vec<u8>> {
    let len = (file.len()? as usize).min(max);
    let mut v = vec![0u8; len];
    let mut got = 0;
    while got < len {
        let n = file.read_at(&mut v[got..], got as u64)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    v.truncate(got);
    Ok(v)
}

/// Maps a codec error to an I/O error (for the few places that mix them).
pub fn codec_io(e: CodecError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// Upper bound of a frame's length.
pub const MAX_FRAME_LEN: usize = FRAME_HEADER_LEN + MAX_BODY_LEN as usize;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_headers_roundtrip() {
        assert_eq!(seg_name(52311), "seg-00000000000000052311.log");
        assert_eq!(parse_seg_name(&seg_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_seg_name("seg-1.log"), None);
        assert_eq!(parse_seg_name("seg-0000000000000005231x.log"), None);
        let h = encode_seg_header(7, -3);
        assert_eq!(parse_seg_header(&h), Some((7, -3)));
        let mut bad = h;
        bad[13] ^= 1;
        assert_eq!(parse_seg_header(&bad), None);
    }

    /// A version 1 slot as the first format wrote it.
    fn v1_slot(generation: u64, acked: u64, epoch: u32) -> [u8; 512] {
        let mut s = [0u8; 512];
        s[0..8].copy_from_slice(b"EBCURSR1");
        s[8..16].copy_from_slice(&generation.to_le_bytes());
        s[16..24].copy_from_slice(&acked.to_le_bytes());
        s[24..28].copy_from_slice(&epoch.to_le_bytes());
        let c = codec::crc32c(&s[0..28]);
        s[28..32].copy_from_slice(&c.to_le_bytes());
        s
    }

    #[test]
    fn cursor_pick_prefers_valid_higher_generation() {
        let a = CursorSlot {
            generation: 5,
            acked: 10,
            epoch: 2,
            book: GapBook::default(),
            version: 2,
        };
        let mut book = GapBook::default();
        for i in 0..MAX_GAPS as u64 {
            let gap = GapV1 {
                reason: GapReason::ALL[i as usize % 6],
                first_seq: 100 * i + 1,
                last_seq: 100 * i + 9,
                records: 9,
                bytes: u64::MAX - i,
            };
            assert!(book.drop_new(gap));
            if i % 2 == 0 {
                book.fix(i as u32);
            }
        }
        let b = CursorSlot {
            generation: 6,
            acked: 12,
            epoch: 2,
            book,
            version: 2,
        };
        let mut f = [0u8; 1024];
        f[..512].copy_from_slice(&a.encode());
        f[512..].copy_from_slice(&b.encode());
        assert_eq!(CursorSlot::pick(&f), Some(b.clone()));
        assert_eq!(CursorSlot::next_index(&f), 0);
        f[1000] ^= 0xff; // torn ledger of B: A wins
        assert_eq!(CursorSlot::pick(&f), Some(a.clone()));
        assert_eq!(CursorSlot::next_index(&f), 1);
        f[1000] ^= 0xff;
        f[520] ^= 0xff; // torn generation field
        assert_eq!(CursorSlot::pick(&f), Some(a));
        assert_eq!(CursorSlot::pick(&[0u8; 1024]), None);
        assert_eq!(CursorSlot::pick(&f[..100]), None);
    }

    #[test]
    fn version_1_slots_are_read_and_mix_with_version_2() {
        let mut f = [0u8; 1024];
        f[..512].copy_from_slice(&v1_slot(3, 40, 7));
        let got = CursorSlot::pick(&f).unwrap();
        assert_eq!(
            (got.generation, got.acked, got.epoch, got.version),
            (3, 40, 7, 1)
        );
        assert_eq!(got.book, GapBook::default());
        // The first version 2 write goes to the other slot; the older v1 slot stays valid.
        assert_eq!(CursorSlot::next_index(&f), 1);
        let mut next = got.clone();
        next.generation += 1;
        next.acked = 41;
        f[512..].copy_from_slice(&next.encode());
        let got = CursorSlot::pick(&f).unwrap();
        assert_eq!((got.acked, got.version), (41, 2));
        f[600] ^= 1; // a torn v2 write falls back to the v1 state
        assert_eq!(CursorSlot::pick(&f).map(|s| s.acked), Some(40));
    }
}
