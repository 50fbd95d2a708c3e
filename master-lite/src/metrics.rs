//! `GET /metrics`: the whole fleet as one Prometheus scrape target (OpenMetrics text, rendered
//! by `prometheus-client`).
//!
//! Two kinds of series. Counted as work passes: API requests by route, method and status, their latency by route ([`track`], the outermost layer, so refusals count too), and
//! the database workers' batch time ([`crate::db::DbTimings`]). Computed at each scrape from the
//! database and the hub: computers by last-seen age, instances by requested and reported
//! state, failing promises per computer, long polls held, and each computer's usage totals
//! (counters kept by the store as samples arrive, natively or by `useComputer`). Nodes have no listener (closed by
//! design): what an operator needs from them reaches the master and shows here.
//!
//! Routes are labelled by their template (`/v1/computers/{c}`), never by the path a caller
//! sent, so a scan of random paths adds one `unmatched` series, not one per path.

use crate::db::{Db, DbTimings};
use crate::error::ApiError;
use crate::hub::Hub;
use std::sync::{Arc, Mutex};

use crate::store::{FleetSummary, UsageTotals};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The media type of the exposition (Prometheus reads OpenMetrics text).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Last-seen ages a computer is counted under (upper bound in seconds, label), oldest last.
const AGES: [(u64, &str); 4] = [(60, "1m"), (300, "5m"), (3_600, "1h"), (86_400, "1d")];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgeLabels {
    seen_within: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    requested: String,
    reported: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComputerLabels {
    computer: String,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms … ~75 s: long polls of the desired state are held up to a minute.
    Histogram::new(exponential_buckets(0.000_5, 2.5, 14))
}

/// The master's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    polls: Gauge,
    parked: Gauge,
    computers: Family<AgeLabels, Gauge>,
    instances: Family<StateLabels, Gauge>,
    promise_failures: Family<ComputerLabels, Gauge>,
    usage: UsageSeries,
    /// One scrape at a time computes the fleet series (they are reset and refilled).
    scrape: tokio::sync::Mutex<()>,
}

