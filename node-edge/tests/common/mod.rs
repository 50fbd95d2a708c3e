//! Test helpers: a tiny in-process fake master (std TcpListener on port 0, one thread per
//! connection, `Connection: close`) and a blocking HTTP GET; condition polling and port blocks
//! come from `slapos-test-support`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use slapos_proto::{
    Assignment, ComputerId, ComputerInfo, ConnectionPublish, DesiredPartition, DesiredSoftware,
    DesiredState, InstanceInfo, InstanceRequest, InstanceState, InstanceTitle, Params, PartitionId,
    PartitionInfo, PartitionReport, RegisterComputer, SoftwareReport, SoftwareType, SoftwareUrl,
    SupplyState,
};

/// What the fake master saw and serves.
#[derive(Debug, Default)]
pub struct State {
    pub desired: Option<DesiredState>,
    pub etag: u64,
    pub down: bool,
    pub registrations: Vec<RegisterComputer>,
    pub software: Vec<SoftwareReport>,
    pub reports: Vec<(String, PartitionReport)>,
    pub connections: BTreeMap<String, Params>,
    pub requests: Vec<(Option<String>, InstanceRequest)>,
    /// Usage samples received.
    pub usage: usize,
}

/// The fake master.
#[derive(Clone)]
pub struct FakeMaster {
    pub url: String,
    pub state: Arc<(Mutex<State>, Condvar)>,
}

impl FakeMaster {
    /// Start on 127.0.0.1:0 serving `computer` with `partitions` free partitions.
    pub fn start(computer: &str, partitions: u32) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let desired = DesiredState {
            computer: ComputerId::parse(computer).unwrap(),
            etag: "1".into(),
            software: vec![],
            partitions: (0..partitions)
                .map(|i| DesiredPartition {
                    id: PartitionId::parse(format!("slappart{i}")).unwrap(),
                    instance: None,
                })
                .collect(),
        };
        let state = Arc::new((
            Mutex::new(State {
                desired: Some(desired),
                etag: 1,
                ..State::default()
            }),
            Condvar::new(),
        ));
        let st = state.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { continue };
                let st = st.clone();
                std::thread::spawn(move || {
                    let _ = handle(s, &st);
                });
            }
        });
        Self { url, state }
    }

    /// Change the desired state (bumps the etag and wakes long polls).
    pub fn update(&self, f: impl FnOnce(&mut DesiredState)) {
        let (m, cv) = &*self.state;
        let mut g = m.lock().unwrap();
        g.etag += 1;
        let etag = g.etag.to_string();
        let d = g.desired.as_mut().unwrap();
        f(d);
        d.etag = etag;
        cv.notify_all();
    }

    /// Make the master answer 503 to everything (unreachable for the node) or come back.
    pub fn set_down(&self, down: bool) {
        let (m, cv) = &*self.state;
        m.lock().unwrap().down = down;
        cv.notify_all();
    }

    /// Read the state.
    pub fn with<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state.0.lock().unwrap())
    }

    /// Last report of a partition.
    pub fn last_report(&self, p: &str) -> Option<PartitionReport> {
        self.with(|s| {
            s.reports
                .iter()
                .rev()
                .find(|(id, _)| id == p)
                .map(|(_, r)| r.clone())
        })
    }

    /// Last install report of a release.
    pub fn last_software(&self, url: &str) -> Option<SoftwareReport> {
        self.with(|s| {
            s.software
                .iter()
                .rev()
                .find(|r| r.url.as_str() == url)
                .cloned()
        })
    }

    /// Supply a release and assign an instance to partition `index`.
    pub fn assign(&self, index: usize, a: Assignment) {
        self.update(|d| {
            if !d.software.iter().any(|s| s.url == a.software_url) {
                d.software.push(DesiredSoftware {
                    url: a.software_url.clone(),
                    state: SupplyState::Available,
                });
            }
            d.partitions[index].instance = Some(a);
        });
    }

    /// Change partition `index`'s assignment in place (bumps its revision).
    pub fn change(&self, index: usize, f: impl FnOnce(&mut Assignment)) {
        self.update(|d| {
            let a = d.partitions[index].instance.as_mut().unwrap();
            f(a);
            a.revision += 1;
        });
    }
}

