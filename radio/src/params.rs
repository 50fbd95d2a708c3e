//! The parameters of an eNB/gNB request, as simpleran receives them.
//!
//! # Accepted shapes
//!
//! * simpleran's serialised form: `{"_": "<JSON document>"}` (what `slapos request` sends for
//!   simpleran, and what its own tests use) — the document inside is parsed;
//! * the same document as a plain JSON object;
//! * any object-valued parameter (`cell_list`, `mme_list`, …) may itself be a string holding
//!   JSON, as happens when parameters go through SlapOS' XML form.
//!
//! Node-level names are those of `instance-enb-input-schema.json`. In simpleran, cells and radio
//! units are separate *shared instances* (schemas `cell/{lte,nr}/input-schema.json`,
//! `ru/sdr/input-schema.json`) referenced by partition reference. A single request here carries
//! them in two maps keyed the same way: `cell_list` (reference → cell parameters) and `ru_list`
//! (reference → radio-unit parameters). A cell's `ru` is either an inline SDR radio unit or
//! `{"ru_type": "ru_ref", "ru_ref": "<key of ru_list>"}` /
//! `{"ru_type": "ruincell_ref", "ruincell_ref": "<key of cell_list>"}` exactly as in simpleran.
//! Lists may be JSON arrays (`mme_list: [{…}]`, what simpleran's tests send) or objects keyed by
//! name (what its schema describes).
//!
//! All fields are optional here: a type error is reported by [`parse`] with its JSON path, and
//! missing or inconsistent values are reported by [`crate::validate`] with theirs.

use crate::de;
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::marker::PhantomData;

/// Position of an element in a [`NamedList`]: its index in an array or its key in an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Key {
    /// Array index.
    Index(usize),
    /// Object key (a simpleran partition reference or a name).
    Name(String),
}

impl Key {
    /// The JSON path of the element under `list` (`cell_list.cell1`, `mme_list[0]`).
    pub fn path(&self, list: &str) -> String {
        match self {
            Key::Index(i) => format!("{list}[{i}]"),
            Key::Name(n) if is_plain_key(n) => format!("{list}.{n}"),
            Key::Name(n) => format!("{list}[{n:?}]"),
        }
    }

    /// The name for references: the object key, or the index as text.
    pub fn name(&self) -> String {
        match self {
            Key::Index(i) => i.to_string(),
            Key::Name(n) => n.clone(),
        }
    }
}

