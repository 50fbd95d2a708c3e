//! The console's JSON view (`GET /console/api/view`): pure functions from what the store and
//! the hub hold to what the page shows, with every secret masked here, on the server.
//!
//! Masking: a value whose key looks secret ([`is_secret_key`]: `password`, `passwd`, `secret`,
//! `token`, `key`, `private`, `credential`, …, in any case and with any separators) becomes
//! [`MASK`], whatever its type; objects and arrays are walked, strings holding a JSON object
//! (simpleran's `{"_": "<JSON>"}` convention) are masked inside, and the password of a URL's
//! user information (`https://user:pw@host/`) is masked too. The page never receives the
//! value, so neither the DOM, the browser's cache nor a screenshot can show it.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;
use serde_json::Value;
use slapos_proto::{ComputerInfo, InstanceInfo, Params, PromiseResult, SupplyState};

use crate::store::UsagePoint;

/// What a masked value is replaced with (the same whatever its length).
pub const MASK: &str = "••••••";

/// Fragments of a key that mark its value as secret (matched on the key lowercased with its
/// separators removed).
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "pwd",
    "secret",
    "token",
    "key",
    "private",
    "credential",
    "cookie",
    "session",
    "auth",
    "salt",
];

/// Connection parameter prefixes the console shows as KPIs (what the partitions publish:
/// `rt-*` by the rt-probe release, `kpi-*` by `slapos-radio kpi` in the enb release).
pub const RT_PREFIX: &str = "rt-";
/// See [`RT_PREFIX`].
pub const RADIO_PREFIX: &str = "kpi-";

/// Whether the value of `key` must not reach the page.
pub fn is_secret_key(key: &str) -> bool {
    let flat: String = key
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect();
    SECRET_WORDS.iter().any(|w| flat.contains(w))
}

/// `params` with every secret masked (see the module doc).
pub fn mask_params(params: &Params) -> Params {
    params
        .iter()
        .map(|(k, v)| (k.clone(), mask_entry(k, v)))
        .collect()
}

fn mask_entry(key: &str, v: &Value) -> Value {
    if is_secret_key(key) {
        Value::String(MASK.to_owned())
    } else {
        mask_value(v)
    }
}

fn mask_value(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(mask_params(m)),
        Value::Array(a) => Value::Array(a.iter().map(mask_value).collect()),
        Value::String(s) => Value::String(mask_string(s)),
        other => other.clone(),
    }
}

/// A string holding a JSON object is masked inside; a URL's password is masked.
fn mask_string(s: &str) -> String {
    if s.trim_start().starts_with('{')
        && let Ok(Value::Object(m)) = serde_json::from_str::<Value>(s)
    {
        let masked = mask_params(&m);
        if masked != m {
            return Value::Object(masked).to_string();
        }
        return s.to_owned();
    }
    mask_url_password(s)
}

/// `scheme://user:password@host…` → `scheme://user:••••••@host…`; anything else unchanged.
fn mask_url_password(s: &str) -> String {
    let Some(scheme_end) = s.find("://") else {
        return s.to_owned();
    };
    let rest_at = scheme_end + 3;
    let rest = &s[rest_at..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return s.to_owned();
    };
    let Some(colon) = authority[..at].find(':') else {
        return s.to_owned();
    };
    format!(
        "{}{}{MASK}{}",
        &s[..rest_at],
        &authority[..=colon],
        &s[rest_at + at..]
    )
}

/// The whole page's data.
#[derive(Debug, Serialize)]
pub struct View {
    /// The master's clock, unix ms (ages on the page are relative to it).
    pub now_ms: u64,
    /// Computers the caller may read.
    pub computers: Vec<ComputerView>,
    /// Instances the caller may read.
    pub instances: Vec<InstanceView>,
    /// Usage over time of those instances; `None` when the caller may not read usage.
    pub usage: Option<UsageView>,
}

/// A computer.
#[derive(Debug, Serialize)]
pub struct ComputerView {
    /// Reference.
    pub id: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Unix ms of the node's last contact.
    pub last_seen_ms: Option<u64>,
    /// Partitions registered.
    pub partitions: usize,
    /// Partitions holding no instance.
    pub free_partitions: usize,
    /// Releases supplied to it and their install state there.
    pub software: Vec<SoftwareView>,
}

/// A release on a computer.
#[derive(Debug, Serialize)]
pub struct SoftwareView {
    /// The release.
    pub url: String,
    /// `available` or `destroyed`, as supplied.
    pub requested: &'static str,
    /// The node's last report (`building`, `available`, `error`, `destroyed`), if any.
    pub install: Option<String>,
    /// The report's message (the failure and log tail of an `error`).
    pub message: Option<String>,
}

