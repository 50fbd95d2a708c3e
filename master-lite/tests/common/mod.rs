//! Pieces shared by master-lite's integration tests: the real `slapos-master serve` (plain, with
//! `--tls-dir`, or from any argument list) and its listening URL, the CLI (`run`, `ok`), users,
//! enrollment tokens and credentials created with it, database dumps for "unchanged" checks,
//! the authorization-matrix runner, the slapos.core venv and its python, id constructors and
//! the in-process router.
//!
//! Each test crate uses its own subset, hence the module-wide `dead_code` allowance.
#![allow(dead_code)]

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use slapos_client::Client;
use slapos_proto::{
    ComputerId, InstanceTitle, PartitionId, PartitionRef, PartitionSpec, RegisterComputer,
};
use tower::ServiceExt;

pub const BIN: &str = env!("CARGO_BIN_EXE_slapos-master");

// ---------------------------------------------------------------------------------------------
// The real server.

/// A running `slapos-master serve`, killed on drop.
pub struct Server {
    child: Option<Child>,
    pub url: String,
}

impl Server {
    /// `slapos-master serve ARGS` with `SLAPOS_LOG=log`, once it has announced its address.
    pub fn spawn<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>, log: &str) -> Server {
        Server::spawn_under(&[], args, log)
    }

    /// [`Server::spawn`] run through `wrapper` (e.g. `prlimit --nofile=1024:1024 --`).
    pub fn spawn_under<S: AsRef<OsStr>>(
        wrapper: &[&str],
        args: impl IntoIterator<Item = S>,
        log: &str,
    ) -> Server {
        let mut cmd = match wrapper.split_first() {
            None => Command::new(BIN),
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(BIN);
                c
            }
        };
        let mut child = cmd
            .arg("serve")
            .args(args)
            .env("SLAPOS_LOG", log)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn slapos-master serve");
        // The first line announces the address; read_line returns when it is printed (or at
        // EOF if the server died, which the assertion then reports).
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = master_lite::listening_url(&line)
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Server {
            child: Some(child),
            url,
        }
    }

    /// `serve --listen 127.0.0.1:0 --db DB`, plain HTTP.
    pub fn start(db: &Path) -> Server {
        Server::spawn(listen(db), "warn")
    }

    /// `serve --listen 127.0.0.1:0 --db DB --tls-dir TLS`; its URL must be `https://`.
    pub fn start_tls(db: &Path, tls: &Path, log: &str) -> Server {
        let mut args = listen(db);
        args.extend(["--tls-dir".into(), tls.into()]);
        let server = Server::spawn(args, log);
        assert!(server.url.starts_with("https://"), "{}", server.url);
        server
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Its resident memory now, in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// A native client without a client certificate.
    pub fn client(&self) -> Client {
        Client::new(&self.url).unwrap()
    }

    /// Run a client subcommand against this server.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--master")
            .arg(&self.url)
            .args(args)
            .output()
            .expect("run slapos-master client")
    }

    /// SIGKILL: a crash, nothing flushed by the program.
    pub fn crash(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> ExitStatus {
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

pub fn listen(db: &Path) -> Vec<OsString> {
    vec![
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--db".into(),
        db.into(),
    ]
}

// ---------------------------------------------------------------------------------------------
// The CLI, users, tokens and credentials.

/// `slapos-master ARGS`.
pub fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run slapos-master")
}

/// Asserts success; returns stdout.
pub fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// One identity: its certificate and key (PEM) and the files holding them (for python).
#[derive(Clone)]
pub struct Cred {
    pub cert: String,
    pub key: String,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl Cred {
    fn read(cert_file: PathBuf, key_file: PathBuf) -> Cred {
        Cred {
            cert: std::fs::read_to_string(&cert_file).unwrap(),
            key: std::fs::read_to_string(&key_file).unwrap(),
            cert_file,
            key_file,
        }
    }

    /// A native client with this identity.
    pub fn client(&self, url: &str, ca_pem: &str) -> Client {
        Client::with_identity(url, ca_pem, &self.cert, &self.key).unwrap()
    }
}

/// A temporary directory holding the master's database, its TLS directory and the users'
/// credentials (`users/`).
pub struct Env {
    pub dir: tempfile::TempDir,
    /// `SLAPOS_TEST_DB=postgres`: a fresh PostgreSQL database's URL, else `None` (SQLite).
    pg_url: Option<String>,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
            pg_url: test_pg_url(),
        }
    }
    /// The database `--db` names: a SQLite file in the temp dir, or under
    /// `SLAPOS_TEST_DB=postgres` a fresh PostgreSQL database (its URL, which `--db` reads).
    pub fn db(&self) -> PathBuf {
        match &self.pg_url {
            Some(url) => PathBuf::from(url),
            None => self.dir.path().join("master.db"),
        }
    }
    pub fn tls(&self) -> PathBuf {
        self.dir.path().join("tls")
    }
    pub fn users(&self) -> PathBuf {
        self.dir.path().join("users")
    }
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.tls().join("ca.pem")).unwrap()
    }
    /// `token create --computer C --ttl TTL`.
    pub fn token(&self, computer: &str, ttl: &str) -> String {
        let db = self.db();
        ok(run(&[
            "token",
            "create",
            "--computer",
            computer,
            "--ttl",
            ttl,
            "--db",
            s(&db),
        ]))
        .trim()
        .to_owned()
    }
    /// `user create NAME [--admin] --out users/` (the first one creates the CA).
    pub fn user(&self, name: &str, admin: bool) -> Cred {
        let (out, db, tls) = (self.users(), self.db(), self.tls());
        let mut args = vec![
            "user",
            "create",
            name,
            "--out",
            s(&out),
            "--tls-dir",
            s(&tls),
            "--db",
            s(&db),
            // The first user comes before the first `serve`: it creates the database.
            "--create-db",
        ];
        if admin {
            args.push("--admin");
        }
        ok(run(&args));
        self.user_cred(name)
    }
    /// The credentials `user create` wrote for `name`.
    pub fn user_cred(&self, name: &str) -> Cred {
        let out = self.users();
        Cred::read(
            out.join(format!("{name}.pem")),
            out.join(format!("{name}.key")),
        )
    }
    /// Keep issued credentials in files (the python library reads files).
    pub fn keep(&self, name: &str, cert: &str, key: &str) -> Cred {
        let (cert_file, key_file) = (
            self.dir.path().join(format!("{name}.pem")),
            self.dir.path().join(format!("{name}.key")),
        );
        std::fs::write(&cert_file, cert).unwrap();
        std::fs::write(&key_file, key).unwrap();
        Cred::read(cert_file, key_file)
    }
    pub fn dump(&self) -> String {
        dump(&self.db())
    }
}

