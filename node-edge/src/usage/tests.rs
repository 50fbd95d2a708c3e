use std::path::Path;

use super::*;
use crate::host::resources::NoResources;
use crate::link::fake::FakeLink;

fn p(n: u32) -> PartitionId {
    PartitionId::parse(format!("slappart{n}")).unwrap()
}

fn reading(cpu: Option<u64>, io: u64) -> Reading {
    Reading {
        cg: rt::Usage {
            cpu_ns: cpu,
            memory_current_bytes: Some(4096),
            memory_peak_bytes: None,
            io_read_bytes: Some(io),
            io_write_bytes: Some(2 * io),
            tasks: 2,
        },
        disk_bytes: 8192,
    }
}

#[test]
fn deltas_per_period_survive_counter_resets() {
    let part = p(0);
    // First reading: a baseline.
    let (s, c) = measure(None, &reading(Some(1000), 10), 5_000, &part, None);
    assert!(s.is_none());
    assert_eq!((c.end_ms, c.cpu_ns, c.io_read_bytes), (5_000, 1000, 10));
    let (s, c) = measure(Some(c), &reading(Some(1500), 30), 6_000, &part, None);
    let s = s.unwrap();
    assert_eq!((s.start_ms, s.end_ms, s.cpu_ns), (5_000, 6_000, 500));
    assert_eq!((s.io_read_bytes, s.io_write_bytes), (20, 40));
    assert_eq!(
        (s.memory_bytes, s.memory_peak_bytes, s.disk_bytes),
        (4096, 4096, 8192)
    );
    assert_eq!((s.tasks, s.folded), (2, 1));
    // The group was recreated: its counters restarted from 0.
    let (s, c) = measure(Some(c), &reading(Some(200), 5), 7_000, &part, None);
    let s = s.unwrap();
    assert_eq!((s.start_ms, s.cpu_ns, s.io_read_bytes), (6_000, 200, 5));
    // A clock that went back: no sample, the cursor is kept.
    let (s, back) = measure(Some(c), &reading(Some(300), 6), 6_500, &part, None);
    assert!(s.is_none());
    assert_eq!(back, c);
    // An absent controller is 0, not an error.
    let (s, _) = measure(Some(c), &reading(None, 5), 8_000, &part, None);
    assert_eq!(s.unwrap().cpu_ns, 0);
}

#[test]
fn metrics_textfile_has_series_per_partition_and_the_outbox_depth() {
    let text = render_metrics(
        &[
            (p(0), reading(Some(2_500_000_000), 1)),
            (p(1), Reading::default()),
        ],
        7,
    );
    assert!(
        text.contains("slapos_partition_cpu_seconds_total{partition=\"slappart0\"} 2.500000000\n"),
        "{text}"
    );
    assert!(text.contains("# TYPE slapos_partition_cpu_seconds_total counter\n"));
    // Not accounted: no series rather than a false 0.
    assert!(!text.contains("cpu_seconds_total{partition=\"slappart1\"}"));
    assert!(text.contains("slapos_partition_disk_bytes{partition=\"slappart1\"} 0\n"));
    assert!(text.ends_with("slapos_node_usage_outbox_samples 7\n"));
    assert_eq!(Val::Nanos(12_000_000_345).to_string(), "12.000000345");
}

/// A fake cgroup v1 tree with jails for `n` partitions, their directories, a sampler.
struct Fixture {
    dir: tempfile::TempDir,
    jails: Arc<Jails>,
    parts: Vec<PartitionLayout>,
    link: Arc<FakeLink>,
    instances: Instances,
}

impl Fixture {
    fn new(n: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cg = dir.path().join("cg");
        for h in ["pids", "freezer", "cpuacct", "memory", "blkio"] {
            std::fs::create_dir_all(cg.join(h)).unwrap();
            std::fs::write(cg.join(h).join("cgroup.procs"), "").unwrap();
        }
        let jails = Arc::new(Jails::detect(&cg, "k", 64, Path::new("/proc")).unwrap());
        let parts = (0..n)
            .map(|i| {
                let path = dir.path().join(format!("inst/slappart{i}"));
                std::fs::create_dir_all(&path).unwrap();
                std::fs::write(path.join("data"), vec![7u8; 10_000]).unwrap();
                jails.prepare(&format!("slappart{i}")).unwrap();
                PartitionLayout {
                    id: p(i),
                    index: i,
                    path,
                    addresses: vec![],
                    ports: vec![],
                }
            })
            .collect();
        Self {
            dir,
            jails,
            parts,
            link: Arc::new(FakeLink::new()),
            instances: Instances::default(),
        }
    }

    fn set_cpu(&self, part: u32, ns: u64) {
        let f = self.dir.path().join(format!(
            "cg/cpuacct/slapos-edge-jail/k/slappart{part}/cpuacct.usage"
        ));
        std::fs::write(f, format!("{ns}\n")).unwrap();
    }

