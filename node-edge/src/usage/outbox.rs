//! The usage outbox: samples the master has not acknowledged yet, on disk.
//!
//! Files, in `<state_dir>/usage/`:
//!
//! * `outbox`: one [`Record`] a line, oldest first, fields separated by one space:
//!   `partition start_ms end_ms cpu_ns memory_bytes memory_peak_bytes io_read_bytes
//!   io_write_bytes disk_bytes tasks folded cursor.end_ms cursor.cpu_ns cursor.io_read_bytes
//!   cursor.io_write_bytes[ instance]` (the instance title, which has no control character and
//!   no leading space, is the rest of the line; absent for a free partition). A period's
//!   records are appended with one `write` and one `fdatasync` before anything is sent, so a
//!   sample survives a master outage and a node restart or power cut while offline.
//! * `cursors`: each partition's [`Cursor`] (end of its last sample and the cgroup counters
//!   it was measured against), one `partition end_ms cpu_ns io_read_bytes io_write_bytes` a
//!   line, written (write-then-rename) before the outbox is rewritten.
//!
//! Plain text rather than JSON: no deserializer is compiled into the size-bound static node.
//!
//! Rules:
//!
//! * **Cursor**: a partition's cursor is the one of its newest record in the outbox, else the
//!   one in `cursors`. Each record carries the cursor it ends at, so the pair is consistent
//!   whatever point a crash hits: a restarted node starts the next period at the last durable
//!   end and measures deltas against the counters of that moment. Periods are never
//!   re-numbered, so a resend is deduplicated by the master on `(computer, partition,
//!   start_ms)`, and consecutive samples of a partition tile time without overlap.
//! * **Acknowledged**: [`Outbox::ack`] drops the first `n` records (exactly the batch the
//!   master acknowledged: only the sampler task touches the outbox, so nothing moves in
//!   between); [`Outbox::compact`] then writes the cursor file and rewrites the outbox.
//! * **Bounded**: beyond `max` records, [`fold`] sums the oldest samples of each partition
//!   (same instance, in order) until `3/4 · max` are left: CPU and I/O are summed, memory and
//!   disk averaged over time (their byte·time integrals kept), the peak is the maximum,
//!   `folded` counts the samples, `start_ms` is the first's and `end_ms` the last's.
//! * **Torn tail**: a line that does not parse is skipped with a warning; the file is then
//!   rewritten without it, so a torn last write never stops the node.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use slapos_proto::{InstanceTitle, PartitionId, UsageSample};

/// An outbox operation failed.
#[derive(Debug, thiserror::Error)]
#[error("usage outbox: failed to {op} `{}`: {source}", path.display())]
pub struct OutboxError {
    /// What was attempted.
    pub op: &'static str,
    /// The file.
    pub path: PathBuf,
    /// Cause.
    #[source]
    pub source: std::io::Error,
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> OutboxError + 'a {
    move |source| OutboxError {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Where a partition's measurement stands: the end of its last sample and the cumulative
/// counters read then (absent counters are 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    /// End of the last sample, unix ms.
    pub end_ms: u64,
    /// CPU counter, ns.
    pub cpu_ns: u64,
    /// Bytes read counter.
    pub io_read_bytes: u64,
    /// Bytes written counter.
    pub io_write_bytes: u64,
}

/// One line of the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The sample.
    pub s: UsageSample,
    /// The cursor after it.
    pub c: Cursor,
}

/// What one [`fold`] did, for the warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Folded {
    /// Records merged away.
    pub merged: usize,
    /// Earliest start among them, unix ms.
    pub from_ms: u64,
    /// Latest end among them, unix ms.
    pub to_ms: u64,
}

/// The on-disk outbox (see the module doc).
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    file: File,
    records: Vec<Record>,
    /// Sorted by partition (plain vectors: no new map type in the size-bound node).
    cursors: Vec<(PartitionId, Cursor)>,
    max: usize,
    dirty: bool,
}

const OUTBOX: &str = "outbox";
const CURSORS: &str = "cursors";

impl Record {
    /// The record's line (with its `\n`).
    pub fn to_line(&self, out: &mut String) {
        use std::fmt::Write as _;
        let (s, c) = (&self.s, &self.c);
        let _ = write!(
            out,
            "{} {} {} {} {} {} {} {} {} {} {} {} {} {} {}",
            s.partition,
            s.start_ms,
            s.end_ms,
            s.cpu_ns,
            s.memory_bytes,
            s.memory_peak_bytes,
            s.io_read_bytes,
            s.io_write_bytes,
            s.disk_bytes,
            s.tasks,
            s.folded,
            c.end_ms,
            c.cpu_ns,
            c.io_read_bytes,
            c.io_write_bytes
        );
        if let Some(t) = &s.instance {
            out.push(' ');
            out.push_str(t.as_str());
        }
        out.push('\n');
    }

