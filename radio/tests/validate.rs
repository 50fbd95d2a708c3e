//! Validation of simpleran-style requests against the 3GPP tables.

use radio::bands::lte;
use radio::validate::{Invalid, RequestError, Validated, validate_json};
use serde_json::{Value, json};

/// A request shaped like simpleran's own `test_enb` (software/simpleran/test/test.py): node
/// parameters plus the given cells, with four radio units `RU1`..`RU4`.
fn request(cells: Value) -> String {
    let mut ru_list = serde_json::Map::new();
    for i in 1..=4 {
        ru_list.insert(
            format!("RU{i}"),
            json!({"ru_type": "sdr", "ru_link_type": "sdr", "sdr_dev_list": [i - 1],
                   "n_antenna_dl": 2, "n_antenna_ul": 1, "tx_gain": 10 + i, "rx_gain": 20 + i,
                   "txrx_active": "ACTIVE"}),
        );
    }
    json!({
        "enb_id": "0x17", "gnb_id": "0x23", "gnb_id_bits": 30,
        "gtp_addr": "4.2.3.1",
        "mme_list": [{"name": "1", "mme_addr": "1.2.3.4", "s1ap_bind_addr": "2.1.3.4"},
                     {"name": "2", "mme_addr": "[abcd:5::1]:78"}],
        "amf_list": [{"name": "1", "amf_addr": "4.3.2.1:77"}],
        "plmn_list": [{"plmn": "31415"}, {"plmn": "44444", "attach_without_pdn": true, "reserved": true}],
        "plmn_list_5g": [{"plmn": "51413", "tac": 0x124}],
        "cell_list": cells,
        "ru_list": ru_list,
    })
    .to_string()
}

fn lte_cell(ru: u32, dl_earfcn: Value, bw: Value, mode: &str) -> Value {
    json!({"cell_type": "lte", "cell_kind": "enb", "rf_mode": mode, "cell_id": format!("0x{ru:02x}"),
           "pci": 0x10 + ru, "tac": format!("0x{:x}", 0x100 + ru), "dl_earfcn": dl_earfcn, "bandwidth": bw,
           "root_sequence_index": 100 + ru, "inactivity_timer": 1000 + ru,
           "ru": {"ru_type": "ru_ref", "ru_ref": format!("RU{ru}")}})
}

fn nr_cell(ru: u32, dl: u32, band: u32, bw: u32, mode: &str) -> Value {
    json!({"cell_type": "nr", "rf_mode": mode, "cell_id": format!("0x{ru:02x}"), "pci": 0x10 + ru,
           "dl_nr_arfcn": dl, "nr_band": band, "bandwidth": bw,
           "ru": {"ru_type": "ru_ref", "ru_ref": format!("RU{ru}")}})
}

fn ok(doc: &str) -> Validated {
    match validate_json(doc) {
        Ok(v) => v,
        Err(e) => panic!("expected valid, got: {e}"),
    }
}

fn invalid(doc: &str) -> Invalid {
    match validate_json(doc) {
        Err(RequestError::Invalid(i)) => i,
        Err(other) => panic!("expected invalid values, got {other}"),
        Ok(_) => panic!("expected invalid, got valid"),
    }
}

/// The error at `path`, whose message must contain every word of `words`.
fn assert_error(i: &Invalid, path: &str, words: &[&str]) {
    let e = i
        .errors
        .iter()
        .find(|e| e.path == path)
        .unwrap_or_else(|| panic!("no error at {path}; errors: {i}"));
    for w in words {
        assert!(
            e.message.contains(w),
            "error at {path} lacks {w:?}: {}",
            e.message
        );
    }
}

