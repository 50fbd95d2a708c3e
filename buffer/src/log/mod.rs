//! The segment log: the single-writer core ([`Log`]) and the state it shares with readers and
//! the output ([`Shared`]). No threads and no clock of its own: time comes in as [`Now`].
//!
//! * this file: the configuration, the shared state and cursor, and the writer's steady state
//!   (append, group commit in [`Log::flush`], segment roll, retention in [`Log::tick`]);
//! * `recovery.rs`: [`Log::open_with`], which recovers a log left by a crash or a power cut;
//! * `budget.rs`: a full log, dropping the oldest segment and recording its gaps.

use crate::codec::{
    FrameEncoder, GapReason, GapV1, MAX_RECORD_LEN, {self},
};
use crate::dedupe::{Dedupe, Origin};
use crate::fs::{Fs, FsFile, FsLock};
use crate::gaps::GapBook;
use crate::metrics::{Gauges, Metrics};
use crate::segment::{self, CURSOR_LEN, CursorSlot, SEG_HEADER_LEN, encode_seg_header, seg_name};
use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod budget;
mod recovery;

pub use recovery::Recovery;

/// When segments are fdatasync'd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Group commit: each batch (closed by size or window) is written then fdatasync'd.
    Batched,
    /// Batches are written as they close; fdatasync every interval.
    Interval(Duration),
    /// Never fdatasync ("durable" = in the page cache).
    Never,
}

/// What happens when a limit would be exceeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FullPolicy {
    /// Delete the oldest whole segment (default).
    DropOldest,
    /// Stop accepting until acknowledgements free space.
    Block,
    /// Drop the incoming batch.
    DropNewest,
}

/// Log configuration; [`LogConfig::new`] gives the documented defaults.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// Parent directory; the log lives in `dir/stream`.
    pub dir: PathBuf,
    /// Stream name (`[A-Za-z0-9_.-]{1,64}`, not starting with `.`).
    pub stream: String,
    /// Segment target size.
    pub segment_bytes: u64,
    /// Frame target size.
    pub frame_bytes: usize,
    /// A batch closes at this size.
    pub batch_bytes: usize,
    /// A batch closes this long after its first record.
    pub batch_window: Duration,
    /// Sync policy.
    pub sync: SyncPolicy,
    /// Disk budget: segments + cursor + meta.
    pub max_bytes: u64,
    /// Drop segments whose newest record is older.
    pub max_age: Option<Duration>,
    /// Keep at least this much free space on the filesystem.
    pub min_free_bytes: u64,
    /// Full policy.
    pub full_policy: FullPolicy,
    /// Cursor fdatasync interval.
    pub cursor_sync: Duration,
    /// Node id for delivery ids (default: META's random id).
    pub node_id: Option<String>,
}

impl LogConfig {
    /// Defaults: 16 MiB segments, 8 KiB frames, 1 MiB / 100 ms batches, `Batched`, 256 MiB,
    /// no age limit, 0 free-space floor, `DropOldest`, 1 s cursor sync.
    pub fn new(dir: impl Into<PathBuf>, stream: impl Into<String>) -> Self {
        LogConfig {
            dir: dir.into(),
            stream: stream.into(),
            segment_bytes: 16 << 20,
            frame_bytes: 8 << 10,
            batch_bytes: 1 << 20,
            batch_window: Duration::from_millis(100),
            sync: SyncPolicy::Batched,
            max_bytes: 256 << 20,
            max_age: None,
            min_free_bytes: 0,
            full_policy: FullPolicy::DropOldest,
            cursor_sync: Duration::from_secs(1),
            node_id: None,
        }
    }

    /// Segment size actually used: at most a quarter of `max_bytes`, at least 64 KiB.
    pub fn effective_segment_bytes(&self) -> u64 {
        self.segment_bytes.min(self.max_bytes / 4).max(64 << 10)
    }

    /// The stream directory.
    pub fn stream_dir(&self) -> PathBuf {
        self.dir.join(&self.stream)
    }
}

/// Errors of the log. I/O errors carry the operation and the path.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Stream name not allowed (it becomes a directory name).
    #[error("invalid stream name `{0}`: use 1-64 of [A-Za-z0-9_.-], not starting with `.`")]
    BadStream(String),
    /// Another process has the log open.
    #[error("log `{0}` is locked by another process")]
    Locked(PathBuf),
    /// An I/O operation failed.
    #[error("failed to {op} `{path}`: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A record is too large.
    #[error("record of {len} bytes exceeds the maximum of {MAX_RECORD_LEN}")]
    TooLarge {
        /// Key + payload bytes.
        len: usize,
    },
    /// The `block` policy (or a failing disk) stops new records.
    #[error("log `{0}` is full or failing; not accepting records")]
    Blocked(PathBuf),
}