    /// Parse a line written by [`Record::to_line`] (without its `\n`); `None` when it is not one.
    pub fn parse(line: &str) -> Option<Self> {
        let mut f = line.splitn(16, ' ');
        let partition = PartitionId::parse(f.next()?).ok()?;
        let mut n = [0u64; 14];
        for v in &mut n {
            *v = f.next()?.parse().ok()?;
        }
        let instance = f.next().map(InstanceTitle::parse).transpose().ok()?;
        let s = UsageSample {
            partition,
            instance,
            start_ms: n[0],
            end_ms: n[1],
            cpu_ns: n[2],
            memory_bytes: n[3],
            memory_peak_bytes: n[4],
            io_read_bytes: n[5],
            io_write_bytes: n[6],
            disk_bytes: n[7],
            tasks: n[8],
            folded: u32::try_from(n[9]).ok().filter(|f| *f > 0)?,
        };
        let c = Cursor {
            end_ms: n[10],
            cpu_ns: n[11],
            io_read_bytes: n[12],
            io_write_bytes: n[13],
        };
        (s.end_ms > s.start_ms).then_some(Self { s, c })
    }
}

fn cursor_line(p: &PartitionId, c: &Cursor, out: &mut String) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "{p} {} {} {} {}",
        c.end_ms, c.cpu_ns, c.io_read_bytes, c.io_write_bytes
    );
}

fn parse_cursor(line: &str) -> Option<(PartitionId, Cursor)> {
    let mut f = line.split(' ');
    let p = PartitionId::parse(f.next()?).ok()?;
    let mut n = [0u64; 4];
    for v in &mut n {
        *v = f.next()?.parse().ok()?;
    }
    let c = Cursor {
        end_ms: n[0],
        cpu_ns: n[1],
        io_read_bytes: n[2],
        io_write_bytes: n[3],
    };
    f.next().is_none().then_some((p, c))
}

