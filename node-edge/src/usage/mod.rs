//! Usage, from cgroup to report: every partition measured each `usage_period`, the samples
//! kept in an on-disk outbox until the master acknowledges them.
//!
//! * **Reading** ([`read`]): a partition running an rt profile is read from rt's groups
//!   ([`Resources::usage`]); any other from its jail ([`Jails::usage`]: on cgroup v1 the jail is
//!   also a group of the `cpuacct`, `memory` and `blkio` hierarchies, on v2 it is one group).
//!   A controller the host does not have leaves its fields at 0 (logged once); a node without
//!   jails (not root) measures the disk only. Disk: the partition directory walked like the
//!   measured disk budget ([`quota::walk`]: allocated blocks, hard links once, no link
//!   followed).
//! * **Delta** ([`measure`], pure): CPU and I/O counters are cumulative; a sample holds what
//!   the period added. A counter below the cursor's was reset (the group was recreated): the
//!   period counts it from zero. A partition's first reading is a baseline, not a sample; each
//!   later sample starts where the previous one ended ([`Cursor`]), across node restarts.
//! * **Outbox** ([`outbox`]): appended and fsynced each period, sent in batches of at most
//!   [`MAX_BATCH`] whenever the master answers, dropped only once acknowledged; folded when
//!   full (warned, with the count and time range).
//! * **Metrics file** (`usage_metrics_file`): a node_exporter textfile ([`render_metrics`])
//!   rewritten (atomic rename) after each sample.
//!
//! One thread per period does it all in order (sample, append, send), so the outbox never
//! changes under a batch in flight; a slow master delays the next sample, and the periods
//! stay contiguous.

pub mod outbox;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use slapos_proto::{InstanceTitle, PartitionId, UsageBatch, UsageSample};
use tokio::sync::watch;

use crate::host::jail::Jails;
use crate::host::layout::PartitionLayout;
use crate::host::quota;
use crate::host::resources::Resources;
use crate::link::{MasterLink, off_thread};
pub use outbox::{Cursor, Outbox, OutboxError, Record};

/// Samples per batch: the master's limit (`master-lite` `store::usage::MAX_BATCH`).
pub const MAX_BATCH: usize = 1000;

/// The directory of the outbox in the node's state directory.
pub const DIR: &str = "usage";

/// One partition's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reading {
    /// cgroup counters (fields `None` where not accounted).
    pub cg: rt::Usage,
    /// Allocated bytes of the partition directory.
    pub disk_bytes: u64,
}

/// The sample for the period ending `now_ms` (`None` for a first reading or a clock that went
/// back) and the cursor to keep. Pure.
pub fn measure(
    cursor: Option<Cursor>,
    r: &Reading,
    now_ms: u64,
    partition: &PartitionId,
    instance: Option<InstanceTitle>,
) -> (Option<UsageSample>, Cursor) {
    let at = |end_ms| Cursor {
        end_ms,
        cpu_ns: r.cg.cpu_ns.unwrap_or(0),
        io_read_bytes: r.cg.io_read_bytes.unwrap_or(0),
        io_write_bytes: r.cg.io_write_bytes.unwrap_or(0),
    };
    let Some(prev) = cursor else {
        return (None, at(now_ms));
    };
    if now_ms <= prev.end_ms {
        return (None, prev);
    }
    let next = at(now_ms);
    // A counter that went down was reset (its group recreated): count it from zero.
    let delta = |now: u64, before: u64| now.checked_sub(before).unwrap_or(now);
    let memory = r.cg.memory_current_bytes.unwrap_or(0);
    let sample = UsageSample {
        partition: partition.clone(),
        instance,
        start_ms: prev.end_ms,
        end_ms: now_ms,
        cpu_ns: delta(next.cpu_ns, prev.cpu_ns),
        memory_bytes: memory,
        memory_peak_bytes: r.cg.memory_peak_bytes.unwrap_or(memory),
        io_read_bytes: delta(next.io_read_bytes, prev.io_read_bytes),
        io_write_bytes: delta(next.io_write_bytes, prev.io_write_bytes),
        disk_bytes: r.disk_bytes,
        tasks: r.cg.tasks,
        folded: 1,
    };
    (Some(sample), next)
}

/// A metric value: integers as they are, nanoseconds as seconds with 9 decimals (no float
/// formatting in the size-bound node).
enum Val {
    Int(u64),
    Nanos(u64),
}

impl std::fmt::Display for Val {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Int(n) => write!(f, "{n}"),
            Self::Nanos(n) => write!(f, "{}.{:09}", n / 1_000_000_000, n % 1_000_000_000),
        }
    }
}