fn is_plain_key(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A list given as a JSON array or as an object keyed by name; order is preserved.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedList<T>(pub Vec<(Key, T)>);

impl<T> Default for NamedList<T> {
    fn default() -> Self {
        NamedList(Vec::new())
    }
}

impl<T> NamedList<T> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Elements in order.
    pub fn iter(&self) -> impl Iterator<Item = &(Key, T)> {
        self.0.iter()
    }

    /// The element whose key (or index) is `name`.
    pub fn get(&self, name: &str) -> Option<&T> {
        self.0
            .iter()
            .find(|(k, _)| k.name() == name)
            .map(|(_, v)| v)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for NamedList<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = NamedList<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON array or an object keyed by name")
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(NamedList::default())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element::<T>()? {
                    out.push((Key::Index(out.len()), v));
                }
                Ok(NamedList(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, T>()? {
                    out.push((Key::Name(k), v));
                }
                Ok(NamedList(out))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// Node-level parameters (`instance-enb-input-schema.json`) plus `cell_list` / `ru_list`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct EnbParams {
    /// eNB ID (LTE). simpleran sends it as a string, often hex: `"0x17"`.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub enb_id: Option<u32>,
    /// gNB ID (NR).
    #[serde(default, deserialize_with = "de::opt_int")]
    pub gnb_id: Option<u64>,
    /// Bits of the gNB ID in the NR cell identity (22..=32, default 28).
    #[serde(default, deserialize_with = "de::opt_int")]
    pub gnb_id_bits: Option<u8>,
    /// Address (and optional port) for GTP-U; default `127.0.1.1`.
    #[serde(default)]
    pub gtp_addr: Option<String>,
    /// MMEs (S1AP) for LTE cells.
    #[serde(default)]
    pub mme_list: NamedList<MmeParams>,
    /// AMFs (NGAP) for NR cells.
    #[serde(default)]
    pub amf_list: NamedList<AmfParams>,
    /// PLMNs broadcast by the eNB (≤ 6).
    #[serde(default)]
    pub plmn_list: NamedList<PlmnParams>,
    /// PLMNs broadcast by the gNB (≤ 12), each with its TAC.
    #[serde(default)]
    pub plmn_list_5g: NamedList<Plmn5gParams>,
    /// A3 handover between LTE cells of this eNB.
    #[serde(default)]
    pub eutra_eutra_handover: Option<HandoverParams>,
    /// Statistics period in seconds (default 60).
    #[serde(default, deserialize_with = "de::opt_float")]
    pub enb_stats_fetch_period: Option<f64>,
    /// RX saturation threshold in dBFS for the promise (default 0).
    #[serde(default, deserialize_with = "de::opt_float")]
    pub max_rx_sample_db: Option<f64>,
    /// Baseband latency promise: fail when the TX/RX margin drops below this many ms (default 0).
    #[serde(default, deserialize_with = "de::opt_float")]
    pub min_rxtx_delay: Option<f64>,
    /// Cells by reference (simpleran shared instances).
    #[serde(default)]
    pub cell_list: NamedList<CellParams>,
    /// Radio units by reference (simpleran shared instances).
    #[serde(default)]
    pub ru_list: NamedList<RuParams>,
}

/// An MME of `mme_list`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct MmeParams {
    /// IP address and optional port of the S1AP SCTP association (default port 36412).
    #[serde(default)]
    pub mme_addr: Option<String>,
    /// Local bind address for S1AP.
    #[serde(default)]
    pub s1ap_bind_addr: Option<String>,
    /// Name (simpleran's tests set it; unused).
    #[serde(default)]
    pub name: Option<String>,
}

/// An AMF of `amf_list`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AmfParams {
    /// IP address and optional port of the NGAP SCTP association (default port 38412).
    #[serde(default)]
    pub amf_addr: Option<String>,
    /// Local bind address for NGAP.
    #[serde(default)]
    pub ngap_bind_addr: Option<String>,
    /// Name (unused).
    #[serde(default)]
    pub name: Option<String>,
}

/// A PLMN of `plmn_list`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PlmnParams {
    /// MCC+MNC, 5 or 6 digits (`"00101"`).
    #[serde(default, deserialize_with = "opt_plmn")]
    pub plmn: Option<String>,
    /// Attach without PDN connectivity.
    #[serde(default, deserialize_with = "de::opt_bool")]
    pub attach_without_pdn: Option<bool>,
    /// Reserved for operator use.
    #[serde(default, deserialize_with = "de::opt_bool")]
    pub reserved: Option<bool>,
}

/// A PLMN of `plmn_list_5g`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Plmn5gParams {
    /// MCC+MNC.
    #[serde(default, deserialize_with = "opt_plmn")]
    pub plmn: Option<String>,
    /// 24-bit NR tracking area code.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub tac: Option<u32>,
    /// RAN area code (0..=255).
    #[serde(default, deserialize_with = "de::opt_int")]
    pub ranac: Option<u8>,
    /// Reserved for operator use.
    #[serde(default, deserialize_with = "de::opt_bool")]
    pub reserved: Option<bool>,
}

/// simpleran's `eutra_eutra_handover` (only the A3 event is used here).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct HandoverParams {
    /// Event and its threshold.
    #[serde(default)]
    pub event: Option<HandoverEvent>,
    /// Hysteresis in 0.5 dB steps (0..=30).
    #[serde(default, deserialize_with = "de::opt_int")]
    pub hysteresis: Option<u8>,
    /// Time to trigger, ms.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub time_to_trigger: Option<u16>,
}