/// An instance.
#[derive(Debug, Serialize)]
pub struct InstanceView {
    /// Title.
    pub title: String,
    /// Root of its tree.
    pub root_title: String,
    /// `computer/partition` of its requester, `None` for a root.
    pub requester: Option<String>,
    /// Release.
    pub software_url: String,
    /// Software type.
    pub software_type: String,
    /// Where it is allocated.
    pub computer: String,
    /// Where it is allocated.
    pub partition: String,
    /// Requested state.
    pub requested: &'static str,
    /// Last reported state, if any.
    pub reported: Option<&'static str>,
    /// Whether the last report is about the current revision (converged) or an older one.
    pub current: bool,
    /// Unix ms of the last report.
    pub reported_ms: Option<u64>,
    /// The error that kept it from converging, if reported.
    pub error: Option<String>,
    /// Last bang message.
    pub bang: Option<String>,
    /// Promise results of the last report.
    pub promises: Vec<PromiseResult>,
    /// Requested parameters, secrets masked.
    pub parameters: Params,
    /// Published connection parameters other than KPIs, secrets masked.
    pub connection: Params,
    /// Real-time latency figures it publishes (`rt-*`), secrets masked.
    pub rt: Params,
    /// Radio KPIs it publishes (`kpi-*`), secrets masked.
    pub radio: Params,
}

/// Usage charts' data.
#[derive(Debug, Serialize)]
pub struct UsageView {
    /// Window start (exclusive), unix ms.
    pub since_ms: u64,
    /// Window end, unix ms.
    pub until_ms: u64,
    /// Width of a bucket, ms.
    pub bucket_ms: u64,
    /// One series per instance.
    pub series: Vec<Series>,
}

/// One instance's usage over the window.
#[derive(Debug, Serialize, PartialEq)]
pub struct Series {
    /// Instance title.
    pub instance: String,
    /// Computer of its partition.
    pub computer: String,
    /// Partition.
    pub partition: String,
    /// `[bucket start ms, CPU cores (CPU seconds per second measured), memory bytes, disk
    /// bytes]` per bucket holding samples.
    pub points: Vec<[f64; 4]>,
}

/// A computer as shown (`last_seen_ms` already merged with the hub's).
pub fn computer(c: &ComputerInfo) -> ComputerView {
    ComputerView {
        id: c.id.to_string(),
        labels: c
            .labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        last_seen_ms: c.last_seen_ms,
        partitions: c.partitions.len(),
        free_partitions: c.partitions.iter().filter(|p| p.instance.is_none()).count(),
        software: c
            .software
            .iter()
            .map(|s| SoftwareView {
                url: s.url.to_string(),
                requested: match s.requested {
                    SupplyState::Available => "available",
                    SupplyState::Destroyed => "destroyed",
                },
                install: s.install.as_ref().map(|r| {
                    serde_json::to_value(r.state)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                }),
                message: s.install.as_ref().and_then(|r| r.message.clone()),
            })
            .collect(),
    }
}

/// An instance as shown: secrets masked, KPIs apart.
pub fn instance(i: &InstanceInfo) -> InstanceView {
    let mut connection = Params::new();
    let mut rt = Params::new();
    let mut radio = Params::new();
    for (k, v) in mask_params(&i.connection) {
        let to = if k.starts_with(RT_PREFIX) {
            &mut rt
        } else if k.starts_with(RADIO_PREFIX) {
            &mut radio
        } else {
            &mut connection
        };
        to.insert(k, v);
    }
    let rep = i.reported.as_ref();
    InstanceView {
        title: i.title.to_string(),
        root_title: i.root_title.to_string(),
        requester: i.requester.clone(),
        software_url: i.software_url.to_string(),
        software_type: i.software_type.to_string(),
        computer: i.computer.to_string(),
        partition: i.partition.to_string(),
        requested: i.state.as_str(),
        reported: rep.map(|r| r.report.state.as_str()),
        current: rep.is_some_and(|r| r.report.revision == i.revision),
        reported_ms: rep.map(|r| r.at_ms),
        error: rep.and_then(|r| r.report.error.clone()),
        bang: i.bang.clone(),
        promises: rep.map(|r| r.report.promises.clone()).unwrap_or_default(),
        parameters: mask_params(&i.parameters),
        connection,
        rt,
        radio,
    }
}

