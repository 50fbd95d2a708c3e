//! NR frequency rasters and operating bands (3GPP TS 38.104, TS 38.101-1/-2).
//!
//! * Global frequency raster (TS 38.104 §5.4.2.1, table 5.4.2.1-1):
//!   `F_REF = F_REF-Offs + ΔF_Global · (N_REF − N_REF-Offs)` with three segments —
//!   0–3000 MHz at 5 kHz, 3000–24250 MHz at 15 kHz, 24250–100000 MHz at 60 kHz.
//! * Synchronization raster (§5.4.3.1, table 5.4.3.1-1): GSCN ↔ `SS_REF`, 1.2 MHz + M·50 kHz
//!   below 3 GHz, 1.44 MHz steps to 24.25 GHz, 17.28 MHz steps above.
//! * Operating bands (table 5.2-1 FR1, 5.2-2 FR2) with the channel raster of each band
//!   (table 5.4.2.3-1: first/step/last `N_REF`), the SS block subcarrier spacings (table 5.4.3.3-1)
//!   and the channel bandwidths of TS 38.101-1 table 5.3.5-1 / 38.101-2 table 5.3.5-1 (union over
//!   subcarrier spacings, Rel-17).
//! * Transmission bandwidth in resource blocks per (SCS, channel bandwidth): TS 38.101-1 table
//!   5.3.2-1 and 38.101-2 table 5.3.2-1.
//!
//! All frequencies are integer kHz: every raster point of all three segments is an exact kHz.
//!
//! Limits: the per-band GSCN ranges of table 5.4.3.3-1 are not modelled (an SSB is checked to be
//! on the global sync raster, inside the band and inside the carrier); bands n46/n96/n102 use
//! their full range with a 15 kHz step rather than the listed unlicensed channel positions.

use serde::{Deserialize, Serialize};
use std::fmt;

/// How an NR band is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NrDuplex {
    /// Paired spectrum.
    Fdd,
    /// Unpaired spectrum, uplink and downlink share one range.
    Tdd,
    /// Supplementary downlink only.
    Sdl,
    /// Supplementary uplink only.
    Sul,
}

impl fmt::Display for NrDuplex {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            NrDuplex::Fdd => "FDD",
            NrDuplex::Tdd => "TDD",
            NrDuplex::Sdl => "SDL (downlink only)",
            NrDuplex::Sul => "SUL (uplink only)",
        })
    }
}

/// A frequency range of a band and its channel raster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NrRange {
    /// Lower band edge, kHz.
    pub low_khz: u64,
    /// Upper band edge, kHz.
    pub high_khz: u64,
    /// First `N_REF` of the channel raster.
    pub first: u32,
    /// Smallest `N_REF` step of the channel raster (20 = 100 kHz below 3 GHz).
    pub step: u32,
    /// Last `N_REF`.
    pub last: u32,
}

impl NrRange {
    /// Whether `n` is a channel-raster point of this range.
    pub fn on_raster(&self, n: u32) -> bool {
        (self.first..=self.last).contains(&n) && (n - self.first).is_multiple_of(self.step)
    }

    /// Whether `khz` lies inside the band edges.
    pub fn contains_khz(&self, khz: u64) -> bool {
        (self.low_khz..=self.high_khz).contains(&khz)
    }
}

/// One NR operating band.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NrBand {
    /// Band number (`n78` is 78).
    pub band: u16,
    /// Duplex mode.
    pub duplex: NrDuplex,
    /// Uplink range (FDD/SUL; TDD: same as `dl`).
    pub ul: Option<NrRange>,
    /// Downlink range (FDD/SDL/TDD).
    pub dl: Option<NrRange>,
    /// SS block subcarrier spacings, kHz (first is the usual one).
    pub ssb_scs_khz: &'static [u16],
    /// Channel bandwidths allowed in this band, MHz.
    pub bandwidths_mhz: &'static [u16],
}

