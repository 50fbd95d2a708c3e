//! Linux CPU list syntax (`0-3,6,8-9`), as in `cpuset.cpus`, `isolcpus=` and the node's
//! `rt_cpus` label.

use std::fmt::Write as _;

/// Parses a CPU list. Empty input is the empty list. Duplicates are merged; the result is sorted.
/// `isolcpus=` flag prefixes (`managed_irq,domain,`) are skipped.
pub fn parse(s: &str) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    for part in s.trim().split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if part.chars().all(|c| c.is_ascii_alphabetic() || c == '_') {
            continue; // isolcpus flags such as `domain`, `managed_irq`, `nohz`
        }
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let a: u32 = a
            .trim()
            .parse()
            .map_err(|_| format!("bad CPU number {a:?} in {s:?}"))?;
        let b: u32 = b
            .trim()
            .parse()
            .map_err(|_| format!("bad CPU number {b:?} in {s:?}"))?;
        if a > b {
            return Err(format!("descending range {part:?} in {s:?}"));
        }
        if b - a > 65_536 {
            return Err(format!("range {part:?} is too large"));
        }
        out.extend(a..=b);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Formats a sorted CPU list compactly (`[0,1,2,5]` → `0-2,5`).
pub fn format(cpus: &[u32]) -> String {
    let mut v = cpus.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < v.len() {
        let start = v[i];
        let mut end = start;
        while i + 1 < v.len() && v[i + 1] == end + 1 {
            i += 1;
            end = v[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            let _ = write!(out, "{start}");
        } else {
            let _ = write!(out, "{start}-{end}");
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_format_round_trip() {
        assert_eq!(parse("0-3,6,8-9").unwrap(), vec![0, 1, 2, 3, 6, 8, 9]);
        assert_eq!(parse(" 2 ").unwrap(), vec![2]);
        assert_eq!(parse("").unwrap(), Vec::<u32>::new());
        assert_eq!(parse("managed_irq,domain,2-3").unwrap(), vec![2, 3]);
        assert_eq!(parse("3,1-2,2").unwrap(), vec![1, 2, 3]);
        assert_eq!(format(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
        assert_eq!(format(&[]), "");
        assert!(parse("3-1").is_err());
        assert!(parse("a-b").is_err());
        assert!(parse("0-99999999").is_err());
    }
}
