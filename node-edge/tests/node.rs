//! A whole node (current-thread runtime) against the fake master: request → installed →
//! running → connection parameters → parameter change → stop → start → destroy; restart while
//! the master is down; broken releases (a bad hash, a URL the node does not fetch) and profiles
//! that must not poison other partitions.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{FakeMaster, assignment, until};
use node_edge::Config;
use node_edge::fetch::sha256_hex;
use serde_json::json;
use slapos_proto::{ComputerId, InstallState, InstanceState};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const COMPUTER: &str = "COMP-T";

fn config(master: &FakeMaster, dir: &Path, partitions: u32) -> Config {
    let mut c = Config::new(
        master.url.clone(),
        ComputerId::parse(COMPUTER).unwrap(),
        partitions,
        dir.join("soft"),
        dir.join("inst"),
    );
    c.state_dir = Some(dir.join("state"));
    // These tests exercise the refusing default, also when run as root.
    c.rt = node_edge::RtMode::Off;
    // Partition users are tested by tests/tests/isolation.rs (which removes its users); here a
    // root run must not create `slapuserN` accounts on the machine.
    c.isolation = node_edge::IsolationMode::None;
    c.poll_interval = Duration::from_secs(1);
    c.long_poll = Duration::from_secs(5);
    c.restart_backoff_min = Duration::from_millis(100);
    c.restart_backoff_max = Duration::from_secs(1);
    c.stop_timeout = Duration::from_secs(5);
    c.max_instance_passes = 4;
    c.ports.per_partition = 5;
    c.ports.base = common::free_block(5 * partitions as u16);
    c
}

struct Running {
    task: JoinHandle<Result<(), node_edge::NodeError>>,
    stop: oneshot::Sender<()>,
}

fn start(cfg: Config) -> Running {
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(node_edge::run(cfg, async move {
        let _ = rx.await;
    }));
    Running { task, stop }
}

