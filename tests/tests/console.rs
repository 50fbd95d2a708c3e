//! The web console (issue 14) in a real browser: a running `slapos-master standalone` with the
//! converged hello-web example, loaded by headless Chromium (`scripts/deps/chromium.sh`); and
//! the console over mTLS, refused without a client certificate.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use slapos_proto::{ConnectionPublish, InstanceTitle, UsageBatch, UsageSample};
use slapos_test_support::gate;
use slapos_tests::tls::TlsMaster;
use slapos_tests::{Client, Proc, bin_dir, http_get, url_in, wait_for};

const LONG: Duration = Duration::from_secs(90);
/// What the console must never show: published under a secret-looking key.
const SECRET: &str = "hunter2-do-not-show";

/// Headless Chromium with the flags this closed network needs (no background connections,
/// which are refused here and slow every run), its profile in `profile`; killed after 60 s.
fn chromium(profile: &Path, args: &[&str]) -> std::process::Output {
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait for chromium").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("chromium output");
    assert!(
        out.status.success(),
        "chromium {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The console's DOM once its script ran (the body is marked `data-loaded` after a poll drew
/// the page; a failed poll shows `update failed`).
fn dump_dom(profile: &Path, url: &str) -> String {
    let out = chromium(profile, &["--dump-dom", url]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

/// Standalone + hello-web converged; a secret and KPIs published beside its URL, usage
/// posted; Chromium shows the computer, the instance, its state, its URL, the KPIs and a usage
/// chart, and never the secret; a screenshot of the page is saved next to the binaries.
#[test]
fn console_shows_the_box_in_a_real_browser() {
    const TEST: &str = "console_shows_the_box_in_a_real_browser";
    if !gate::tool(TEST, "chromium") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(slapos_tests::bin("slapos-master"));
    cmd.args(["standalone", "--listen", "127.0.0.1:0", "--partitions", "2"])
        .args(["--isolation", "none", "--example", "hello-web", "--dir"])
        .arg(tmp.path().join("box"));
    let sa = Proc::spawn("standalone", cmd);
    let master = url_in(&sa.wait_line("listening on http://", LONG)).expect("master url");
    let line = sa.wait_line("web console: http://", LONG);
    assert!(line.trim().ends_with(&format!("{master}/")), "{line}");
    let console = format!("{master}/");
    let service = url_in(&sa.wait_line("open http://", LONG)).expect("service url");
    wait_for("example page", LONG, || http_get(&service));

    // As the local operator: what rt-probe and enb partitions publish, plus a secret.
    let client = Client::new(&master).expect("client");
    let title = InstanceTitle::parse("hello-web").expect("title");
    let info = client.instance(&title, None).expect("instance");
    let mut conn = info.connection.clone();
    for (k, v) in [
        ("admin-password", SECRET),
        ("rt-p99-us", "87"),
        ("rt-policy", "fifo"),
        ("kpi-dl-bitrate-bps", "1500000"),
    ] {
        conn.insert(k.to_owned(), Value::String(v.to_owned()));
    }
    client
        .publish_connection(
            &info.computer,
            &info.partition,
            &ConnectionPublish {
                parameters: conn,
                shared: Default::default(),
            },
        )
        .expect("publish connection");
    let now = now_ms();
    let samples = (1..=5u64)
        .map(|k| UsageSample {
            partition: info.partition.clone(),
            instance: Some(title.clone()),
            start_ms: now - (6 - k + 1) * 60_000,
            end_ms: now - (6 - k) * 60_000,
            cpu_ns: k * 6_000_000_000,
            memory_bytes: (k * 20) << 20,
            memory_peak_bytes: 200 << 20,
            io_read_bytes: 0,
            io_write_bytes: 0,
            disk_bytes: 1 << 20,
            tasks: 3,
            folded: 1,
        })
        .collect();
    client
        .post_usage(&info.computer, &UsageBatch { samples })
        .expect("post usage");

    let profile = tmp.path().join("chromium");
    let dom = dump_dom(&profile, &console);
    assert!(
        dom.contains("data-loaded=\"true\""),
        "the page never drew its data:\n{dom}"
    );
    let computer = info.computer.to_string();
    for needle in [
        format!("data-computer=\"{computer}\""),
        "data-instance=\"hello-web\"".to_owned(),
        "started".to_owned(),
        service.clone(),
        "rt-p99-us".to_owned(),
        "kpi-dl-bitrate-bps".to_owned(),
        "data-usage=\"hello-web\"".to_owned(),
        "<svg".to_owned(),
        "admin-password".to_owned(),
    ] {
        assert!(
            dom.contains(&needle),
            "{needle:?} not in the console:\n{dom}"
        );
    }
    assert!(!dom.contains(SECRET), "the secret reached the page:\n{dom}");
    // Not in the data the page reads either.
    let raw = http_get(&format!("{master}/console/api/view")).expect("view");
    assert!(
        raw.contains("admin-password") && !raw.contains(SECRET),
        "{raw}"
    );

    let shot = screenshot_path();
    let _ = std::fs::remove_file(&shot);
    chromium(
        &profile,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,900",
            &console,
        ],
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.len() > 10_000 && png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a screenshot ({} bytes)",
        shot.display(),
        png.len()
    );
    eprintln!("console screenshot: {}", shot.display());
}

/// `target/<profile>/console.png`: kept after the test to look at.
fn screenshot_path() -> PathBuf {
    bin_dir().join("console.png")
}

/// Over `--tls-dir`: no client certificate, no console (page or data); a user sees the page
/// and only what it may read (no usage); an admin sees the usage charts' data.
#[test]
fn console_over_tls_needs_a_certificate() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let m = TlsMaster::start(
        tmp.path(),
        "127.0.0.1:0",
        &[("root", true), ("alice", false)],
        &[],
    );
    let base = format!("https://127.0.0.1:{}", m.port);
    let ca = m.ca();
    let read = |name: &str, ext: &str| {
        std::fs::read_to_string(m.creds.join(format!("{name}.{ext}"))).expect("credential")
    };
    let get = |who: Option<&str>, path: &str| -> (u16, String) {
        let (cert, key) = who.map_or((String::new(), String::new()), |n| {
            (read(n, "pem"), read(n, "key"))
        });
        let id = who.map(|_| (cert.as_str(), key.as_str()));
        let (base, agent) =
            slapos_client::tls_agent(&base, &ca, id, slapos_client::DEFAULT_TIMEOUT)
                .expect("agent");
        let mut res = agent
            .get(format!("{base}{path}"))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let body = res.body_mut().read_to_string().unwrap_or_default();
        (res.status().as_u16(), body)
    };
    for path in ["/", "/console/api/view", "/console/console.js"] {
        let (status, body) = get(None, path);
        assert_eq!(status, 403, "{path} without a certificate: {body}");
        assert!(!body.contains("console"), "{path}: {body}");
    }
    let (status, page) = get(Some("alice"), "/");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("slapos-edge console"), "{page}");
    let (status, view) = get(Some("alice"), "/console/api/view");
    assert_eq!(status, 200, "{view}");
    let view: Value = serde_json::from_str(&view).expect("json view");
    assert_eq!(view["usage"], Value::Null, "a user reads no usage: {view}");
    assert_eq!(view["computers"], json!([]), "{view}");
    let (status, view) = get(Some("root"), "/console/api/view");
    assert_eq!(status, 200, "{view}");
    let view: Value = serde_json::from_str(&view).expect("json view");
    assert!(
        view["usage"]["series"].is_array(),
        "an admin reads usage: {view}"
    );
}

/// On the plain loopback listener the console is the local operator's: another local user
/// (`nobody`) gets the master's 403 for the page and its data, the operator (root) gets them.
#[test]
fn console_on_loopback_is_the_operators() {
    const TEST: &str = "console_on_loopback_is_the_operators";
    if !gate::privileged(TEST) || !gate::tool(TEST, "python3") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let master = slapos_tests::Master::start(&tmp.path().join("master.db"));
    // Python's urllib as `nobody`: prints the status.
    let script = "import sys, urllib.request, urllib.error\n\
                  try:\n    print(urllib.request.urlopen(sys.argv[1], timeout=10).status)\n\
                  except urllib.error.HTTPError as e:\n    print(e.code)\n";
    for path in ["/", "/console/api/view"] {
        let url = format!("{}{path}", master.url);
        let out = Command::new("python3")
            .args(["-c", script, &url])
            .uid(65534)
            .gid(65534)
            .env_remove("HOME")
            .output()
            .expect("python3 as nobody");
        let status = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert_eq!(
            status,
            "403",
            "{path} as nobody: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(http_get(&url).is_some(), "{path} as the operator");
    }
}
