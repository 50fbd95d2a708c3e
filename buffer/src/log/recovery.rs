//! Opening the log: recovery after a crash, a power cut or a damaged file
//! (`docs/buffer-format.md` §7), in the order [`Log::open_with`] takes its steps:
//!
//! 1. the stream directory and its `LOCK` (one writer);
//! 2. `META` (the node id), recreated when missing or damaged;
//! 3. `CURSOR`: the acknowledged prefix, the epoch and the drop ledger, from the valid slot;
//! 4. the segments: fully acknowledged leftovers removed, the sealed ones listed;
//! 5. the active (last) segment scanned frame by frame: its torn tail truncated, corruption
//!    skipped and counted (a segment that keeps corrupt bytes is sealed, appends go to a new
//!    one), resend recognition rebuilt from the newest bytes of the log;
//! 6. a new epoch, written to the cursor and fdatasync'd before the first append.
//!
//! What it found is returned as a [`Recovery`].

use std::collections::VecDeque;
use std::io;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{
    Active, Cursor, DEDUPE_REBUILD_BYTES, Log, LogConfig, LogError, Now, Sealed, SegEntry, Shared,
    create_segment, ioe, lock as lock_mutex, remove_segment,
};
use crate::codec::{self, Record};
use crate::dedupe::Dedupe;
use crate::fs::{Fs, FsFile, FsLock, RealFs};
use crate::metrics::Metrics;
use crate::segment::{
    self, CURSOR_LEN, CursorSlot, SEG_HEADER_LEN, Scan, Scanner, parse_seg_name, seg_name,
};

/// What recovery found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The new epoch.
    pub epoch: u32,
    /// Cursor position found.
    pub acked: u64,
    /// First seq this incarnation will write.
    pub next_seq: u64,
    /// Segments found.
    pub segments: usize,
    /// Torn tail bytes truncated.
    pub truncated_bytes: u64,
    /// Corrupt bytes skipped in the active segment.
    pub corrupt_bytes: u64,
    /// Records lost to that corruption (from seq gaps).
    pub corrupt_records: u64,
    /// Fully acknowledged leftover segments removed.
    pub removed_acked: usize,
    /// The cursor file was missing or had no valid slot.
    pub cursor_reset: bool,
    /// META was missing or invalid and was recreated.
    pub meta_recreated: bool,
    /// Segments whose header was damaged or cut (their frames are still read).
    pub damaged_headers: usize,
    /// Gaps found in the cursor's ledger, waiting for the upstream's acknowledgement.
    pub pending_gaps: usize,
    /// (numbered producers, MQTT records) remembered for resend recognition.
    pub dedupe: (usize, usize),
}

