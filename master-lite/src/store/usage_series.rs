//! Usage over time: the samples of [`super::usage`] summed into fixed time buckets per
//! instance, for charts (the web console, `crate::console`). Accounting stays in
//! `usage_report`; this is the same table read per `(computer, partition, instance, bucket)`.
//!
//! A sample falls in the bucket holding its period's end (`end_ms`), as in `usage_report`.
//! Samples of free partitions (no instance) are left out: a chart is about an instance.

use serde::Serialize;

use super::error::{DbContext, StoreError};
use super::{Result, Store};

/// Buckets one series query may span (a wider window needs wider buckets).
pub const MAX_BUCKETS: u64 = 1_000;

/// One bucket of one instance's usage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsagePoint {
    /// Computer of the partition.
    pub computer: String,
    /// Partition measured.
    pub partition: String,
    /// Instance the node ran there.
    pub instance: String,
    /// Start of the bucket, unix ms (a multiple of the bucket width).
    pub at_ms: u64,
    /// CPU seconds consumed over the samples ending in the bucket.
    pub cpu_seconds: f64,
    /// Mean memory over those samples (weighted by their periods), bytes.
    pub memory_bytes: f64,
    /// Largest partition size at the end of those samples, bytes.
    pub disk_bytes: u64,
    /// Milliseconds of measurement the bucket holds (its periods summed).
    pub measured_ms: u64,
}

impl Store {
    /// Per instance and bucket of `bucket_ms`, the samples whose period ends in
    /// `(since_ms, until_ms]`; ordered by computer, partition, instance and time.
    pub fn usage_series(
        &mut self,
        since_ms: u64,
        until_ms: u64,
        bucket_ms: u64,
    ) -> Result<Vec<UsagePoint>> {
        if until_ms < since_ms || bucket_ms == 0 {
            return Err(StoreError::Invalid(format!(
                "usage series: window ({since_ms}, {until_ms}] with buckets of {bucket_ms} ms"
            )));
        }
        if (until_ms - since_ms) / bucket_ms > MAX_BUCKETS {
            return Err(StoreError::Invalid(format!(
                "usage series: ({since_ms}, {until_ms}] in buckets of {bucket_ms} ms is more \
                 than {MAX_BUCKETS} buckets"
            )));
        }
        let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let (since, until, bucket) = (int(since_ms), int(until_ms), int(bucket_ms));
        // Floating-point sums as in `usage_report` (PostgreSQL's SUM of BIGINT is NUMERIC).
        let sql = "SELECT computer, partition, instance, (end_ms / ?3) * ?3 AS b, \
                   SUM(CAST(cpu_ns AS DOUBLE PRECISION)), \
                   SUM(CAST(memory_bytes AS DOUBLE PRECISION) * (end_ms - start_ms)), \
                   MAX(disk_bytes), SUM(CAST(end_ms - start_ms AS DOUBLE PRECISION)) \
                   FROM usage_sample WHERE end_ms > ?1 AND end_ms <= ?2 \
                   AND instance IS NOT NULL \
                   GROUP BY computer, partition, instance, b \
                   ORDER BY computer, partition, instance, b";
        let tx = self.read()?;
        tx.query_map(sql, [since, until, bucket], |r| {
            let measured: f64 = r.get(7)?;
            Ok(UsagePoint {
                computer: r.get(0)?,
                partition: r.get(1)?,
                instance: r.get(2)?,
                at_ms: r.get::<i64>(3)?.max(0) as u64,
                cpu_seconds: r.get::<f64>(4)? / 1e9,
                memory_bytes: if measured > 0.0 {
                    r.get::<f64>(5)? / measured
                } else {
                    0.0
                },
                disk_bytes: r.get::<i64>(6)?.max(0) as u64,
                measured_ms: measured.max(0.0) as u64,
            })
        })
        .op("sum usage samples per bucket")
    }
}

#[cfg(test)]
mod tests {
    use slapos_proto::{
        ComputerId, InstanceTitle, PartitionId, PartitionSpec, RegisterComputer, UsageBatch,
        UsageSample,
    };

    use super::*;

    fn sample(p: &str, instance: Option<&str>, start: u64, end: u64) -> UsageSample {
        UsageSample {
            partition: PartitionId::parse(p).expect("partition"),
            instance: instance.map(|t| InstanceTitle::parse(t).expect("title")),
            start_ms: start,
            end_ms: end,
            cpu_ns: 2_000_000_000,
            memory_bytes: 100 * (end - start),
            memory_peak_bytes: 0,
            io_read_bytes: 0,
            io_write_bytes: 0,
            disk_bytes: end,
            tasks: 1,
            folded: 1,
        }
    }

    #[test]
    fn samples_are_summed_per_instance_and_bucket() {
        let mut s = Store::open_in_memory(0).expect("store");
        let c = ComputerId::parse("COMP-1").expect("computer");
        let spec = |id: &str| PartitionSpec {
            id: PartitionId::parse(id).expect("partition"),
            addresses: vec![],
            interface: None,
            uid: None,
        };
        s.register(
            &RegisterComputer {
                id: c.clone(),
                labels: Default::default(),
                partitions: vec![spec("p0"), spec("p1")],
            },
            0,
        )
        .expect("register");
        let batch = UsageBatch {
            samples: vec![
                sample("p0", Some("web"), 0, 1_000),
                sample("p0", Some("web"), 1_000, 3_000),
                sample("p0", Some("web"), 60_000, 61_000),
                sample("p1", None, 0, 1_000),
            ],
        };
        s.record_usage(&c, &batch, 1).expect("record");
        let pts = s.usage_series(0, 120_000, 60_000).expect("series");
        assert_eq!(pts.len(), 2, "{pts:?}");
        let (a, b) = (&pts[0], &pts[1]);
        assert_eq!((a.instance.as_str(), a.at_ms, b.at_ms), ("web", 0, 60_000));
        assert!((a.cpu_seconds - 4.0).abs() < 1e-9, "{a:?}");
        // Memory 100 B per ms of period in each sample: mean over the bucket, weighted.
        assert!((a.memory_bytes - (100_000.0 + 200_000.0 * 2.0) / 3.0).abs() < 1e-6);
        assert_eq!((a.disk_bytes, a.measured_ms), (3_000, 3_000));
        assert!(s.usage_series(0, 10, 0).is_err());
        let err = s.usage_series(0, 10_000_000, 1).unwrap_err();
        assert!(err.to_string().contains("buckets"), "{err}");
    }
}
