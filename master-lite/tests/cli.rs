//! The contract `slapos-master` offers scripts (docs/cli.md), on the real binary: each exit code,
//! JSON errors under `--json`, `--help`/`--version`, settings from `SLAPOS_MASTER*`, client.toml
//! and `serve --config`, operator commands that refuse to create a database, and `supply`
//! choosing the only computer (and warning about a URL no node fetches).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{BIN, Env, Server, cid, ok, registration, s, text};

const SR: &str = "/srv/sr/web.toml";

/// `slapos-master ARGS` with the environment `env`, in `cwd`, with no client.toml of the user's
/// (XDG_CONFIG_HOME points at `cwd`) and no `SLAPOS_MASTER*` unless given.
fn cli_in(cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new(BIN);
    c.current_dir(cwd).env("XDG_CONFIG_HOME", cwd);
    for v in [
        "SLAPOS_MASTER",
        "SLAPOS_MASTER_CA",
        "SLAPOS_MASTER_CERT",
        "SLAPOS_MASTER_KEY",
    ] {
        c.env_remove(v);
    }
    c.envs(env.iter().copied()).args(args).output().unwrap()
}

fn code(o: &Output) -> Option<i32> {
    o.status.code()
}

/// The JSON error object printed on stderr under `--json`.
fn json_error(o: &Output) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(&o.stderr)
        .unwrap_or_else(|e| panic!("stderr is not JSON ({e}): {}", text(&o.stderr)));
    assert_eq!(v["error"]["code"], code(o).unwrap(), "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    v
}

/// `https://` on a port nothing listens on.
fn dead_tls_url() -> String {
    dead_url().replace("http://", "https://")
}

/// A port nothing listens on (bound, then released).
fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

#[test]
fn help_and_version_go_to_stdout_with_0_and_unknown_flags_get_a_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let help = cli_in(dir.path(), &[], &["--help"]);
    assert_eq!(code(&help), Some(0));
    assert!(text(&help.stdout).contains("Usage: slapos-master"));
    assert!(help.stderr.is_empty());
    let version = cli_in(dir.path(), &[], &["--version"]);
    assert_eq!(code(&version), Some(0));
    assert!(text(&version.stdout).starts_with("slapos-master "));

    let typo = cli_in(dir.path(), &[], &["list", "--computer"]);
    assert_eq!(code(&typo), Some(2), "usage error");
    assert!(
        text(&typo.stderr).contains("--computers"),
        "{}",
        text(&typo.stderr)
    );
    let typo = cli_in(dir.path(), &[], &["--json", "lst"]);
    assert_eq!(code(&typo), Some(2));
    let v = json_error(&typo);
    assert_eq!(v["error"]["kind"], "usage");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("list"),
        "{v}"
    );
}

#[test]
fn each_failure_has_its_exit_code_and_a_json_error() {
    let env = Env::new();
    let cwd = env.dir.path();
    // Unreachable: 6.
    let dead = dead_url();
    let o = cli_in(cwd, &[], &["--master", &dead, "list"]);
    assert_eq!(code(&o), Some(6), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("unreachable"));
    let o = cli_in(cwd, &[], &["--master", &dead, "--json", "list"]);
    assert_eq!(json_error(&o)["error"]["kind"], "unreachable");

    // The users first: the first one creates the CA and the database.
    let ops = env.user("ops", true);
    let alice = env.user("alice", false);
    let server = Server::start_tls(&env.db(), &env.tls(), "error");
    let ca = s(&env.users().join("ca.pem")).to_owned();
    let admin_client = ops.client(&server.url, &env.ca_pem());
    admin_client.register(&registration("C1", &["p0"])).unwrap();
    let as_user = |cred: &common::Cred, args: &[&str]| {
        let mut a = vec![
            "--master",
            &server.url,
            "--ca",
            &ca,
            "--cert",
            s(&cred.cert_file),
            "--key",
            s(&cred.key_file),
        ];
        a.extend_from_slice(args);
        cli_in(cwd, &[], &a)
    };

    // Not found: 3.
    let o = as_user(&ops, &["show", "nope"]);
    assert_eq!(code(&o), Some(3), "{}", text(&o.stderr));
    let o = as_user(&ops, &["--json", "computer", "C9"]);
    assert_eq!(code(&o), Some(3), "{}", text(&o.stderr));
    assert_eq!(json_error(&o)["error"]["kind"], "not_found");

    // Refused: 4 (a user may not supply releases).
    let o = as_user(&alice, &["supply", SR, "--computer", "C1"]);
    assert_eq!(code(&o), Some(4), "{}", text(&o.stderr));
    let o = as_user(&alice, &["--json", "supply", SR, "--computer", "C1"]);
    assert_eq!(json_error(&o)["error"]["kind"], "refused");

    // Usage: 2 (an invalid id, found after parsing; --ca without --cert/--key).
    let o = as_user(&ops, &["computer", "../etc"]);
    assert_eq!(code(&o), Some(2), "{}", text(&o.stderr));
    let o = cli_in(cwd, &[], &["--master", &server.url, "--ca", &ca, "list"]);
    assert_eq!(code(&o), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("missing --cert, --key"),
        "{}",
        text(&o.stderr)
    );

    // --wait timed out: 5, the instance still printed on stdout under --json.
    ok(as_user(&ops, &["supply", SR, "--computer", "C1"]));
    let o = as_user(&ops, &["--json", "request", "web", SR, "--wait", "1"]);
    assert_eq!(code(&o), Some(5), "{}", text(&o.stderr));
    assert_eq!(json_error(&o)["error"]["kind"], "timeout");
    let shown: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(shown["title"], "web");

    // Any other failure: 1 (the master's 409: the release is used by `web`).
    let o = as_user(
        &ops,
        &["--json", "supply", SR, "--computer", "C1", "--remove"],
    );
    assert_eq!(code(&o), Some(1), "{}", text(&o.stderr));
    assert_eq!(json_error(&o)["error"]["kind"], "error");
}

