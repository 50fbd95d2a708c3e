//! The latency probe behind `rt-probe`: a cyclictest-style absolute-time wake-up loop with a
//! TTI-style deadline check.
//!
//! Each period `k` has a planned wake-up `t0 + k·interval`. The loop sleeps with
//! `clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)` until it, records the wake-up latency
//! (actual − planned) in a 1 µs histogram, then does `work` (a fixed amount of integer work
//! calibrated to `work_us` before the run) and checks the period's deadline
//! (`planned + budget`). A period whose work ends after its deadline is a miss. When a period
//! overruns into the next ones, those skipped periods are counted as misses too (nothing ran
//! for them) and the loop resumes at the next future period, as cyclictest does.
//!
//! Only real timer wake-ups go into the histogram. A period whose planned start had already
//! passed when the previous period's work ended (an overrun that did not cover its deadline) is
//! started at once without sleeping: it is a *late start* (`deadline.late_starts`), still
//! checked against its deadline, but its start delay is the previous overrun, not a wake-up
//! latency. cyclictest never measures such a period (it skips every period whose start passed);
//! recording them made the probe's p99.9 up to 10× cyclictest's in the same partition (issue 20,
//! docs/rt.md "The probe's tail").
//!
//! The clock, sleep and work go through [`ProbeEnv`], so the accounting is unit-tested with a
//! scripted clock.

use serde::Serialize;

/// The histogram: 1 µs buckets up to `max_us`, plus an overflow count; exact min/max/sum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Histogram {
    buckets: Vec<u64>,
    overflow: u64,
    count: u64,
    sum_ns: u128,
    min_ns: u64,
    max_ns: u64,
}

impl Histogram {
    /// Buckets 0..=max_us µs.
    pub fn new(max_us: u32) -> Self {
        Self {
            buckets: vec![0; max_us as usize + 1],
            overflow: 0,
            count: 0,
            sum_ns: 0,
            min_ns: u64::MAX,
            max_ns: 0,
        }
    }

    /// Builds one from bucket counts (e.g. cyclictest's JSON histogram) plus overflows, whose
    /// values are only known to exceed `max_us` (`max_ns` is then the reported max). Sums use
    /// bucket floors and the range limit for overflows, so the mean is a lower bound (< 1 µs off
    /// without overflows).
    pub fn from_buckets(
        max_us: u32,
        counts: impl IntoIterator<Item = (u32, u64)>,
        overflow: u64,
        max_ns: u64,
    ) -> Self {
        let mut h = Self::new(max_us);
        for (us, n) in counts {
            if us as usize >= h.buckets.len() {
                h.overflow += n;
            } else {
                h.buckets[us as usize] += n;
            }
            h.count += n;
            h.sum_ns += u128::from(us) * 1000 * u128::from(n);
            if n > 0 {
                h.min_ns = h.min_ns.min(u64::from(us) * 1000);
                h.max_ns = h.max_ns.max(u64::from(us) * 1000);
            }
        }
        h.overflow += overflow;
        h.count += overflow;
        // Overflowed values are only known to exceed the range: count them at its limit.
        h.sum_ns += u128::from(max_us) * 1000 * u128::from(overflow);
        h.max_ns = h.max_ns.max(max_ns);
        h
    }

    /// Records one latency.
    pub fn record(&mut self, ns: u64) {
        let us = (ns / 1000) as usize;
        match self.buckets.get_mut(us) {
            Some(b) => *b += 1,
            None => self.overflow += 1,
        }
        self.count += 1;
        self.sum_ns += u128::from(ns);
        self.min_ns = self.min_ns.min(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    /// Non-empty buckets as (µs, count), in increasing order.
    pub fn buckets(&self) -> Vec<(u32, u64)> {
        self.buckets
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(us, n)| (us as u32, *n))
            .collect()
    }

    /// Samples beyond the range.
    pub fn overflow(&self) -> u64 {
        self.overflow
    }

    /// Exact maximum (ns).
    pub fn max_ns(&self) -> u64 {
        self.max_ns
    }

    /// Adds another histogram's samples (same range), e.g. slices of an interleaved benchmark.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.overflow += other.overflow;
        self.count += other.count;
        self.sum_ns += other.sum_ns;
        self.min_ns = self.min_ns.min(other.min_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Samples above `us` µs (bucket resolution).
    pub fn count_above_us(&self, us: u32) -> u64 {
        let from = (us as usize + 1).min(self.buckets.len());
        self.buckets[from..].iter().sum::<u64>() + self.overflow
    }

    /// The `q`-quantile (0 < q ≤ 1) in µs: the smallest bucket with at least `ceil(q·n)`
    /// samples at or below it (the value cyclictest users compute from its histogram). When the
    /// rank falls into the overflow, the exact max is returned.
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (us, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return us as u64;
            }
        }
        self.max_ns / 1000
    }