impl Outbox {
    /// Open (or create) the outbox in `dir`, holding at most `max` records. Unreadable lines
    /// and an unreadable cursor file are warned about and skipped, never fatal.
    pub fn open(dir: &Path, max: usize) -> Result<Self, OutboxError> {
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        let cpath = dir.join(CURSORS);
        let mut cursors = Vec::new();
        match std::fs::read(&cpath) {
            Ok(b) => {
                for line in String::from_utf8_lossy(&b).lines() {
                    match parse_cursor(line) {
                        Some((p, c)) => set(&mut cursors, &p, c),
                        None => super::warn(format_args!(
                            "unreadable line in `{}` ignored: {line:?}",
                            cpath.display()
                        )),
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("read", &cpath)(e)),
        }
        let opath = dir.join(OUTBOX);
        let text = match std::fs::read(&opath) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io("read", &opath)(e)),
        };
        let mut records = Vec::new();
        let mut bad = 0usize;
        for line in String::from_utf8_lossy(&text).lines() {
            match Record::parse(line) {
                Some(r) => records.push(r),
                None => bad += 1,
            }
        }
        for r in &records {
            if get(&cursors, &r.s.partition).is_none_or(|c| r.c.end_ms >= c.end_ms) {
                set(&mut cursors, &r.s.partition, r.c);
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&opath)
            .map_err(io("open", &opath))?;
        let mut o = Self {
            dir: dir.to_path_buf(),
            file,
            records,
            cursors,
            max,
            dirty: false,
        };
        if bad > 0 {
            super::warn(format_args!(
                "{bad} unreadable line(s) in `{}` (a torn write) skipped; {} sample(s) kept",
                opath.display(),
                o.records.len()
            ));
            o.dirty = true;
            o.compact()?;
        }
        Ok(o)
    }

    /// Samples waiting.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Where `p`'s measurement stands (`None`: never measured).
    pub fn cursor(&self, p: &PartitionId) -> Option<Cursor> {
        get(&self.cursors, p)
    }

    /// Set `p`'s cursor without a sample (the first reading: a baseline). Kept in memory until
    /// the next [`Outbox::compact`] or appended record.
    pub fn set_cursor(&mut self, p: &PartitionId, c: Cursor) {
        set(&mut self.cursors, p, c);
        self.dirty = true;
    }

    /// Append `records` durably (one write, one fdatasync), then fold when over the bound.
    pub fn append(&mut self, records: Vec<Record>) -> Result<Option<Folded>, OutboxError> {
        if records.is_empty() {
            return Ok(None);
        }
        let mut buf = String::new();
        for r in &records {
            r.to_line(&mut buf);
        }
        let path = self.dir.join(OUTBOX);
        self.file
            .write_all(buf.as_bytes())
            .map_err(io("append to", &path))?;
        self.file.sync_data().map_err(io("sync", &path))?;
        for r in records {
            set(&mut self.cursors, &r.s.partition, r.c);
            self.records.push(r);
        }
        if self.records.len() <= self.max {
            return Ok(None);
        }
        let f = fold(&mut self.records, self.max * 3 / 4);
        self.dirty = true;
        self.compact()?;
        Ok(Some(f))
    }

    /// The oldest `n` samples (a batch to send).
    pub fn front(&self, n: usize) -> Vec<UsageSample> {
        self.records.iter().take(n).map(|r| r.s.clone()).collect()
    }

    /// The master acknowledged the first `n` samples: drop them (on disk at the next
    /// [`Outbox::compact`]; a crash before it only resends them, which the master dedups).
    pub fn ack(&mut self, n: usize) {
        let n = n.min(self.records.len());
        self.records.drain(..n);
        self.dirty |= n > 0;
    }

    /// Write the cursor file, then rewrite the outbox with what is left (both atomic renames).
    pub fn compact(&mut self) -> Result<(), OutboxError> {
        if !self.dirty {
            return Ok(());
        }
        let cpath = self.dir.join(CURSORS);
        let mut cursors = String::new();
        for (p, c) in &self.cursors {
            cursor_line(p, c, &mut cursors);
        }
        crate::util::atomic_write(&cpath, cursors.as_bytes()).map_err(io("write", &cpath))?;
        let opath = self.dir.join(OUTBOX);
        let mut buf = String::new();
        for r in &self.records {
            r.to_line(&mut buf);
        }
        crate::util::atomic_write(&opath, buf.as_bytes()).map_err(io("rewrite", &opath))?;
        self.file = std::fs::OpenOptions::new()
            .append(true)
            .open(&opath)
            .map_err(io("open", &opath))?;
        self.dirty = false;
        Ok(())
    }
}

fn get(cursors: &[(PartitionId, Cursor)], p: &PartitionId) -> Option<Cursor> {
    let i = cursors.binary_search_by(|(q, _)| q.cmp(p)).ok()?;
    Some(cursors[i].1)
}

fn set(cursors: &mut Vec<(PartitionId, Cursor)>, p: &PartitionId, c: Cursor) {
    match cursors.binary_search_by(|(q, _)| q.cmp(p)) {
        Ok(i) => cursors[i].1 = c,
        Err(i) => cursors.insert(i, (p.clone(), c)),
    }
}

/// Merge the oldest records of each partition until `target` are left (see the module doc).
/// Pure; the order of what is left is kept (a merged record sits where its first was).
pub fn fold(records: &mut Vec<Record>, target: usize) -> Folded {
    let mut f = Folded {
        merged: 0,
        from_ms: u64::MAX,
        to_ms: 0,
    };
    let mut excess = records.len().saturating_sub(target);
    let mut out: Vec<Record> = Vec::with_capacity(records.len());
    // The index in `out` of each partition's last record, sorted by partition.
    let mut last: Vec<(PartitionId, usize)> = Vec::new();
    for r in records.drain(..) {
        let at = last.binary_search_by(|(q, _)| q.cmp(&r.s.partition));
        if excess > 0
            && let Ok(k) = at
            && let i = last[k].1
            && out[i].s.instance == r.s.instance
        {
            f.from_ms = f.from_ms.min(out[i].s.start_ms);
            f.to_ms = f.to_ms.max(r.s.end_ms);
            merge(&mut out[i], r);
            f.merged += 1;
            excess -= 1;
            continue;
        }
        match at {
            Ok(k) => last[k].1 = out.len(),
            Err(k) => last.insert(k, (r.s.partition.clone(), out.len())),
        }
        out.push(r);
    }
    records.extend(out);
    if f.merged == 0 {
        f.from_ms = 0;
    }
    f
}

/// `b` (later) summed into `a`.
fn merge(a: &mut Record, b: Record) {
    let (x, y) = (&mut a.s, b.s);
    let da = u128::from(x.end_ms.saturating_sub(x.start_ms));
    let db = u128::from(y.end_ms.saturating_sub(y.start_ms));
    let span = u128::from(y.end_ms.max(x.end_ms).saturating_sub(x.start_ms)).max(1);
    // Means over the whole span that keep each byte·time integral.
    let mean = |p: u64, q: u64| {
        u64::try_from((u128::from(p) * da + u128::from(q) * db) / span).unwrap_or(u64::MAX)
    };
    x.memory_bytes = mean(x.memory_bytes, y.memory_bytes);
    x.disk_bytes = mean(x.disk_bytes, y.disk_bytes);
    x.memory_peak_bytes = x.memory_peak_bytes.max(y.memory_peak_bytes);
    x.cpu_ns = x.cpu_ns.saturating_add(y.cpu_ns);
    x.io_read_bytes = x.io_read_bytes.saturating_add(y.io_read_bytes);
    x.io_write_bytes = x.io_write_bytes.saturating_add(y.io_write_bytes);
    x.end_ms = x.end_ms.max(y.end_ms);
    x.tasks = y.tasks;
    x.folded = x.folded.saturating_add(y.folded);
    a.c = b.c;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: u32) -> PartitionId {
        PartitionId::parse(format!("slappart{n}")).unwrap()
    }