/// The engine the suites run on: `SLAPOS_TEST_DB=postgres` gives a fresh database on the
/// test cluster (`master_lite::testpg`; its absence fails the test), else `None` (SQLite).
pub fn test_pg_url() -> Option<String> {
    if std::env::var("SLAPOS_TEST_DB").as_deref() != Ok("postgres") {
        return None;
    }
    // The sync PostgreSQL client runs its own runtime: keep it off the test's.
    std::thread::spawn(|| {
        let pg = master_lite::testpg::TestPg::shared()
            .unwrap_or_else(|skip| panic!("SLAPOS_TEST_DB=postgres but {}", skip.0));
        pg.fresh_db().unwrap()
    })
    .join()
    .unwrap()
    .into()
}

/// Every row of every table, read through a separate read-only connection (a `postgres://`
/// database through a store of its own).
pub fn dump(db: &Path) -> String {
    if let Some(url) = db.to_str().filter(|u| u.starts_with("postgres://")) {
        let url = url.to_owned();
        return std::thread::spawn(move || {
            master_lite::store::Store::open_postgres(&url, 0)
                .unwrap()
                .dump()
        })
        .join()
        .unwrap();
    }
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    master_lite::store::dump(&conn)
}

// ---------------------------------------------------------------------------------------------
// Authorization matrices.

/// What one call of a matrix gave.
pub struct Answer {
    pub succeeded: bool,
    pub status: Option<u16>,
    /// For the failure messages.
    pub detail: String,
}

