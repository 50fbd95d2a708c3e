//! Usage samples posted by nodes and the accounting reports built from them (migration 8).
//!
//! A sample is stored once per `(computer, partition, start_ms)`: a node that lost the
//! master's acknowledgement sends its batch again and nothing is counted twice. At store time
//! the master records which tree the instance on the partition belongs to and that tree's
//! owner, so a report by user still holds after the instance is destroyed.

use slapos_proto::{
    ComputerId, InstanceTitle, PartitionId, UsageAck, UsageBatch, UsageBy, UsageReport, UsageRow,
    UsageSample,
};

use super::error::{DbContext, StoreError};
use super::sql::{OptionalExtension, Transaction, params};

use super::{Result, Store, require_computer, touch_seen};

/// Samples accepted in one batch (a node sends at most this many per call).
pub const MAX_BATCH: usize = 1000;

/// Bytes in a GiB, and milliseconds in an hour: the report's units.
const GIB: f64 = 1_073_741_824.0;
const HOUR_MS: f64 = 3_600_000.0;

/// What a computer's stored samples add up to, since its first one: the sums behind the usage
/// report's columns (CPU ns, bytes × ms held in memory and on disk, I/O bytes, samples).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct UsageTotals {
    /// CPU time, ns.
    pub cpu_ns: f64,
    /// Memory held over time, bytes × ms.
    pub memory_byte_ms: f64,
    /// Disk held over time, bytes × ms.
    pub disk_byte_ms: f64,
    /// Bytes read.
    pub io_read_bytes: f64,
    /// Bytes written.
    pub io_write_bytes: f64,
    /// Periods measured (folded samples count for what they stand for).
    pub samples: u64,
}

impl UsageTotals {
    /// CPU seconds.
    pub fn cpu_seconds(&self) -> f64 {
        self.cpu_ns / 1e9
    }

    /// Memory GiB·h.
    pub fn memory_gib_hours(&self) -> f64 {
        self.memory_byte_ms / GIB / HOUR_MS
    }

    /// Disk GiB·h.
    pub fn disk_gib_hours(&self) -> f64 {
        self.disk_byte_ms / GIB / HOUR_MS
    }
}

/// Refuse a sample that cannot be a measurement (the batch is refused whole, nothing stored).
fn check(c: &ComputerId, s: &UsageSample) -> Result<()> {
    if s.end_ms <= s.start_ms {
        return Err(StoreError::Invalid(format!(
            "usage sample of {c}/{}: period end {} is not after its start {}",
            s.partition, s.end_ms, s.start_ms
        )));
    }
    if s.folded == 0 {
        return Err(StoreError::Invalid(format!(
            "usage sample of {c}/{} at {}: folded must be at least 1",
            s.partition, s.start_ms
        )));
    }
    Ok(())
}

/// Integers go to the database as i64; a counter beyond that is refused, not wrapped.
fn int(c: &ComputerId, what: &str, v: u64) -> Result<i64> {
    i64::try_from(v)
        .map_err(|_| StoreError::Invalid(format!("usage of {c}: {what} {v} is out of range")))
}

impl Store {
    /// Store the samples of `batch` posted by computer `c`'s node; every sample is stored
    /// after this (new ones counted in `stored`, those already there in `duplicates`).
    pub fn record_usage(
        &mut self,
        c: &ComputerId,
        batch: &UsageBatch,
        now_ms: u64,
    ) -> Result<UsageAck> {
        if batch.samples.len() > MAX_BATCH {
            return Err(StoreError::Invalid(format!(
                "a usage batch holds at most {MAX_BATCH} samples, got {}",
                batch.samples.len()
            )));
        }
        for s in &batch.samples {
            check(c, s)?;
        }
        let tx = self.write()?;
        require_computer(&tx, c.as_str())?;
        touch_seen(&tx, c.as_str(), now_ms)?;
        let ack = insert_samples(&tx, c, &batch.samples, now_ms)?;
        tx.commit()?;
        Ok(ack)
    }

    /// Store the samples `map` makes of computer `c`'s partitions (each with the title of the
    /// instance on it), in one transaction: a usage journal of the SLAP wire, whose references
    /// name partitions. Any number of samples (a journal is bounded by its decoder).
    pub fn record_mapped_usage(
        &mut self,
        c: &ComputerId,
        now_ms: u64,
        map: impl FnOnce(&[(PartitionId, Option<InstanceTitle>)]) -> Vec<UsageSample>,
    ) -> Result<UsageAck> {
        let tx = self.write()?;
        require_computer(&tx, c.as_str())?;
        let samples = map(&partitions_of(&tx, c)?);
        for s in &samples {
            check(c, s)?;
        }
        touch_seen(&tx, c.as_str(), now_ms)?;
        let ack = insert_samples(&tx, c, &samples, now_ms)?;
        tx.commit()?;
        Ok(ack)
    }

