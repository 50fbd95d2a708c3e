//! Serial lines from a socat pty pair, and (as root) an uplink cut with a network namespace.

mod common;

use common::peers::*;
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Socat {
    child: Child,
    a: PathBuf,
    b: PathBuf,
}

impl Socat {
    fn start(dir: &Path) -> Socat {
        let (a, b) = (dir.join("ttyA"), dir.join("ttyB"));
        let child = Command::new("socat")
            .arg(format!("pty,raw,echo=0,link={}", a.display()))
            .arg(format!("pty,raw,echo=0,link={}", b.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn socat");
        wait_for(Duration::from_secs(10), "socat ptys", || {
            (a.exists() && b.exists()).then_some(())
        });
        Socat { child, a, b }
    }
}

impl Drop for Socat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serial_cfg(dir: &Path, tty: &Path, metrics: &str, output: &str) -> String {
    serial_cfg_ack(dir, tty, metrics, output, false)
}

fn serial_cfg_ack(dir: &Path, tty: &Path, metrics: &str, output: &str, ack: bool) -> String {
    format!(
        r#"
node_id = "gw-serial"
[storage]
dir = "{}"
stream = "serial"
batch_window_ms = 5
[metrics]
listen = "{metrics}"
[[inputs]]
type = "serial"
path = "{}"
baud = 115200
format = "json"
max_line = 200
ack = {ack}
{output}
"#,
        dir.join("data").display(),
        tty.display()
    )
}

#[test]
fn serial_lines_from_a_pty_pair_arrive_in_order() {
    if !require_tool("socat") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pty = Socat::start(dir.path());
    let sink = HttpSink::start();
    let out = format!(
        "[output]\ntype = \"http\"\nurl = \"{}\"\nbackoff_base_ms = 20\n",
        sink.url()
    );
    let b = BufferProc::start(
        dir.path(),
        &serial_cfg(dir.path(), &pty.a, "127.0.0.1:0", &out),
    );
    let mut tty = std::fs::OpenOptions::new()
        .write(true)
        .open(&pty.b)
        .unwrap();
    // Wait for the reader: the first line may be written before the device is opened.
    wait_for(Duration::from_secs(10), "serial input reading", || {
        tty.write_all(b"{\"n\":0}\n").unwrap();
        (b.status()["records_in"].as_u64().unwrap_or(0) > 0).then_some(())
    });
    let mut text = String::new();
    for n in 1..=500 {
        text.push_str(&format!("{{\"n\":{n},\"t\":20.{n}}}\r\n"));
        if n == 250 {
            text.push_str(&format!("{{\"n\":\"{}\"}}\n", "x".repeat(300))); // over max_line
            text.push_str("not json\n");
        }
    }
    tty.write_all(text.as_bytes()).unwrap();
    let got = wait_for(Duration::from_secs(30), "500 serial lines", || {
        let ns: Vec<u64> = sink
            .snapshot()
            .iter()
            .filter_map(|d| n_of(&d.payload))
            .collect();
        (ns.iter().filter(|&&n| n > 0).count() >= 500).then_some(ns)
    });
    let ordered: Vec<u64> = got.into_iter().filter(|&n| n > 0).collect();
    assert_eq!(ordered, (1..=500).collect::<Vec<_>>());
    assert_eq!(b.status()["input_invalid"].as_u64(), Some(2));
}

/// `ack = true`: the serial input writes `bad <k>` for refused lines and `ok <n>` once the
/// first `n` lines since the device was opened are durable, back on the same line.
#[test]
fn serial_acknowledgements_come_back_once_durable() {
    if !require_tool("socat") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pty = Socat::start(dir.path());
    let sink = HttpSink::start();
    sink.fail.store(true, std::sync::atomic::Ordering::SeqCst); // durable, not delivered
    let out = format!(
        "[output]\ntype = \"http\"\nurl = \"{}\"\nbackoff_base_ms = 20\n",
        sink.url()
    );
    let b = BufferProc::start(
        dir.path(),
        &serial_cfg_ack(dir.path(), &pty.a, "127.0.0.1:0", &out, true),
    );
    let mut tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&pty.b)
        .unwrap();
    let acks = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    {
        let (acks, mut rd) = (acks.clone(), tty.try_clone().unwrap());
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for l in std::io::BufReader::new(&mut rd).lines() {
                let Ok(l) = l else { return };
                acks.lock().unwrap().push(l);
            }
        });
    }
    let last = |prefix: &str| -> Vec<u64> {
        acks.lock()
            .unwrap()
            .iter()
            .filter_map(|l| l.strip_prefix(prefix)?.trim().parse().ok())
            .collect()
    };
    // The first `ok` tells that the reader has the device open.
    wait_for(Duration::from_secs(10), "a first acknowledgement", || {
        tty.write_all(b"{\"n\":0}\n").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        last("ok ").last().copied()
    });
    std::thread::sleep(Duration::from_millis(200));
    let base = last("ok ").into_iter().max().unwrap_or(0);
    let mut text = String::new();
    for n in 1..=500 {
        text.push_str(&format!("{{\"n\":{n}}}\n"));
        if n == 250 {
            text.push_str("not json\n");
        }
    }
    tty.write_all(text.as_bytes()).unwrap();
    let upto = base + 501;
    wait_for(Duration::from_secs(30), "ok for every line", || {
        (last("ok ").into_iter().max() >= Some(upto)).then_some(())
    });
    assert_eq!(
        last("bad "),
        vec![base + 251],
        "the refused line, by its number"
    );
    let oks = last("ok ");
    assert!(
        oks.windows(2).all(|w| w[0] < w[1]),
        "acks in order: {oks:?}"
    );
    let st = b.status();
    assert!(
        st["records_durable"].as_u64().unwrap_or(0) >= 500,
        "acknowledged means durable: {st}"
    );
    assert_eq!(st["records_delivered"], 0, "acknowledged before delivery");
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("run ip");
    assert!(st.success(), "ip {args:?} failed");
}