impl NrBand {
    /// Frequency range 1 (below 7.125 GHz) or 2.
    pub fn is_fr2(&self) -> bool {
        self.band >= 257
    }

    /// The uplink range (for TDD the downlink one).
    pub fn ul_range(&self) -> Option<&NrRange> {
        match self.duplex {
            NrDuplex::Tdd => self.dl.as_ref(),
            _ => self.ul.as_ref(),
        }
    }
}

const KHZ: u64 = 1;
const MHZ: u64 = 1000 * KHZ;

const fn r(low_mhz10: u64, high_mhz10: u64, first: u32, step: u32, last: u32) -> NrRange {
    // Edges are given in units of 100 kHz so that 1626.5 MHz or 874.4 MHz stay integers.
    NrRange {
        low_khz: low_mhz10 * 100,
        high_khz: high_mhz10 * 100,
        first,
        step,
        last,
    }
}

const fn fdd(
    band: u16,
    ul: NrRange,
    dl: NrRange,
    ssb: &'static [u16],
    bw: &'static [u16],
) -> NrBand {
    NrBand {
        band,
        duplex: NrDuplex::Fdd,
        ul: Some(ul),
        dl: Some(dl),
        ssb_scs_khz: ssb,
        bandwidths_mhz: bw,
    }
}

const fn tdd(band: u16, both: NrRange, ssb: &'static [u16], bw: &'static [u16]) -> NrBand {
    NrBand {
        band,
        duplex: NrDuplex::Tdd,
        ul: None,
        dl: Some(both),
        ssb_scs_khz: ssb,
        bandwidths_mhz: bw,
    }
}

const fn sdl(band: u16, dl: NrRange, ssb: &'static [u16], bw: &'static [u16]) -> NrBand {
    NrBand {
        band,
        duplex: NrDuplex::Sdl,
        ul: None,
        dl: Some(dl),
        ssb_scs_khz: ssb,
        bandwidths_mhz: bw,
    }
}

const fn sul(band: u16, ul: NrRange, bw: &'static [u16]) -> NrBand {
    NrBand {
        band,
        duplex: NrDuplex::Sul,
        ul: Some(ul),
        dl: None,
        ssb_scs_khz: &[],
        bandwidths_mhz: bw,
    }
}

const S15: &[u16] = &[15];
const S15_30: &[u16] = &[15, 30];
const S30: &[u16] = &[30];
const S120_240: &[u16] = &[120, 240];

const BW5_20: &[u16] = &[5, 10, 15, 20];
const BW5_10: &[u16] = &[5, 10];
const BW5_15: &[u16] = &[5, 10, 15];
const BW5_40: &[u16] = &[5, 10, 15, 20, 25, 30, 35, 40];
const BW5_50: &[u16] = &[5, 10, 15, 20, 25, 30, 35, 40, 45, 50];
const BW_N40: &[u16] = &[5, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90, 100];
const BW_MID: &[u16] = &[10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90, 100];
const BW_N79: &[u16] = &[10, 20, 30, 40, 50, 60, 70, 80, 90, 100];
const BW_FR2: &[u16] = &[50, 100, 200, 400];

