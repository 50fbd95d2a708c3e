//! Segment log: round trips, recovery from torn and corrupt data, retention, full disks and
//! failing I/O, on the in-memory filesystem (and once on the real one).

mod common;

use buffer::codec::GapReason;
use buffer::fs::{CutMode, MemFs, RealFs};
use buffer::log::Flushed;
use buffer::reader::RecKind;
use buffer::segment::seg_name;
use buffer::{FullPolicy, Log, LogConfig, Reader, SyncPolicy};
use common::*;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

/// (offset, header) of every frame of a segment file's bytes.
fn frames(bytes: &[u8]) -> Vec<(usize, buffer::codec::FrameHeader)> {
    let mut v = vec![];
    let mut off = 32usize;
    while off < bytes.len() {
        let f = buffer::codec::FrameView::parse(&bytes[off..]).unwrap();
        v.push((off, f.header));
        off += f.header.frame_len();
    }
    v
}

fn data(got: &[Got]) -> Vec<&Got> {
    got.iter().filter(|g| g.kind == RecKind::Data).collect()
}

#[test]
fn append_read_ack_reopen_roundtrip() {
    let o = Instant::now();
    let fs = MemFs::new();
    let cfg = small_cfg();
    let (mut log, rec) = open(&fs, &cfg, at(o, 0));
    assert_eq!((rec.epoch, rec.next_seq, rec.acked), (1, 1, 0));
    for i in 1..=1000u64 {
        assert_eq!(
            log.append(i as i64, 3, b"k", &payload(1, i, 100), at(o, 1))
                .unwrap(),
            i
        );
    }
    // Not yet durable: readers see nothing until the batch is synced.
    let mut r = Reader::new(log.shared().clone());
    let before = drain(&mut r);
    assert!(before.len() < 1000);
    log.flush(at(o, 2)).unwrap();
    let mut got = before;
    got.extend(drain(&mut r));
    assert_eq!(got.len(), 1000);
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g.seq, i as u64 + 1);
        assert_eq!(g.epoch, 1);
        assert_eq!(g.payload, payload(1, g.seq, 100));
    }
    assert!(
        log.shared().segments().len() > 1,
        "64 KiB segments must have rolled"
    );
    log.shared().ack(700);
    log.tick(at(o, 5000)).unwrap();
    let segs_after_ack = log.shared().segments();
    assert!(segs_after_ack[0].base > 1, "acked segments deleted");
    drop((log, r));
    let (log, rec) = open(&fs, &cfg, at(o, 6000));
    assert_eq!((rec.epoch, rec.acked, rec.next_seq), (2, 700, 1001));
    let mut r = Reader::new(log.shared().clone());
    let got = drain(&mut r);
    assert_eq!(got.first().map(|g| g.seq), Some(701));
    assert_eq!(got.len(), 300);
}

#[test]
fn second_open_is_refused_while_locked() {
    let fs = MemFs::new();
    let cfg = small_cfg();
    let (_log, _) = open(&fs, &cfg, at(Instant::now(), 0));
    let err = Log::open_with(Arc::new(fs.clone()), cfg, at(Instant::now(), 0)).err();
    assert!(matches!(err, Some(buffer::LogError::Locked(_))), "{err:?}");
}

#[test]
fn bad_stream_names_are_refused() {
    for bad in ["", ".hidden", "a/b", "x y", &"a".repeat(65)] {
        let cfg = LogConfig::new("/buf", bad);
        let err = Log::open_with(Arc::new(MemFs::new()), cfg, at(Instant::now(), 0)).err();
        assert!(
            matches!(err, Some(buffer::LogError::BadStream(_))),
            "{bad:?}"
        );
    }
}

/// Small frames and batches, one 1 MiB segment.
fn big_segment_cfg() -> LogConfig {
    let mut c = small_cfg();
    c.segment_bytes = 1 << 20;
    c
}

