//! Drops across restarts, on the in-memory filesystem: a drop is on disk before its segment is
//! deleted, every missing seq stays inside a delivered gap marker however often the process
//! dies, one gap id always carries one content, gap ranges are disjoint and their `records`
//! add up to the cumulative drop counters. Also: a version 1 cursor still opens.

mod common;

use buffer::codec::{GapReason, GapV1};
use buffer::fs::{CutMode, MemFs, SplitMix};
use buffer::reader::{ReadBatch, RecKind};
use buffer::{Log, LogConfig, Reader};
use common::*;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

/// What the upstream saw: the data seqs, and the gap markers by id.
#[derive(Default)]
struct Upstream {
    data: BTreeSet<u64>,
    gaps: HashMap<u32, GapV1>,
}

impl Upstream {
    fn records(&mut self, got: &[Got]) {
        for g in got {
            assert!(
                !matches!(g.kind, RecKind::Gap(_)),
                "a gap marker among the records"
            );
            self.data.insert(g.seq);
        }
    }

    fn gap(&mut self, serial: u32, g: GapV1) {
        if let Some(o) = self.gaps.insert(serial, g) {
            assert_eq!(o, g, "gap id {serial} carried two contents");
        }
    }

    /// The check of `common::check_explained`; returns the ranges, ascending.
    fn check(&self, dropped: u64) -> Vec<GapSeen> {
        let gaps: Vec<GapSeen> = self
            .gaps
            .values()
            .map(|g| (g.first_seq, g.last_seq, g.records))
            .collect();
        check_explained(&self.data, &gaps, dropped)
    }
}

fn budget_cfg() -> LogConfig {
    let mut c = small_cfg();
    c.max_bytes = 512 << 10;
    c.batch_bytes = 64 << 10;
    c
}

fn dropped_total(log: &Log) -> u64 {
    log.shared().metrics.dropped_total()
}

fn owned(b: &ReadBatch) -> Vec<Got> {
    b.recs
        .iter()
        .map(|m| Got {
            seq: m.seq,
            epoch: m.epoch,
            kind: m.kind,
            payload: b.payload(m).to_vec(),
        })
        .collect()
}

/// The link is back for good: gaps and records are delivered and acknowledged.
fn deliver_all(log: &Log, up: &mut Upstream) {
    for (s, g) in take_gaps(log.shared()) {
        up.gap(s, g);
    }
    let got = drain(&mut Reader::new(log.shared().clone()));
    if let Some(l) = got.last() {
        log.shared().ack(l.seq);
    }
    up.records(&got);
    assert_eq!(log.shared().gaps_waiting(), 0);
}

#[test]
fn a_drop_is_on_disk_before_its_segment_is_deleted() {
    let o = Instant::now();
    let fs = MemFs::new();
    let cfg = budget_cfg();
    let (mut log, _) = open(&fs, &cfg, at(o, 0));
    let mut seq = 0u64;
    // Fill until the next flush has to drop the oldest segment; that flush deletes it, then
    // its own write fails and the process dies.
    loop {
        while log.batch_len() < 16 << 10 {
            seq += 1;
            log.append(0, 0, b"", &payload(1, seq, 100), at(o, 0))
                .unwrap();
        }
        if log.disk_bytes() + log.batch_len() as u64 > cfg.max_bytes {
            fs.fail_next_writes_to("seg-", 1);
            assert!(log.flush(at(o, 0)).is_err());
            break;
        }
        log.flush(at(o, 0)).unwrap();
    }
    let dropped = dropped_total(&log);
    assert!(dropped > 0, "the failed flush dropped a segment first");
    assert!(log.shared().segments()[0].base > 1);
    drop(log); // kill -9
    let (log, rec) = open(&fs, &cfg, at(o, 10));
    assert_eq!(rec.pending_gaps, 1, "{rec:?}");
    assert_eq!(dropped_total(&log), dropped, "counters survive the restart");
    assert_eq!(
        log.shared().metrics.dropped_records[GapReason::RetentionBytes as usize].load(Relaxed),
        dropped
    );
    let mut up = Upstream::default();
    deliver_all(&log, &mut up);
    let ranges = up.check(dropped);
    assert_eq!(ranges[0].0, 1);
    // Acknowledged: a further restart neither repeats it nor forgets the count.
    drop(log);
    let (log, rec) = open(&fs, &cfg, at(o, 30));
    assert_eq!(rec.pending_gaps, 0);
    assert_eq!(dropped_total(&log), dropped);
}

