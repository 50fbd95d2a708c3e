//! KPIs and promises over statistics records.
//!
//! A *window* is the last `n` records (simpleran's promises look at the last 5 × the stats
//! period, i.e. about 5 records). Functions take the records and, where freshness matters, the
//! current time as a parameter: nothing here reads a clock.
//!
//! Promise semantics, each a pure function returning an [`Outcome`]:
//! * [`check_cell_up`] — a record newer than `max_age_s`, listing at least one cell with its
//!   radio active.
//! * [`check_latency`] — the **largest** per-TTI processing time (wake-up + work) in the window
//!   against a threshold, from each record's `tti.processing_us.max`.
//! * [`check_rxtx_delay`] — Amarisoft's TX-ahead margin: the smallest `rf.rxtx_delay_min` must
//!   not drop below the minimum, and the largest `rf.rxtx_delay_max` must not exceed the maximum.
//!   (SlapOS' `check_baseband_latency` computes its "max" from `rxtx_delay_min`; here each bound
//!   reads its own field, and a window without the field fails explicitly.)
//! * [`check_rx_saturation`] — any RX antenna's `max` at or above `max_rx_sample_db`.
//! * [`check_tti_misses`] — Σ missed / Σ TTIs over the window against a ratio.
//!
//! An empty window fails every check with "no statistics" rather than passing.

use crate::stats::StatsRecord;
use serde::Serialize;
use serde_json::{Map, Value};

/// Result of one check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// Check name (`cell-up`, `latency`, `rxtx-delay`, `rx-saturation`, `tti-misses`).
    pub check: &'static str,
    /// Whether it passed.
    pub ok: bool,
    /// Human-readable result with the values.
    pub message: String,
}

fn outcome(check: &'static str, ok: bool, message: String) -> Outcome {
    Outcome { check, ok, message }
}

fn empty(check: &'static str) -> Outcome {
    outcome(check, false, "no statistics record in the window".into())
}

/// The last `n` records (all if fewer).
pub fn window(records: &[StatsRecord], n: usize) -> &[StatsRecord] {
    &records[records.len().saturating_sub(n.max(1))..]
}

/// Cell up: the newest record is at most `max_age_s` old (when `now` is known) and lists an
/// active cell.
pub fn check_cell_up(window: &[StatsRecord], now: Option<f64>, max_age_s: Option<f64>) -> Outcome {
    const C: &str = "cell-up";
    let Some(last) = window.last() else {
        return empty(C);
    };
    if let (Some(now), Some(max_age)) = (now, max_age_s) {
        match last.utc {
            Some(t) if now - t > max_age => {
                return outcome(
                    C,
                    false,
                    format!(
                        "cell down: the last statistics are {:.0} s old (limit {max_age:.0} s); the stack stopped reporting",
                        now - t
                    ),
                );
            }
            None => {
                return outcome(
                    C,
                    false,
                    "cell state unknown: the last record has no time".into(),
                );
            }
            _ => {}
        }
    }
    let active: Vec<&String> = last
        .data
        .cells
        .iter()
        .filter(|(_, c)| c.txrx_active != Some(false))
        .map(|(id, _)| id)
        .collect();
    if last.data.cells.is_empty() {
        outcome(
            C,
            false,
            "cell down: the last statistics list no cell".into(),
        )
    } else if active.is_empty() {
        outcome(
            C,
            false,
            format!(
                "cell down: radio inactive on every cell ({})",
                join(last.data.cells.keys())
            ),
        )
    } else {
        outcome(
            C,
            true,
            format!(
                "cell up: {} active cell(s) ({})",
                active.len(),
                join(active.into_iter())
            ),
        )
    }
}

/// Processing latency: the largest `tti.processing_us.max` of the window ≤ `max_us`.
pub fn check_latency(window: &[StatsRecord], max_us: f64) -> Outcome {
    const C: &str = "latency";
    if window.is_empty() {
        return empty(C);
    }
    let worst = window
        .iter()
        .filter_map(|r| r.data.tti.as_ref().map(|t| t.processing_us.max))
        .reduce(f64::max);
    match worst {
        None => outcome(
            C,
            false,
            "no TTI processing data (tti.processing_us) in the window".into(),
        ),
        Some(w) if w > max_us => outcome(
            C,
            false,
            format!(
                "baseband processing latency max {w:.0} µs exceeds {max_us:.0} µs over the last {} record(s)",
                window.len()
            ),
        ),
        Some(w) => outcome(
            C,
            true,
            format!("baseband processing latency max {w:.0} µs ≤ {max_us:.0} µs"),
        ),
    }
}

