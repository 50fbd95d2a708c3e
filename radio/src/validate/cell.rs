//! What LTE and NR cells share: the `rf_mode`, the PRACH root sequence index and inactivity
//! timer, the rule that a channel lies inside its band, and the checks across the cells of one
//! base station (unique ids, PCI collisions, overlapping carriers, inactive radio units).

use super::Validator;
use crate::bands::mhz;
use crate::params::{CellParams, Key};
use crate::plan::{LteCell, NrCell};
use std::collections::BTreeMap;

impl Validator {
    pub(super) fn rf_mode(&mut self, cell: &CellParams, path: &str) -> Option<bool> {
        match cell.rf_mode.as_deref().map(str::trim) {
            Some("fdd") => Some(false),
            Some("tdd") => Some(true),
            Some(other) => {
                self.err(
                    &format!("{path}.rf_mode"),
                    format!("{other:?} is not \"fdd\" or \"tdd\""),
                );
                None
            }
            None => {
                self.err(&format!("{path}.rf_mode"), "required: \"fdd\" or \"tdd\"");
                None
            }
        }
    }

    pub(super) fn common(
        &mut self,
        cell: &CellParams,
        path: &str,
        root_default: u32,
    ) -> Option<(u16, u32)> {
        let rsi = cell.root_sequence_index.unwrap_or(root_default);
        let mut ok = true;
        if rsi > 837 {
            self.err(
                &format!("{path}.root_sequence_index"),
                format!("{rsi} is outside 0..=837 (TS 36.211 / 38.211)"),
            );
            ok = false;
        }
        let timer = cell.inactivity_timer.unwrap_or(10_000);
        if timer == 0 {
            self.err(&format!("{path}.inactivity_timer"), "must be > 0 ms");
            ok = false;
        }
        ok.then_some((rsi as u16, timer))
    }

    pub(super) fn check_uniqueness(&mut self, lte: &[LteCell], nr: &[NrCell]) {
        let mut ids: BTreeMap<u8, &str> = BTreeMap::new();
        let mut by_freq: BTreeMap<(u32, u16), &str> = BTreeMap::new();
        for c in lte {
            if let Some(other) = ids.insert(c.cell_id, &c.name) {
                self.err(&format!("{}.cell_id", Key::Name(c.name.clone()).path("cell_list")), format!(
                    "{:#04x} is also the cell_id of cell {other:?}; LTE cell ids of one eNB must differ",
                    c.cell_id
                ));
            }
            if let Some(other) = by_freq.insert((c.dl_earfcn, c.pci), &c.name) {
                self.err(
                    &format!("{}.pci", Key::Name(c.name.clone()).path("cell_list")),
                    format!(
                        "{} is also the PCI of cell {other:?} on the same EARFCN {}",
                        c.pci, c.dl_earfcn
                    ),
                );
            }
        }
        for (i, a) in lte.iter().enumerate() {
            for b in &lte[i + 1..] {
                if a.dl_earfcn == b.dl_earfcn && a.pci != b.pci && a.pci % 3 == b.pci % 3 {
                    self.note(&format!("{}.pci", Key::Name(b.name.clone()).path("cell_list")), format!(
                        "PCI {} and {} of cell {:?} share PCI mod 3 on EARFCN {}: same PSS, UEs may confuse the cells",
                        b.pci, a.pci, a.name, a.dl_earfcn
                    ));
                }
            }
        }
        // Carriers of this base station that partly overlap (same centre is frequency reuse).
        let carriers: Vec<(&str, u64, u64)> = lte
            .iter()
            .map(|c| {
                (
                    c.name.as_str(),
                    u64::from(c.dl_freq_khz),
                    u64::from(c.bandwidth.khz()),
                )
            })
            .chain(nr.iter().map(|c| {
                (
                    c.name.as_str(),
                    c.dl_freq_khz,
                    u64::from(c.bandwidth_mhz) * 1000,
                )
            }))
            .collect();
        for (i, a) in carriers.iter().enumerate() {
            for b in &carriers[i + 1..] {
                if a.1 != b.1 && a.1.abs_diff(b.1) < (a.2 + b.2) / 2 {
                    self.note(&format!("{}.bandwidth", Key::Name(b.0.to_string()).path("cell_list")), format!(
                        "the downlink channel of cell {:?} ({} MHz wide at {} MHz) overlaps that of cell {:?} ({} MHz wide at {} MHz)",
                        b.0, mhz(b.2), mhz(b.1), a.0, mhz(a.2), mhz(a.1)
                    ));
                }
            }
        }
        let mut nr_ids: BTreeMap<u64, &str> = BTreeMap::new();
        let mut nr_freq: BTreeMap<(u32, u16), &str> = BTreeMap::new();
        for c in nr {
            if let Some(other) = nr_ids.insert(c.cell_id, &c.name) {
                self.err(&format!("{}.cell_id", Key::Name(c.name.clone()).path("cell_list")), format!(
                    "{:#x} is also the cell_id of cell {other:?}; NR cell ids of one gNB must differ",
                    c.cell_id
                ));
            }
            if let Some(other) = nr_freq.insert((c.ssb_nr_arfcn, c.pci), &c.name) {
                self.err(
                    &format!("{}.pci", Key::Name(c.name.clone()).path("cell_list")),
                    format!(
                        "{} is also the PCI of cell {other:?} on the same SSB frequency",
                        c.pci
                    ),
                );
            }
        }
        for c in lte
            .iter()
            .map(|c| (&c.name, c.ru.txrx_active))
            .chain(nr.iter().map(|c| (&c.name, c.ru.txrx_active)))
        {
            if !c.1 {
                self.note(
                    &format!(
                        "{}.ru.txrx_active",
                        Key::Name(c.0.clone()).path("cell_list")
                    ),
                    "INACTIVE (the default): the radio unit does not transmit",
                );
            }
        }
    }
}

/// True when a channel `bw_khz` wide centred at `center_khz` lies within `lo..=hi` kHz.
pub(super) fn channel_inside(center_khz: u64, bw_khz: u64, lo: u64, hi: u64) -> bool {
    center_khz >= lo + bw_khz / 2 && center_khz + bw_khz / 2 <= hi
}
