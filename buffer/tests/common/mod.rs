//! Helpers shared by the buffer integration tests.
#![allow(dead_code)]

use buffer::fs::{Fs, MemFs};
use buffer::reader::{ReadBatch, RecKind};
use buffer::{Log, LogConfig, Now, Reader};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A synthetic clock: `t` ms after a fixed origin.
pub fn at(origin: Instant, t_ms: u64) -> Now {
    Now {
        mono: origin + Duration::from_millis(t_ms),
        wall_ms: 1_700_000_000_000 + t_ms as i64,
    }
}

/// A small configuration on `/buf` for MemFs tests.
pub fn small_cfg() -> LogConfig {
    let mut c = LogConfig::new("/buf", "s");
    c.segment_bytes = 64 << 10;
    c.frame_bytes = 1024;
    c.batch_bytes = 4096;
    c.max_bytes = 64 << 20;
    c
}

/// Deterministic payload of a record.
pub fn payload(epoch: u32, seq: u64, len: usize) -> Vec<u8> {
    let mut p = format!("{epoch}:{seq}:").into_bytes();
    let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(epoch);
    while p.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p.push(x as u8);
    }
    p.truncate(len.max(p.len().min(len)));
    p
}

/// Opens on a MemFs.
pub fn open(fs: &MemFs, cfg: &LogConfig, now: Now) -> (Log, buffer::log::Recovery) {
    Log::open_with(Arc::new(fs.clone()) as Arc<dyn Fs>, cfg.clone(), now).expect("open")
}

/// A read record, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Got {
    pub seq: u64,
    pub epoch: u32,
    pub kind: RecKind,
    pub payload: Vec<u8>,
}

/// Reads everything durable from the reader's position.
pub fn drain(r: &mut Reader) -> Vec<Got> {
    let mut out = Vec::new();
    let mut b = ReadBatch::default();
    loop {
        b.clear();
        let n = r.read(&mut b, 1000, 1 << 20).expect("read");
        if n == 0 {
            break;
        }
        for m in &b.recs {
            out.push(Got {
                seq: m.seq,
                epoch: m.epoch,
                kind: m.kind,
                payload: b.payload(m).to_vec(),
            });
        }
    }
    out
}

/// Delivers the log's waiting gap markers as an output does (fixed, then acknowledged):
/// `(serial, gap)`.
pub fn take_gaps(sh: &buffer::Shared) -> Vec<(u32, buffer::codec::GapV1)> {
    let mut out = Vec::new();
    for (serial, _) in sh.gaps() {
        if let Some(g) = sh.gap_out(serial).expect("gap_out") {
            out.push((serial, g));
            sh.ack_gap(serial);
        }
    }
    out
}

/// A gap marker as the upstream sees it: (first seq, last seq, records).
pub type GapSeen = (u64, u64, u64);

/// The upstream's view checked: the distinct gap ranges are disjoint, each names at most its
/// width in records, every seq up to the highest one seen is delivered or inside a range, and
/// the ranges' records add up to `dropped`. Returns the ranges, ascending.
pub fn check_explained(
    data: &std::collections::BTreeSet<u64>,
    gaps: &[GapSeen],
    dropped: u64,
) -> Vec<GapSeen> {
    let mut ranges = gaps.to_vec();
    ranges.sort_unstable();
    ranges.dedup();
    for w in ranges.windows(2) {
        assert!(
            w[0].1 < w[1].0,
            "overlapping gap ranges {:?} and {:?}",
            w[0],
            w[1]
        );
    }
    for g in &ranges {
        assert!(
            g.2 <= g.1 - g.0 + 1,
            "gap {g:?} names more records than seqs"
        );
    }
    let max = data
        .iter()
        .next_back()
        .copied()
        .unwrap_or(0)
        .max(ranges.last().map_or(0, |g| g.1));
    for s in 1..=max {
        assert!(
            data.contains(&s) || ranges.iter().any(|g| g.0 <= s && s <= g.1),
            "seq {s} neither delivered nor inside a delivered gap marker"
        );
    }
    let sum: u64 = ranges.iter().map(|g| g.2).sum();
    assert_eq!(
        sum, dropped,
        "records of the delivered gaps vs the drop counters"
    );
    ranges
}

pub mod peers;
pub mod pki;
