//! Validation of simpleran-style parameters into a [`Plan`].
//!
//! Every rule produces an [`Issue`] naming the parameter path (`cell_list.cell1.dl_earfcn`) and
//! the rule, with the table value that decided it. All errors are collected, not only the
//! first. Notes are non-fatal remarks (ignored or unknown parameters, a PSS collision).
//!
//! Rules, by source:
//! * TS 36.101 table 5.7.3-1 / 5.6.1-1: EARFCN in a band, band duplex vs `rf_mode`, bandwidth
//!   allowed in the band, the whole channel inside the band (downlink and uplink), `ul_earfcn`
//!   in the same band (TDD: equal to `dl_earfcn`).
//! * TS 38.104 §5.4.2 / table 5.4.2.3-1, TS 38.101: NR-ARFCN on the band's channel raster,
//!   channel inside the band, (SCS, bandwidth) has an `N_RB`, SSB on the sync raster inside the
//!   carrier and aligned to its SCS.
//! * TS 36.211 / 38.211: PCI 0..=503 (LTE), 0..=1007 (NR); root sequence index 0..=837.
//! * TS 23.003: PLMN = 3-digit MCC + 2/3-digit MNC; LTE TAC 16 bits; NR TAC 24 bits
//!   (simpleran: 0x000001..=0xFFFFFF except 0xFFFFFE); eNB ID ≤ 28 bits; gNB ID < 2^gnb_id_bits,
//!   `gnb_id_bits` 22..=32; NR cell id < 2^(36 − gnb_id_bits).
//! * simpleran: `mme_list`/`plmn_list`/`enb_id` required with LTE cells, `amf_list`/
//!   `plmn_list_5g`/`gnb_id` with NR cells; ≤ 6 LTE PLMNs, ≤ 12 NR PLMNs.

use crate::bands::mhz;
use crate::bands::nr::{self, NrDuplex};
use crate::params::{self, CellParams, EnbParams, Key};
use crate::plan::*;
use serde::Serialize;
use std::fmt;

mod cell;
mod core_network;
mod lte;
mod ru;

use cell::channel_inside;

pub use core_network::{parse_addr, split_plmn};
pub use lte::{TIME_TO_TRIGGER_MS, parse_lte_tdd_config};

/// One finding: the parameter path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Issue {
    /// JSON path of the parameter (`cell_list.cell1.dl_earfcn`); empty for the whole request.
    pub path: String,
    /// The rule and the values that broke it.
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "`{}`: {}", self.path, self.message)
        }
    }
}

