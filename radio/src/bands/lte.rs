//! E-UTRA operating bands and channel numbers (3GPP TS 36.101).
//!
//! [`EUTRA_BANDS`] is table 5.7.3-1 (E-UTRA channel numbers) joined with table 5.5-1 (operating
//! bands) and table 5.6.1-1 (channel bandwidths per band). Frequencies are kept in kHz, so every
//! value is an exact integer (the 100 kHz channel raster and the 1844.9 / 1475.9 MHz band starts
//! included):
//!
//! * `F_DL = F_DL_low + 0.1 MHz · (N_DL − N_Offs-DL)`, `N_DL ∈ [N_Offs-DL, dl_max]`
//! * `F_UL = F_UL_low + 0.1 MHz · (N_UL − N_Offs-UL)`, `N_UL ∈ [N_Offs-UL, ul_max]`
//!
//! TDD bands use one channel number for both directions; SDL bands (29, 32, 46 is TDD, 67, 69,
//! 75, 76) have no uplink and cannot carry a standalone cell. The upper band edge is the last
//! raster point plus 100 kHz (band 1: N_DL 0–599 → 2110–2170 MHz).
//!
//! Limits: bands 1–53 and 65–88 (Rel-17). Bandwidth lists are those of table 5.6.1-1 without the
//! notes (some bandwidths there are allowed only with relaxed sensitivity); NB-IoT and LAA-only
//! rules are not modelled.

use serde::{Deserialize, Serialize};
use std::fmt;

/// How a band shares spectrum between the two directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Duplex {
    /// Paired spectrum, one channel number per direction.
    Fdd,
    /// Unpaired spectrum, the same channel number for both directions.
    Tdd,
    /// Supplementary downlink only.
    Sdl,
}

impl fmt::Display for Duplex {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Duplex::Fdd => "FDD",
            Duplex::Tdd => "TDD",
            Duplex::Sdl => "SDL (downlink only)",
        })
    }
}

/// An LTE channel bandwidth (TS 36.101 table 5.6-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LteBandwidth {
    /// 1.4 MHz, 6 resource blocks.
    #[serde(rename = "1.4")]
    Mhz1_4,
    /// 3 MHz, 15 resource blocks.
    #[serde(rename = "3")]
    Mhz3,
    /// 5 MHz, 25 resource blocks.
    #[serde(rename = "5")]
    Mhz5,
    /// 10 MHz, 50 resource blocks.
    #[serde(rename = "10")]
    Mhz10,
    /// 15 MHz, 75 resource blocks.
    #[serde(rename = "15")]
    Mhz15,
    /// 20 MHz, 100 resource blocks.
    #[serde(rename = "20")]
    Mhz20,
}

use LteBandwidth::*;

impl LteBandwidth {
    /// All bandwidths, narrowest first.
    pub const ALL: [LteBandwidth; 6] = [Mhz1_4, Mhz3, Mhz5, Mhz10, Mhz15, Mhz20];

    /// The bandwidth for a value in MHz (`1.4`, `3`, … `20`).
    pub fn from_mhz(mhz: f64) -> Option<Self> {
        Self::ALL.into_iter().find(|b| (b.mhz() - mhz).abs() < 1e-9)
    }

    /// Channel bandwidth in MHz.
    pub fn mhz(self) -> f64 {
        self.khz() as f64 / 1000.0
    }

    /// Channel bandwidth in kHz.
    pub fn khz(self) -> u32 {
        match self {
            Mhz1_4 => 1400,
            Mhz3 => 3000,
            Mhz5 => 5000,
            Mhz10 => 10_000,
            Mhz15 => 15_000,
            Mhz20 => 20_000,
        }
    }

    /// Transmission bandwidth in resource blocks (`n_rb_dl`, srsENB `n_prb`).
    pub fn n_rb(self) -> u16 {
        match self {
            Mhz1_4 => 6,
            Mhz3 => 15,
            Mhz5 => 25,
            Mhz10 => 50,
            Mhz15 => 75,
            Mhz20 => 100,
        }
    }