/// Writes `n` records in batches of 7, returns the fs, the active segment path and its
/// frame boundaries.
fn written_log(n: u64) -> (MemFs, std::path::PathBuf, Vec<u8>) {
    let o = Instant::now();
    let fs = MemFs::new();
    let cfg = big_segment_cfg();
    let (mut log, _) = open(&fs, &cfg, at(o, 0));
    for i in 1..=n {
        log.append(0, 0, b"", &payload(1, i, 40), at(o, 0)).unwrap();
        if i % 7 == 0 {
            log.flush(at(o, 0)).unwrap();
        }
    }
    log.flush(at(o, 0)).unwrap();
    let p = Path::new("/buf/s").join(seg_name(1));
    let bytes = fs.read_file(&p).unwrap();
    (fs, p, bytes)
}

/// Every valid prefix survives a reopen, nothing invented, seqs continue after it.
fn check_recovers_prefix(fs: &MemFs, expect_at_least: u64, n: u64) {
    let cfg = big_segment_cfg();
    let (mut log, rec) = open(fs, &cfg, at(Instant::now(), 0));
    let mut r = Reader::new(log.shared().clone());
    let got = drain(&mut r);
    let d = data(&got);
    assert!(
        d.len() as u64 >= expect_at_least,
        "{} < {expect_at_least}",
        d.len()
    );
    for (i, g) in d.iter().enumerate() {
        assert_eq!(g.seq, i as u64 + 1, "contiguous prefix");
        assert_eq!(g.payload, payload(1, g.seq, 40));
    }
    assert!(d.len() as u64 <= n);
    assert_eq!(rec.next_seq, d.len() as u64 + 1);
    // The log is writable after recovery.
    let s = log
        .append(0, 0, b"", b"after", at(Instant::now(), 0))
        .unwrap();
    log.flush(at(Instant::now(), 0)).unwrap();
    assert_eq!(s, rec.next_seq);
    let after = drain(&mut r);
    assert_eq!(
        after.last().map(|g| g.payload.clone()),
        Some(b"after".to_vec())
    );
}

#[test]
fn truncation_at_every_byte_of_the_last_frames() {
    let (fs, p, bytes) = written_log(60);
    // Frame boundaries: scan with the codec.
    let ends: Vec<(usize, u64)> = frames(&bytes)
        .iter()
        .map(|(o, h)| (o + h.frame_len(), h.last_seq()))
        .collect();
    let cut_from = ends[ends.len() - 4].0;
    for cut in cut_from..=bytes.len() {
        let fs2 = MemFs::new();
        fs2.write_file(
            &Path::new("/buf/s").join("META"),
            &fs.read_file(Path::new("/buf/s/META")).unwrap(),
        );
        fs2.write_file(&p, &bytes[..cut]);
        let complete = ends
            .iter()
            .filter(|(e, _)| *e <= cut)
            .map(|x| x.1)
            .max()
            .unwrap_or(0);
        check_recovers_prefix(&fs2, complete, 60);
    }
}

#[test]
fn zero_filled_tails_and_garbage_tails_are_truncated() {
    let (_fs, p, bytes) = written_log(30);
    for tail in [1usize, 35, 36, 37, 4096, 70_000] {
        for fill in [0u8, 0xF1] {
            let fs2 = MemFs::new();
            let mut b = bytes.clone();
            b.extend(std::iter::repeat_n(fill, tail));
            fs2.write_file(&p, &b);
            let cfg = big_segment_cfg();
            let (_log, rec) = open(&fs2, &cfg, at(Instant::now(), 0));
            assert_eq!(
                rec.truncated_bytes, tail as u64,
                "tail {tail} fill {fill:#x}"
            );
            assert_eq!(fs2.read_file(&p).unwrap().len(), bytes.len());
            drop(_log);
            check_recovers_prefix(&fs2, 30, 30);
        }
    }
}

