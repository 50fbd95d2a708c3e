//! Property tests: parsers never panic on arbitrary input, and truncation is always reported as
//! such.

use proptest::prelude::*;
use radio::stats::{LineError, parse_line, parse_log};
use radio::validate::{RequestError, validate_json};
use serde_json::{Value, json};

const LINE: &str = r#"{"time": "2024-03-05 10:20:30,500", "log_level": "INFO", "message": "Samples stats", "data": {"message": "stats", "cells": {"1": {"dl_bitrate": 1200000.5, "ul_bitrate": 64000, "ue_count_avg": 2.5}}, "rf": {"rxtx_delay_min": 1.8, "rxtx_delay_max": 3.1}, "samples": {"rx": [{"rms": -40.2, "max": -12.5, "sat": 0, "count": 23040000}]}, "tti": {"period_us": 1000, "count": 1000, "missed": 1, "wakeup_us": {"p50": 5, "p99": 9, "p999": 30, "max": 80}, "processing_us": {"p50": 205, "p99": 230, "p999": 260, "max": 300}}, "utc": 1709634030.5}}"#;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::from),
        Just(Value::from("0x1F")),
        Just(Value::from("20 MHz")),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,10}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const FIELDS: &[&str] = &[
    "cell_type",
    "rf_mode",
    "pci",
    "cell_id",
    "bandwidth",
    "dl_earfcn",
    "ul_earfcn",
    "tac",
    "tdd_ul_dl_config",
    "root_sequence_index",
    "dl_nr_arfcn",
    "nr_band",
    "ssb_nr_arfcn",
    "ssb_pos_bitmap",
    "subcarrier_spacing",
    "ru",
];

fn base() -> Value {
    json!({
        "enb_id": "0x1", "gnb_id": 1, "mme_list": [{"mme_addr": "10.0.0.1"}], "amf_list": [{"amf_addr": "10.0.0.1"}],
        "plmn_list": [{"plmn": "00101"}], "plmn_list_5g": [{"plmn": "00101", "tac": 1}],
        "cell_list": {
            "l": {"cell_type": "lte", "rf_mode": "fdd", "cell_id": 1, "pci": 1, "tac": 1, "dl_earfcn": 3350, "bandwidth": 20,
                  "ru": {"ru_type": "sdr", "tx_gain": 1, "rx_gain": 1}},
            "n": {"cell_type": "nr", "rf_mode": "tdd", "cell_id": 2, "pci": 2, "dl_nr_arfcn": 632628, "nr_band": 78, "bandwidth": 40,
                  "ru": {"ru_type": "sdr", "tx_gain": 1, "rx_gain": 1}}
        }
    })
}

proptest! {
    #[test]
    fn stats_parser_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_line(&bytes);
        let log = parse_log(&bytes);
        let lines = bytes.split(|&b| b == b'\n').count();
        prop_assert!(log.records.len() + log.errors.len() <= lines);
    }

    #[test]
    fn stats_parser_never_panics_on_json(v in json_value()) {
        let _ = parse_line(v.to_string().as_bytes());
        let _ = parse_line(json!({"data": v}).to_string().as_bytes());
    }

    #[test]
    fn every_truncation_is_reported_as_truncated(cut in 1usize..LINE.len()) {
        let prefix = &LINE.as_bytes()[..cut];
        match parse_line(prefix) {
            Err(LineError::Truncated(_)) => {}
            other => prop_assert!(false, "prefix of {} bytes gave {:?}", cut, other),
        }
    }

    #[test]
    fn mixing_good_and_garbage_lines_keeps_every_good_one(
        garbage in prop::collection::vec("[^\n]{0,40}", 0..6),
        good in 0usize..4,
    ) {
        let mut lines: Vec<String> = garbage.clone();
        for i in 0..good {
            lines.insert(i.min(lines.len()), LINE.to_string());
        }
        let log = parse_log(lines.join("\n").as_bytes());
        prop_assert!(log.records.len() >= good);
    }

    #[test]
    fn params_parser_never_panics_on_text(s in "\\PC{0,200}") {
        let _ = radio::params::parse(&s);
        let _ = validate_json(&s);
    }

    #[test]
    fn validation_never_panics_on_arbitrary_documents(v in json_value()) {
        let _ = validate_json(&v.to_string());
        let _ = validate_json(&json!({"_": v.to_string()}).to_string());
    }

    /// One field of a valid request replaced by an arbitrary value: either still valid, or an
    /// error that names a parameter path.
    #[test]
    fn mutated_requests_fail_with_a_path(cell in prop::sample::select(vec!["l", "n"]), field in prop::sample::select(FIELDS), v in json_value()) {
        let mut doc = base();
        doc["cell_list"][cell][field] = v;
        match validate_json(&doc.to_string()) {
            Ok(_) => {}
            Err(RequestError::Params(e)) => prop_assert!(e.to_string().starts_with("`cell_list."), "{}", e),
            Err(RequestError::Invalid(i)) => prop_assert!(i.errors.iter().all(|e| !e.path.is_empty()), "{}", i),
        }
    }
}

#[test]
fn the_base_request_is_valid() {
    validate_json(&base().to_string()).unwrap();
}