/// TX-ahead margin: min of `rf.rxtx_delay_min` ≥ `min_ms` and max of `rf.rxtx_delay_max` ≤ `max_ms`.
pub fn check_rxtx_delay(
    window: &[StatsRecord],
    min_ms: Option<f64>,
    max_ms: Option<f64>,
) -> Outcome {
    const C: &str = "rxtx-delay";
    if window.is_empty() {
        return empty(C);
    }
    let lo = window
        .iter()
        .filter_map(|r| r.data.rf.as_ref()?.rxtx_delay_min)
        .reduce(f64::min);
    let hi = window
        .iter()
        .filter_map(|r| r.data.rf.as_ref()?.rxtx_delay_max)
        .reduce(f64::max);
    let mut problems = Vec::new();
    if let Some(min) = min_ms {
        match lo {
            None => problems.push("no rf.rxtx_delay_min in the window".to_string()),
            Some(v) if v < min => problems.push(format!(
                "minimum TX/RX margin {v:.3} ms is below {min} ms: the radio front end has too little time, TTIs are late"
            )),
            _ => {}
        }
    }
    if let Some(max) = max_ms {
        match hi {
            None => problems.push("no rf.rxtx_delay_max in the window".to_string()),
            Some(v) if v > max => {
                problems.push(format!("maximum TX/RX margin {v:.3} ms exceeds {max} ms"))
            }
            _ => {}
        }
    }
    let range = format!(
        "TX/RX margin {}–{} ms",
        lo.map(|v| format!("{v:.3}")).unwrap_or_else(|| "?".into()),
        hi.map(|v| format!("{v:.3}")).unwrap_or_else(|| "?".into())
    );
    if problems.is_empty() {
        outcome(C, true, format!("{range} within bounds"))
    } else {
        outcome(C, false, problems.join("; "))
    }
}

/// Per-antenna maximum of `samples.rx[i].max` over the window.
pub fn rx_max_per_antenna(window: &[StatsRecord]) -> Vec<f64> {
    let mut out: Vec<f64> = Vec::new();
    for r in window {
        let Some(s) = &r.data.samples else { continue };
        for (i, a) in s.rx.iter().enumerate() {
            match out.get_mut(i) {
                Some(m) => *m = m.max(a.max),
                None => out.push(a.max),
            }
        }
    }
    out
}

/// RX saturation: no antenna's peak at or above `max_rx_sample_db` dBFS.
pub fn check_rx_saturation(window: &[StatsRecord], max_rx_sample_db: f64) -> Outcome {
    const C: &str = "rx-saturation";
    if window.is_empty() {
        return empty(C);
    }
    let peaks = rx_max_per_antenna(window);
    let list = peaks
        .iter()
        .map(|v| format!("{v:.2}"))
        .collect::<Vec<_>>()
        .join(", ");
    if peaks.is_empty() {
        outcome(C, false, "no RX samples data available".into())
    } else if peaks.iter().any(|&p| p >= max_rx_sample_db) {
        outcome(
            C,
            false,
            format!(
                "RX max dBFS: {list} (RX antennas saturated at ≥ {max_rx_sample_db} dBFS, please lower rx_gain)"
            ),
        )
    } else {
        outcome(
            C,
            true,
            format!("RX max dBFS: {list} (no saturation below {max_rx_sample_db} dBFS)"),
        )
    }
}

/// Missed TTIs and TTIs counted over the window.
pub fn tti_totals(window: &[StatsRecord]) -> Option<(u64, u64)> {
    let ttis: Vec<_> = window.iter().filter_map(|r| r.data.tti.as_ref()).collect();
    (!ttis.is_empty()).then(|| {
        ttis.iter()
            .fold((0, 0), |(m, c), t| (m + t.missed, c + t.count))
    })
}

/// TTI misses: Σ missed / Σ count ≤ `max_ratio`.
pub fn check_tti_misses(window: &[StatsRecord], max_ratio: f64) -> Outcome {
    const C: &str = "tti-misses";
    if window.is_empty() {
        return empty(C);
    }
    match tti_totals(window) {
        None => outcome(
            C,
            false,
            "no TTI counters (tti.count/tti.missed) in the window".into(),
        ),
        Some((_, 0)) => outcome(C, false, "no TTI ran in the window".into()),
        Some((missed, count)) => {
            let ratio = missed as f64 / count as f64;
            if ratio > max_ratio {
                outcome(
                    C,
                    false,
                    format!(
                        "{missed} of {count} TTIs missed their deadline (ratio {ratio:.2e} > {max_ratio:.2e})"
                    ),
                )
            } else {
                outcome(
                    C,
                    true,
                    format!(
                        "{missed} of {count} TTIs missed (ratio {ratio:.2e} ≤ {max_ratio:.2e})"
                    ),
                )
            }
        }
    }
}

