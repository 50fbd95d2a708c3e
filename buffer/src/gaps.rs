//! The gap ledger: the seqs the writer gave up, kept until the upstream acknowledged the gap
//! marker that explains them, and the cumulative drop counters. It lives in the cursor slot
//! (`docs/buffer-format.md` §3 and §10): a drop is on disk before it takes effect, and it
//! survives any crash. Pure state, no I/O.
//!
//! Gap markers travel out of band: an output sends the waiting gaps before its next records,
//! with the delivery id `node/stream/gap/<serial>`, and a gap leaves the ledger when the
//! upstream acknowledges it. The rules that make every lost seq explained exactly once:
//!
//! * a seq is dropped at most once, so a new range never overlaps an existing one;
//! * a gap handed to an output is *fixed*: its content never changes again, so one id always
//!   names one content, however often it is resent;
//! * gaps not yet fixed merge when their ranges touch (a long outage ends in one gap; the
//!   reason of the merged gap is the earliest one's, the per-reason counters stay exact).
//!
//! Delivered gaps therefore have disjoint ranges, and their `records` add up to the counters.
//! When more than [`MAX_GAPS`] gaps would wait at once, the two nearest gaps not yet fixed are
//! widened into one (its range then also spans the records delivered between them; counted in
//! `widened`); when that is impossible because every waiting gap is fixed, the drop is refused
//! and the writer keeps the data (the log reports itself blocked until acknowledgements come).

use crate::codec::{GapReason, GapV1};

/// Gaps the cursor slot holds.
pub const MAX_GAPS: usize = 9;

/// One waiting gap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    /// Its number in this log; the delivery id is `node/stream/gap/<serial>`.
    pub serial: u32,
    /// What the marker says.
    pub gap: GapV1,
    /// Handed to an output: never changed again.
    pub fixed: bool,
}

/// Waiting gaps and the drop counters (see the module doc).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GapBook {
    gaps: Vec<Gap>,
    next_serial: u32,
    /// Highest seq any gap ever named (acknowledged ones included).
    seq_floor: u64,
    dropped_records: [u64; 6],
    dropped_bytes: [u64; 6],
    /// Times two gaps were widened into one because the slot was full (not persisted).
    pub widened: u64,
}

fn touch(a: &GapV1, b: &GapV1) -> bool {
    a.last_seq.checked_add(1) == Some(b.first_seq) || b.last_seq.checked_add(1) == Some(a.first_seq)
}

fn union(a: &GapV1, b: &GapV1) -> GapV1 {
    let (first, second) = if a.first_seq <= b.first_seq {
        (a, b)
    } else {
        (b, a)
    };
    GapV1 {
        reason: first.reason,
        first_seq: first.first_seq,
        last_seq: first.last_seq.max(second.last_seq),
        records: a.records.saturating_add(b.records),
        bytes: a.bytes.saturating_add(b.bytes),
    }
}

impl GapBook {
    /// A book from its persisted parts (the cursor slot's).
    pub fn from_parts(
        gaps: Vec<Gap>,
        next_serial: u32,
        seq_floor: u64,
        dropped_records: [u64; 6],
        dropped_bytes: [u64; 6],
    ) -> Self {
        GapBook {
            gaps,
            next_serial,
            seq_floor,
            dropped_records,
            dropped_bytes,
            widened: 0,
        }
    }

    /// The waiting gaps, oldest first.
    pub fn gaps(&self) -> &[Gap] {
        &self.gaps
    }

    /// The serial the next new gap gets.
    pub fn next_serial(&self) -> u32 {
        self.next_serial
    }

    /// Cumulative dropped records per [`GapReason`] index.
    pub fn dropped_records(&self) -> [u64; 6] {
        self.dropped_records
    }

    /// Cumulative dropped payload bytes per [`GapReason`] index.
    pub fn dropped_bytes(&self) -> [u64; 6] {
        self.dropped_bytes
    }