#[test]
fn flipped_bits_and_bad_lengths_skip_one_frame_and_count_it() {
    let (_fs, p, bytes) = written_log(60);
    let (foff, fh) = frames(&bytes)[2];
    let cfg = big_segment_cfg();
    // A bit flip inside the body, in the header, and a corrupt length field.
    type Mutation = Box<dyn Fn(&mut Vec<u8>)>;
    let mutations: Vec<Mutation> = vec![
        Box::new(move |b: &mut Vec<u8>| b[foff + 40] ^= 0x10),
        Box::new(move |b: &mut Vec<u8>| b[foff + 17] ^= 0x01),
        Box::new(move |b: &mut Vec<u8>| {
            b[foff + 4..foff + 8].copy_from_slice(&0xFFFF_u32.to_le_bytes())
        }),
        Box::new(move |b: &mut Vec<u8>| b[foff + 4..foff + 8].copy_from_slice(&3u32.to_le_bytes())),
    ];
    for m in mutations {
        let fs2 = MemFs::new();
        let mut b = bytes.clone();
        m(&mut b);
        fs2.write_file(&p, &b);
        let (log, rec) = open(&fs2, &cfg, at(Instant::now(), 0));
        assert_eq!(rec.corrupt_records, u64::from(fh.count), "{rec:?}");
        assert_eq!(rec.truncated_bytes, 0);
        let mut r = Reader::new(log.shared().clone());
        let got = drain(&mut r);
        let seqs: Vec<u64> = got.iter().map(|g| g.seq).collect();
        let lost: Vec<u64> = (fh.first_seq..=fh.last_seq()).collect();
        assert_eq!(seqs.len(), 60 - lost.len());
        assert!(lost.iter().all(|s| !seqs.contains(s)));
        assert!(got.iter().all(|g| g.payload == payload(1, g.seq, 40)));
        assert_eq!(
            log.shared().metrics.corrupt_records.load(Relaxed),
            u64::from(fh.count)
        );
    }
}

/// Opens `fs`, appends one record, closes, reopens: the second recovery must find what the
/// first did plus that record, and the damaged segment's bytes must not have changed since the
/// first recovery (appends go to a new segment). Returns the first recovery.
fn reopen_is_idempotent(fs: &MemFs, cfg: &LogConfig, damaged: &Path) -> buffer::log::Recovery {
    let o = Instant::now();
    let (mut log, rec) = open(fs, cfg, at(o, 0));
    assert!(rec.corrupt_bytes > 0, "{rec:?}");
    assert_eq!(rec.segments, 2, "the damaged segment is sealed: {rec:?}");
    let kept = fs.read_file(damaged).unwrap();
    let mut r = Reader::new(log.shared().clone());
    let first = drain(&mut r);
    let seq = log.append(1, 0, b"k", b"after", at(o, 1)).unwrap();
    assert_eq!(seq, rec.next_seq);
    log.close(at(o, 2)).unwrap();
    drop(r);
    assert_eq!(
        fs.read_file(damaged).unwrap(),
        kept,
        "damaged segment written to"
    );
    let new_seg = Path::new("/buf/s").join(seg_name(rec.next_seq));
    assert!(
        fs.read_file(&new_seg).is_some(),
        "appends go to {new_seg:?}"
    );

    let (log, rec2) = open(fs, cfg, at(o, 3));
    assert_eq!(
        (rec2.next_seq, rec2.corrupt_bytes),
        (seq + 1, 0),
        "{rec2:?}"
    );
    let mut r = Reader::new(log.shared().clone());
    let again = drain(&mut r);
    let (before, appended) = again.split_at(again.len() - 1);
    assert_eq!(before, first.as_slice());
    assert_eq!(
        (appended[0].seq, appended[0].payload.as_slice()),
        (seq, b"after".as_slice())
    );
    rec
}