    fn sampler(&self, max: usize) -> Arc<Sampler> {
        let src = Sources {
            parts: self.parts.clone(),
            jails: Some(self.jails.clone()),
            resources: Arc::new(NoResources),
            link: self.link.clone(),
            instances: self.instances.clone(),
            metrics_file: Some(self.dir.path().join("metrics/usage.prom")),
        };
        Arc::new(Sampler::new(src, &self.dir.path().join("state/usage"), max).unwrap())
    }
}

#[test]
fn samples_wait_out_an_outage_and_a_restart_and_arrive_once() {
    // The disk walk lists the partition directory.
    if crate::util::emulated_32bit_listing(
        "samples_wait_out_an_outage_and_a_restart_and_arrive_once",
    ) {
        return;
    }
    let f = Fixture::new(2);
    let web = InstanceTitle::parse("web").unwrap();
    *f.instances.lock().unwrap() = vec![(p(0), web.clone())];
    let s = f.sampler(1000);
    f.set_cpu(0, 1_000);
    s.sample(10_000); // baseline
    assert_eq!(s.flush(), 0);
    f.set_cpu(0, 4_000);
    s.sample(11_000);
    assert_eq!(s.flush(), 2);
    let got = f.link.usage();
    let s0 = got.iter().find(|x| x.partition == p(0)).unwrap();
    assert_eq!((s0.start_ms, s0.end_ms, s0.cpu_ns), (10_000, 11_000, 3_000));
    assert_eq!(s0.instance.as_ref(), Some(&web));
    assert!(s0.disk_bytes >= 10_000, "{s0:?}");
    let prom = std::fs::read_to_string(f.dir.path().join("metrics/usage.prom")).unwrap();
    assert!(
        prom.contains("slapos_partition_cpu_seconds_total{partition=\"slappart0\"} 0.000004000"),
        "{prom}"
    );

    // The master goes away: samples pile up on disk.
    f.link.set_down(true);
    for (i, cpu) in [(12_000, 5_000), (13_000, 9_000)] {
        f.set_cpu(0, cpu);
        s.sample(i);
        assert_eq!(s.flush(), 0);
    }
    assert_eq!(s.pending(), 4);
    // The node dies (no compaction, no goodbye) and comes back while the master is away.
    drop(s);
    let s = f.sampler(1000);
    assert_eq!(s.pending(), 4);
    f.set_cpu(0, 9_500);
    s.sample(20_000);
    f.link.set_down(false);
    assert_eq!(s.flush(), 6);
    assert_eq!(s.pending(), 0);
    // Contiguous periods, each once, and every nanosecond counted once.
    let mut p0: Vec<UsageSample> = f
        .link
        .usage()
        .into_iter()
        .filter(|x| x.partition == p(0))
        .collect();
    p0.sort_by_key(|x| x.start_ms);
    let spans: Vec<(u64, u64)> = p0.iter().map(|x| (x.start_ms, x.end_ms)).collect();
    assert_eq!(
        spans,
        [
            (10_000, 11_000),
            (11_000, 12_000),
            (12_000, 13_000),
            (13_000, 20_000)
        ]
    );
    assert_eq!(p0.iter().map(|x| x.cpu_ns).sum::<u64>(), 8_500);
    // A sampler reopened after everything was acknowledged resends nothing, and goes on
    // from the last end.
    drop(s);
    let s = f.sampler(1000);
    assert_eq!(s.pending(), 0);
    s.sample(21_000);
    assert_eq!(s.flush(), 2);
    assert!(
        f.link
            .usage()
            .iter()
            .any(|x| x.partition == p(1) && x.start_ms == 20_000)
    );
}

#[test]
fn a_full_outbox_folds_instead_of_losing_samples() {
    // The disk walk lists the partition directory.
    if crate::util::emulated_32bit_listing("a_full_outbox_folds_instead_of_losing_samples") {
        return;
    }
    let f = Fixture::new(1);
    f.link.set_down(true);
    let s = f.sampler(8);
    for i in 0..=20u64 {
        f.set_cpu(0, i * 100);
        s.sample(1_000 * (i + 1));
    }
    assert!(s.pending() <= 8, "{}", s.pending());
    f.link.set_down(false);
    s.flush();
    let got = f.link.usage();
    assert_eq!(got.iter().map(|x| x.folded).sum::<u32>(), 20);
    assert_eq!(got.iter().map(|x| x.cpu_ns).sum::<u64>(), 2_000);
    assert_eq!(got.iter().map(|x| x.start_ms).min(), Some(1_000));
    assert_eq!(got.iter().map(|x| x.end_ms).max(), Some(21_000));
}
