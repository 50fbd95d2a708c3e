//! The real `slapos-master` binary: `serve` on port 0, the client subcommands against it, and a
//! crash (SIGKILL) + restart on the same database that must lose nothing acknowledged.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use slapos_client::Client;
use slapos_proto::{
    ComputerId, ConnectionPublish, InstanceInfo, InstanceState, InstanceTitle, PartitionId,
    PartitionSpec, RegisterComputer, SupplyRequest, SupplyState,
};

const BIN: &str = env!("CARGO_BIN_EXE_slapos-master");
const SR: &str = "/srv/sr/web.toml";

/// A running `slapos-master serve`, killed on drop.
struct Server {
    child: Option<Child>,
    url: String,
}

impl Server {
    fn start(db: &Path) -> Server {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(db)
            .env("SLAPOS_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn slapos-master serve");
        let stdout = child.stdout.take().unwrap();
        // The first line announces the address; read_line returns when it is printed (or at
        // EOF if the server died, which the assertion then reports).
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let url = master_lite::listening_url(&line)
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Server {
            child: Some(child),
            url,
        }
    }

    fn client(&self) -> Client {
        Client::new(&self.url).unwrap()
    }

    /// Run a client subcommand against this server.
    fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--master")
            .arg(&self.url)
            .args(args)
            .output()
            .expect("run slapos-master client")
    }

    /// SIGKILL: a crash, nothing flushed by the program.
    fn crash(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM and wait for a clean exit.
    fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let pid = libc::pid_t::try_from(c.id()).unwrap();
        // SAFETY: kill(2) with the pid of our own child, which has not been waited for yet (so
        // the pid cannot have been reused); no memory is involved.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
        c.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn cid() -> ComputerId {
    ComputerId::parse("C1").unwrap()
}

#[test]
fn serve_cli_crash_and_restart_lose_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("master.db");
    let mut server = Server::start(&db);
    let c = server.client();
    c.register(&RegisterComputer {
        id: cid(),
        partitions: (0..3)
            .map(|i| PartitionSpec {
                id: PartitionId::parse(format!("slappart{i}")).unwrap(),
                addresses: vec![],
                interface: None,
            })
            .collect(),
        labels: [("region".parse().unwrap(), "eu".to_owned())].into(),
    })
    .unwrap();

    // supply through the CLI.
    let out = server.cli(&["supply", SR, "--computer", "C1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("supplied"),
        "{}",
        text(&out.stdout)
    );

    // request --json prints the proto struct.
    let out = server.cli(&[
        "--json",
        "request",
        "web",
        SR,
        "--param",
        "port=8080",
        "--params-json",
        r#"{"workers": 4, "port": "1"}"#,
        "--sla",
        "region=eu",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let web: InstanceInfo = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        web.parameters["port"], "8080",
        "--param overrides --params-json"
    );
    assert_eq!(web.parameters["workers"], 4);
    assert_eq!(web.partition.as_str(), "slappart0");

    // Not published yet: --wait gives up with exit code 2 and says why.
    let out = server.cli(&["request", "web", SR, "--param", "port=8080", "--wait", "1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("not published within 1 s"));
    // Publish as the node would, then --wait prints the parameters.
    c.publish_connection(
        &cid(),
        &web.partition,
        &ConnectionPublish {
            parameters: [("url".to_owned(), "http://10.0.0.1:8080/".into())]
                .into_iter()
                .collect(),
        },
    )
    .unwrap();
    let out = server.cli(&["request", "web", SR, "--param", "port=8080", "--wait", "5"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("url = http://10.0.0.1:8080/"), "{shown}");

    // list / show / list --computers, human and JSON.
    let out = server.cli(&["list"]);
    let shown = text(&out.stdout);
    assert!(out.status.success());
    assert!(shown.starts_with("TITLE"), "{shown}");
    assert!(shown.contains("C1/slappart0"), "{shown}");
    let out = server.cli(&["--json", "list"]);
    let list: Vec<InstanceInfo> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.len(), 1);
    let out = server.cli(&["show", "web"]);
    assert!(
        text(&out.stdout).contains("requested by  user"),
        "{}",
        text(&out.stdout)
    );
    let out = server.cli(&["list", "--computers"]);
    assert!(
        text(&out.stdout).contains("region=eu"),
        "{}",
        text(&out.stdout)
    );

    // Bad input from the CLI: a clear message and exit code 1.
    let out = server.cli(&["request", "../x", SR]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("instance title"),
        "{}",
        text(&out.stderr)
    );
    let out = server.cli(&["show", "ghost"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("404 not_found"),
        "{}",
        text(&out.stderr)
    );

    // Crash: every acknowledged write must be there after a restart on the same file.
    let before_instances = c.instances().unwrap();
    let before_computer = c.computer(&cid()).unwrap();
    server.crash();
    let mut server = Server::start(&db);
    let c = server.client();
    let after = c.instances().unwrap();
    assert_eq!(
        serde_json::to_value(&after).unwrap(),
        serde_json::to_value(&before_instances).unwrap()
    );
    let comp = c.computer(&cid()).unwrap();
    assert_eq!(comp.partitions.len(), before_computer.partitions.len());
    assert_eq!(comp.software.len(), 1);
    assert_eq!(comp.software[0].requested, SupplyState::Available);
    assert_eq!(after[0].connection["url"], "http://10.0.0.1:8080/");

    // destroy through the CLI, then a clean stop (SIGTERM) and one more restart.
    let out = server.cli(&["destroy", "web"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status = server.stop();
    assert!(status.success(), "SIGTERM exit: {status:?}");
    let server = Server::start(&db);
    let web = server
        .client()
        .instance(&InstanceTitle::parse("web").unwrap(), None)
        .unwrap();
    assert_eq!(web.state, InstanceState::Destroyed);
    // A supply acknowledged just before a crash survives too.
    let c = server.client();
    c.supply(
        &cid(),
        &SupplyRequest {
            url: "/srv/sr/other.toml".parse().unwrap(),
            state: SupplyState::Available,
        },
    )
    .unwrap();
    let mut server = server;
    server.crash();
    let server = Server::start(&db);
    assert_eq!(server.client().computer(&cid()).unwrap().software.len(), 2);
}

#[test]
fn client_commands_report_an_unreachable_master() {
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    let out = Command::new(BIN)
        .args(["--master", "http://127.0.0.1:1", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("unreachable"),
        "{}",
        text(&out.stderr)
    );
}