/// Rounds of ingest under a small budget, the upstream away or coming and going
/// (`deliver_every`), each round ended by a kill -9 at a varying point (and every
/// `power_cut_every`-th by a power cut instead); then the link is back for good.
fn campaign(seed: u64, deliver_every: u64, power_cut_every: u64) -> (Upstream, u64) {
    let o = Instant::now();
    let fs = MemFs::new();
    let cfg = budget_cfg();
    let mut rng = SplitMix(seed);
    let mut up = Upstream::default();
    let mut t = 0u64;
    let mut n_total = 0u64;
    for round in 1..=24u64 {
        let (mut log, _) = open(&fs, &cfg, at(o, t));
        let mut r = Reader::new(log.shared().clone());
        for i in 0..200 + rng.below(4000) {
            n_total += 1;
            log.append(0, 0, b"", &payload(1, n_total, 100), at(o, t))
                .unwrap();
            if i % 700 == 699 {
                t += 150;
                log.tick(at(o, t)).unwrap();
            }
        }
        if deliver_every > 0 && round % deliver_every == 0 {
            // The link is up for a moment: gaps, then some records are delivered. Part of it
            // is acknowledged at once, part stays in flight while drops go on.
            log.flush(at(o, t)).unwrap();
            for (s, _) in log.shared().gaps() {
                if let Some(g) = log.shared().gap_out(s).unwrap() {
                    up.gap(s, g);
                    if rng.below(2) == 0 {
                        log.shared().ack_gap(s);
                    }
                }
            }
            let mut b = ReadBatch::default();
            r.read(&mut b, 1 + rng.below(3000) as usize, 1 << 20)
                .unwrap();
            let got = owned(&b);
            if let Some(l) = got.last() {
                log.shared().ack(l.seq);
            }
            up.records(&got);
        }
        match rng.below(4) {
            0 => {}                                      // kill with an open batch
            1 => log.flush(at(o, t)).map(drop).unwrap(), // kill after a write
            2 => {
                // kill between a drop and the write after it (if this flush drops)
                fs.fail_next_writes_to("seg-", 1);
                let _ = log.flush(at(o, t));
                fs.fail_next_writes_to("seg-", 0);
            }
            _ => log.tick(at(o, t + 200)).unwrap(),
        }
        t += 1000;
        drop(log);
        if power_cut_every > 0 && round % power_cut_every == 0 {
            fs.power_cut(CutMode::DropUnsynced);
        }
    }
    let (log, _) = open(&fs, &cfg, at(o, t));
    deliver_all(&log, &mut up);
    let dropped = dropped_total(&log);
    assert!(
        dropped > 10_000,
        "the budget was exceeded many times over: {dropped}"
    );
    (up, dropped)
}

#[test]
fn drops_stay_explained_and_counted_across_kills_during_an_outage() {
    for seed in [1u64, 2, 3] {
        let (up, dropped) = campaign(seed, 0, 0);
        let ranges = up.check(dropped);
        // Nothing was delivered before the end: one contiguous loss from seq 1, one marker.
        assert_eq!(ranges.len(), 1, "seed {seed}: {ranges:?}");
        assert_eq!(ranges[0].0, 1);
    }
}

