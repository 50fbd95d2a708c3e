//! What scripts rely on in `slapos-master`'s command line, apart from the argument parsing in
//! `main.rs`: the exit codes (docs/cli.md), the mapping of an error to one of them, and the
//! configuration files (`client.toml` for the client subcommands, `master.toml` for `serve`).
//!
//! Precedence, for every setting: a flag, then its environment variable (`SLAPOS_MASTER`,
//! `SLAPOS_MASTER_CA`, `SLAPOS_MASTER_CERT`, `SLAPOS_MASTER_KEY`, read by clap), then the
//! configuration file, then the built-in default. A configuration file that exists but cannot be
//! read or parsed is an error, never skipped.

use std::error::Error as StdError;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use slapos_client::ClientError;
use slapos_proto::{InstallState, InstanceInfo, SoftwareReport};

/// The documented exit codes of `slapos-master` (docs/cli.md). The numbers are part of the
/// interface: never renumber one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done.
    Ok,
    /// Any failure not listed below (the master's 5xx, local I/O, a conflict…).
    Error,
    /// Bad arguments or input: unknown flag, invalid id, the master's 400.
    Usage,
    /// What was named does not exist: the master's 404, a missing database file.
    NotFound,
    /// The master refused the caller: 401 or 403.
    Refused,
    /// `request --wait` ran out of time before the connection parameters were published.
    WaitTimeout,
    /// The master could not be reached (connection refused, DNS, transport timeout).
    Unreachable,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Error => 1,
            Exit::Usage => 2,
            Exit::NotFound => 3,
            Exit::Refused => 4,
            Exit::WaitTimeout => 5,
            Exit::Unreachable => 6,
        }
    }

    /// The `kind` of the JSON error object printed under `--json`.
    pub fn kind(self) -> &'static str {
        match self {
            Exit::Ok => "ok",
            Exit::Error => "error",
            Exit::Usage => "usage",
            Exit::NotFound => "not_found",
            Exit::Refused => "refused",
            Exit::WaitTimeout => "timeout",
            Exit::Unreachable => "unreachable",
        }
    }
}

/// A command-line failure that chooses its own exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad arguments, found after parsing (exit [`Exit::Usage`]).
    #[error("{0}")]
    Usage(String),
    /// An operator command was pointed at a database file that does not exist
    /// (exit [`Exit::NotFound`]).
    #[error(
        "{command}: no master database at `{path}`{default}; refusing to create an empty one. \
         Pass --db with the database `slapos-master serve` uses{create_hint}"
    )]
    NoDatabase {
        /// The subcommand (`token create`, …).
        command: &'static str,
        /// The path tried.
        path: PathBuf,
        /// ` (the default, no --db given)` or empty.
        default: &'static str,
        /// How to create one, for the commands that can.
        create_hint: &'static str,
    },
    /// `request --wait` ran out of time (exit [`Exit::WaitTimeout`]).
    #[error("{0}")]
    WaitTimeout(String),
    /// A configuration file could not be used (exit [`Exit::Usage`]).
    #[error("configuration file {path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The exit code for an error, from the first cause in its chain that decides one.
pub fn classify<'a>(chain: impl IntoIterator<Item = &'a (dyn StdError + 'static)>) -> Exit {
    for e in chain {
        if let Some(c) = e.downcast_ref::<CliError>() {
            return match c {
                CliError::Usage(_) | CliError::Config { .. } => Exit::Usage,
                CliError::NoDatabase { .. } => Exit::NotFound,
                CliError::WaitTimeout(_) => Exit::WaitTimeout,
            };
        }
        if let Some(c) = e.downcast_ref::<ClientError>() {
            return match c {
                ClientError::Unreachable { .. } => Exit::Unreachable,
                ClientError::Api { status: 404, .. } => Exit::NotFound,
                ClientError::Api {
                    status: 401 | 403, ..
                } => Exit::Refused,
                ClientError::Api { status: 400, .. } | ClientError::BadUrl { .. } => Exit::Usage,
                _ => Exit::Error,
            };
        }
        if e.is::<slapos_proto::ids::IdError>() || e.is::<slapos_proto::identity::IdentityError>() {
            return Exit::Usage;
        }
    }
    Exit::Error
}

/// The JSON object printed on stderr for an error under `--json`:
/// `{"error": {"code": 3, "kind": "not_found", "message": "…"}}`.
pub fn json_error(exit: Exit, message: &str) -> serde_json::Value {
    serde_json::json!({
        "error": { "code": exit.code(), "kind": exit.kind(), "message": message }
    })
}

