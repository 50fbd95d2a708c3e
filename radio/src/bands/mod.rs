//! 3GPP frequency tables as data: E-UTRA ([`lte`]) and NR ([`nr`]).

pub mod lte;
pub mod nr;

/// A kHz value as MHz text without trailing zeros (`1844900` → `1844.9`).
pub fn mhz(khz: u64) -> String {
    let s = format!("{}.{:03}", khz / 1000, khz % 1000);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn mhz_formatting() {
        assert_eq!(super::mhz(2_110_000), "2110");
        assert_eq!(super::mhz(1_844_900), "1844.9");
        assert_eq!(super::mhz(3_489_420), "3489.42");
    }
}
