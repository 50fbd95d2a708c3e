//! LTE rules (TS 36.101, 36.211, 36.331): an E-UTRA cell's identity, band, channel bandwidth,
//! downlink and uplink EARFCNs, TDD configuration and security algorithms; the E-UTRA handover
//! parameters.

use super::Validator;
use super::cell::channel_inside;
use crate::bands::lte::{self, Duplex, EutraBand, LteBandwidth};
use crate::bands::mhz;
use crate::params::{CellParams, EnbParams, Key};
use crate::plan::{Handover, LteCell, RadioUnit};

impl Validator {
    pub(super) fn handover(&mut self, p: &EnbParams) -> Handover {
        let mut h = Handover::default();
        let Some(ho) = &p.eutra_eutra_handover else {
            return h;
        };
        if let Some(ev) = &ho.event {
            match (ev.a3_rsrp, ev.a4_rsrp.or(ev.a5_threshold1_rsrp)) {
                (Some(a3), _) => h.a3_offset_db = a3,
                (None, Some(_)) => self.note(
                    "eutra_eutra_handover.event",
                    "only the A3 event is rendered for srsRAN; A4/A5 thresholds are ignored and the A3 default (6 dB) is used",
                ),
                _ => {}
            }
        }
        if let Some(hy) = ho.hysteresis {
            if hy > 30 {
                self.err(
                    "eutra_eutra_handover.hysteresis",
                    format!("{hy} is outside 0..=30 (0.5 dB steps)"),
                );
            }
            h.hysteresis = hy;
        }
        if let Some(t) = ho.time_to_trigger {
            if !TIME_TO_TRIGGER_MS.contains(&t) {
                self.err(
                    "eutra_eutra_handover.time_to_trigger",
                    format!(
                        "{t} ms is not one of {TIME_TO_TRIGGER_MS:?} (TS 36.331 TimeToTrigger)"
                    ),
                );
            }
            h.time_to_trigger_ms = t;
        }
        h
    }

    pub(super) fn lte_cell(
        &mut self,
        key: &Key,
        cell: &CellParams,
        path: &str,
        ru: Option<RadioUnit>,
    ) -> Option<LteCell> {
        let tdd = self.rf_mode(cell, path);
        let (pci, cell_id, tac) = self.lte_ids(cell, path);
        let bw = self.lte_bandwidth(cell, path);
        let common = self.common(cell, path, 204);
        let (dl, band) = self.lte_dl_band(cell, path);
        let mut ok = true;
        let mut ul_earfcn = None;
        if let (Some(b), Some(n)) = (band, dl) {
            ok &= self.lte_downlink(path, b, n, bw, tdd);
            let (ul_ok, ul) = self.lte_uplink(cell, path, b, n, bw);
            ok &= ul_ok;
            ul_earfcn = ul;
        }
        let tdd_config = self.lte_tdd_config(cell, path, tdd);
        let cipher = self.algos(
            cell.cipher_algo_pref.as_deref(),
            &format!("{path}.cipher_algo_pref"),
            &["EEA"],
            vec![2, 1],
        );
        let integ = self.algos(
            cell.integ_algo_pref.as_deref(),
            &format!("{path}.integ_algo_pref"),
            &["EIA", "EEA"],
            vec![2, 1],
        );

        let band = band?;
        let (dl, ul, bw, ru, (rsi, timer)) = (dl?, ul_earfcn?, bw?, ru?, common?);
        if !ok || tdd.is_none() || (tdd == Some(true) && tdd_config.is_none()) {
            return None;
        }
        let pci = u16::try_from(pci?).ok().filter(|&p| p <= 503)?;
        Some(LteCell {
            name: key.name(),
            cell_id: u8::try_from(cell_id?).ok()?,
            pci,
            tac: u16::try_from(tac?).ok()?,
            duplex: band.duplex,
            band: band.band,
            bandwidth: bw,
            n_rb: bw.n_rb(),
            dl_earfcn: dl,
            ul_earfcn: ul,
            dl_freq_khz: band.dl_khz(dl)?,
            ul_freq_khz: band.ul_khz(ul)?,
            tdd_config,
            root_sequence_index: rsi,
            inactivity_timer_ms: timer,
            cipher_algo_pref: cipher?,
            integ_algo_pref: integ?,
            ru,
        })
    }