    fn rec(part: u32, start: u64, end: u64, cpu: u64) -> Record {
        Record {
            s: UsageSample {
                partition: p(part),
                instance: None,
                start_ms: start,
                end_ms: end,
                cpu_ns: cpu,
                memory_bytes: 100,
                memory_peak_bytes: cpu,
                io_read_bytes: 1,
                io_write_bytes: 2,
                disk_bytes: 1000,
                tasks: 3,
                folded: 1,
            },
            c: Cursor {
                end_ms: end,
                cpu_ns: cpu,
                ..Cursor::default()
            },
        }
    }

    #[test]
    fn appended_samples_and_cursors_survive_a_reopen_until_acked() {
        let d = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(d.path(), 100).unwrap();
        assert!(o.is_empty() && o.cursor(&p(0)).is_none());
        o.append(vec![rec(0, 0, 10, 5), rec(1, 0, 10, 7)]).unwrap();
        o.append(vec![rec(0, 10, 20, 6)]).unwrap();
        drop(o);
        let mut o = Outbox::open(d.path(), 100).unwrap();
        assert_eq!(o.len(), 3);
        assert_eq!(o.cursor(&p(0)).unwrap().end_ms, 20);
        assert_eq!(o.front(2)[1].partition, p(1));
        // The acked ones go; the cursors stay although their records are gone.
        o.ack(2);
        o.compact().unwrap();
        drop(o);
        let mut o = Outbox::open(d.path(), 100).unwrap();
        assert_eq!(o.len(), 1);
        assert_eq!(o.front(5)[0].start_ms, 10);
        o.ack(1);
        o.compact().unwrap();
        let o = Outbox::open(d.path(), 100).unwrap();
        assert!(o.is_empty());
        assert_eq!(o.cursor(&p(0)).unwrap().end_ms, 20);
        assert_eq!(o.cursor(&p(1)).unwrap().cpu_ns, 7);
    }

    #[test]
    fn lines_round_trip_and_nonsense_is_refused() {
        let mut r = rec(3, 5, 9, 77);
        r.s.instance = Some(slapos_proto::InstanceTitle::parse("my web site").unwrap());
        r.s.folded = 4;
        for r in [r.clone(), rec(0, 0, 1, 0)] {
            let mut line = String::new();
            r.to_line(&mut line);
            assert!(
                line.ends_with('\n') && line.matches('\n').count() == 1,
                "{line:?}"
            );
            assert_eq!(Record::parse(line.trim_end_matches('\n')), Some(r));
        }
        let ok = "slappart0 0 1 2 3 4 5 6 7 8 1 1 2 5 6";
        assert!(Record::parse(ok).is_some());
        for bad in [
            "",
            "slappart0 0 1 2 3 4 5 6 7 8 1 1 2 5",    // short
            "slappart0 0 1 2 3 4 5 6 7 8 0 1 2 5 6",  // folded 0
            "slappart0 5 5 2 3 4 5 6 7 8 1 1 2 5 6",  // empty period
            "../x 0 1 2 3 4 5 6 7 8 1 1 2 5 6",       // not an id
            "slappart0 0 1 -2 3 4 5 6 7 8 1 1 2 5 6", // not a number
            "slappart0 0 1 2 3 4 5 6 7 8 1 1 2 5 6  lead", // a title cannot start with a space
        ] {
            assert_eq!(Record::parse(bad), None, "{bad:?}");
        }
        assert_eq!(parse_cursor("slappart1 1 2 3 4 5"), None);
        let mut l = String::new();
        cursor_line(&p(1), &rec(1, 0, 7, 3).c, &mut l);
        assert_eq!(parse_cursor(l.trim_end()), Some((p(1), rec(1, 0, 7, 3).c)));
    }

