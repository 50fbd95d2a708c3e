//! The real `slapos-buffer` follows docs/cli.md: `--help` and `--version` on stdout with exit 0,
//! an unknown argument on stderr with exit 2 and a suggestion.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_slapos-buffer");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// A buffer with one TCP input on a free port and no output, its data under `dir`.
fn tcp_only_config(dir: &std::path::Path) -> std::path::PathBuf {
    let conf = dir.join("buffer.toml");
    std::fs::write(
        &conf,
        format!(
            "node_id = \"gw\"\n[storage]\ndir = \"{}\"\nstream = \"s\"\n\
             [[inputs]]\ntype = \"tcp\"\nlisten = \"127.0.0.1:0\"\nformat = \"json\"\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    conf
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_version_and_unknown_arguments() {
    let o = run(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        text(&o.stdout).starts_with("usage: slapos-buffer"),
        "{}",
        text(&o.stdout)
    );
    assert!(o.stderr.is_empty(), "{}", text(&o.stderr));
    let o = run(&["-V"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        text(&o.stdout),
        format!("slapos-buffer {}\n", env!("CARGO_PKG_VERSION"))
    );
    let o = run(&["--confg", "b.toml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty());
    assert!(
        text(&o.stderr).contains("did you mean `--config`?"),
        "{}",
        text(&o.stderr)
    );
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("--config FILE is required"),
        "{}",
        text(&o.stderr)
    );
}

/// `Type=notify`: READY=1 to `$NOTIFY_SOCKET` once serving (after the `READY {json}` line),
/// then WATCHDOG=1 at half of `WATCHDOG_USEC`.
#[test]
fn notifies_systemd_ready_and_feeds_the_watchdog() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::net::UnixDatagram;
    use std::process::Stdio;
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let conf = tcp_only_config(dir.path());
    let path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&conf)
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "200000")
        .env("WATCHDOG_PID", "1") // not this process: the watchdog is someone else's
        .env("SLAPOS_BUFFER_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mut buf = [0u8; 64];
    let n = socket.recv(&mut buf).expect("READY=1");
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    // WATCHDOG_PID names another process: no ping within several periods.
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let quiet = socket.recv(&mut buf);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(line.starts_with("READY {"), "{line}");
    assert_eq!(ready, "READY=1");
    assert!(quiet.is_err(), "pinged a watchdog that is not ours");

    // The watchdog is ours: pings follow READY=1.
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&conf)
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "200000")
        .env_remove("WATCHDOG_PID")
        .env("SLAPOS_BUFFER_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let n = socket.recv(&mut buf).expect("a notification");
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(got, ["READY=1", "WATCHDOG=1", "WATCHDOG=1"]);
}

#[test]
fn log_format_json_gives_one_object_per_line_and_a_bad_value_is_refused() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let dir = tempfile::tempdir().unwrap();
    let conf = tcp_only_config(dir.path());
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&conf)
        .env("SLAPOS_LOG_FORMAT", "json")
        .env("SLAPOS_BUFFER_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!(v["level"], "INFO", "{line}");
    assert!(v["fields"]["message"].is_string(), "{line}");

    let o = Command::new(BIN)
        .arg("--config")
        .arg(&conf)
        .env("SLAPOS_LOG_FORMAT", "xml")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("SLAPOS_LOG_FORMAT=\"xml\""),
        "{}",
        text(&o.stderr)
    );
}
