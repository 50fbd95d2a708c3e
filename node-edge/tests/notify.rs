//! `slapos-node run` under systemd `Type=notify` (dist/systemd/slapos-node.service): READY=1 to
//! `$NOTIFY_SOCKET` once its loop runs (even with the master offline: it works from its cache),
//! then WATCHDOG=1 at half of `WATCHDOG_USEC`, fed from the node's own runtime.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn run_notifies_systemd_ready_and_feeds_the_watchdog() {
    let dir = tempfile::tempdir().unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let conf = dir.path().join("node.toml");
    std::fs::write(
        &conf,
        format!(
            "master_url = \"http://127.0.0.1:{port}\"\ncomputer_id = \"COMP-1\"\npartitions = 1\n\
             software_root = \"soft\"\ninstance_root = \"inst\"\nisolation = \"none\"\n"
        ),
    )
    .unwrap();
    let path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_slapos-node"))
        .arg("run")
        .arg("--config")
        .arg(&conf)
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "200000")
        .env_remove("WATCHDOG_PID")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    for _ in 0..3 {
        match socket.recv(&mut buf) {
            Ok(n) => got.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) => {
                got.push(format!("({e})"));
                break;
            }
        }
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        got,
        ["READY=1", "WATCHDOG=1", "WATCHDOG=1"],
        "node: {status}"
    );
}