/// Every call × identity: a call `allowed` to the identity must succeed; any other must be
/// answered 403 and change nothing in the database (`dump`, taken before each call). Panics
/// with every failure.
pub fn assert_matrix<C, I>(
    calls: &[C],
    ids: &[(&str, I)],
    name_and_allowed: impl Fn(&C) -> (&str, &[&str]),
    call: impl Fn(&C, &I) -> Answer,
    dump: impl Fn() -> String,
) {
    let mut failures = Vec::new();
    for c in calls {
        let (name, allowed) = name_and_allowed(c);
        for (who, id) in ids {
            let before = dump();
            let a = call(c, id);
            if allowed.contains(who) {
                if !a.succeeded {
                    failures.push(format!("{who} {name}: refused: {}", a.detail));
                }
            } else {
                if a.status != Some(403) {
                    failures.push(format!("{who} {name}: expected 403, got {}", a.detail));
                }
                if dump() != before {
                    failures.push(format!("{who} {name}: a refused call changed the database"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// The real slapos.core (`.venv/slapos`).

/// The venv's `bin` if it holds every file of `needs`; else `None` after saying that `part`
/// is skipped, or a panic under `SLAPOS_REQUIRE_TOOLS=1`.
pub fn venv(needs: &[&str], part: &str) -> Option<PathBuf> {
    let v = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/slapos/bin");
    let Some(missing) = needs.iter().find(|n| !v.join(n).exists()) else {
        return Some(v);
    };
    let why = format!(
        "{} missing: run scripts/deps/slapos-venv.sh",
        v.join(missing).display()
    );
    slapos_test_support::gate::skip(slapos_test_support::gate::Need::Tools, part, &why);
    None
}

/// Run a python snippet with the slap library connected to `url` (`URL`): plain, or over TLS
/// with `cred`'s certificate (`KEY`, `CERT`; warnings ignored).
pub fn slap_python(venv: &Path, url: &str, cred: Option<&Cred>, script: &str) -> Output {
    let mut cmd = Command::new(venv.join("python"));
    let prelude = match cred {
        None => {
            "import sys, slapos.slap, slapos.util\nURL = sys.argv[1]\n\
             slap = slapos.slap.slap()\nslap.initializeConnection(URL)\n"
        }
        Some(_) => {
            cmd.args(["-W", "ignore"]);
            "import sys, slapos.slap, slapos.util\nURL, KEY, CERT = sys.argv[1:4]\n\
             slap = slapos.slap.slap()\n\
             slap.initializeConnection(URL, key_file=KEY, cert_file=CERT)\n"
        }
    };
    cmd.arg("-c").arg(format!("{prelude}{script}")).arg(url);
    if let Some(c) = cred {
        cmd.arg(&c.key_file).arg(&c.cert_file);
    }
    cmd.output().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Ids.

pub fn cid(s: &str) -> ComputerId {
    ComputerId::parse(s).unwrap()
}
pub fn pid(s: &str) -> PartitionId {
    PartitionId::parse(s).unwrap()
}
pub fn title(s: &str) -> InstanceTitle {
    InstanceTitle::parse(s).unwrap()
}
pub fn pref(s: &str) -> PartitionRef {
    PartitionRef::parse(s).unwrap()
}

/// Computer `c` with these partitions, no address, no label.
pub fn registration(c: &str, partitions: &[&str]) -> RegisterComputer {
    RegisterComputer {
        id: cid(c),
        partitions: partitions
            .iter()
            .map(|p| PartitionSpec {
                id: pid(p),
                addresses: vec![],
                interface: None,
                uid: None,
            })
            .collect(),
        labels: Default::default(),
    }
}

// ---------------------------------------------------------------------------------------------
// In process.

/// An in-memory master whose SLAP configuration names `computer_id`.
pub fn slap_master(computer_id: &str) -> master_lite::Master {
    let mut master = match test_pg_url() {
        None => master_lite::Master::open_in_memory().unwrap(),
        Some(url) => {
            let url = master_lite::store::DbUrl::Postgres(url);
            std::thread::spawn(move || master_lite::Master::open_db(&url).unwrap())
                .join()
                .unwrap()
        }
    };
    master.set_slap_config(master_lite::slap::SlapConfig {
        computer_id: Some(computer_id.into()),
        ..Default::default()
    });
    master
}

/// One request through the router: status, headers and the whole body.
pub async fn respond(router: Router, req: Request<Body>) -> (StatusCode, HeaderMap, Bytes) {
    let resp = router.oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, headers, body)
}

/// Supply `url`, available.
pub fn available(url: &str) -> slapos_proto::SupplyRequest {
    slapos_proto::SupplyRequest {
        url: slapos_proto::SoftwareUrl::parse(url).unwrap(),
        state: slapos_proto::SupplyState::Available,
    }
}
