//! A full log: the disk budget (`max_bytes`, `min_free_bytes`) and dropping the oldest sealed
//! segment to stay inside it. What the dropped segment held beyond the acknowledged prefix
//! becomes gaps in the cursor's ledger (fdatasync'd before the unlink), so that the upstream
//! learns which records were lost (`docs/buffer-format.md`, invariant 5).

use std::io;

use super::{Log, LogError, ioe, remove_segment};
use crate::codec::{GapReason, GapV1, Record};
use crate::gaps::runs_outside;
use crate::segment::{self, Scan, Scanner, seg_name};

/// Consecutive seqs a dropped segment held beyond the acknowledged prefix.
#[derive(Clone, Copy, Debug)]
struct Run {
    first: u64,
    last: u64,
    data_records: u64,
    data_bytes: u64,
}

impl Run {
    /// The part of the run after `acked` (records and bytes in proportion).
    fn after(&self, acked: u64) -> Option<Run> {
        if self.last <= acked {
            return None;
        }
        let first = self.first.max(acked + 1);
        let gone = first - self.first;
        let data_records = self.data_records.saturating_sub(gone);
        Some(Run {
            first,
            last: self.last,
            data_records,
            data_bytes: (u128::from(self.data_bytes) * u128::from(data_records)
                / u128::from(self.data_records.max(1))) as u64,
        })
    }
}

/// What the oldest segment held beyond the acknowledged prefix when it was dropped.
#[derive(Clone, Debug, Default)]
struct Dropped {
    runs: Vec<Run>,
    /// Format 1 gap markers among them (their seq, what they say), to be repeated.
    repeats: Vec<(u64, GapV1)>,
}

impl Log {
    pub(super) fn over_limit(&self, need: u64) -> Result<Option<GapReason>, LogError> {
        if self.disk_bytes() + need > self.cfg.max_bytes {
            return Ok(Some(GapReason::RetentionBytes));
        }
        if self.cfg.min_free_bytes > 0 {
            let free = self
                .sh
                .fs
                .free_bytes(&self.dir)
                .map_err(ioe("statvfs", &self.dir))?;
            if free < need + self.cfg.min_free_bytes {
                return Ok(Some(GapReason::DiskFull));
            }
        }
        Ok(None)
    }

    /// Deletes the oldest sealed segment for `reason`; counts and gap-marks its unacked records.
    pub(super) fn drop_oldest(&mut self, reason: GapReason) -> Result<bool, LogError> {
        let Some(seg) = self.sealed.front().cloned() else {
            return Ok(false);
        };
        let next_base = self
            .sealed
            .get(1)
            .map(|s| s.base)
            .unwrap_or(self.active.base);
        let last = next_base - 1;
        let first = (self.sh.acked() + 1).max(seg.base);
        // What the segment holds beyond the acknowledged prefix: known for a segment this
        // incarnation wrote, read from the file for an older one.
        let dropped = if last < first {
            Dropped::default()
        } else if seg.base <= self.unknown_upto {
            self.read_dropped(seg.base, first, last)?
        } else {
            let total = seg.data_records.max(1);
            Dropped {
                runs: runs_outside(first, last, &seg.holes)
                    .into_iter()
                    .map(|(a, b)| Run {
                        first: a,
                        last: b,
                        data_records: b - a + 1,
                        // Payload bytes in proportion (a segment's records are alike in size).
                        data_bytes: (u128::from(seg.payload_bytes) * u128::from(b - a + 1)
                            / u128::from(total)) as u64,
                    })
                    .collect(),
                repeats: Vec::new(),
            }
        };
        // The drop is in the cursor slot, with the cursor past the segment, fdatasync'd,
        // before the segment is deleted (invariant 5).
        let cursor_path = self.dir.join("CURSOR");
        let recorded = self
            .sh
            .update_book(last, true, |book, acked| {
                // Records acknowledged meanwhile are delivered, not dropped.
                dropped.runs.iter().filter_map(|r| r.after(acked)).all(|r| {
                    book.drop_new(GapV1 {
                        reason,
                        first_seq: r.first,
                        last_seq: r.last,
                        records: r.data_records,
                        bytes: r.data_bytes,
                    })
                }) && dropped
                    .repeats
                    .iter()
                    .filter(|(seq, _)| *seq > acked)
                    .all(|(_, g)| book.repeat(*g))
            })
            .map_err(ioe("write and fdatasync", &cursor_path))?;
        if !recorded {
            // Every waiting gap is out with the upstream: nothing more can be accounted for
            // until it acknowledges them.
            return Ok(false);
        }
        remove_segment(&*self.sh.fs, &self.dir, seg.base)?;
        self.sealed.pop_front();
        while self.batch_ts.front().is_some_and(|&(s, _)| s <= last) {
            self.batch_ts.pop_front();
        }
        self.publish_sizes();
        Ok(true)
    }

    /// What segment `base`, written by an earlier incarnation, holds in `first..=last`, read
    /// from the file: its runs of records, and the format 1 gap markers among them (to be
    /// repeated). Corruption found on the way is counted.
    fn read_dropped(&self, base: u64, first: u64, last: u64) -> Result<Dropped, LogError> {
        let p = self.dir.join(seg_name(base));
        let f = match self.sh.fs.open_read(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Gone already: its range is all there is to tell.
                return Ok(Dropped {
                    runs: vec![Run {
                        first,
                        last,
                        data_records: last - first + 1,
                        data_bytes: 0,
                    }],
                    repeats: Vec::new(),
                });
            }
            Err(e) => return Err(ioe("open", &p)(e)),
        };
        let start = segment::read_seg_header(&*f)
            .map(segment::frames_start)
            .map_err(ioe("read", &p))?;
        let mut d = Dropped::default();
        let mut sc = Scanner::new(start);
        let (mut expected, mut skipped, mut skipped_bytes) = (base, start == 0, 0);
        loop {
            match sc.next(&*f).map_err(ioe("scan", &p))? {
                Scan::Frame { header: h, .. } => {
                    if skipped {
                        let lost = h.first_seq.saturating_sub(expected.max(first));
                        self.sh
                            .count_corrupt(h.first_seq.saturating_sub(1), lost, skipped_bytes);
                        (skipped, skipped_bytes) = (false, 0);
                    }
                    if h.last_seq() >= first {
                        for (seq, r) in sc.view(h).records().flatten() {
                            if seq < first || seq > last {
                                continue;
                            }
                            if d.runs.last().is_none_or(|r| r.last + 1 != seq) {
                                d.runs.push(Run {
                                    first: seq,
                                    last: seq,
                                    data_records: 0,
                                    data_bytes: 0,
                                });
                            }
                            let Some(run) = d.runs.last_mut() else {
                                continue;
                            };
                            run.last = seq;
                            match r {
                                Record::Gap(g) => d.repeats.push((seq, g)),
                                Record::Data { payload, .. } | Record::Unknown(payload) => {
                                    run.data_records += 1;
                                    run.data_bytes += payload.len() as u64;
                                }
                            }
                        }
                    }
                    expected = expected.max(h.last_seq() + 1);
                    sc.advance(h.frame_len());
                }
                Scan::Skipped { from, to } => {
                    skipped = true;
                    skipped_bytes += to - from;
                }
                Scan::Tail { len, .. } => {
                    skipped = true;
                    skipped_bytes += len;
                    break;
                }
                Scan::End => break,
            }
        }
        if skipped && expected <= last {
            self.sh
                .count_corrupt(last, last + 1 - expected.max(first), skipped_bytes);
        }
        Ok(d)
    }
}