impl Metrics {
    /// Metrics that also show the database workers' `timings`.
    pub fn new(timings: &DbTimings) -> Self {
        let mut registry = Registry::with_prefix("slapos_master");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "API requests answered, by route template, method and status",
            requests.clone(),
        );
        let latency = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to its answer, by route template (long polls included)",
            latency.clone(),
        );
        registry.register(
            "db_write_batch_seconds",
            "Time of one batch on the database's main queue: a group commit, or one job and its commit",
            timings.write.clone(),
        );
        registry.register(
            "db_read_batch_seconds",
            "Time of one job on the SQLite read-only connections",
            timings.read.clone(),
        );
        let polls = Gauge::default();
        registry.register(
            "long_polls_held",
            "Long polls of desired state held open now",
            polls.clone(),
        );
        let parked = Gauge::default();
        registry.register(
            "long_polls_parked",
            "Of the long polls held, those waiting outside the HTTP stack (a node's poll over mTLS)",
            parked.clone(),
        );
        let computers = Family::<AgeLabels, Gauge>::default();
        registry.register(
            "computers",
            "Registered computers by how recently their node was seen (1m, 5m, 1h, 1d, older, never)",
            computers.clone(),
        );
        let instances = Family::<StateLabels, Gauge>::default();
        registry.register(
            "instances",
            "Instances by requested state and the state their node reported (none: not yet)",
            instances.clone(),
        );
        let promise_failures = Family::<ComputerLabels, Gauge>::default();
        registry.register(
            "promise_failures",
            "Failing promises in the last reports of the instances on each computer",
            promise_failures.clone(),
        );
        let build = Family::<Vec<(String, String)>, Gauge>::default();
        build
            .get_or_create(&vec![(
                "version".to_owned(),
                env!("CARGO_PKG_VERSION").to_owned(),
            )])
            .set(1);
        registry.register("build_info", "The master's version", build);
        let usage = UsageSeries::default();
        registry.register_collector(Box::new(usage.clone()));
        Self {
            registry,
            requests,
            latency,
            polls,
            parked,
            computers,
            instances,
            promise_failures,
            usage,
            scrape: tokio::sync::Mutex::new(()),
        }
    }

    /// Count one answered request.
    pub(crate) fn observe(&self, route: &str, method: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                method: method.to_owned(),
                status: status.to_string(),
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(seconds);
    }

    /// Refill the fleet series from `fleet` as of `now_ms`, with `polls` long polls held;
    /// `seen` gives a computer's last desired-state read since the master started.
    fn set_fleet(
        &self,
        fleet: &FleetSummary,
        seen: impl Fn(&str) -> Option<u64>,
        polls: usize,
        now_ms: u64,
    ) {
        self.polls.set(i64::try_from(polls).unwrap_or(i64::MAX));
        self.computers.clear();
        // Every age shows, zero included, so a dashboard's panel has all its series.
        for label in AGES.iter().map(|(_, l)| *l).chain(["older", "never"]) {
            self.computers.get_or_create(&age(label)).set(0);
        }
        self.promise_failures.clear();
        for (id, last) in &fleet.computers {
            let label = match (*last).max(seen(id)) {
                None => "never",
                Some(ms) => {
                    let secs = now_ms.saturating_sub(ms) / 1000;
                    AGES.iter()
                        .find(|(bound, _)| secs < *bound)
                        .map_or("older", |(_, l)| l)
                }
            };
            self.computers.get_or_create(&age(label)).inc();
            self.promise_failures
                .get_or_create(&ComputerLabels {
                    computer: id.clone(),
                })
                .set(0);
        }
        self.instances.clear();
        for i in &fleet.instances {
            self.instances
                .get_or_create(&StateLabels {
                    requested: i.requested.clone(),
                    reported: i.reported.clone().unwrap_or_else(|| "none".to_owned()),
                })
                .inc();
            if i.failing_promises > 0 {
                self.promise_failures
                    .get_or_create(&ComputerLabels {
                        computer: i.computer.clone(),
                    })
                    .inc_by(i64::try_from(i.failing_promises).unwrap_or(i64::MAX));
            }
        }
    }

    /// The exposition of every series, the fleet ones refreshed from `db` and `hub` as of
    /// `now_ms` first.
    pub async fn render(&self, db: &Db, hub: &Hub, now_ms: u64) -> Result<String, ApiError> {
        let _one = self.scrape.lock().await;
        let (fleet, usage) = db
            .read(|s| Ok::<_, crate::store::StoreError>((s.fleet_summary()?, s.usage_totals()?)))
            .await?;
        *self.usage.0.lock().unwrap_or_else(|p| p.into_inner()) = usage;
        let seen = |id: &str| {
            slapos_proto::ComputerId::parse(id)
                .ok()
                .and_then(|c| hub.last_seen(&c))
        };
        self.set_fleet(&fleet, seen, hub.held_polls(), now_ms);
        self.parked
            .set(i64::try_from(hub.parked_polls()).unwrap_or(i64::MAX));
        let mut out = String::with_capacity(64 * (fleet.computers.len() + 64));
        encode(&mut out, &self.registry)
            .map_err(|e| ApiError::Internal(format!("rendering the metrics: {e}")))?;
        Ok(out)
    }
}

fn age(label: &str) -> AgeLabels {
    AgeLabels {
        seen_within: label.to_owned(),
    }
}

/// Each computer's usage totals as counters (`slapos_master_usage_*_total{computer}`), as read
/// at the last scrape.
#[derive(Clone, Debug, Default)]
struct UsageSeries(Arc<Mutex<Vec<(String, UsageTotals)>>>);

impl Collector for UsageSeries {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let totals = self.0.lock().unwrap_or_else(|p| p.into_inner());
        type Of = fn(&UsageTotals) -> f64;
        let series: [(&str, &str, Of); 6] = [
            (
                "usage_cpu_seconds",
                "CPU time used on each computer, as its nodes reported",
                |t| t.cpu_seconds(),
            ),
            (
                "usage_memory_gib_hours",
                "Memory held over time on each computer (GiB x hours)",
                |t| t.memory_gib_hours(),
            ),
            (
                "usage_disk_gib_hours",
                "Partition disk held over time on each computer (GiB x hours)",
                |t| t.disk_gib_hours(),
            ),
            (
                "usage_io_read_bytes",
                "Bytes read by partitions on each computer",
                |t| t.io_read_bytes,
            ),
            (
                "usage_io_written_bytes",
                "Bytes written by partitions on each computer",
                |t| t.io_write_bytes,
            ),
            (
                "usage_samples",
                "Usage periods reported by each computer",
                |t| t.samples as f64,
            ),
        ];
        for (name, help, of) in series {
            let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (computer, t) in totals.iter() {
                let labels = ComputerLabels {
                    computer: computer.clone(),
                };
                ConstCounter::new(of(t)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