#[test]
fn a_last_segment_with_corruption_before_good_frames_is_sealed_and_reopens_the_same() {
    let (_fs, p, bytes) = written_log(60);
    let (foff, fh) = frames(&bytes)[2];
    let mut b = bytes.clone();
    b[foff + 40] ^= 0x10;
    let fs = MemFs::new();
    fs.write_file(&p, &b);
    let rec = reopen_is_idempotent(&fs, &big_segment_cfg(), &p);
    assert_eq!(rec.corrupt_records, u64::from(fh.count));
    assert_eq!(rec.next_seq, 61);
}

/// The buffer_recovery fuzz target's crash (fuzz/README.md): a segment whose corrupt middle
/// holds a frame header whose length runs past the end of the file, with a CRC that the frame
/// appended after the first recovery completed; a second recovery then accepted it (epoch
/// 3,792,175,104, seq 2.48e18) and lost the appended record. Appends now go to a new segment.
#[test]
fn a_latent_frame_in_skipped_corruption_cannot_be_completed_by_later_appends() {
    let fs = MemFs::new();
    let p = Path::new("/buf/s").join(seg_name(1));
    fs.write_file(
        &p,
        include_bytes!("../../fuzz/regressions/buffer_recovery/reopen-after-skipped-corruption"),
    );
    let mut cfg = LogConfig::new("/buf", "s");
    cfg.segment_bytes = 1 << 20;
    cfg.frame_bytes = 1024;
    cfg.batch_bytes = 4096;
    let rec = reopen_is_idempotent(&fs, &cfg, &p);
    assert_eq!((rec.corrupt_records, rec.next_seq), (15, 17));
}

/// 2000 records of 100 B (`payload(1, seq, 100)`), durable, in at least 3 segments; the log
/// closed by a kill.
fn two_thousand_records(o: Instant) -> (MemFs, LogConfig, Vec<buffer::log::SegEntry>) {
    let fs = MemFs::new();
    let cfg = small_cfg();
    let (mut log, _) = open(&fs, &cfg, at(o, 0));
    for i in 1..=2000u64 {
        log.append(0, 0, b"", &payload(1, i, 100), at(o, 0))
            .unwrap();
    }
    log.flush(at(o, 0)).unwrap();
    let segs = log.shared().segments();
    assert!(segs.len() >= 3);
    (fs, cfg, segs)
}

#[test]
fn corruption_in_a_sealed_segment_is_skipped_by_the_reader_and_counted_once() {
    let o = Instant::now();
    let (fs, cfg, segs) = two_thousand_records(o);
    let p = Path::new("/buf/s").join(seg_name(segs[0].base));
    let mut b = fs.read_file(&p).unwrap();
    b[5000] ^= 0xff;
    fs.write_file(&p, &b);
    let (log, _) = open(&fs, &cfg, at(o, 0));
    for _ in 0..2 {
        let mut r = Reader::new(log.shared().clone());
        let got = drain(&mut r);
        let lost = 2000 - got.len() as u64;
        assert!(lost > 0 && lost < 20, "lost {lost}");
        assert_eq!(got.last().unwrap().seq, 2000);
        assert_eq!(log.shared().metrics.corrupt_records.load(Relaxed), lost);
    }
}

#[test]
fn epoch_advances_even_when_the_cursor_is_lost() {
    let o = Instant::now();
    let fs = MemFs::new();
    let cfg = small_cfg();
    for expect in 1..=3 {
        let (mut log, rec) = open(&fs, &cfg, at(o, 0));
        assert_eq!(rec.epoch, expect);
        log.append(0, 0, b"", b"x", at(o, 0)).unwrap();
        log.flush(at(o, 0)).unwrap();
    }
    fs.write_file(Path::new("/buf/s/CURSOR"), &[0u8; 1024]);
    let (_log, rec) = open(&fs, &cfg, at(o, 0));
    assert!(rec.cursor_reset);
    assert_eq!(rec.epoch, 4, "epoch from the frames");
    assert_eq!(rec.next_seq, 4);
}