/// NR operating bands with their channel rasters, ordered by band number.
#[rustfmt::skip]
pub static NR_BANDS: &[NrBand] = &[
    //                UL: edges ×100 kHz, N_REF first/step/last    DL
    fdd(1,   r(19200, 19800, 384000, 20, 396000), r(21100, 21700, 422000, 20, 434000), S15, BW5_50),
    fdd(2,   r(18500, 19100, 370000, 20, 382000), r(19300, 19900, 386000, 20, 398000), S15, BW5_40),
    fdd(3,   r(17100, 17850, 342000, 20, 357000), r(18050, 18800, 361000, 20, 376000), S15, BW5_40),
    fdd(5,   r(8240, 8490, 164800, 20, 169800),   r(8690, 8940, 173800, 20, 178800),   S15_30, &[5, 10, 15, 20, 25]),
    fdd(7,   r(25000, 25700, 500000, 20, 514000), r(26200, 26900, 524000, 20, 538000), S15, &[5, 10, 15, 20, 25, 30, 35, 40, 50]),
    fdd(8,   r(8800, 9150, 176000, 20, 183000),   r(9250, 9600, 185000, 20, 192000),   S15, &[5, 10, 15, 20, 35]),
    fdd(12,  r(6990, 7160, 139800, 20, 143200),   r(7290, 7460, 145800, 20, 149200),   S15, BW5_15),
    fdd(13,  r(7770, 7870, 155400, 20, 157400),   r(7460, 7560, 149200, 20, 151200),   S15, BW5_10),
    fdd(14,  r(7880, 7980, 157600, 20, 159600),   r(7580, 7680, 151600, 20, 153600),   S15, BW5_10),
    fdd(18,  r(8150, 8300, 163000, 20, 166000),   r(8600, 8750, 172000, 20, 175000),   S15, BW5_15),
    fdd(20,  r(8320, 8620, 166400, 20, 172400),   r(7910, 8210, 158200, 20, 164200),   S15, BW5_20),
    fdd(24,  r(16265, 16605, 325300, 20, 332100), r(15250, 15590, 305000, 20, 311800), S15, BW5_10),
    fdd(25,  r(18500, 19150, 370000, 20, 383000), r(19300, 19950, 386000, 20, 399000), S15, BW5_40),
    fdd(26,  r(8140, 8490, 162800, 20, 169800),   r(8590, 8940, 171800, 20, 178800),   S15, BW5_20),
    fdd(28,  r(7030, 7480, 140600, 20, 149600),   r(7580, 8030, 151600, 20, 160600),   S15, &[5, 10, 15, 20, 30, 40]),
    sdl(29,  r(7170, 7280, 143400, 20, 145600), S15, BW5_10),
    fdd(30,  r(23050, 23150, 461000, 20, 463000), r(23500, 23600, 470000, 20, 472000), S15, BW5_10),
    tdd(34,  r(20100, 20250, 402000, 20, 405000), S15, BW5_15),
    tdd(38,  r(25700, 26200, 514000, 20, 524000), S15, &[5, 10, 15, 20, 25, 30, 40]),
    tdd(39,  r(18800, 19200, 376000, 20, 384000), S15, BW5_40),
    tdd(40,  r(23000, 24000, 460000, 20, 480000), S15, BW_N40),
    tdd(41,  r(24960, 26900, 499200, 3, 537999),  S15_30, BW_MID),
    tdd(46,  r(51500, 59250, 743334, 1, 795000),  S30, &[10, 20, 40, 60, 80]),
    tdd(48,  r(35500, 37000, 636667, 1, 646666),  S30, BW_MID),
    tdd(50,  r(14320, 15170, 286400, 20, 303400), S15, &[5, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80]),
    tdd(51,  r(14270, 14320, 285400, 20, 286400), S15, &[5]),
    tdd(53,  r(24835, 24950, 496700, 20, 499000), S15, BW5_10),
    fdd(65,  r(19200, 20100, 384000, 20, 402000), r(21100, 22000, 422000, 20, 440000), S15, &[5, 10, 15, 20, 50]),
    fdd(66,  r(17100, 17800, 342000, 20, 356000), r(21100, 22000, 422000, 20, 440000), S15_30, BW5_40),
    sdl(67,  r(7380, 7580, 147600, 20, 151600), S15, BW5_20),
    fdd(70,  r(16950, 17100, 339000, 20, 342000), r(19950, 20200, 399000, 20, 404000), S15, &[5, 10, 15, 20, 25]),
    fdd(71,  r(6630, 6980, 132600, 20, 139600),   r(6170, 6520, 123400, 20, 130400),   S15, &[5, 10, 15, 20, 25, 30, 35]),
    fdd(74,  r(14270, 14700, 285400, 20, 294000), r(14750, 15180, 295000, 20, 303600), S15, BW5_20),
    sdl(75,  r(14320, 15170, 286400, 20, 303400), S15, &[5, 10, 15, 20, 25, 30, 40, 50]),
    sdl(76,  r(14270, 14320, 285400, 20, 286400), S15, &[5]),
    tdd(77,  r(33000, 42000, 620000, 1, 680000),  S30, BW_MID),
    tdd(78,  r(33000, 38000, 620000, 1, 653333),  S30, BW_MID),
    tdd(79,  r(44000, 50000, 693334, 1, 733333),  S30, BW_N79),
    sul(80,  r(17100, 17850, 342000, 20, 357000), BW5_40),
    sul(81,  r(8800, 9150, 176000, 20, 183000),   BW5_20),
    sul(82,  r(8320, 8620, 166400, 20, 172400),   BW5_20),
    sul(83,  r(7030, 7480, 140600, 20, 149600),   BW5_20),
    sul(84,  r(19200, 19800, 384000, 20, 396000), BW5_20),
    fdd(85,  r(6980, 7160, 139600, 20, 143200),   r(7280, 7460, 145600, 20, 149200),   S15, BW5_15),
    sul(86,  r(17100, 17800, 342000, 20, 356000), BW5_40),
    sul(89,  r(8240, 8490, 164800, 20, 169800),   BW5_20),
    tdd(90,  r(24960, 26900, 499200, 3, 537999),  S15_30, BW_MID),
    fdd(91,  r(8320, 8620, 166400, 20, 172400),   r(14270, 14320, 285400, 20, 286400), S15, &[5]),
    fdd(92,  r(8320, 8620, 166400, 20, 172400),   r(14320, 15170, 286400, 20, 303400), S15, BW5_20),
    fdd(93,  r(8800, 9150, 176000, 20, 183000),   r(14270, 14320, 285400, 20, 286400), S15, &[5]),
    fdd(94,  r(8800, 9150, 176000, 20, 183000),   r(14320, 15170, 286400, 20, 303400), S15, BW5_20),
    sul(95,  r(20100, 20250, 402000, 20, 405000), BW5_15),
    tdd(96,  r(59250, 71250, 795000, 1, 875000),  S30, &[20, 40, 60, 80]),
    sul(97,  r(23000, 24000, 460000, 20, 480000), BW5_40),
    sul(98,  r(18800, 19200, 376000, 20, 384000), BW5_40),
    sul(99,  r(16265, 16605, 325300, 20, 332100), BW5_10),
    fdd(100, r(8744, 8800, 174880, 20, 176000),   r(9194, 9250, 183880, 20, 185000),   S15, &[3, 5]),
    tdd(101, r(19000, 19100, 380000, 20, 382000), S15, BW5_10),
    tdd(102, r(59250, 64250, 795000, 1, 828333),  S30, &[20, 40, 60, 80, 100]),
    tdd(104, r(64250, 71250, 828334, 1, 875000),  S30, &[20, 40, 60, 80, 100]),
    fdd(105, r(6630, 7030, 132600, 20, 140600),   r(6120, 6520, 122400, 20, 130400),   S15, BW5_50),
    tdd(257, r(265000, 295000, 2054166, 1, 2104165), S120_240, BW_FR2),
    tdd(258, r(242500, 275000, 2016667, 1, 2070832), S120_240, BW_FR2),
    tdd(259, r(395000, 435000, 2270833, 1, 2337499), S120_240, BW_FR2),
    tdd(260, r(370000, 400000, 2229166, 1, 2279165), S120_240, BW_FR2),
    tdd(261, r(275000, 283500, 2070833, 1, 2084999), S120_240, BW_FR2),
    tdd(262, r(472000, 482000, 2399166, 1, 2415832), S120_240, BW_FR2),
];

