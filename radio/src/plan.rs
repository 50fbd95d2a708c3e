//! The validated, resolved base station: what [`crate::validate`] produces and the generators,
//! the RT derivation and the stand-in workload consume.
//!
//! Every frequency is computed (kHz, exact), every default applied and every reference
//! resolved, so consumers never look at raw parameters again. A `Plan` serialises to JSON
//! (`radio.json`, written by `slapos-radio render`) and reads back unchanged.

use crate::bands::lte::{Duplex, LteBandwidth};
use crate::bands::nr::NrDuplex;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// A validated eNB/gNB.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// eNB ID (present when there are LTE cells).
    pub enb_id: Option<u32>,
    /// gNB ID (present when there are NR cells).
    pub gnb_id: Option<u64>,
    /// Bits of the gNB ID in the NR cell identity.
    pub gnb_id_bits: u8,
    /// GTP-U address.
    pub gtp_addr: CoreAddr,
    /// MMEs, in order.
    pub mme_list: Vec<CoreNode>,
    /// AMFs, in order.
    pub amf_list: Vec<CoreNode>,
    /// LTE PLMNs.
    pub plmn_list: Vec<Plmn>,
    /// NR PLMNs.
    pub plmn_list_5g: Vec<Plmn>,
    /// A3 handover settings between this eNB's LTE cells.
    pub handover: Handover,
    /// LTE cells, in request order.
    pub lte_cells: Vec<LteCell>,
    /// NR cells, in request order.
    pub nr_cells: Vec<NrCell>,
    /// Thresholds and periods for statistics and promises.
    pub monitoring: Monitoring,
}

/// An IP address with an optional port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoreAddr {
    /// Address.
    pub ip: IpAddr,
    /// Port, if one was given.
    pub port: Option<u16>,
}

impl std::fmt::Display for CoreAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match (self.ip, self.port) {
            (IpAddr::V6(ip), Some(p)) => write!(f, "[{ip}]:{p}"),
            (ip, Some(p)) => write!(f, "{ip}:{p}"),
            (ip, None) => write!(f, "{ip}"),
        }
    }
}

/// An MME or AMF.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoreNode {
    /// Peer address.
    pub addr: CoreAddr,
    /// Local bind address, if given.
    pub bind_addr: Option<CoreAddr>,
}

/// A PLMN with its parts split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plmn {
    /// The 5- or 6-digit PLMN as given.
    pub plmn: String,
    /// Mobile country code (3 digits).
    pub mcc: String,
    /// Mobile network code (2 or 3 digits).
    pub mnc: String,
    /// 5G tracking area code (NR PLMNs only).
    pub tac: Option<u32>,
    /// Reserved for operator use.
    pub reserved: bool,
    /// Attach without PDN (LTE).
    pub attach_without_pdn: bool,
}

/// A3 handover event settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handover {
    /// A3 offset, dB.
    pub a3_offset_db: i32,
    /// Hysteresis in 0.5 dB steps.
    pub hysteresis: u8,
    /// Time to trigger, ms.
    pub time_to_trigger_ms: u16,
}

impl Default for Handover {
    fn default() -> Self {
        // simpleran's defaults for eutra_eutra_handover.
        Handover {
            a3_offset_db: 6,
            hysteresis: 0,
            time_to_trigger_ms: 480,
        }
    }
}

/// A resolved radio unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RadioUnit {
    /// Reference (key in `ru_list`, or the cell's reference for an inline unit).
    pub name: String,
    /// Downlink antennas.
    pub n_antenna_dl: u8,
    /// Uplink antennas.
    pub n_antenna_ul: u8,
    /// TX gain, dB.
    pub tx_gain_db: f64,
    /// RX gain, dB.
    pub rx_gain_db: f64,
    /// Whether the unit transmits and receives (`txrx_active = ACTIVE`).
    pub txrx_active: bool,
    /// `/dev/sdrN` numbers.
    pub sdr_dev_list: Vec<u32>,
}

