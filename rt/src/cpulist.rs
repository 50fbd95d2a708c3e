//! CPU sets in the two text forms the kernel uses: lists (`0-3,6`, as in `cpuset.cpus`,
//! `smp_affinity_list`, `/sys/devices/system/cpu/online`) and hex masks (`00000000,00000003`, as in
//! `/proc/irq/default_smp_affinity`).

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

/// An ordered set of CPU numbers. Serialises as a JSON array of numbers; `Display` gives the
/// kernel list form (`1-3,5`, empty string for the empty set).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CpuList(BTreeSet<u32>);

/// A CPU list or mask that could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid CPU {kind} `{text}`")]
pub struct CpuListParseError {
    /// "list" or "mask".
    pub kind: &'static str,
    /// The offending text.
    pub text: String,
}

/// Largest CPU number accepted when parsing, so a corrupt `0-4294967295` cannot allocate 4 G entries.
const MAX_CPU: u32 = 1 << 16;

impl CpuList {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses the kernel list form: comma-separated numbers and inclusive ranges; blank is empty.
    pub fn parse(text: &str) -> Result<Self, CpuListParseError> {
        let err = || CpuListParseError {
            kind: "list",
            text: text.trim().to_owned(),
        };
        let mut set = BTreeSet::new();
        for part in text
            .trim()
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (a.trim(), b.trim()),
                None => (part, part),
            };
            let lo: u32 = lo.parse().map_err(|_| err())?;
            let hi: u32 = hi.parse().map_err(|_| err())?;
            if lo > hi || hi > MAX_CPU {
                return Err(err());
            }
            set.extend(lo..=hi);
        }
        Ok(Self(set))
    }

    /// Parses a hex mask as in `/proc/irq/default_smp_affinity`: 32-bit groups separated by commas,
    /// most significant group first.
    pub fn parse_mask(text: &str) -> Result<Self, CpuListParseError> {
        let err = || CpuListParseError {
            kind: "mask",
            text: text.trim().to_owned(),
        };
        let mut set = BTreeSet::new();
        let groups: Vec<&str> = text.trim().split(',').collect();
        for (i, group) in groups.iter().rev().enumerate() {
            let word = u32::from_str_radix(group.trim(), 16).map_err(|_| err())?;
            let base = u32::try_from(i * 32).map_err(|_| err())?;
            if base > MAX_CPU {
                return Err(err());
            }
            set.extend((0..32).filter(|b| word & (1 << b) != 0).map(|b| base + b));
        }
        Ok(Self(set))
    }

    /// Formats as a hex mask with `groups` 32-bit groups (at least enough for the highest CPU),
    /// the form the kernel prints, so a value read and written back keeps its width.
    pub fn to_mask(&self, groups: usize) -> String {
        let needed = self.0.last().map_or(1, |&c| c as usize / 32 + 1);
        let n = groups.max(needed);
        let mut words = vec![0u32; n];
        for &c in &self.0 {
            words[c as usize / 32] |= 1 << (c % 32);
        }
        words
            .iter()
            .rev()
            .map(|w| format!("{w:08x}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Number of CPUs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when no CPU is in the set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when `cpu` is in the set.
    pub fn contains(&self, cpu: u32) -> bool {
        self.0.contains(&cpu)
    }

    /// Adds one CPU.
    pub fn insert(&mut self, cpu: u32) {
        self.0.insert(cpu);
    }

    /// CPUs in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().copied()
    }

    /// `self ∖ other`.
    pub fn difference(&self, other: &Self) -> Self {
        Self(self.0.difference(&other.0).copied().collect())
    }

    /// `self ∪ other`.
    pub fn union(&self, other: &Self) -> Self {
        Self(self.0.union(&other.0).copied().collect())
    }

    /// `self ∩ other`.
    pub fn intersection(&self, other: &Self) -> Self {
        Self(self.0.intersection(&other.0).copied().collect())
    }

    /// True when every CPU of `self` is in `other`.
    pub fn is_subset(&self, other: &Self) -> bool {
        self.0.is_subset(&other.0)
    }
}

impl FromIterator<u32> for CpuList {
    fn from_iter<I: IntoIterator<Item = u32>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl fmt::Display for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut iter = self.0.iter().copied().peekable();
        while let Some(lo) = iter.next() {
            let mut hi = lo;
            while iter.peek() == Some(&(hi + 1)) {
                hi += 1;
                iter.next();
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_round_trip_compacts_ranges() {
        let l = CpuList::parse(" 0-2,5, 7-8\n").unwrap();
        assert_eq!(l.iter().collect::<Vec<_>>(), vec![0, 1, 2, 5, 7, 8]);
        assert_eq!(l.to_string(), "0-2,5,7-8");
        assert_eq!(CpuList::parse("").unwrap(), CpuList::new());
        assert_eq!(CpuList::new().to_string(), "");
        assert_eq!(CpuList::parse("3,1,2").unwrap().to_string(), "1-3");
    }

    #[test]
    fn list_rejects_garbage() {
        for bad in ["a", "3-1", "1-", "0-4294967295", "1,,x"] {
            let e = CpuList::parse(bad).unwrap_err();
            assert_eq!(e.kind, "list", "{bad}");
        }
    }

    #[test]
    fn mask_round_trip_keeps_width() {
        let m = CpuList::parse_mask("00000000,00000003\n").unwrap();
        assert_eq!(m.to_string(), "0-1");
        assert_eq!(m.to_mask(2), "00000000,00000003");
        let hi = CpuList::parse_mask("1,80000001").unwrap();
        assert_eq!(hi.to_string(), "0,31-32");
        assert_eq!(CpuList::parse("1").unwrap().to_mask(1), "00000002");
        assert!(CpuList::parse_mask("xyz").is_err());
    }

    #[test]
    fn set_operations() {
        let a = CpuList::parse("0-3").unwrap();
        let b = CpuList::parse("2-5").unwrap();
        assert_eq!(a.difference(&b).to_string(), "0-1");
        assert_eq!(a.union(&b).to_string(), "0-5");
        assert_eq!(a.intersection(&b).to_string(), "2-3");
        assert!(CpuList::parse("1-2").unwrap().is_subset(&a));
        assert!(!b.is_subset(&a));
        assert_eq!(serde_json::to_string(&b).unwrap(), "[2,3,4,5]");
    }
}
