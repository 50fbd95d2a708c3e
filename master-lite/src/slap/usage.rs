//! Usage over the SLAP wire: the journal (TioSafe XML) a SlapOS node posts with `useComputer`
//! or JSON-RPC `compute_node_usage`, turned into the native usage samples (`store::usage`), so
//! `slapos-master usage` and `/metrics` count what a classic node reports beside what
//! `slapos-node` posts natively.
//!
//! Mapping (slapos.collect's resources; `docs/slap.md`):
//!
//! * a transaction is a period `start_date` → `stop_date` (UTC); one without a readable start
//!   (slapgrid's own `asXML` leaves it empty) cannot be accounted and is skipped;
//! * a movement's `reference` names a partition by id (`slappart3`) or by its user
//!   (`slapuser3` → `slappart3`); the computer's own movements and unknown references are
//!   skipped;
//! * `service_module/cpu_load_percent` (average % of one CPU over the period) → CPU time
//!   `q / 100 × period`; `…/memory_used` and `…/disk_used` (MB, averages) → bytes held over the
//!   period; other resources are skipped.
//!
//! The movements of one partition in one transaction make one sample keyed by the period's
//! start, so a journal sent twice is counted once (as native samples are). What was skipped is
//! logged with the reason; the call answers `OK` (the classic client ignores the body).

use std::collections::BTreeMap;

use slapos_proto::slap::{Journal, journal_date_ms, journal_partition};
use slapos_proto::{ComputerId, InstanceTitle, PartitionId, UsageSample};

use crate::error::ApiError;
use crate::state::{AppState, now_ms};

const MIB: f64 = 1_048_576.0;

/// The samples a journal stands for, and what of it could not be accounted (with why).
#[derive(Debug, Default, PartialEq)]
pub struct JournalUsage {
    /// One sample per partition and transaction.
    pub samples: Vec<UsageSample>,
    /// Skipped transactions and movements, each with its reason.
    pub skipped: Vec<String>,
}

/// Map `journal` onto the `partitions` of computer `c` (each with the instance on it).
pub fn journal_samples(
    c: &ComputerId,
    journal: &Journal,
    partitions: &[(PartitionId, Option<InstanceTitle>)],
) -> JournalUsage {
    let mut out = JournalUsage::default();
    for (n, t) in journal.transactions.iter().enumerate() {
        let n = n + 1;
        let (Some(start), Some(end)) = (
            journal_date_ms(&t.start_date),
            journal_date_ms(&t.stop_date),
        ) else {
            out.skipped.push(format!(
                "transaction {n}: period {:?} to {:?} is not two dates",
                t.start_date, t.stop_date
            ));
            continue;
        };
        if end <= start {
            out.skipped.push(format!(
                "transaction {n}: stop {:?} is not after start {:?}",
                t.stop_date, t.start_date
            ));
            continue;
        }
        let period_ns = (end - start) as f64 * 1e6;
        let mut by_partition: BTreeMap<usize, UsageSample> = BTreeMap::new();
        for m in &t.movements {
            let Some(i) = partition_of(&m.reference, partitions) else {
                let why = if m.reference == c.as_str() {
                    "the computer itself (not a partition)"
                } else {
                    "no such partition on this computer"
                };
                out.skipped.push(format!(
                    "transaction {n}: movement {} of {:?}: {why}",
                    m.resource, m.reference
                ));
                continue;
            };
            let (p, instance) = &partitions[i];
            let s = by_partition.entry(i).or_insert_with(|| UsageSample {
                partition: p.clone(),
                instance: instance.clone(),
                start_ms: start,
                end_ms: end,
                cpu_ns: 0,
                memory_bytes: 0,
                memory_peak_bytes: 0,
                io_read_bytes: 0,
                io_write_bytes: 0,
                disk_bytes: 0,
                tasks: 0,
                folded: 1,
            });
            // Quantities are averages; a negative one is a broken meter, counted as 0.
            let q = m.quantity.max(0.0);
            match m.resource.as_str() {
                "service_module/cpu_load_percent" => s.cpu_ns = (q / 100.0 * period_ns) as u64,
                "service_module/memory_used" => {
                    s.memory_bytes = (q * MIB) as u64;
                    s.memory_peak_bytes = s.memory_bytes;
                }
                "service_module/disk_used" => s.disk_bytes = (q * MIB) as u64,
                other => out.skipped.push(format!(
                    "transaction {n}: movement {other} of {:?}: resource not accounted",
                    m.reference
                )),
            }
        }
        out.samples.extend(by_partition.into_values());
    }
    out
}

/// The index in `partitions` that `reference` names: a partition id, or a partition user
/// `slapuserN` for partition `slappartN` (SlapOS's format names both from one number).
fn partition_of(
    reference: &str,
    partitions: &[(PartitionId, Option<InstanceTitle>)],
) -> Option<usize> {
    let find = |id: &str| partitions.iter().position(|(p, _)| p.as_str() == id);
    find(reference).or_else(|| find(&journal_partition(reference)?))
}

