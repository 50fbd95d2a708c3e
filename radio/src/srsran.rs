//! srsRAN 4G (srsENB, release 23.x) configuration from a [`Plan`]: `enb.conf` and `rr.conf`.
//!
//! # What is generated
//!
//! * `enb.conf` — `[enb]` (eNB id, MCC/MNC of the first PLMN, MME, GTP/S1 bind addresses, PRBs,
//!   ports/TM), `[enb_files]`, `[rf]` (gains, device), `[log]`, `[expert]` (metrics period and
//!   CSV, inactivity timer, EEA/EIA preference, PHY threads).
//! * `rr.conf` — the MAC/PHY dedicated defaults of srsRAN's example, `cell_list` (one entry per
//!   LTE cell with `dl_earfcn` and the computed `ul_earfcn`, intra-eNB A3 handover between cells
//!   when there are several) and `nr_cell_list` (EN-DC secondary NR cells).
//!
//! # What is not generated
//!
//! `sib.conf` and `rb.conf` carry no request-dependent value for these parameters (PLMN, TAC and
//! frequencies live in `enb.conf`/`rr.conf`); they are referenced by path
//! ([`SrsranOptions::sib_config`], [`SrsranOptions::rb_config`]) and the stock files installed
//! by `srsran_install_configs.sh` are used. Carrier aggregation (`scell_list`), MBMS, S1 handover
//! to other eNBs and neighbour cells of other eNBs are not rendered.
//!
//! # srsENB limits turned into errors
//!
//! srsENB runs LTE FDD only (its cell setup hard-codes FDD), has one `n_prb` for all cells, one
//! MME on port 36412, at most 2 antenna ports, 20-bit eNB ids, and NR only as EN-DC secondary
//! cells at 15 kHz whose bandwidth follows `n_prb` (25/50/100 PRB → 5/10/20 MHz). A plan outside
//! these limits is refused with the parameter path, rather than rendered into a file srsENB
//! would reject or silently reinterpret.

use crate::bands::lte::Duplex;
use crate::bands::mhz;
use crate::params::Key;
use crate::plan::{LteCell, Plan};
use std::fmt::Write as _;

/// Choices that are not part of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrsranOptions {
    /// `[rf] device_name` (`auto`, `UHD`, `soapy`, `zmq`, …).
    pub device_name: String,
    /// `[rf] device_args`.
    pub device_args: String,
    /// `[enb_files] sib_config`.
    pub sib_config: String,
    /// `[enb_files] rr_config`.
    pub rr_config: String,
    /// `[enb_files] rb_config`.
    pub rb_config: String,
    /// `[log] filename`.
    pub log_file: String,
    /// `[expert] metrics_csv_filename` (CSV metrics are always enabled).
    pub metrics_csv: String,
    /// `[expert] nof_phy_threads` (1..=4); `None` keeps srsENB's default.
    pub nof_phy_threads: Option<u8>,
}

impl Default for SrsranOptions {
    fn default() -> Self {
        SrsranOptions {
            device_name: "auto".into(),
            device_args: "auto".into(),
            sib_config: "sib.conf".into(),
            rr_config: "rr.conf".into(),
            rb_config: "rb.conf".into(),
            log_file: "enb.log".into(),
            metrics_csv: "enb_metrics.csv".into(),
            nof_phy_threads: None,
        }
    }
}

/// Generated files and remarks about what was approximated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// Contents of `enb.conf`.
    pub enb_conf: String,
    /// Contents of `rr.conf`.
    pub rr_conf: String,
    /// Remarks (an extra PLMN not broadcast, gains taken from the first radio unit, …).
    pub notes: Vec<String>,
}

/// A plan srsRAN 4G cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{path}`: {message}")]
pub struct RenderError {
    /// Parameter path.
    pub path: String,
    /// Why srsENB cannot run it.
    pub message: String,
}