/// The band `n`.
pub fn band(n: u16) -> Option<&'static NrBand> {
    NR_BANDS.iter().find(|b| b.band == n)
}

/// Bands whose downlink channel raster contains `n` (NR ranges overlap, so several may).
pub fn bands_with_dl_arfcn(n: u32) -> Vec<u16> {
    NR_BANDS
        .iter()
        .filter(|b| b.dl.is_some_and(|d| d.on_raster(n)))
        .map(|b| b.band)
        .collect()
}

/// Largest valid NR-ARFCN.
pub const MAX_NR_ARFCN: u32 = 3_279_165;

/// `F_REF` of an NR-ARFCN in kHz (TS 38.104 §5.4.2.1).
pub fn nr_arfcn_to_khz(n: u32) -> Option<u64> {
    let n = u64::from(n);
    match n {
        0..=599_999 => Some(5 * n),
        600_000..=2_016_666 => Some(3_000 * MHZ + 15 * (n - 600_000)),
        2_016_667..=3_279_165 => Some(24_250_080 + 60 * (n - 2_016_667)),
        _ => None,
    }
}

/// The NR-ARFCN whose `F_REF` is exactly `khz`, if any.
pub fn khz_to_nr_arfcn(khz: u64) -> Option<u32> {
    let n = if khz < 3_000 * MHZ {
        khz.is_multiple_of(5).then_some(khz / 5)?
    } else if khz < 24_250_080 {
        let off = khz - 3_000 * MHZ;
        off.is_multiple_of(15).then(|| 600_000 + off / 15)?
    } else {
        let off = khz - 24_250_080;
        off.is_multiple_of(60).then(|| 2_016_667 + off / 60)?
    };
    u32::try_from(n).ok().filter(|&n| n <= MAX_NR_ARFCN)
}

