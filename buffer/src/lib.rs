//! # buffer — store and forward for sensor data
//!
//! A leaf crate: a crash-safe, bounded, append-only **segment log** per stream, the inputs that
//! feed it (MQTT subscription, TCP lines, serial lines, OPC-UA behind the `opcua` feature), the
//! outputs that drain it (MQTT v5 QoS 1, HTTP POST batches) and the `slapos-buffer` service.
//! The full specification is `docs/buffer-format.md`; this is its summary.
//!
//! ## Design
//!
//! * [`codec`] (`no_std`, heapless + postcard): CRC-32C (`crc32c`'s CPU instructions with std,
//!   `crc`'s table without), the 36-byte frame header, the postcard
//!   `Envelope` records. Sensor firmware can build frames with it; CI builds it for
//!   `thumbv7em-none-eabihf` (`cargo build -p buffer --no-default-features`).
//! * [`gaps`]: the gap ledger (drops not yet acknowledged upstream, cumulative drop counters),
//!   pure state kept in the cursor slot. [`dedupe`]: recognition of producers' resends, pure
//!   state rebuilt from the log's newest records at open.
//! * `log` (std): a single-writer core, no threads, no clock of its own (time is passed in). It
//!   groups records into frames and frames into batches, writes a batch with one `pwrite` and
//!   syncs according to [`SyncPolicy`]. Every file operation goes through the `Fs` seam
//!   (`RealFs` in production, `MemFs` — which can lose unsynced data at a simulated power cut,
//!   and inject ENOSPC/EIO — in tests). Recovery at open is `log/recovery.rs`; a full disk
//!   budget, dropping the oldest segment, `log/budget.rs`.
//! * `reader`: independent readers with their own file handles, bounded by the durable
//!   watermark, validating each frame and resynchronising over corruption.
//! * `service`: the writer thread, the byte-bounded ingest channel, input and output tasks, the
//!   metrics endpoint; `slapos-buffer --config FILE` runs it.
//!
//! ## On disk (format version 2)
//!
//! `<dir>/<stream>/{LOCK, META, CURSOR, seg-<first seq, 20 digits>.log}`. A segment is a 32-byte
//! header (`EDGEBUF1`, version, base seq, crc) followed by frames:
//!
//! ```text
//! magic u16 0xB0F1 | version u8 | flags u8 | body_len u32 | crc32c u32 (all but itself)
//! | count u32 | first_seq u64 | base_ts_ms i64 | epoch u32 | body: count × (varint len ‖ postcard Envelope)
//! ```
//!
//! Records are postcard envelopes: data (variant 0), a format 1 gap marker (1), data with its
//! producer's identity (2). `CURSOR` holds two 512-byte slots `{gen, acked, epoch, gap ledger,
//! crc}` (version 1 slots, without the ledger, are still read); the valid slot with the higher
//! generation wins.
//!
//! ## Invariants
//!
//! 1. Seqs strictly increase in file order and across restarts
//!    (`next = max(last valid, acked, seq_floor) + 1`; a dropped batch's seqs are never reused).
//! 2. The epoch strictly increases at every open and is fdatasync'd before the first append; a
//!    delivery id `(node, stream, epoch, seq)` names one record content.
//! 3. A segment is deleted only after a cursor past it is fdatasync'd — for a drop, in the same
//!    slot as the drop's gap and counters; recovery tolerates the leftovers of a crash on either
//!    side of that order.
//! 4. Every drop (retention, disk full, `drop_newest`) is counted cumulatively and named by a gap
//!    in the ledger until the upstream acknowledged it; outputs send gaps out of band as
//!    `node/stream/gap/<serial>`, a gap never changes once sent, gap ranges never overlap.
//!    Every corrupt frame found, and every damaged segment header, is counted.
//!
//! ## Guarantees (see the spec for the exact wording)
//!
//! Durable (covered by a completed fdatasync) records survive kill -9 and power loss; readers and
//! input acknowledgements never go past the durable watermark; delivery is at-least-once with
//! duplicates after kill -9 bounded by the output's in-flight window, each under the original's
//! delivery id — resends of identified producers (TCP `hello`, MQTT QoS 1 packet ids) too;
//! every seq the upstream never gets (but corrupt ones) is inside a delivered gap whose
//! `records` add up to the drop counters; per-stream order; disk use ≤ `max_bytes`, free space ≥
//! `min_free_bytes`; corruption is skipped and counted per frame; ENOSPC and EIO never panic or
//! exit; opening never refuses because of data content.
//!
//! ## Limits
//!
//! One process and one output per stream directory (the cursor and the gap ledger are the
//! output's). A corrupt frame loses the records of that frame (≤ `frame_bytes`, default 8 KiB).
//! Resends are recognised over the newest 4 MiB of the log after a restart; those of producers
//! that give no identity are stored again. Serial input cannot be
//! acknowledged, so records still in the ingest channel are lost on kill -9 (≤ `channel_bytes`).
//! The OPC-UA client acknowledges notifications itself (async-opcua), so that input can lose what
//! was in the channel at a crash too. Power-loss safety depends on the device honouring flush.

#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_op_in_unsafe_fn)]

pub mod codec;
#[cfg(feature = "std")]
pub mod config;
#[cfg(feature = "std")]
pub mod dedupe;
#[cfg(feature = "std")]
pub mod fs;
#[cfg(feature = "std")]
pub mod gaps;
#[cfg(feature = "std")]
pub mod input;
#[cfg(feature = "std")]
pub mod log;
#[cfg(feature = "std")]
pub mod metrics;
#[cfg(feature = "opcua")]
pub mod opcua;
#[cfg(feature = "std")]
pub mod output;
#[cfg(feature = "std")]
pub mod reader;
#[cfg(feature = "std")]
pub mod segment;
#[cfg(feature = "std")]
pub mod server;
#[cfg(feature = "std")]
pub mod service;
#[cfg(feature = "std")]
pub mod tls;

#[cfg(feature = "std")]
pub use log::{Appended, FullPolicy, Log, LogConfig, LogError, Now, Shared, SyncPolicy};
#[cfg(feature = "std")]
pub use reader::{ReadBatch, Reader};