    /// Standard sampling rate of this bandwidth in samples per second (FFT size × 15 kHz).
    pub fn sample_rate(self) -> u32 {
        match self {
            Mhz1_4 => 1_920_000,
            Mhz3 => 3_840_000,
            Mhz5 => 7_680_000,
            Mhz10 => 15_360_000,
            Mhz15 => 23_040_000,
            Mhz20 => 30_720_000,
        }
    }
}

impl fmt::Display for LteBandwidth {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} MHz", self.mhz())
    }
}

/// Uplink part of an FDD band.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UlRange {
    /// `F_UL_low` in kHz.
    pub low_khz: u32,
    /// `N_Offs-UL`, the first uplink channel number.
    pub n_offs: u32,
    /// Last uplink channel number.
    pub n_max: u32,
}

/// One row of TS 36.101 table 5.7.3-1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EutraBand {
    /// Band number.
    pub band: u16,
    /// Duplex mode.
    pub duplex: Duplex,
    /// `F_DL_low` in kHz.
    pub dl_low_khz: u32,
    /// `N_Offs-DL`, the first downlink channel number.
    pub dl_n_offs: u32,
    /// Last downlink channel number.
    pub dl_n_max: u32,
    /// Uplink range (FDD only; TDD reuses the downlink numbers, SDL has none).
    pub ul: Option<UlRange>,
    /// Channel bandwidths allowed in this band (table 5.6.1-1).
    pub bandwidths: &'static [LteBandwidth],
}

const fn fdd(
    band: u16,
    dl_low_khz: u32,
    dl_n_offs: u32,
    dl_n_max: u32,
    (ul_low_khz, ul_n_offs, ul_n_max): (u32, u32, u32),
    bandwidths: &'static [LteBandwidth],
) -> EutraBand {
    EutraBand {
        band,
        duplex: Duplex::Fdd,
        dl_low_khz,
        dl_n_offs,
        dl_n_max,
        ul: Some(UlRange {
            low_khz: ul_low_khz,
            n_offs: ul_n_offs,
            n_max: ul_n_max,
        }),
        bandwidths,
    }
}

/// A TDD or SDL band: one range of channel numbers, no separate uplink.
const fn unpaired(
    duplex: Duplex,
    band: u16,
    low_khz: u32,
    n_offs: u32,
    n_max: u32,
    bandwidths: &'static [LteBandwidth],
) -> EutraBand {
    EutraBand {
        band,
        duplex,
        dl_low_khz: low_khz,
        dl_n_offs: n_offs,
        dl_n_max: n_max,
        ul: None,
        bandwidths,
    }
}

const ALL6: &[LteBandwidth] = &[Mhz1_4, Mhz3, Mhz5, Mhz10, Mhz15, Mhz20];
const FROM5: &[LteBandwidth] = &[Mhz5, Mhz10, Mhz15, Mhz20];
const TO10: &[LteBandwidth] = &[Mhz1_4, Mhz3, Mhz5, Mhz10];
const TO15: &[LteBandwidth] = &[Mhz1_4, Mhz3, Mhz5, Mhz10, Mhz15];
const B5_10: &[LteBandwidth] = &[Mhz5, Mhz10];
const B5_15: &[LteBandwidth] = &[Mhz5, Mhz10, Mhz15];
const B3_20: &[LteBandwidth] = &[Mhz3, Mhz5, Mhz10, Mhz15, Mhz20];
const TO5: &[LteBandwidth] = &[Mhz1_4, Mhz3, Mhz5];