/// `SS_REF` of a GSCN in kHz (TS 38.104 table 5.4.3.1-1).
pub fn gscn_to_khz(gscn: u32) -> Option<u64> {
    let g = u64::from(gscn);
    match g {
        2..=7498 => {
            // GSCN = 3N + (M − 3)/2, M ∈ {1, 3, 5}.
            let (n, m) = match g % 3 {
                0 => (g / 3, 3),
                1 => (g / 3, 5),
                _ => (g / 3 + 1, 1),
            };
            (1..=2499).contains(&n).then_some(n * 1200 + m * 50)
        }
        7499..=22255 => Some(3_000 * MHZ + 1440 * (g - 7499)),
        22256..=26639 => Some(24_250_080 + 17_280 * (g - 22256)),
        _ => None,
    }
}

/// The GSCN whose `SS_REF` is exactly `khz`, if `khz` is on the synchronization raster.
pub fn khz_to_gscn(khz: u64) -> Option<u32> {
    let g = if khz < 3_000 * MHZ {
        let n = khz / 1200;
        let rest = khz % 1200;
        let m = match rest {
            50 => 1,
            150 => 3,
            250 => 5,
            _ => return None,
        };
        if !(1..=2499).contains(&n) {
            return None;
        }
        match m {
            1 => 3 * n - 1,
            3 => 3 * n,
            _ => 3 * n + 1,
        }
    } else if khz < 24_250_080 {
        let off = khz - 3_000 * MHZ;
        off.is_multiple_of(1440).then(|| 7499 + off / 1440)?
    } else {
        let off = khz - 24_250_080;
        off.is_multiple_of(17_280).then(|| 22256 + off / 17_280)?
    };
    let g = u32::try_from(g).ok()?;
    (gscn_to_khz(g) == Some(khz)).then_some(g)
}