/// Store the usage journal `xml` posted for computer `c` (the caller is authorised): `Ok(None)`
/// for an empty document (nothing to do, as slapproxy), else how many samples were new.
pub(crate) async fn record_journal(
    st: &AppState,
    c: ComputerId,
    xml: &str,
) -> Result<Option<u64>, ApiError> {
    if xml.trim().is_empty() {
        return Ok(None);
    }
    let journal =
        slapos_proto::slap::parse_journal(xml).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let now = now_ms();
    let (ack, skipped) = st
        .db
        .call(move |s| {
            let mut skipped = Vec::new();
            let ack = s.record_mapped_usage(&c, now, |partitions| {
                let usage = journal_samples(&c, &journal, partitions);
                skipped = usage.skipped;
                usage.samples
            })?;
            Ok::<_, crate::store::StoreError>((ack, skipped))
        })
        .await?;
    if !skipped.is_empty() {
        tracing::info!(
            skipped = skipped.len(),
            first = %skipped[0],
            "usage journal: parts not accounted"
        );
    }
    Ok(Some(u64::from(ack.stored)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use slapos_proto::slap::parse_journal;

    fn parts() -> Vec<(PartitionId, Option<InstanceTitle>)> {
        vec![
            (
                PartitionId::parse("slappart0").unwrap(),
                Some(InstanceTitle::parse("web").unwrap()),
            ),
            (PartitionId::parse("slappart1").unwrap(), None),
        ]
    }

    fn movement(resource: &str, reference: &str, q: &str) -> String {
        format!(
            "<movement><resource>{resource}</resource><title>t</title><reference>{reference}\
             </reference><quantity>{q}</quantity><price>0.0</price><VAT/><category/></movement>"
        )
    }

    fn journal(start: &str, stop: &str, movements: &[String]) -> Journal {
        parse_journal(&format!(
            "<journal><transaction type=\"Sale Packing List\"><title>x</title><start_date>{start}\
             </start_date><stop_date>{stop}</stop_date><reference>r</reference>{}</transaction>\
             </journal>",
            movements.concat()
        ))
        .unwrap()
    }

    #[test]
    fn collect_resources_become_one_sample_per_partition_and_period() {
        let c = ComputerId::parse("COMP-1").unwrap();
        let j = journal(
            "2026-12-01 00:00:00",
            "2026-12-01 01:00:00",
            &[
                movement("service_module/cpu_load_percent", "slapuser0", "50"),
                movement("service_module/memory_used", "slapuser0", "128"),
                movement("service_module/disk_used", "slappart0", "2.5"),
                movement("service_module/cpu_load_percent", "slapuser1", "10"),
                movement("service_module/cpu_load_percent", "COMP-1", "30"),
                movement("service_module/zero_emission_ratio", "slapuser0", "1"),
                movement("service_module/cpu_load_percent", "slapuser7", "1"),
            ],
        );
        let u = journal_samples(&c, &j, &parts());
        assert_eq!(u.samples.len(), 2);
        let (a, b) = (&u.samples[0], &u.samples[1]);
        assert_eq!(a.partition.as_str(), "slappart0");
        assert_eq!(a.instance.as_ref().map(InstanceTitle::as_str), Some("web"));
        assert_eq!(a.end_ms - a.start_ms, 3_600_000);
        // Half a CPU for an hour.
        assert_eq!(a.cpu_ns, 1_800_000_000_000);
        assert_eq!(a.memory_bytes, 128 * 1_048_576);
        assert_eq!(a.disk_bytes, 2_621_440);
        assert_eq!(b.partition.as_str(), "slappart1");
        assert_eq!(b.instance, None);
        assert_eq!(b.cpu_ns, 360_000_000_000);
        assert_eq!(u.skipped.len(), 3, "{:?}", u.skipped);
        assert!(
            u.skipped[0].contains("the computer itself"),
            "{:?}",
            u.skipped
        );
        assert!(u.skipped[1].contains("not accounted"), "{:?}", u.skipped);
        assert!(
            u.skipped[2].contains("no such partition"),
            "{:?}",
            u.skipped
        );
    }

    #[test]
    fn a_period_that_cannot_be_read_is_skipped_whole() {
        let c = ComputerId::parse("COMP-1").unwrap();
        let m = [movement(
            "service_module/cpu_load_percent",
            "slappart0",
            "5",
        )];
        // slapgrid's asXML: no start date.
        let u = journal_samples(&c, &journal("", "2026-12-01 at 10:00:00", &m), &parts());
        assert!(u.samples.is_empty());
        assert!(u.skipped[0].contains("not two dates"), "{:?}", u.skipped);
        let u = journal_samples(
            &c,
            &journal("2026-12-01 10:00:00", "2026-12-01 09:00:00", &m),
            &parts(),
        );
        assert!(u.samples.is_empty());
        assert!(u.skipped[0].contains("not after"), "{:?}", u.skipped);
    }
}
