//! Accounting of the TTI deadline loop (the pure part of `enb-sim`).
//!
//! The binary wakes at absolute deadlines `start + k·T`, does fixed work, and hands this module
//! two durations per TTI: wake-up latency (actual wake − deadline) and processing time (end of
//! work − deadline). [`Window`] counts misses and keeps a histogram; [`Window::finish`] turns a
//! window into the [`TtiStats`] and the Amarisoft-style `rf.rxtx_delay_*` margins of one
//! statistics record, and [`record`] assembles that record with the plan's cells.
//!
//! Definitions (per TTI of period T):
//! * **missed**: processing > T (the slot's own deadline);
//! * **late**: processing > 3·T (the HARQ-style processing budget);
//! * **skipped**: whole periods jumped because work ran past the next deadline;
//! * **TX/RX margin** (`rxtx_delay`, ms): 3·T − processing, floored at 0 — the time left before
//!   the samples of this TTI are due on air, like Amarisoft's `rxtx_delay`.

use crate::plan::{Plan, RadioUnit};
use crate::stats::{CellStats, Percentiles, RfStats, SampleStats, Samples, StatsData, TtiStats};

/// Histogram resolution: 1 µs buckets up to this bound, one overflow bucket above.
pub const HIST_MAX_US: usize = 20_000;

/// Accumulates one statistics window.
#[derive(Debug, Clone)]
pub struct Window {
    period_ns: u64,
    count: u64,
    missed: u64,
    late: u64,
    skipped: u64,
    wake: Hist,
    proc_: Hist,
}

#[derive(Debug, Clone)]
struct Hist {
    buckets: Vec<u32>,
    overflow_max_ns: u64,
    sum_ns: u128,
    min_ns: u64,
    max_ns: u64,
    n: u64,
}

impl Hist {
    fn new() -> Self {
        Hist {
            buckets: vec![0; HIST_MAX_US + 1],
            overflow_max_ns: 0,
            sum_ns: 0,
            min_ns: u64::MAX,
            max_ns: 0,
            n: 0,
        }
    }

    fn reset(&mut self) {
        self.buckets.fill(0);
        self.overflow_max_ns = 0;
        self.sum_ns = 0;
        self.min_ns = u64::MAX;
        self.max_ns = 0;
        self.n = 0;
    }

    fn add(&mut self, ns: u64) {
        let us = (ns / 1000) as usize;
        let i = us.min(HIST_MAX_US);
        self.buckets[i] = self.buckets[i].saturating_add(1);
        if us >= HIST_MAX_US {
            self.overflow_max_ns = self.overflow_max_ns.max(ns);
        }
        self.sum_ns += u128::from(ns);
        self.min_ns = self.min_ns.min(ns);
        self.max_ns = self.max_ns.max(ns);
        self.n += 1;
    }

    /// Upper edge (µs) of the bucket holding quantile `q`.
    fn quantile_us(&self, q: f64) -> f64 {
        if self.n == 0 {
            return 0.0;
        }
        let rank = ((q * self.n as f64).ceil() as u64).clamp(1, self.n);
        let mut seen = 0u64;
        for (i, &c) in self.buckets.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                return if i == HIST_MAX_US {
                    self.overflow_max_ns as f64 / 1000.0
                } else {
                    (i + 1) as f64
                };
            }
        }
        self.max_ns as f64 / 1000.0
    }

    fn summary(&self) -> Percentiles {
        if self.n == 0 {
            return Percentiles::default();
        }
        Percentiles {
            min: self.min_ns as f64 / 1000.0,
            avg: (self.sum_ns / u128::from(self.n)) as f64 / 1000.0,
            p50: self.quantile_us(0.50),
            p99: self.quantile_us(0.99),
            p999: self.quantile_us(0.999),
            max: self.max_ns as f64 / 1000.0,
        }
    }
}

/// Scheduling state of the loop, reported in every record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchedState {
    /// `fifo`, `rr` or `other`.
    pub policy: String,
    /// Priority.
    pub priority: u8,
    /// Affinity, CPU-list syntax.
    pub cpus: String,
    /// Whether memory is locked.
    pub mlocked: bool,
    /// Why something requested was not applied.
    pub note: Option<String>,
}

