//! Model-based property test: random append / flush / tick / read / ack / crash sequences
//! against an in-memory model of what must survive.
//!
//! Invariants checked after every reopen:
//! * every record that was durable at the crash (or written, for a process kill) and lies
//!   beyond the recovered cursor is read back, with its epoch and content;
//! * everything read back was appended with that (epoch, seq) and that content (no phantoms);
//! * seqs come back strictly increasing; the epoch strictly increases at each open;
//! * the recovered cursor never exceeds what was acknowledged, and after a kill it equals it.

mod common;

use buffer::fs::{CutMode, MemFs};
use buffer::reader::{ReadBatch, RecKind};
use buffer::{Log, LogConfig, Reader, SyncPolicy};
use common::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
enum Op {
    Append { n: u8, size: u16 },
    Flush,
    Tick { ms: u16 },
    Read { n: u8 },
    Ack { frac: u8 },
    Kill,
    PowerCut { torn: Option<u64> },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u8..40, 0u16..700).prop_map(|(n, size)| Op::Append { n, size }),
        2 => Just(Op::Flush),
        2 => (0u16..3000).prop_map(|ms| Op::Tick { ms }),
        3 => (1u8..100).prop_map(|n| Op::Read { n }),
        2 => (0u8..=100).prop_map(|frac| Op::Ack { frac }),
        1 => Just(Op::Kill),
        1 => proptest::option::of(any::<u64>()).prop_map(|torn| Op::PowerCut { torn }),
    ]
}

struct World {
    fs: MemFs,
    cfg: LogConfig,
    origin: Instant,
    t: u64,
    log: Option<Log>,
    reader: Option<Reader>,
    epoch: u32,
    /// Every record ever appended: (epoch, seq) → payload length.
    appended: HashMap<(u32, u64), usize>,
    /// Records by seq with (epoch, len), in the current incarnation not yet known durable.
    pending: BTreeMap<u64, (u32, usize)>,
    /// Records known durable.
    durable: BTreeMap<u64, (u32, usize)>,
    /// Records known written (survive a process kill).
    written: BTreeMap<u64, (u32, usize)>,
    last_read: u64,
    acked: u64,
}

impl World {
    fn new(sync: SyncPolicy) -> Self {
        let mut cfg = small_cfg();
        cfg.sync = sync;
        cfg.cursor_sync = Duration::from_millis(500);
        let mut w = World {
            fs: MemFs::new(),
            cfg,
            origin: Instant::now(),
            t: 0,
            log: None,
            reader: None,
            epoch: 0,
            appended: HashMap::new(),
            pending: BTreeMap::new(),
            durable: BTreeMap::new(),
            written: BTreeMap::new(),
            last_read: 0,
            acked: 0,
        };
        w.reopen(true);
        w
    }

    fn now(&self) -> buffer::Now {
        at(self.origin, self.t)
    }

    fn log(&mut self) -> &mut Log {
        self.log.as_mut().expect("open")
    }

    /// Moves records the log reports as written/durable into the model's sets.
    fn settle(&mut self) {
        let sh = self.log.as_ref().expect("open").shared().clone();
        let (w, d) = (sh.written(), sh.durable());
        for (&s, &v) in self.pending.range(..=w) {
            self.written.insert(s, v);
        }
        for (&s, &v) in self.pending.range(..=d) {
            self.durable.insert(s, v);
        }
        self.pending = self.pending.split_off(&(w + 1));
    }