    /// Summary in µs.
    pub fn stats(&self) -> LatencyStats {
        LatencyStats {
            samples: self.count,
            min_us: if self.count == 0 {
                0
            } else {
                self.min_ns / 1000
            },
            avg_us: if self.count == 0 {
                0.0
            } else {
                (self.sum_ns as f64 / self.count as f64 / 1000.0 * 10.0).round() / 10.0
            },
            p50_us: self.quantile_us(0.50),
            p99_us: self.quantile_us(0.99),
            p999_us: self.quantile_us(0.999),
            max_us: self.max_ns / 1000,
            over_100us: self.count_above_us(100),
            over_500us: self.count_above_us(500),
            over_1ms: self.count_above_us(1000),
            overflow: self.overflow,
        }
    }
}

/// Latency summary (µs).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LatencyStats {
    /// Samples.
    pub samples: u64,
    /// Minimum.
    pub min_us: u64,
    /// Mean.
    pub avg_us: f64,
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Maximum.
    pub max_us: u64,
    /// Samples above 100 µs.
    pub over_100us: u64,
    /// Samples above 500 µs.
    pub over_500us: u64,
    /// Samples above 1 ms.
    pub over_1ms: u64,
    /// Samples beyond the histogram range.
    pub overflow: u64,
}

/// Loop parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProbeConfig {
    /// Period (µs), e.g. 1000 for an LTE TTI.
    pub interval_us: u64,
    /// Number of periods to run.
    pub loops: u64,
    /// Work per period (µs, calibrated before the run); 0 = pure wake-up latency.
    pub work_us: u64,
    /// Deadline after the planned wake-up (µs); default = interval.
    pub budget_us: u64,
    /// Histogram range (µs).
    pub hist_max_us: u32,
}

impl ProbeConfig {
    /// `loops` periods of `interval_us`, no work, budget = interval, 20 ms histogram.
    pub fn new(interval_us: u64, loops: u64) -> Self {
        Self {
            interval_us,
            loops,
            work_us: 0,
            budget_us: interval_us,
            hist_max_us: 20_000,
        }
    }
}

/// Deadline accounting.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeadlineStats {
    /// Periods that should have run (executed + skipped).
    pub periods: u64,
    /// Periods whose work ended after the deadline, plus skipped periods.
    pub misses: u64,
    /// Periods skipped because an earlier one overran.
    pub skipped: u64,
    /// misses / periods.
    pub miss_ratio: f64,
    /// Smallest (deadline − end of work) over executed periods, µs (negative = late).
    pub min_slack_us: i64,
    /// Executed periods started without a sleep because the previous one overran past their
    /// planned start (not in the wake-up histogram).
    pub late_starts: u64,
    /// Wake-ups later than `budget − work`: a timer wake-up that alone made the period miss
    /// (the figure rt-bench compares with the floor's late wake-ups).
    pub late_wakeups: u64,
}

/// The probe's output (serialised as the JSON `rt-probe` prints).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProbeReport {
    /// Parameters.
    pub config: ProbeConfig,
    /// Wake-up latency.
    pub latency: LatencyStats,
    /// Deadlines.
    pub deadline: DeadlineStats,
}

/// Clock, sleep and work, so the loop is testable with a scripted clock.
pub trait ProbeEnv {
    /// Monotonic now (ns).
    fn now_ns(&mut self) -> u64;
    /// Sleep until the absolute monotonic time `t_ns`.
    fn sleep_until_ns(&mut self, t_ns: u64);
    /// One period's fixed work.
    fn work(&mut self);
}