/// Thresholds of a promise run; `None` skips a check.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PromiseConfig {
    /// Records in the window.
    pub window: usize,
    /// Current time, seconds since the epoch (for freshness).
    pub now: Option<f64>,
    /// Oldest acceptable last record, seconds.
    pub max_age_s: Option<f64>,
    /// Check that a cell is up.
    pub cell_up: bool,
    /// Processing latency limit, µs.
    pub max_latency_us: Option<f64>,
    /// TTI miss ratio limit.
    pub max_miss_ratio: Option<f64>,
    /// Lower bound of the TX/RX margin, ms.
    pub min_rxtx_delay_ms: Option<f64>,
    /// Upper bound of the TX/RX margin, ms.
    pub max_rxtx_delay_ms: Option<f64>,
    /// RX saturation threshold, dBFS.
    pub max_rx_sample_db: Option<f64>,
}

/// Runs the configured checks on the last `cfg.window` records.
pub fn evaluate(records: &[StatsRecord], cfg: &PromiseConfig) -> Vec<Outcome> {
    let w = window(records, cfg.window);
    let mut out = Vec::new();
    if cfg.cell_up {
        out.push(check_cell_up(w, cfg.now, cfg.max_age_s));
    }
    if let Some(max) = cfg.max_latency_us {
        out.push(check_latency(w, max));
    }
    if cfg.min_rxtx_delay_ms.is_some() || cfg.max_rxtx_delay_ms.is_some() {
        out.push(check_rxtx_delay(
            w,
            cfg.min_rxtx_delay_ms,
            cfg.max_rxtx_delay_ms,
        ));
    }
    if let Some(db) = cfg.max_rx_sample_db {
        out.push(check_rx_saturation(w, db));
    }
    if let Some(r) = cfg.max_miss_ratio {
        out.push(check_tti_misses(w, r));
    }
    out
}

/// KPIs of the window, as a flat JSON object (connection-parameter friendly: no nesting,
/// `kpi-` prefixed names). Absent data is omitted rather than reported as zero.
pub fn kpis(
    records: &[StatsRecord],
    n: usize,
    now: Option<f64>,
    max_age_s: Option<f64>,
) -> Map<String, Value> {
    let w = window(records, n);
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(format!("kpi-{k}"), v);
    };
    put("records", w.len().into());
    let up = check_cell_up(w, now, max_age_s);
    put("cell-up", up.ok.into());
    let Some(last) = w.last() else { return m };
    if let Some(t) = last.utc {
        put("last-utc", num(t));
        if let Some(now) = now {
            put("age-s", num((now - t).max(0.0)));
        }
    }
    let cells = &last.data.cells;
    put("cells", cells.len().into());
    put(
        "connected-ues",
        num(cells.values().map(|c| c.ue_count_avg).sum()),
    );
    put(
        "connected-ues-max",
        num(cells.values().map(|c| c.ue_count_max).sum()),
    );
    put(
        "dl-bitrate-bps",
        num(cells.values().map(|c| c.dl_bitrate).sum()),
    );
    put(
        "ul-bitrate-bps",
        num(cells.values().map(|c| c.ul_bitrate).sum()),
    );
    if let Some(v) = w
        .iter()
        .filter_map(|r| r.data.rf.as_ref()?.rxtx_delay_min)
        .reduce(f64::min)
    {
        put("rxtx-delay-min-ms", num(v));
    }
    if let Some(v) = w
        .iter()
        .filter_map(|r| r.data.rf.as_ref()?.rxtx_delay_max)
        .reduce(f64::max)
    {
        put("rxtx-delay-max-ms", num(v));
    }
    let ttis: Vec<_> = w.iter().filter_map(|r| r.data.tti.as_ref()).collect();
    if let Some(t) = ttis.last() {
        put("tti-period-us", t.period_us.into());
        put("policy", t.policy.clone().into());
        put("priority", t.priority.into());
        put("cpus", t.cpus.clone().into());
        put("mlocked", t.mlocked.into());
    }
    if let Some(v) = ttis.iter().map(|t| t.processing_us.max).reduce(f64::max) {
        put("processing-max-us", num(v));
    }
    if let Some(v) = ttis.iter().map(|t| t.wakeup_us.p99).reduce(f64::max) {
        put("wakeup-p99-us", num(v));
    }
    if let Some(v) = ttis.iter().map(|t| t.wakeup_us.max).reduce(f64::max) {
        put("wakeup-max-us", num(v));
    }
    if let Some((missed, count)) = tti_totals(w) {
        put("tti-count", count.into());
        put("tti-missed", missed.into());
        if count > 0 {
            put("tti-miss-ratio", num(missed as f64 / count as f64));
        }
    }
    let peaks = rx_max_per_antenna(w);
    if let Some(p) = peaks.iter().copied().reduce(f64::max) {
        put("rx-max-dbfs", num(p));
        put(
            "rx-saturated-samples",
            w.iter()
                .filter_map(|r| r.data.samples.as_ref())
                .flat_map(|s| &s.rx)
                .map(|a| a.sat)
                .sum::<u64>()
                .into(),
        );
    }
    m
}

