//! A real, throw-away PostgreSQL server for tests and benches: `initdb` into a fresh directory,
//! `postgres` on a free loopback port, stopped and removed on drop.
//!
//! Run as root, the server runs as the unprivileged `postgres` user (else `nobody`), which is
//! what `initdb` demands. When the binaries are missing, [`TestPg::start`] returns
//! [`Skip`] with the reason (tests print it and pass), unless `SLAPOS_REQUIRE_TOOLS=1`, in
//! which case it panics: CI proves the PostgreSQL tests ran. `scripts/deps/postgres.sh`
//! installs the Debian packages.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Why a PostgreSQL test did not run.
#[derive(Debug)]
pub struct Skip(pub String);

/// A running throw-away server.
#[derive(Debug)]
pub struct TestPg {
    dir: PathBuf,
    bin: PathBuf,
    child: Option<Child>,
    uid: Option<(u32, u32)>,
    fsync: bool,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The directory holding `initdb` and `postgres`: `$SLAPOS_PG_BIN`, Debian's
/// `/usr/lib/postgresql/<newest>/bin`, or the `PATH`.
fn bin_dir() -> Option<PathBuf> {
    if let Ok(d) = std::env::var("SLAPOS_PG_BIN") {
        return Some(PathBuf::from(d));
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").is_file() && b.join("postgres").is_file())
        .collect();
    versions.sort();
    versions.pop().or_else(|| {
        std::env::var_os("PATH")
            .and_then(|p| std::env::split_paths(&p).find(|d| d.join("initdb").is_file()))
    })
}

/// `Err(Skip)`, or a panic when `SLAPOS_REQUIRE_TOOLS=1`.
fn skip(reason: String) -> Result<TestPg, Skip> {
    if std::env::var("SLAPOS_REQUIRE_TOOLS").as_deref() == Ok("1") {
        panic!("SLAPOS_REQUIRE_TOOLS=1 but {reason}");
    }
    Err(Skip(reason))
}

/// A port free on 127.0.0.1 now.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl TestPg {
    /// Start a server with `fsync=off` (tests: durability is SQLite's and PostgreSQL's own
    /// business, not what they check).
    pub fn start() -> Result<TestPg, Skip> {
        Self::start_with(false)
    }

    /// Start a server; `fsync`: keep PostgreSQL's durable commits (benches).
    pub fn start_with(fsync: bool) -> Result<TestPg, Skip> {
        let Some(bin) = bin_dir() else {
            return skip(
                "PostgreSQL is not installed (no initdb/postgres; scripts/deps/postgres.sh \
                 installs it)"
                    .into(),
            );
        };
        let uid = if nix::unistd::geteuid().is_root() {
            let user = ["postgres", "nobody"]
                .iter()
                .find_map(|n| nix::unistd::User::from_name(n).ok().flatten());
            match user {
                Some(u) => Some((u.uid.as_raw(), u.gid.as_raw())),
                None => return skip("running as root and no `postgres` or `nobody` user".into()),
            }
        } else {
            None
        };
        let dir = std::env::temp_dir().join(format!(
            "slapos-pg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| Skip(format!("mkdir {dir:?}: {e}")))?;
        if let Some((u, g)) = uid {
            nix::unistd::chown(
                &dir,
                Some(nix::unistd::Uid::from_raw(u)),
                Some(nix::unistd::Gid::from_raw(g)),
            )
            .map_err(|e| Skip(format!("chown {dir:?}: {e}")))?;
        }
        let mut pg = TestPg {
            dir,
            bin,
            child: None,
            uid,
            fsync,
            port: 0,
        };
        let out = pg
            .command("initdb")
            .args(["-D"])
            .arg(pg.data())
            .args(["-U", "postgres", "-A", "trust", "--no-locale", "-E", "UTF8"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| Skip(format!("initdb: {e}")))?;
        if !out.status.success() {
            return skip(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        pg.port = free_port().map_err(|e| Skip(format!("free port: {e}")))?;
        pg.launch().map_err(Skip)?;
        Ok(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn command(&self, name: &str) -> Command {
        let mut c = Command::new(self.bin.join(name));
        if let Some((u, g)) = self.uid {
            c.uid(u).gid(g);
        }
        c.current_dir(&self.dir);
        c
    }

    /// Start the postmaster and wait until it accepts connections.
    fn launch(&mut self) -> Result<(), String> {
        let log = std::fs::File::create(self.dir.join("log"))
            .map_err(|e| format!("postgres log: {e}"))?;
        if let Some((u, g)) = self.uid {
            let _ = nix::unistd::chown(
                &self.dir.join("log"),
                Some(nix::unistd::Uid::from_raw(u)),
                Some(nix::unistd::Gid::from_raw(g)),
            );
        }
        let fsync = if self.fsync { "on" } else { "off" };
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                &format!("fsync={fsync}"),
                "-c",
                "max_connections=200",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("start postgres: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if crate::store::pg_connect(&self.url("postgres")).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "postgres did not accept connections within 30 s: {}",
                    std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The URL of database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Create a fresh database and return its URL.
    pub fn create_db(&self, name: &str) -> Result<String, postgres::Error> {
        let mut c = crate::store::pg_connect(&self.url("postgres"))?;
        c.batch_execute(&format!("CREATE DATABASE {name}"))?;
        Ok(self.url(name))
    }

    /// A fresh database with a unique name.
    pub fn fresh_db(&self) -> Result<String, postgres::Error> {
        self.create_db(&format!(
            "t{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ))
    }

    /// Stop the server (fast shutdown: clients are disconnected).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Ok(pid) = i32::try_from(c.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGINT,
                );
            }
            let _ = c.wait();
        }
    }

    /// Start it again on the same port and data.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        self.launch()
    }

    /// The server's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Postmaster and directory of the [`TestPg::shared`] server, for the exit hook.
static SHARED: std::sync::OnceLock<Result<TestPg, String>> = std::sync::OnceLock::new();

extern "C" fn stop_shared() {
    if let Some(Ok(pg)) = SHARED.get() {
        if let Some(c) = &pg.child
            && let Ok(pid) = i32::try_from(c.id())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGQUIT,
            );
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        }
        let _ = std::fs::remove_dir_all(&pg.dir);
    }
}

impl TestPg {
    /// One server for the whole test process (each test takes a [`TestPg::fresh_db`]); it is
    /// stopped and removed when the process exits.
    pub fn shared() -> Result<&'static TestPg, Skip> {
        let r = SHARED.get_or_init(|| {
            let r = TestPg::start().map_err(|s| s.0);
            if r.is_ok() {
                // SAFETY: registers a plain `extern "C" fn` with no captured state; it runs at
                // process exit (the test harness ends with `exit`), reads a OnceLock that is
                // initialised by then, and only signals a child and removes a directory.
                unsafe {
                    libc::atexit(stop_shared);
                }
            }
            r
        });
        match r {
            Ok(pg) => Ok(pg),
            Err(reason) => Err(Skip(reason.clone())),
        }
    }
}

impl Drop for TestPg {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Ok(pid) = i32::try_from(c.id()) {
                // Immediate shutdown: nothing to keep.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGQUIT,
                );
            }
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