fn err(path: impl Into<String>, message: impl Into<String>) -> RenderError {
    RenderError {
        path: path.into(),
        message: message.into(),
    }
}

fn cell_path(name: &str, field: &str) -> String {
    format!("{}.{field}", Key::Name(name.to_string()).path("cell_list"))
}

/// Renders `enb.conf` and `rr.conf` for srsENB.
pub fn render(plan: &Plan, opts: &SrsranOptions) -> Result<Rendered, RenderError> {
    let mut notes = Vec::new();
    let first = plan.lte_cells.first().ok_or_else(|| {
        err("cell_list", "srsRAN 4G needs at least one LTE cell (it runs NR only as EN-DC secondary cells; use srsRAN Project for standalone NR)")
    })?;
    for c in &plan.lte_cells {
        if c.duplex != Duplex::Fdd {
            return Err(err(
                cell_path(&c.name, "rf_mode"),
                format!("srsENB runs LTE FDD only; band {} is TDD", c.band),
            ));
        }
        if c.bandwidth != first.bandwidth {
            return Err(err(
                cell_path(&c.name, "bandwidth"),
                format!(
                    "{} differs from {} of cell {:?}; srsENB has one n_prb for all cells",
                    c.bandwidth, first.bandwidth, first.name
                ),
            ));
        }
    }
    let enb_id = plan.enb_id.ok_or_else(|| err("enb_id", "required"))?;
    if enb_id > 0xF_FFFF {
        return Err(err(
            "enb_id",
            format!("{enb_id:#x} exceeds the 20-bit macro eNB id srsENB uses"),
        ));
    }
    let plmn = plan
        .plmn_list
        .first()
        .ok_or_else(|| err("plmn_list", "required"))?;
    if plan.plmn_list.len() > 1 {
        notes.push(format!(
            "plmn_list: srsENB broadcasts one PLMN; {} is used, {} other(s) dropped",
            plmn.plmn,
            plan.plmn_list.len() - 1
        ));
    }
    let mme = plan
        .mme_list
        .first()
        .ok_or_else(|| err("mme_list", "required"))?;
    if let Some(port) = mme.addr.port.filter(|&p| p != 36412) {
        return Err(err(
            "mme_list[0].mme_addr",
            format!("port {port}: srsENB connects to the MME on port 36412 only"),
        ));
    }
    if plan.mme_list.len() > 1 {
        notes.push(format!(
            "mme_list: srsENB connects to one MME; {} is used",
            mme.addr.ip
        ));
    }
    if let Some(p) = plan.gtp_addr.port.filter(|&p| p != 2152) {
        notes.push(format!(
            "gtp_addr: port {p} ignored, srsENB binds GTP-U on 2152"
        ));
    }
    let s1c_bind = mme
        .bind_addr
        .as_ref()
        .map(|b| b.ip)
        .unwrap_or(plan.gtp_addr.ip);

    let ru = &first.ru;
    let all_cells_rus = plan
        .lte_cells
        .iter()
        .map(|c| &c.ru)
        .chain(plan.nr_cells.iter().map(|c| &c.ru));
    if all_cells_rus
        .clone()
        .any(|r| r.tx_gain_db != ru.tx_gain_db || r.rx_gain_db != ru.rx_gain_db)
    {
        notes.push(format!(
            "ru: srsENB has one tx_gain/rx_gain; those of radio unit {:?} are used for all cells",
            ru.name
        ));
    }
    let (tx_gain, rx_gain) = if ru.txrx_active {
        (ru.tx_gain_db, ru.rx_gain_db)
    } else {
        notes.push(format!(
            "ru {:?}: txrx_active is INACTIVE; srsENB has no radio-off switch, gains are set to 0 dB (the device minimum still transmits)",
            ru.name
        ));
        (0.0, 0.0)
    };
    let max_ant = all_cells_rus.map(|r| r.n_antenna_dl).max().unwrap_or(1);
    if max_ant > 2 {
        notes.push(format!(
            "n_antenna_dl = {max_ant}: srsENB supports at most 2 ports, 2 are used"
        ));
    }
    if plan
        .lte_cells
        .iter()
        .any(|c| c.inactivity_timer_ms != first.inactivity_timer_ms)
    {
        notes.push("inactivity_timer: srsENB has one timer; the first cell's is used".into());
    }

    // NR secondary cells.
    for c in &plan.nr_cells {
        let lte_mhz = first.bandwidth.khz() / 1000;
        if c.scs_khz != 15 {
            return Err(err(
                cell_path(&c.name, "subcarrier_spacing"),
                format!("{} kHz: srsENB's EN-DC NR cells use 15 kHz", c.scs_khz),
            ));
        }
        if !matches!(lte_mhz, 5 | 10 | 20) || u32::from(c.bandwidth_mhz) != lte_mhz {
            return Err(err(
                cell_path(&c.name, "bandwidth"),
                format!(
                    "{} MHz: srsENB sizes NR cells from the LTE n_prb, so the NR bandwidth must equal the LTE one and be 5, 10 or 20 MHz (LTE is {})",
                    c.bandwidth_mhz, first.bandwidth
                ),
            ));
        }
    }
    let tac_5g = plan.plmn_list_5g.first().and_then(|p| p.tac);

    let nof_ports = if max_ant >= 2 { 2 } else { 1 };
    let mut e = String::new();
    let w = &mut e;
    let _ = writeln!(
        w,
        "# srsENB configuration generated by slapos-radio from simpleran-style parameters."
    );
    let _ = writeln!(
        w,
        "# Format: srsRAN 4G release 23.x. Regenerate instead of editing."
    );
    let _ = writeln!(w);
    let _ = writeln!(w, "[enb]");
    let _ = writeln!(w, "enb_id = {enb_id:#x}");
    let _ = writeln!(w, "mcc = {}", plmn.mcc);
    let _ = writeln!(w, "mnc = {}", plmn.mnc);
    let _ = writeln!(w, "mme_addr = {}", mme.addr.ip);
    let _ = writeln!(w, "gtp_bind_addr = {}", plan.gtp_addr.ip);
    let _ = writeln!(w, "s1c_bind_addr = {s1c_bind}");
    let _ = writeln!(w, "n_prb = {}", first.n_rb);
    let _ = writeln!(w, "nof_ports = {nof_ports}");
    let _ = writeln!(w, "tm = {}", if nof_ports == 2 { 4 } else { 1 });
    let _ = writeln!(w);
    let _ = writeln!(w, "[enb_files]");
    let _ = writeln!(w, "sib_config = {}", opts.sib_config);
    let _ = writeln!(w, "rr_config = {}", opts.rr_config);
    let _ = writeln!(w, "rb_config = {}", opts.rb_config);
    let _ = writeln!(w);
    let _ = writeln!(w, "[rf]");
    if !ru.txrx_active {
        let _ = writeln!(w, "# txrx_active = INACTIVE in the request: minimum gains.");
    }
    let _ = writeln!(w, "tx_gain = {}", num(tx_gain));
    let _ = writeln!(w, "rx_gain = {}", num(rx_gain));
    let _ = writeln!(w, "device_name = {}", opts.device_name);
    let _ = writeln!(w, "device_args = {}", opts.device_args);
    let _ = writeln!(w);
    let _ = writeln!(w, "[log]");
    let _ = writeln!(w, "all_level = warning");
    let _ = writeln!(w, "all_hex_limit = 32");
    let _ = writeln!(w, "filename = {}", opts.log_file);
    let _ = writeln!(w, "file_max_size = -1");
    let _ = writeln!(w);
    let _ = writeln!(w, "[expert]");
    let _ = writeln!(
        w,
        "metrics_period_secs = {}",
        num(plan.monitoring.stats_period_s)
    );
    let _ = writeln!(w, "metrics_csv_enable = true");
    let _ = writeln!(w, "metrics_csv_filename = {}", opts.metrics_csv);
    let _ = writeln!(w, "rrc_inactivity_timer = {}", first.inactivity_timer_ms);
    let _ = writeln!(
        w,
        "eea_pref_list = {}",
        algo_list("EEA", &first.cipher_algo_pref)
    );
    let _ = writeln!(
        w,
        "eia_pref_list = {}",
        algo_list("EIA", &first.integ_algo_pref)
    );
    if let Some(n) = opts.nof_phy_threads {
        let _ = writeln!(w, "nof_phy_threads = {}", n.clamp(1, 4));
    }

    let mut r = String::new();
    let w = &mut r;
    let _ = writeln!(
        w,
        "// srsENB radio resources generated by slapos-radio. Format: srsRAN 4G release 23.x."
    );
    let _ = writeln!(w);
    w.push_str(RR_DEDICATED);
    let _ = writeln!(w);
    let _ = writeln!(w, "cell_list =");
    let _ = writeln!(w, "(");
    for (i, c) in plan.lte_cells.iter().enumerate() {
        lte_cell(w, plan, enb_id, i, c);
        let _ = writeln!(
            w,
            "{}",
            if i + 1 < plan.lte_cells.len() {
                "  },"
            } else {
                "  }"
            }
        );
    }
    let _ = writeln!(w, ");");
    let _ = writeln!(w);
    let _ = writeln!(w, "nr_cell_list =");
    let _ = writeln!(w, "(");
    for (i, c) in plan.nr_cells.iter().enumerate() {
        let tac = tac_5g.unwrap_or(u32::from(first.tac));
        let _ = writeln!(w, "  {{");
        let _ = writeln!(
            w,
            "    // {:?}: band n{}, {} MHz DL / {} MHz UL, SSB ARFCN {} (not configurable in srsENB)",
            c.name,
            c.band,
            mhz(c.dl_freq_khz),
            mhz(c.ul_freq_khz),
            c.ssb_nr_arfcn
        );
        let _ = writeln!(w, "    rf_port = {};", plan.lte_cells.len() + i);
        let _ = writeln!(w, "    cell_id = {:#04x};", c.cell_id);
        let _ = writeln!(w, "    tac = {tac:#06x};");
        let _ = writeln!(w, "    pci = {};", c.pci);
        let _ = writeln!(w, "    root_seq_idx = {};", c.root_sequence_index);
        let _ = writeln!(w, "    dl_arfcn = {};", c.dl_nr_arfcn);
        let _ = writeln!(w, "    ul_arfcn = {};", c.ul_nr_arfcn);
        let _ = writeln!(w, "    band = {};", c.band);
        let _ = writeln!(
            w,
            "{}",
            if i + 1 < plan.nr_cells.len() {
                "  },"
            } else {
                "  }"
            }
        );
    }
    let _ = writeln!(w, ");");
    if plan.nr_cells.iter().any(|c| c.tdd_ul_dl_config.is_some()) {
        notes.push("nr tdd_ul_dl_config: srsENB derives the NR TDD pattern itself; the requested one is not rendered".into());
    }
    Ok(Rendered {
        enb_conf: e,
        rr_conf: r,
        notes,
    })
}