#[test]
fn gap_ranges_never_cover_delivered_records_when_the_link_comes_and_goes() {
    for seed in [11u64, 12, 13] {
        let (up, dropped) = campaign(seed, 3, 0);
        let ranges = up.check(dropped);
        // Records acknowledged at once: no range may claim one of them was lost.
        for g in &ranges {
            let inside = up.data.range(g.0..=g.1).count();
            assert_eq!(
                inside, 0,
                "range {g:?} covers {inside} delivered records (seed {seed})"
            );
        }
        assert!(
            ranges.len() > 1,
            "deliveries split the losses (seed {seed})"
        );
    }
}

#[test]
fn power_cuts_keep_drops_explained_and_counted() {
    for seed in [21u64, 22] {
        let (up, dropped) = campaign(seed, 4, 5);
        up.check(dropped);
    }
}

#[test]
fn a_version_1_cursor_still_opens() {
    let o = Instant::now();
    let fs = MemFs::new();
    let cfg = small_cfg();
    let (mut log, _) = open(&fs, &cfg, at(o, 0));
    for i in 1..=3000u64 {
        log.append(0, 0, b"", &payload(1, i, 100), at(o, 0))
            .unwrap();
    }
    log.close(at(o, 0)).unwrap();
    // The cursor as format 1 wrote it: slot A with acked 1200, epoch 5.
    let mut slot = [0u8; 1024];
    slot[0..8].copy_from_slice(b"EBCURSR1");
    slot[8..16].copy_from_slice(&9u64.to_le_bytes());
    slot[16..24].copy_from_slice(&1200u64.to_le_bytes());
    slot[24..28].copy_from_slice(&5u32.to_le_bytes());
    let c = buffer::codec::crc32c(&slot[0..28]);
    slot[28..32].copy_from_slice(&c.to_le_bytes());
    fs.write_file(Path::new("/buf/s/CURSOR"), &slot);
    let (log, rec) = open(&fs, &cfg, at(o, 0));
    assert_eq!((rec.acked, rec.epoch, rec.next_seq), (1200, 6, 3001));
    assert!(!rec.cursor_reset);
    assert_eq!(dropped_total(&log), 0);
    let got = drain(&mut Reader::new(log.shared().clone()));
    assert_eq!(got.first().map(|g| g.seq), Some(1201));
    assert_eq!(got.len(), 1800);
    // Written back as version 2 (in the other slot first): a reopen keeps the state.
    drop(log);
    let bytes = fs.read_file(Path::new("/buf/s/CURSOR")).unwrap();
    assert_eq!(&bytes[512..520], b"EBCURSR2");
    let (_log, rec) = open(&fs, &cfg, at(o, 0));
    assert_eq!((rec.acked, rec.epoch), (1200, 7));
}

#[test]
fn the_seqs_of_a_dropped_batch_are_never_reused() {
    let o = Instant::now();
    let fs = MemFs::new();
    let mut cfg = small_cfg();
    cfg.max_bytes = 300 << 10;
    cfg.full_policy = buffer::FullPolicy::DropNewest;
    let (mut log, _) = open(&fs, &cfg, at(o, 0));
    // Fill until a flush drops its batch: the newest seqs are in no segment.
    let mut n = 0u64;
    loop {
        for _ in 0..100 {
            n += 1;
            log.append(0, 0, b"", &payload(1, n, 100), at(o, 0))
                .unwrap();
        }
        if log.flush(at(o, 0)).unwrap() == buffer::log::Flushed::Dropped {
            break;
        }
    }
    // Everything delivered and acknowledged, gaps included: the ledger is empty again.
    let gaps = take_gaps(log.shared());
    let last_dropped = gaps.iter().map(|g| g.1.last_seq).max().unwrap();
    assert_eq!(last_dropped, n, "the newest batch was dropped");
    let got = drain(&mut Reader::new(log.shared().clone()));
    log.shared().ack(got.last().unwrap().seq);
    log.close(at(o, 0)).unwrap();
    let (_log, rec) = open(&fs, &cfg, at(o, 0));
    assert_eq!(rec.pending_gaps, 0);
    assert_eq!(rec.next_seq, n + 1, "{rec:?}");
}