    /// The running usage totals of every registered computer, by id (`/metrics`).
    pub fn usage_totals(&mut self) -> Result<Vec<(String, UsageTotals)>> {
        let tx = self.read()?;
        tx.query_map(
            "SELECT t.computer, t.cpu_ns, t.memory_byte_ms, t.disk_byte_ms, t.io_read_bytes, \
             t.io_write_bytes, t.samples FROM usage_total t \
             JOIN computer c ON c.id = t.computer ORDER BY t.computer",
            [],
            |r| {
                Ok((
                    r.get::<String>(0)?,
                    UsageTotals {
                        cpu_ns: r.get(1)?,
                        memory_byte_ms: r.get(2)?,
                        disk_byte_ms: r.get(3)?,
                        io_read_bytes: r.get(4)?,
                        io_write_bytes: r.get(5)?,
                        samples: r.get::<i64>(6)?.max(0) as u64,
                    },
                ))
            },
        )
        .op("read the usage totals")
    }

    /// The samples whose period ends in `(since_ms, until_ms]`, summed per group `by`.
    pub fn usage_report(
        &mut self,
        since_ms: u64,
        until_ms: u64,
        by: UsageBy,
    ) -> Result<UsageReport> {
        if until_ms < since_ms {
            return Err(StoreError::Invalid(format!(
                "usage report: until {until_ms} is before since {since_ms}"
            )));
        }
        let key = match by {
            UsageBy::Instance => {
                "CASE WHEN instance IS NULL THEN '(free)' \
                 WHEN root IS NULL OR root = instance THEN instance \
                 ELSE root || '/' || instance END"
            }
            UsageBy::User => "COALESCE(owner, 'local')",
            UsageBy::Computer => "computer",
        };
        // Sums in floating point: bytes × ms overflows 64-bit integers over a fleet, and
        // PostgreSQL's SUM of BIGINT is a NUMERIC. `DOUBLE PRECISION` is a REAL on SQLite
        // (type affinity) and a float8 on PostgreSQL.
        let sql = format!(
            "SELECT {key} AS k, SUM(CAST(cpu_ns AS DOUBLE PRECISION)), \
             SUM(CAST(memory_bytes AS DOUBLE PRECISION) * (end_ms - start_ms)), \
             SUM(CAST(disk_bytes AS DOUBLE PRECISION) * (end_ms - start_ms)), \
             SUM(CAST(io_read_bytes AS DOUBLE PRECISION)), \
             SUM(CAST(io_write_bytes AS DOUBLE PRECISION)), MAX(memory_peak_bytes), \
             SUM(CAST(folded AS DOUBLE PRECISION)) \
             FROM usage_sample WHERE end_ms > ?1 AND end_ms <= ?2 GROUP BY k ORDER BY k"
        );
        let since = i64::try_from(since_ms).unwrap_or(i64::MAX);
        let until = i64::try_from(until_ms).unwrap_or(i64::MAX);
        let tx = self.read()?;
        let rows: Vec<UsageRow> = tx
            .query_map(&sql, [since, until], |r| {
                Ok(UsageRow {
                    key: r.get(0)?,
                    cpu_seconds: r.get::<f64>(1)? / 1e9,
                    memory_gib_hours: r.get::<f64>(2)? / GIB / HOUR_MS,
                    disk_gib_hours: r.get::<f64>(3)? / GIB / HOUR_MS,
                    io_read_bytes: r.get::<f64>(4)? as u64,
                    io_write_bytes: r.get::<f64>(5)? as u64,
                    memory_peak_bytes: r.get::<i64>(6)?.max(0) as u64,
                    samples: r.get::<f64>(7)? as u64,
                })
            })
            .op("sum usage samples")?;
        let mut total = UsageRow {
            key: "total".to_owned(),
            ..UsageRow::default()
        };
        for r in &rows {
            total.cpu_seconds += r.cpu_seconds;
            total.memory_gib_hours += r.memory_gib_hours;
            total.disk_gib_hours += r.disk_gib_hours;
            total.io_read_bytes += r.io_read_bytes;
            total.io_write_bytes += r.io_write_bytes;
            total.memory_peak_bytes = total.memory_peak_bytes.max(r.memory_peak_bytes);
            total.samples += r.samples;
        }
        Ok(UsageReport {
            since_ms,
            until_ms,
            by,
            rows,
            total,
        })
    }
}