#[test]
fn power_cut_loses_only_undurable_and_seq_reuse_is_detectable_by_epoch() {
    let o = Instant::now();
    let fs = MemFs::new();
    let mut cfg = small_cfg();
    cfg.sync = SyncPolicy::Interval(std::time::Duration::from_secs(10));
    let (mut log, _) = open(&fs, &cfg, at(o, 0));
    for i in 1..=10 {
        log.append(0, 0, b"", &payload(1, i, 10), at(o, 0)).unwrap();
    }
    log.flush(at(o, 0)).unwrap();
    log.tick(at(o, 20_000)).unwrap(); // interval sync: 1..=10 durable
    for i in 11..=20 {
        log.append(0, 0, b"", &payload(1, i, 10), at(o, 20_000))
            .unwrap();
    }
    log.flush(at(o, 20_000)).unwrap(); // written, not synced
    assert_eq!(log.shared().durable(), 10);
    drop(log);
    fs.power_cut(CutMode::DropUnsynced);
    let (mut log, rec) = open(&fs, &cfg, at(o, 0));
    assert_eq!((rec.epoch, rec.next_seq), (2, 11));
    log.append(0, 0, b"", b"new", at(o, 0)).unwrap();
    log.close(at(o, 0)).unwrap();
    let (log, _) = open(&fs, &cfg, at(o, 0));
    let got = drain(&mut Reader::new(log.shared().clone()));
    let eleven: Vec<_> = got.iter().filter(|g| g.seq == 11).collect();
    assert_eq!(eleven.len(), 1);
    assert_eq!(
        (eleven[0].epoch, eleven[0].payload.as_slice()),
        (2, &b"new"[..])
    );
}

#[test]
fn drop_oldest_keeps_disk_under_max_bytes_and_writes_gap_markers() {
    let o = Instant::now();
    let fs = MemFs::new();
    let mut cfg = small_cfg();
    cfg.max_bytes = 512 << 10;
    let (mut log, _) = open(&fs, &cfg, at(o, 0));
    let n = 3 * (512 << 10) / 100;
    for i in 1..=n as u64 {
        log.append(0, 0, b"", &payload(1, i, 100), at(o, i))
            .unwrap();
        assert!(
            fs.used_bytes() <= cfg.max_bytes,
            "disk {} > limit",
            fs.used_bytes()
        );
    }
    log.flush(at(o, 0)).unwrap();
    assert!(fs.used_bytes() <= cfg.max_bytes);
    let m = &log.shared().metrics;
    let dropped = m.dropped_records[GapReason::RetentionBytes as usize].load(Relaxed);
    assert!(dropped > 0);
    let got = drain(&mut Reader::new(log.shared().clone()));
    // Oldest dropped: what remains is a suffix; gap markers cover every missing seq.
    let gaps: Vec<_> = take_gaps(log.shared()).into_iter().map(|g| g.1).collect();
    assert!(!gaps.is_empty());
    let present: std::collections::HashSet<u64> = got.iter().map(|g| g.seq).collect();
    let max = got.iter().map(|g| g.seq).max().unwrap();
    for s in 1..=max {
        if !present.contains(&s) {
            assert!(
                gaps.iter().any(|g| g.first_seq <= s && s <= g.last_seq),
                "seq {s} missing without a gap marker"
            );
        }
    }
    let gap_total: u64 = gaps.iter().map(|g| g.records).sum();
    assert_eq!(gap_total, dropped);
}