/// simpleran's test_enb: the derived values it asserts (band, ul_earfcn, n_rb, ssb) match ours.
#[test]
fn simpleran_test_enb_four_cells() {
    let doc = request(json!({
        "RU1.CELL": lte_cell(1, json!(100), json!(5), "fdd"),
        "RU2.CELL": lte_cell(2, json!(40200), json!(10), "tdd"),
        "RU3.CELL": nr_cell(3, 300300, 74, 15, "fdd"),
        "RU4.CELL": nr_cell(4, 470400, 40, 20, "tdd"),
    }));
    let v = ok(&doc);
    let p = &v.plan;
    assert_eq!(p.enb_id, Some(0x17));
    assert_eq!(p.gnb_id, Some(0x23));
    let c1 = &p.lte_cells[0];
    assert_eq!(
        (c1.band, c1.dl_earfcn, c1.ul_earfcn, c1.n_rb),
        (1, 100, 18100, 25)
    );
    assert_eq!((c1.cell_id, c1.pci, c1.tac), (1, 0x11, 0x101));
    assert_eq!((c1.dl_freq_khz, c1.ul_freq_khz), (2_120_000, 1_930_000));
    assert_eq!(c1.tdd_config, None);
    assert_eq!(
        (c1.root_sequence_index, c1.inactivity_timer_ms),
        (101, 1001)
    );
    assert_eq!(
        (c1.ru.tx_gain_db, c1.ru.rx_gain_db, c1.ru.n_antenna_dl),
        (11.0, 21.0, 2)
    );
    let c2 = &p.lte_cells[1];
    assert_eq!(
        (c2.band, c2.ul_earfcn, c2.n_rb, c2.tdd_config),
        (41, 40200, 50, Some(2))
    );
    let c3 = &p.nr_cells[0];
    assert_eq!(
        (c3.band, c3.ul_nr_arfcn, c3.ssb_nr_arfcn),
        (74, 290_700, 300_270)
    );
    assert_eq!(
        (c3.scs_khz, c3.n_rb, c3.ssb_pos_bitmap.as_str()),
        (15, 79, "1000")
    );
    let c4 = &p.nr_cells[1];
    assert_eq!(
        (c4.band, c4.ul_nr_arfcn, c4.ssb_nr_arfcn),
        (40, 470_400, 470_430)
    );
    assert!(
        c4.tdd_ul_dl_config
            .as_deref()
            .unwrap()
            .starts_with("DDDDDDDSUU")
    );
    assert!(v.notes.is_empty(), "{:?}", v.notes);
}

/// Everything as strings, as the SlapOS XML form sends it, still validates to the same plan.
#[test]
fn string_values_validate_like_numbers() {
    let numbers = request(json!({"c": lte_cell(1, json!(3350), json!(20), "fdd")}));
    let strings = request(json!({"c": lte_cell(1, json!("3350"), json!("20 MHz"), "fdd")}));
    assert_eq!(ok(&numbers).plan, ok(&strings).plan);
    let wrapped = json!({"_": strings}).to_string();
    assert_eq!(ok(&wrapped).plan, ok(&numbers).plan);
}

#[test]
fn earfcn_outside_every_band_names_the_field() {
    let i = invalid(&request(
        json!({"cell1": lte_cell(1, json!(62000), json!(5), "fdd")}),
    ));
    assert_error(
        &i,
        "cell_list.cell1.dl_earfcn",
        &["62000", "not a downlink channel", "36.101"],
    );
    assert!(i.to_string().contains("`cell_list.cell1.dl_earfcn`"), "{i}");
}

