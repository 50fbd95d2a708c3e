//! Helpers for the end-to-end tests in `tests/tests/`: locate the workspace binaries, start real
//! master and node processes on loopback (port 0), and wait for conditions through the API.
//!
//! Nothing here fakes a component: every test drives the real `slapos-master` and `slapos-node`
//! binaries over real sockets. Processes are killed when their handle drops, so a failing test
//! leaves nothing running.

pub mod boards;
pub mod loopfs;
pub mod netns;
pub mod tenant;
pub mod tls;
pub mod users;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use slapos_client::Client;
use slapos_proto::{
    ComputerId, InstanceRequest, InstanceTitle, Params, SoftwareType, SoftwareUrl, SupplyRequest,
    SupplyState,
};

// Shared with every crate's tests: binaries (never built from a test: run
// `cargo build --workspace --bins` first, as scripts/test.sh does), waits, skip gates, ports.
pub use slapos_test_support::bins::{bin, bin_dir};
pub use slapos_test_support::gate::{is_root, privileged};
pub use slapos_test_support::ports::free_port_block;
pub use slapos_test_support::wait::wait_for;

/// A child process whose output lines are collected, stopped (SIGTERM, then SIGKILL) on drop.
pub struct Proc {
    child: Option<Child>,
    lines: Arc<Mutex<Vec<String>>>,
    name: String,
}

impl Proc {
    /// Spawn `cmd` with stdout and stderr collected line by line.
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let lines = lines.clone();
            let echo = std::env::var_os("SLAPOS_TEST_ECHO").is_some();
            let tag = name.to_owned();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if echo {
                        eprintln!("[{tag}] {line}");
                    }
                    lines.lock().expect("lines lock").push(line);
                }
            });
        }
        Proc {
            child: Some(child),
            lines,
            name: name.to_owned(),
        }
    }

    /// Every line printed so far.
    pub fn output(&self) -> Vec<String> {
        self.lines.lock().expect("lines lock").clone()
    }

    /// Wait for a line containing `needle`; returns that line.
    pub fn wait_line(&self, needle: &str, timeout: Duration) -> String {
        wait_for(
            &format!("{} to print {needle:?}", self.name),
            timeout,
            || self.output().into_iter().find(|l| l.contains(needle)),
        )
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// SIGTERM, then wait (SIGKILL after 10 s).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGKILL at once (a crash).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Proc {
    /// SIGTERM first: a node or standalone box killed with SIGKILL would orphan its services.
    fn drop(&mut self) {
        self.stop();
    }
}