    /// Cumulative dropped (records, bytes) of `reason`.
    pub fn dropped(&self, reason: GapReason) -> (u64, u64) {
        let i = reason as usize;
        (self.dropped_records[i], self.dropped_bytes[i])
    }

    /// Highest seq a gap ever named (0 if none): a new incarnation must not reuse it (a
    /// dropped batch's seqs are in no segment).
    pub fn max_seq(&self) -> u64 {
        self.gaps
            .iter()
            .map(|g| g.gap.last_seq)
            .fold(self.seq_floor, u64::max)
    }

    /// A new drop: counted and added. `false` when the ledger cannot take it (every waiting
    /// gap is fixed): the book is then unusable and the caller discards it.
    #[must_use]
    pub fn drop_new(&mut self, gap: GapV1) -> bool {
        let i = gap.reason as usize;
        self.dropped_records[i] = self.dropped_records[i].saturating_add(gap.records);
        self.dropped_bytes[i] = self.dropped_bytes[i].saturating_add(gap.bytes);
        self.add(gap, false)
    }

    /// Adds a gap already counted (a format 1 marker that was dropped before its delivery),
    /// fixed as it is. `false` as for [`GapBook::drop_new`].
    #[must_use]
    pub fn repeat(&mut self, gap: GapV1) -> bool {
        self.add(gap, true)
    }

    fn add(&mut self, gap: GapV1, fixed: bool) -> bool {
        self.seq_floor = self.seq_floor.max(gap.last_seq);
        let mut g = gap;
        let mut serial = None;
        if !fixed {
            while let Some(i) = self.gaps.iter().position(|p| !p.fixed && touch(&p.gap, &g)) {
                let p = self.gaps.remove(i);
                g = union(&p.gap, &g);
                serial = Some(serial.map_or(p.serial, |s: u32| s.min(p.serial)));
            }
        }
        let serial = serial.unwrap_or_else(|| {
            let s = self.next_serial;
            self.next_serial = self.next_serial.wrapping_add(1);
            s
        });
        let at = self.gaps.partition_point(|p| p.serial < serial);
        self.gaps.insert(
            at,
            Gap {
                serial,
                gap: g,
                fixed,
            },
        );
        while self.gaps.len() > MAX_GAPS {
            if !self.widen() {
                return false;
            }
        }
        true
    }

    /// Merges the two nearest gaps not yet fixed.
    fn widen(&mut self) -> bool {
        let mut best: Option<(u64, usize, usize)> = None;
        for (i, a) in self.gaps.iter().enumerate() {
            for (j, b) in self.gaps.iter().enumerate().skip(i + 1) {
                if a.fixed || b.fixed {
                    continue;
                }
                let dist = if a.gap.first_seq < b.gap.first_seq {
                    b.gap.first_seq.saturating_sub(a.gap.last_seq)
                } else {
                    a.gap.first_seq.saturating_sub(b.gap.last_seq)
                };
                if best.is_none_or(|(d, _, _)| dist < d) {
                    best = Some((dist, i, j));
                }
            }
        }
        let Some((_, i, j)) = best else {
            return false;
        };
        let b = self.gaps.remove(j);
        let a = &mut self.gaps[i];
        a.gap = union(&a.gap, &b.gap);
        self.widened += 1;
        true
    }

    /// Gap `serial` is handed to an output: it is fixed. Returns it and whether it was not
    /// fixed before (the ledger changed); `None` when it is no longer waiting.
    pub fn fix(&mut self, serial: u32) -> Option<(GapV1, bool)> {
        let g = self.gaps.iter_mut().find(|g| g.serial == serial)?;
        let changed = !g.fixed;
        g.fixed = true;
        Some((g.gap, changed))
    }

    /// The upstream acknowledged gap `serial`: it leaves the ledger. Returns whether it was
    /// waiting.
    pub fn ack(&mut self, serial: u32) -> bool {
        let before = self.gaps.len();
        self.gaps.retain(|g| g.serial != serial);
        self.gaps.len() != before
    }
}