#[test]
fn drop_newest_and_block_policies() {
    let o = Instant::now();
    for policy in [FullPolicy::DropNewest, FullPolicy::Block] {
        let fs = MemFs::new();
        let mut cfg = small_cfg();
        cfg.max_bytes = 300 << 10;
        cfg.full_policy = policy;
        let (mut log, _) = open(&fs, &cfg, at(o, 0));
        let mut accepted = 0u64;
        let mut blocked = 0;
        for i in 1..=10_000u64 {
            match log.append(0, 0, b"", &payload(1, i, 100), at(o, 0)) {
                Ok(_) => accepted += 1,
                Err(buffer::LogError::Blocked(_)) => blocked += 1,
                Err(e) => panic!("{e}"),
            }
        }
        let _ = log.flush(at(o, 0));
        assert!(fs.used_bytes() <= cfg.max_bytes);
        let m = &log.shared().metrics;
        match policy {
            FullPolicy::DropNewest => {
                assert_eq!(blocked, 0);
                let d = m.dropped_records[GapReason::DropNewest as usize].load(Relaxed);
                assert!(d > 0, "{m:?} used {}", fs.used_bytes());
                let got = drain(&mut Reader::new(log.shared().clone()));
                // The oldest records are all still there.
                assert_eq!(got[0].seq, 1);
                assert_eq!(data(&got).len() as u64 + d, accepted);
            }
            _ => {
                assert!(blocked > 0);
                assert_eq!(m.dropped_total(), 0);
                // Acks free space; the held batch then goes through.
                let mut r = Reader::new(log.shared().clone());
                let got = drain(&mut r);
                log.shared().ack(got.last().unwrap().seq);
                log.tick(at(o, 10_000)).unwrap();
                assert_eq!(log.flush(at(o, 10_001)).unwrap(), Flushed::Written);
                let more = drain(&mut r);
                assert!(!more.is_empty());
                assert_eq!(got.len() + more.len(), accepted as usize);
            }
        }
    }
}

#[test]
fn enospc_never_panics_and_applies_the_policy() {
    let o = Instant::now();
    let fs = MemFs::new();
    let cfg = small_cfg();
    let (mut log, _) = open(&fs, &cfg, at(o, 0));
    fs.set_capacity(Some(fs.used_bytes() + (400 << 10)));
    for i in 1..=20_000u64 {
        log.append(0, 0, b"", &payload(1, i, 100), at(o, 0))
            .unwrap();
    }
    log.flush(at(o, 0)).unwrap();
    let sh = log.shared().clone();
    let m = &sh.metrics;
    assert!(m.dropped_records[GapReason::DiskFull as usize].load(Relaxed) > 0);
    assert!(m.io_errors.load(Relaxed) > 0);
    let got = drain(&mut Reader::new(log.shared().clone()));
    assert_eq!(got.last().map(|g| g.kind), Some(RecKind::Data));
    assert!(
        take_gaps(&sh)
            .iter()
            .any(|(_, g)| g.reason == GapReason::DiskFull)
    );
    // Still writable and readable after space returns.
    fs.set_capacity(None);
    let s = log.append(0, 0, b"", b"later", at(o, 0)).unwrap();
    log.flush(at(o, 0)).unwrap();
    assert_eq!(log.shared().durable(), s.max(log.shared().durable()));
    assert!(!m.degraded.load(Relaxed));
}

#[test]
fn failed_fdatasync_is_rolled_back_and_retried() {
    let o = Instant::now();
    let fs = MemFs::new();
    let cfg = small_cfg();
    let (mut log, _) = open(&fs, &cfg, at(o, 0));
    log.append(0, 0, b"", b"a", at(o, 0)).unwrap();
    fs.fail_next_syncs(1);
    assert!(log.flush(at(o, 0)).is_err());
    assert_eq!(log.shared().durable(), 0);
    assert!(log.shared().metrics.degraded.load(Relaxed));
    log.tick(at(o, 1000)).unwrap();
    assert_eq!(log.shared().durable(), 1);
    let got = drain(&mut Reader::new(log.shared().clone()));
    assert_eq!(got.len(), 1);
    fs.fail_next_writes(1);
    log.append(0, 0, b"", b"b", at(o, 1000)).unwrap();
    assert!(log.flush(at(o, 1000)).is_err());
    log.tick(at(o, 3000)).unwrap();
    assert_eq!(log.shared().durable(), 2);
}