#[test]
fn master_and_credentials_come_from_flags_then_env_then_client_toml() {
    let env = Env::new();
    let cwd = env.dir.path();
    let ops = env.user("ops", true);
    let server = Server::start_tls(&env.db(), &env.tls(), "error");
    let ca = env.users().join("ca.pem");
    let creds = [
        ("SLAPOS_MASTER", server.url.as_str()),
        ("SLAPOS_MASTER_CA", s(&ca)),
        ("SLAPOS_MASTER_CERT", s(&ops.cert_file)),
        ("SLAPOS_MASTER_KEY", s(&ops.key_file)),
    ];
    // All four from the environment.
    let o = cli_in(cwd, &creds, &["list", "--computers"]);
    assert_eq!(code(&o), Some(0), "{}", text(&o.stderr));
    // A flag wins over its variable.
    let o = cli_in(cwd, &creds, &["--master", &dead_tls_url(), "list"]);
    assert_eq!(code(&o), Some(6), "--master wins: {}", text(&o.stderr));

    // client.toml under $XDG_CONFIG_HOME/slapos, the same keys as the flags.
    std::fs::create_dir_all(cwd.join("slapos")).unwrap();
    let toml = format!(
        "master = {:?}\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
        server.url,
        s(&ca),
        s(&ops.cert_file),
        s(&ops.key_file)
    );
    std::fs::write(cwd.join("slapos/client.toml"), toml).unwrap();
    let o = cli_in(cwd, &[], &["list", "--computers"]);
    assert_eq!(code(&o), Some(0), "{}", text(&o.stderr));
    // The environment wins over the file.
    let o = cli_in(cwd, &[("SLAPOS_MASTER", &dead_tls_url())], &["list"]);
    assert_eq!(code(&o), Some(6), "SLAPOS_MASTER wins: {}", text(&o.stderr));
    // A broken file is a usage error naming it, never skipped.
    std::fs::write(cwd.join("slapos/client.toml"), "mastr = 1\n").unwrap();
    let o = cli_in(cwd, &[], &["list"]);
    assert_eq!(code(&o), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("client.toml"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn serve_reads_its_config_file_and_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("from-config.db");
    let conf = dir.path().join("master.toml");
    std::fs::write(
        &conf,
        format!("listen = \"127.0.0.1:1\"\ndb = {:?}\n", s(&db)),
    )
    .unwrap();
    // --listen wins over the file's (unusable) port 1; the database comes from the file.
    let server = Server::spawn(["--config", s(&conf), "--listen", "127.0.0.1:0"], "error");
    assert!(db.exists(), "the config's database was not opened");
    assert!(!server.url.ends_with(":1"), "{}", server.url);
    ok(server.cli(&["list"]));
    drop(server);

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "listen = \"127.0.0.1:0\"\ndbb = \"x\"\n").unwrap();
    let o = cli_in(dir.path(), &[], &["serve", "--config", s(&bad)]);
    assert_eq!(code(&o), Some(2), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("bad.toml"), "{}", text(&o.stderr));
    let o = cli_in(
        dir.path(),
        &[],
        &["serve", "--config", s(&dir.path().join("missing.toml"))],
    );
    assert_eq!(
        code(&o),
        Some(2),
        "a named config must exist: {}",
        text(&o.stderr)
    );
}

#[test]
fn operator_commands_refuse_to_create_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    // No --db: the default file in the working directory does not exist.
    let o = cli_in(cwd, &[], &["token", "create", "--computer", "C1"]);
    assert_eq!(code(&o), Some(3), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains("slapos-master.db") && err.contains("--db"),
        "{err}"
    );
    assert!(
        !cwd.join("slapos-master.db").exists(),
        "a database was created"
    );
    // A --db that does not exist, for each operator command.
    let missing = cwd.join("typo.db");
    let m = s(&missing);
    let out = cwd.join("out");
    let tls = cwd.join("tls");
    for args in [
        vec!["token", "create", "--computer", "C1", "--db", m],
        vec![
            "user",
            "create",
            "ops",
            "--out",
            s(&out),
            "--tls-dir",
            s(&tls),
            "--db",
            m,
        ],
        vec!["cert", "revoke", "--identity", "user:ops", "--db", m],
        vec!["cert", "list", "--db", m],
    ] {
        let o = cli_in(cwd, &[], &args);
        assert_eq!(code(&o), Some(3), "{args:?}: {}", text(&o.stderr));
        assert!(text(&o.stderr).contains("typo.db"), "{}", text(&o.stderr));
        assert!(!missing.exists(), "{args:?} created {m}");
    }
    let o = cli_in(cwd, &[], &["--json", "cert", "list", "--db", m]);
    assert_eq!(json_error(&o)["error"]["kind"], "not_found");
    // --create-db says so.
    let o = cli_in(
        cwd,
        &[],
        &[
            "token",
            "create",
            "--computer",
            "C1",
            "--db",
            m,
            "--create-db",
        ],
    );
    assert_eq!(code(&o), Some(0), "{}", text(&o.stderr));
    assert!(missing.exists());
    ok(cli_in(cwd, &[], &["cert", "list", "--db", m]));
}