/// Transmission bandwidth `N_RB` for a subcarrier spacing and channel bandwidth
/// (TS 38.101-1 table 5.3.2-1, TS 38.101-2 table 5.3.2-1); `None` if the pair is not defined.
pub fn n_rb(scs_khz: u16, bw_mhz: u16, fr2: bool) -> Option<u16> {
    let table: &[(u16, u16)] = match (fr2, scs_khz) {
        (false, 15) => &[
            (5, 25),
            (10, 52),
            (15, 79),
            (20, 106),
            (25, 133),
            (30, 160),
            (35, 188),
            (40, 216),
            (45, 242),
            (50, 270),
        ],
        (false, 30) => &[
            (5, 11),
            (10, 24),
            (15, 38),
            (20, 51),
            (25, 65),
            (30, 78),
            (35, 92),
            (40, 106),
            (45, 119),
            (50, 133),
            (60, 162),
            (70, 189),
            (80, 217),
            (90, 245),
            (100, 273),
        ],
        (false, 60) => &[
            (10, 11),
            (15, 18),
            (20, 24),
            (25, 31),
            (30, 38),
            (35, 44),
            (40, 51),
            (45, 58),
            (50, 65),
            (60, 79),
            (70, 93),
            (80, 107),
            (90, 121),
            (100, 135),
        ],
        (true, 60) => &[(50, 66), (100, 132), (200, 264)],
        (true, 120) => &[(50, 32), (100, 66), (200, 132), (400, 264)],
        _ => &[],
    };
    table.iter().find(|(bw, _)| *bw == bw_mhz).map(|(_, n)| *n)
}

/// Subcarrier spacing a carrier in `band` uses when none is given: 120 kHz in FR2, 30 kHz in
/// bands whose SS blocks use only 30 kHz or that are usually deployed with it (n41, n90),
/// 15 kHz otherwise.
pub fn default_scs_khz(band: &NrBand) -> u16 {
    if band.is_fr2() {
        120
    } else if band.ssb_scs_khz == S30 || matches!(band.band, 41 | 90) {
        30
    } else {
        15
    }
}

/// SS block subcarrier spacing for a carrier with `scs_khz`: the carrier's own spacing when
/// the band allows it for SS blocks, else the band's first.
pub fn ssb_scs_for(band: &NrBand, scs_khz: u16) -> Option<u16> {
    if band.ssb_scs_khz.contains(&scs_khz) {
        Some(scs_khz)
    } else {
        band.ssb_scs_khz.first().copied()
    }
}

/// Width of an SS block (20 resource blocks) in kHz.
pub fn ssb_width_khz(ssb_scs_khz: u16) -> u64 {
    240 * u64::from(ssb_scs_khz)
}

/// Whether an SS block at `ssb_khz` fits a carrier centred on `center_khz` of `bw_mhz`, sits on
/// the sync raster, and is offset from the centre by a multiple of its subcarrier spacing
/// (simpleran's rule: "at offset from center DL frequency that aligns with SSB subcarrier
/// spacing").
pub fn ssb_fits(center_khz: u64, bw_mhz: u16, ssb_khz: u64, ssb_scs_khz: u16) -> bool {
    let half_bw = u64::from(bw_mhz) * MHZ / 2;
    let half_ssb = ssb_width_khz(ssb_scs_khz) / 2;
    let lo = center_khz.saturating_sub(half_bw) + half_ssb;
    let hi = (center_khz + half_bw).saturating_sub(half_ssb);
    khz_to_gscn(ssb_khz).is_some()
        && (lo..=hi).contains(&ssb_khz)
        && center_khz
            .abs_diff(ssb_khz)
            .is_multiple_of(u64::from(ssb_scs_khz))
}