/// The usage points of the instances in `shown` (`(computer, partition, title)`), one series
/// per instance; CPU seconds become cores (per second measured).
pub fn series(points: &[UsagePoint], shown: &HashSet<(String, String, String)>) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    for p in points {
        let key = (p.computer.clone(), p.partition.clone(), p.instance.clone());
        if !shown.contains(&key) {
            continue;
        }
        let cores = if p.measured_ms > 0 {
            p.cpu_seconds * 1000.0 / p.measured_ms as f64
        } else {
            0.0
        };
        let point = [p.at_ms as f64, cores, p.memory_bytes, p.disk_bytes as f64];
        match out.last_mut() {
            Some(s)
                if s.computer == p.computer
                    && s.partition == p.partition
                    && s.instance == p.instance =>
            {
                s.points.push(point);
            }
            _ => out.push(Series {
                instance: p.instance.clone(),
                computer: p.computer.clone(),
                partition: p.partition.clone(),
                points: vec![point],
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn params(v: Value) -> Params {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn secret_keys_are_recognised_in_any_spelling() {
        for k in [
            "password",
            "admin-password",
            "DB_PASSWD",
            "secret",
            "client.secret",
            "api-token",
            "accessToken",
            "ssh-key",
            "private-key",
            "credentials",
            "session-cookie",
            "Authorization",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in ["url", "title", "ipv6", "port", "dl_earfcn", "tx_gain"] {
            assert!(!is_secret_key(k), "{k}");
        }
        // Every KPI the rt-probe and enb releases publish stays visible (docs/radio.md,
        // examples/rt-probe/README.md).
        let rt = "p50-us p99-us p999-us max-us misses periods miss-ratio policy priority \
                  affinity mlocked promise-ok rounds updated requested-cpus tools-dir";
        let radio = "records cell-up last-utc age-s cells connected-ues connected-ues-max \
                     dl-bitrate-bps ul-bitrate-bps rxtx-delay-min-ms rxtx-delay-max-ms \
                     tti-period-us policy priority cpus mlocked processing-max-us \
                     wakeup-p99-us wakeup-max-us tti-count tti-missed tti-miss-ratio \
                     rx-max-dbfs rx-saturated-samples";
        let kpis = rt
            .split_whitespace()
            .map(|k| format!("{RT_PREFIX}{k}"))
            .chain(
                radio
                    .split_whitespace()
                    .map(|k| format!("{RADIO_PREFIX}{k}")),
            );
        for k in kpis {
            assert!(!is_secret_key(&k), "{k}");
        }
    }

    #[test]
    fn secrets_never_survive_masking() {
        let p = params(json!({
            "url": "http://10.0.0.1:8080/",
            "admin-password": "hunter2",
            "nested": {"api_token": 42, "name": "x", "list": [{"secret": ["a"]}]},
            "_": "{\"cell\": 1, \"password\": \"pw-in-json\"}",
            "db": "postgres://app:pw-in-url@db:5432/x",
            "plain": "{not json",
        }));
        let m = mask_params(&p);
        let text = Value::Object(m.clone()).to_string();
        for secret in ["hunter2", "42", "pw-in-json", "pw-in-url", "\"a\""] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(m["url"], "http://10.0.0.1:8080/");
        assert_eq!(m["admin-password"], MASK);
        assert_eq!(m["nested"]["api_token"], MASK);
        assert_eq!(m["nested"]["name"], "x");
        assert_eq!(m["nested"]["list"][0]["secret"], MASK);
        assert_eq!(m["db"], format!("postgres://app:{MASK}@db:5432/x"));
        assert_eq!(m["plain"], "{not json");
        let inner: Value = serde_json::from_str(m["_"].as_str().expect("string")).expect("json");
        assert_eq!(inner, json!({"cell": 1, "password": MASK}));
    }

    #[test]
    fn urls_without_a_password_are_unchanged() {
        for u in [
            "https://user@host/",
            "https://host/a:b@c",
            "http://[::1]:80/",
            "no url",
        ] {
            assert_eq!(mask_url_password(u), u);
        }
        assert_eq!(
            mask_url_password("https://u:p@h?q=a@b"),
            format!("https://u:{MASK}@h?q=a@b")
        );
    }

    #[test]
    fn instance_view_splits_kpis_and_masks() {
        let i: InstanceInfo = serde_json::from_value(json!({
            "title": "enb", "root_title": "enb", "requester": null,
            "software_url": "/x/software.toml", "software_type": "default",
            "parameters": {"password": "p1", "cpus": 1}, "state": "started",
            "computer": "C1", "partition": "p0",
            "connection": {"url": "http://h/", "rt-p99-us": "42", "kpi-cell-up": "true",
                           "rt-secret": "s"},
            "reported": {"state": "started", "revision": 3, "promises": [
                {"name": "latency", "ok": true, "message": "", "at_ms": 5}], "at_ms": 6},
            "bang": null, "revision": 3, "children": []
        }))
        .expect("instance");
        let v = instance(&i);
        assert_eq!(v.connection, params(json!({"url": "http://h/"})));
        assert_eq!(v.rt, params(json!({"rt-p99-us": "42", "rt-secret": MASK})));
        assert_eq!(v.radio, params(json!({"kpi-cell-up": "true"})));
        assert_eq!(v.parameters["password"], MASK);
        assert_eq!((v.reported, v.current), (Some("started"), true));
        assert_eq!(v.promises.len(), 1);
        let json = serde_json::to_string(&v).expect("json");
        assert!(!json.contains("p1") && !json.contains("\"s\""), "{json}");
    }

    #[test]
    fn series_keep_shown_instances_only() {
        let pt = |inst: &str, at: u64| UsagePoint {
            computer: "C1".into(),
            partition: "p0".into(),
            instance: inst.into(),
            at_ms: at,
            cpu_seconds: 30.0,
            memory_bytes: 10.0,
            disk_bytes: 7,
            measured_ms: 60_000,
        };
        let pts = [pt("a", 0), pt("a", 60_000), pt("b", 0)];
        let shown: HashSet<_> = [("C1".to_owned(), "p0".to_owned(), "a".to_owned())].into();
        let s = series(&pts, &shown);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].instance, "a");
        assert_eq!(
            s[0].points,
            vec![[0.0, 0.5, 10.0, 7.0], [60_000.0, 0.5, 10.0, 7.0]]
        );
    }
}
