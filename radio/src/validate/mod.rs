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

use crate::params::{self, EnbParams};
use crate::plan::*;
use serde::Serialize;
use std::fmt;

mod cell;
mod core_network;
mod lte;
mod nr;
mod ru;

pub use core_network::{parse_addr, split_plmn};
pub use lte::{TIME_TO_TRIGGER_MS, parse_lte_tdd_config};
pub use nr::NR_TDD_CONFIGS;
pub use ru::GAIN_DB;

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

    /// Checks the whole request in parameter order (node, cells, core network, handover,
    /// monitoring), collecting every error, and resolves the plan when there is none.
    fn run(mut self, p: &EnbParams) -> Result<Validated, Invalid> {
        let gnb_id_bits = self.gnb_id_bits(p);
        let (lte_cells, nr_cells) = self.cells(p, gnb_id_bits);
        self.check_uniqueness(&lte_cells, &nr_cells);

        let has_lte = p
            .cell_list
            .iter()
            .any(|(_, c)| c.cell_type.as_deref() == Some("lte"));
        let has_nr = p
            .cell_list
            .iter()
            .any(|(_, c)| c.cell_type.as_deref() == Some("nr"));

        self.node_ids(p, has_lte, has_nr, gnb_id_bits);
        let gtp_addr = self.gtp_addr(p);
        let (mme_list, amf_list) = self.core_nodes(p, has_lte, has_nr);

        let plmn_list = self.plmns(p, has_lte);
        let plmn_list_5g = self.plmns_5g(p, has_nr);

        let handover = self.handover(p);

        let monitoring = self.monitoring(p);

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

    /// Every cell of `cell_list`: its kind, its radio unit, then the LTE or NR rules.
    fn cells(&mut self, p: &EnbParams, gnb_id_bits: u8) -> (Vec<LteCell>, Vec<NrCell>) {
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
        (lte_cells, nr_cells)
    }

    /// The statistics period and the promise thresholds.
    fn monitoring(&mut self, p: &EnbParams) -> Monitoring {
        let period = p.enb_stats_fetch_period.unwrap_or(60.0);
        if !(period.is_finite() && period > 0.0 && period <= 86_400.0) {
            self.err(
                "enb_stats_fetch_period",
                format!("{period} s is not in (0, 86400]"),
            );
        }
        Monitoring {
            stats_period_s: period,
            max_rx_sample_db: p.max_rx_sample_db.unwrap_or(0.0),
            min_rxtx_delay_ms: p.min_rxtx_delay.unwrap_or(0.0),
        }
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