    /// PCI (0..=503), cell id (8 bits) and TAC (16 bits), each required.
    fn lte_ids(
        &mut self,
        cell: &CellParams,
        path: &str,
    ) -> (Option<u32>, Option<u64>, Option<u32>) {
        let pci = self.required(&format!("{path}.pci"), cell.pci, "physical cell id 0..=503");
        if let Some(pci) = pci.filter(|&p| p > 503) {
            self.err(
                &format!("{path}.pci"),
                format!("{pci} is outside the LTE range 0..=503 (TS 36.211 §6.11)"),
            );
        }
        let cell_id = self.required(&format!("{path}.cell_id"), cell.cell_id, "8-bit cell id");
        if let Some(id) = cell_id.filter(|&i| i > 255) {
            self.err(
                &format!("{path}.cell_id"),
                format!("{id:#x} exceeds 8 bits (LTE cell id within the eNB)"),
            );
        }
        let tac = self.required(
            &format!("{path}.tac"),
            cell.tac,
            "16-bit tracking area code",
        );
        if let Some(t) = tac.filter(|&t| t > 0xFFFF) {
            self.err(
                &format!("{path}.tac"),
                format!("{t:#x} exceeds 16 bits (LTE TAC, TS 23.003)"),
            );
        }
        (pci, cell_id, tac)
    }

    /// The channel bandwidth, one of TS 36.101 table 5.6-1.
    fn lte_bandwidth(&mut self, cell: &CellParams, path: &str) -> Option<LteBandwidth> {
        let bw = self.required(
            &format!("{path}.bandwidth"),
            cell.bandwidth,
            "1.4, 3, 5, 10, 15 or 20 MHz",
        );
        bw.and_then(|b| {
            let r = LteBandwidth::from_mhz(b);
            if r.is_none() {
                self.err(&format!("{path}.bandwidth"), format!("{b} MHz is not an LTE channel bandwidth (1.4, 3, 5, 10, 15, 20; TS 36.101 table 5.6-1)"));
            }
            r
        })
    }

    /// The downlink EARFCN and the band it is a downlink channel of.
    fn lte_dl_band(
        &mut self,
        cell: &CellParams,
        path: &str,
    ) -> (Option<u32>, Option<&'static EutraBand>) {
        let dl = self.required(
            &format!("{path}.dl_earfcn"),
            cell.dl_earfcn,
            "downlink EARFCN",
        );
        let band = dl.and_then(|n| {
            let b = lte::band_of_dl_earfcn(n);
            if b.is_none() {
                self.err(&format!("{path}.dl_earfcn"), format!(
                    "EARFCN {n} is not a downlink channel of any E-UTRA band (TS 36.101 table 5.7.3-1)"
                ));
            }
            b
        });
        (dl, band)
    }

    /// Downlink EARFCN `n` in band `b`: the band's duplex matches `rf_mode` (an SDL band cannot
    /// carry a cell), the bandwidth is allowed there and the channel stays inside the band.
    /// False when a rule failed.
    fn lte_downlink(
        &mut self,
        path: &str,
        b: &EutraBand,
        n: u32,
        bw: Option<LteBandwidth>,
        tdd: Option<bool>,
    ) -> bool {
        let mut ok = true;
        let dl_path = format!("{path}.dl_earfcn");
        match (b.duplex, tdd) {
            (Duplex::Sdl, _) => {
                self.err(&dl_path, format!("EARFCN {n} is in band {} which is downlink-only (SDL): it cannot carry a standalone cell", b.band));
                ok = false;
            }
            (Duplex::Fdd, Some(true)) | (Duplex::Tdd, Some(false)) => {
                let mode = if tdd == Some(true) { "tdd" } else { "fdd" };
                self.err(&format!("{path}.rf_mode"), format!(
                    "is {mode:?} but dl_earfcn {n} is in band {} which is {} (TS 36.101 table 5.5-1)",
                    b.band, b.duplex
                ));
                ok = false;
            }
            _ => {}
        }
        if let Some(bw) = bw {
            if !b.allows(bw) {
                let allowed: Vec<String> =
                    b.bandwidths.iter().map(|w| w.mhz().to_string()).collect();
                self.err(
                    &format!("{path}.bandwidth"),
                    format!(
                        "{bw} is not allowed in band {} (allowed: {} MHz; TS 36.101 table 5.6.1-1)",
                        b.band,
                        allowed.join(", ")
                    ),
                );
                ok = false;
            }
            let (lo, hi) = b.dl_edges_khz();
            if let Some(f) = b.dl_khz(n)
                && !channel_inside(f.into(), bw.khz().into(), lo.into(), hi.into())
            {
                let half = bw.khz() / 200;
                self.err(&dl_path, format!(
                        "a {bw} channel at EARFCN {n} ({} MHz) leaves band {} downlink {}–{} MHz; with {bw} the EARFCN must be in {}..={}",
                        mhz(f.into()), b.band, mhz(lo.into()), mhz(hi.into()), b.dl_n_offs + half, b.dl_n_max + 1 - half
                    ));
                ok = false;
            }
        }
        ok
    }