fn lte_cell(w: &mut String, plan: &Plan, enb_id: u32, i: usize, c: &LteCell) {
    let _ = writeln!(w, "  {{");
    let _ = writeln!(
        w,
        "    // {:?}: band {}, {} MHz DL / {} MHz UL, {}",
        c.name,
        c.band,
        mhz(c.dl_freq_khz.into()),
        mhz(c.ul_freq_khz.into()),
        c.bandwidth
    );
    let _ = writeln!(w, "    rf_port = {i};");
    let _ = writeln!(w, "    cell_id = {:#04x};", c.cell_id);
    let _ = writeln!(w, "    tac = {:#06x};", c.tac);
    let _ = writeln!(w, "    pci = {};", c.pci);
    let _ = writeln!(w, "    root_seq_idx = {};", c.root_sequence_index);
    let _ = writeln!(w, "    dl_earfcn = {};", c.dl_earfcn);
    let _ = writeln!(w, "    ul_earfcn = {};", c.ul_earfcn);
    let neighbours: Vec<&LteCell> = plan
        .lte_cells
        .iter()
        .filter(|o| o.cell_id != c.cell_id)
        .collect();
    let _ = writeln!(w, "    ho_active = {};", !neighbours.is_empty());
    let _ = writeln!(w, "    scell_list = ();");
    if neighbours.is_empty() {
        return;
    }
    let _ = writeln!(w, "    meas_cell_list =");
    let _ = writeln!(w, "    (");
    for (j, o) in neighbours.iter().enumerate() {
        let _ = writeln!(w, "      {{");
        let _ = writeln!(
            w,
            "        eci = {:#x};",
            (enb_id << 8) | u32::from(o.cell_id)
        );
        let _ = writeln!(w, "        dl_earfcn = {};", o.dl_earfcn);
        let _ = writeln!(w, "        pci = {};", o.pci);
        let _ = writeln!(
            w,
            "{}",
            if j + 1 < neighbours.len() {
                "      },"
            } else {
                "      }"
            }
        );
    }
    let _ = writeln!(w, "    );");
    let h = &plan.handover;
    let _ = writeln!(w, "    meas_report_desc =");
    let _ = writeln!(w, "    (");
    let _ = writeln!(w, "      {{");
    let _ = writeln!(w, "        eventA = 3;");
    let _ = writeln!(w, "        a3_offset = {};", h.a3_offset_db);
    let _ = writeln!(w, "        hysteresis = {};", h.hysteresis);
    let _ = writeln!(w, "        time_to_trigger = {};", h.time_to_trigger_ms);
    let _ = writeln!(w, "        trigger_quant = \"RSRP\";");
    let _ = writeln!(w, "        max_report_cells = 1;");
    let _ = writeln!(w, "        report_interv = 120;");
    let _ = writeln!(w, "        report_amount = 1;");
    let _ = writeln!(w, "      }}");
    let _ = writeln!(w, "    );");
    let _ = writeln!(w, "    meas_quant_desc =");
    let _ = writeln!(w, "    {{");
    let _ = writeln!(w, "      rsrq_config = 4;");
    let _ = writeln!(w, "      rsrp_config = 4;");
    let _ = writeln!(w, "    }};");
}

/// MAC and PHY dedicated configuration: the values of srsRAN 4G's `rr.conf.example`.
const RR_DEDICATED: &str = r#"mac_cnfg =
{
  phr_cnfg =
  {
    dl_pathloss_change = "dB3";
    periodic_phr_timer = 50;
    prohibit_phr_timer = 0;
  };
  ulsch_cnfg =
  {
    max_harq_tx = 4;
    periodic_bsr_timer = 20;
    retx_bsr_timer = 320;
  };
  time_alignment_timer = -1;
};

phy_cnfg =
{
  phich_cnfg =
  {
    duration = "Normal";
    resources = "1/6";
  };
  pusch_cnfg_ded =
  {
    beta_offset_ack_idx = 6;
    beta_offset_ri_idx = 6;
    beta_offset_cqi_idx = 6;
  };
  sched_request_cnfg =
  {
    dsr_trans_max = 64;
    period = 20;
    nof_prb = 1;
  };
  cqi_report_cnfg =
  {
    mode = "periodic";
    simultaneousAckCQI = true;
    period = 40;
    m_ri = 8;
  };
};
"#;

fn algo_list(prefix: &str, algos: &[u8]) -> String {
    algos
        .iter()
        .map(|a| format!("{prefix}{a}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}