#[test]
fn supply_without_computer_picks_the_only_one_else_lists_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("master.db"));
    let url = server.url.clone();
    let supply = || cli_in(dir.path(), &[("SLAPOS_MASTER", &url)], &["supply", SR]);
    let o = supply();
    assert_eq!(code(&o), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("no computer"),
        "{}",
        text(&o.stderr)
    );

    let c = server.client();
    c.register(&registration("C1", &["p0"])).unwrap();
    let o = supply();
    assert_eq!(code(&o), Some(0), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("on C1: supplied"),
        "{}",
        text(&o.stdout)
    );
    let info = c.computer(&cid("C1")).unwrap();
    assert_eq!(info.software.len(), 1);

    // A URL a node does not fetch is recorded (as a SLAP client's would be), with a warning;
    // its removal is not warned about.
    let env = [("SLAPOS_MASTER", url.as_str())];
    let o = cli_in(dir.path(), &env, &["supply", "bar"]);
    assert_eq!(code(&o), Some(0), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains("warning: software URL `bar`")
            && err.contains(slapos_proto::FETCHABLE_URL_FORMS),
        "{err}"
    );
    assert!(text(&o.stdout).contains("bar on C1: supplied"));
    let o = cli_in(dir.path(), &env, &["supply", "bar", "--remove"]);
    assert_eq!(code(&o), Some(0), "{}", text(&o.stderr));
    assert!(!text(&o.stderr).contains("warning"), "{}", text(&o.stderr));
    assert_eq!(c.computer(&cid("C1")).unwrap().software.len(), 2);

    c.register(&registration("C2", &["p0"])).unwrap();
    let o = supply();
    assert_eq!(code(&o), Some(2), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains("C1") && err.contains("C2") && err.contains("--computer"),
        "{err}"
    );
}