/// The SS block position simpleran picks when `ssb_nr_arfcn` is not given: the sync raster
/// point nearest the carrier centre (ties: the lower) that satisfies [`ssb_fits`] and lies in
/// the band's downlink range. Returns the SSB's NR-ARFCN.
pub fn default_ssb_arfcn(
    band: &NrBand,
    dl_arfcn: u32,
    bw_mhz: u16,
    ssb_scs_khz: u16,
) -> Option<u32> {
    let dl = band.dl?;
    let center = nr_arfcn_to_khz(dl_arfcn)?;
    let half = u64::from(bw_mhz) * MHZ / 2;
    let lo = center.saturating_sub(half);
    let hi = center + half;
    // Walk the sync raster across the channel; at most a few thousand points (FR2 400 MHz).
    let first = khz_to_gscn_at_or_above(lo)?;
    let mut best: Option<(u64, u64)> = None;
    let mut g = first;
    while let Some(f) = gscn_to_khz(g) {
        if f > hi {
            break;
        }
        if dl.contains_khz(f) && ssb_fits(center, bw_mhz, f, ssb_scs_khz) {
            let d = center.abs_diff(f);
            if best.is_none_or(|(bd, _)| d < bd) {
                best = Some((d, f));
            }
        }
        g += 1;
    }
    best.and_then(|(_, f)| khz_to_nr_arfcn(f))
}