/// Extract `http://host:port` (or `https://…`) from a line such as
/// `listening on http://127.0.0.1:41234`.
pub fn url_in(line: &str) -> Option<String> {
    let start = line.find("http://").or_else(|| line.find("https://"))?;
    let url: String = line[start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    Some(url.trim_end_matches('/').to_owned())
}

/// A real `slapos-master serve` on a loopback port.
pub struct Master {
    /// The process.
    pub proc: Proc,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The database file.
    pub db: PathBuf,
}

impl Master {
    /// Start on a free port (port 0) with the database at `db`.
    pub fn start(db: &Path) -> Master {
        Self::start_on(db, "127.0.0.1:0")
    }

    /// Start listening on `listen` (to come back on the same port after a restart).
    pub fn start_on(db: &Path, listen: &str) -> Master {
        let mut cmd = Command::new(bin("slapos-master"));
        cmd.args(["serve", "--listen", listen, "--db"]).arg(db);
        let proc = Proc::spawn("master", cmd);
        let line = proc.wait_line("listening on http://", Duration::from_secs(30));
        let url = url_in(&line).expect("url in the listening line");
        Master {
            proc,
            url,
            db: db.to_path_buf(),
        }
    }

    /// `127.0.0.1:PORT` the master listens on.
    pub fn addr(&self) -> String {
        self.url.trim_start_matches("http://").to_owned()
    }

    /// A client of this master.
    pub fn client(&self) -> Client {
        Client::new(&self.url).expect("client")
    }
}

/// A real `slapos-node run` process.
pub struct Node {
    /// The process (`None` while stopped).
    pub proc: Option<Proc>,
    /// Its config file.
    pub config: PathBuf,
    /// `instance_root`: partition directories are `instance_root/slappartN`.
    pub instance_root: PathBuf,
    /// The computer id it registers as.
    pub computer: String,
    /// First port of its `[ports]` block (10 per partition).
    pub ports: u16,
}

/// The node settings every end-to-end node shares: fast polls, backoffs and promise checks,
/// `isolation = "none"`; in this order, before `[ports]`.
const NODE_DEFAULTS: &[(&str, &str)] = &[
    ("software_root", "\"software\""),
    ("instance_root", "\"instance\""),
    ("poll_interval", "2"),
    ("long_poll", "20"),
    ("restart_backoff_min", "0.2"),
    ("restart_backoff_max", "2"),
    ("stop_timeout", "5"),
    ("promise_interval", "2"),
    ("install_retry", "2"),
    ("max_instance_passes", "4"),
    ("isolation", "\"none\""),
];

/// The text of a node config: `master_url`, `computer_id`, `partitions`, the shared settings
/// and `[ports] base = ports, per_partition = 10`, with `extra` merged in.
///
/// `extra` is TOML. A top-level `key = value` line replaces the line of the same key
/// (`isolation = "users"`, `poll_interval = 1`), any other top-level line is added; tables
/// (`[network]` …) go after `[ports]`.
pub fn node_config(
    master_url: &str,
    computer: &str,
    partitions: u16,
    ports: u16,
    extra: &str,
) -> String {
    let mut lines: Vec<(String, String)> = [
        ("master_url", format!("\"{master_url}\"")),
        ("computer_id", format!("\"{computer}\"")),
        ("partitions", partitions.to_string()),
    ]
    .into_iter()
    .chain(NODE_DEFAULTS.iter().map(|&(k, v)| (k, v.to_owned())))
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut tables = String::new();
    for line in extra.lines() {
        if !tables.is_empty() || line.trim_start().starts_with('[') {
            tables.push_str(line);
            tables.push('\n');
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            assert!(line.trim().is_empty(), "extra node config line {line:?}");
            continue;
        };
        let (key, value) = (key.trim().to_owned(), value.trim().to_owned());
        match lines.iter_mut().find(|(k, _)| *k == key) {
            Some(kv) => kv.1 = value,
            None => lines.push((key, value)),
        }
    }
    let mut text: String = lines.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
    text.push_str(&format!(
        "[ports]\nbase = {ports}\nper_partition = 10\n{tables}"
    ));
    text
}

impl Node {
    /// Write a config under `dir` for `partitions` partitions and start the node.
    pub fn start(dir: &Path, master_url: &str, computer: &str, partitions: u16) -> Node {
        Self::start_with(dir, master_url, computer, partitions, "")
    }

    /// [`Node::start`] with `extra` config (merged as [`node_config`] says).
    pub fn start_with(
        dir: &Path,
        master_url: &str,
        computer: &str,
        partitions: u16,
        extra: &str,
    ) -> Node {
        let mut node = Self::configure(dir, master_url, computer, partitions, extra);
        node.restart();
        node
    }

    /// Write the config (`dir/node.toml`, [`node_config`] on a free block of ports) without
    /// starting the node (to enroll it first, or to run it elsewhere).
    pub fn configure(
        dir: &Path,
        master_url: &str,
        computer: &str,
        partitions: u16,
        extra: &str,
    ) -> Node {
        std::fs::create_dir_all(dir).expect("node dir");
        let ports = free_port_block(partitions * 10);
        let config = dir.join("node.toml");
        let text = node_config(master_url, computer, partitions, ports, extra);
        std::fs::write(&config, text).expect("write node config");
        Node {
            proc: None,
            config,
            instance_root: dir.join("instance"),
            computer: computer.to_owned(),
            ports,
        }
    }

    /// `slapos-node ARGS --config CONFIG`, to run or spawn.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("slapos-node"));
        cmd.args(args).arg("--config").arg(&self.config);
        cmd
    }

    /// (Re)start the process with the same config.
    pub fn restart(&mut self) {
        let cmd = self.command(&["run"]);
        self.proc = Some(Proc::spawn(&format!("node {}", self.computer), cmd));
    }

    /// Stop with SIGTERM (services are stopped by the node).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop();
        }
    }

    /// Path of a partition directory.
    pub fn partition_dir(&self, partition: &str) -> PathBuf {
        self.instance_root.join(partition)
    }
}

/// A finished command's status, stdout and stderr, for an assertion message.
pub fn output_text(o: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The usage outbox depth a node last wrote to its metrics file (`usage_metrics_file`).
pub fn usage_outbox_depth(metrics: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(metrics).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("slapos_node_usage_outbox_samples "))?
        .trim()
        .parse()
        .ok()
}

/// The repository root (examples live in `examples/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// GET `url` and return the body, `None` when it does not answer 200.
pub fn http_get(url: &str) -> Option<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(3)))
        .build()
        .into();
    let mut resp = agent.get(url).call().ok()?;
    if resp.status() != 200 {
        return None;
    }
    resp.body_mut().read_to_string().ok()
}

/// `examples/<name>/software.toml` as a release URL.
pub fn example_release(name: &str) -> SoftwareUrl {
    let path = repo_root()
        .join("examples")
        .join(name)
        .join("software.toml");
    SoftwareUrl::parse(path.to_string_lossy().into_owned()).expect("release url")
}

/// SHA-256 of `data`, lowercase hex (release manifests).
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// A JSON object as instance parameters (anything else: none).
pub fn params(v: serde_json::Value) -> Params {
    v.as_object().cloned().unwrap_or_default()
}

/// Supply `url` to `computer` (state available); panics when the master refuses.
pub fn supply(c: &Client, computer: &str, url: &SoftwareUrl) {
    c.supply(
        &ComputerId::parse(computer).expect("computer id"),
        &SupplyRequest {
            url: url.clone(),
            state: SupplyState::Available,
        },
    )
    .expect("supply");
}

/// A request of `url` titled `title`: default software type, no SLA, state left as it is (set
/// other fields with `InstanceRequest { sla, ..instance_request(…) }`).
pub fn instance_request(title: &str, url: &SoftwareUrl, parameters: Params) -> InstanceRequest {
    InstanceRequest {
        title: InstanceTitle::parse(title).expect("title"),
        software_url: url.clone(),
        software_type: SoftwareType::default(),
        parameters,
        sla: Default::default(),
        state: None,
        shared: false,
    }
}

/// The connection parameter `key` instance `title` published, `None` until then (or when the
/// master does not answer).
pub fn connection(c: &Client, title: &str, key: &str) -> Option<String> {
    let i = c.instance(&InstanceTitle::parse(title).ok()?, None).ok()?;
    Some(i.connection.get(key)?.as_str()?.to_owned())
}