/// `Type=notify`: `serve` sends READY=1 to `$NOTIFY_SOCKET` once it serves, then WATCHDOG=1
/// at half of `WATCHDOG_USEC`; an abstract `@name` socket works too.
#[test]
fn serve_notifies_systemd_ready_and_feeds_the_watchdog() {
    use std::io::{BufRead, BufReader};
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    use std::process::Stdio;
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let name = format!("slapos-master-notify-{}", std::process::id());
    let sockets = [
        (UnixDatagram::bind(&path).unwrap(), s(&path).to_owned()),
        (
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap(),
            format!("@{name}"),
        ),
    ];
    for (socket, addr) in sockets {
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(dir.path().join("master.db"))
            .env("NOTIFY_SOCKET", &addr)
            .env("WATCHDOG_USEC", "200000")
            .env_remove("WATCHDOG_PID")
            .env("SLAPOS_LOG", "error")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        for _ in 0..3 {
            let n = socket.recv(&mut buf).expect("a notification");
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(line.starts_with(master_lite::LISTENING), "{line}");
        assert_eq!(got, ["READY=1", "WATCHDOG=1", "WATCHDOG=1"], "{addr}");
    }
}

#[test]
fn log_format_json_gives_one_object_per_line_and_a_bad_value_is_refused() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("master.db");
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(&db)
        .env("SLAPOS_LOG_FORMAT", "json")
        .env("SLAPOS_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut line).unwrap();
    assert!(master_lite::listening_url(&line).is_some(), "{line}");
    // SIGTERM: the master logs its stop and exits.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}: {err}");
    drop(stdout);
    let lines: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 2, "{err}");
    assert_eq!(lines[0]["level"], "INFO");
    assert_eq!(lines[0]["fields"]["message"], "master started");
    assert!(lines[0]["timestamp"].is_string());
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "master stopped"),
        "{err}"
    );

    let o = cli_in(
        dir.path(),
        &[("SLAPOS_LOG_FORMAT", "xml")],
        &["serve", "--listen", "127.0.0.1:0", "--db", s(&db)],
    );
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("SLAPOS_LOG_FORMAT=\"xml\""),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn usage_reports_as_table_csv_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("master.db"));
    let c = server.client();
    c.register(&registration("C1", &["p0", "p1"])).unwrap();
    let t0 = 1_700_000_000_000u64;
    let sample = |p: &str, k: u64| slapos_proto::UsageSample {
        partition: slapos_proto::PartitionId::parse(p).unwrap(),
        instance: None,
        start_ms: t0 + k * 60_000,
        end_ms: t0 + (k + 1) * 60_000,
        cpu_ns: 1_500_000_000,
        memory_bytes: 1 << 30,
        memory_peak_bytes: 1 << 30,
        io_read_bytes: 1,
        io_write_bytes: 2,
        disk_bytes: 0,
        tasks: 1,
        folded: 1,
    };
    let batch = slapos_proto::UsageBatch {
        samples: vec![sample("p0", 0), sample("p0", 1), sample("p1", 0)],
    };
    c.post_usage(&cid("C1"), &batch).unwrap();
    let (since, until) = (t0.to_string(), (t0 + 3_600_000).to_string());
    let run = |extra: &[&str]| {
        let mut args = vec!["usage", "--since", &since, "--until", &until];
        args.extend_from_slice(extra);
        cli_in(dir.path(), &[("SLAPOS_MASTER", &server.url)], &args)
    };
    let o = run(&["--by", "computer", "--csv"]);
    assert_eq!(code(&o), Some(0), "{}", text(&o.stderr));
    assert_eq!(
        text(&o.stdout),
        "KEY,CPU_S,MEM_GIB_H,DISK_GIB_H,IO_READ_B,IO_WRITE_B,PEAK_MEM_B,SAMPLES\n\
         C1,4.500,0.050000,0.000000,3,6,1073741824,3\n\
         total,4.500,0.050000,0.000000,3,6,1073741824,3\n"
    );
    let o = run(&["--json"]);
    assert_eq!(code(&o), Some(0), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["by"], "instance");
    assert_eq!(v["rows"][0]["key"], "(free)");
    assert_eq!(v["total"]["samples"], 3);
    let o = run(&["--by", "planet"]);
    assert_eq!(code(&o), Some(2), "{}", text(&o.stderr));
    let o = cli_in(
        dir.path(),
        &[("SLAPOS_MASTER", &server.url)],
        &["usage", "--since", "yesterday"],
    );
    assert_eq!(code(&o), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("unix milliseconds"),
        "{}",
        text(&o.stderr)
    );
}