fn valid_stream(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

fn random_hex16() -> String {
    let mut b = [0u8; 16];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| io::Read::read_exact(&mut f, &mut b))
        .is_ok();
    if !ok {
        // Fall back to time and address entropy; uniqueness, not secrecy, is needed.
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b = (t ^ ((&b as *const _ as usize as u128) << 64)).to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn meta_text(node_id: &str, stream: &str, created_ms: i64) -> String {
    let body = format!(
        "format=slapos-buffer/1\nnode_id={node_id}\nstream={stream}\ncreated_ms={created_ms}\n"
    );
    let crc = codec::crc32c(body.as_bytes());
    format!("{body}crc32c={crc:08x}\n")
}

fn parse_meta(text: &str) -> Option<String> {
    let (body, last) = text.trim_end_matches('\n').rsplit_once('\n')?;
    let crc = u32::from_str_radix(last.strip_prefix("crc32c=")?, 16).ok()?;
    let body = format!("{body}\n");
    if codec::crc32c(body.as_bytes()) != crc || !body.starts_with("format=slapos-buffer/1\n") {
        return None;
    }
    body.lines()
        .find_map(|l| l.strip_prefix("node_id="))
        .map(str::to_owned)
}

impl Log {
    /// Opens (creating or recovering) the log on the real filesystem.
    pub fn open(cfg: LogConfig) -> Result<(Log, Recovery), LogError> {
        Self::open_with(Arc::new(RealFs), cfg, Now::system())
    }

    /// Opens the log on `fs` (recovery: `docs/buffer-format.md` §7), in the steps of the
    /// module doc.
    pub fn open_with(
        fs: Arc<dyn Fs>,
        cfg: LogConfig,
        now: Now,
    ) -> Result<(Log, Recovery), LogError> {
        if !valid_stream(&cfg.stream) {
            return Err(LogError::BadStream(cfg.stream.clone()));
        }
        let dir = cfg.stream_dir();
        fs.create_dir_all(&dir)
            .map_err(ioe("create directory", &dir))?;
        let lock = lock_dir(&*fs, &dir)?;
        let mut rec = Recovery::default();
        let (meta_node, meta_len) = open_meta(&*fs, &dir, &cfg.stream, now, &mut rec)?;
        let CursorRead {
            file: cursor_file,
            slot: picked,
            next_slot,
        } = open_cursor(&*fs, &dir)?;
        rec.cursor_reset = picked.is_none();
        let slot = picked.unwrap_or_default();
        let acked = slot.acked;
        rec.acked = acked;
        let (bases, mut sealed) = list_segments(&*fs, &dir, acked, now, &mut rec)?;

        let metrics = Metrics::default();
        let mut dedupe = Dedupe::default();
        let last = match bases.last() {
            Some(&b) => recover_last(&*fs, &dir, b, now, &mut sealed, &mut dedupe, &metrics)?,
            None => Last::default(),
        };
        rec.corrupt_bytes = last.corrupt_bytes;
        rec.corrupt_records = last.corrupt_records;
        rec.truncated_bytes = last.truncated_bytes;
        rec.damaged_headers += last.damaged_headers;
        let mut max_epoch = slot.epoch.max(last.max_epoch);
        let mut last_valid = last.last_valid;
        // If the cursor was lost and the active segment is empty, take the epoch from the
        // previous segment's frames too (invariant 2).
        if rec.cursor_reset
            && last_valid == 0
            && let Some(prev) = sealed.back()
        {
            let (epoch, seq) = scan_epoch(&*fs, &dir, prev.base);
            max_epoch = max_epoch.max(epoch);
            last_valid = last_valid.max(seq);
        }
        metrics
            .corrupt_records
            .fetch_add(rec.corrupt_records, Relaxed);
        metrics.corrupt_bytes.fetch_add(rec.corrupt_bytes, Relaxed);
        metrics
            .corrupt_headers
            .fetch_add(rec.damaged_headers as u64, Relaxed);

        let epoch = max_epoch.wrapping_add(1).max(1);
        // Seqs of dropped batches are never reused (their gaps may still be waiting).
        let mut next_seq = last_valid.max(acked).max(slot.book.max_seq()) + 1;
        let active = match last.active {
            Some(a) => {
                if a.len == SEG_HEADER_LEN {
                    next_seq = next_seq.max(a.base);
                }
                a
            }
            None => {
                let base = match last.recreate {
                    Some(b) => {
                        next_seq = next_seq.max(b);
                        b
                    }
                    None => next_seq,
                };
                create_segment(&*fs, &dir, base, now.wall_ms)?
            }
        };
        rec.pending_gaps = slot.book.gaps().len();

        // New epoch (and the ledger, now in a version 2 slot), durable before the first
        // append.
        let cursor_path = dir.join("CURSOR");
        let mut cursor = Cursor {
            file: cursor_file,
            slot: CursorSlot {
                epoch,
                version: 2,
                ..slot
            },
            next: next_slot,
            synced_acked: acked,
            dirty: false,
        };
        cursor.write(acked).map_err(ioe("write", &cursor_path))?;
        cursor.sync().map_err(ioe("fdatasync", &cursor_path))?;

        rec.epoch = epoch;
        rec.next_seq = next_seq;
        rec.segments = sealed.len() + 1;
        rec.dedupe = dedupe.sizes();

        let mut segs: Vec<SegEntry> = sealed
            .iter()
            .map(|s| SegEntry {
                base: s.base,
                len: s.len,
            })
            .collect();
        segs.push(SegEntry {
            base: active.base,
            len: active.len,
        });
        let written = next_seq - 1;
        let (durable_tx, _) = tokio::sync::watch::channel(written);
        let sh = Arc::new(Shared {
            fs: fs.clone(),
            dir: dir.clone(),
            node_id: cfg.node_id.clone().unwrap_or(meta_node),
            stream: cfg.stream.clone(),
            epoch,
            durable: AtomicU64::new(written),
            written: AtomicU64::new(written),
            acked: AtomicU64::new(acked),
            segs: Mutex::new(segs),
            cursor: Mutex::new(cursor),
            metrics,
            wake: (Mutex::new(0), Condvar::new()),
            durable_tx,
            corrupt_counted: AtomicU64::new(last.corrupt_upto),
            gaps_waiting: AtomicUsize::new(0),
        });
        sh.publish_book(&lock_mutex(&sh.cursor).slot.book);
        let seg_bytes = cfg.effective_segment_bytes();
        let log = Log {
            sh,
            seg_bytes,
            _lock: lock,
            dir,
            active,
            sealed,
            next_seq,
            batch: Vec::with_capacity(cfg.batch_bytes + cfg.frame_bytes + 64),
            frame: None,
            batch_first: 0,
            batch_records: 0,
            batch_payload: 0,
            batch_max_ts: 0,
            batch_min_ts: 0,
            batch_started: None,
            unknown_upto: next_seq - 1,
            dedupe,
            written,
            unsynced_records: 0,
            last_sync: now.mono,
            last_cursor_sync: now.mono,
            blocked: false,
            retry_at: None,
            backoff: Duration::from_millis(10),
            meta_len,
            batch_ts: VecDeque::new(),
            cfg,
        };
        log.publish_sizes();
        Ok((log, rec))
    }
}

/// Step 1: the stream directory's `LOCK` (one writer at a time).
fn lock_dir(fs: &dyn Fs, dir: &Path) -> Result<Box<dyn FsLock>, LogError> {
    let lock_path = dir.join("LOCK");
    fs.lock(&lock_path).map_err(|e| {
        if e.kind() == io::ErrorKind::WouldBlock {
            LogError::Locked(dir.to_path_buf())
        } else {
            LogError::Io {
                op: "lock",
                path: lock_path.clone(),
                source: e,
            }
        }
    })
}

/// Step 2: the node id in `META` and the file's length, `META` recreated (atomically, under a
/// new random id) when missing or damaged.
fn open_meta(
    fs: &dyn Fs,
    dir: &Path,
    stream: &str,
    now: Now,
    rec: &mut Recovery,
) -> Result<(String, u64), LogError> {
    let meta_path = dir.join("META");
    let existing = fs
        .open_read(&meta_path)
        .ok()
        .and_then(|f| segment::read_all(&*f, 4096).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|t| parse_meta(&t));
    Ok(match existing {
        Some(id) => {
            let len = meta_text(&id, stream, 0).len() as u64;
            (id, len)
        }
        None => {
            rec.meta_recreated = true;
            let id = random_hex16();
            let text = meta_text(&id, stream, now.wall_ms);
            let tmp = dir.join("META.tmp");
            let f = fs.open(&tmp, true).map_err(ioe("create", &tmp))?;
            f.set_len(0).map_err(ioe("truncate", &tmp))?;
            f.write_all_at(text.as_bytes(), 0)
                .map_err(ioe("write", &tmp))?;
            f.sync_data().map_err(ioe("fdatasync", &tmp))?;
            fs.rename(&tmp, &meta_path)
                .map_err(ioe("rename META.tmp to", &meta_path))?;
            fs.sync_dir(dir).map_err(ioe("fsync directory", dir))?;
            (id, text.len() as u64)
        }
    })
}

/// What step 3 read of `CURSOR`.
struct CursorRead {
    file: Box<dyn FsFile>,
    /// The valid slot (acked, epoch, drop ledger); `None`: lost, start from nothing.
    slot: Option<CursorSlot>,
    /// The slot the next write goes to.
    next_slot: u64,
}

/// Step 3: `CURSOR` opened (created, extended to its full length) and its valid slot picked.
fn open_cursor(fs: &dyn Fs, dir: &Path) -> Result<CursorRead, LogError> {
    let cursor_path = dir.join("CURSOR");
    let file = fs
        .open(&cursor_path, true)
        .map_err(ioe("open", &cursor_path))?;
    let cbytes =
        segment::read_all(&*file, CURSOR_LEN as usize).map_err(ioe("read", &cursor_path))?;
    let slot = CursorSlot::pick(&cbytes);
    let next_slot = CursorSlot::next_index(&cbytes);
    if cbytes.len() < CURSOR_LEN as usize {
        file.set_len(CURSOR_LEN)
            .map_err(ioe("extend", &cursor_path))?;
    }
    Ok(CursorRead {
        file,
        slot,
        next_slot,
    })
}

/// Step 4: the bases of the segments on disk, oldest first, with fully acknowledged leftovers
/// (a crash between cursor sync and unlink) removed, and all but the last as [`Sealed`].
fn list_segments(
    fs: &dyn Fs,
    dir: &Path,
    acked: u64,
    now: Now,
    rec: &mut Recovery,
) -> Result<(Vec<u64>, VecDeque<Sealed>), LogError> {
    let mut bases: Vec<u64> = fs
        .list(dir)
        .map_err(ioe("list", dir))?
        .iter()
        .filter_map(|n| parse_seg_name(n))
        .collect();
    bases.sort_unstable();
    while bases.len() >= 2 && bases[1] <= acked.saturating_add(1) {
        remove_segment(fs, dir, bases[0])?;
        rec.removed_acked += 1;
        bases.remove(0);
    }
    let mut sealed = VecDeque::new();
    for &b in bases.iter().take(bases.len().saturating_sub(1)) {
        let p = dir.join(seg_name(b));
        let f = fs.open_read(&p).map_err(ioe("open", &p))?;
        let len = f.len().map_err(ioe("stat", &p))?;
        let header = segment::read_seg_header(&*f).map_err(ioe("read", &p))?;
        if header.is_none() {
            tracing::warn!("buffer: segment `{}` has a damaged header", p.display());
            rec.damaged_headers += 1;
        }
        sealed.push_back(Sealed {
            base: b,
            len,
            created_ms: header.map_or(now.wall_ms, |h| h.1),
            data_records: 0,
            payload_bytes: 0,
            holes: Vec::new(),
        });
    }
    Ok((bases, sealed))
}

/// What step 5 found in the last segment.
#[derive(Default)]
struct Last {
    /// The segment appends continue in (`None`: a new one is created).
    active: Option<Active>,
    /// A last segment with a damaged header and no frame: recreated at this base.
    recreate: Option<u64>,
    last_valid: u64,
    max_epoch: u32,
    corrupt_bytes: u64,
    corrupt_records: u64,
    corrupt_upto: u64,
    truncated_bytes: u64,
    damaged_headers: usize,
}

/// Step 5: the last segment (base `b`) scanned, its torn tail truncated and the rest made
/// durable; resend recognition rebuilt from the newest [`DEDUPE_REBUILD_BYTES`] of the log. A
/// last segment whose header is damaged but holds frames joins `sealed`.
fn recover_last(
    fs: &dyn Fs,
    dir: &Path,
    b: u64,
    now: Now,
    sealed: &mut VecDeque<Sealed>,
    dedupe: &mut Dedupe,
    metrics: &Metrics,
) -> Result<Last, LogError> {
    let p = dir.join(seg_name(b));
    let f = fs.open(&p, false).map_err(ioe("open", &p))?;
    let flen = f.len().map_err(ioe("stat", &p))?;
    // Resend recognition: the newest DEDUPE_REBUILD_BYTES of the log, oldest first.
    let mut need = DEDUPE_REBUILD_BYTES.saturating_sub(flen);
    let mut window = Vec::new();
    for prev in sealed.iter().rev() {
        if need == 0 {
            break;
        }
        window.push((prev.base, prev.len.saturating_sub(need)));
        need = need.saturating_sub(prev.len);
    }
    for &(base, from) in window.iter().rev() {
        rebuild_dedupe(fs, dir, base, from, dedupe);
    }
    let sc = scan_active(&*f, b, flen.saturating_sub(DEDUPE_REBUILD_BYTES), dedupe)
        .map_err(ioe("scan", &p))?;
    let mut last = Last {
        corrupt_bytes: sc.corrupt_bytes,
        corrupt_records: sc.corrupt_records,
        corrupt_upto: sc.corrupt_upto,
        last_valid: sc.last_valid,
        max_epoch: sc.max_epoch,
        ..Last::default()
    };
    if flen > sc.good_end {
        // Torn tail (or stale/corrupt frames after the last good one).
        last.truncated_bytes = flen - sc.good_end;
        f.set_len(sc.good_end)
            .map_err(ioe("truncate torn tail of", &p))?;
        f.sync_data().map_err(ioe("fdatasync", &p))?;
        metrics.torn_tails.fetch_add(1, Relaxed);
    } else {
        // What a previous incarnation left in the page cache becomes durable
        // before any reader may forward it.
        f.sync_data().map_err(ioe("fdatasync", &p))?;
    }
    match sc.header {
        // Corrupt bytes kept before a good frame: the segment is sealed as it is. Appending
        // after them would change what a later resynchronisation finds there (a candidate
        // frame cut at today's end of file may be completed, CRC and all, by new frames), so
        // a second recovery could disagree with this one (fuzz/README.md).
        Some((_, created_ms)) if !sc.corrupt_kept => {
            last.active = Some(Active {
                base: b,
                file: f,
                len: sc.good_end,
                created_ms,
                max_ts: sc.max_ts,
                data_records: 0,
                payload_bytes: 0,
                holes: Vec::new(),
            })
        }
        header => {
            if header.is_none() {
                tracing::warn!("buffer: segment `{}` has a damaged header", p.display());
                last.damaged_headers += 1;
            }
            if sc.last_valid > 0 {
                // Its frames stay readable where they are; appends go to a new segment.
                sealed.push_back(Sealed {
                    base: b,
                    len: sc.good_end,
                    created_ms: header.map_or(now.wall_ms, |h| h.1),
                    data_records: 0,
                    payload_bytes: 0,
                    holes: Vec::new(),
                });
            } else {
                last.recreate = Some(b);
            }
        }
    }
    Ok(last)
}

/// The highest epoch and last seq of the frames of segment `base` (best effort: what can be
/// read).
fn scan_epoch(fs: &dyn Fs, dir: &Path, base: u64) -> (u32, u64) {
    let (mut max_epoch, mut last_valid) = (0, 0);
    let p = dir.join(seg_name(base));
    if let Ok(f) = fs.open_read(&p) {
        let start = segment::read_seg_header(&*f)
            .map(segment::frames_start)
            .unwrap_or(0);
        let mut sc = Scanner::new(start);
        loop {
            match sc.next(&*f) {
                Ok(Scan::Frame { header, .. }) => {
                    max_epoch = max_epoch.max(header.epoch);
                    last_valid = last_valid.max(header.last_seq());
                    sc.advance(header.frame_len());
                }
                Ok(Scan::Skipped { .. }) => {}
                _ => break,
            }
        }
    }
    (max_epoch, last_valid)
}

/// Envelope variant of data records with an origin (the only ones resend recognition needs).
const ORIGIN_VARIANT: u8 = 2;

/// Feeds the identified records of a frame to resend recognition (a frame without any is not
/// decoded).
fn remember_origins(view: &codec::FrameView<'_>, dedupe: &mut Dedupe) {
    if !view.has_variant(ORIGIN_VARIANT) {
        return;
    }
    for (seq, r) in view.records().flatten() {
        if let Record::Data {
            source,
            key,
            payload,
            origin: Some(o),
            ..
        } = r
        {
            dedupe.stored(source, key, payload, o, seq);
        }
    }
}

/// What recovery found in the active (last) segment.
struct ActiveScan {
    header: Option<(u64, i64)>,
    good_end: u64,
    last_valid: u64,
    max_epoch: u32,
    max_ts: i64,
    corrupt_bytes: u64,
    corrupt_records: u64,
    corrupt_upto: u64,
    /// Corrupt or stale bytes lie before `good_end` (a good frame follows them).
    corrupt_kept: bool,
}

/// Scans the last segment from its first frame (from offset 0 when its header is damaged):
/// accepts frames in seq order, resynchronises over corruption, and feeds its records from
/// byte `dedupe_from` on to resend recognition.
fn scan_active(
    f: &dyn FsFile,
    base: u64,
    dedupe_from: u64,
    dedupe: &mut Dedupe,
) -> io::Result<ActiveScan> {
    let header = segment::read_seg_header(f)?;
    let start = segment::frames_start(header);
    let mut out = ActiveScan {
        header,
        good_end: start,
        last_valid: 0,
        max_epoch: 0,
        max_ts: 0,
        corrupt_bytes: 0,
        corrupt_records: 0,
        corrupt_upto: 0,
        corrupt_kept: false,
    };
    let mut sc = Scanner::new(start);
    let mut expected = base;
    let mut skipped = false;
    loop {
        match sc.next(f)? {
            Scan::End | Scan::Tail { .. } => break,
            Scan::Frame { offset, header: h } => {
                if h.first_seq < expected {
                    // Stale or duplicate frame: treat as corrupt bytes.
                    out.corrupt_bytes += h.frame_len() as u64;
                    sc.advance(h.frame_len());
                    skipped = true;
                    continue;
                }
                if skipped {
                    out.corrupt_records += h.first_seq - expected;
                    out.corrupt_upto = h.first_seq;
                    out.corrupt_kept = true;
                    skipped = false;
                }
                if offset >= dedupe_from {
                    remember_origins(&sc.view(h), dedupe);
                }
                expected = h.last_seq() + 1;
                out.last_valid = h.last_seq();
                out.max_epoch = out.max_epoch.max(h.epoch);
                out.max_ts = out.max_ts.max(h.base_ts_ms);
                out.good_end = offset + h.frame_len() as u64;
                sc.advance(h.frame_len());
            }
            Scan::Skipped { from, to } => {
                out.corrupt_bytes += to - from;
                skipped = true;
            }
        }
    }
    Ok(out)
}

/// Feeds the records of segment `base` from byte `from` on to resend recognition. Best effort:
/// an unreadable segment only narrows what is recognised.
fn rebuild_dedupe(fs: &dyn Fs, dir: &Path, base: u64, from: u64, dedupe: &mut Dedupe) {
    let p = dir.join(seg_name(base));
    let Ok(f) = fs.open_read(&p) else {
        return;
    };
    let start = segment::read_seg_header(&*f)
        .map(segment::frames_start)
        .unwrap_or(0);
    let mut sc = Scanner::new(start.max(from));
    while let Ok(scan) = sc.next(&*f) {
        match scan {
            Scan::Frame { header, .. } => {
                remember_origins(&sc.view(header), dedupe);
                sc.advance(header.frame_len());
            }
            Scan::Skipped { .. } => {}
            Scan::Tail { .. } | Scan::End => break,
        }
    }
}