#[test]
fn age_retention_drops_expired_segments() {
    let o = Instant::now();
    let fs = MemFs::new();
    let mut cfg = small_cfg();
    cfg.max_age = Some(std::time::Duration::from_secs(60));
    let (mut log, _) = open(&fs, &cfg, at(o, 0));
    for i in 1..=2000u64 {
        log.append(i as i64, 0, b"", &payload(1, i, 100), at(o, 0))
            .unwrap();
    }
    log.flush(at(o, 0)).unwrap();
    for i in 2001..=2100u64 {
        log.append(0, 0, b"", &payload(1, i, 100), at(o, 120_000))
            .unwrap();
    }
    log.flush(at(o, 120_000)).unwrap();
    log.tick(at(o, 120_001)).unwrap();
    let m = &log.shared().metrics;
    assert!(m.dropped_records[GapReason::RetentionAge as usize].load(Relaxed) >= 1000);
}

#[test]
fn real_filesystem_roundtrip_and_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig::new(dir.path(), "s");
    let (mut log, _) = Log::open(cfg.clone()).unwrap();
    for i in 1..=1000u64 {
        log.append(0, 0, b"", &payload(1, i, 50), buffer::Now::system())
            .unwrap();
    }
    log.close(buffer::Now::system()).unwrap();
    let p = dir.path().join("s").join(seg_name(1));
    let len = std::fs::metadata(&p).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(len - 3).unwrap();
    let (log, rec) = Log::open(cfg).unwrap();
    assert!(rec.truncated_bytes > 0);
    let got = drain(&mut Reader::new(log.shared().clone()));
    assert!(!got.is_empty() && got.len() < 1000);
    let _ = RealFs;
}

/// How a disk can damage a segment's 32-byte header.
#[derive(Clone, Copy, Debug)]
enum HeaderDamage {
    /// Zeroed in place (a lost sector).
    Zeroed,
    /// The first 16 bytes cut out: every frame moves 16 bytes toward the start.
    Cut16,
    /// The file cut to 20 bytes: the header is cut and every frame is gone.
    Truncated20,
}

fn damage(b: &[u8], how: HeaderDamage) -> Vec<u8> {
    match how {
        HeaderDamage::Zeroed => {
            let mut c = b.to_vec();
            c[..32].fill(0);
            c
        }
        HeaderDamage::Cut16 => b[16..].to_vec(),
        HeaderDamage::Truncated20 => b[..20].to_vec(),
    }
}

#[test]
fn a_damaged_or_cut_segment_header_is_counted_and_its_frames_kept() {
    let o = Instant::now();
    for sealed in [true, false] {
        for how in [
            HeaderDamage::Zeroed,
            HeaderDamage::Cut16,
            HeaderDamage::Truncated20,
        ] {
            let what = format!(
                "{} segment, {how:?}",
                if sealed { "sealed" } else { "last" }
            );
            let (fs, cfg, segs) = two_thousand_records(o);
            let i = if sealed { 1 } else { segs.len() - 1 };
            let p = Path::new("/buf/s").join(seg_name(segs[i].base));
            let held = segs.get(i + 1).map_or(2001, |s| s.base) - segs[i].base;
            fs.write_file(&p, &damage(&fs.read_file(&p).unwrap(), how));
            let (mut log, rec) = open(&fs, &cfg, at(o, 0));
            assert_eq!(rec.damaged_headers, 1, "{what}: {rec:?}");
            let m = &log.shared().metrics;
            assert_eq!(m.corrupt_headers.load(Relaxed), 1, "{what}");
            let got = drain(&mut Reader::new(log.shared().clone()));
            assert!(got.iter().all(|g| g.payload == payload(1, g.seq, 100)));
            let lost = 2000 - got.len() as u64;
            let corrupt = m.corrupt_records.load(Relaxed);
            match how {
                // Every frame is still there and is found.
                HeaderDamage::Zeroed | HeaderDamage::Cut16 => {
                    assert_eq!((lost, corrupt), (0, 0), "{what}");
                }
                // All its records are gone: counted (a last segment's are not known).
                HeaderDamage::Truncated20 => {
                    assert_eq!(lost, held, "{what}");
                    assert_eq!(corrupt, if sealed { held } else { 0 }, "{what}");
                }
            }
            // Still writable, and new records come after every seq seen.
            let s = log.append(0, 0, b"", b"after", at(o, 1)).unwrap();
            log.flush(at(o, 1)).unwrap();
            assert!(s > got.last().map_or(0, |g| g.seq), "{what}");
        }
    }
}