    /// The uplink EARFCN of a cell on downlink `n` in band `b`: the band's default pairing, or
    /// the given one (TDD: equal to the downlink; FDD: an uplink channel of the band whose whole
    /// channel stays inside it). Returns false with it when the channel leaves the band.
    fn lte_uplink(
        &mut self,
        cell: &CellParams,
        path: &str,
        b: &EutraBand,
        n: u32,
        bw: Option<LteBandwidth>,
    ) -> (bool, Option<u32>) {
        let mut ok = true;
        let ul_earfcn = match (cell.ul_earfcn, b.duplex) {
            (_, Duplex::Sdl) => None,
            (None, _) => {
                let u = b.default_ul_earfcn(n);
                if u.is_none() {
                    self.err(&format!("{path}.ul_earfcn"), format!(
                        "band {} has no uplink paired with EARFCN {n} (the uplink range is narrower); set ul_earfcn explicitly",
                        b.band
                    ));
                }
                u
            }
            (Some(u), Duplex::Tdd) if u != n => {
                self.err(
                    &format!("{path}.ul_earfcn"),
                    format!(
                        "{u} differs from dl_earfcn {n}; band {} is TDD and uses one EARFCN",
                        b.band
                    ),
                );
                None
            }
            (Some(u), _) => {
                if !b.has_ul_earfcn(u) {
                    let range =
                        b.ul.map(|r| format!("{}..={}", r.n_offs, r.n_max))
                            .unwrap_or_default();
                    self.err(&format!("{path}.ul_earfcn"), format!(
                        "EARFCN {u} is not an uplink channel of band {} ({range}; TS 36.101 table 5.7.3-1)",
                        b.band
                    ));
                    None
                } else {
                    Some(u)
                }
            }
        };
        if let (Some(u), Some(bw), Some((lo, hi))) = (ul_earfcn, bw, b.ul_edges_khz())
            && let Some(f) = b.ul_khz(u)
            && b.duplex == Duplex::Fdd
            && !channel_inside(f.into(), bw.khz().into(), lo.into(), hi.into())
        {
            self.err(
                &format!("{path}.ul_earfcn"),
                format!(
                    "a {bw} uplink channel at EARFCN {u} ({} MHz) leaves band {} uplink {}–{} MHz",
                    mhz(f.into()),
                    b.band,
                    mhz(lo.into()),
                    mhz(hi.into())
                ),
            );
            ok = false;
        }
        (ok, ul_earfcn)
    }

    /// TDD configuration 0..=6 (default 2) of a TDD cell; ignored, with a note, on FDD.
    fn lte_tdd_config(&mut self, cell: &CellParams, path: &str, tdd: Option<bool>) -> Option<u8> {
        match (tdd, cell.tdd_ul_dl_config.as_deref()) {
            (Some(true), None) => Some(2),
            (Some(true), Some(s)) => {
                let c = parse_lte_tdd_config(s);
                if c.is_none() {
                    self.err(&format!("{path}.tdd_ul_dl_config"), format!(
                        "{s:?} is not an LTE TDD configuration (0..=6 or simpleran's \"[Configuration N] …\" text; TS 36.211 table 4.2-2)"
                    ));
                }
                c
            }
            (Some(false), Some(_)) => {
                self.note(
                    &format!("{path}.tdd_ul_dl_config"),
                    "ignored: the cell is FDD",
                );
                None
            }
            _ => None,
        }
    }

    fn algos(
        &mut self,
        given: Option<&[String]>,
        path: &str,
        prefixes: &[&str],
        default: Vec<u8>,
    ) -> Option<Vec<u8>> {
        let Some(list) = given else {
            return Some(default);
        };
        let mut out = Vec::new();
        for (i, s) in list.iter().enumerate() {
            let t = s.trim();
            let n = prefixes
                .iter()
                .find_map(|p| t.strip_prefix(p))
                .and_then(|rest| rest.chars().next())
                .and_then(|c| c.to_digit(10))
                .filter(|d| *d <= 3);
            match n {
                Some(d) => out.push(d as u8),
                None => {
                    self.err(
                        &format!("{path}[{i}]"),
                        format!("{s:?} is not one of {}0..{}3", prefixes[0], prefixes[0]),
                    );
                    return None;
                }
            }
        }
        Some(out)
    }
}

/// `TimeToTrigger` values of TS 36.331, ms.
pub const TIME_TO_TRIGGER_MS: [u16; 16] = [
    0, 40, 64, 80, 100, 128, 160, 256, 320, 480, 512, 640, 1024, 1280, 2560, 5120,
];

/// LTE TDD configuration from a number (`2`, `"2"`) or simpleran's `"[Configuration 2] …"`.
pub fn parse_lte_tdd_config(s: &str) -> Option<u8> {
    let t = s.trim();
    let n = match t.strip_prefix("[Configuration ") {
        Some(rest) => rest.split(']').next()?.trim(),
        None => t,
    };
    n.parse::<u8>().ok().filter(|&n| n <= 6)
}