impl Running {
    async fn shutdown(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

async fn report_with(
    m: &FakeMaster,
    p: &str,
    secs: u64,
    what: &str,
    f: impl Fn(&slapos_proto::PartitionReport) -> bool,
) -> slapos_proto::PartitionReport {
    until(secs, what, || m.last_report(p).filter(|r| f(r))).await
}

async fn get(url: String) -> Option<String> {
    tokio::task::spawn_blocking(move || common::http_get(&url))
        .await
        .unwrap()
}

#[tokio::test]
async fn hello_web_lifecycle() {
    if !common::have_python() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let m = FakeMaster::start(COMPUTER, 2);
    let cfg = config(&m, d.path(), 2);
    let part0 = cfg.instance_root.join("slappart0");
    let node = start(cfg);

    let reg = until(10, "registration", || {
        m.with(|s| s.registrations.first().cloned())
    })
    .await;
    assert_eq!(reg.partitions.len(), 2);

    let sr = common::example("hello-web");
    // Quotes and markup in a parameter: the page escapes them, the manifest stays valid TOML.
    m.assign(
        0,
        assignment("web", &sr, json!({"title": "Edge \"One\" <b>"})),
    );
    until(60, "hello-web available", || {
        m.last_software(&sr)
            .filter(|r| r.state == InstallState::Available)
    })
    .await;
    let url = until(30, "connection url", || {
        m.with(|s| {
            s.connections
                .get("slappart0")
                .and_then(|c| c["url"].as_str().map(str::to_owned))
        })
    })
    .await;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let r = report_with(&m, "slappart0", 30, "started with its promise ok", |r| {
        r.state == InstanceState::Started
            && r.revision == 1
            && r.promises.iter().all(|p| p.ok)
            && !r.promises.is_empty()
    })
    .await;
    assert_eq!(r.promises[0].name, "web-answers");
    let page = get(url.clone()).await.unwrap();
    assert!(
        page.contains("<h1>Edge &quot;One&quot; &lt;b&gt;</h1>"),
        "{page}"
    );
    assert_eq!(
        m.with(|s| s.connections["slappart0"]["title"].clone()),
        "Edge \"One\" <b>"
    );

    // Parameter change: the page is re-rendered; the service command is unchanged, so it keeps
    // running (one start in its log).
    m.change(0, |a| {
        a.parameters.insert("title".into(), "Edge Two".into());
    });
    report_with(&m, "slappart0", 30, "revision 2", |r| r.revision == 2).await;
    let page = get(url.clone()).await.unwrap();
    assert!(page.contains("<h1>Edge Two</h1>"), "{page}");
    let log = std::fs::read_to_string(part0.join("var/log/web.log")).unwrap();
    assert_eq!(log.matches("[node] started").count(), 1, "{log}");

    m.change(0, |a| a.state = InstanceState::Stopped);
    let r = report_with(&m, "slappart0", 30, "stopped", |r| {
        r.state == InstanceState::Stopped
    })
    .await;
    assert_eq!(r.revision, 3);
    assert!(
        get(url.clone()).await.is_none(),
        "still answering after stop"
    );

    m.change(0, |a| a.state = InstanceState::Started);
    report_with(&m, "slappart0", 30, "started again", |r| {
        r.state == InstanceState::Started && r.revision == 4
    })
    .await;
    until(30, "answers again", || {
        common::http_get(&url).filter(|p| p.contains("Edge Two"))
    })
    .await;

    m.change(0, |a| a.state = InstanceState::Destroyed);
    let r = report_with(&m, "slappart0", 30, "destroyed", |r| {
        r.state == InstanceState::Destroyed
    })
    .await;
    assert_eq!(r.revision, 5);
    assert!(
        get(url.clone()).await.is_none(),
        "still answering after destroy"
    );
    let left: Vec<String> = std::fs::read_dir(&part0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, [".slapos-resource"], "partition not wiped");
    // The master frees it and the release is removed; the other partition was never touched.
    m.update(|d| {
        d.partitions[0].instance = None;
        d.software[0].state = slapos_proto::SupplyState::Destroyed;
    });
    until(30, "release removed", || {
        m.last_software(&sr)
            .filter(|r| r.state == InstallState::Destroyed)
    })
    .await;
    let hash = slapos_proto::SoftwareUrl::parse(sr.clone()).unwrap().hash();
    assert!(!d.path().join("soft").join(hash).exists());
    assert!(m.last_report("slappart1").is_none());
    node.shutdown().await;
}

#[tokio::test]
async fn node_restart_while_master_is_down_brings_services_back_from_the_cache() {
    let d = tempfile::tempdir().unwrap();
    let m = FakeMaster::start(COMPUTER, 1);
    let cfg = config(&m, d.path(), 1);
    let heartbeat = cfg.instance_root.join("slappart0/var/heartbeat");
    let node = start(cfg.clone());
    m.assign(
        0,
        assignment("worker", &common::example("flaky"), json!({})),
    );
    report_with(&m, "slappart0", 30, "started and healthy", |r| {
        r.state == InstanceState::Started && r.promises.iter().any(|p| p.ok)
    })
    .await;
    until(10, "heartbeat", || heartbeat.exists().then_some(())).await;

    // A second node on the same directories is refused.
    let err = node_edge::run(cfg.clone(), async {}).await.unwrap_err();
    assert!(err.to_string().contains("another node"), "{err}");

    // Clean shutdown stops the service (its TERM trap removes the heartbeat).
    node.shutdown().await;
    assert!(
        !heartbeat.exists(),
        "service still running after node shutdown"
    );

    m.set_down(true);
    let reports_before = m.with(|s| s.reports.len());
    let node = start(cfg);
    until(
        30,
        "service back from the cache while the master is down",
        || heartbeat.exists().then_some(()),
    )
    .await;
    assert_eq!(m.with(|s| s.reports.len()), reports_before);

    // The master comes back: the pending report is delivered.
    m.set_down(false);
    until(30, "report delivered after the master returned", || {
        m.with(|s| (s.reports.len() > reports_before).then_some(()))
    })
    .await;
    node.shutdown().await;
}

/// A release named `name` under `dir` with `profile`.
fn release(dir: &Path, name: &str, profile: &str) -> String {
    common::write_release(&dir.join(name), profile)
}

fn copy_dir(from: &Path, to: &Path) -> PathBuf {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
    to.join("software.toml")
}

#[tokio::test]
async fn failures_stay_in_their_partition() {
    let d = tempfile::tempdir().unwrap();
    let srs = d.path().join("releases");
    let m = FakeMaster::start(COMPUTER, 7);
    let cfg = config(&m, d.path(), 7);
    let node = start(cfg.clone());

    // 0: a release with a bad hash.
    let flaky = Path::new(&common::example("flaky"))
        .parent()
        .unwrap()
        .to_path_buf();
    let bad = copy_dir(&flaky, &srs.join("bad-hash"));
    let good_sha = sha256_hex(&std::fs::read(flaky.join("flaky.sh")).unwrap());
    let text = std::fs::read_to_string(&bad)
        .unwrap()
        .replace(&good_sha, &"f".repeat(64));
    std::fs::write(&bad, text).unwrap();
    let bad = bad.display().to_string();
    m.assign(0, assignment("bad-hash", &bad, json!({})));
    // 1: the good flaky release, unhealthy on request.
    let flaky_sr = common::example("flaky");
    // A string, as `slapos-master request --param healthy=false` sends it.
    m.assign(
        1,
        assignment("flaky", &flaky_sr, json!({"healthy": "false"})),
    );
    // 2: a profile with a typo.
    let typo = release(
        &srs,
        "typo",
        "[[service]]\nname = \"s\"\ncommand = [\"sleep\", \"{{ parameters.missing }}\"]\n",
    );
    m.assign(2, assignment("typo", &typo, json!({})));
    // 3: a profile asking for SCHED_FIFO on a node without a resource manager.
    let fifo = release(
        &srs,
        "fifo",
        "[[service]]\nname = \"s\"\ncommand = [\"sleep\", \"60\"]\n[resources]\npolicy = \"fifo\"\npriority = 80\n",
    );
    m.assign(3, assignment("fifo", &fifo, json!({})));
    // 4: child requests, one of which the master refuses.
    let parent = release(
        &srs,
        "parent",
        "[[request]]\ntitle = \"child-a\"\nsoftware_url = \"/srv/sr/child.toml\"\nparameters = { from = {{ partition.id | toml }} }\n[[request]]\ntitle = \"child-b\"\nsoftware_url = \"/refused\"\n",
    );
    m.assign(4, assignment("parent", &parent, json!({})));
    // 5: a crash-looping service still reports started; its promise says what is wrong.
    m.assign(5, assignment("crasher", &flaky_sr, json!({"crash": true})));
    // 6: a release URL the master takes (a SLAP client's `bar`) but the node does not fetch.
    m.assign(6, assignment("unfetchable", "bar", json!({})));

    let sw = until(30, "bad-hash install error", || {
        m.last_software(&bad)
            .filter(|r| r.state == InstallState::Error)
    })
    .await;
    assert!(sw.message.unwrap().contains("sha256 mismatch"));
    let r = report_with(&m, "slappart0", 30, "partition 0 error", |r| {
        r.error.is_some()
    })
    .await;
    assert!(r.error.unwrap().contains("is not installed"));
    assert!(
        !cfg.software_root
            .join(
                slapos_proto::SoftwareUrl::parse(bad.clone())
                    .unwrap()
                    .hash()
            )
            .exists()
    );

    let sw = until(30, "unfetchable URL install error", || {
        m.last_software("bar")
            .filter(|r| r.state == InstallState::Error)
    })
    .await;
    let msg = sw.message.unwrap();
    assert!(
        msg.contains("`bar`") && msg.contains(slapos_proto::FETCHABLE_URL_FORMS),
        "{msg}"
    );
    let r = report_with(&m, "slappart6", 30, "partition 6 error", |r| {
        r.error.is_some()
    })
    .await;
    assert!(r.error.unwrap().contains("is not installed"));

    let r = report_with(&m, "slappart1", 30, "flaky started, promise failing", |r| {
        r.state == InstanceState::Started && r.promises.iter().any(|p| !p.ok)
    })
    .await;
    assert!(
        r.promises[0].message.contains("unhealthy on request"),
        "{r:?}"
    );
    assert_eq!(
        m.with(|s| s.connections["slappart1"]["healthy"].clone()),
        "false"
    );

    let r = report_with(&m, "slappart2", 30, "typo error", |r| r.error.is_some()).await;
    let e = r.error.unwrap();
    assert!(
        e.contains("instance.toml.in:3") && e.contains("undefined"),
        "{e}"
    );

    let r = report_with(&m, "slappart3", 30, "fifo refused", |r| r.error.is_some()).await;
    assert!(r.error.unwrap().contains("resource manager"));
    assert!(
        !cfg.instance_root.join("slappart3/var/log/s.log").exists(),
        "service started without its resources"
    );

    let r = report_with(&m, "slappart4", 30, "parent reported", |r| {
        r.error.is_some()
    })
    .await;
    assert!(r.error.unwrap().contains("child-b"));
    let (who, req) = m
        .with(|s| {
            s.requests
                .iter()
                .find(|(_, r)| r.title.as_str() == "child-a")
                .cloned()
        })
        .unwrap();
    assert_eq!(who.as_deref(), Some("COMP-T/slappart4"));
    assert_eq!(req.parameters["from"], "slappart4");

    let r = report_with(&m, "slappart5", 30, "crasher reported", |r| {
        r.state == InstanceState::Started && r.promises.iter().any(|p| !p.ok)
    })
    .await;
    assert!(r.promises[0].message.contains("no heartbeat"), "{r:?}");
    until(30, "crasher restarted with backoff", || {
        let log =
            std::fs::read_to_string(cfg.instance_root.join("slappart5/var/log/worker.log")).ok()?;
        (log.matches("crashing on purpose").count() >= 3).then_some(())
    })
    .await;

    // Fix partition 1: the promise recovers and a new report says so.
    m.change(1, |a| {
        a.parameters.insert("healthy".into(), true.into());
    });
    let r = report_with(&m, "slappart1", 30, "flaky healthy", |r| {
        r.revision == 2 && !r.promises.is_empty() && r.promises.iter().all(|p| p.ok)
    })
    .await;
    assert_eq!(r.state, InstanceState::Started);
    node.shutdown().await;
}

/// A fake resource manager: records calls, adds a label and an environment variable.
#[derive(Default)]
struct FakeResources {
    calls: std::sync::Mutex<Vec<String>>,
}

impl node_edge::host::resources::Resources for FakeResources {
    fn labels(&self) -> std::collections::BTreeMap<String, String> {
        [("rt_cpus".to_owned(), "1".to_owned())].into()
    }

    fn apply(
        &self,
        partition: &slapos_proto::PartitionId,
        spec: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<node_edge::host::resources::ProcessSetup, node_edge::host::resources::ResourceError>
    {
        self.calls.lock().unwrap().push(format!(
            "apply {partition} {}",
            serde_json::Value::Object(spec.clone())
        ));
        Ok(node_edge::host::resources::ProcessSetup {
            hook: Some(std::sync::Arc::new(|| Ok(()))),
            env: [("SLAPOS_RT_CPUS".to_owned(), "1".to_owned())].into(),
        })
    }

    fn release(
        &self,
        partition: &slapos_proto::PartitionId,
    ) -> Result<(), node_edge::host::resources::ResourceError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("release {partition}"));
        Ok(())
    }
}

#[tokio::test]
async fn a_plugged_resource_manager_gets_the_profile() {
    let d = tempfile::tempdir().unwrap();
    let m = FakeMaster::start(COMPUTER, 1);
    let cfg = config(&m, d.path(), 1);
    let rt = std::sync::Arc::new(FakeResources::default());
    let seams = node_edge::Seams {
        resources: rt.clone(),
        ..node_edge::Seams::default()
    };
    let (stop, rx) = oneshot::channel::<()>();
    let node = tokio::spawn(node_edge::run_with(cfg.clone(), seams, async move {
        let _ = rx.await;
    }));
    let reg = until(10, "registration", || {
        m.with(|s| s.registrations.first().cloned())
    })
    .await;
    assert_eq!(
        reg.labels[&slapos_proto::LabelKey::parse("rt_cpus").unwrap()],
        "1"
    );

    let sr = release(
        &d.path().join("releases"),
        "rt",
        "[[service]]\nname = \"s\"\ncommand = [\"sh\", \"-c\", \"echo $SLAPOS_RT_CPUS > rt.txt; exec sleep 60\"]\n[resources]\ncpus = 1\npolicy = \"fifo\"\npriority = 80\n",
    );
    m.assign(0, assignment("rt", &sr, json!({})));
    report_with(&m, "slappart0", 30, "started", |r| {
        r.state == InstanceState::Started
    })
    .await;
    let rt_txt = cfg.instance_root.join("slappart0/rt.txt");
    let cpus = until(10, "service env", || std::fs::read_to_string(&rt_txt).ok()).await;
    assert_eq!(cpus.trim(), "1");
    m.change(0, |a| a.state = InstanceState::Stopped);
    report_with(&m, "slappart0", 30, "stopped", |r| {
        r.state == InstanceState::Stopped
    })
    .await;
    let calls = rt.calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        [
            r#"apply slappart0 {"cpus":1,"policy":"fifo","priority":80}"#,
            "release slappart0"
        ]
    );
    let _ = stop.send(());
    node.await.unwrap().unwrap();
}