#[test]
fn resends_are_recognised_across_a_restart() {
    use buffer::Appended;
    use buffer::dedupe::Origin;
    let o = Instant::now();
    let fs = MemFs::new();
    let cfg = small_cfg();
    let (mut log, _) = open(&fs, &cfg, at(o, 0));
    let line = |n: u64| payload(1, n, 80);
    // Message `p` of the MQTT input (source 1) with packet id `id`, flagged DUP or not.
    let mqtt = |log: &mut Log, id: u16, dup: bool, p: &str, t: u64| {
        log.append_with(
            0,
            1,
            b"s/t",
            p.as_bytes(),
            Some(Origin::packet(id, dup)),
            at(o, t),
        )
        .unwrap()
    };
    // A numbered producer's lines 1..=3000 (several segments), and MQTT packets 1..=50.
    for n in 1..=3000u64 {
        let a = log
            .append_with(0, 0, b"p1", &line(n), Some(Origin::numbered(n)), at(o, 0))
            .unwrap();
        assert_eq!(a, Appended::Stored(n));
    }
    for id in 1..=50u16 {
        let a = mqtt(&mut log, id, false, &format!("t={id}"), 0);
        assert!(matches!(a, Appended::Stored(_)));
    }
    log.flush(at(o, 0)).unwrap();
    assert!(log.shared().segments().len() > 3);
    drop(log); // kill -9: the producer saw no `ok`, the broker no PUBACK
    let (mut log, rec) = open(&fs, &cfg, at(o, 1));
    assert_eq!(rec.dedupe, (1, 50), "{rec:?}");
    let next = rec.next_seq;
    // The producer resends from line 2900: up to 3000 they are resends of stored lines.
    let mut stored = Vec::new();
    for n in 2900..=3100u64 {
        match log
            .append_with(0, 0, b"p1", &line(n), Some(Origin::numbered(n)), at(o, 1))
            .unwrap()
        {
            Appended::Resend(seq) => assert!(n <= 3000 && seq <= 3000, "line {n}"),
            Appended::Stored(seq) => stored.push((n, seq)),
        }
    }
    assert_eq!(stored.first(), Some(&(3001, next)), "nothing stored twice");
    assert_eq!(stored.len(), 100);
    // The broker redelivers (DUP) the same messages: recognised by packet id and content.
    for id in 1..=50u16 {
        let p = format!("t={id}");
        let a = log
            .append_with(
                0,
                1,
                b"s/t",
                p.as_bytes(),
                Some(Origin::packet(id, true)),
                at(o, 1),
            )
            .unwrap();
        assert!(
            matches!(a, Appended::Resend(s) if s > 3000 && s < next),
            "{a:?}"
        );
    }
    // A new message reusing an id, and a DUP one with other content, are stored.
    for (dup, p) in [(false, "t=1"), (true, "t=other")] {
        let a = mqtt(&mut log, 1, dup, p, 1);
        assert!(matches!(a, Appended::Stored(_)), "{dup} {p}");
    }
    assert_eq!(log.shared().metrics.input_resends.load(Relaxed), 101 + 50);
    log.flush(at(o, 1)).unwrap();
    // Every line is in the log once.
    let got = drain(&mut Reader::new(log.shared().clone()));
    let lines: Vec<_> = got.iter().filter(|g| g.payload.len() == 80).collect();
    assert_eq!(lines.len(), 3100);
}
