//! A master over mTLS (`slapos-master serve --tls-dir`), its operator CLI and the certificate
//! clients of its users, for the tests of node identity and multi-host set-ups.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::{Client, Proc, bin, url_in};

/// `slapos-master ARGS` run to completion.
pub fn master_cli(args: &[&str]) -> Output {
    Command::new(bin("slapos-master"))
        .args(args)
        .output()
        .expect("run slapos-master")
}

/// The stdout of `out`, asserting that the command (`what`) succeeded (its stdout and stderr
/// in the message otherwise).
pub fn stdout_ok(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `p` as UTF-8 (for argument lists of `&str`).
pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A real `slapos-master serve --tls-dir` with its files in one directory: database
/// `master.db`, CA and server certificate in `tls/`, users' certificates in `creds/`.
pub struct TlsMaster {
    /// The process.
    pub proc: Proc,
    /// The URL it printed (`https://HOST:PORT`).
    pub url: String,
    /// The port it listens on.
    pub port: u16,
    /// The database file.
    pub db: PathBuf,
    /// The `--tls-dir` (`ca.pem`, `ca.key`, …).
    pub tls_dir: PathBuf,
    /// Where `user create --out` wrote `<name>.pem` and `<name>.key`.
    pub creds: PathBuf,
}

impl TlsMaster {
    /// In `dir`: `slapos-master user create` for each `(name, admin)` of `users` (the first one
    /// creates the CA), then `serve` on `listen` (`127.0.0.1:0`, `0.0.0.0:0`) with a server
    /// certificate that also names each of `tls_names` (`--tls-name`).
    pub fn start(dir: &Path, listen: &str, users: &[(&str, bool)], tls_names: &[&str]) -> Self {
        let (db, tls_dir, creds) = (dir.join("master.db"), dir.join("tls"), dir.join("creds"));
        for &(name, admin) in users {
            let mut args = vec![
                "user",
                "create",
                name,
                "--out",
                path_str(&creds),
                "--tls-dir",
                path_str(&tls_dir),
                "--db",
                path_str(&db),
                // Before the first `serve`: the first user creates the database.
                "--create-db",
            ];
            if admin {
                args.push("--admin");
            }
            stdout_ok("user create", master_cli(&args));
        }
        let mut cmd = Command::new(bin("slapos-master"));
        cmd.args(["serve", "--listen", listen, "--db"])
            .arg(&db)
            .arg("--tls-dir")
            .arg(&tls_dir);
        for name in tls_names {
            cmd.args(["--tls-name", name]);
        }
        let proc = Proc::spawn("master", cmd);
        let line = proc.wait_line("listening on https://", Duration::from_secs(30));
        let url = url_in(&line).unwrap_or_else(|| panic!("no https url in {line:?}"));
        let port = url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        TlsMaster {
            proc,
            url,
            port,
            db,
            tls_dir,
            creds,
        }
    }

    /// The CA certificate file (`tls/ca.pem`), what nodes and clients trust.
    pub fn ca_file(&self) -> PathBuf {
        self.tls_dir.join("ca.pem")
    }

    /// The CA certificate (PEM).
    pub fn ca(&self) -> String {
        std::fs::read_to_string(self.ca_file()).expect("ca.pem")
    }

    /// A client at `https://127.0.0.1:PORT` with the certificate of user `name`.
    pub fn client(&self, name: &str) -> Client {
        let read = |ext: &str| {
            std::fs::read_to_string(self.creds.join(format!("{name}.{ext}")))
                .expect("credential file")
        };
        Client::with_identity(
            &format!("https://127.0.0.1:{}", self.port),
            &self.ca(),
            &read("pem"),
            &read("key"),
        )
        .unwrap_or_else(|e| panic!("client {name}: {e}"))
    }

    /// `slapos-master ARGS --db DB` on this master's database; its stdout, asserting success.
    pub fn cli(&self, what: &str, args: &[&str]) -> String {
        let mut args = args.to_vec();
        args.extend(["--db", path_str(&self.db)]);
        stdout_ok(what, master_cli(&args))
    }

    /// A new enrollment token for `computer` (`token create --computer C EXTRA…`).
    pub fn token(&self, computer: &str, extra: &[&str]) -> String {
        let mut args = vec!["token", "create", "--computer", computer];
        args.extend_from_slice(extra);
        self.cli("token create", &args).trim().to_owned()
    }
}