#[test]
fn channel_must_fit_inside_the_band() {
    // Band 1 is 2110–2170 MHz: a 20 MHz carrier needs EARFCN 100..=500.
    for (n, good) in [
        (99, false),
        (100, true),
        (500, true),
        (501, false),
        (590, false),
    ] {
        let doc = request(json!({"cell1": lte_cell(1, json!(n), json!(20), "fdd")}));
        match validate_json(&doc) {
            Ok(_) => assert!(good, "EARFCN {n} accepted"),
            Err(RequestError::Invalid(i)) => {
                assert!(!good, "EARFCN {n} refused: {i}");
                assert_error(
                    &i,
                    "cell_list.cell1.dl_earfcn",
                    &["leaves band 1", "100..=500"],
                );
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// Every band, every allowed bandwidth: the first and last EARFCN whose channel fits are
/// accepted and their neighbours outside are refused.
#[test]
fn every_band_edge_for_every_bandwidth() {
    for b in lte::EUTRA_BANDS
        .iter()
        .filter(|b| b.duplex != lte::Duplex::Sdl)
    {
        let mode = if b.duplex == lte::Duplex::Tdd {
            "tdd"
        } else {
            "fdd"
        };
        for bw in b.bandwidths {
            let half = bw.khz() / 200;
            let first = b.dl_n_offs + half;
            let last = b.dl_n_max + 1 - half;
            // FDD bands whose uplink is narrower (66, 70) cannot pair their top channels.
            let ul_ok = |n: u32| {
                b.duplex == lte::Duplex::Tdd
                    || b.default_ul_earfcn(n).is_some_and(|u| {
                        let (lo, hi) = b.ul_edges_khz().unwrap();
                        let f = b.ul_khz(u).unwrap();
                        f >= lo + bw.khz() / 2 && f + bw.khz() / 2 <= hi
                    })
            };
            for (n, expect) in [
                (first, true),
                (last, true),
                (first - 1, false),
                (last + 1, false),
            ] {
                let expect = expect && ul_ok(n);
                let doc = request(json!({"c": lte_cell(1, json!(n), json!(bw.mhz()), mode)}));
                assert_eq!(
                    validate_json(&doc).is_ok(),
                    expect,
                    "band {} {bw} EARFCN {n}",
                    b.band
                );
            }
        }
    }
}

#[test]
fn bandwidth_not_allowed_in_band() {
    let i = invalid(&request(
        json!({"c": lte_cell(1, json!(300), json!(1.4), "fdd")}),
    ));
    assert_error(
        &i,
        "cell_list.c.bandwidth",
        &["1.4 MHz is not allowed in band 1", "5.6.1-1"],
    );
    let i = invalid(&request(
        json!({"c": lte_cell(1, json!(300), json!(7), "fdd")}),
    ));
    assert_error(
        &i,
        "cell_list.c.bandwidth",
        &["7 MHz is not an LTE channel bandwidth"],
    );
}

#[test]
fn tdd_fdd_consistency() {
    let i = invalid(&request(
        json!({"c": lte_cell(1, json!(3350), json!(10), "tdd")}),
    ));
    assert_error(&i, "cell_list.c.rf_mode", &["\"tdd\"", "band 7", "FDD"]);
    let i = invalid(&request(
        json!({"c": lte_cell(1, json!(38000), json!(10), "fdd")}),
    ));
    assert_error(&i, "cell_list.c.rf_mode", &["band 38", "TDD"]);
    let i = invalid(&request(json!({"c": nr_cell(1, 632_628, 78, 20, "fdd")})));
    assert_error(&i, "cell_list.c.rf_mode", &["n78", "TDD"]);
    // Downlink-only bands cannot carry a cell.
    let i = invalid(&request(
        json!({"c": lte_cell(1, json!(9700), json!(5), "fdd")}),
    ));
    assert_error(&i, "cell_list.c.dl_earfcn", &["band 29", "SDL"]);
    let i = invalid(&request(json!({"c": nr_cell(1, 342_000, 80, 5, "fdd")})));
    assert_error(&i, "cell_list.c.nr_band", &["n80", "SUL"]);
}

#[test]
fn uplink_earfcn_rules() {
    let mut c = lte_cell(1, json!(3350), json!(10), "fdd");
    c["ul_earfcn"] = json!(21350);
    assert_eq!(
        ok(&request(json!({"c": c.clone()}))).plan.lte_cells[0].ul_freq_khz,
        2_560_000
    );
    c["ul_earfcn"] = json!(18100);
    let i = invalid(&request(json!({"c": c})));
    assert_error(
        &i,
        "cell_list.c.ul_earfcn",
        &["18100", "not an uplink channel of band 7", "20750..=21449"],
    );
    let mut t = lte_cell(1, json!(38000), json!(10), "tdd");
    t["ul_earfcn"] = json!(38001);
    let i = invalid(&request(json!({"c": t})));
    assert_error(
        &i,
        "cell_list.c.ul_earfcn",
        &["differs from dl_earfcn 38000", "TDD"],
    );
    // Band 66: downlink 2110–2200 but uplink 1710–1780; 2195 MHz has no pair.
    let i = invalid(&request(
        json!({"c": lte_cell(1, json!(67286), json!(5), "fdd")}),
    ));
    assert_error(&i, "cell_list.c.ul_earfcn", &["band 66", "set ul_earfcn"]);
}

#[test]
fn pci_ranges() {
    let mut c = lte_cell(1, json!(3350), json!(10), "fdd");
    c["pci"] = json!(503);
    ok(&request(json!({"c": c.clone()})));
    c["pci"] = json!(504);
    assert_error(
        &invalid(&request(json!({"c": c}))),
        "cell_list.c.pci",
        &["0..=503"],
    );
    let mut n = nr_cell(1, 632_628, 78, 20, "tdd");
    n["pci"] = json!(1007);
    ok(&request(json!({"c": n.clone()})));
    n["pci"] = json!(1008);
    assert_error(
        &invalid(&request(json!({"c": n}))),
        "cell_list.c.pci",
        &["0..=1007"],
    );
}

#[test]
fn node_parameters() {
    let base: Value = serde_json::from_str(&request(
        json!({"c": lte_cell(1, json!(3350), json!(10), "fdd")}),
    ))
    .unwrap();
    let with = |k: &str, v: Value| {
        let mut d = base.clone();
        d[k] = v;
        d.to_string()
    };
    assert_error(
        &invalid(&with("plmn_list", json!([{"plmn": "0010"}]))),
        "plmn_list[0].plmn",
        &["MCC", "MNC"],
    );
    assert_error(
        &invalid(&with("plmn_list", json!([]))),
        "plmn_list",
        &["at least one PLMN"],
    );
    assert_error(
        &invalid(&with("mme_list", json!([{"mme_addr": "mme.local"}]))),
        "mme_list[0].mme_addr",
        &["not an IP address"],
    );
    assert_error(
        &invalid(&with("mme_list", json!({"main": {}}))),
        "mme_list.main.mme_addr",
        &["required"],
    );
    assert_error(
        &invalid(&with("enb_id", json!("0x10000000"))),
        "enb_id",
        &["28 bits"],
    );
    assert_error(
        &invalid(&with("gnb_id_bits", json!(40))),
        "gnb_id_bits",
        &["22..=32"],
    );
    assert_error(
        &invalid(&with("gtp_addr", json!("x"))),
        "gtp_addr",
        &["not an IP"],
    );
    assert_error(
        &invalid(&with("enb_stats_fetch_period", json!(0))),
        "enb_stats_fetch_period",
        &["(0, 86400]"],
    );
    let mut d = base.clone();
    d.as_object_mut().unwrap().remove("enb_id");
    assert_error(
        &invalid(&d.to_string()),
        "enb_id",
        &["required when there are LTE cells"],
    );
    // Lists given as objects keyed by name (simpleran's schema form) work too.
    ok(&with(
        "mme_list",
        json!({"main": {"mme_addr": "10.0.0.1:36412"}}),
    ));
}

#[test]
fn missing_cell_fields_are_all_reported() {
    let i = invalid(&request(
        json!({"c": {"cell_type": "lte", "ru": {"ru_type": "ru_ref", "ru_ref": "RU1"}}}),
    ));
    for f in ["rf_mode", "pci", "cell_id", "tac", "bandwidth", "dl_earfcn"] {
        assert_error(&i, &format!("cell_list.c.{f}"), &["required"]);
    }
    let i = invalid(&request(json!({"c": {"cell_type": "umts"}})));
    assert_error(&i, "cell_list.c.cell_type", &["\"umts\""]);
    assert_error(&i, "cell_list.c.ru", &["required"]);
    let i = invalid(&request(json!({})));
    assert_error(&i, "cell_list", &["at least one cell"]);
}

#[test]
fn references_and_uniqueness() {
    let mut c = lte_cell(1, json!(3350), json!(10), "fdd");
    c["ru"] = json!({"ru_type": "ru_ref", "ru_ref": "RU9"});
    assert_error(
        &invalid(&request(json!({"c": c}))),
        "cell_list.c.ru.ru_ref",
        &["no radio unit \"RU9\""],
    );
    // Two cells sharing one radio unit through ruincell_ref, and a duplicated cell id.
    let a = lte_cell(1, json!(3350), json!(10), "fdd");
    let mut b = lte_cell(1, json!(3100), json!(10), "fdd");
    b["ru"] = json!({"ru_type": "ruincell_ref", "ruincell_ref": "a"});
    let i = invalid(&request(json!({"a": a, "b": b.clone()})));
    assert_error(
        &i,
        "cell_list.b.cell_id",
        &["also the cell_id of cell \"a\""],
    );
    b["cell_id"] = json!(2);
    let v = ok(&request(
        json!({"a": lte_cell(1, json!(3350), json!(10), "fdd"), "b": b}),
    ));
    assert_eq!(v.plan.lte_cells[1].ru.name, "RU1");
    // Same PCI on the same EARFCN is an error; same PCI mod 3 is a note.
    let mut x = lte_cell(2, json!(3350), json!(10), "fdd");
    x["pci"] = json!(0x11);
    assert_error(
        &invalid(&request(
            json!({"a": lte_cell(1, json!(3350), json!(10), "fdd"), "x": x.clone()}),
        )),
        "cell_list.x.pci",
        &["same EARFCN"],
    );
    x["pci"] = json!(0x11 + 3);
    let v = ok(&request(
        json!({"a": lte_cell(1, json!(3350), json!(10), "fdd"), "x": x}),
    ));
    assert!(
        v.notes
            .iter()
            .any(|n| n.path == "cell_list.x.pci" && n.message.contains("PSS")),
        "{:?}",
        v.notes
    );
}

#[test]
fn nr_raster_band_and_ssb() {
    // 3489.42 MHz is an n77/n78 raster point, not n1.
    let i = invalid(&request(json!({"c": nr_cell(1, 632_628, 1, 20, "fdd")})));
    assert_error(
        &i,
        "cell_list.c.dl_nr_arfcn",
        &["not on the downlink channel raster of band n1", "n77, n78"],
    );
    // n1 uses a 100 kHz raster: 428010 is off by 50 kHz.
    let i = invalid(&request(json!({"c": nr_cell(1, 428_010, 1, 20, "fdd")})));
    assert_error(&i, "cell_list.c.dl_nr_arfcn", &["step 20"]);
    // n78 with 100 MHz at 30 kHz.
    let v = ok(&request(json!({"c": nr_cell(1, 632_628, 78, 100, "tdd")})));
    let c = &v.plan.nr_cells[0];
    assert_eq!((c.scs_khz, c.n_rb, c.ssb_scs_khz), (30, 273, 30));
    assert_eq!(c.ssb_pos_bitmap, "10000000");
    // Edge of n78 (3300–3800 MHz): 100 MHz must be centred in 3350..=3750 MHz.
    assert_error(
        &invalid(&request(json!({"c": nr_cell(1, 623_000, 78, 100, "tdd")}))),
        "cell_list.c.dl_nr_arfcn",
        &["leaves band n78"],
    );
    ok(&request(json!({"c": nr_cell(1, 623_334, 78, 100, "tdd")})));
    // A given SSB off the sync raster is refused; one on it is kept.
    let mut n = nr_cell(1, 300_300, 74, 15, "fdd");
    n["ssb_nr_arfcn"] = json!(300_280);
    assert_error(
        &invalid(&request(json!({"c": n.clone()}))),
        "cell_list.c.ssb_nr_arfcn",
        &["synchronization raster"],
    );
    n["ssb_nr_arfcn"] = json!("300270");
    // 1501.35 MHz = 1251 · 1.2 MHz + 3 · 50 kHz → GSCN 3 · 1251 = 3753.
    assert_eq!(ok(&request(json!({"c": n}))).plan.nr_cells[0].gscn, 3753);
    // 15 kHz cannot carry 100 MHz.
    let mut s = nr_cell(1, 632_628, 78, 100, "tdd");
    s["subcarrier_spacing"] = json!("15 kHz");
    assert_error(
        &invalid(&request(json!({"c": s}))),
        "cell_list.c.subcarrier_spacing",
        &["no transmission bandwidth"],
    );
    // Unknown band, bad bitmap, bad TDD pattern.
    assert_error(
        &invalid(&request(json!({"c": nr_cell(1, 632_628, 999, 20, "tdd")}))),
        "cell_list.c.nr_band",
        &["n999"],
    );
    let mut b = nr_cell(1, 632_628, 78, 20, "tdd");
    b["ssb_pos_bitmap"] = json!("1000");
    assert_error(
        &invalid(&request(json!({"c": b.clone()}))),
        "cell_list.c.ssb_pos_bitmap",
        &["8 bits"],
    );
    b["ssb_pos_bitmap"] = json!("10100000");
    b["tdd_ul_dl_config"] = json!("DDDUU");
    assert_error(
        &invalid(&request(json!({"c": b}))),
        "cell_list.c.tdd_ul_dl_config",
        &["DDDDDDDSUU"],
    );
}

#[test]
fn partly_overlapping_carriers_are_noted() {
    let mut b = lte_cell(2, json!(3300), json!(20), "fdd");
    b["pci"] = json!(40);
    let v = ok(&request(
        json!({"a": lte_cell(1, json!(3350), json!(20), "fdd"), "b": b}),
    ));
    assert!(
        v.notes
            .iter()
            .any(|n| n.path == "cell_list.b.bandwidth" && n.message.contains("overlaps")),
        "{:?}",
        v.notes
    );
    // Same centre, different PCI: frequency reuse, no note.
    let mut c = lte_cell(2, json!(3350), json!(20), "fdd");
    c["pci"] = json!(40);
    let v = ok(&request(
        json!({"a": lte_cell(1, json!(3350), json!(20), "fdd"), "c": c}),
    ));
    assert!(v.notes.is_empty(), "{:?}", v.notes);
}

#[test]
fn nr_uplink_pairing() {
    // n1: duplex distance 190 MHz; n20 (uplink above downlink): −41 MHz.
    let v = ok(&request(json!({"c": nr_cell(1, 428_000, 1, 20, "fdd")})));
    assert_eq!(v.plan.nr_cells[0].ul_nr_arfcn, 390_000);
    let v = ok(&request(json!({"c": nr_cell(1, 161_200, 20, 10, "fdd")})));
    assert_eq!(v.plan.nr_cells[0].ul_freq_khz, 806_000 + 41_000);
    let mut c = nr_cell(1, 428_000, 1, 20, "fdd");
    c["ul_nr_arfcn"] = json!(390_010);
    assert_error(
        &invalid(&request(json!({"c": c}))),
        "cell_list.c.ul_nr_arfcn",
        &["uplink channel raster of band n1"],
    );
}

#[test]
fn unsupported_kinds_and_unknown_keys() {
    let mut c = lte_cell(1, json!(3350), json!(10), "fdd");
    c["cell_kind"] = json!("ue");
    assert_error(
        &invalid(&request(json!({"c": c}))),
        "cell_list.c.cell_kind",
        &["not served"],
    );
    let mut c = lte_cell(1, json!(3350), json!(10), "fdd");
    c["dl_earcfn"] = json!(1);
    c["q_hyst"] = json!(1);
    let v = ok(&request(json!({"c": c})));
    assert_eq!(v.notes.len(), 1, "{:?}", v.notes);
    assert_eq!(v.notes[0].path, "cell_list.c.dl_earcfn");
}

#[test]
fn type_errors_come_with_their_path() {
    let e = validate_json(&request(
        json!({"c": lte_cell(1, json!("far"), json!(10), "fdd")}),
    ))
    .unwrap_err();
    assert!(matches!(e, RequestError::Params(_)));
    assert!(e.to_string().starts_with("`cell_list.c.dl_earfcn`"), "{e}");
}

#[test]
fn plan_round_trips_through_json() {
    let v = ok(&request(json!({
        "a": lte_cell(1, json!(3350), json!(20), "fdd"),
        "n": nr_cell(2, 632_628, 78, 40, "tdd"),
    })));
    let s = serde_json::to_string(&v.plan).unwrap();
    let back: radio::plan::Plan = serde_json::from_str(&s).unwrap();
    assert_eq!(back, v.plan);
}

/// `tx_gain`/`rx_gain` outside `GAIN_DB` are refused naming the field and the value (the fuzz
/// regression `float-roundtrip-tx-gain` asked for 5.2e53 dB); the bounds themselves pass.
#[test]
fn gains_outside_the_documented_range_are_refused() {
    let base: Value = serde_json::from_str(&request(
        json!({"c": lte_cell(1, json!(3350), json!(10), "fdd")}),
    ))
    .unwrap();
    let with = |k: &str, v: Value| {
        let mut d = base.clone();
        d["ru_list"]["RU1"][k] = v;
        d.to_string()
    };
    let (lo, hi) = (
        *radio::validate::GAIN_DB.start(),
        *radio::validate::GAIN_DB.end(),
    );
    assert_eq!((lo, hi), (-100.0, 100.0), "docs/radio.md states this range");
    for (field, bad, shown) in [
        ("tx_gain", json!(5.2e53), "5.2e53 dB"),
        ("rx_gain", json!(100.5), "100.5 dB"),
        ("tx_gain", json!(-101), "-101 dB"),
        ("rx_gain", json!("-150"), "-150 dB"),
    ] {
        assert_error(
            &invalid(&with(field, bad)),
            &format!("ru_list.RU1.{field}"),
            &[shown, "outside -100..=100 dB"],
        );
    }
    for edge in [lo, hi, 0.0] {
        let v = ok(&with("tx_gain", json!(edge)));
        assert_eq!(v.plan.lte_cells[0].ru.tx_gain_db, edge);
    }
    // The fuzz finding itself no longer reaches the plan.
    let finding = include_str!("../../fuzz/regressions/radio_params/float-roundtrip-tx-gain");
    match validate_json(finding) {
        Err(RequestError::Invalid(i)) => {
            assert_error(&i, "ru_list.ru-b.tx_gain", &["outside -100..=100 dB"])
        }
        other => panic!("the fuzz finding must be refused for its gain: {other:?}"),
    }
}