/// What a waiting `request --wait` knows of the instance's release on its computer.
#[derive(Debug, Clone, Copy)]
pub enum ReleaseSeen<'a> {
    /// The computer could not be read (a user may read its instances, not the computer).
    Unknown,
    /// The computer was read; its node has not reported the release yet.
    NotReported,
    /// The node's last install report of the release.
    Reported(&'a SoftwareReport),
}

/// The one line `request --wait` shows while it waits (docs/cli.md): the first thing, in the
/// order a node does them, that keeps the connection parameters from being published: the
/// release to install (with the node's message of its step), the start at the current
/// revision, an error, failing promises, then the publication itself.
pub fn wait_progress(info: &InstanceInfo, release: ReleaseSeen<'_>) -> String {
    // A request delegated to another master (federation): its status line.
    if let Some(status) = info
        .bang
        .as_deref()
        .filter(|b| b.starts_with(crate::federation::DELEGATED_PREFIX))
        && info.computer.as_str() == crate::federation::DELEGATED_COMPUTER
    {
        return format!("{}: {status}", info.title);
    }
    let last_line = |m: &str| m.trim().lines().last().unwrap_or("").trim().to_owned();
    let current = info
        .reported
        .as_ref()
        .map(|r| &r.report)
        .filter(|r| r.revision == info.revision);
    let what = match (current, release) {
        (Some(r), _) if r.error.is_some() => {
            format!("error: {}", last_line(r.error.as_deref().unwrap_or("")))
        }
        (Some(r), _) if r.promises.iter().any(|p| !p.ok) => {
            let failing: Vec<&str> = r
                .promises
                .iter()
                .filter(|p| !p.ok)
                .map(|p| p.name.as_str())
                .collect();
            format!(
                "{}, promises failing: {}",
                r.state.as_str(),
                failing.join(", ")
            )
        }
        (Some(r), _) => format!(
            "{}, waiting for the connection parameters",
            r.state.as_str()
        ),
        (None, ReleaseSeen::Reported(s)) => match (s.state, s.message.as_deref()) {
            (InstallState::Building, None) => "installing the release".to_owned(),
            (InstallState::Building, Some(m)) => {
                format!("installing the release: {}", last_line(m))
            }
            (InstallState::Error, m) => format!(
                "release install failed: {}",
                last_line(m.unwrap_or("no reason given"))
            ),
            (InstallState::Destroyed, _) => "the release was removed from the computer".into(),
            (InstallState::Available, _) => starting(info),
        },
        (None, ReleaseSeen::NotReported) => {
            "allocated, waiting for the node to install the release".into()
        }
        (None, ReleaseSeen::Unknown) => match &info.reported {
            Some(_) => starting(info),
            None => "allocated, waiting for the node (release install, then start)".into(),
        },
    };
    format!(
        "{} on {}/{}: {what}",
        info.title, info.computer, info.partition
    )
}

/// `starting`, with the revision the node last reported when it is an older one.
fn starting(info: &InstanceInfo) -> String {
    match &info.reported {
        Some(r) if r.report.revision != info.revision => format!(
            "starting (the node last reported revision {}, this is {})",
            r.report.revision, info.revision
        ),
        _ => "release installed, starting".into(),
    }
}

/// The client subcommands' settings from `client.toml`; the keys are the flags' names.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientFile {
    /// `--master`.
    pub master: Option<String>,
    /// `--ca`.
    pub ca: Option<PathBuf>,
    /// `--cert`.
    pub cert: Option<PathBuf>,
    /// `--key`.
    pub key: Option<PathBuf>,
}

/// Where `client.toml` is: `$XDG_CONFIG_HOME/slapos/client.toml`, else
/// `$HOME/.config/slapos/client.toml` (each only when set and absolute, as the XDG spec says).
pub fn client_file_path(xdg_config_home: Option<&str>, home: Option<&str>) -> Option<PathBuf> {
    let absolute = |s: Option<&str>| s.map(PathBuf::from).filter(|p| p.is_absolute());
    absolute(xdg_config_home)
        .or_else(|| absolute(home).map(|h| h.join(".config")))
        .map(|d| d.join("slapos").join("client.toml"))
}