fn ioe(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> LogError + use<> {
    let path = path.to_path_buf();
    move |source| LogError::Io { op, path, source }
}

/// Monotonic and wall-clock time, passed in by the caller.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    /// For windows and intervals.
    pub mono: Instant,
    /// Unix milliseconds, for record and segment timestamps.
    pub wall_ms: i64,
}

impl Now {
    /// The system clocks.
    pub fn system() -> Self {
        Now {
            mono: Instant::now(),
            wall_ms: unix_ms(),
        }
    }
}

/// Unix time in ms.
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Shared state.

struct Cursor {
    file: Box<dyn FsFile>,
    slot: CursorSlot,
    /// Index (0/1) of the slot to write next.
    next: u64,
    synced_acked: u64,
    dirty: bool,
}

impl Cursor {
    /// Writes the next slot: `acked` and the current ledger (no sync).
    fn write(&mut self, acked: u64) -> io::Result<()> {
        let prev = (self.slot.generation, self.slot.acked);
        self.slot.generation += 1;
        self.slot.acked = acked;
        if let Err(e) = self.file.write_all_at(&self.slot.encode(), self.next * 512) {
            (self.slot.generation, self.slot.acked) = prev;
            return Err(e);
        }
        self.next ^= 1;
        self.dirty = true;
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        if self.dirty {
            self.file.sync_data()?;
            self.dirty = false;
            self.synced_acked = self.slot.acked;
        }
        Ok(())
    }
}

/// Segment list entry visible to readers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegEntry {
    /// First seq.
    pub base: u64,
    /// Bytes.
    pub len: u64,
}

/// State shared by the writer, readers and the output.
pub struct Shared {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    /// Node id of delivery ids.
    pub node_id: String,
    /// Stream name.
    pub stream: String,
    /// This incarnation's epoch.
    pub epoch: u32,
    durable: AtomicU64,
    written: AtomicU64,
    acked: AtomicU64,
    segs: Mutex<Vec<SegEntry>>,
    cursor: Mutex<Cursor>,
    /// Counters.
    pub metrics: Metrics,
    wake: (Mutex<u64>, Condvar),
    durable_tx: tokio::sync::watch::Sender<u64>,
    /// Highest seq whose corruption was already counted (readers re-read after reconnects).
    corrupt_counted: AtomicU64,
    /// Gaps waiting for the upstream (a copy of the ledger's count, for cheap polling).
    gaps_waiting: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// The filesystem.
    pub fn fs(&self) -> &Arc<dyn Fs> {
        &self.fs
    }
    /// The stream directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// Highest durable seq (readers stop there).
    pub fn durable(&self) -> u64 {
        self.durable.load(Relaxed)
    }
    /// Highest written seq.
    pub fn written(&self) -> u64 {
        self.written.load(Relaxed)
    }
    /// Highest acknowledged seq.
    pub fn acked(&self) -> u64 {
        self.acked.load(Relaxed)
    }
    /// A watch of the durable seq, for async waiters.
    pub fn subscribe_durable(&self) -> tokio::sync::watch::Receiver<u64> {
        self.durable_tx.subscribe()
    }
    /// Snapshot of the segment list.
    pub fn segments(&self) -> Vec<SegEntry> {
        lock(&self.segs).clone()
    }

    fn set_durable(&self, seq: u64) {
        let prev = self.durable.fetch_max(seq, Relaxed);
        if seq > prev {
            self.durable_tx.send_replace(seq);
            self.notify();
        }
    }

    fn notify(&self) {
        let (m, c) = &self.wake;
        *lock(m) += 1;
        c.notify_all();
    }