impl Window {
    /// A window for period `period_ns`.
    pub fn new(period_ns: u64) -> Self {
        Window {
            period_ns: period_ns.max(1),
            count: 0,
            missed: 0,
            late: 0,
            skipped: 0,
            wake: Hist::new(),
            proc_: Hist::new(),
        }
    }

    /// Records one TTI. Returns how many whole periods the loop must skip (0 normally).
    pub fn record(&mut self, wake_ns: u64, processing_ns: u64) -> u64 {
        self.count += 1;
        self.wake.add(wake_ns);
        self.proc_.add(processing_ns);
        if processing_ns > self.period_ns {
            self.missed += 1;
        }
        if processing_ns > 3 * self.period_ns {
            self.late += 1;
        }
        let skip = processing_ns / self.period_ns;
        self.skipped += skip;
        skip
    }

    /// Empties the window, keeping its buffers: `enb-sim`'s writer thread recycles finished
    /// windows so the TTI loop never allocates (or zeroes 160 KB) on its hot path.
    pub fn reset(&mut self) {
        self.count = 0;
        self.missed = 0;
        self.late = 0;
        self.skipped = 0;
        self.wake.reset();
        self.proc_.reset();
    }

    /// TTIs recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Statistics of the window and the TX/RX margins (ms).
    pub fn finish(&self, sched: &SchedState, dropped_records: u64) -> (TtiStats, RfStats) {
        let budget_us = 3.0 * self.period_ns as f64 / 1000.0;
        let p = self.proc_.summary();
        let margin = |proc_us: f64| ((budget_us - proc_us).max(0.0)) / 1000.0;
        let rf = if self.count == 0 {
            RfStats::default()
        } else {
            RfStats {
                rxtx_delay_min: Some(round3(margin(p.max))),
                rxtx_delay_max: Some(round3(margin(p.min))),
                rxtx_delay_avg: Some(round3(margin(p.avg))),
            }
        };
        let tti = TtiStats {
            period_us: (self.period_ns / 1000) as u32,
            count: self.count,
            missed: self.missed,
            late: self.late,
            skipped: self.skipped,
            wakeup_us: self.wake.summary(),
            processing_us: p,
            policy: sched.policy.clone(),
            priority: sched.priority,
            cpus: sched.cpus.clone(),
            mlocked: sched.mlocked,
            note: sched.note.clone(),
            dropped_records,
        };
        (tti, rf)
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Synthetic load reported for the cells (the stand-in has no UEs of its own).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Load {
    /// Connected UEs per cell.
    pub ues: f64,
    /// Downlink bit rate per cell, bit/s.
    pub dl_bitrate: f64,
    /// Uplink bit rate per cell, bit/s.
    pub ul_bitrate: f64,
}

/// RX peak the stand-in reports for a radio unit: `min(0, rx_gain − 60)` dBFS, so `rx_gain ≥ 60`
/// dB saturates the (simulated) converter — enough to exercise the RX-saturation promise.
pub fn simulated_rx_peak_dbfs(rx_gain_db: f64) -> f64 {
    (rx_gain_db - 60.0).min(0.0)
}

/// A statistics record for `plan` from a finished window.
pub fn record(
    plan: &Plan,
    utc: f64,
    duration_s: f64,
    tti: TtiStats,
    rf: RfStats,
    load: Load,
) -> StatsData {
    let mut cells = std::collections::BTreeMap::new();
    let mut rx = Vec::new();
    let mut add = |id: String,
                   rat: &str,
                   band: u16,
                   arfcn: u32,
                   pci: u16,
                   ru: &RadioUnit,
                   sample_rate: u32| {
        cells.insert(
            id,
            CellStats {
                dl_bitrate: load.dl_bitrate,
                ul_bitrate: load.ul_bitrate,
                ue_count_min: load.ues,
                ue_count_max: load.ues,
                ue_count_avg: load.ues,
                rat: Some(rat.into()),
                band: Some(band),
                dl_arfcn: Some(arfcn),
                pci: Some(pci),
                txrx_active: Some(ru.txrx_active),
            },
        );
        let peak = simulated_rx_peak_dbfs(ru.rx_gain_db);
        let count = (f64::from(sample_rate) * duration_s) as u64;
        rx.extend((0..ru.n_antenna_ul).map(|_| rx_antenna(peak, count)));
    };
    for c in &plan.lte_cells {
        add(
            c.cell_id.to_string(),
            "lte",
            c.band,
            c.dl_earfcn,
            c.pci,
            &c.ru,
            c.bandwidth.sample_rate(),
        );
    }
    for c in &plan.nr_cells {
        add(
            format!("nr{}", c.cell_id),
            "nr",
            c.band,
            c.dl_nr_arfcn,
            c.pci,
            &c.ru,
            c.sample_rate(),
        );
    }
    StatsData {
        message: Some("stats".into()),
        utc: Some(round3(utc)),
        duration: Some(round3(duration_s)),
        cells,
        rf: Some(rf),
        samples: Some(Samples { rx, tx: Vec::new() }),
        tti: Some(tti),
    }
}

fn rx_antenna(peak: f64, count: u64) -> SampleStats {
    SampleStats {
        max: peak,
        rms: peak - 20.0,
        sat: if peak >= 0.0 { count / 1000 } else { 0 },
        count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reset_window_is_a_new_one() {
        let sched = SchedState::default();
        let mut w = Window::new(1_000_000);
        w.record(30_000, 3_500_000);
        w.record(25_000_000, 26_000_000);
        assert_ne!(
            w.finish(&sched, 0),
            Window::new(1_000_000).finish(&sched, 0)
        );
        w.reset();
        assert_eq!(w.count(), 0);
        assert_eq!(
            w.finish(&sched, 0),
            Window::new(1_000_000).finish(&sched, 0)
        );
        w.record(12_000, 300_000);
        let (tti, _) = w.finish(&sched, 0);
        assert_eq!((tti.count, tti.missed, tti.skipped), (1, 0, 0));
        assert_eq!(
            tti.wakeup_us.max, 12.0,
            "nothing of the earlier window is left"
        );
    }

    #[test]
    fn misses_late_and_skips() {
        let mut w = Window::new(1_000_000);
        assert_eq!(w.record(10_000, 300_000), 0);
        assert_eq!(w.record(50_000, 1_200_000), 1);
        assert_eq!(w.record(0, 3_500_000), 3);
        let (t, rf) = w.finish(&SchedState::default(), 0);
        assert_eq!((t.count, t.missed, t.late, t.skipped), (3, 2, 1, 4));
        assert_eq!(t.processing_us.max, 3500.0);
        assert_eq!(t.wakeup_us.max, 50.0);
        // Margin = 3 ms − processing: worst 0 (floored), best 2.7 ms.
        assert_eq!(rf.rxtx_delay_min, Some(0.0));
        assert_eq!(rf.rxtx_delay_max, Some(2.7));
    }

    #[test]
    fn percentiles_from_the_histogram() {
        let mut w = Window::new(1_000_000);
        for i in 0..1000u64 {
            // 999 fast wake-ups of i % 10 µs, one slow of 25 ms (beyond the histogram).
            let wake = if i == 500 {
                25_000_000
            } else {
                (i % 10) * 1000
            };
            w.record(wake, wake + 100_000);
        }
        let (t, _) = w.finish(&SchedState::default(), 0);
        // Buckets report their upper edge: the median 5 µs bucket reads 6 µs.
        assert_eq!(t.wakeup_us.p50, 6.0);
        assert_eq!(t.wakeup_us.p99, 10.0);
        assert_eq!(t.wakeup_us.p999, 10.0);
        assert_eq!(t.wakeup_us.max, 25_000.0);
        assert_eq!(t.wakeup_us.min, 0.0);
        let empty = Window::new(1_000_000).finish(&SchedState::default(), 0);
        assert_eq!(empty.0.count, 0);
        assert_eq!(empty.1.rxtx_delay_min, None);
    }

    #[test]
    fn rx_peak_model() {
        assert_eq!(simulated_rx_peak_dbfs(40.0), -20.0);
        assert_eq!(simulated_rx_peak_dbfs(70.0), 0.0);
    }
}