/// TS 36.101 table 5.7.3-1, ordered by downlink channel number.
#[rustfmt::skip]
pub static EUTRA_BANDS: &[EutraBand] = &[
    //  band F_DL_low kHz N_Offs-DL N_DL max (F_UL_low kHz, N_Offs-UL, N_UL max)  bandwidths
    fdd(1,  2_110_000,     0,   599, (1_920_000,  18000, 18599), FROM5),
    fdd(2,  1_930_000,   600,  1199, (1_850_000,  18600, 19199), ALL6),
    fdd(3,  1_805_000,  1200,  1949, (1_710_000,  19200, 19949), ALL6),
    fdd(4,  2_110_000,  1950,  2399, (1_710_000,  19950, 20399), ALL6),
    fdd(5,    869_000,  2400,  2649, (  824_000,  20400, 20649), TO10),
    fdd(6,    875_000,  2650,  2749, (  830_000,  20650, 20749), B5_10),
    fdd(7,  2_620_000,  2750,  3449, (2_500_000,  20750, 21449), FROM5),
    fdd(8,    925_000,  3450,  3799, (  880_000,  21450, 21799), TO10),
    fdd(9,  1_844_900,  3800,  4149, (1_749_900,  21800, 22149), FROM5),
    fdd(10, 2_110_000,  4150,  4749, (1_710_000,  22150, 22749), FROM5),
    fdd(11, 1_475_900,  4750,  4949, (1_427_900,  22750, 22949), B5_10),
    fdd(12,   729_000,  5010,  5179, (  699_000,  23010, 23179), TO10),
    fdd(13,   746_000,  5180,  5279, (  777_000,  23180, 23279), B5_10),
    fdd(14,   758_000,  5280,  5379, (  788_000,  23280, 23379), B5_10),
    fdd(17,   734_000,  5730,  5849, (  704_000,  23730, 23849), B5_10),
    fdd(18,   860_000,  5850,  5999, (  815_000,  23850, 23999), B5_15),
    fdd(19,   875_000,  6000,  6149, (  830_000,  24000, 24149), B5_15),
    fdd(20,   791_000,  6150,  6449, (  832_000,  24150, 24449), FROM5),
    fdd(21, 1_495_900,  6450,  6599, (1_447_900,  24450, 24599), B5_15),
    fdd(22, 3_510_000,  6600,  7399, (3_410_000,  24600, 25399), FROM5),
    fdd(23, 2_180_000,  7500,  7699, (2_000_000,  25500, 25699), ALL6),
    fdd(24, 1_525_000,  7700,  8039, (1_626_500,  25700, 26039), B5_10),
    fdd(25, 1_930_000,  8040,  8689, (1_850_000,  26040, 26689), ALL6),
    fdd(26,   859_000,  8690,  9039, (  814_000,  26690, 27039), TO15),
    fdd(27,   852_000,  9040,  9209, (  807_000,  27040, 27209), TO10),
    fdd(28,   758_000,  9210,  9659, (  703_000,  27210, 27659), B3_20),
    unpaired(Duplex::Sdl, 29,   717_000,  9660,  9769, &[Mhz3, Mhz5, Mhz10]),
    fdd(30, 2_350_000,  9770,  9869, (2_305_000,  27660, 27759), B5_10),
    fdd(31,   462_500,  9870,  9919, (  452_500,  27760, 27809), TO5),
    unpaired(Duplex::Sdl, 32, 1_452_000,  9920, 10359, FROM5),
    unpaired(Duplex::Tdd, 33, 1_900_000, 36000, 36199, FROM5),
    unpaired(Duplex::Tdd, 34, 2_010_000, 36200, 36349, B5_15),
    unpaired(Duplex::Tdd, 35, 1_850_000, 36350, 36949, ALL6),
    unpaired(Duplex::Tdd, 36, 1_930_000, 36950, 37549, ALL6),
    unpaired(Duplex::Tdd, 37, 1_910_000, 37550, 37749, FROM5),
    unpaired(Duplex::Tdd, 38, 2_570_000, 37750, 38249, FROM5),
    unpaired(Duplex::Tdd, 39, 1_880_000, 38250, 38649, FROM5),
    unpaired(Duplex::Tdd, 40, 2_300_000, 38650, 39649, FROM5),
    unpaired(Duplex::Tdd, 41, 2_496_000, 39650, 41589, FROM5),
    unpaired(Duplex::Tdd, 42, 3_400_000, 41590, 43589, FROM5),
    unpaired(Duplex::Tdd, 43, 3_600_000, 43590, 45589, FROM5),
    unpaired(Duplex::Tdd, 44,   703_000, 45590, 46589, B3_20),
    unpaired(Duplex::Tdd, 45, 1_447_000, 46590, 46789, FROM5),
    unpaired(Duplex::Tdd, 46, 5_150_000, 46790, 54539, &[Mhz10, Mhz20]),
    unpaired(Duplex::Tdd, 47, 5_855_000, 54540, 55239, &[Mhz10, Mhz20]),
    unpaired(Duplex::Tdd, 48, 3_550_000, 55240, 56739, FROM5),
    unpaired(Duplex::Tdd, 49, 3_550_000, 56740, 58239, &[Mhz10, Mhz20]),
    unpaired(Duplex::Tdd, 50, 1_432_000, 58240, 59089, B3_20),
    unpaired(Duplex::Tdd, 51, 1_427_000, 59090, 59139, &[Mhz3, Mhz5]),
    unpaired(Duplex::Tdd, 52, 3_300_000, 59140, 60139, FROM5),
    unpaired(Duplex::Tdd, 53, 2_483_500, 60140, 60254, TO10),
    fdd(65, 2_110_000, 65536, 66435, (1_920_000, 131_072, 131_971), ALL6),
    fdd(66, 2_110_000, 66436, 67335, (1_710_000, 131_972, 132_671), ALL6),
    unpaired(Duplex::Sdl, 67,   738_000, 67336, 67535, FROM5),
    fdd(68,   753_000, 67536, 67835, (  698_000, 132_672, 132_971), B5_15),
    unpaired(Duplex::Sdl, 69, 2_570_000, 67836, 68335, FROM5),
    fdd(70, 1_995_000, 68336, 68585, (1_695_000, 132_972, 133_121), FROM5),
    fdd(71,   617_000, 68586, 68935, (  663_000, 133_122, 133_471), FROM5),
    fdd(72,   461_000, 68936, 68985, (  451_000, 133_472, 133_521), TO5),
    fdd(73,   460_000, 68986, 69035, (  450_000, 133_522, 133_571), TO5),
    fdd(74, 1_475_000, 69036, 69465, (1_427_000, 133_572, 134_001), ALL6),
    unpaired(Duplex::Sdl, 75, 1_432_000, 69466, 70315, FROM5),
    unpaired(Duplex::Sdl, 76, 1_427_000, 70316, 70365, &[Mhz5]),
    fdd(85,   728_000, 70366, 70545, (  698_000, 134_002, 134_181), B5_10),
    fdd(87,   420_000, 70546, 70595, (  410_000, 134_182, 134_231), TO5),
    fdd(88,   422_000, 70596, 70645, (  412_000, 134_232, 134_281), TO5),
];