struct Netns(String);
impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn uplink_cut_with_a_network_namespace_loses_nothing() {
    if !require_root("a network namespace")
        || !require_tool("socat")
        || !require_tool("mosquitto")
        || !require_tool("ip")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let id = std::process::id() % 100_000;
    let ns = Netns(format!("slapos-edge-test-buf-{id}"));
    let (vh, vn) = (format!("sebh{id}"), format!("sebn{id}"));
    ip(&["netns", "add", &ns.0]);
    ip(&["link", "add", &vh, "type", "veth", "peer", "name", &vn]);
    ip(&["link", "set", &vn, "netns", &ns.0]);
    ip(&["addr", "add", "169.254.213.1/30", "dev", &vh]);
    ip(&["link", "set", &vh, "up"]);
    ip(&[
        "netns",
        "exec",
        &ns.0,
        "ip",
        "addr",
        "add",
        "169.254.213.2/30",
        "dev",
        &vn,
    ]);
    ip(&["netns", "exec", &ns.0, "ip", "link", "set", &vn, "up"]);
    ip(&["netns", "exec", &ns.0, "ip", "link", "set", "lo", "up"]);
    // Upstream broker in the host namespace, reachable over the veth and on loopback.
    let port = free_port();
    let up = Mosquitto::start_on(
        &dir.path().join("up"),
        port,
        &format!("listener {port} 169.254.213.1\n"),
    );
    let sub = Subscriber::start(up.port, "up/#", None);
    sub.wait_subscribed();
    let pty = Socat::start(dir.path());
    let out = format!(
        "[output]\ntype = \"mqtt\"\nhost = \"169.254.213.1\"\nport = {port}\ntopic = \"up/serial\"\nwindow = 16\nkeep_alive_s = 5\nbackoff_base_ms = 50\nbackoff_max_ms = 500\n"
    );
    let cfg = serial_cfg(dir.path(), &pty.a, "169.254.213.2:0", &out);
    let b = BufferProc::start_with(dir.path(), &cfg, Some(&["ip", "netns", "exec", &ns.0]));
    let mut tty = std::fs::OpenOptions::new()
        .write(true)
        .open(&pty.b)
        .unwrap();
    let mut n = 0u64;
    let mut send = |tty: &mut std::fs::File, k: u64| {
        let mut t = String::new();
        for _ in 0..k {
            n += 1;
            t.push_str(&format!("{{\"n\":{n}}}\n"));
        }
        tty.write_all(t.as_bytes()).unwrap();
        n
    };
    wait_for(Duration::from_secs(15), "first records upstream", || {
        send(&mut tty, 1);
        (!sub.snapshot().is_empty()).then_some(())
    });
    send(&mut tty, 200);
    // Cut the link while the sensor keeps writing; keep it down past the MQTT keep-alive.
    ip(&["link", "set", &vh, "down"]);
    let cut = std::time::Instant::now();
    // Past two keep-alive periods, so the output notices and reconnects.
    while cut.elapsed() < Duration::from_secs(12) {
        send(&mut tty, 50);
        std::thread::sleep(Duration::from_millis(100));
    }
    ip(&["link", "set", &vh, "up"]);
    let last = send(&mut tty, 200);
    wait_for(Duration::from_secs(60), "every line upstream", || {
        let ns: HashSet<u64> = sub
            .snapshot()
            .iter()
            .filter_map(|m| n_of(&m.payload))
            .collect();
        (1..=last).all(|i| ns.contains(&i)).then_some(())
    });
    let (firsts, dups) = dedup(&sub.delivered());
    for w in firsts.windows(2) {
        assert!(w[0].seq < w[1].seq, "order {} then {}", w[0].id, w[1].id);
    }
    assert!(dups <= 4 * 16, "{dups} duplicates");
    // The output noticed the link loss (keep-alive) and reconnected.
    let st = b.status();
    assert!(st["output_errors"].as_u64().unwrap_or(0) > 0, "{st}");
    eprintln!("netns cut: {last} lines, {dups} duplicates");
}