/// `request --wait` with stderr not a terminal: one `waiting: …` line per change of what the
/// instance waits for, read from the master as a node moves it on (release install state with
/// its step, the start, failing promises), then the connection parameters on stdout and 0.
#[test]
fn request_wait_prints_one_line_per_change_of_what_it_waits_for() {
    use slapos_proto::{
        ConnectionPublish, InstallState, InstanceState, PartitionReport, PromiseResult,
        SoftwareReport, SoftwareUrl,
    };
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("master.db"));
    let node = server.client();
    node.register(&registration("C1", &["p0"])).unwrap();
    ok(server.cli(&["supply", SR, "--computer", "C1"]));
    let mut child = Command::new(BIN)
        .current_dir(dir.path())
        .env("XDG_CONFIG_HOME", dir.path())
        .args([
            "--master",
            &server.url,
            "request",
            "web",
            SR,
            "--wait",
            "120",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut next = |want: &str| {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("stderr ended before {want:?}"))
            .unwrap();
        assert_eq!(line, format!("waiting: web on C1/p0: {want}"));
    };
    let (c, p) = (cid("C1"), common::pid("p0"));
    let url = SoftwareUrl::parse(SR).unwrap();
    let software = |state, message: Option<&str>| SoftwareReport {
        url: url.clone(),
        state,
        message: message.map(str::to_owned),
        parameter_model: None,
    };
    next("allocated, waiting for the node to install the release");
    node.report_software(
        &c,
        &software(
            InstallState::Building,
            Some("fetch a.tar.gz\nbuild step 2/3"),
        ),
    )
    .unwrap();
    next("installing the release: build step 2/3");
    node.report_software(&c, &software(InstallState::Available, None))
        .unwrap();
    next("release installed, starting");
    let revision = node.instance(&common::title("web"), None).unwrap().revision;
    let promise = |ok| PromiseResult {
        name: "http".into(),
        ok,
        message: String::new(),
        at_ms: 1,
    };
    let report = |ok| PartitionReport {
        state: InstanceState::Started,
        revision,
        promises: vec![promise(ok)],
        error: None,
    };
    node.report_partition(&c, &p, &report(false)).unwrap();
    next("started, promises failing: http");
    node.report_partition(&c, &p, &report(true)).unwrap();
    next("started, waiting for the connection parameters");
    let mut conn = slapos_proto::Params::new();
    conn.insert("url".into(), "http://[::1]:8080".into());
    node.publish_connection(
        &c,
        &p,
        &ConnectionPublish {
            parameters: conn,
            shared: Default::default(),
        },
    )
    .unwrap();
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert!(rest.is_empty(), "one line per change only: {rest:?}");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).contains("url = http://[::1]:8080"),
        "{}",
        text(&out.stdout)
    );
}

/// Every client subcommand, under `--json`, fails with one JSON object on stderr carrying its
/// exit code, and nothing else on stderr (no progress line, no log): unreachable master (6),
/// a usage error found by the parser and one found after parsing (2).
#[test]
fn every_subcommand_fails_with_a_json_error_under_json() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let dead = dead_url();
    let missing_db = s(&cwd.join("none.db")).to_owned();
    let out_dir = s(&cwd.join("out")).to_owned();
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["supply", SR, "--computer", "C1"], 6, "unreachable"),
        (vec!["supply", SR], 6, "unreachable"),
        (vec!["request", "web", SR, "--wait", "5"], 6, "unreachable"),
        (vec!["list"], 6, "unreachable"),
        (vec!["list", "--computers"], 6, "unreachable"),
        (vec!["show", "web"], 6, "unreachable"),
        (vec!["computer", "C1"], 6, "unreachable"),
        (vec!["destroy", "web"], 6, "unreachable"),
        (vec!["usage"], 6, "unreachable"),
        (vec!["usage", "--since", "3w"], 2, "usage"),
        (vec!["show", "../x"], 2, "usage"),
        (vec!["request", "web", SR, "--param", "novalue"], 2, "usage"),
        (vec!["request", "web"], 2, "usage"),
        (
            vec!["token", "create", "--computer", "C1", "--db", &missing_db],
            3,
            "not_found",
        ),
        (vec!["cert", "list", "--db", &missing_db], 3, "not_found"),
        (
            vec!["cert", "revoke", "00", "--db", &missing_db],
            3,
            "not_found",
        ),
        (
            vec![
                "user",
                "create",
                "a",
                "--out",
                &out_dir,
                "--tls-dir",
                &out_dir,
                "--db",
                &missing_db,
            ],
            3,
            "not_found",
        ),
        (vec!["migrate", "--from", &missing_db], 2, "usage"),
        (vec!["serve", "--config", &missing_db], 2, "usage"),
        (vec!["standalone", "--partitions", "x"], 2, "usage"),
        (vec!["completions", "tcsh"], 2, "usage"),
        (vec!["man"], 2, "usage"),
    ];
    for (args, want, kind) in cases {
        let mut a = vec!["--master", &dead, "--json"];
        a.extend_from_slice(&args);
        let o = cli_in(cwd, &[], &a);
        assert_eq!(code(&o), Some(want), "{args:?}: {}", text(&o.stderr));
        let v = json_error(&o);
        assert_eq!(v["error"]["kind"], kind, "{args:?}: {v}");
        assert!(o.stdout.is_empty(), "{args:?}: {}", text(&o.stdout));
    }
}