/// Reads a TOML settings file. A missing file is `None` when `optional`, an error otherwise;
/// one that exists but cannot be read or parsed is always an error.
pub fn load_toml<T: for<'de> Deserialize<'de>>(
    path: &Path,
    optional: bool,
) -> Result<Option<T>, CliError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CliError::Config {
                path: path.to_owned(),
                reason: format!("cannot read it: {e}"),
            });
        }
    };
    toml::from_str(&text)
        .map(Some)
        .map_err(|e| CliError::Config {
            path: path.to_owned(),
            reason: e.to_string().trim_end().to_owned(),
        })
}

/// `serve`'s settings from `/etc/slapos/master.toml` (or `--config FILE`); the keys are the
/// flags' names.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServeFile {
    /// `--listen`.
    pub listen: Option<String>,
    /// `--db`.
    pub db: Option<String>,
    /// `--cfg`.
    pub cfg: Option<PathBuf>,
    /// `--tls-dir`.
    pub tls_dir: Option<PathBuf>,
    /// `--tls-name` (a list).
    #[serde(default)]
    pub tls_name: Vec<String>,
    /// `--allow-plain-http`.
    pub allow_plain_http: Option<bool>,
    /// `--local-operator` (a list of user names or uids).
    #[serde(default)]
    pub local_operator: Vec<String>,
    /// `--federate` (a list of remote specifications).
    #[serde(default)]
    pub federate: Vec<String>,
}

/// The default `serve` configuration file, read when it exists and no `--config` is given.
pub const DEFAULT_SERVE_CONFIG: &str = "/etc/slapos/master.toml";

/// The database an operator command (`token create`, …) works on: `--db`, else the default
/// `slapos-master.db`. An SQLite file that does not exist is refused unless `create` is
/// `Some(true)` (`--create-db`; `None`: the command has no such flag): the command would
/// otherwise create an empty database the master never reads.
pub fn operator_db(
    command: &'static str,
    db: Option<crate::store::DbUrl>,
    create: Option<bool>,
) -> Result<crate::store::DbUrl, CliError> {
    let given = db.is_some();
    let db = db.unwrap_or_else(|| crate::store::DbUrl::Sqlite(PathBuf::from("slapos-master.db")));
    if let crate::store::DbUrl::Sqlite(path) = &db
        && create != Some(true)
        && !path.exists()
    {
        return Err(CliError::NoDatabase {
            command,
            path: path.clone(),
            default: if given {
                ""
            } else {
                " (the default, no --db given)"
            },
            create_hint: match create {
                Some(_) => ", or --create-db to start a new master's database there",
                None => "",
            },
        });
    }
    Ok(db)
}

