//! The buffer's segment recovery (`buffer::Log::open_with` on the in-memory `MemFs`): the
//! input is the content of the stream's only segment file, as a power cut, a bad disk or an
//! attacker with write access may leave it (the seeds are real segments, written by the log).
//!
//! Properties, for every input:
//! * recovery never panics and opens the log (a damaged segment is repaired, not fatal);
//! * the reader then returns records with strictly increasing seqs, all below `next_seq`;
//! * the recovered log accepts a record at `next_seq`, and the reader returns it last;
//! * recovery is idempotent: reopening finds the same records (plus the new one).
#![no_main]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use buffer::fs::{Fs, MemFs};
use buffer::reader::{ReadBatch, RecKind};
use buffer::segment::seg_name;
use buffer::{Log, LogConfig, Now, Reader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let fs = MemFs::new();
    fs.write_file(&Path::new("/buf/s").join(seg_name(1)), data);
    let origin = Instant::now();
    let (mut log, rec) =
        match Log::open_with(Arc::new(fs.clone()) as Arc<dyn Fs>, cfg(), at(origin, 0)) {
            Ok(x) => x,
            Err(e) => panic!("recovery failed on a damaged segment: {e}"),
        };
    let mut reader = Reader::new(log.shared().clone());
    let first = drain(&mut reader);
    let mut last = 0;
    for (seq, _, _) in &first {
        assert!(*seq > last, "seqs not increasing: {seq} after {last}");
        assert!(
            *seq < rec.next_seq,
            "seq {seq} at or past next_seq {}",
            rec.next_seq
        );
        last = *seq;
    }
    let seq = log
        .append(1, 0, b"k", b"after recovery", at(origin, 1))
        .expect("the recovered log accepts records");
    assert_eq!(seq, rec.next_seq);
    log.flush(at(origin, 2)).expect("flush");
    let after = drain(&mut reader);
    assert_eq!(
        after.last().map(|(s, k, p)| (*s, *k, p.as_slice())),
        Some((seq, RecKind::Data, b"after recovery".as_slice()))
    );
    log.close(at(origin, 3)).expect("close");
    drop(reader);

    // Reopen: the same records again, the new one included.
    let (log, rec2) = Log::open_with(Arc::new(fs.clone()) as Arc<dyn Fs>, cfg(), at(origin, 4))
        .unwrap_or_else(|e| panic!("second recovery failed: {e}"));
    assert!(rec2.next_seq > seq);
    let mut reader = Reader::new(log.shared().clone());
    let again: Vec<_> = drain(&mut reader)
        .into_iter()
        .filter(|r| r.1 == RecKind::Data)
        .collect();
    let expected: Vec<_> = first
        .into_iter()
        .chain(after)
        .filter(|r| r.1 == RecKind::Data)
        .collect();
    assert_eq!(again, expected, "recovery is not idempotent");
});

fn cfg() -> LogConfig {
    let mut c = LogConfig::new("/buf", "s");
    c.segment_bytes = 1 << 20;
    c.frame_bytes = 1024;
    c.batch_bytes = 4096;
    c.max_bytes = 64 << 20;
    c
}

fn at(origin: Instant, t_ms: u64) -> Now {
    Now {
        mono: origin + Duration::from_millis(t_ms),
        wall_ms: 1_700_000_000_000 + t_ms as i64,
    }
}

/// Everything durable from the reader's position: (seq, kind, payload).
fn drain(r: &mut Reader) -> Vec<(u64, RecKind, Vec<u8>)> {
    let mut out = Vec::new();
    let mut b = ReadBatch::default();
    loop {
        b.clear();
        let n = r.read(&mut b, 1000, 1 << 20).expect("read");
        if n == 0 {
            break;
        }
        for m in &b.recs {
            out.push((m.seq, m.kind, b.payload(m).to_vec()));
        }
    }
    out
}
