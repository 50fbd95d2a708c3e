//! NR rules (TS 38.104, 38.101, 38.211, 38.213): an NR cell's identity, operating band,
//! NR-ARFCNs on the channel raster, bandwidth and subcarrier spacing, uplink, SS block on the
//! synchronization raster and its bitmap, TDD pattern.

use super::Validator;
use super::cell::channel_inside;
use crate::bands::mhz;
use crate::bands::nr::{self, NrDuplex};
use crate::params::{CellParams, Key};
use crate::plan::{NrCell, RadioUnit};

impl Validator {
    pub(super) fn nr_cell(
        &mut self,
        key: &Key,
        cell: &CellParams,
        path: &str,
        ru: Option<RadioUnit>,
        gnb_id_bits: u8,
    ) -> Option<NrCell> {
        let tdd = self.rf_mode(cell, path);
        let pci = self.required(
            &format!("{path}.pci"),
            cell.pci,
            "physical cell id 0..=1007",
        );
        if let Some(p) = pci.filter(|&p| p > 1007) {
            self.err(
                &format!("{path}.pci"),
                format!("{p} is outside the NR range 0..=1007 (TS 38.211 §7.4.2.1)"),
            );
        }
        let cell_id = self.required(&format!("{path}.cell_id"), cell.cell_id, "NR cell id");
        let id_bits = 36u32.saturating_sub(gnb_id_bits.into());
        if let Some(id) = cell_id.filter(|&i| (22..=32).contains(&gnb_id_bits) && i >> id_bits != 0)
        {
            self.err(&format!("{path}.cell_id"), format!(
                "{id:#x} exceeds {id_bits} bits (36-bit NR cell identity minus gnb_id_bits = {gnb_id_bits})"
            ));
        }
        let common = self.common(cell, path, 1);
        let band_n = self.required(&format!("{path}.nr_band"), cell.nr_band, "NR band number");
        let band = band_n.and_then(|b| {
            let r = nr::band(b);
            if r.is_none() {
                self.err(
                    &format!("{path}.nr_band"),
                    format!("n{b} is not an NR operating band (TS 38.104 tables 5.2-1/5.2-2)"),
                );
            }
            r
        });
        let dl = self.required(
            &format!("{path}.dl_nr_arfcn"),
            cell.dl_nr_arfcn,
            "downlink NR-ARFCN",
        );
        let bw_f = self.required(
            &format!("{path}.bandwidth"),
            cell.bandwidth,
            "channel bandwidth in MHz",
        );
        let bw = bw_f.and_then(|b| {
            if b.fract() != 0.0 || !(1.0..=400.0).contains(&b) {
                self.err(
                    &format!("{path}.bandwidth"),
                    format!("{b} MHz is not an NR channel bandwidth (whole MHz, 5..=400)"),
                );
                None
            } else {
                Some(b as u16)
            }
        });
        let band = band?;
        let mut ok = true;
        let tdd = tdd?;
        match (band.duplex, tdd) {
            (NrDuplex::Sdl | NrDuplex::Sul, _) => {
                self.err(
                    &format!("{path}.nr_band"),
                    format!(
                        "n{} is {}: it cannot carry a standalone cell",
                        band.band, band.duplex
                    ),
                );
                return None;
            }
            (NrDuplex::Fdd, true) | (NrDuplex::Tdd, false) => {
                let mode = if tdd { "tdd" } else { "fdd" };
                self.err(
                    &format!("{path}.rf_mode"),
                    format!(
                        "is {mode:?} but band n{} is {} (TS 38.104 table 5.2-1)",
                        band.band, band.duplex
                    ),
                );
                ok = false;
            }
            _ => {}
        }
        let dlr = band.dl?;
        let dl = dl?;
        let dl_path = format!("{path}.dl_nr_arfcn");
        let Some(dl_khz) = nr::nr_arfcn_to_khz(dl) else {
            self.err(
                &dl_path,
                format!(
                    "{dl} exceeds the largest NR-ARFCN {} (TS 38.104 §5.4.2.1)",
                    nr::MAX_NR_ARFCN
                ),
            );
            return None;
        };
        if !dlr.on_raster(dl) {
            let others: Vec<String> = nr::bands_with_dl_arfcn(dl)
                .iter()
                .map(|b| format!("n{b}"))
                .collect();
            let where_ = if others.is_empty() {
                "no NR band".to_string()
            } else {
                others.join(", ")
            };
            self.err(&dl_path, format!(
                "NR-ARFCN {dl} ({} MHz) is not on the downlink channel raster of band n{} ({}..={} step {}, {}–{} MHz; TS 38.104 table 5.4.2.3-1); it is a raster point of {where_}",
                mhz(dl_khz), band.band, dlr.first, dlr.last, dlr.step, mhz(dlr.low_khz), mhz(dlr.high_khz)
            ));
            return None;
        }
        let bw = bw?;
        if !band.bandwidths_mhz.contains(&bw) {
            self.err(&format!("{path}.bandwidth"), format!(
                "{bw} MHz is not allowed in band n{} (allowed: {:?} MHz; TS 38.101 table 5.3.5-1)",
                band.band, band.bandwidths_mhz
            ));
            ok = false;
        }
        if !channel_inside(dl_khz, u64::from(bw) * 1000, dlr.low_khz, dlr.high_khz) {
            self.err(
                &dl_path,
                format!(
                    "a {bw} MHz channel centred at {} MHz leaves band n{} downlink {}–{} MHz",
                    mhz(dl_khz),
                    band.band,
                    mhz(dlr.low_khz),
                    mhz(dlr.high_khz)
                ),
            );
            ok = false;
        }
        let scs = match cell.subcarrier_spacing {
            None => nr::default_scs_khz(band),
            Some(s) if [15.0, 30.0, 60.0, 120.0].contains(&s) => s as u16,
            Some(s) => {
                self.err(
                    &format!("{path}.subcarrier_spacing"),
                    format!("{s} kHz is not 15, 30, 60 or 120"),
                );
                return None;
            }
        };
        let n_rb = nr::n_rb(scs, bw, band.is_fr2());
        if n_rb.is_none() {
            self.err(&format!("{path}.subcarrier_spacing"), format!(
                "{scs} kHz with {bw} MHz has no transmission bandwidth in {} (TS 38.101 table 5.3.2-1)",
                if band.is_fr2() { "FR2" } else { "FR1" }
            ));
            ok = false;
        }
        // Uplink.
        let ul_path = format!("{path}.ul_nr_arfcn");
        let ulr = band.ul_range()?;
        let ul = match (cell.ul_nr_arfcn, band.duplex) {
            (None, NrDuplex::Tdd) => Some(dl),
            (None, _) => {
                // Fixed duplex distance between the lower band edges (TS 38.101-1 table 5.4.4-1
                // default TX-RX separation).
                let f = i128::from(dl_khz) - (i128::from(dlr.low_khz) - i128::from(ulr.low_khz));
                let u = u64::try_from(f)
                    .ok()
                    .and_then(nr::khz_to_nr_arfcn)
                    .filter(|&u| ulr.on_raster(u));
                if u.is_none() {
                    self.err(&ul_path, format!("band n{} has no uplink paired with {dl} at the band's duplex distance; set ul_nr_arfcn explicitly", band.band));
                }
                u
            }
            (Some(u), NrDuplex::Tdd) if u != dl => {
                self.err(
                    &ul_path,
                    format!(
                        "{u} differs from dl_nr_arfcn {dl}; band n{} is TDD",
                        band.band
                    ),
                );
                None
            }
            (Some(u), _) if !ulr.on_raster(u) => {
                self.err(
                    &ul_path,
                    format!(
                        "{u} is not on the uplink channel raster of band n{} ({}..={} step {})",
                        band.band, ulr.first, ulr.last, ulr.step
                    ),
                );
                None
            }
            (Some(u), _) => Some(u),
        };
        let ul_khz = ul.and_then(nr::nr_arfcn_to_khz);
        if let (Some(f), NrDuplex::Fdd) = (ul_khz, band.duplex)
            && !channel_inside(f, u64::from(bw) * 1000, ulr.low_khz, ulr.high_khz)
        {
            self.err(
                &ul_path,
                format!(
                    "a {bw} MHz uplink channel at {} MHz leaves band n{} uplink {}–{} MHz",
                    mhz(f),
                    band.band,
                    mhz(ulr.low_khz),
                    mhz(ulr.high_khz)
                ),
            );
            ok = false;
        }
        // SS block.
        let ssb_scs = nr::ssb_scs_for(band, scs)?;
        let ssb_path = format!("{path}.ssb_nr_arfcn");
        let ssb = match cell.ssb_nr_arfcn {
            None => {
                let s = nr::default_ssb_arfcn(band, dl, bw, ssb_scs);
                if s.is_none() && ok {
                    self.err(&ssb_path, format!("no sync raster position fits a {bw} MHz carrier at {} MHz; set ssb_nr_arfcn", mhz(dl_khz)));
                }
                s
            }
            Some(s) => {
                let f = nr::nr_arfcn_to_khz(s);
                let fits = f.is_some_and(|f| {
                    band.ssb_scs_khz
                        .iter()
                        .any(|&scs| nr::ssb_fits(dl_khz, bw, f, scs))
                        && dlr.contains_khz(f)
                });
                if !fits {
                    self.err(&ssb_path, format!(
                        "{s} ({} MHz) must be on the synchronization raster (a GSCN, TS 38.104 table 5.4.3.1-1), inside the {bw} MHz carrier at {} MHz and at a multiple of the SSB subcarrier spacing ({:?} kHz) from its centre",
                        f.map(mhz).unwrap_or_else(|| "?".into()), mhz(dl_khz), band.ssb_scs_khz
                    ));
                    None
                } else {
                    Some(s)
                }
            }
        };
        let ssb_khz = ssb.and_then(nr::nr_arfcn_to_khz);
        let l_max = ssb_l_max(ssb_khz.unwrap_or(dl_khz), band.is_fr2());
        let bitmap = match cell.ssb_pos_bitmap.as_deref().map(str::trim) {
            None => {
                let mut b = String::from("1");
                b.push_str(&"0".repeat(l_max.last().copied().unwrap_or(4) - 1));
                Some(b)
            }
            Some(b)
                if b.chars().all(|c| c == '0' || c == '1')
                    && l_max.contains(&b.len())
                    && b.contains('1') =>
            {
                Some(b.to_string())
            }
            Some(b) => {
                self.err(&format!("{path}.ssb_pos_bitmap"), format!(
                    "{b:?} must be {} bits of 0/1 with at least one 1 for an SSB at this frequency (TS 38.213 §4.1)",
                    l_max.iter().map(usize::to_string).collect::<Vec<_>>().join(" or ")
                ));
                None
            }
        };
        let tdd_cfg = match (tdd, cell.tdd_ul_dl_config.as_deref()) {
            (true, None) => Some(NR_TDD_CONFIGS[0].to_string()),
            (true, Some(s)) => match NR_TDD_CONFIGS
                .iter()
                .find(|c| c.split_whitespace().next() == s.split_whitespace().next())
            {
                Some(c) => Some(c.to_string()),
                None => {
                    self.err(
                        &format!("{path}.tdd_ul_dl_config"),
                        format!(
                            "{s:?} is not one of simpleran's NR TDD patterns ({})",
                            NR_TDD_CONFIGS
                                .iter()
                                .filter_map(|c| c.split_whitespace().next())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
                    ok = false;
                    None
                }
            },
            (false, Some(_)) => {
                self.note(
                    &format!("{path}.tdd_ul_dl_config"),
                    "ignored: the cell is FDD",
                );
                None
            }
            (false, None) => None,
        };
        let (rsi, timer) = common?;
        let ru = ru?;
        if !ok {
            return None;
        }
        let pci = u16::try_from(pci?).ok().filter(|&p| p <= 1007)?;
        let cell_id = cell_id.filter(|&i| i >> id_bits == 0)?;
        let ssb = ssb?;
        let ssb_khz = ssb_khz?;
        Some(NrCell {
            name: key.name(),
            cell_id,
            pci,
            duplex: band.duplex,
            band: band.band,
            bandwidth_mhz: bw,
            scs_khz: scs,
            n_rb: n_rb?,
            dl_nr_arfcn: dl,
            ul_nr_arfcn: ul?,
            ssb_nr_arfcn: ssb,
            gscn: nr::khz_to_gscn(ssb_khz)?,
            ssb_scs_khz: ssb_scs,
            ssb_pos_bitmap: bitmap?,
            dl_freq_khz: dl_khz,
            ul_freq_khz: ul_khz?,
            ssb_freq_khz: ssb_khz,
            tdd_ul_dl_config: tdd_cfg.filter(|_| tdd),
            root_sequence_index: rsi,
            inactivity_timer_ms: timer,
            ru,
        })
    }
}

/// simpleran's NR TDD patterns (`cell/nr/input-schema.json`); the first is the default.
pub const NR_TDD_CONFIGS: [&str; 7] = [
    "DDDDDDDSUU (5ms,   7DL/2UL), S-slot=6DL:4GP:4UL, default",
    "DDDSUUDDDD (5ms,   7DL/2UL), S-slot=6DL:4GP:4UL, same ratios as default",
    "DDDSUUUUDD (5ms,   5DL/4UL), S-slot=6DL:4GP:4UL, balanced downlink and uplink",
    "DDDSUUUUUU (5ms,   3DL/6UL), S-slot=2DL:2GP:10UL, high uplink",
    "DDSUUUUUUU (5ms,   2DL/7UL), S-slot=6DL:4GP:4UL, EXPERIMENTAL very high uplink",
    "DSUUUUUUUU (5ms,   1DL/8UL), S-slot=10DL:2GP:2UL, EXPERIMENTAL maximum uplink",
    "DDDSU      (2.5ms, 3DL/1UL), S-slot=10DL:2GP:2UL, reduced latency",
];

/// Allowed SSB bitmap lengths (`L_max`, TS 38.213 §4.1) for an SSB at `khz`. Between 1.88 and
/// 3 GHz the rule changed between releases (unpaired spectrum), so both 4 and 8 are accepted.
fn ssb_l_max(khz: u64, fr2: bool) -> Vec<usize> {
    if fr2 {
        vec![64]
    } else if khz <= 1_880_000 {
        vec![4]
    } else if khz <= 3_000_000 {
        vec![4, 8]
    } else {
        vec![8]
    }
}