impl EutraBand {
    /// Downlink band edges `[low, high]` in kHz.
    pub fn dl_edges_khz(&self) -> (u32, u32) {
        (
            self.dl_low_khz,
            self.dl_low_khz + 100 * (self.dl_n_max - self.dl_n_offs + 1),
        )
    }

    /// Uplink band edges in kHz (TDD: the downlink edges; SDL: none).
    pub fn ul_edges_khz(&self) -> Option<(u32, u32)> {
        match (self.duplex, self.ul) {
            (Duplex::Tdd, _) => Some(self.dl_edges_khz()),
            (_, Some(ul)) => Some((ul.low_khz, ul.low_khz + 100 * (ul.n_max - ul.n_offs + 1))),
            _ => None,
        }
    }

    /// Whether `n` is a downlink channel number of this band.
    pub fn has_dl_earfcn(&self, n: u32) -> bool {
        (self.dl_n_offs..=self.dl_n_max).contains(&n)
    }

    /// Whether `n` is an uplink channel number of this band.
    pub fn has_ul_earfcn(&self, n: u32) -> bool {
        match (self.duplex, self.ul) {
            (Duplex::Tdd, _) => self.has_dl_earfcn(n),
            (_, Some(ul)) => (ul.n_offs..=ul.n_max).contains(&n),
            _ => false,
        }
    }