    fn reopen(&mut self, killed: bool) {
        let (log, rec) = open(&self.fs, &self.cfg, self.now());
        assert!(
            rec.epoch > self.epoch,
            "epoch {} after {}",
            rec.epoch,
            self.epoch
        );
        self.epoch = rec.epoch;
        assert!(
            rec.acked <= self.acked,
            "cursor {} beyond acked {}",
            rec.acked,
            self.acked
        );
        if killed {
            assert_eq!(
                rec.acked, self.acked,
                "a process kill keeps the cursor slot"
            );
        }
        self.acked = rec.acked;
        let mut reader = Reader::new(log.shared().clone());
        let got = drain(&mut reader);
        let mut prev = rec.acked;
        for g in &got {
            assert!(g.seq > prev, "seq {} after {prev}", g.seq);
            prev = g.seq;
            if g.kind == RecKind::Data {
                let len = self.appended.get(&(g.epoch, g.seq));
                assert_eq!(
                    len,
                    Some(&g.payload.len()),
                    "phantom record {}/{}",
                    g.epoch,
                    g.seq
                );
                assert_eq!(g.payload, payload(g.epoch, g.seq, g.payload.len()));
            }
        }
        let must = if killed { &self.written } else { &self.durable };
        for (&s, &(e, _)) in must.range(rec.acked + 1..) {
            assert!(
                got.iter().any(|g| g.seq == s && g.epoch == e),
                "durable record {e}/{s} lost (acked {})",
                rec.acked
            );
        }
        assert!(rec.next_seq > prev.max(rec.acked));
        // What survived is now durable (recovery synced it) and delivered up to `prev`.
        self.durable.clear();
        self.written.clear();
        self.pending.clear();
        for g in got.iter().filter(|g| g.kind == RecKind::Data) {
            self.durable.insert(g.seq, (g.epoch, g.payload.len()));
            self.written.insert(g.seq, (g.epoch, g.payload.len()));
        }
        self.last_read = prev;
        self.log = Some(log);
        self.reader = Some(reader);
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Append { n, size } => {
                for _ in 0..n {
                    let seq = self.log().next_seq();
                    let p = payload(self.epoch, seq, size as usize);
                    let now = self.now();
                    let got = self.log().append(0, 1, b"", &p, now).expect("append");
                    assert_eq!(got, seq);
                    self.appended.insert((self.epoch, seq), p.len());
                    self.pending.insert(seq, (self.epoch, p.len()));
                }
                self.settle();
            }
            Op::Flush => {
                let now = self.now();
                self.log().flush(now).expect("flush");
                self.settle();
            }
            Op::Tick { ms } => {
                self.t += u64::from(ms);
                let now = self.now();
                self.log().tick(now).expect("tick");
                self.settle();
            }
            Op::Read { n } => {
                let mut b = ReadBatch::default();
                let r = self.reader.as_mut().expect("reader");
                r.read(&mut b, n as usize, 1 << 20).expect("read");
                for m in &b.recs {
                    assert!(m.seq > self.last_read);
                    self.last_read = m.seq;
                    assert!(m.seq <= self.log.as_ref().expect("open").shared().durable());
                    if m.kind == RecKind::Data {
                        assert_eq!(
                            self.appended.get(&(m.epoch, m.seq)),
                            Some(&b.payload(m).len())
                        );
                        assert_eq!(b.payload(m), payload(m.epoch, m.seq, b.payload(m).len()));
                    }
                }
            }
            Op::Ack { frac } => {
                let target = self.acked
                    + (self.last_read.saturating_sub(self.acked)) * u64::from(frac) / 100;
                if target > self.acked {
                    self.log.as_ref().expect("open").shared().ack(target);
                    self.acked = target;
                }
            }
            Op::Kill => {
                self.reader = None;
                self.log = None;
                self.reopen(true);
            }
            Op::PowerCut { torn } => {
                self.reader = None;
                self.log = None;
                self.fs.power_cut(match torn {
                    Some(seed) => CutMode::Torn(seed),
                    None => CutMode::DropUnsynced,
                });
                self.reopen(false);
            }
        }
    }
}

fn run(sync: SyncPolicy, ops: &[Op]) {
    let mut w = World::new(sync);
    for op in ops {
        if sync == SyncPolicy::Never && matches!(op, Op::PowerCut { .. }) {
            // Without fdatasync nothing is promised across a power cut.
            continue;
        }
        w.apply(op);
    }
    // Final kill and check.
    w.apply(&Op::Kill);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn batched_policy_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(SyncPolicy::Batched, &ops);
    }

    #[test]
    fn interval_policy_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(SyncPolicy::Interval(Duration::from_millis(700)), &ops);
    }

    #[test]
    fn never_policy_survives_kills(ops in proptest::collection::vec(op(), 1..60)) {
        run(SyncPolicy::Never, &ops);
    }
}