/// The event of a handover configuration.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct HandoverEvent {
    /// A3 offset in dB.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub a3_rsrp: Option<i32>,
    /// A4 threshold (not rendered).
    #[serde(default, deserialize_with = "de::opt_int")]
    pub a4_rsrp: Option<i32>,
    /// A5 threshold 1 (not rendered).
    #[serde(default, deserialize_with = "de::opt_int")]
    pub a5_threshold1_rsrp: Option<i32>,
}

/// A cell (`cell/common.json` + `cell/lte` or `cell/nr` input schema).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CellParams {
    /// `lte` or `nr`.
    #[serde(default)]
    pub cell_type: Option<String>,
    /// `enb` (default). `ue` and `enb_peer` cells are not served by this release.
    #[serde(default)]
    pub cell_kind: Option<String>,
    /// `fdd` or `tdd`.
    #[serde(default)]
    pub rf_mode: Option<String>,
    /// Physical cell id.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub pci: Option<u32>,
    /// Cell id (8 bits LTE; NR: 36 − `gnb_id_bits` bits), often a hex string.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub cell_id: Option<u64>,
    /// Channel bandwidth in MHz (`20`, `"20 MHz"`, `1.4`).
    #[serde(default, deserialize_with = "de::opt_mhz")]
    pub bandwidth: Option<f64>,
    /// Radio unit: inline SDR unit or a reference.
    #[serde(default)]
    pub ru: Option<RuParams>,
    /// LTE downlink EARFCN.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub dl_earfcn: Option<u32>,
    /// LTE uplink EARFCN (default: paired with `dl_earfcn`).
    #[serde(default, deserialize_with = "de::opt_int")]
    pub ul_earfcn: Option<u32>,
    /// LTE tracking area code (16 bits).
    #[serde(default, deserialize_with = "de::opt_int")]
    pub tac: Option<u32>,
    /// TDD uplink/downlink configuration (simpleran's enum text, or the LTE number 0..=6).
    #[serde(default, deserialize_with = "opt_string_or_number")]
    pub tdd_ul_dl_config: Option<String>,
    /// PRACH root sequence index (0..=837).
    #[serde(default, deserialize_with = "de::opt_int")]
    pub root_sequence_index: Option<u32>,
    /// RRC inactivity timer, ms (default 10000).
    #[serde(default, deserialize_with = "de::opt_int")]
    pub inactivity_timer: Option<u32>,
    /// NR downlink NR-ARFCN (carrier centre).
    #[serde(default, deserialize_with = "de::opt_int")]
    pub dl_nr_arfcn: Option<u32>,
    /// NR band number.
    #[serde(default, deserialize_with = "opt_band")]
    pub nr_band: Option<u16>,
    /// NR uplink NR-ARFCN (default: paired with `dl_nr_arfcn`).
    #[serde(default, deserialize_with = "de::opt_int")]
    pub ul_nr_arfcn: Option<u32>,
    /// NR SS block position (NR-ARFCN on the sync raster; default: chosen near the centre).
    #[serde(default, deserialize_with = "de::opt_int")]
    pub ssb_nr_arfcn: Option<u32>,
    /// SS block position bitmap (`"1000"`, 4/8/64 bits).
    #[serde(default)]
    pub ssb_pos_bitmap: Option<String>,
    /// NR subcarrier spacing in kHz (`30`, `"30 kHz"`); default per band.
    #[serde(default, deserialize_with = "de::opt_khz")]
    pub subcarrier_spacing: Option<f64>,
    /// Preferred ciphering algorithms (`"EEA2 (128 bit AES)"`, …).
    #[serde(default)]
    pub cipher_algo_pref: Option<Vec<String>>,
    /// Preferred integrity algorithms.
    #[serde(default)]
    pub integ_algo_pref: Option<Vec<String>>,
}

