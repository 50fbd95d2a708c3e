//! Readers: sequential, bounded by the durable watermark, resynchronising over corruption.
//!
//! A reader has its own file handles and a 256 KiB scan buffer; it never reads past the
//! durable seq, so it never forwards data that a power cut could take back. Corrupt frames are
//! skipped and counted (once per seq range, however often a region is re-read); seq jumps
//! without skipped bytes are the writer's counted drops (gap markers explain them).

use crate::codec::{GapV1, Record};
use crate::fs::FsFile;
use crate::log::Shared;
use crate::segment::{self, Scan, Scanner, seg_name};
use std::io;
use std::sync::Arc;

/// Kind of a read record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecKind {
    /// Sensor data.
    Data,
    /// A gap marker.
    Gap(GapV1),
    /// An envelope from a newer format version (payload = raw envelope bytes).
    Unknown,
}

/// One record of a [`ReadBatch`]; key and payload live in the batch's buffer.
#[derive(Clone, Copy, Debug)]
pub struct RecMeta {
    /// Seq.
    pub seq: u64,
    /// Epoch of the writer that wrote it.
    pub epoch: u32,
    /// Ingest time, unix ms.
    pub ts_ms: i64,
    /// Source index.
    pub source: u16,
    /// Kind.
    pub kind: RecKind,
    key: (u32, u32),
    payload: (u32, u32),
}

/// A reusable batch of records in one contiguous buffer.
#[derive(Default, Debug)]
pub struct ReadBatch {
    /// Records in seq order.
    pub recs: Vec<RecMeta>,
    data: Vec<u8>,
}

impl ReadBatch {
    /// Empties the batch, keeping its allocation.
    pub fn clear(&mut self) {
        self.recs.clear();
        self.data.clear();
    }
    /// Records held.
    pub fn len(&self) -> usize {
        self.recs.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.recs.is_empty()
    }
    /// Key and payload bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }
    /// Key of record `i`.
    pub fn key(&self, r: &RecMeta) -> &[u8] {
        &self.data[r.key.0 as usize..r.key.1 as usize]
    }
    /// Payload of record `i`.
    pub fn payload(&self, r: &RecMeta) -> &[u8] {
        &self.data[r.payload.0 as usize..r.payload.1 as usize]
    }
    /// Drops the first `n` records (their bytes stay until `clear`).
    pub fn consume_front(&mut self, n: usize) {
        self.recs.drain(..n.min(self.recs.len()));
        if self.recs.is_empty() {
            self.data.clear();
        }
    }

    fn push(&mut self, seq: u64, epoch: u32, rec: Record<'_>) {
        let (ts_ms, source, key, payload, kind) = match rec {
            Record::Data {
                ts_ms,
                source,
                key,
                payload,
                ..
            } => (ts_ms, source, key, payload, RecKind::Data),
            Record::Gap(g) => (0, 0, &[][..], &[][..], RecKind::Gap(g)),
            Record::Unknown(b) => (0, 0, &[][..], b, RecKind::Unknown),
        };
        let k0 = self.data.len() as u32;
        self.data.extend_from_slice(key);
        let p0 = self.data.len() as u32;
        self.data.extend_from_slice(payload);
        self.recs.push(RecMeta {
            seq,
            epoch,
            ts_ms,
            source,
            kind,
            key: (k0, p0),
            payload: (p0, self.data.len() as u32),
        });
    }
}

struct Cur {
    base: u64,
    file: Box<dyn FsFile>,
    sc: Scanner,
    /// Base of the following segment, once known (the current one is then sealed).
    next_base: Option<u64>,
}

/// A sequential reader of one log.
pub struct Reader {
    sh: Arc<Shared>,
    next: u64,
    cur: Option<Cur>,
    skipped: bool,
    skipped_bytes: u64,
}

impl Reader {
    /// A reader positioned after the acknowledged prefix.
    pub fn new(sh: Arc<Shared>) -> Self {
        let next = sh.acked() + 1;
        Reader {
            sh,
            next,
            cur: None,
            skipped: false,
            skipped_bytes: 0,
        }
    }

    /// Next seq this reader returns (or skips past).
    pub fn position(&self) -> u64 {
        self.next
    }

    /// Repositions at `seq`.
    pub fn seek(&mut self, seq: u64) {
        if seq < self.next {
            self.cur = None;
        }
        self.next = seq.max(1);
        self.skipped = false;
    }

    fn count_skip(&mut self, upto_seq: u64) {
        if self.skipped {
            let records = upto_seq.saturating_sub(self.next);
            self.sh
                .count_corrupt(upto_seq.saturating_sub(1), records, self.skipped_bytes);
        }
        self.skipped = false;
        self.skipped_bytes = 0;
    }