fn khz_to_gscn_at_or_above(khz: u64) -> Option<u32> {
    // Binary search over the monotonic GSCN → frequency map.
    let (mut lo, mut hi) = (2u32, 26639u32);
    if gscn_to_khz(hi)? < khz {
        return None;
    }
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if gscn_to_khz(mid)? < khz {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Some(lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_raster_segments_and_edges() {
        assert_eq!(nr_arfcn_to_khz(0), Some(0));
        assert_eq!(nr_arfcn_to_khz(599_999), Some(2_999_995));
        assert_eq!(nr_arfcn_to_khz(600_000), Some(3_000_000));
        assert_eq!(nr_arfcn_to_khz(2_016_666), Some(24_249_990));
        assert_eq!(nr_arfcn_to_khz(2_016_667), Some(24_250_080));
        assert_eq!(nr_arfcn_to_khz(3_279_165), Some(99_999_960));
        assert_eq!(nr_arfcn_to_khz(3_279_166), None);
        // Published pairs.
        assert_eq!(nr_arfcn_to_khz(632_628), Some(3_489_420)); // n78, 3489.42 MHz
        assert_eq!(nr_arfcn_to_khz(620_000), Some(3_300_000));
        assert_eq!(nr_arfcn_to_khz(428_000), Some(2_140_000)); // n1
        assert_eq!(nr_arfcn_to_khz(368_500), Some(1_842_500)); // n3, srsRAN default
        assert_eq!(nr_arfcn_to_khz(2_079_167), Some(28_000_080)); // FR2, n257/n261
        for n in [
            0, 1, 599_999, 600_000, 600_001, 2_016_666, 2_016_667, 3_279_165, 632_628,
        ] {
            assert_eq!(khz_to_nr_arfcn(nr_arfcn_to_khz(n).unwrap()), Some(n), "{n}");
        }
        assert_eq!(khz_to_nr_arfcn(3_000_010), None);
        assert_eq!(khz_to_nr_arfcn(2_110_002), None);
    }

    #[test]
    fn sync_raster_published_values() {
        // TS 38.104 table 5.4.3.1-1 segment starts and common SSB positions.
        assert_eq!(gscn_to_khz(2), Some(1_200 + 50));
        assert_eq!(gscn_to_khz(3), Some(1_200 + 150));
        assert_eq!(gscn_to_khz(4), Some(1_200 + 250));
        assert_eq!(gscn_to_khz(7498), Some(2_499 * 1200 + 250));
        assert_eq!(gscn_to_khz(7499), Some(3_000_000));
        assert_eq!(gscn_to_khz(22255), Some(3_000_000 + 14_756 * 1440));
        assert_eq!(gscn_to_khz(22256), Some(24_250_080));
        assert_eq!(gscn_to_khz(26639), Some(24_250_080 + 4383 * 17_280));
        assert_eq!(gscn_to_khz(26640), None);
        assert_eq!(gscn_to_khz(1), None);
        assert_eq!(gscn_to_khz(7845), Some(3_498_240)); // n78 GSCN 7845 = 3498.24 MHz
        for g in (2..=26639).step_by(7) {
            let f = gscn_to_khz(g).unwrap();
            assert_eq!(khz_to_gscn(f), Some(g), "{g}");
        }
        assert_eq!(khz_to_gscn(1_201_000), None);
    }

    #[test]
    fn table_ranges_are_on_raster_and_inside_edges() {
        for b in NR_BANDS {
            for range in [b.ul, b.dl].into_iter().flatten() {
                assert!(range.first <= range.last, "n{}", b.band);
                let f0 = nr_arfcn_to_khz(range.first).unwrap();
                let f1 = nr_arfcn_to_khz(range.last).unwrap();
                assert!(
                    range.contains_khz(f0) && range.contains_khz(f1),
                    "n{}: {f0}..{f1}",
                    b.band
                );
                // The raster reaches within one step of each edge.
                let step_khz = nr_arfcn_to_khz(range.first + range.step).unwrap() - f0;
                // FR2 starts at 24250.08 MHz, 80 kHz above n258's edge.
                assert!(f0 - range.low_khz < step_khz + 100, "n{} low edge", b.band);
                assert!(range.high_khz - f1 < step_khz + 5, "n{} high edge", b.band);
            }
            match b.duplex {
                NrDuplex::Fdd => assert!(b.ul.is_some() && b.dl.is_some()),
                NrDuplex::Tdd | NrDuplex::Sdl => assert!(b.dl.is_some() && b.ul.is_none()),
                NrDuplex::Sul => assert!(b.ul.is_some() && b.dl.is_none()),
            }
        }
    }

    #[test]
    fn bands_overlap_and_are_found() {
        assert_eq!(bands_with_dl_arfcn(632_628), vec![77, 78]);
        assert_eq!(bands_with_dl_arfcn(428_000), vec![1, 65, 66]);
        assert_eq!(bands_with_dl_arfcn(300_300), vec![50, 74, 75, 92, 94]);
        assert!(
            bands_with_dl_arfcn(428_010).is_empty(),
            "not on the 100 kHz raster"
        );
        assert!(
            bands_with_dl_arfcn(499_201).is_empty(),
            "n41 raster step is 3"
        );
        assert_eq!(bands_with_dl_arfcn(499_203), vec![41, 90]);
    }

    #[test]
    fn n_rb_table() {
        assert_eq!(n_rb(15, 20, false), Some(106));
        assert_eq!(n_rb(30, 100, false), Some(273));
        assert_eq!(n_rb(30, 40, false), Some(106));
        assert_eq!(n_rb(15, 100, false), None);
        assert_eq!(n_rb(120, 400, true), Some(264));
        assert_eq!(n_rb(60, 5, false), None);
    }

    /// simpleran's own unit test (software/simpleran/test/test.py, RFTestCase4) publishes the
    /// SSB it derives: n74 DL 300300 / 15 MHz → SSB 300270, n40 DL 470400 / 20 MHz → 470430.
    #[test]
    fn default_ssb_matches_simpleran() {
        let n74 = band(74).unwrap();
        assert_eq!(default_ssb_arfcn(n74, 300_300, 15, 15), Some(300_270));
        let n40 = band(40).unwrap();
        assert_eq!(default_ssb_arfcn(n40, 470_400, 20, 15), Some(470_430));
        // The result is on the sync raster, inside the carrier and aligned to 15 kHz.
        let f = nr_arfcn_to_khz(470_430).unwrap();
        assert!(ssb_fits(nr_arfcn_to_khz(470_400).unwrap(), 20, f, 15));
        // n78 100 MHz at 30 kHz: an SSB exists and is 30 kHz aligned.
        let n78 = band(78).unwrap();
        let s = default_ssb_arfcn(n78, 632_628, 100, 30).unwrap();
        let fs = nr_arfcn_to_khz(s).unwrap();
        assert_eq!(fs.abs_diff(3_489_420) % 30, 0);
        assert!(khz_to_gscn(fs).is_some());
    }
}