    /// Downlink carrier frequency of channel `n` in kHz, if `n` belongs to this band.
    pub fn dl_khz(&self, n: u32) -> Option<u32> {
        self.has_dl_earfcn(n)
            .then(|| self.dl_low_khz + 100 * (n - self.dl_n_offs))
    }

    /// Uplink carrier frequency of channel `n` in kHz, if `n` belongs to this band.
    pub fn ul_khz(&self, n: u32) -> Option<u32> {
        match (self.duplex, self.ul) {
            (Duplex::Tdd, _) => self.dl_khz(n),
            (_, Some(ul)) if self.has_ul_earfcn(n) => Some(ul.low_khz + 100 * (n - ul.n_offs)),
            _ => None,
        }
    }

    /// The uplink channel paired with downlink channel `dl`: the same offset into the uplink
    /// range (TS 36.101 fixed duplex distance), or `dl` itself on TDD. `None` when the band has
    /// no uplink or the paired number falls outside the uplink range (band 66's uplink is
    /// narrower than its downlink).
    pub fn default_ul_earfcn(&self, dl: u32) -> Option<u32> {
        if !self.has_dl_earfcn(dl) {
            return None;
        }
        match (self.duplex, self.ul) {
            (Duplex::Tdd, _) => Some(dl),
            (_, Some(ul)) => {
                let n = ul.n_offs + (dl - self.dl_n_offs);
                (n <= ul.n_max).then_some(n)
            }
            _ => None,
        }
    }

    /// Whether `bw` is allowed in this band.
    pub fn allows(&self, bw: LteBandwidth) -> bool {
        self.bandwidths.contains(&bw)
    }
}

/// The band row of `band`.
pub fn band(band: u16) -> Option<&'static EutraBand> {
    EUTRA_BANDS.iter().find(|b| b.band == band)
}

/// The band whose downlink channel numbers contain `n` (the ranges do not overlap).
pub fn band_of_dl_earfcn(n: u32) -> Option<&'static EutraBand> {
    EUTRA_BANDS.iter().find(|b| b.has_dl_earfcn(n))
}

/// Downlink frequency of `n` in kHz (TS 36.101 §5.7.3).
pub fn dl_earfcn_to_khz(n: u32) -> Option<u32> {
    band_of_dl_earfcn(n)?.dl_khz(n)
}