/// Runs the loop and returns the histogram with the report.
pub fn run(cfg: &ProbeConfig, env: &mut impl ProbeEnv) -> (Histogram, ProbeReport) {
    let mut hist = Histogram::new(cfg.hist_max_us);
    let interval = cfg.interval_us.max(1) * 1000;
    let budget = cfg.budget_us * 1000;
    let late_after = budget.saturating_sub(cfg.work_us * 1000);
    let (mut misses, mut skipped, mut executed) = (0u64, 0u64, 0u64);
    let (mut late_starts, mut late_wakeups) = (0u64, 0u64);
    let mut min_slack = i64::MAX;
    // Start one period from now so the first sleep is a real one.
    let mut end = env.now_ns();
    let mut planned = end + interval;
    while executed + skipped < cfg.loops {
        let woke = if planned > end {
            env.sleep_until_ns(planned);
            let woke = env.now_ns();
            let latency = woke.saturating_sub(planned);
            hist.record(latency);
            if latency > late_after {
                late_wakeups += 1;
            }
            woke
        } else {
            // The previous period overran past this one's start: no sleep, no wake-up sample.
            late_starts += 1;
            end
        };
        if cfg.work_us > 0 {
            env.work();
        }
        end = if cfg.work_us > 0 { env.now_ns() } else { woke };
        executed += 1;
        let deadline = planned + budget;
        let slack = deadline as i64 - end as i64;
        min_slack = min_slack.min(slack);
        if end > deadline {
            misses += 1;
        }
        planned += interval;
        // Periods whose deadline already passed got no processing: skipped (and missed). A
        // period that started late but can still meet its deadline is run (unlike cyclictest,
        // which skips every period whose start passed).
        while planned + budget <= end && executed + skipped < cfg.loops {
            skipped += 1;
            misses += 1;
            planned += interval;
        }
    }
    let periods = executed + skipped;
    let report = ProbeReport {
        config: cfg.clone(),
        latency: hist.stats(),
        deadline: DeadlineStats {
            periods,
            misses,
            skipped,
            miss_ratio: if periods == 0 {
                0.0
            } else {
                misses as f64 / periods as f64
            },
            min_slack_us: if min_slack == i64::MAX {
                0
            } else {
                min_slack / 1000
            },
            late_starts,
            late_wakeups,
        },
    };
    (hist, report)
}

/// Promise thresholds: the probe fails when one is exceeded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Thresholds {
    /// Maximum acceptable p99 wake-up latency (µs).
    pub max_p99_us: Option<u64>,
    /// Maximum acceptable deadline miss ratio.
    pub max_miss_ratio: Option<f64>,
}

impl Thresholds {
    /// Violations, as messages; empty when the promise holds.
    pub fn check(&self, r: &ProbeReport) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(max) = self.max_p99_us
            && r.latency.p99_us > max
        {
            v.push(format!(
                "p99 wake-up latency {} µs exceeds {} µs",
                r.latency.p99_us, max
            ));
        }
        if let Some(max) = self.max_miss_ratio
            && r.deadline.miss_ratio > max
        {
            v.push(format!(
                "deadline miss ratio {:.2e} ({} of {} periods) exceeds {:.2e}",
                r.deadline.miss_ratio, r.deadline.misses, r.deadline.periods, max
            ));
        }
        v
    }
}

/// The real environment: CLOCK_MONOTONIC, absolute `clock_nanosleep`, calibrated integer work.
#[derive(Debug)]
pub struct RealEnv {
    iterations: u64,
    sink: u64,
}

impl RealEnv {
    /// Calibrates `work_us` of integer work on the calling thread (run it with the measuring
    /// thread's policy and affinity already set).
    pub fn calibrated(work_us: u64) -> Self {
        let mut env = Self {
            iterations: 0,
            sink: 1,
        };
        if work_us == 0 {
            return env;
        }
        // Double the iteration count until 10 ms are covered, then scale; take the fastest of
        // three rounds to drop preemptions.
        let mut n = 1024u64;
        loop {
            let t = crate::sys::monotonic_ns();
            env.spin(n);
            if crate::sys::monotonic_ns() - t > 10_000_000 || n > (1 << 40) {
                break;
            }
            n *= 2;
        }
        let mut best = u64::MAX;
        for _ in 0..3 {
            let t = crate::sys::monotonic_ns();
            env.spin(n);
            best = best.min((crate::sys::monotonic_ns() - t).max(1));
        }
        env.iterations =
            (u128::from(n) * u128::from(work_us) * 1000 / u128::from(best)).max(1) as u64;
        env
    }

