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

pub mod peers;