fn respond(s: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn respond_down(s: &mut TcpStream) -> std::io::Result<()> {
    respond(
        s,
        "503 Service Unavailable",
        r#"{"kind":"internal","error":"down"}"#,
    )
}

fn handle(mut s: TcpStream, st: &(Mutex<State>, Condvar)) -> std::io::Result<()> {
    let mut r = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let target = parts.next().unwrap_or("").to_owned();
    let mut len = 0usize;
    let mut partition_header = None;
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            if k == "content-length" {
                len = v.trim().parse().unwrap_or(0);
            } else if k == slapos_proto::PARTITION_HEADER {
                partition_header = Some(v.trim().to_owned());
            }
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let q: BTreeMap<&str, &str> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();

    let (m, cv) = st;
    let mut g = m.lock().unwrap();
    if g.down {
        drop(g);
        return respond_down(&mut s);
    }
    match (method.as_str(), seg.as_slice()) {
        ("GET", ["v1", "health"]) => {
            drop(g);
            respond(&mut s, "200 OK", r#"{"protocol":1,"version":"fake"}"#)
        }
        ("POST", ["v1", "computers"]) => {
            let reg: RegisterComputer = serde_json::from_slice(&body).unwrap();
            let info = ComputerInfo {
                id: reg.id.clone(),
                labels: reg.labels.clone(),
                partitions: reg
                    .partitions
                    .iter()
                    .map(|p| PartitionInfo {
                        id: p.id.clone(),
                        addresses: p.addresses.clone(),
                        instance: None,
                    })
                    .collect(),
                software: vec![],
                last_seen_ms: None,
            };
            g.registrations.push(reg);
            drop(g);
            respond(&mut s, "200 OK", &serde_json::to_string(&info).unwrap())
        }
        ("GET", ["v1", "computers", _, "desired"]) => {
            let wait = q.get("wait").and_then(|w| w.parse().ok()).unwrap_or(0u64);
            let etag = q.get("etag").map(|e| e.to_string());
            let deadline = std::time::Instant::now() + Duration::from_secs(wait);
            while etag.as_deref() == g.desired.as_ref().map(|d| d.etag.as_str())
                && std::time::Instant::now() < deadline
                && !g.down
            {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                g = cv.wait_timeout(g, left).unwrap().0;
            }
            if g.down {
                drop(g);
                return respond_down(&mut s);
            }
            let d = g.desired.clone().unwrap();
            drop(g);
            if etag.as_deref() == Some(d.etag.as_str()) {
                write!(
                    s,
                    "HTTP/1.1 304 Not Modified\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
            } else {
                respond(&mut s, "200 OK", &serde_json::to_string(&d).unwrap())
            }
        }
        ("POST", ["v1", "computers", _, "software", "report"]) => {
            g.software.push(serde_json::from_slice(&body).unwrap());
            drop(g);
            respond(&mut s, "200 OK", "{}")
        }
        ("POST", ["v1", "computers", _, "partitions", p, "report"]) => {
            g.reports
                .push((p.to_string(), serde_json::from_slice(&body).unwrap()));
            drop(g);
            respond(&mut s, "200 OK", "{}")
        }
        ("POST", ["v1", "computers", _, "partitions", p, "connection"]) => {
            let c: ConnectionPublish = serde_json::from_slice(&body).unwrap();
            g.connections.insert(p.to_string(), c.parameters);
            drop(g);
            respond(&mut s, "200 OK", "{}")
        }
        ("POST", ["v1", "computers", _, "usage"]) => {
            let b: slapos_proto::UsageBatch = serde_json::from_slice(&body).unwrap();
            g.usage += b.samples.len();
            drop(g);
            let ack = slapos_proto::UsageAck {
                stored: b.samples.len() as u32,
                duplicates: 0,
            };
            respond(&mut s, "200 OK", &serde_json::to_string(&ack).unwrap())
        }
        ("POST", ["v1", "instances"]) => {
            let req: InstanceRequest = serde_json::from_slice(&body).unwrap();
            if req.software_url.as_str() == "/refused" {
                drop(g);
                return respond(
                    &mut s,
                    "409 Conflict",
                    r#"{"kind":"no_allocation","error":"no free partition"}"#,
                );
            }
            let info = InstanceInfo {
                title: req.title.clone(),
                root_title: req.title.clone(),
                requester: partition_header.clone(),
                software_url: req.software_url.clone(),
                software_type: req.software_type.clone(),
                parameters: req.parameters.clone(),
                state: req.state.unwrap_or_default(),
                computer: ComputerId::parse("other").unwrap(),
                partition: PartitionId::parse("slappart9").unwrap(),
                connection: Params::new(),
                reported: None,
                bang: None,
                revision: 1,
                children: vec![],
                shared: false,
            };
            g.requests.push((partition_header, req));
            drop(g);
            respond(&mut s, "200 OK", &serde_json::to_string(&info).unwrap())
        }
        _ => {
            drop(g);
            respond(
                &mut s,
                "404 Not Found",
                r#"{"kind":"not_found","error":"no such route"}"#,
            )
        }
    }
}

/// An assignment of `sr` titled `title`.
pub fn assignment(title: &str, sr: &str, params: serde_json::Value) -> Assignment {
    Assignment {
        title: InstanceTitle::parse(title).unwrap(),
        root_title: InstanceTitle::parse(title).unwrap(),
        software_url: SoftwareUrl::parse(sr).unwrap(),
        software_type: SoftwareType::default(),
        parameters: params.as_object().cloned().unwrap_or_default(),
        state: InstanceState::Started,
        revision: 1,
        children: BTreeMap::new(),
        shared: Vec::new(),
    }
}

// Not every test binary that includes this module uses both.
#[allow(unused_imports)]
pub use slapos_test_support::{ports::free_port_block as free_block, wait::until};

/// Blocking HTTP GET of `http://host:port/path`: the body of a 200 answer, else `None`.
pub fn http_get(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let (hostport, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut s = TcpStream::connect(hostport).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {hostport}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200")
        .then(|| body.to_owned())
        .or_else(|| head.starts_with("HTTP/1.1 200").then(|| body.to_owned()))
}

/// Write a release with one artifact, its profile, into `dir`; returns the manifest path.
pub fn write_release(dir: &Path, profile: &str) -> String {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("instance.toml.in"), profile).unwrap();
    std::fs::write(
        dir.join("software.toml"),
        format!(
            "[[artifact]]\nurl = \"instance.toml.in\"\nsha256 = \"{}\"\n[instance]\ndefault = \"instance.toml.in\"\n",
            node_edge::fetch::sha256_hex(profile.as_bytes())
        ),
    )
    .unwrap();
    dir.join("software.toml").display().to_string()
}

/// The repository's `examples/<name>/software.toml`.
pub fn example(name: &str) -> String {
    let p: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
        .join("software.toml");
    std::fs::canonicalize(&p).unwrap().display().to_string()
}

/// True when `python3` can be run (the hello-web example needs it); a skip with a reason
/// otherwise, a failure under `SLAPOS_REQUIRE_TOOLS=1`.
pub fn have_python() -> bool {
    slapos_test_support::gate::tool("hello-web", "python3")
}
