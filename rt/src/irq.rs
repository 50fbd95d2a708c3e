//! IRQ affinity steering: keep device interrupts off reserved CPUs, restore them afterwards.
//!
//! Stateless in the sense that matters: the caller keeps the *original* affinity of every IRQ it
//! changed (`originals`), and each call recomputes the target as `original ∖ reserved` for the
//! current set of reserved CPUs. With no CPU reserved, every original is written back and the
//! map empties. Several partitions reserving and releasing in any order therefore never leave
//! an IRQ on a stale value.
//!
//! Limits: the kernel refuses some IRQs (per-CPU and managed interrupts answer EIO); those are
//! reported as unsteerable, not as errors. An IRQ whose original affinity lies entirely inside
//! the reserved CPUs is left alone (there is nowhere to move it).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cpulist::CpuList;
use crate::error::Result;
use crate::host::HostPaths;
use crate::kfs;

/// Original affinities of what was changed, persisted by the manager.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IrqOriginals {
    /// IRQ number → original `smp_affinity_list`.
    #[serde(default)]
    pub irqs: BTreeMap<u32, String>,
    /// Original `/proc/irq/default_smp_affinity` (hex mask), when changed.
    #[serde(default)]
    pub default_mask: Option<String>,
}

impl IrqOriginals {
    /// True when nothing is currently steered.
    pub fn is_empty(&self) -> bool {
        self.irqs.is_empty() && self.default_mask.is_none()
    }
}

/// What a steering pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IrqOutcome {
    /// IRQs whose affinity was written (steered or restored).
    pub changed: Vec<u32>,
    /// IRQs that stay on reserved CPUs, with the reason (kernel refusal, no other CPU).
    pub unsteerable: Vec<(u32, String)>,
}

/// Where something whose original affinity is `original` goes while `reserved` is reserved:
/// `original ∖ reserved`, or `original` itself when nothing would be left. `Err` (the reason)
/// when it stays on reserved CPUs because all its CPUs are reserved. Shared with
/// [`kthread`](crate::kthread).
pub(crate) fn away_from(original: &CpuList, reserved: &CpuList) -> Result<CpuList, String> {
    let target = original.difference(reserved);
    if !target.is_empty() {
        Ok(target)
    } else if original.is_empty() || reserved.is_empty() {
        Ok(original.clone())
    } else {
        Err(format!("only allowed on reserved CPUs {original}"))
    }
}

/// The numeric subdirectories of `dir` (IRQs, pids) and the `remembered` ones, sorted, once
/// each: what a pass visits. Shared with [`kthread`](crate::kthread).
pub(crate) fn numbered_subdirs<'a, T>(
    dir: &std::path::Path,
    remembered: impl Iterator<Item = &'a T>,
) -> Result<Vec<T>>
where
    T: std::str::FromStr + Ord + Copy + 'a,
{
    let mut numbers: Vec<T> = kfs::subdirs(dir)?
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect();
    numbers.extend(remembered.copied());
    numbers.sort_unstable();
    numbers.dedup();
    Ok(numbers)
}

/// Steers every `/proc/irq/<n>/smp_affinity_list` and `default_smp_affinity` away from
/// `reserved` (restores everything when `reserved` is empty), updating `originals`.
pub fn steer(
    paths: &HostPaths,
    reserved: &CpuList,
    originals: &mut IrqOriginals,
) -> Result<IrqOutcome> {
    let irq_dir = paths.resolve("/proc/irq");
    let mut out = IrqOutcome::default();
    for irq in numbered_subdirs(&irq_dir, originals.irqs.keys())? {
        let file = irq_dir.join(irq.to_string()).join("smp_affinity_list");
        let Some(text) = kfs::read_opt(&file)? else {
            // The IRQ went away (device removed): forget it.
            originals.irqs.remove(&irq);
            continue;
        };
        let current = text.trim().to_owned();
        let original = originals
            .irqs
            .get(&irq)
            .cloned()
            .unwrap_or_else(|| current.clone());
        let Ok(orig_cpus) = CpuList::parse(&original) else {
            out.unsteerable
                .push((irq, format!("unparsable affinity `{original}`")));
            continue;
        };
        let target_text = match away_from(&orig_cpus, reserved) {
            Ok(t) if t != orig_cpus => t.to_string(),
            Ok(_) => original.clone(),
            Err(why) => {
                out.unsteerable.push((irq, why));
                original.clone()
            }
        };
        if CpuList::parse(&current).ok().as_ref()
            != Some(&CpuList::parse(&target_text).unwrap_or_default())
        {
            match kfs::write(&file, &target_text) {
                Ok(()) => out.changed.push(irq),
                Err(e) => {
                    out.unsteerable.push((irq, e.to_string()));
                    // Nothing changed; keep the original only if an earlier pass changed it.
                    if !originals.irqs.contains_key(&irq) {
                        continue;
                    }
                }
            }
        }
        if target_text == original || reserved.is_empty() {
            originals.irqs.remove(&irq);
        } else {
            originals.irqs.insert(irq, original);
        }
    }
    steer_default_mask(paths, reserved, originals, &mut out)?;
    Ok(out)
}