/// A request that did not validate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Invalid {
    /// Errors, in parameter order.
    pub errors: Vec<Issue>,
    /// Non-fatal notes.
    pub notes: Vec<Issue>,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} invalid parameter(s):", self.errors.len())?;
        for e in &self.errors {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

/// A validated request.
#[derive(Debug, Clone, PartialEq)]
pub struct Validated {
    /// The resolved base station.
    pub plan: Plan,
    /// Non-fatal notes.
    pub notes: Vec<Issue>,
}

/// Any failure of [`validate_json`]: unreadable document or invalid values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The document could not be read (syntax or a wrong type, with its path).
    #[error(transparent)]
    Params(#[from] params::ParamsError),
    /// Values broke rules.
    #[error(transparent)]
    Invalid(#[from] Invalid),
}

/// Reads and validates a parameter document; unknown keys become notes.
pub fn validate_json(json: &str) -> Result<Validated, RequestError> {
    let raw: serde_json::Value =
        serde_json::from_str(json).map_err(|e| params::ParamsError::Syntax(e.to_string()))?;
    let doc = params::normalise(raw)?;
    let unknown = params::unknown_keys_in_document(&doc);
    let p = params::from_value(doc)?;
    let mut v = Validator::default();
    for path in unknown {
        v.note(
            &path,
            "unknown parameter, ignored (not a simpleran name this release reads)",
        );
    }
    v.run(&p).map_err(RequestError::Invalid)
}

/// Validates already parsed parameters.
pub fn validate(p: &EnbParams) -> Result<Validated, Invalid> {
    Validator::default().run(p)
}

#[derive(Default)]
struct Validator {
    errors: Vec<Issue>,
    notes: Vec<Issue>,
}

impl Validator {
    fn err(&mut self, path: &str, msg: impl Into<String>) {
        self.errors.push(Issue {
            path: path.to_string(),
            message: msg.into(),
        });
    }

    fn note(&mut self, path: &str, msg: impl Into<String>) {
        self.notes.push(Issue {
            path: path.to_string(),
            message: msg.into(),
        });
    }

    fn required<T: Copy>(&mut self, path: &str, v: Option<T>, what: &str) -> Option<T> {
        if v.is_none() {
            self.err(path, format!("required: {what}"));
        }
        v
    }

    fn run(mut self, p: &EnbParams) -> Result<Validated, Invalid> {
        let gnb_id_bits = p.gnb_id_bits.unwrap_or(28);
        if !(22..=32).contains(&gnb_id_bits) {
            self.err(
                "gnb_id_bits",
                format!("{gnb_id_bits} is outside 22..=32 (TS 38.413 gNB-ID length)"),
            );
        }

        let mut lte_cells = Vec::new();
        let mut nr_cells = Vec::new();
        if p.cell_list.is_empty() {
            self.err("cell_list", "at least one cell is required");
        }
        for (key, cell) in p.cell_list.iter() {
            let path = key.path("cell_list");
            match cell.cell_kind.as_deref().map(str::trim) {
                None | Some("enb") => {}
                Some(other) => {
                    self.err(&format!("{path}.cell_kind"), format!(
                        "{other:?} cells are not served by this release (only \"enb\"; UE and peer cells are simpleran features not ported)"
                    ));
                    continue;
                }
            }
            let ru = self.resolve_ru(p, key, cell, &path);
            match cell.cell_type.as_deref().map(str::trim) {
                Some("lte") => {
                    if let Some(c) = self.lte_cell(key, cell, &path, ru) {
                        lte_cells.push(c);
                    }
                }
                Some("nr") => {
                    if let Some(c) = self.nr_cell(key, cell, &path, ru, gnb_id_bits) {
                        nr_cells.push(c);
                    }
                }
                Some(other) => self.err(
                    &format!("{path}.cell_type"),
                    format!("{other:?} is not \"lte\" or \"nr\""),
                ),
                None => self.err(&format!("{path}.cell_type"), "required: \"lte\" or \"nr\""),
            }
        }
        self.check_uniqueness(&lte_cells, &nr_cells);

        let has_lte = p
            .cell_list
            .iter()
            .any(|(_, c)| c.cell_type.as_deref() == Some("lte"));
        let has_nr = p
            .cell_list
            .iter()
            .any(|(_, c)| c.cell_type.as_deref() == Some("nr"));

        if let Some(id) = p.enb_id {
            if id > 0x0FFF_FFFF {
                self.err(
                    "enb_id",
                    format!(
                        "{id:#x} exceeds 28 bits (20-bit macro or 28-bit home eNB ID, TS 36.413)"
                    ),
                );
            }
        } else if has_lte {
            self.err("enb_id", "required when there are LTE cells");
        }
        match p.gnb_id {
            Some(id) if (22..=32).contains(&gnb_id_bits) && id >> gnb_id_bits != 0 => {
                self.err(
                    "gnb_id",
                    format!("{id:#x} does not fit in gnb_id_bits = {gnb_id_bits}"),
                );
            }
            None if has_nr => self.err("gnb_id", "required when there are NR cells"),
            _ => {}
        }

        let gtp_addr = match parse_addr(p.gtp_addr.as_deref().unwrap_or("127.0.1.1")) {
            Ok(a) => Some(a),
            Err(e) => {
                self.err("gtp_addr", e);
                None
            }
        };
        let mme_list = self.core_list(
            &p.mme_list,
            "mme_list",
            "mme_addr",
            |m| (&m.mme_addr, &m.s1ap_bind_addr),
            "s1ap_bind_addr",
        );
        let amf_list = self.core_list(
            &p.amf_list,
            "amf_list",
            "amf_addr",
            |a| (&a.amf_addr, &a.ngap_bind_addr),
            "ngap_bind_addr",
        );
        if has_lte && mme_list.is_empty() && p.mme_list.is_empty() {
            self.err(
                "mme_list",
                "at least one MME is required when there are LTE cells",
            );
        }
        if has_nr && amf_list.is_empty() && p.amf_list.is_empty() {
            self.err(
                "amf_list",
                "at least one AMF is required when there are NR cells",
            );
        }

        let plmn_list = self.plmns(p, has_lte);
        let plmn_list_5g = self.plmns_5g(p, has_nr);

        let handover = self.handover(p);

        let period = p.enb_stats_fetch_period.unwrap_or(60.0);
        if !(period.is_finite() && period > 0.0 && period <= 86_400.0) {
            self.err(
                "enb_stats_fetch_period",
                format!("{period} s is not in (0, 86400]"),
            );
        }
        let monitoring = Monitoring {
            stats_period_s: period,
            max_rx_sample_db: p.max_rx_sample_db.unwrap_or(0.0),
            min_rxtx_delay_ms: p.min_rxtx_delay.unwrap_or(0.0),
        };

        if !self.errors.is_empty() {
            return Err(Invalid {
                errors: self.errors,
                notes: self.notes,
            });
        }
        let Some(gtp_addr) = gtp_addr else {
            return Err(Invalid {
                errors: self.errors,
                notes: self.notes,
            });
        };
        let plan = Plan {
            enb_id: p.enb_id.filter(|_| has_lte),
            gnb_id: p.gnb_id.filter(|_| has_nr),
            gnb_id_bits,
            gtp_addr,
            mme_list,
            amf_list,
            plmn_list,
            plmn_list_5g,
            handover,
            lte_cells,
            nr_cells,
            monitoring,
        };
        Ok(Validated {
            plan,
            notes: self.notes,
        })
    }

    fn nr_cell(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(parse_addr("1.2.3.4").unwrap().to_string(), "1.2.3.4");
        assert_eq!(parse_addr("4.3.2.1:77").unwrap().port, Some(77));
        assert_eq!(
            parse_addr("[abcd:5::1]:78").unwrap().to_string(),
            "[abcd:5::1]:78"
        );
        assert_eq!(parse_addr("dcba:5::1").unwrap().port, None);
        assert_eq!(parse_addr("[dcba:5::1]").unwrap().port, None);
        assert!(parse_addr("mme.example").is_err());
        assert!(parse_addr("1.2.3.4:0").is_err());
        assert!(parse_addr("1.2.3").is_err());
    }

    #[test]
    fn plmns_and_tdd_configs() {
        assert_eq!(split_plmn("00101").unwrap(), ("001".into(), "01".into()));
        assert_eq!(split_plmn("310410").unwrap(), ("310".into(), "410".into()));
        assert!(split_plmn("0010").is_err());
        assert!(split_plmn("0010a").is_err());
        assert!(split_plmn("0010123").is_err());
        assert_eq!(
            parse_lte_tdd_config("[Configuration 5] DSUDDDDDDD (10ms, 8DL/1UL), …"),
            Some(5)
        );
        assert_eq!(parse_lte_tdd_config("1"), Some(1));
        assert_eq!(parse_lte_tdd_config("7"), None);
        assert_eq!(parse_lte_tdd_config("[Configuration x]"), None);
    }
}