/// `first..=last` less the `holes` (ascending, disjoint: seqs that never held a record) as
/// ascending runs.
pub fn runs_outside(first: u64, last: u64, holes: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = first;
    for &(a, b) in holes {
        if b < at {
            continue;
        }
        if a > last {
            break;
        }
        if a > at {
            out.push((at, a - 1));
        }
        at = b.saturating_add(1);
        if at > last {
            return out;
        }
    }
    if at <= last {
        out.push((at, last));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(reason: GapReason, first_seq: u64, last_seq: u64) -> GapV1 {
        GapV1 {
            reason,
            first_seq,
            last_seq,
            records: last_seq - first_seq + 1,
            bytes: (last_seq - first_seq + 1) * 100,
        }
    }
    const RB: GapReason = GapReason::RetentionBytes;
    const RA: GapReason = GapReason::RetentionAge;

    #[test]
    fn touching_gaps_merge_until_one_is_fixed() {
        let mut b = GapBook::default();
        assert!(b.drop_new(g(RB, 1, 100)));
        assert!(b.drop_new(g(RA, 101, 200)));
        assert!(b.drop_new(g(RB, 301, 400)));
        assert_eq!(b.gaps().len(), 2);
        assert_eq!(
            b.gaps()[0],
            Gap {
                serial: 0,
                gap: GapV1 {
                    reason: RB,
                    first_seq: 1,
                    last_seq: 200,
                    records: 200,
                    bytes: 20_000
                },
                fixed: false
            }
        );
        assert_eq!(b.dropped(RB), (200, 20_000));
        assert_eq!(b.dropped(RA), (100, 10_000));
        // Handed out: fixed, never merged again.
        assert_eq!(b.fix(0), Some((b.gaps()[0].gap, true)));
        assert_eq!(b.fix(0).map(|x| x.1), Some(false));
        assert!(b.drop_new(g(RB, 201, 300)));
        let serials: Vec<u32> = b.gaps().iter().map(|g| g.serial).collect();
        assert_eq!(serials, vec![0, 1], "201..=400 merged into gap 1");
        assert_eq!(b.gaps()[1].gap.first_seq, 201);
        assert!(b.ack(0));
        assert!(!b.ack(0));
        assert!(b.ack(1));
        assert_eq!(b.max_seq(), 400, "remembered after the acknowledgement");
    }

    #[test]
    fn a_full_ledger_widens_gaps_not_yet_fixed_or_refuses() {
        let mut b = GapBook::default();
        for i in 0..MAX_GAPS as u64 {
            assert!(b.drop_new(g(RB, 100 * i + 1, 100 * i + 10)));
        }
        assert!(b.drop_new(g(RB, 10_001, 10_010)));
        assert_eq!((b.gaps().len(), b.widened), (MAX_GAPS, 1));
        assert_eq!(b.gaps()[0].gap.last_seq, 110);
        assert_eq!(b.gaps()[0].gap.records, 20);
        let mut full = GapBook::default();
        for i in 0..MAX_GAPS as u64 {
            assert!(full.drop_new(g(RB, 100 * i + 1, 100 * i + 10)));
            full.fix(i as u32);
        }
        assert!(!full.clone().drop_new(g(RB, 10_001, 10_010)));
        assert!(!full.repeat(g(RB, 20_001, 20_010)));
    }

    #[test]
    fn runs_outside_holes() {
        assert_eq!(
            runs_outside(1, 20, &[(3, 4), (8, 8)]),
            vec![(1, 2), (5, 7), (9, 20)]
        );
        assert_eq!(runs_outside(1, 20, &[(1, 20)]), vec![]);
        assert_eq!(runs_outside(5, 6, &[]), vec![(5, 6)]);
        assert_eq!(runs_outside(10, 20, &[(1, 12), (30, 40)]), vec![(13, 20)]);
    }
}