fn steer_default_mask(
    paths: &HostPaths,
    reserved: &CpuList,
    originals: &mut IrqOriginals,
    out: &mut IrqOutcome,
) -> Result<()> {
    let file = paths.resolve("/proc/irq/default_smp_affinity");
    let Some(text) = kfs::read_opt(&file)? else {
        return Ok(());
    };
    let current = text.trim().to_owned();
    let groups = current.split(',').count();
    let original = originals
        .default_mask
        .clone()
        .unwrap_or_else(|| current.clone());
    let Ok(orig_cpus) = CpuList::parse_mask(&original) else {
        return Ok(());
    };
    let target = orig_cpus.difference(reserved);
    let target_text = if target.is_empty() || target == orig_cpus {
        original.clone()
    } else {
        target.to_mask(groups)
    };
    if CpuList::parse_mask(&current).ok() != CpuList::parse_mask(&target_text).ok()
        && let Err(e) = kfs::write(&file, &target_text)
    {
        out.unsteerable
            .push((u32::MAX, format!("default_smp_affinity: {e}")));
        return Ok(());
    }
    originals.default_mask = if reserved.is_empty() || target_text == original {
        None
    } else {
        Some(original)
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::tests::put;

    fn affinity(root: &std::path::Path, irq: u32) -> String {
        std::fs::read_to_string(root.join(format!("proc/irq/{irq}/smp_affinity_list")))
            .unwrap()
            .trim()
            .to_owned()
    }

    #[test]
    fn steers_away_and_restores_in_any_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        put(root, "proc/irq/24/smp_affinity_list", "0-3\n");
        put(root, "proc/irq/25/smp_affinity_list", "2\n");
        put(root, "proc/irq/26/smp_affinity_list", "1,3\n");
        put(root, "proc/irq/default_smp_affinity", "0000000f\n");
        let paths = HostPaths::under(root);
        let mut orig = IrqOriginals::default();

        // Partition A reserves CPU 3.
        let out = steer(&paths, &CpuList::parse("3").unwrap(), &mut orig).unwrap();
        assert_eq!(affinity(root, 24), "0-2");
        assert_eq!(affinity(root, 25), "2");
        assert_eq!(affinity(root, 26), "1");
        assert_eq!(out.changed, vec![24, 26]);
        assert_eq!(
            std::fs::read_to_string(root.join("proc/irq/default_smp_affinity")).unwrap(),
            "00000007"
        );

        // Partition B adds CPUs 1-2: IRQ 25 can only run on 2 and stays; 26 keeps its original.
        let out = steer(&paths, &CpuList::parse("1-3").unwrap(), &mut orig).unwrap();
        assert_eq!(affinity(root, 24), "0");
        assert_eq!(affinity(root, 25), "2");
        assert_eq!(
            affinity(root, 26),
            "1,3",
            "1,3 minus 1-3 is empty: original kept"
        );
        assert!(out.unsteerable.iter().any(|(i, _)| *i == 25), "{out:?}");
        assert_eq!(orig.irqs.get(&24).map(String::as_str), Some("0-3"));

        // A releases CPU 3 first: 24 recomputed from its *original*, not from the stale value.
        steer(&paths, &CpuList::parse("1-2").unwrap(), &mut orig).unwrap();
        assert_eq!(affinity(root, 24), "0,3");
        assert_eq!(affinity(root, 26), "3");

        // B releases: everything back, nothing remembered.
        steer(&paths, &CpuList::new(), &mut orig).unwrap();
        assert_eq!(affinity(root, 24), "0-3");
        assert_eq!(affinity(root, 25), "2");
        assert_eq!(affinity(root, 26), "1,3");
        assert_eq!(
            std::fs::read_to_string(root.join("proc/irq/default_smp_affinity")).unwrap(),
            "0000000f"
        );
        assert!(orig.is_empty(), "{orig:?}");
    }

    #[test]
    fn refused_writes_are_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // A kernel file that reads as a CPU list but refuses writes even for root, like a managed IRQ.
        let possible = std::path::Path::new("/sys/devices/system/cpu/possible");
        let cpus = CpuList::parse(&std::fs::read_to_string(possible).unwrap()).unwrap();
        let Some(last) = cpus.iter().last().filter(|_| cpus.len() > 1) else {
            eprintln!("skip: a single possible CPU leaves nothing to steer");
            return;
        };
        std::fs::create_dir_all(root.join("proc/irq/30")).unwrap();
        std::os::unix::fs::symlink(possible, root.join("proc/irq/30/smp_affinity_list")).unwrap();
        put(root, "proc/irq/31/smp_affinity_list", &format!("{cpus}\n"));
        let mut orig = IrqOriginals::default();
        let paths = HostPaths::under(root);
        let reserved: CpuList = [last].into_iter().collect();
        let out = steer(&paths, &reserved, &mut orig).unwrap();
        assert_eq!(out.changed, vec![31]);
        assert_eq!(out.unsteerable.len(), 1, "{out:?}");
        assert_eq!(out.unsteerable[0].0, 30);
        assert!(out.unsteerable[0].1.contains("failed to write"), "{out:?}");
        assert!(
            !orig.irqs.contains_key(&30),
            "nothing changed, nothing to restore"
        );
        steer(&paths, &CpuList::new(), &mut orig).unwrap();
        assert_eq!(affinity(root, 31), cpus.to_string());
        assert!(orig.is_empty());
    }
}