/// A resolved LTE cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LteCell {
    /// Reference of the cell in `cell_list`.
    pub name: String,
    /// 8-bit cell id.
    pub cell_id: u8,
    /// Physical cell id (0..=503).
    pub pci: u16,
    /// Tracking area code.
    pub tac: u16,
    /// FDD or TDD.
    pub duplex: Duplex,
    /// E-UTRA band.
    pub band: u16,
    /// Channel bandwidth.
    pub bandwidth: LteBandwidth,
    /// Resource blocks.
    pub n_rb: u16,
    /// Downlink EARFCN.
    pub dl_earfcn: u32,
    /// Uplink EARFCN.
    pub ul_earfcn: u32,
    /// Downlink carrier, kHz.
    pub dl_freq_khz: u32,
    /// Uplink carrier, kHz.
    pub ul_freq_khz: u32,
    /// TDD uplink/downlink configuration 0..=6 (TDD only).
    pub tdd_config: Option<u8>,
    /// PRACH root sequence index.
    pub root_sequence_index: u16,
    /// RRC inactivity timer, ms.
    pub inactivity_timer_ms: u32,
    /// Preferred ciphering algorithms (EEA numbers).
    pub cipher_algo_pref: Vec<u8>,
    /// Preferred integrity algorithms (EIA numbers).
    pub integ_algo_pref: Vec<u8>,
    /// Radio unit.
    pub ru: RadioUnit,
}

/// A resolved NR cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NrCell {
    /// Reference of the cell in `cell_list`.
    pub name: String,
    /// Cell id (36 − `gnb_id_bits` bits).
    pub cell_id: u64,
    /// Physical cell id (0..=1007).
    pub pci: u16,
    /// FDD or TDD.
    pub duplex: NrDuplex,
    /// NR band.
    pub band: u16,
    /// Channel bandwidth, MHz.
    pub bandwidth_mhz: u16,
    /// Subcarrier spacing, kHz.
    pub scs_khz: u16,
    /// Resource blocks.
    pub n_rb: u16,
    /// Downlink NR-ARFCN.
    pub dl_nr_arfcn: u32,
    /// Uplink NR-ARFCN.
    pub ul_nr_arfcn: u32,
    /// SS block NR-ARFCN.
    pub ssb_nr_arfcn: u32,
    /// SS block GSCN.
    pub gscn: u32,
    /// SS block subcarrier spacing, kHz.
    pub ssb_scs_khz: u16,
    /// SS block position bitmap.
    pub ssb_pos_bitmap: String,
    /// Downlink carrier, kHz.
    pub dl_freq_khz: u64,
    /// Uplink carrier, kHz.
    pub ul_freq_khz: u64,
    /// SS block centre, kHz.
    pub ssb_freq_khz: u64,
    /// TDD pattern (simpleran's text), TDD only.
    pub tdd_ul_dl_config: Option<String>,
    /// PRACH root sequence index.
    pub root_sequence_index: u16,
    /// RRC inactivity timer, ms.
    pub inactivity_timer_ms: u32,
    /// Radio unit.
    pub ru: RadioUnit,
}

impl NrCell {
    /// Slot duration in microseconds (1 ms at 15 kHz, halved per doubling).
    pub fn slot_us(&self) -> u32 {
        1000 * 15 / u32::from(self.scs_khz.max(15))
    }

    /// Sampling rate in samples per second: the smallest 2^k · 1.92 Msps ≥ 1.3 × bandwidth.
    pub fn sample_rate(&self) -> u32 {
        let need = u64::from(self.bandwidth_mhz) * 1_300_000;
        let mut rate = 1_920_000u64;
        while rate < need {
            rate *= 2;
        }
        u32::try_from(rate).unwrap_or(u32::MAX)
    }
}

/// Monitoring settings (simpleran names in comments).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Monitoring {
    /// `enb_stats_fetch_period`, seconds.
    pub stats_period_s: f64,
    /// `max_rx_sample_db`, dBFS.
    pub max_rx_sample_db: f64,
    /// `min_rxtx_delay`, ms.
    pub min_rxtx_delay_ms: f64,
}

impl Plan {
    /// Shortest TTI/slot among the cells, in microseconds (1000 for LTE).
    pub fn tti_us(&self) -> u32 {
        let lte = (!self.lte_cells.is_empty()).then_some(1000);
        lte.into_iter()
            .chain(self.nr_cells.iter().map(NrCell::slot_us))
            .min()
            .unwrap_or(1000)
    }

    /// Number of cells.
    pub fn cell_count(&self) -> usize {
        self.lte_cells.len() + self.nr_cells.len()
    }
}
