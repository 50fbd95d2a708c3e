//! srsRAN 4G generation: golden files (tests/golden/<case>.{enb,rr}.conf) and refusals.
//!
//! Regenerate the goldens after an intended change with `UPDATE_GOLDEN=1 cargo test -p radio
//! --test render` and review the diff.

use radio::srsran::{SrsranOptions, render};
use radio::validate::validate_json;
use serde_json::{Value, json};
use std::path::PathBuf;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn check_golden(case: &str) -> Vec<String> {
    let dir = golden_dir();
    let params = std::fs::read_to_string(dir.join(format!("{case}.params.json"))).unwrap();
    let plan = validate_json(&params)
        .unwrap_or_else(|e| panic!("{case}: {e}"))
        .plan;
    let out = render(&plan, &SrsranOptions::default()).unwrap_or_else(|e| panic!("{case}: {e}"));
    for (ext, text) in [("enb.conf", &out.enb_conf), ("rr.conf", &out.rr_conf)] {
        let path = dir.join(format!("{case}.{ext}"));
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, text).unwrap();
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
        assert_eq!(text, &want, "{case}.{ext} differs from the golden file");
    }
    out.notes
}

#[test]
fn golden_single_lte_cell_band_7() {
    let notes = check_golden("lte-b7-20mhz");
    assert!(notes.is_empty(), "{notes:?}");
}

#[test]
fn golden_two_lte_cells_and_an_endc_nr_cell() {
    let notes = check_golden("lte-2cells-endc");
    let all = notes.join("\n");
    for want in [
        "20899 is used, 1 other(s) dropped",
        "one MME",
        "one tx_gain/rx_gain",
        "n_antenna_dl = 4",
        "one timer",
    ] {
        assert!(all.contains(want), "missing note {want:?} in {all}");
    }
}

/// Values of the generated files that must follow from the tables, checked without the golden.
#[test]
fn computed_values_appear_in_the_files() {
    let params = std::fs::read_to_string(golden_dir().join("lte-2cells-endc.params.json")).unwrap();
    let plan = validate_json(&params).unwrap().plan;
    let out = render(&plan, &SrsranOptions::default()).unwrap();
    // Band 7: EARFCN 3350 ↔ 21350 (2680 / 2560 MHz); n3: 368500 ↔ 349500 (1842.5 / 1747.5 MHz).
    assert!(
        out.rr_conf
            .contains("dl_earfcn = 3350;\n    ul_earfcn = 21350;"),
        "{}",
        out.rr_conf
    );
    assert!(
        out.rr_conf
            .contains("dl_arfcn = 368500;\n    ul_arfcn = 349500;\n    band = 3;"),
        "{}",
        out.rr_conf
    );
    // ECI of the neighbour: enb_id << 8 | cell_id.
    assert!(out.rr_conf.contains("eci = 0x1a202;"), "{}", out.rr_conf);
    assert!(
        out.rr_conf.contains("a3_offset = 3;") && out.rr_conf.contains("time_to_trigger = 256;")
    );
    assert!(
        out.enb_conf.contains("n_prb = 50\n") && out.enb_conf.contains("mcc = 208\nmnc = 99\n")
    );
    assert!(out.enb_conf.contains("s1c_bind_addr = 10.0.0.3\n"));
    assert!(out.enb_conf.contains("eia_pref_list = EIA2\n"));
}

fn lte(dl: u32, bw: u32, mode: &str) -> Value {
    json!({"cell_type": "lte", "rf_mode": mode, "cell_id": 1, "pci": 1, "tac": 1, "dl_earfcn": dl, "bandwidth": bw,
           "ru": {"ru_type": "sdr", "tx_gain": 50, "rx_gain": 20, "txrx_active": "ACTIVE"}})
}

fn plan_of(cells: Value, extra: Value) -> radio::plan::Plan {
    let mut doc = json!({"enb_id": 1, "gnb_id": 1, "mme_list": [{"mme_addr": "10.0.0.1"}], "amf_list": [{"amf_addr": "10.0.0.1"}],
                         "plmn_list": [{"plmn": "00101"}], "plmn_list_5g": [{"plmn": "00101", "tac": 1}], "cell_list": cells});
    for (k, v) in extra.as_object().unwrap() {
        doc[k] = v.clone();
    }
    validate_json(&doc.to_string())
        .unwrap_or_else(|e| panic!("{e}"))
        .plan
}

#[test]
fn srsenb_limits_are_refused_with_the_parameter() {
    let opts = SrsranOptions::default();
    let e = render(
        &plan_of(json!({"t": lte(38000, 10, "tdd")}), json!({})),
        &opts,
    )
    .unwrap_err();
    assert_eq!(e.path, "cell_list.t.rf_mode");
    assert!(e.message.contains("FDD only"), "{e}");
    let mut b = lte(3100, 5, "fdd");
    b["cell_id"] = json!(2);
    let e = render(
        &plan_of(json!({"a": lte(3350, 10, "fdd"), "b": b}), json!({})),
        &opts,
    )
    .unwrap_err();
    assert_eq!(e.path, "cell_list.b.bandwidth");
    let e = render(
        &plan_of(
            json!({"a": lte(3350, 10, "fdd")}),
            json!({"mme_list": [{"mme_addr": "10.0.0.1:1234"}]}),
        ),
        &opts,
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("`mme_list[0].mme_addr`: port 1234"),
        "{e}"
    );
    let e = render(
        &plan_of(
            json!({"a": lte(3350, 10, "fdd")}),
            json!({"enb_id": "0x100000"}),
        ),
        &opts,
    )
    .unwrap_err();
    assert_eq!(e.path, "enb_id");
    let nr = json!({"cell_type": "nr", "rf_mode": "tdd", "cell_id": 2, "pci": 1, "dl_nr_arfcn": 632628, "nr_band": 78, "bandwidth": 10,
                    "ru": {"ru_type": "sdr", "tx_gain": 50, "rx_gain": 20}});
    let e = render(&plan_of(json!({"n": nr.clone()}), json!({})), &opts).unwrap_err();
    assert_eq!(e.path, "cell_list");
    let e = render(
        &plan_of(
            json!({"a": lte(3350, 10, "fdd"), "n": nr.clone()}),
            json!({}),
        ),
        &opts,
    )
    .unwrap_err();
    assert_eq!(e.path, "cell_list.n.subcarrier_spacing");
    let mut nr15 = nr;
    nr15["subcarrier_spacing"] = json!(15);
    nr15["bandwidth"] = json!(20);
    let e = render(
        &plan_of(json!({"a": lte(3350, 10, "fdd"), "n": nr15}), json!({})),
        &opts,
    )
    .unwrap_err();
    assert_eq!(e.path, "cell_list.n.bandwidth");
}

#[test]
fn inactive_radio_renders_minimum_gains_with_a_note() {
    let mut c = lte(3350, 10, "fdd");
    c["ru"]["txrx_active"] = json!("INACTIVE");
    let out = render(
        &plan_of(json!({"a": c}), json!({})),
        &SrsranOptions::default(),
    )
    .unwrap();
    assert!(
        out.enb_conf.contains("tx_gain = 0\nrx_gain = 0\n"),
        "{}",
        out.enb_conf
    );
    assert!(
        out.notes.iter().any(|n| n.contains("INACTIVE")),
        "{:?}",
        out.notes
    );
}