    #[test]
    fn a_baseline_cursor_is_kept_by_compact() {
        let d = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(d.path(), 100).unwrap();
        let c = Cursor {
            end_ms: 42,
            cpu_ns: 9,
            ..Cursor::default()
        };
        o.set_cursor(&p(2), c);
        o.compact().unwrap();
        assert_eq!(Outbox::open(d.path(), 100).unwrap().cursor(&p(2)), Some(c));
    }

    #[test]
    fn a_torn_tail_is_skipped_and_appends_go_on() {
        let d = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(d.path(), 100).unwrap();
        o.append(vec![rec(0, 0, 10, 5), rec(0, 10, 20, 6)]).unwrap();
        drop(o);
        let f = d.path().join(OUTBOX);
        let mut bytes = std::fs::read(&f).unwrap();
        bytes.extend_from_slice(b"slappart0 30 40 1");
        std::fs::write(&f, &bytes).unwrap();
        let mut o = Outbox::open(d.path(), 100).unwrap();
        assert_eq!(o.len(), 2);
        o.append(vec![rec(0, 20, 30, 7)]).unwrap();
        drop(o);
        let o = Outbox::open(d.path(), 100).unwrap();
        assert_eq!(o.len(), 3);
        assert_eq!(o.cursor(&p(0)).unwrap().end_ms, 30);
        // A garbage cursor file is not fatal either.
        std::fs::write(d.path().join(CURSORS), b"\0\0").unwrap();
        assert_eq!(Outbox::open(d.path(), 100).unwrap().len(), 3);
    }

    #[test]
    fn a_full_outbox_folds_the_oldest_samples_per_partition() {
        let d = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(d.path(), 8).unwrap();
        for i in 0..4u64 {
            let r = o
                .append(vec![
                    rec(0, i * 10, i * 10 + 10, 1),
                    rec(1, i * 10, i * 10 + 10, 2),
                ])
                .unwrap();
            assert!(r.is_none());
        }
        // The 9th and 10th overflow 8: folded down to 6.
        let f = o
            .append(vec![rec(0, 40, 50, 1), rec(1, 40, 50, 2)])
            .unwrap()
            .unwrap();
        assert_eq!(f.merged, 4);
        assert_eq!((f.from_ms, f.to_ms), (0, 30));
        let all = o.front(100);
        assert_eq!(all.len(), 6);
        let p0: Vec<&UsageSample> = all.iter().filter(|s| s.partition == p(0)).collect();
        assert_eq!(
            p0.iter()
                .map(|s| (s.start_ms, s.end_ms, s.folded))
                .collect::<Vec<_>>(),
            [(0, 30, 3), (30, 40, 1), (40, 50, 1)]
        );
        assert_eq!(p0[0].cpu_ns, 3);
        assert_eq!(p0[0].memory_bytes, 100);
        // Nothing lost: every period and every nanosecond is still there, and on disk.
        let total: u64 = all.iter().map(|s| s.cpu_ns).sum();
        let folded: u32 = all.iter().map(|s| s.folded).sum();
        assert_eq!((total, folded), (15, 10));
        drop(o);
        assert_eq!(Outbox::open(d.path(), 8).unwrap().front(100), all);
    }

    #[test]
    fn folding_keeps_byte_time_integrals_and_instances_apart() {
        let mut a = rec(0, 0, 10, 1);
        a.s.memory_bytes = 100;
        let mut b = rec(0, 10, 40, 1);
        b.s.memory_bytes = 500;
        b.s.memory_peak_bytes = 900;
        merge(&mut a, b);
        // 100·10 + 500·30 over 40.
        assert_eq!(a.s.memory_bytes, 400);
        assert_eq!(a.s.memory_peak_bytes, 900);
        let mut q: Vec<Record> = Vec::new();
        let mut other = rec(0, 10, 20, 1);
        other.s.instance = Some(slapos_proto::InstanceTitle::parse("web").unwrap());
        q.extend([rec(0, 0, 10, 1), other, rec(0, 20, 30, 1)]);
        let f = fold(&mut q, 1);
        // Another instance in between: nothing is merged across it.
        assert_eq!((f.merged, f.from_ms, f.to_ms), (0, 0, 0));
        assert_eq!(q.len(), 3);
        q.push(rec(0, 30, 40, 1));
        assert_eq!(fold(&mut q, 1).merged, 1);
        assert_eq!(q.last().unwrap().s.end_ms, 40);
    }
}