/// A number without float noise: 3 decimals from 1 up (timestamps keep their ms), 6
/// significant digits below (ratios such as 2.41e-3).
fn num(v: f64) -> Value {
    let rounded = if v.abs() >= 1.0 {
        (v * 1000.0).round() / 1000.0
    } else {
        format!("{v:.5e}").parse().unwrap_or(v)
    };
    serde_json::Number::from_f64(rounded)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

fn join<'a>(it: impl Iterator<Item = &'a String>) -> String {
    it.map(String::as_str).collect::<Vec<_>>().join(", ")
}

/// Makes every value of a flat object a string (SlapOS' classic connection parameters).
pub fn stringify(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .map(|(k, v)| {
            let s = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), Value::String(s))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::*;

    fn rec(utc: f64, min: f64, max: f64, proc_max: f64, missed: u64, rx: &[f64]) -> StatsRecord {
        StatsRecord {
            utc: Some(utc),
            data: StatsData {
                utc: Some(utc),
                cells: [(
                    "1".to_string(),
                    CellStats {
                        dl_bitrate: 1e6,
                        ue_count_avg: 2.0,
                        ue_count_max: 3.0,
                        ..Default::default()
                    },
                )]
                .into(),
                rf: Some(RfStats {
                    rxtx_delay_min: Some(min),
                    rxtx_delay_max: Some(max),
                    rxtx_delay_avg: None,
                }),
                samples: Some(Samples {
                    rx: rx
                        .iter()
                        .map(|&m| SampleStats {
                            max: m,
                            ..Default::default()
                        })
                        .collect(),
                    tx: vec![],
                }),
                tti: Some(TtiStats {
                    period_us: 1000,
                    count: 1000,
                    missed,
                    processing_us: Percentiles {
                        max: proc_max,
                        ..Default::default()
                    },
                    ..Default::default()
                }),
                ..Default::default()
            },
        }
    }

    #[test]
    fn latency_uses_the_largest_max() {
        let w = vec![
            rec(1.0, 2.0, 2.5, 300.0, 0, &[-20.0]),
            rec(2.0, 2.0, 2.5, 950.0, 0, &[-20.0]),
            rec(3.0, 2.0, 2.5, 200.0, 0, &[-20.0]),
        ];
        let o = check_latency(&w, 900.0);
        assert!(
            !o.ok && o.message.contains("950 µs exceeds 900 µs"),
            "{o:?}"
        );
        assert!(check_latency(&w, 1000.0).ok);
        assert!(!check_latency(&[], 1000.0).ok);
    }

    /// SlapOS' check_baseband_latency takes its "max" from rxtx_delay_min, so a window whose
    /// maximum margin is too large but whose minimum is fine passes there; here it fails.
    #[test]
    fn rxtx_bounds_read_their_own_fields() {
        let w = vec![
            rec(1.0, 1.5, 4.5, 0.0, 0, &[]),
            rec(2.0, 1.8, 3.0, 0.0, 0, &[]),
        ];
        let o = check_rxtx_delay(&w, Some(1.0), Some(4.0));
        assert!(
            !o.ok
                && o.message
                    .contains("maximum TX/RX margin 4.500 ms exceeds 4 ms"),
            "{o:?}"
        );
        let o = check_rxtx_delay(&w, Some(1.6), None);
        assert!(
            !o.ok && o.message.contains("1.500 ms is below 1.6 ms"),
            "{o:?}"
        );
        assert!(check_rxtx_delay(&w, Some(1.0), Some(5.0)).ok);
        let mut no_max = w.clone();
        for r in &mut no_max {
            r.data.rf.as_mut().unwrap().rxtx_delay_max = None;
        }
        let o = check_rxtx_delay(&no_max, None, Some(4.0));
        assert!(!o.ok && o.message.contains("no rf.rxtx_delay_max"), "{o:?}");
    }

    #[test]
    fn rx_saturation_per_antenna_over_the_window() {
        let w = vec![
            rec(1.0, 2.0, 2.0, 0.0, 0, &[-30.0, -5.0]),
            rec(2.0, 2.0, 2.0, 0.0, 0, &[-10.0, -0.2]),
        ];
        assert_eq!(rx_max_per_antenna(&w), vec![-10.0, -0.2]);
        assert!(check_rx_saturation(&w, 0.0).ok);
        let o = check_rx_saturation(&w, -1.0);
        assert!(
            !o.ok
                && o.message.contains("please lower rx_gain")
                && o.message.contains("-10.00, -0.20"),
            "{o:?}"
        );
        assert!(!check_rx_saturation(&[rec(1.0, 2.0, 2.0, 0.0, 0, &[])], 0.0).ok);
    }

    #[test]
    fn tti_miss_ratio_sums_the_window() {
        let w = vec![
            rec(1.0, 2.0, 2.0, 0.0, 1, &[]),
            rec(2.0, 2.0, 2.0, 0.0, 0, &[]),
            rec(3.0, 2.0, 2.0, 0.0, 2, &[]),
        ];
        assert_eq!(tti_totals(&w), Some((3, 3000)));
        assert!(check_tti_misses(&w, 1e-3).ok);
        let o = check_tti_misses(&w, 1e-4);
        assert!(!o.ok && o.message.contains("3 of 3000"), "{o:?}");
        assert!(
            check_tti_misses(window(&w, 1), 2e-3).ok,
            "only the last record: 2/1000"
        );
        assert!(!check_tti_misses(window(&w, 1), 1e-3).ok);
    }

    #[test]
    fn cell_up_freshness_and_inactive_radio() {
        let mut w = vec![rec(100.0, 2.0, 2.0, 0.0, 0, &[])];
        assert!(check_cell_up(&w, Some(120.0), Some(30.0)).ok);
        let o = check_cell_up(&w, Some(200.0), Some(30.0));
        assert!(!o.ok && o.message.contains("100 s old"), "{o:?}");
        w[0].data.cells.get_mut("1").unwrap().txrx_active = Some(false);
        assert!(!check_cell_up(&w, None, None).ok);
        w[0].data.cells.clear();
        assert!(!check_cell_up(&w, None, None).ok);
        assert!(!check_cell_up(&[], None, None).ok);
    }

    #[test]
    fn evaluate_runs_only_configured_checks() {
        let w = vec![rec(1.0, 2.0, 2.5, 500.0, 0, &[-3.0])];
        let cfg = PromiseConfig {
            window: 5,
            cell_up: true,
            max_latency_us: Some(900.0),
            max_miss_ratio: Some(0.0),
            ..Default::default()
        };
        let o = evaluate(&w, &cfg);
        assert_eq!(
            o.iter().map(|o| (o.check, o.ok)).collect::<Vec<_>>(),
            vec![("cell-up", true), ("latency", true), ("tti-misses", true)]
        );
    }

    #[test]
    fn kpis_are_flat_and_skip_missing_data() {
        let w = vec![
            rec(10.0, 2.0, 2.5, 500.0, 1, &[-3.0, -8.0]),
            rec(11.0, 1.0, 2.0, 700.0, 0, &[-4.0]),
        ];
        let k = kpis(&w, 5, Some(12.0), Some(30.0));
        assert_eq!(k["kpi-cell-up"], true);
        assert_eq!(k["kpi-connected-ues"], 2.0);
        assert_eq!(k["kpi-dl-bitrate-bps"], 1e6);
        assert_eq!(k["kpi-rxtx-delay-min-ms"], 1.0);
        assert_eq!(k["kpi-processing-max-us"], 700.0);
        assert_eq!(k["kpi-tti-missed"], 1);
        assert_eq!(k["kpi-tti-miss-ratio"], 0.0005);
        assert_eq!(k["kpi-rx-max-dbfs"], -3.0);
        assert_eq!(k["kpi-age-s"], 1.0);
        assert_eq!(
            kpis(
                &[rec(1_795_322_709.948, 2.0, 2.5, 1.0, 0, &[])],
                1,
                None,
                None
            )["kpi-last-utc"],
            1_795_322_709.948
        );
        assert!(k.values().all(|v| !v.is_object() && !v.is_array()));
        let e = kpis(&[], 5, None, None);
        assert_eq!(e["kpi-cell-up"], false);
        assert!(!e.contains_key("kpi-dl-bitrate-bps"));
        assert_eq!(stringify(&k)["kpi-cell-up"], "true");
    }
}