/// A radio unit (`ru/common.json` + `ru/sdr/input-schema.json`), or a reference to one.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RuParams {
    /// `sdr`, `ru_ref`, `ruincell_ref` (`sunwave`/`lopcomm` are not served here).
    #[serde(default)]
    pub ru_type: Option<String>,
    /// `sdr` or `cpri`.
    #[serde(default)]
    pub ru_link_type: Option<String>,
    /// Key of `ru_list` when `ru_type` is `ru_ref`.
    #[serde(default)]
    pub ru_ref: Option<String>,
    /// Key of `cell_list` whose radio unit is shared, when `ru_type` is `ruincell_ref`.
    #[serde(default)]
    pub ruincell_ref: Option<String>,
    /// Downlink antennas.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub n_antenna_dl: Option<u8>,
    /// Uplink antennas.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub n_antenna_ul: Option<u8>,
    /// TX gain, dB.
    #[serde(default, deserialize_with = "de::opt_float")]
    pub tx_gain: Option<f64>,
    /// RX gain, dB.
    #[serde(default, deserialize_with = "de::opt_float")]
    pub rx_gain: Option<f64>,
    /// `ACTIVE` or `INACTIVE` (default: no radio).
    #[serde(default)]
    pub txrx_active: Option<String>,
    /// `/dev/sdrN` numbers combined into this unit.
    #[serde(default, deserialize_with = "de::int_list")]
    pub sdr_dev_list: Vec<u32>,
}

fn opt_string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(other) => {
            return Err(serde::de::Error::custom(format!(
                "expected a string or a number, got {other}"
            )));
        }
    })
}

fn opt_plmn<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    // A PLMN is digits with significant leading zeros, so a JSON number (1) cannot be one.
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(serde::de::Error::custom(format!(
            "expected a string of 5 or 6 digits (MCC+MNC, leading zeros matter), got {other}"
        ))),
    }
}

fn opt_band<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    // `78`, `"78"` or `"n78"`.
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            let t = s.trim();
            let t = t
                .strip_prefix('n')
                .or_else(|| t.strip_prefix('N'))
                .unwrap_or(t);
            t.parse().map(Some).map_err(|_| {
                serde::de::Error::custom(format!(
                    "expected a band number such as 78 or \"n78\", got {s:?}"
                ))
            })
        }
        Some(v) => serde_json::from_value::<u16>(v.clone())
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("expected a band number, got {v}"))),
    }
}

/// A parameter document that could not be read, with the JSON path of the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    /// Not JSON at all.
    #[error("parameters are not valid JSON: {0}")]
    Syntax(String),
    /// JSON, but not an object.
    #[error("parameters must be a JSON object, got {0}")]
    NotObject(&'static str),
    /// The `_` wrapper holds something that is not a JSON object.
    #[error("`_` must hold the parameters as a JSON object string: {0}")]
    Wrapper(String),
    /// A value has the wrong type.
    #[error("`{path}`: {message}")]
    Type {
        /// JSON path, e.g. `cell_list.cell1.dl_earfcn`.
        path: String,
        /// What was expected and found.
        message: String,
    },
}

/// Object-valued parameters that may arrive as a string holding JSON.
const JSON_IN_STRING: &[&str] = &[
    "cell_list",
    "ru_list",
    "mme_list",
    "amf_list",
    "plmn_list",
    "plmn_list_5g",
    "nssai",
    "eutra_eutra_handover",
];

/// Reads the parameter document of a request; see the module documentation for the shapes.
pub fn parse(json: &str) -> Result<EnbParams, ParamsError> {
    let value: Value =
        serde_json::from_str(json).map_err(|e| ParamsError::Syntax(e.to_string()))?;
    from_value(value)
}

/// Like [`parse`], from an already parsed document.
pub fn from_value(value: Value) -> Result<EnbParams, ParamsError> {
    let value = normalise(value)?;
    serde_path_to_error::deserialize(value).map_err(|e| ParamsError::Type {
        path: e.path().to_string(),
        message: e.inner().to_string(),
    })
}

