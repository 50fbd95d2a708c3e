//! Radio units: a cell's `ru` is an inline SDR unit, a reference into `ru_list` (`ru_ref`) or the
//! unit of another cell (`ruincell_ref`); each resolves to one checked [`RadioUnit`].

use super::Validator;
use crate::params::{CellParams, EnbParams, Key, RuParams};
use crate::plan::RadioUnit;

/// The gains a radio unit may ask for (`tx_gain`, `rx_gain`), dB: wide enough for every SDR
/// front end (USRP B2x0: TX 0–89.8, RX 0–76; negative values attenuate), narrow enough that an
/// absurd number (a fuzz finding: `5.2e53`) is refused with its field rather than rendered.
pub const GAIN_DB: std::ops::RangeInclusive<f64> = -100.0..=100.0;

impl Validator {
    pub(super) fn resolve_ru(
        &mut self,
        p: &EnbParams,
        key: &Key,
        cell: &CellParams,
        path: &str,
    ) -> Option<RadioUnit> {
        let ru_path = format!("{path}.ru");
        let Some(ru) = &cell.ru else {
            self.err(
                &ru_path,
                "required: an inline SDR radio unit or {\"ru_type\": \"ru_ref\", \"ru_ref\": …}",
            );
            return None;
        };
        match ru.ru_type.as_deref().map(str::trim) {
            Some("ru_ref") => {
                let Some(r) = ru.ru_ref.as_deref() else {
                    self.err(
                        &format!("{ru_path}.ru_ref"),
                        "required with ru_type \"ru_ref\"",
                    );
                    return None;
                };
                let Some((rkey, target)) = p.ru_list.iter().find(|(k, _)| k.name() == r) else {
                    self.err(
                        &format!("{ru_path}.ru_ref"),
                        format!("no radio unit {r:?} in ru_list"),
                    );
                    return None;
                };
                self.ru(target, &rkey.path("ru_list"), &rkey.name())
            }
            Some("ruincell_ref") => {
                let Some(r) = ru.ruincell_ref.as_deref() else {
                    self.err(
                        &format!("{ru_path}.ruincell_ref"),
                        "required with ru_type \"ruincell_ref\"",
                    );
                    return None;
                };
                let Some((okey, other)) = p.cell_list.iter().find(|(k, _)| k.name() == r) else {
                    self.err(
                        &format!("{ru_path}.ruincell_ref"),
                        format!("no cell {r:?} in cell_list"),
                    );
                    return None;
                };
                match &other.ru {
                    Some(o) if o.ru_type.as_deref() != Some("ruincell_ref") && okey != key => {
                        self.resolve_ru(p, okey, other, &okey.path("cell_list"))
                    }
                    _ => {
                        self.err(&format!("{ru_path}.ruincell_ref"), format!(
                            "cell {r:?} must have its own radio unit (no chains of ruincell_ref)"
                        ));
                        None
                    }
                }
            }
            _ => self.ru(ru, &ru_path, &key.name()),
        }
    }

    /// A required gain inside [`GAIN_DB`]: a value outside (`5.2e53`) is an error naming the
    /// field and the value, never a number handed to the radio.
    fn gain(&mut self, path: &str, v: Option<f64>, what: &str) -> Option<f64> {
        let g = self.required(path, v, what)?;
        if GAIN_DB.contains(&g) {
            Some(g)
        } else {
            // Exponent form for the absurd ones: `5.2e53 dB`, not 54 digits.
            let shown = if g.abs() < 1e6 {
                g.to_string()
            } else {
                format!("{g:e}")
            };
            self.err(
                path,
                format!(
                    "{shown} dB is outside {}..={} dB (no SDR front end has such a gain)",
                    GAIN_DB.start(),
                    GAIN_DB.end()
                ),
            );
            None
        }
    }

    fn ru(&mut self, ru: &RuParams, path: &str, name: &str) -> Option<RadioUnit> {
        let mut ok = true;
        match ru.ru_type.as_deref().map(str::trim) {
            Some("sdr") | None => {}
            Some(other) => {
                self.err(&format!("{path}.ru_type"), format!(
                    "{other:?} radio units are not served by this release (only \"sdr\", \"ru_ref\", \"ruincell_ref\")"
                ));
                ok = false;
            }
        }
        match ru.ru_link_type.as_deref() {
            None | Some("sdr") => {}
            Some(other) => {
                self.err(
                    &format!("{path}.ru_link_type"),
                    format!("{other:?}: only \"sdr\" links are supported"),
                );
                ok = false;
            }
        }
        let n_dl = ru.n_antenna_dl.unwrap_or(1);
        let n_ul = ru.n_antenna_ul.unwrap_or(1);
        if ![1, 2, 4, 8].contains(&n_dl) {
            self.err(
                &format!("{path}.n_antenna_dl"),
                format!("{n_dl} is not 1, 2, 4 or 8"),
            );
            ok = false;
        }
        if ![1, 2, 4].contains(&n_ul) {
            self.err(
                &format!("{path}.n_antenna_ul"),
                format!("{n_ul} is not 1, 2 or 4"),
            );
            ok = false;
        }
        let tx = self.gain(
            &format!("{path}.tx_gain"),
            ru.tx_gain,
            "TX gain in dB (ru/common.json)",
        );
        let rx = self.gain(
            &format!("{path}.rx_gain"),
            ru.rx_gain,
            "RX gain in dB (ru/common.json)",
        );
        let active = match ru.txrx_active.as_deref().map(str::trim) {
            None | Some("INACTIVE") => false,
            Some("ACTIVE") => true,
            Some(other) => {
                self.err(
                    &format!("{path}.txrx_active"),
                    format!("{other:?} is not \"ACTIVE\" or \"INACTIVE\""),
                );
                ok = false;
                false
            }
        };
        let mut seen = ru.sdr_dev_list.clone();
        seen.sort_unstable();
        seen.dedup();
        if seen.len() != ru.sdr_dev_list.len() {
            self.err(
                &format!("{path}.sdr_dev_list"),
                "duplicate /dev/sdr numbers",
            );
            ok = false;
        }
        let (tx, rx) = (tx?, rx?);
        ok.then(|| RadioUnit {
            name: name.to_string(),
            n_antenna_dl: n_dl,
            n_antenna_ul: n_ul,
            tx_gain_db: tx,
            rx_gain_db: rx,
            txrx_active: active,
            sdr_dev_list: ru.sdr_dev_list.clone(),
        })
    }
}