/// A point in time of `usage --since/--until`: unix milliseconds (all digits), or a duration
/// back from `now_ms` (`90s`, `30m`, `24h`, `7d`).
pub fn parse_when(s: &str, now_ms: u64) -> Result<u64, CliError> {
    let bad = || {
        CliError::Usage(format!(
            "time `{s}`: expected unix milliseconds or a duration back from now (90s, 30m, 24h, 7d)"
        ))
    };
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|_| bad());
    }
    let unit_ms: u64 = match s.chars().last() {
        Some('s') => 1_000,
        Some('m') => 60_000,
        Some('h') => 3_600_000,
        Some('d') => 86_400_000,
        _ => return Err(bad()),
    };
    let n: u64 = s[..s.len() - 1].parse().map_err(|_| bad())?;
    n.checked_mul(unit_ms)
        .map(|back| now_ms.saturating_sub(back))
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    #[test]
    fn usage_times_are_unix_ms_or_durations_back_from_now() {
        let now = 1_000_000_000;
        assert_eq!(super::parse_when("1700", now).unwrap(), 1700);
        assert_eq!(super::parse_when("90s", now).unwrap(), now - 90_000);
        assert_eq!(super::parse_when("24h", now).unwrap(), now - 86_400_000);
        assert_eq!(super::parse_when("365d", 1).unwrap(), 0);
        for bad in ["", "h", "-3h", "3w", "1.5h", "99999999999999999999d"] {
            let e = super::parse_when(bad, now).unwrap_err().to_string();
            assert!(e.contains("unix milliseconds"), "{bad}: {e}");
        }
    }

    use super::*;

    #[test]
    fn exit_codes_are_distinct_and_stable() {
        let all = [
            Exit::Ok,
            Exit::Error,
            Exit::Usage,
            Exit::NotFound,
            Exit::Refused,
            Exit::WaitTimeout,
            Exit::Unreachable,
        ];
        let codes: Vec<u8> = all.iter().map(|e| e.code()).collect();
        assert_eq!(codes, [0, 1, 2, 3, 4, 5, 6]);
        let mut kinds: Vec<&str> = all.iter().map(|e| e.kind()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds.len(), all.len());
    }

    fn api(status: u16) -> ClientError {
        ClientError::Api {
            method: "GET",
            url: "http://x/v1".into(),
            status,
            kind: "k".into(),
            message: "m".into(),
        }
    }

    #[test]
    fn errors_map_to_their_codes() {
        let one = |e: &(dyn StdError + 'static)| classify([e]);
        assert_eq!(one(&api(404)), Exit::NotFound);
        assert_eq!(one(&api(403)), Exit::Refused);
        assert_eq!(one(&api(401)), Exit::Refused);
        assert_eq!(one(&api(400)), Exit::Usage);
        assert_eq!(one(&api(500)), Exit::Error);
        assert_eq!(one(&api(409)), Exit::Error);
        assert_eq!(one(&CliError::Usage("x".into())), Exit::Usage);
        assert_eq!(one(&CliError::WaitTimeout("x".into())), Exit::WaitTimeout);
        let id = slapos_proto::ComputerId::parse("../x").unwrap_err();
        assert_eq!(one(&id), Exit::Usage);
        let io = std::io::Error::other("disk");
        assert_eq!(one(&io), Exit::Error);
        // The first cause that decides wins, wherever it sits in the chain.
        assert_eq!(classify([&io as &dyn StdError, &api(404)]), Exit::NotFound);
    }

    #[test]
    fn json_error_has_code_kind_and_message() {
        let v = json_error(Exit::Refused, "no");
        assert_eq!(v["error"]["code"], 4);
        assert_eq!(v["error"]["kind"], "refused");
        assert_eq!(v["error"]["message"], "no");
    }

    /// Instance `web` at revision 7; `reported`: the node's report (revision, error) with
    /// these promises.
    fn instance(reported: Option<(u64, Option<&str>)>, promises: &[(&str, bool)]) -> InstanceInfo {
        let mut v = serde_json::json!({
            "title": "web", "root_title": "web", "requester": null,
            "software_url": "/srv/sr/web.toml", "software_type": "default",
            "parameters": {}, "state": "started", "computer": "C1", "partition": "p0",
            "connection": {}, "reported": null, "bang": null, "revision": 7, "children": []
        });
        if let Some((revision, error)) = reported {
            let promises: Vec<_> = promises
                .iter()
                .map(|(n, ok)| serde_json::json!({"name": n, "ok": ok, "message": "", "at_ms": 1}))
                .collect();
            v["reported"] = serde_json::json!({
                "state": "started", "revision": revision, "promises": promises,
                "error": error, "at_ms": 1
            });
        }
        serde_json::from_value(v).unwrap()
    }

    fn install(state: InstallState, message: Option<&str>) -> SoftwareReport {
        SoftwareReport {
            url: slapos_proto::SoftwareUrl::parse("/srv/sr/web.toml").unwrap(),
            state,
            message: message.map(str::to_owned),
            parameter_model: None,
        }
    }

    #[test]
    fn wait_progress_names_what_the_instance_waits_for() {
        use InstallState::*;
        use ReleaseSeen::*;
        let fresh = instance(None, &[]);
        let says = |i: &InstanceInfo, r: ReleaseSeen<'_>, want: &str| {
            let line = wait_progress(i, r);
            assert!(line.starts_with("web on C1/p0: "), "{line}");
            assert!(line.ends_with(want), "{line} / want …{want}");
        };
        says(
            &fresh,
            Unknown,
            "allocated, waiting for the node (release install, then start)",
        );
        says(
            &fresh,
            NotReported,
            "allocated, waiting for the node to install the release",
        );
        let b = install(Building, None);
        says(&fresh, Reported(&b), "installing the release");
        let b = install(Building, Some("fetch\nbuild step 2/3: make\n"));
        says(
            &fresh,
            Reported(&b),
            "installing the release: build step 2/3: make",
        );
        let e = install(Error, Some("install failed\n--- log ---\ncc: not found"));
        says(
            &fresh,
            Reported(&e),
            "release install failed: cc: not found",
        );
        let a = install(Available, None);
        says(&fresh, Reported(&a), "release installed, starting");
        let d = install(Destroyed, None);
        says(
            &fresh,
            Reported(&d),
            "the release was removed from the computer",
        );

        // A report of an older revision: still starting, whatever the release says.
        let old = instance(Some((3, Some("old failure"))), &[("p", false)]);
        says(
            &old,
            Reported(&a),
            "starting (the node last reported revision 3, this is 7)",
        );
        says(
            &old,
            Unknown,
            "starting (the node last reported revision 3, this is 7)",
        );
        // The current revision: its error, then its failing promises, then the publication.
        let err = instance(Some((7, Some("render failed\nmissing key `port`"))), &[]);
        says(&err, Reported(&a), "error: missing key `port`");
        let failing = instance(
            Some((7, None)),
            &[("up", true), ("http", false), ("disk", false)],
        );
        says(&failing, Unknown, "started, promises failing: http, disk");
        let up = instance(Some((7, None)), &[("up", true)]);
        says(
            &up,
            Unknown,
            "started, waiting for the connection parameters",
        );
        // The release state no longer matters once the node reported the current revision.
        says(
            &up,
            Reported(&e),
            "started, waiting for the connection parameters",
        );
    }

    #[test]
    fn client_file_path_follows_xdg() {
        assert_eq!(
            client_file_path(Some("/x"), Some("/home/a")),
            Some(PathBuf::from("/x/slapos/client.toml"))
        );
        assert_eq!(
            client_file_path(None, Some("/home/a")),
            Some(PathBuf::from("/home/a/.config/slapos/client.toml"))
        );
        assert_eq!(
            client_file_path(Some("relative"), Some("/home/a")),
            Some(PathBuf::from("/home/a/.config/slapos/client.toml")),
            "a relative XDG_CONFIG_HOME is ignored"
        );
        assert_eq!(client_file_path(None, None), None);
    }

    #[test]
    fn config_files_parse_refuse_unknown_keys_and_report_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("client.toml");
        assert_eq!(load_toml::<ClientFile>(&p, true).unwrap(), None);
        assert!(load_toml::<ClientFile>(&p, false).is_err(), "required");
        std::fs::write(&p, "master = \"https://m:8355\"\nca = \"/etc/ca.pem\"\n").unwrap();
        let c = load_toml::<ClientFile>(&p, true).unwrap().unwrap();
        assert_eq!(c.master.as_deref(), Some("https://m:8355"));
        assert_eq!(c.ca, Some(PathBuf::from("/etc/ca.pem")));
        std::fs::write(&p, "mastr = \"x\"\n").unwrap();
        let e = load_toml::<ClientFile>(&p, true).unwrap_err().to_string();
        assert!(e.contains("client.toml") && e.contains("mastr"), "{e}");

        let s = dir.path().join("master.toml");
        std::fs::write(
            &s,
            "listen = \"0.0.0.0:8355\"\ndb = \"/var/lib/slapos/master.db\"\n\
             tls-dir = \"/var/lib/slapos/tls\"\ntls-name = [\"m.example\"]\n\
             allow-plain-http = false\nlocal-operator = [\"ops\"]\n",
        )
        .unwrap();
        let f = load_toml::<ServeFile>(&s, false).unwrap().unwrap();
        assert_eq!(f.listen.as_deref(), Some("0.0.0.0:8355"));
        assert_eq!(f.tls_name, ["m.example"]);
        assert_eq!(f.local_operator, ["ops"]);
        assert_eq!(f.allow_plain_http, Some(false));
    }

    #[test]
    fn operator_db_refuses_a_missing_file() {
        use crate::store::DbUrl;
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.db");
        let e = operator_db(
            "token create",
            Some(DbUrl::Sqlite(missing.clone())),
            Some(false),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains(&missing.display().to_string()), "{e}");
        assert!(e.contains("--create-db"), "{e}");
        let e = operator_db("cert revoke", Some(DbUrl::Sqlite(missing.clone())), None)
            .unwrap_err()
            .to_string();
        assert!(!e.contains("--create-db"), "{e}");
        assert!(operator_db("token create", Some(DbUrl::Sqlite(missing)), Some(true)).is_ok());
        let present = dir.path().join("m.db");
        std::fs::write(&present, b"").unwrap();
        assert!(operator_db("cert list", Some(DbUrl::Sqlite(present)), None).is_ok());
    }
}