/// `scripts/gen-cli-docs.sh OUTDIR BIN` (the packaging interface): completions for bash, zsh and
/// fish naming the subcommands, and man pages with a `.TH` header and their sections, one per
/// subcommand; groff reads every page without a warning. The hand-parsed programs (slapos-node,
/// …) get a page from their `--help` when built next to BIN.
#[test]
fn gen_cli_docs_writes_completions_and_man_pages() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("docs");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/gen-cli-docs.sh");
    let o = Command::new("bash")
        .arg(script)
        .arg(&out)
        .arg(BIN)
        .output()
        .unwrap();
    assert_eq!(code(&o), Some(0), "{}", text(&o.stderr));
    let read = |p: &str| std::fs::read_to_string(out.join(p)).unwrap();
    let subcommands = [
        "serve",
        "request",
        "supply",
        "list",
        "show",
        "computer",
        "destroy",
        "usage",
        "token",
        "cert",
        "migrate",
        "standalone",
    ];
    for f in ["slapos-master.bash", "_slapos-master", "slapos-master.fish"] {
        let c = read(&format!("completions/{f}"));
        for sub in subcommands {
            assert!(c.contains(sub), "{f} lacks {sub}");
        }
    }
    let mut pages = vec!["slapos-master".to_owned()];
    pages.extend(subcommands.iter().map(|s| format!("slapos-master-{s}")));
    pages.extend(["slapos-master-token-create", "slapos-master-cert-revoke"].map(String::from));
    for page in &pages {
        let m = read(&format!("man/{page}.1"));
        assert!(
            m.lines().any(|l| l.starts_with(&format!(".TH {page} 1"))),
            "{page}: no .TH header"
        );
        for section in [".SH NAME", ".SH SYNOPSIS", ".SH DESCRIPTION", ".SH OPTIONS"] {
            assert!(m.contains(section), "{page} lacks {section}");
        }
    }
    assert!(read("man/slapos-master.1").contains("Exit status: 0 done"));
    assert!(read("man/slapos-master-request.1").contains("\\-\\-wait"));
    // The --help-made pages, for the programs built next to BIN (a workspace build).
    let bindir = Path::new(BIN).parent().unwrap();
    let hand: Vec<&str> = [
        "slapos-node",
        "slapos-buffer",
        "rt-probe",
        "rt-report",
        "slapos-radio",
    ]
    .into_iter()
    .filter(|p| bindir.join(p).exists())
    .collect();
    for prog in &hand {
        let m = read(&format!("man/{prog}.1"));
        assert!(
            m.starts_with(&format!(".TH {} 1", prog.to_uppercase())),
            "{m}"
        );
        for section in [".SH NAME", ".SH SYNOPSIS", ".SH DESCRIPTION"] {
            assert!(m.contains(section), "{prog} lacks {section}");
        }
        let synopsis = m.split(".SH SYNOPSIS\n.nf\n").nth(1).unwrap_or("");
        assert!(
            synopsis.starts_with(&prog.replace('-', "\\-")),
            "{prog}: {synopsis}"
        );
    }
    if hand.is_empty() {
        eprintln!(
            "note: no slapos-node/slapos-buffer/rt-*/slapos-radio next to {BIN}: their --help pages not checked"
        );
    }
    if !slapos_test_support::gate::tool("gen_cli_docs_writes_completions_and_man_pages", "groff") {
        return;
    }
    for entry in std::fs::read_dir(out.join("man")).unwrap() {
        let path = entry.unwrap().path();
        let g = Command::new("groff")
            .args(["-k", "-man", "-Tutf8", "-ww", "-z"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            g.status.success() && g.stderr.is_empty(),
            "{}: {}",
            path.display(),
            text(&g.stderr)
        );
    }
}
