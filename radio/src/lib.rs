//! # radio — eNodeB/gNodeB partitions
//!
//! What: the logic a base-station partition needs, compatible with SlapOS' `simpleran`
//! software release (formerly `ors-amarisoft`):
//!
//! 1. [`params`] — a typed model of the parameters `slapos request` sends to simpleran (same
//!    names and JSON shapes, numbers accepted as strings), read with the JSON path of any type
//!    error;
//! 2. [`validate`] — validation against 3GPP tables held as data in [`bands`] (TS 36.101 EARFCN
//!    ↔ band ↔ frequency, TS 38.104 NR-ARFCN and sync rasters, channel bandwidths, PCI, PLMN,
//!    TDD/FDD), producing a resolved [`plan::Plan`] or every error with its parameter path;
//! 3. [`srsran`] — srsRAN 4G `enb.conf` / `rr.conf` generation from the plan;
//! 4. [`rtprofile`] — the RT resource profile (shape of the partition `[resources]` table) and
//!    host-readiness checks over plain host facts;
//! 5. [`stats`], [`kpi`] — the statistics stream (Amarisoft-style stats in SlapOS' JSON log
//!    lines), KPIs and promises (cell down, latency, TX/RX margin, RX saturation, TTI misses);
//! 6. [`tti`] — the accounting of the stand-in TTI deadline loop.
//!
//! Design: a leaf crate with a pure core. No function in the library reads a file, a clock or
//! the kernel; the binaries `slapos-radio` (validate/render/resources/promise/kpi) and
//! `enb-sim` (the stand-in workload) do the I/O. See `docs/radio.md` for the formats and how an
//! instance uses the binaries.
//!
//! Invariants: a [`plan::Plan`] only exists for a request that passed every rule; every
//! frequency in it is computed from the tables in integer kHz; parsing of parameters and of
//! statistics never panics on any input.
//!
//! Limits: only `enb`-kind cells and SDR radio units (no UE simulator, peer cells, CPRI units);
//! srsRAN 4G output covers LTE FDD plus EN-DC NR cells (srsENB's own limits); per-band GSCN
//! ranges are not modelled.

pub mod bands;
pub mod cpulist;
pub mod de;
pub mod kpi;
pub mod params;
pub mod plan;
pub mod rtprofile;
pub mod srsran;
pub mod stats;
pub mod tti;
pub mod validate;