/// The downlink EARFCN of `khz` in `band`, if it lies on the 100 kHz raster inside the band.
pub fn khz_to_dl_earfcn(band: &EutraBand, khz: u32) -> Option<u32> {
    let off = khz.checked_sub(band.dl_low_khz)?;
    if off % 100 != 0 {
        return None;
    }
    let n = band.dl_n_offs + off / 100;
    band.has_dl_earfcn(n).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_disjoint_and_consistent() {
        for w in EUTRA_BANDS.windows(2) {
            assert!(
                w[0].dl_n_max < w[1].dl_n_offs,
                "bands {} and {} overlap",
                w[0].band,
                w[1].band
            );
        }
        for b in EUTRA_BANDS {
            assert!(b.dl_n_offs <= b.dl_n_max, "band {}", b.band);
            assert!(!b.bandwidths.is_empty(), "band {}", b.band);
            if b.duplex == Duplex::Fdd {
                let ul = b.ul.expect("FDD band has an uplink");
                assert!(ul.n_offs <= ul.n_max, "band {}", b.band);
            } else {
                assert!(b.ul.is_none(), "band {}", b.band);
            }
        }
        // Uplink channel numbers of FDD bands do not overlap either.
        let mut ul: Vec<_> = EUTRA_BANDS
            .iter()
            .filter_map(|b| b.ul.map(|u| (u.n_offs, u.n_max, b.band)))
            .collect();
        ul.sort();
        for w in ul.windows(2) {
            assert!(
                w[0].1 < w[1].0,
                "uplink of bands {} and {} overlap",
                w[0].2,
                w[1].2
            );
        }
    }

    /// Band edges from TS 36.101 table 5.5-1 (MHz), independent of the channel-number table.
    #[test]
    fn band_edges_match_table_5_5_1() {
        type Edges = (u16, (f64, f64), Option<(f64, f64)>);
        let edges: &[Edges] = &[
            (1, (2110.0, 2170.0), Some((1920.0, 1980.0))),
            (2, (1930.0, 1990.0), Some((1850.0, 1910.0))),
            (3, (1805.0, 1880.0), Some((1710.0, 1785.0))),
            (4, (2110.0, 2155.0), Some((1710.0, 1755.0))),
            (5, (869.0, 894.0), Some((824.0, 849.0))),
            (7, (2620.0, 2690.0), Some((2500.0, 2570.0))),
            (8, (925.0, 960.0), Some((880.0, 915.0))),
            (12, (729.0, 746.0), Some((699.0, 716.0))),
            (13, (746.0, 756.0), Some((777.0, 787.0))),
            (20, (791.0, 821.0), Some((832.0, 862.0))),
            (24, (1525.0, 1559.0), Some((1626.5, 1660.5))),
            (25, (1930.0, 1995.0), Some((1850.0, 1915.0))),
            (28, (758.0, 803.0), Some((703.0, 748.0))),
            (31, (462.5, 467.5), Some((452.5, 457.5))),
            (32, (1452.0, 1496.0), None),
            (38, (2570.0, 2620.0), Some((2570.0, 2620.0))),
            (40, (2300.0, 2400.0), Some((2300.0, 2400.0))),
            (41, (2496.0, 2690.0), Some((2496.0, 2690.0))),
            (42, (3400.0, 3600.0), Some((3400.0, 3600.0))),
            (46, (5150.0, 5925.0), Some((5150.0, 5925.0))),
            (48, (3550.0, 3700.0), Some((3550.0, 3700.0))),
            (66, (2110.0, 2200.0), Some((1710.0, 1780.0))),
            (70, (1995.0, 2020.0), Some((1695.0, 1710.0))),
            (71, (617.0, 652.0), Some((663.0, 698.0))),
            (74, (1475.0, 1518.0), Some((1427.0, 1470.0))),
            (85, (728.0, 746.0), Some((698.0, 716.0))),
        ];
        let khz = |(a, b): (f64, f64)| ((a * 1000.0).round() as u32, (b * 1000.0).round() as u32);
        for &(n, dl, ul) in edges {
            let b = band(n).unwrap();
            assert_eq!(b.dl_edges_khz(), khz(dl), "band {n} DL");
            assert_eq!(b.ul_edges_khz(), ul.map(khz), "band {n} UL");
        }
    }

    /// Published EARFCN ↔ frequency pairs (36.101 worked values and common deployments).
    #[test]
    fn earfcn_to_frequency_published_values() {
        type Case = (u32, u16, f64, Option<(u32, f64)>);
        let cases: &[Case] = &[
            // dl_earfcn, band, F_DL MHz, (ul_earfcn, F_UL MHz)
            (0, 1, 2110.0, Some((18000, 1920.0))),
            (100, 1, 2120.0, Some((18100, 1930.0))), // simpleran test_enb: RU1.CELL
            (300, 1, 2140.0, Some((18300, 1950.0))),
            (599, 1, 2169.9, Some((18599, 1979.9))),
            (600, 2, 1930.0, Some((18600, 1850.0))),
            (1200, 3, 1805.0, Some((19200, 1710.0))),
            (1575, 3, 1842.5, Some((19575, 1747.5))),
            (1949, 3, 1879.9, Some((19949, 1784.9))),
            (2525, 5, 881.5, Some((20525, 836.5))),
            (3350, 7, 2680.0, Some((21350, 2560.0))), // srsRAN rr.conf example
            (3100, 7, 2655.0, Some((21100, 2535.0))),
            (3400, 7, 2685.0, Some((21400, 2565.0))), // srsENB default dl_earfcn
            (3449, 7, 2689.9, Some((21449, 2569.9))),
            (3450, 8, 925.0, Some((21450, 880.0))),
            (3800, 9, 1844.9, Some((21800, 1749.9))),
            (4750, 11, 1475.9, Some((22750, 1427.9))),
            (5230, 13, 751.0, Some((23230, 782.0))),
            (6300, 20, 806.0, Some((24300, 847.0))),
            (6449, 20, 820.9, Some((24449, 861.9))),
            (9210, 28, 758.0, Some((27210, 703.0))),
            (9435, 28, 780.5, Some((27435, 725.5))),
            (9660, 29, 717.0, None),
            (38000, 38, 2595.0, Some((38000, 2595.0))),
            (38650, 40, 2300.0, Some((38650, 2300.0))),
            (39150, 40, 2350.0, Some((39150, 2350.0))),
            (40200, 41, 2551.0, Some((40200, 2551.0))), // simpleran test_enb: RU2.CELL
            (41589, 41, 2689.9, Some((41589, 2689.9))),
            (42590, 42, 3500.0, Some((42590, 3500.0))),
            (55990, 48, 3625.0, Some((55990, 3625.0))),
            (66436, 66, 2110.0, Some((131972, 1710.0))),
            (66886, 66, 2155.0, Some((132422, 1755.0))),
            (68586, 71, 617.0, Some((133122, 663.0))),
            (70645, 88, 426.9, Some((134281, 416.9))),
        ];
        for &(dl, bandn, fdl, ul) in cases {
            let b = band_of_dl_earfcn(dl).unwrap_or_else(|| panic!("no band for {dl}"));
            assert_eq!(b.band, bandn, "band of {dl}");
            let mhz = |k: u32| k as f64 / 1000.0;
            assert!(
                (mhz(b.dl_khz(dl).unwrap()) - fdl).abs() < 1e-9,
                "F_DL of {dl}"
            );
            match ul {
                Some((n_ul, ful)) => {
                    assert_eq!(b.default_ul_earfcn(dl), Some(n_ul), "UL of {dl}");
                    assert!(
                        (mhz(b.ul_khz(n_ul).unwrap()) - ful).abs() < 1e-9,
                        "F_UL of {n_ul}"
                    );
                }
                None => assert_eq!(b.default_ul_earfcn(dl), None),
            }
            assert_eq!(khz_to_dl_earfcn(b, b.dl_khz(dl).unwrap()), Some(dl));
        }
    }

    #[test]
    fn gaps_and_out_of_table_numbers_have_no_band() {
        for n in [10_360, 17_999, 35_999, 60_255, 65_535, 70_646, u32::MAX] {
            assert!(band_of_dl_earfcn(n).is_none(), "{n}");
        }
        // Band 66: the uplink is 70 MHz, the downlink 90 MHz; the top 20 MHz has no pair.
        let b66 = band(66).unwrap();
        assert_eq!(b66.default_ul_earfcn(67135), Some(132671));
        assert_eq!(b66.default_ul_earfcn(67136), None);
        assert_eq!(khz_to_dl_earfcn(band(1).unwrap(), 2_110_050), None);
    }

    #[test]
    fn bandwidths_per_band() {
        assert!(band(1).unwrap().allows(Mhz20));
        assert!(!band(1).unwrap().allows(Mhz1_4));
        assert!(band(3).unwrap().allows(Mhz1_4));
        assert!(!band(5).unwrap().allows(Mhz15));
        assert!(!band(13).unwrap().allows(Mhz20));
        assert!(!band(46).unwrap().allows(Mhz5));
        assert_eq!(LteBandwidth::from_mhz(1.4), Some(Mhz1_4));
        assert_eq!(LteBandwidth::from_mhz(7.0), None);
        assert_eq!(Mhz20.n_rb(), 100);
    }
}