/// Unwraps `{"_": "…"}` and decodes JSON held in strings; returns the plain object.
pub fn normalise(value: Value) -> Result<Value, ParamsError> {
    let mut obj = match value {
        Value::Object(o) => o,
        other => return Err(ParamsError::NotObject(json_kind(&other))),
    };
    if let Some(inner) = obj.get("_") {
        let inner = match inner {
            Value::String(s) => {
                serde_json::from_str::<Value>(s).map_err(|e| ParamsError::Wrapper(e.to_string()))?
            }
            Value::Object(_) => inner.clone(),
            other => return Err(ParamsError::Wrapper(format!("got {}", json_kind(other)))),
        };
        match inner {
            Value::Object(inner) => {
                // Keys next to `_` (SlapOS adds none, a hand-written request might) are kept
                // unless the document overrides them.
                obj.remove("_");
                let mut merged = obj;
                merged.extend(inner);
                obj = merged;
            }
            other => return Err(ParamsError::Wrapper(format!("got {}", json_kind(&other)))),
        }
    }
    for key in JSON_IN_STRING {
        if let Some(Value::String(s)) = obj.get(*key) {
            let t = s.trim_start();
            if t.starts_with('{') || t.starts_with('[') {
                let parsed = serde_json::from_str::<Value>(s).map_err(|e| ParamsError::Type {
                    path: (*key).to_string(),
                    message: format!("holds a string that is not valid JSON: {e}"),
                })?;
                obj.insert((*key).to_string(), parsed);
            }
        }
    }
    Ok(Value::Object(obj))
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Field names a derived `Deserialize` struct accepts (read from its `deserialize_struct` call).
pub fn struct_fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Probe(Option<&'static [&'static str]>);
    #[derive(Debug)]
    struct Stop;
    impl fmt::Display for Stop {
        fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("probe")
        }
    }
    impl std::error::Error for Stop {}
    impl serde::de::Error for Stop {
        fn custom<M: fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    impl<'de> Deserializer<'de> for &mut Probe {
        type Error = Stop;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0 = Some(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    let mut p = Probe(None);
    let _ = T::deserialize(&mut p);
    p.0.unwrap_or(&[])
}

/// simpleran parameters this release accepts and ignores (no warning for them).
pub const IGNORED_NODE_KEYS: &[&str] = &[
    "user-authorized-key",
    "mbmsgw_addr",
    "nssai",
    "gtp_payload_mtu",
    "handover_a1_rsrp",
    "handover_a1_hysteresis",
    "handover_a1_time_to_trigger",
    "handover_a2_rsrp",
    "handover_a2_hysteresis",
    "handover_a2_time_to_trigger",
    "eutra_nr_handover",
    "nr_nr_handover",
    "nr_eutra_handover",
    "handover_meas_gap_config",
    "log_phy_debug",
    "gps_sync",
    "use_ipv4",
    "enb_drb_stats_enabled",
    "xlog_enabled",
    "xlog_forwarding_enabled",
    "wendelin_telecom_software_release_url",
    "xlog_fluentbit_forward_host",
    "xlog_fluentbit_forward_port",
    "xlog_fluentbit_forward_shared_key",
    "check_core_network",
    "amarisoft_version",
    "websocket_url_ipv6",
    "ncell_list",
    "x2_peers",
    "xn_peers",
    "testing",
    "lte_mock",
    "inactivity_timer",
    "lock",
];

/// simpleran cell parameters accepted and ignored.
pub const IGNORED_CELL_KEYS: &[&str] = &[
    "enable_ul_su_mimo",
    "ignore_gbr_congestion",
    "phr_link_adaptation",
    "rrc_configuration",
    "prach_config_index",
    "prach_freq_offset",
    "p_max",
    "prach_power_ramping_step",
    "prach_preamble_trans_max",
    "prach_preamble_received_target_power",
    "pucch_p0_nominal",
    "pusch_p0_nominal",
    "q_rx_lev_min",
    "q_qual_min",
    "q_rx_lev_min_offset",
    "cell_reselection_priority",
    "s_intra_search",
    "q_hyst",
    "tti_bundling",
    "uss",
    "trs_presence",
    "redcap_ue",
    "tx_power_offset",
    "bandwidth_ul",
    "sr_period",
];

/// simpleran radio-unit parameters accepted and ignored.
pub const IGNORED_RU_KEYS: &[&str] = &["cpri_link", "mac_addr", "nb_threads_ul", "nb_threads_dl"];

/// Keys of `value` (an object) that are neither fields of `T` nor in `ignored`, as paths under
/// `at` (top level when empty).
pub fn unknown_keys<'de, T: Deserialize<'de>>(
    value: &Value,
    at: &str,
    ignored: &[&str],
) -> Vec<String> {
    let fields = struct_fields::<T>();
    let Value::Object(o) = value else {
        return Vec::new();
    };
    o.keys()
        .filter(|k| {
            !fields.contains(&k.as_str()) && !ignored.contains(&k.as_str()) && k.as_str() != "_"
        })
        .map(|k| {
            if at.is_empty() {
                k.clone()
            } else {
                format!("{at}.{k}")
            }
        })
        .collect()
}

/// Unknown keys of a whole (normalised) document: node, cells, inline and listed radio units.
pub fn unknown_keys_in_document(doc: &Value) -> Vec<String> {
    let mut out = unknown_keys::<EnbParams>(doc, "", IGNORED_NODE_KEYS);
    type KeyCheck = fn(&Value, &str) -> Vec<String>;
    let lists: [(&str, KeyCheck); 2] = [
        ("cell_list", |v, at| {
            let mut u = unknown_keys::<CellParams>(v, at, IGNORED_CELL_KEYS);
            if let Some(ru) = v.get("ru") {
                u.extend(unknown_keys::<RuParams>(
                    ru,
                    &format!("{at}.ru"),
                    IGNORED_RU_KEYS,
                ));
            }
            u
        }),
        ("ru_list", |v, at| {
            unknown_keys::<RuParams>(v, at, IGNORED_RU_KEYS)
        }),
    ];
    for (name, check) in lists {
        match doc.get(name) {
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    out.extend(check(v, &Key::Name(k.clone()).path(name)));
                }
            }
            Some(Value::Array(a)) => {
                for (i, v) in a.iter().enumerate() {
                    out.extend(check(v, &Key::Index(i).path(name)));
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_simpleran_wrapped_document_with_string_ids() {
        let inner = serde_json::json!({
            "enb_id": "0x17",
            "gnb_id": "0x23",
            "gnb_id_bits": 30,
            "mme_list": [{"name": "1", "mme_addr": "1.2.3.4", "s1ap_bind_addr": "2.1.3.4"}],
            "plmn_list": [{"plmn": "31415"}, {"plmn": "44444", "attach_without_pdn": true, "reserved": true}],
            "plmn_list_5g": [{"plmn": "51413", "tac": 0x124}],
            "cell_list": {"cell1": {"cell_type": "lte", "dl_earfcn": "100", "bandwidth": "5 MHz", "tac": "0x101",
                                    "ru": {"ru_type": "ru_ref", "ru_ref": "RU1"}}},
            "ru_list": {"RU1": {"ru_type": "sdr", "tx_gain": "11", "rx_gain": 21, "sdr_dev_list": [0]}}
        });
        let wrapped = serde_json::json!({"_": inner.to_string()}).to_string();
        let p = parse(&wrapped).unwrap();
        assert_eq!(p.enb_id, Some(0x17));
        assert_eq!(p.gnb_id, Some(0x23));
        assert_eq!(p.gnb_id_bits, Some(30));
        assert_eq!(p.mme_list.len(), 1);
        assert_eq!(p.plmn_list.0[1].1.reserved, Some(true));
        assert_eq!(p.plmn_list_5g.0[0].1.tac, Some(0x124));
        let cell = p.cell_list.get("cell1").unwrap();
        assert_eq!(cell.dl_earfcn, Some(100));
        assert_eq!(cell.bandwidth, Some(5.0));
        assert_eq!(cell.tac, Some(0x101));
        assert_eq!(p.ru_list.get("RU1").unwrap().tx_gain, Some(11.0));
        // Same document unwrapped.
        let q = parse(&inner.to_string()).unwrap();
        assert_eq!(q.cell_list.len(), 1);
    }

    #[test]
    fn type_errors_name_the_path() {
        let e = parse(r#"{"cell_list": {"cell1": {"dl_earfcn": "three"}}}"#).unwrap_err();
        let ParamsError::Type { path, message } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(path, "cell_list.cell1.dl_earfcn");
        assert!(message.contains("\"three\""), "{message}");
        let e = parse(r#"{"mme_list": [{"mme_addr": "1.1.1.1"}, {"mme_addr": 5}]}"#).unwrap_err();
        assert!(e.to_string().starts_with("`mme_list[1].mme_addr`"), "{e}");
        let e = parse(r#"{"plmn_list": [{"plmn": 1010}]}"#).unwrap_err();
        assert!(e.to_string().contains("leading zeros"), "{e}");
        let e = parse(r#"{"cell_list": {"c": {"ru": {"sdr_dev_list": ["x"]}}}}"#).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("`cell_list.c.ru.sdr_dev_list[0]`"),
            "{e}"
        );
    }

    #[test]
    fn wrong_top_level_shapes() {
        assert!(matches!(
            parse("[1]"),
            Err(ParamsError::NotObject("an array"))
        ));
        assert!(matches!(parse("{"), Err(ParamsError::Syntax(_))));
        assert!(matches!(
            parse(r#"{"_": "not json"}"#),
            Err(ParamsError::Wrapper(_))
        ));
        assert!(matches!(
            parse(r#"{"_": "[1,2]"}"#),
            Err(ParamsError::Wrapper(_))
        ));
    }

    #[test]
    fn lists_in_strings_are_decoded() {
        let doc = r#"{"cell_list": "{\"a\": {\"pci\": \"7\"}}", "mme_list": "[{\"mme_addr\": \"10.0.0.1\"}]"}"#;
        let p = parse(doc).unwrap();
        assert_eq!(p.cell_list.get("a").unwrap().pci, Some(7));
        assert_eq!(p.mme_list.0[0].1.mme_addr.as_deref(), Some("10.0.0.1"));
        let e = parse(r#"{"cell_list": "{oops"}"#).unwrap_err();
        assert!(e.to_string().starts_with("`cell_list`"), "{e}");
    }

    #[test]
    fn band_accepts_n_prefix() {
        let p = parse(r#"{"cell_list": {"a": {"nr_band": "n78"}, "b": {"nr_band": 41}}}"#).unwrap();
        assert_eq!(p.cell_list.get("a").unwrap().nr_band, Some(78));
        assert_eq!(p.cell_list.get("b").unwrap().nr_band, Some(41));
    }

    #[test]
    fn unknown_keys_are_listed_with_paths() {
        let doc = normalise(serde_json::json!({
            "enb_id": 1, "gps_sync": true, "enb_idd": 2,
            "cell_list": {"cell1": {"dl_earfcn": 1, "dl_earcfn": 3, "q_hyst": 1, "ru": {"tx_gain": 1, "tx_gian": 2}}},
            "ru_list": [{"rx_gain": 1, "bogus": 0}]
        }))
        .unwrap();
        let mut u = unknown_keys_in_document(&doc);
        u.sort();
        assert_eq!(
            u,
            vec![
                "cell_list.cell1.dl_earcfn",
                "cell_list.cell1.ru.tx_gian",
                "enb_idd",
                "ru_list[0].bogus"
            ]
        );
        assert!(struct_fields::<CellParams>().contains(&"dl_earfcn"));
    }
}