/// The node_exporter textfile: per-partition counters and gauges, and the outbox depth.
pub fn render_metrics(readings: &[(PartitionId, Reading)], outbox: usize) -> String {
    type Get = fn(&Reading) -> Option<Val>;
    let series: [(&str, &str, &str, Get); 7] = [
        (
            "cpu_seconds_total",
            "counter",
            "CPU time of the partition's processes",
            |r| r.cg.cpu_ns.map(Val::Nanos),
        ),
        (
            "memory_bytes",
            "gauge",
            "Memory charged to the partition",
            |r| r.cg.memory_current_bytes.map(Val::Int),
        ),
        (
            "memory_peak_bytes",
            "gauge",
            "Peak memory of the partition",
            |r| r.cg.memory_peak_bytes.map(Val::Int),
        ),
        (
            "io_read_bytes_total",
            "counter",
            "Bytes the partition read from block devices",
            |r| r.cg.io_read_bytes.map(Val::Int),
        ),
        (
            "io_write_bytes_total",
            "counter",
            "Bytes the partition wrote to block devices",
            |r| r.cg.io_write_bytes.map(Val::Int),
        ),
        (
            "disk_bytes",
            "gauge",
            "Size of the partition directory",
            |r| Some(Val::Int(r.disk_bytes)),
        ),
        ("tasks", "gauge", "Threads in the partition", |r| {
            Some(Val::Int(r.cg.tasks))
        }),
    ];
    let mut out = String::new();
    for (name, kind, help, get) in series {
        let _ = writeln!(out, "# HELP slapos_partition_{name} {help}.");
        let _ = writeln!(out, "# TYPE slapos_partition_{name} {kind}");
        for (p, r) in readings {
            if let Some(v) = get(r) {
                // Partition ids are [A-Za-z0-9_.-]: nothing to escape in a label value.
                let _ = writeln!(out, "slapos_partition_{name}{{partition=\"{p}\"}} {v}");
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP slapos_node_usage_outbox_samples Usage samples not yet acknowledged by the master.\n\
         # TYPE slapos_node_usage_outbox_samples gauge\n\
         slapos_node_usage_outbox_samples {outbox}"
    );
    out
}

/// The instance on each allocated partition, as the node's desired state says (plain
/// vectors: no new map type in the size-bound node).
pub type Instances = Arc<Mutex<Vec<(PartitionId, InstanceTitle)>>>;

/// What the sampler reads and where it writes.
pub struct Sources {
    /// The node's partitions.
    pub parts: Vec<PartitionLayout>,
    /// The partitions' jails (root nodes).
    pub jails: Option<Arc<Jails>>,
    /// The resources seam (rt profiles' groups).
    pub resources: Arc<dyn Resources>,
    /// The master.
    pub link: Arc<dyn MasterLink>,
    /// The instance each partition runs (from the desired state).
    pub instances: Instances,
    /// The metrics textfile, if any.
    pub metrics_file: Option<PathBuf>,
}

struct State {
    outbox: Outbox,
    /// Things logged once (an absent controller, a link without usage).
    said: Vec<String>,
}

/// The sampler of one node (see the module doc).
pub struct Sampler {
    src: Sources,
    state: Mutex<State>,
}

/// The usage logs go through these three (one tracing call site each: the static node's size).
pub(crate) fn warn(a: std::fmt::Arguments<'_>) {
    tracing::warn!("usage: {a}");
}

pub(crate) fn error(a: std::fmt::Arguments<'_>) {
    tracing::error!("usage: {a}");
}

fn debug(a: std::fmt::Arguments<'_>) {
    tracing::debug!("usage: {a}");
}

fn once(said: &mut Vec<String>, what: String) {
    if !said.contains(&what) {
        warn(format_args!("{what}"));
        // Bounded: messages carrying changing details would otherwise pile up.
        if said.len() >= 32 {
            said.clear();
        }
        said.push(what);
    }
}

/// Read partition `l` (see the module doc).
pub fn read(
    l: &PartitionLayout,
    jails: Option<&Jails>,
    resources: &dyn Resources,
) -> Result<Reading, String> {
    let cg = match resources.usage(&l.id) {
        Some(u) => u,
        None => match jails {
            Some(j) => j.usage(l.id.as_str()).map_err(|e| e.to_string())?,
            None => rt::Usage::default(),
        },
    };
    let disk_bytes = quota::walk(&l.path, None)
        .map_err(|e| format!("partition `{}`: disk usage: {e}", l.id))?
        .bytes;
    Ok(Reading { cg, disk_bytes })
}

impl Sampler {
    /// A sampler over `src` with its outbox in `dir` (bounded by `outbox_max`).
    pub fn new(
        src: Sources,
        dir: &std::path::Path,
        outbox_max: usize,
    ) -> Result<Self, OutboxError> {
        let outbox = Outbox::open(dir, outbox_max)?;
        let mut said = Vec::new();
        match src.jails.as_deref() {
            None => once(
                &mut said,
                "no partition cgroups (the node is not root or the host has no cgroup \
                 hierarchy): CPU, memory, I/O and tasks are reported as 0"
                    .into(),
            ),
            Some(j) if matches!(j.hierarchy(), crate::host::jail::Hierarchy::V1 { .. }) => {
                let a = j.acct();
                for (c, d) in [
                    ("cpuacct", &a.cpuacct),
                    ("memory", &a.memory),
                    ("blkio", &a.blkio),
                ] {
                    if d.is_none() {
                        once(
                            &mut said,
                            format!("no `{c}` cgroup hierarchy: its fields are reported as 0"),
                        );
                    }
                }
            }
            Some(_) => {}
        }
        Ok(Self {
            src,
            state: Mutex::new(State { outbox, said }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Samples waiting for the master.
    pub fn pending(&self) -> usize {
        self.lock().outbox.len()
    }

    /// Measure every partition at `now_ms`, append the samples, fold when full, write the
    /// metrics file. Blocking (cgroup reads, the disk walk, an fsync).
    pub fn sample(&self, now_ms: u64) {
        let instances = self
            .src
            .instances
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut readings = Vec::with_capacity(self.src.parts.len());
        let mut st = self.lock();
        let mut records = Vec::new();
        for l in &self.src.parts {
            let r = match read(l, self.src.jails.as_deref(), &*self.src.resources) {
                Ok(r) => r,
                Err(e) => {
                    debug(format_args!("partition `{}` not read: {e}", l.id));
                    continue;
                }
            };
            let cursor = st.outbox.cursor(&l.id);
            let instance = instances
                .iter()
                .find(|(p, _)| *p == l.id)
                .map(|(_, t)| t.clone());
            match measure(cursor, &r, now_ms, &l.id, instance) {
                (Some(s), c) => records.push(Record { s, c }),
                (None, c) if cursor != Some(c) => st.outbox.set_cursor(&l.id, c),
                (None, _) => {}
            }
            readings.push((l.id.clone(), r));
        }
        match st.outbox.append(records) {
            Ok(None) => {}
            Ok(Some(f)) => warn(format_args!(
                "outbox full ({} samples kept): {} of the oldest samples folded into their \
                 neighbours, covering {}..{} ms",
                st.outbox.len(),
                f.merged,
                f.from_ms,
                f.to_ms
            )),
            Err(e) => once(&mut st.said, format!("samples not stored: {e}")),
        }
        if let Some(path) = &self.src.metrics_file {
            let text = render_metrics(&readings, st.outbox.len());
            if let Err(e) = crate::util::atomic_write(path, text.as_bytes()) {
                once(
                    &mut st.said,
                    format!("metrics file `{}` not written: {e}", path.display()),
                );
            }
        }
    }

    /// Send the outbox in batches while the master acknowledges them; compact what was
    /// acknowledged. Returns the samples acknowledged. Blocking (the master calls).
    pub fn flush(&self) -> usize {
        let mut st = self.lock();
        let mut acked = 0;
        loop {
            let batch = st.outbox.front(MAX_BATCH);
            if batch.is_empty() {
                break;
            }
            let n = batch.len();
            match self.src.link.post_usage(&UsageBatch { samples: batch }) {
                Ok(Some(_)) => {
                    st.outbox.ack(n);
                    acked += n;
                }
                Ok(None) => {
                    once(
                        &mut st.said,
                        "this master link takes no usage samples: they stay in the \
                         outbox (folded when it is full) and the metrics file"
                            .into(),
                    );
                    break;
                }
                Err(e) if e.is_unreachable() => {
                    debug(format_args!(
                        "master unreachable, {} sample(s) kept: {e}",
                        st.outbox.len()
                    ));
                    break;
                }
                Err(e) => {
                    // Refused (4xx): resending cannot succeed; like the report outbox, drop it.
                    error(format_args!(
                        "the master refused {n} sample(s), dropped: {e}"
                    ));
                    st.outbox.ack(n);
                }
            }
        }
        if let Err(e) = st.outbox.compact() {
            warn(format_args!("{e}"));
        }
        acked
    }
}

/// Sample every `period` until `stop` turns true: measure, append, send.
pub async fn run(sampler: Arc<Sampler>, period: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        let s = sampler.clone();
        let now = crate::util::now_ms();
        // A thread of its own, like the link's calls (no blocking pool in the node): the cgroup
        // reads, the disk walk, the fsync and the master calls never stall the runtime.
        let tick = move || {
            s.sample(now);
            s.flush();
        };
        if off_thread(tick).await.is_none() {
            error(format_args!("the sampling thread failed"));
        }
    }
}

#[cfg(test)]
mod tests;