    /// Iterations per period.
    pub fn iterations(&self) -> u64 {
        self.iterations
    }

    fn spin(&mut self, n: u64) {
        // xorshift: cheap, data-dependent, not optimisable away (sink is kept).
        let mut x = self.sink | 1;
        for _ in 0..n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        self.sink = std::hint::black_box(x);
    }
}

impl ProbeEnv for RealEnv {
    fn now_ns(&mut self) -> u64 {
        crate::sys::monotonic_ns()
    }
    fn sleep_until_ns(&mut self, t_ns: u64) {
        // EINTR is retried inside; other errors cannot happen for a valid absolute time.
        let _ = crate::sys::sleep_until_ns(t_ns);
    }
    fn work(&mut self) {
        self.spin(self.iterations);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scripted clock: each sleep wakes `lat[i]` ns late, each work takes `work[i]` ns.
    struct Script {
        now: u64,
        lat: Vec<u64>,
        work: Vec<u64>,
        i: usize,
    }
    impl ProbeEnv for Script {
        fn now_ns(&mut self) -> u64 {
            self.now
        }
        fn sleep_until_ns(&mut self, t: u64) {
            let l = self.lat.get(self.i).copied().unwrap_or(0);
            self.now = self.now.max(t) + l;
        }
        fn work(&mut self) {
            self.now += self.work.get(self.i).copied().unwrap_or(0);
            self.i += 1;
        }
    }

    #[test]
    fn histogram_quantiles_follow_rank_definition() {
        let mut h = Histogram::new(100);
        for us in 1..=100u64 {
            h.record(us * 1000 + 500);
        }
        assert_eq!(h.quantile_us(0.5), 50);
        assert_eq!(h.quantile_us(0.99), 99);
        assert_eq!(h.quantile_us(0.999), 100);
        h.record(5_000_000); // overflow
        let s = h.stats();
        assert_eq!(s.samples, 101);
        assert_eq!(s.max_us, 5000);
        assert_eq!(s.overflow, 1);
        assert_eq!(s.over_1ms, 1);
        assert_eq!(s.min_us, 1);
        assert_eq!(h.count_above_us(98), 3);
        assert_eq!(Histogram::new(10).stats().p99_us, 0);
    }

    #[test]
    fn histogram_merge_and_bucket_round_trip() {
        let mut a = Histogram::new(100);
        let mut b = Histogram::new(100);
        a.record(5_000);
        a.record(7_900);
        b.record(7_100);
        b.record(300_000);
        a.merge(&b);
        assert_eq!(a.count(), 4);
        assert_eq!(a.buckets(), vec![(5, 1), (7, 2)]);
        assert_eq!(a.overflow(), 1);
        assert_eq!(a.max_ns(), 300_000);
        let c = Histogram::from_buckets(100, a.buckets(), a.overflow(), a.max_ns());
        assert_eq!(c.quantile_us(0.5), 7);
        assert_eq!(c.stats().max_us, 300);
        assert_eq!(c.count(), 4);
    }

    #[test]
    fn histogram_from_cyclictest_buckets() {
        let h = Histogram::from_buckets(
            20_000,
            [(7, 5), (8, 90), (40, 4), (25_000, 1)],
            2,
            30_000_000,
        );
        assert_eq!(h.count(), 102);
        assert_eq!(h.quantile_us(0.5), 8);
        assert_eq!(h.quantile_us(0.97), 40);
        assert_eq!(
            h.quantile_us(0.99),
            30_000,
            "a rank in the overflow returns the reported max"
        );
        assert_eq!(h.stats().overflow, 3);
    }

    #[test]
    fn loop_counts_latency_misses_and_skipped_periods() {
        // 1 ms period, 300 µs work, budget 1 ms (late wake-up: > 700 µs). Planned starts at
        // 1, 2, 3, … ms. Period 1 wakes 900 µs late (a late wake-up; its work ends at 3.2 ms,
        // past its deadline: a miss). Period 2's start (3 ms) passed during that work: a late
        // start, run at once (no sleep, no wake-up sample), ends 3.5 ms, in time. Period 3 wakes
        // 2.5 ms late (6.5 ms, a miss); period 4's deadline (6 ms) passes during it: skipped (a
        // miss); period 5 (start 6 ms) starts late at 6.8 ms and ends past its 7 ms deadline (a
        // miss) at 7.1 ms, so period 6 (start 7 ms) is a late start too, in time. Period 7
        // wakes 15 µs late.
        let mut env = Script {
            now: 0,
            lat: vec![10_000, 900_000, 0, 2_500_000, 0, 0, 15_000, 15_000],
            work: vec![300_000; 8],
            i: 0,
        };
        let mut cfg = ProbeConfig::new(1000, 8);
        cfg.work_us = 300;
        let (h, r) = run(&cfg, &mut env);
        assert_eq!(r.deadline.periods, 8);
        assert_eq!(r.deadline.skipped, 1);
        assert_eq!(r.deadline.misses, 4, "{r:?}");
        assert_eq!(r.deadline.late_starts, 3, "{r:?}");
        assert_eq!(r.deadline.late_wakeups, 2, "{r:?}");
        assert_eq!(
            h.count(),
            4,
            "one latency sample per timer wake-up: late starts are not wake-ups"
        );
        assert_eq!(h.buckets(), vec![(10, 1), (15, 1), (900, 1), (2500, 1)]);
        assert_eq!(r.latency.p50_us, 15);
        assert_eq!(r.latency.max_us, 2500);
        assert_eq!(r.deadline.min_slack_us, -1800);
        assert!((r.deadline.miss_ratio - 0.5).abs() < 1e-9);
    }

    #[test]
    fn an_overrun_adds_no_wake_up_sample() {
        // The issue-20 tail: one 950 µs stall with 200 µs work. cyclictest records one sample
        // (950); the probe used to record a second one for the next period (its start passed
        // during the overrun: 150 µs "latency"), which is what lifted its p99.9.
        let mut env = Script {
            now: 0,
            lat: vec![5_000, 950_000, 0, 5_000],
            work: vec![200_000; 4],
            i: 0,
        };
        let mut cfg = ProbeConfig::new(1000, 4);
        cfg.work_us = 200;
        let (h, r) = run(&cfg, &mut env);
        assert_eq!(h.buckets(), vec![(5, 2), (950, 1)]);
        assert_eq!(r.deadline.late_starts, 1);
        assert_eq!(r.deadline.late_wakeups, 1);
        assert_eq!(r.deadline.misses, 1, "only the stalled period misses");
        assert_eq!(r.deadline.skipped, 0);
    }

    #[test]
    fn thresholds_report_each_violation() {
        let mut env = Script {
            now: 0,
            lat: vec![50_000; 100],
            work: vec![],
            i: 0,
        };
        let (_, r) = run(&ProbeConfig::new(1000, 100), &mut env);
        assert_eq!(r.latency.p99_us, 50);
        assert_eq!(r.deadline.misses, 0);
        assert!(
            Thresholds {
                max_p99_us: Some(50),
                max_miss_ratio: Some(0.0)
            }
            .check(&r)
            .is_empty()
        );
        let v = Thresholds {
            max_p99_us: Some(49),
            max_miss_ratio: None,
        }
        .check(&r);
        assert_eq!(v.len(), 1);
        assert!(
            v[0].contains("p99 wake-up latency 50 µs exceeds 49 µs"),
            "{v:?}"
        );
    }

    #[test]
    fn real_env_runs_a_short_loop() {
        let mut env = RealEnv::calibrated(50);
        assert!(env.iterations() > 0);
        let mut cfg = ProbeConfig::new(500, 20);
        cfg.work_us = 50;
        let (h, r) = run(&cfg, &mut env);
        assert_eq!(r.deadline.periods, 20);
        assert_eq!(
            h.count() + r.deadline.late_starts + r.deadline.skipped,
            20,
            "every period is a wake-up, a late start or skipped"
        );
    }
}