/// Insert `samples` of computer `c` (checked, on registered partitions; each counted once)
/// and add the new ones to its running totals.
fn insert_samples(
    tx: &Transaction<'_>,
    c: &ComputerId,
    samples: &[UsageSample],
    now_ms: u64,
) -> Result<UsageAck> {
    let cs = c.as_str();
    let mut ack = UsageAck {
        stored: 0,
        duplicates: 0,
    };
    let mut added = UsageTotals::default();
    for s in samples {
        let ps = s.partition.as_str();
        let known: bool = tx
            .q_row(
                "SELECT 1 FROM partition WHERE computer = ?1 AND id = ?2",
                [cs, ps],
                |_| Ok(true),
            )
            .optional()
            .op("look up a partition")?
            .unwrap_or(false);
        if !known {
            return Err(StoreError::NotFound(format!(
                "usage sample of partition {ps}: it is not registered on computer {cs}"
            )));
        }
        // The tree and owner of the instance, when the master still knows it there.
        let (root, owner): (Option<String>, Option<String>) = match &s.instance {
            None => (None, None),
            Some(title) => tx
                .q_row(
                    "SELECT CASE WHEN i.root = '' THEN i.title ELSE i.root END, \
                     (SELECT r.owner FROM instance r WHERE r.root = '' AND r.title = \
                      CASE WHEN i.root = '' THEN i.title ELSE i.root END) \
                     FROM instance i WHERE i.computer = ?1 AND i.partition = ?2 \
                     AND i.title = ?3",
                    [cs, ps, title.as_str()],
                    |r| Ok((Some(r.get::<String>(0)?), r.get::<Option<String>>(1)?)),
                )
                .optional()
                .op("look up the instance of a usage sample")?
                .unwrap_or((None, None)),
        };
        let n = tx
            .exec(
                "INSERT INTO usage_sample (computer, partition, start_ms, end_ms, instance, \
                 root, owner, cpu_ns, memory_bytes, memory_peak_bytes, io_read_bytes, \
                 io_write_bytes, disk_bytes, tasks, folded, received_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) \
                 ON CONFLICT DO NOTHING",
                params![
                    cs,
                    ps,
                    int(c, "start_ms", s.start_ms)?,
                    int(c, "end_ms", s.end_ms)?,
                    s.instance.as_ref().map(|t| t.as_str()),
                    root,
                    owner,
                    int(c, "cpu_ns", s.cpu_ns)?,
                    int(c, "memory_bytes", s.memory_bytes)?,
                    int(c, "memory_peak_bytes", s.memory_peak_bytes)?,
                    int(c, "io_read_bytes", s.io_read_bytes)?,
                    int(c, "io_write_bytes", s.io_write_bytes)?,
                    int(c, "disk_bytes", s.disk_bytes)?,
                    int(c, "tasks", s.tasks)?,
                    i64::from(s.folded),
                    int(c, "received_ms", now_ms)?
                ],
            )
            .op("store a usage sample")?;
        if n == 1 {
            ack.stored += 1;
            let ms = s.end_ms.saturating_sub(s.start_ms) as f64;
            added.cpu_ns += s.cpu_ns as f64;
            added.memory_byte_ms += s.memory_bytes as f64 * ms;
            added.disk_byte_ms += s.disk_bytes as f64 * ms;
            added.io_read_bytes += s.io_read_bytes as f64;
            added.io_write_bytes += s.io_write_bytes as f64;
            added.samples += u64::from(s.folded);
        } else {
            ack.duplicates += 1;
        }
    }
    if added.samples > 0 {
        tx.exec(
            "INSERT INTO usage_total (computer, cpu_ns, memory_byte_ms, disk_byte_ms, \
             io_read_bytes, io_write_bytes, samples) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT (computer) DO UPDATE SET cpu_ns = usage_total.cpu_ns + excluded.cpu_ns, \
             memory_byte_ms = usage_total.memory_byte_ms + excluded.memory_byte_ms, \
             disk_byte_ms = usage_total.disk_byte_ms + excluded.disk_byte_ms, \
             io_read_bytes = usage_total.io_read_bytes + excluded.io_read_bytes, \
             io_write_bytes = usage_total.io_write_bytes + excluded.io_write_bytes, \
             samples = usage_total.samples + excluded.samples",
            params![
                cs,
                added.cpu_ns,
                added.memory_byte_ms,
                added.disk_byte_ms,
                added.io_read_bytes,
                added.io_write_bytes,
                int(c, "samples", added.samples)?
            ],
        )
        .op("add to the computer's usage totals")?;
    }
    Ok(ack)
}

/// Each partition of computer `c` (registration order) and the title of the instance on it.
fn partitions_of(
    tx: &Transaction<'_>,
    c: &ComputerId,
) -> Result<Vec<(PartitionId, Option<InstanceTitle>)>> {
    let found: Vec<(String, Option<String>)> = tx
        .query_map(
            "SELECT p.id, i.title FROM partition p LEFT JOIN instance i \
             ON i.computer = p.computer AND i.partition = p.id \
             WHERE p.computer = ?1 ORDER BY p.seq",
            [c.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .op("list a computer's partitions and instances")?;
    // Ids and titles were checked when stored; one that no longer parses is skipped.
    Ok(found
        .into_iter()
        .filter_map(|(p, t)| {
            Some((
                PartitionId::parse(&p).ok()?,
                t.and_then(|t| InstanceTitle::parse(&t).ok()),
            ))
        })
        .collect())
}