    /// Blocks until the durable seq reaches `seq` or `timeout` passes; returns whether it did.
    pub fn wait_durable(&self, seq: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (m, c) = &self.wake;
        let mut g = lock(m);
        while self.durable() < seq {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            g = c.wait_timeout(g, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        true
    }

    /// Blocks until something changes (durable or acked) or `timeout`.
    pub fn wait_change(&self, timeout: Duration) {
        let (m, c) = &self.wake;
        let g = lock(m);
        let seen = *g;
        let _ = c.wait_timeout_while(g, timeout, |v| *v == seen);
    }

    /// Acknowledges every seq ≤ `seq`: the cursor slot is written (not synced) at once, so a
    /// process crash keeps it; the writer fdatasyncs it periodically and before deletions.
    pub fn ack(&self, seq: u64) {
        let prev = self.acked.fetch_max(seq, Relaxed);
        if seq <= prev {
            return;
        }
        let mut c = lock(&self.cursor);
        if seq > c.slot.acked && c.write(seq).is_err() {
            self.metrics.io_errors.fetch_add(1, Relaxed);
        }
        drop(c);
        self.notify();
    }

    /// Moves the cursor to at least `seq` and makes it durable.
    fn ack_durable(&self, seq: u64) -> io::Result<()> {
        let mut c = lock(&self.cursor);
        if seq > c.slot.acked {
            c.write(seq)?;
        }
        if c.synced_acked < seq || c.dirty {
            c.sync()?;
        }
        self.acked.fetch_max(seq, Relaxed);
        Ok(())
    }

    fn sync_cursor(&self) -> io::Result<()> {
        lock(&self.cursor).sync()
    }

    /// Applies `f` to a copy of the gap ledger (with the acknowledged seq as of now) and makes
    /// it the cursor slot's (with the cursor moved to at least `acked`), fdatasync'd if `sync`;
    /// on success the copy replaces the ledger and the metrics' drop counters follow it.
    /// `Ok(false)`: `f` refused (the ledger cannot take the drop), nothing changed.
    fn update_book(
        &self,
        acked: u64,
        sync: bool,
        f: impl FnOnce(&mut GapBook, u64) -> bool,
    ) -> io::Result<bool> {
        let mut c = lock(&self.cursor);
        let mut book = c.slot.book.clone();
        // What is acknowledged by now (a record still in flight counts as dropped).
        if !f(&mut book, self.acked().max(c.slot.acked)) {
            return Ok(false);
        }
        let old = std::mem::replace(&mut c.slot.book, book);
        let acked = acked.max(c.slot.acked);
        let r = c
            .write(acked)
            .and_then(|_| if sync { c.sync() } else { Ok(()) });
        if let Err(e) = r {
            c.slot.book = old;
            return Err(e);
        }
        self.acked.fetch_max(acked, Relaxed);
        self.publish_book(&c.slot.book);
        drop(c);
        // Outputs waiting for news learn there is a gap to send.
        self.durable_tx.send_modify(|_| {});
        self.notify();
        Ok(true)
    }

    fn publish_book(&self, book: &GapBook) {
        let m = &self.metrics;
        let (records, bytes) = (book.dropped_records(), book.dropped_bytes());
        for i in 0..6 {
            m.dropped_records[i].store(records[i], Relaxed);
            m.dropped_bytes[i].store(bytes[i], Relaxed);
        }
        self.gaps_waiting.store(book.gaps().len(), Relaxed);
    }

    /// Gaps waiting for the upstream's acknowledgement.
    pub fn gaps_waiting(&self) -> usize {
        self.gaps_waiting.load(Relaxed)
    }

    /// The waiting gaps, oldest first: `(serial, gap)`; the delivery id of a gap is
    /// `node/stream/gap/<serial>`.
    pub fn gaps(&self) -> Vec<(u32, GapV1)> {
        lock(&self.cursor)
            .slot
            .book
            .gaps()
            .iter()
            .map(|g| (g.serial, g.gap))
            .collect()
    }

    /// An output is about to send gap `serial`: from now on its content never changes, and
    /// the cursor slot saying so is fdatasync'd first. The gap to send, or `None` when the
    /// upstream already acknowledged it.
    pub fn gap_out(&self, serial: u32) -> io::Result<Option<GapV1>> {
        let mut c = lock(&self.cursor);
        let Some((gap, changed)) = c.slot.book.fix(serial) else {
            return Ok(None);
        };
        if changed {
            let acked = c.slot.acked;
            c.write(acked)?;
            c.sync()?;
        }
        Ok(Some(gap))
    }

    /// The upstream acknowledged gap `serial`: it leaves the ledger (the slot is written, not
    /// synced: after a power cut the gap is at worst sent again, under the same id).
    pub fn ack_gap(&self, serial: u32) {
        let mut c = lock(&self.cursor);
        if c.slot.book.ack(serial) {
            let acked = c.slot.acked;
            if c.write(acked).is_err() {
                self.metrics.io_errors.fetch_add(1, Relaxed);
            }
            self.gaps_waiting.store(c.slot.book.gaps().len(), Relaxed);
        }
        drop(c);
        self.notify();
    }

    /// Counts corruption found by a reader once per seq range.
    pub fn count_corrupt(&self, up_to_seq: u64, records: u64, bytes: u64) {
        let prev = self.corrupt_counted.fetch_max(up_to_seq, Relaxed);
        if up_to_seq > prev {
            self.metrics.corrupt_records.fetch_add(records, Relaxed);
            self.metrics.corrupt_bytes.fetch_add(bytes, Relaxed);
        }
    }

    /// Gauges for metrics and status.
    pub fn gauges(&self, now_ms: i64) -> Gauges {
        let acked = self.acked();
        let written = self.written();
        let segs = self.segments();
        let mut backlog_bytes = 0;
        for (i, s) in segs.iter().enumerate() {
            let last = segs.get(i + 1).map(|n| n.base - 1).unwrap_or(u64::MAX);
            if last > acked {
                backlog_bytes += s.len;
            }
        }
        let oldest = self.metrics.oldest_unacked_ms.load(Relaxed);
        Gauges {
            written_seq: written,
            durable_seq: self.durable(),
            acked_seq: acked,
            backlog_records: written.saturating_sub(acked),
            backlog_bytes: if written > acked { backlog_bytes } else { 0 },
            oldest_unacked_age_s: if oldest > 0 && written > acked {
                (now_ms - oldest).max(0) as f64 / 1000.0
            } else {
                0.0
            },
            epoch: self.epoch,
            gaps_waiting: self.gaps_waiting() as u64,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The writer core.

struct Active {
    base: u64,
    file: Box<dyn FsFile>,
    len: u64,
    created_ms: i64,
    max_ts: i64,
    /// Data records and their payload bytes written by this incarnation.
    data_records: u64,
    payload_bytes: u64,
    /// Seq ranges of batches dropped before they were written (no record has these seqs).
    holes: Vec<(u64, u64)>,
}

#[derive(Clone, Debug)]
struct Sealed {
    base: u64,
    len: u64,
    created_ms: i64,
    data_records: u64,
    payload_bytes: u64,
    holes: Vec<(u64, u64)>,
}

/// What [`Log::append_with`] did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored under this seq.
    Stored(u64),
    /// A resend of the record stored under this seq: not stored again.
    Resend(u64),
}

/// Resend recognition is rebuilt at open from the newest this many bytes of the log (the
/// last segment, and the ends of the ones before while it holds less).
pub const DEDUPE_REBUILD_BYTES: u64 = 4 << 20;

/// Result of a flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Nothing to do.
    Empty,
    /// Batch written (and synced per policy).
    Written,
    /// Batch dropped by policy (counted, gap marker pending).
    Dropped,
    /// `block` policy: kept, not written.
    Blocked,
}

/// The single-writer log core.
pub struct Log {
    sh: Arc<Shared>,
    cfg: LogConfig,
    seg_bytes: u64,
    _lock: Box<dyn FsLock>,
    dir: PathBuf,
    active: Active,
    sealed: VecDeque<Sealed>,
    next_seq: u64,
    batch: Vec<u8>,
    frame: Option<FrameEncoder>,
    batch_first: u64,
    batch_records: u64,
    batch_payload: u64,
    batch_max_ts: i64,
    batch_min_ts: i64,
    batch_started: Option<Instant>,
    /// Segments with a base at or below this were written by an earlier incarnation: what
    /// they hold is read from the file when they are dropped.
    unknown_upto: u64,
    dedupe: Dedupe,
    written: u64,
    unsynced_records: u64,
    last_sync: Instant,
    last_cursor_sync: Instant,
    blocked: bool,
    retry_at: Option<Instant>,
    backoff: Duration,
    meta_len: u64,
    /// Oldest ingest time per sealed/active segment is unknown; this tracks the oldest
    /// unacknowledged record approximately: (first seq, ts) of written batches.
    batch_ts: VecDeque<(u64, i64)>,
}

impl Log {
    /// The shared state (for readers, the output and metrics).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.sh
    }

    /// The configuration.
    pub fn config(&self) -> &LogConfig {
        &self.cfg
    }

    /// Seq the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Bytes on disk by this log's accounting.
    pub fn disk_bytes(&self) -> u64 {
        self.sealed.iter().map(|s| s.len).sum::<u64>()
            + self.active.len
            + CURSOR_LEN
            + self.meta_len
    }

    /// Whether `append` would take a record now.
    pub fn accepting(&self) -> bool {
        !self.blocked && self.batch.len() < 2 * self.cfg.batch_bytes
    }

    /// Bytes in the open batch.
    pub fn batch_len(&self) -> usize {
        self.batch.len()
    }

    fn publish_sizes(&self) {
        let mut segs = lock(&self.sh.segs);
        segs.clear();
        segs.extend(self.sealed.iter().map(|s| SegEntry {
            base: s.base,
            len: s.len,
        }));
        segs.push(SegEntry {
            base: self.active.base,
            len: self.active.len,
        });
        let m = &self.sh.metrics;
        m.segments.store(segs.len() as u64, Relaxed);
        drop(segs);
        m.disk_bytes.store(self.disk_bytes(), Relaxed);
    }

    /// Adds a data record to the open batch and returns its seq; closes the batch when it is
    /// full. `Blocked` when the `block` policy holds a batch or writes keep failing.
    pub fn append(
        &mut self,
        ts_ms: i64,
        source: u16,
        key: &[u8],
        payload: &[u8],
        now: Now,
    ) -> Result<u64, LogError> {
        match self.append_with(ts_ms, source, key, payload, None, now)? {
            Appended::Stored(seq) | Appended::Resend(seq) => Ok(seq),
        }
    }

    /// [`Log::append`] for a record its producer identified (`origin`): a resend of a record
    /// the log holds is not stored again ([`Appended::Resend`] with the original's seq, whose
    /// durability the producer's acknowledgement then waits for; `crate::dedupe`).
    pub fn append_with(
        &mut self,
        ts_ms: i64,
        source: u16,
        key: &[u8],
        payload: &[u8],
        origin: Option<Origin>,
        now: Now,
    ) -> Result<Appended, LogError> {
        if let Some(o) = &origin
            && let Some(seq) = self.dedupe.original(source, key, payload, o)
        {
            self.sh.metrics.input_resends.fetch_add(1, Relaxed);
            return Ok(Appended::Resend(seq));
        }
        let id = origin.map(|o| o.id);
        if key.len() + payload.len() > MAX_RECORD_LEN {
            return Err(LogError::TooLarge {
                len: key.len() + payload.len(),
            });
        }
        if !self.accepting() {
            // Give the held batch a chance first.
            let _ = self.flush(now);
            if !self.accepting() {
                return Err(LogError::Blocked(self.dir.clone()));
            }
        }
        if let Some(f) = &self.frame {
            let cost = FrameEncoder::data_cost(key, payload, 0, source, id) + 10;
            if f.body_len(&self.batch) + cost > self.cfg.frame_bytes {
                self.close_frame();
            }
        }
        let seq = loop {
            if self.frame.is_none() {
                let enc = FrameEncoder::begin(&mut self.batch, self.next_seq, ts_ms, self.sh.epoch)
                    .map_err(|e| LogError::Io {
                        op: "encode frame for",
                        path: self.dir.clone(),
                        source: segment::codec_io(e),
                    })?;
                self.frame = Some(enc);
            }
            let Some(f) = self.frame.as_mut() else {
                continue;
            };
            match f.push_data_with(&mut self.batch, ts_ms, source, key, payload, id) {
                Ok(seq) => break seq,
                Err(codec::CodecError::BufferFull { .. }) if f.count() > 0 => self.close_frame(),
                Err(e) => {
                    return Err(LogError::Io {
                        op: "encode record for",
                        path: self.dir.clone(),
                        source: segment::codec_io(e),
                    });
                }
            }
        };
        if self.batch_first == 0 {
            self.batch_first = seq;
            self.batch_started = Some(now.mono);
            self.batch_min_ts = ts_ms;
            self.batch_max_ts = ts_ms;
        }
        self.batch_max_ts = self.batch_max_ts.max(ts_ms);
        self.batch_min_ts = self.batch_min_ts.min(ts_ms);
        self.next_seq = seq + 1;
        self.batch_records += 1;
        self.batch_payload += payload.len() as u64;
        let m = &self.sh.metrics;
        m.records_in.fetch_add(1, Relaxed);
        m.bytes_in.fetch_add(payload.len() as u64, Relaxed);
        if let Some(id) = id {
            self.dedupe.stored(source, key, payload, id, seq);
        }
        if self.batch.len() >= self.cfg.batch_bytes {
            let _ = self.flush(now);
        }
        Ok(Appended::Stored(seq))
    }

    fn close_frame(&mut self) {
        if let Some(f) = self.frame.take() {
            let _ = f.finish(&mut self.batch);
        }
    }

    /// Deletes the oldest sealed segment (whose last seq is `last`) in the safe order: cursor
    /// past it and fdatasync'd, then unlink (invariant 5).
    fn delete_oldest(&mut self, last: u64) -> Result<(), LogError> {
        let Some(base) = self.sealed.front().map(|s| s.base) else {
            return Ok(());
        };
        let cursor_path = self.dir.join("CURSOR");
        self.sh
            .ack_durable(last)
            .map_err(ioe("write and fdatasync", &cursor_path))?;
        remove_segment(&*self.sh.fs, &self.dir, base)?;
        self.sealed.pop_front();
        Ok(())
    }

    /// Drops the open batch for `reason`: its seqs become a gap in the cursor slot
    /// (fdatasync'd), then count as written, so that producers waiting for them learn their
    /// fate. `false` when the ledger cannot take the gap (the batch is kept).
    fn drop_batch(&mut self, reason: GapReason) -> bool {
        self.frame = None;
        if self.batch_first != 0 {
            let (first, last) = (self.batch_first, self.next_seq - 1);
            let gap = GapV1 {
                reason,
                first_seq: first,
                last_seq: last,
                records: self.batch_records,
                bytes: self.batch_payload,
            };
            match self.sh.update_book(0, true, |book, _| book.drop_new(gap)) {
                Ok(true) => {}
                Ok(false) => return false,
                Err(_) => {
                    self.sh.metrics.io_errors.fetch_add(1, Relaxed);
                    return false;
                }
            }
            self.active.holes.push((first, last));
            self.written = last;
            self.sh.written.store(last, Relaxed);
            if !matches!(self.cfg.sync, SyncPolicy::Interval(_)) {
                self.publish_durable(last);
            }
        }
        self.clear_batch();
        true
    }

    fn clear_batch(&mut self) {
        self.batch.clear();
        self.frame = None;
        self.batch_first = 0;
        self.batch_records = 0;
        self.batch_payload = 0;
        self.batch_started = None;
    }

    /// Seals the active segment and starts a new one at `next_seq`.
    fn roll(&mut self, now: Now, base: u64) -> Result<(), LogError> {
        let old_path = self.dir.join(seg_name(self.active.base));
        if self.cfg.sync != SyncPolicy::Never {
            self.timed_sync_active()
                .map_err(ioe("fdatasync", &old_path))?;
        }
        let new = create_segment(&*self.sh.fs, &self.dir, base, now.wall_ms)?;
        let old = std::mem::replace(&mut self.active, new);
        self.sealed.push_back(Sealed {
            base: old.base,
            len: old.len,
            created_ms: old.created_ms,
            data_records: old.data_records,
            payload_bytes: old.payload_bytes,
            holes: old.holes,
        });
        if self.cfg.sync != SyncPolicy::Never {
            self.publish_durable(self.written);
        }
        self.publish_sizes();
        Ok(())
    }

    /// First seq of the open batch, or the next seq when it holds no data record.
    fn batch_base(&self) -> u64 {
        if self.batch_first != 0 {
            self.batch_first
        } else {
            self.next_seq
        }
    }

    fn timed_sync_active(&mut self) -> io::Result<()> {
        let t = Instant::now();
        self.active.file.sync_data()?;
        self.sh.metrics.fsync_done(t.elapsed().as_micros() as u64);
        self.last_sync = Instant::now();
        Ok(())
    }

    fn publish_durable(&mut self, seq: u64) {
        self.sh
            .metrics
            .records_durable
            .fetch_add(self.unsynced_records, Relaxed);
        self.unsynced_records = 0;
        self.sh.set_durable(seq);
    }

    /// Writes the open batch (if any) per the policies. I/O errors are returned after the
    /// partial write was rolled back; the batch is kept for a retry.
    pub fn flush(&mut self, now: Now) -> Result<Flushed, LogError> {
        if self.retry_at.is_some_and(|t| now.mono < t) {
            return Ok(Flushed::Blocked);
        }
        self.close_frame();
        if self.batch.is_empty() {
            self.blocked = false;
            return Ok(Flushed::Empty);
        }
        let mut space_retries = 0;
        loop {
            // Make room (limits are checked before the write).
            let need = self.batch.len() as u64;
            if need + CURSOR_LEN + self.meta_len + SEG_HEADER_LEN > self.cfg.max_bytes {
                return Ok(self.drop_or_block(GapReason::RetentionBytes));
            }
            let mut guard = 0;
            while let Some(reason) = self.over_limit(need)? {
                guard += 1;
                if guard > 100_000 {
                    break;
                }
                match self.cfg.full_policy {
                    FullPolicy::Block => return Ok(self.set_blocked()),
                    FullPolicy::DropNewest => return Ok(self.drop_or_block(GapReason::DropNewest)),
                    FullPolicy::DropOldest => {
                        if !self.sealed.is_empty() {
                            if !self.drop_oldest(reason)? {
                                return Ok(self.set_blocked());
                            }
                        } else if self.active.len > SEG_HEADER_LEN {
                            self.roll(now, self.batch_base())?;
                        } else {
                            return Ok(self.drop_or_block(reason));
                        }
                    }
                }
            }
            match self.write_batch(now) {
                Ok(()) => {
                    self.blocked = false;
                    self.retry_at = None;
                    self.backoff = Duration::from_millis(10);
                    self.sh.metrics.degraded.store(false, Relaxed);
                    return Ok(Flushed::Written);
                }
                Err((op, path, e)) if is_space_error(&e) => {
                    self.sh.metrics.io_errors.fetch_add(1, Relaxed);
                    self.sh.metrics.degraded.store(true, Relaxed);
                    space_retries += 1;
                    match self.cfg.full_policy {
                        FullPolicy::DropOldest if !self.sealed.is_empty() && space_retries < 64 => {
                            if !self.drop_oldest(GapReason::DiskFull)? {
                                return Ok(self.set_blocked());
                            }
                        }
                        FullPolicy::Block => {
                            self.retry_at = Some(now.mono + Duration::from_millis(100));
                            return Ok(self.set_blocked());
                        }
                        _ => {
                            let _ = (op, path);
                            return Ok(self.drop_or_block(GapReason::DiskFull));
                        }
                    }
                }
                Err((op, path, source)) => {
                    let m = &self.sh.metrics;
                    m.io_errors.fetch_add(1, Relaxed);
                    m.degraded.store(true, Relaxed);
                    self.retry_at = Some(now.mono + self.backoff);
                    self.backoff = (self.backoff * 2).min(Duration::from_secs(5));
                    self.blocked = self.batch.len() >= 2 * self.cfg.batch_bytes;
                    return Err(LogError::Io { op, path, source });
                }
            }
        }
    }

    fn drop_or_block(&mut self, reason: GapReason) -> Flushed {
        if self.drop_batch(reason) {
            Flushed::Dropped
        } else {
            self.set_blocked()
        }
    }

    fn set_blocked(&mut self) -> Flushed {
        self.blocked = true;
        self.sh.metrics.degraded.store(true, Relaxed);
        Flushed::Blocked
    }

    /// Rolls if needed, writes and syncs the batch. On error the file is rolled back to its
    /// length before, the batch kept, and the error returned.
    fn write_batch(&mut self, now: Now) -> Result<(), (&'static str, PathBuf, io::Error)> {
        let first_in_batch = self.batch_base();
        if self.active.len > SEG_HEADER_LEN
            && self.active.len + self.batch.len() as u64 > self.seg_bytes
            && let Err(e) = self.roll(now, first_in_batch)
        {
            return Err(match e {
                LogError::Io { op, path, source } => (op, path, source),
                other => (
                    "roll",
                    self.dir.clone(),
                    io::Error::other(other.to_string()),
                ),
            });
        }
        let path = self.dir.join(seg_name(self.active.base));
        let off = self.active.len;
        if let Err(e) = self.active.file.write_all_at(&self.batch, off) {
            let _ = self.active.file.set_len(off);
            return Err(("write", path, e));
        }
        if self.cfg.sync == SyncPolicy::Batched
            && let Err(e) = self.timed_sync_active()
        {
            // fsyncgate: the page cache state is unknown; roll back and rewrite later.
            let _ = self.active.file.set_len(off);
            return Err(("fdatasync", path, e));
        }
        let last = self.next_seq - 1;
        self.active.len += self.batch.len() as u64;
        self.active.max_ts = self.active.max_ts.max(self.batch_max_ts);
        self.written = last;
        self.sh.written.store(last, Relaxed);
        self.sh
            .metrics
            .bytes_written
            .fetch_add(self.batch.len() as u64, Relaxed);
        if self.batch_first != 0 {
            self.batch_ts
                .push_back((self.batch_first, self.batch_min_ts));
            if self.batch_ts.len() > 4096 {
                // Thin out, keeping the front (the oldest) exact.
                let mut i = 0;
                self.batch_ts.retain(|_| {
                    i += 1;
                    i % 2 == 1
                });
            }
        }
        self.unsynced_records += self.batch_records;
        self.active.data_records += self.batch_records;
        self.active.payload_bytes += self.batch_payload;
        self.clear_batch();
        if !matches!(self.cfg.sync, SyncPolicy::Interval(_)) {
            self.publish_durable(last);
        }
        self.publish_sizes();
        Ok(())
    }

    /// Time-driven work: closes a batch whose window passed, interval syncs, cursor syncs,
    /// deletion of acknowledged segments, age retention, retries.
    pub fn tick(&mut self, now: Now) -> Result<(), LogError> {
        let mut result = Ok(());
        if self
            .batch_started
            .is_some_and(|t| now.mono >= t + self.cfg.batch_window)
            || self.blocked
            || (self.retry_at.is_some_and(|t| now.mono >= t) && !self.batch.is_empty())
        {
            result = self.flush(now).map(|_| ());
        }
        if let SyncPolicy::Interval(t) = self.cfg.sync
            && self.written > self.sh.durable()
            && now.mono >= self.last_sync + t
        {
            let p = self.dir.join(seg_name(self.active.base));
            match self.timed_sync_active() {
                Ok(()) => self.publish_durable(self.written),
                Err(e) => {
                    self.sh.metrics.io_errors.fetch_add(1, Relaxed);
                    result = Err(ioe("fdatasync", &p)(e));
                }
            }
        }
        // Acknowledged whole segments.
        let acked = self.sh.acked();
        while !self.sealed.is_empty() {
            let next_base = self
                .sealed
                .get(1)
                .map(|s| s.base)
                .unwrap_or(self.active.base);
            if acked < next_base - 1 {
                break;
            }
            self.delete_oldest(next_base - 1)?;
            self.publish_sizes();
        }
        while self.batch_ts.front().is_some_and(|&(s, _)| s <= acked) {
            self.batch_ts.pop_front();
        }
        let oldest = self.batch_ts.front().map(|x| x.1).unwrap_or(0);
        self.sh.metrics.oldest_unacked_ms.store(oldest, Relaxed);
        // Age retention.
        if let Some(max_age) = self.cfg.max_age {
            let limit = now.wall_ms - max_age.as_millis() as i64;
            loop {
                let newest_upper = match self.sealed.get(1) {
                    Some(s) => s.created_ms,
                    None if !self.sealed.is_empty() => self.active.created_ms,
                    None => break,
                };
                if newest_upper >= limit || !self.drop_oldest(GapReason::RetentionAge)? {
                    break;
                }
            }
            if self.sealed.is_empty()
                && self.active.len > SEG_HEADER_LEN
                && self.active.max_ts < limit
                && self.batch.is_empty()
            {
                self.roll(now, self.batch_base())?;
                let _ = self.drop_oldest(GapReason::RetentionAge)?;
            }
        }
        if now.mono >= self.last_cursor_sync + self.cfg.cursor_sync {
            self.last_cursor_sync = now.mono;
            let cp = self.dir.join("CURSOR");
            if let Err(e) = self.sh.sync_cursor() {
                self.sh.metrics.io_errors.fetch_add(1, Relaxed);
                result = Err(ioe("fdatasync", &cp)(e));
            }
        }
        result
    }

    /// When `tick` next has work to do.
    pub fn next_deadline(&self, now: Now) -> Instant {
        let mut d = now.mono + Duration::from_secs(1);
        if let Some(t) = self.batch_started {
            d = d.min(t + self.cfg.batch_window);
        }
        if let SyncPolicy::Interval(t) = self.cfg.sync
            && self.written > self.sh.durable()
        {
            d = d.min(self.last_sync + t);
        }
        if let Some(t) = self.retry_at {
            d = d.min(t);
        }
        if self.blocked {
            d = d.min(now.mono + Duration::from_millis(100));
        }
        d.min(self.last_cursor_sync + self.cfg.cursor_sync)
    }

    /// Flushes, syncs the active segment and the cursor (clean shutdown).
    pub fn close(mut self, now: Now) -> Result<(), LogError> {
        let r = self.flush(now);
        let p = self.dir.join(seg_name(self.active.base));
        if self.cfg.sync != SyncPolicy::Never {
            self.timed_sync_active().map_err(ioe("fdatasync", &p))?;
            self.publish_durable(self.written);
        }
        let cp = self.dir.join("CURSOR");
        self.sh.sync_cursor().map_err(ioe("fdatasync", &cp))?;
        r.map(|_| ())
    }
}

fn is_space_error(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// Unlinks a segment; a segment already gone is fine.
fn remove_segment(fs: &dyn Fs, dir: &Path, base: u64) -> Result<(), LogError> {
    let p = dir.join(seg_name(base));
    match fs.remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ioe("remove", &p)(e)),
    }
}

/// Creates a segment whose first seq is `base`: header written and fdatasync'd, directory
/// fsync'd (so the new file survives a power cut).
fn create_segment(fs: &dyn Fs, dir: &Path, base: u64, now_ms: i64) -> Result<Active, LogError> {
    let p = dir.join(seg_name(base));
    let f = fs.open(&p, true).map_err(ioe("create segment", &p))?;
    let r = f
        .set_len(0)
        .and_then(|_| f.write_all_at(&encode_seg_header(base, now_ms), 0))
        .and_then(|_| f.sync_data())
        .and_then(|_| fs.sync_dir(dir));
    if let Err(e) = r {
        let _ = fs.remove_file(&p);
        return Err(ioe("create segment", &p)(e));
    }
    Ok(Active {
        base,
        file: f,
        len: SEG_HEADER_LEN,
        created_ms: now_ms,
        max_ts: 0,
        data_records: 0,
        payload_bytes: 0,
        holes: Vec::new(),
    })
}