    /// Appends up to `max_records` durable records (stopping after `max_bytes` of key+payload)
    /// to `out`; returns how many were added (0: nothing durable beyond the position yet).
    pub fn read(
        &mut self,
        out: &mut ReadBatch,
        max_records: usize,
        max_bytes: usize,
    ) -> io::Result<usize> {
        let start = out.len();
        let mut relists = 0;
        loop {
            let durable = self.sh.durable();
            if out.len() - start >= max_records || out.bytes() >= max_bytes || self.next > durable {
                break;
            }
            // Locate the segment holding `next`.
            let stale = match &self.cur {
                None => true,
                Some(c) => self.next < c.base || c.next_base.is_some_and(|nb| self.next >= nb),
            };
            if stale || relists == 0 {
                let segs = self.sh.segments();
                let Some(first) = segs.first() else { break };
                if self.next < first.base {
                    // Dropped by retention (counted by the writer, explained by a gap marker).
                    self.next = first.base;
                    self.cur = None;
                }
                if let Some(c) = &self.cur
                    && c.base < first.base
                {
                    self.cur = None;
                }
                if self.cur.is_none() || stale {
                    let idx = segs.partition_point(|s| s.base <= self.next).max(1);
                    let seg = segs[idx - 1];
                    let path = self.sh.dir().join(seg_name(seg.base));
                    match self.sh.fs().open_read(&path) {
                        Ok(file) => {
                            // A damaged or cut header: frames are looked for from offset 0,
                            // and the seqs the segment no longer holds count as corrupt.
                            let header = segment::read_seg_header(&*file)?;
                            if header.is_none() {
                                self.skipped = true;
                            }
                            self.cur = Some(Cur {
                                base: seg.base,
                                file,
                                sc: Scanner::new(segment::frames_start(header)),
                                next_base: segs.get(idx).map(|s| s.base),
                            });
                        }
                        Err(e) if e.kind() == io::ErrorKind::NotFound && relists < 8 => {
                            relists += 1;
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                } else if let Some(c) = self.cur.as_mut()
                    && c.next_base.is_none()
                {
                    let idx = segs.partition_point(|s| s.base <= c.base);
                    c.next_base = segs.get(idx).map(|s| s.base);
                }
                relists += 1;
            }
            let Some(c) = self.cur.as_mut() else { break };
            match c.sc.next(&*c.file)? {
                Scan::Frame { header, .. } => {
                    if header.last_seq() < self.next {
                        c.sc.advance(header.frame_len());
                        continue;
                    }
                    if header.first_seq > durable {
                        break;
                    }
                    let epoch = header.epoch;
                    let first = header.first_seq;
                    if self.skipped {
                        self.count_skip(first);
                    }
                    let Some(c) = self.cur.as_mut() else { break };
                    let view = c.sc.view(header);
                    let mut bad = false;
                    for r in view.records() {
                        match r {
                            Ok((seq, rec)) if seq >= self.next => out.push(seq, epoch, rec),
                            Ok(_) => {}
                            Err(_) => {
                                bad = true;
                                break;
                            }
                        }
                    }
                    if bad {
                        self.sh.count_corrupt(header.last_seq(), 1, 0);
                    }
                    self.next = header.last_seq() + 1;
                    c.sc.advance(header.frame_len());
                    c.sc.shrink();
                }
                Scan::Skipped { from, to } => {
                    self.skipped = true;
                    self.skipped_bytes += to - from;
                }
                end => {
                    let (tail_from, tail_len) = match end {
                        Scan::Tail { from, len } => (from, len),
                        _ => (c.sc.pos, 0),
                    };
                    if let Some(nb) = c.next_base {
                        // End of a sealed segment.
                        if tail_len > 0 {
                            self.skipped = true;
                            self.skipped_bytes += tail_len;
                        }
                        if self.skipped {
                            self.count_skip(nb);
                        }
                        self.next = self.next.max(nb);
                        self.cur = None;
                        continue;
                    }
                    // Active segment: was a newer segment created meanwhile?
                    let segs = self.sh.segments();
                    let idx = segs.partition_point(|s| s.base <= c.base);
                    if let Some(n) = segs.get(idx) {
                        c.next_base = Some(n.base);
                        continue;
                    }
                    // Written length of the active segment per the writer.
                    let written_len = segs.get(idx.wrapping_sub(1)).map(|s| s.len).unwrap_or(0);
                    if tail_len > 0 && tail_from < written_len && self.next <= durable {
                        // Corrupt durable bytes at the end of the active segment.
                        c.sc.reset(written_len);
                        self.skipped = true;
                        self.skipped_bytes += written_len - tail_from;
                        self.count_skip(durable + 1);
                        self.next = durable + 1;
                    }
                    break;
                }
            }
        }
        Ok(out.len() - start)
    }
}
