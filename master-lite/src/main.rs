//! `slapos-master`: the master server and its client subcommands.
//!
//! ```text
//! slapos-master serve [--config /etc/slapos/master.toml] [--listen 127.0.0.1:8355]
//!               [--db slapos-master.db | postgres://…] [--cfg slapos-proxy.cfg]
//!               [--tls-dir DIR [--tls-name NAME]...] [--allow-plain-http]
//! slapos-master token create --computer ID [--ttl SECONDS] [--db FILE] [--create-db]
//! slapos-master user create NAME [--admin] --out DIR --tls-dir DIR [--db FILE] [--create-db]
//! slapos-master cert revoke (SERIAL | --identity ID) [--db FILE]
//! slapos-master cert list [--db FILE]
//! slapos-master standalone [--dir slapos-standalone] [--listen 127.0.0.1:8355] [--partitions 4]
//!               [--example hello-web]
//! slapos-master [--master URL] [--json] supply URL [--computer ID] [--remove]
//! slapos-master [--master URL] [--json] request TITLE URL [--type T] [--param k=v]...
//!               [--params-json FILE|JSON] [--sla k=v]... [--state S] [--wait SECONDS]
//! slapos-master [--master URL] [--json] list [--computers]
//! slapos-master [--master URL] [--json] show TITLE [--root R]
//! slapos-master [--master URL] [--json] computer ID
//! slapos-master [--master URL] [--json] destroy TITLE
//! slapos-master [--master URL] [--json] usage [--since 24h] [--until T] [--by instance] [--csv]
//! slapos-master completions (bash|zsh|fish)     (hidden; scripts/gen-cli-docs.sh)
//! slapos-master man --out DIR                   (hidden: slapos-master.1, slapos-master-*.1)
//! ```
//!
//! Client subcommands speak mTLS with `--ca FILE --cert FILE --key FILE` (and an `https://`
//! `--master`); each also comes from `SLAPOS_MASTER`, `SLAPOS_MASTER_CA`, `SLAPOS_MASTER_CERT`,
//! `SLAPOS_MASTER_KEY` or `~/.config/slapos/client.toml`. `token`, `user` and `cert` work on the
//! master's database (and CA) files directly: they are the operator's tools on the master's
//! host, usable while it runs; they never create a database unless told (`--create-db`).
//!
//! Exit codes (docs/cli.md, [`master_lite::cli::Exit`]): 0 success, 1 error, 2 usage, 3 not
//! found, 4 refused, 5 `request --wait` timed out, 6 master unreachable. With `--json`, errors
//! are a JSON object on stderr too.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, Subcommand};
use master_lite::cli::{self, CliError, ClientFile, Exit, ServeFile};
use master_lite::store::DbUrl;
use master_lite::{DEFAULT_LISTEN, DEFAULT_MASTER_URL};
use slapos_client::Client;
use slapos_proto::text::terminal_safe;
use slapos_proto::{
    ComputerId, ComputerInfo, InstanceInfo, InstanceRequest, InstanceState, InstanceTitle, Params,
    SoftwareType, SoftwareUrl, StateChange, SupplyRequest, SupplyState, UsageBy,
};

/// jemalloc, not glibc's malloc: a request's memory is allocated on one thread and freed on
/// another (the runtime's workers and the database threads hand bodies and answers to each
/// other). With the one glibc arena `limit_malloc_arenas` sets (for memory), every allocation
/// or free that missed its thread's small cache queued on that arena's lock: at 32 requesters
/// the writer spent up to a fifth of its CPU there, and the rate swung from 10k to 17k
/// requests/s from run to run; glibc's default arenas reach 21–22k at half again the peak
/// memory; jemalloc with one arena, 24–26k at the same memory (docs/fleet.md, "The
/// allocator, measured"). SQLite allocates through it too (`store::sqlite_alloc`).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its first allocation. One arena, not four per CPU: the threads
/// share it through their caches (the rate is the same), and memory freed by one thread serves
/// the next without waiting for the 10 s decay of another arena's pages (peak RSS of
/// `slap-bench`'s 1,000-partition computer: 39 MB with the default arenas, 30 MB with one;
/// glibc: 28 MB).
// SAFETY: jemalloc reads this symbol once, as a NUL-terminated string of options that lives for
// the whole program; nothing else defines it.
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: &[u8; 10] = b"narenas:1\0";

#[derive(Parser)]
#[command(
    name = "slapos-master",
    version,
    about = "Lightweight SlapOS master and its client",
    after_long_help = EXIT_STATUS
)]
struct Cli {
    /// Master URL for the client subcommands [default: `master` in client.toml, else
    /// http://127.0.0.1:8355].
    #[arg(long, global = true, env = "SLAPOS_MASTER")]
    master: Option<String>,
    /// Print the API's JSON instead of tables (errors too: a JSON object on stderr).
    #[arg(long, global = true)]
    json: bool,
    /// The master's CA certificate (PEM): talk mTLS to an https:// --master (with --cert and
    /// --key).
    #[arg(long, global = true, env = "SLAPOS_MASTER_CA")]
    ca: Option<PathBuf>,
    /// Client certificate (PEM), with --ca.
    #[arg(long, global = true, env = "SLAPOS_MASTER_CERT")]
    cert: Option<PathBuf>,
    /// Client private key (PEM), with --ca.
    #[arg(long, global = true, env = "SLAPOS_MASTER_KEY")]
    key: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

/// The exit codes (docs/cli.md), in `--help` and the man page.
const EXIT_STATUS: &str = "Exit status: 0 done, 1 error, 2 usage (bad arguments or input, the \
master's 400), 3 not found, 4 refused (401/403), 5 `request --wait` timed out, 6 master \
unreachable. With --json, an error is one JSON object on stderr: \
{\"error\": {\"code\", \"kind\", \"message\"}}.";

#[derive(Subcommand)]
enum Cmd {
    /// Copy a master's whole state into another database (e.g. a box's SQLite file into the
    /// PostgreSQL database of a fleet). Stop the master first.
    Migrate {
        /// The source: `sqlite:PATH`, a path, or `postgres://…`.
        #[arg(long)]
        from: DbUrl,
        /// The target (created and migrated if needed): `postgres://…` or `sqlite:PATH`.
        #[arg(long)]
        to: DbUrl,
        /// Replace the content of a target that is not empty.
        #[arg(long)]
        force: bool,
    },
    /// Run the master: HTTP API over an embedded SQLite database, or as one of several
    /// replicas on a PostgreSQL database (`--db postgres://…`).
    Serve {
        /// Settings file whose keys are these flags' names (`listen`, `db`, `tls-dir`, …);
        /// flags win over it [default: /etc/slapos/master.toml when it exists].
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Address to listen on (port 0 picks a free port) [default: 127.0.0.1:8355, or the
        /// host and port of --cfg].
        #[arg(long)]
        listen: Option<String>,
        /// Database: an SQLite file created if missing (`PATH` or `sqlite:PATH`), or a
        /// PostgreSQL database shared by replicas (`postgres://USER@HOST:PORT/DB`)
        /// [default: slapos-master.db, or the database_uri of --cfg].
        #[arg(long)]
        db: Option<DbUrl>,
        /// slapproxy's configuration file (`[slapos] computer_id`, `[slapproxy] host, port,
        /// database_uri, software_product_list`); --listen and --db win over it.
        #[arg(long)]
        cfg: Option<PathBuf>,
        /// Serve mTLS with the CA kept in DIR (created the first time: ca.key 0600, ca.pem).
        #[arg(long, value_name = "DIR")]
        tls_dir: Option<PathBuf>,
        /// Extra DNS name or IP of the server certificate (localhost, 127.0.0.1, ::1 and the
        /// listening IP are always in); repeatable.
        #[arg(long = "tls-name", value_name = "NAME")]
        tls_names: Vec<String>,
        /// Serve plain HTTP on a non-loopback address (every caller is then the operator).
        #[arg(long)]
        allow_plain_http: bool,
        /// A local user (name or uid) who acts as the operator over plain HTTP on this host,
        /// besides root and the master's own user; repeatable.
        #[arg(long = "local-operator", value_name = "USER", value_parser = master_lite::local::parse_user)]
        local_operators: Vec<u32>,
        /// Delegate requests to another master (federation, docs/master-lite.md): `URL` then
        /// `,release=SR` (repeatable), `,cert=PEM,key=PEM`, `,ca=PEM`, `,api=native|slap`,
        /// `,computer=C,partition=P`; requests for a listed release, or with SLA `master=URL`,
        /// go there. Repeatable; adds to the `[multimaster/URL]` sections of --cfg.
        #[arg(long = "federate", value_name = "SPEC")]
        federate: Vec<String>,
    },
    /// One-time enrollment tokens of computers.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// User and admin certificates.
    User {
        #[command(subcommand)]
        cmd: UserCmd,
    },
    /// Issued certificates.
    Cert {
        #[command(subcommand)]
        cmd: CertCmd,
    },
    /// Run the master and a local node in one process (the single-box default).
    Standalone {
        /// Directory for the database and the node's software, instances and cache.
        #[arg(long, default_value = "slapos-standalone")]
        dir: PathBuf,
        /// Address to listen on (port 0 picks a free port).
        #[arg(long, default_value = DEFAULT_LISTEN)]
        listen: String,
        /// Partitions of the local node.
        #[arg(long, default_value_t = 4)]
        partitions: u32,
        /// Supply and request an example release once up (a name under examples/, or the path
        /// of a software.toml), and print its URL.
        #[arg(long)]
        example: Option<String>,
        /// Who the local node's partitions run as: auto (a unix user each when run as root),
        /// users, or none (the node's own user).
        #[arg(long, default_value = "auto")]
        isolation: node_edge::IsolationMode,
        /// A local user (name or uid) who acts as the operator over plain HTTP on this host,
        /// besides root and the master's own user; repeatable.
        #[arg(long = "local-operator", value_name = "USER", value_parser = master_lite::local::parse_user)]
        local_operators: Vec<u32>,
    },
    /// Supply a software release to a computer (or remove it).
    Supply {
        /// Release URL: what a slapos-node fetches (http(s)://, file:// or an absolute path);
        /// the master records any other string with a warning.
        url: String,
        /// Computer id [default: the master's only computer, if it has exactly one].
        #[arg(long)]
        computer: Option<String>,
        /// Ask the node to remove the release instead.
        #[arg(long)]
        remove: bool,
    },
    /// Request an instance (idempotent by title) and print its connection parameters.
    Request {
        /// Instance title.
        title: String,
        /// Software release URL.
        url: String,
        /// Software type.
        #[arg(long = "type", default_value = "default")]
        software_type: String,
        /// Parameter `key=value` (string value); repeatable; overrides --params-json.
        #[arg(long = "param", value_name = "K=V")]
        params: Vec<String>,
        /// Parameters as a JSON object, inline (starting with `{`) or in a file.
        #[arg(long, value_name = "FILE|JSON")]
        params_json: Option<String>,
        /// SLA filter `computer_guid=ID` or `LABEL=VALUE`; repeatable.
        #[arg(long = "sla", value_name = "K=V")]
        sla: Vec<String>,
        /// Requested state: started, stopped or destroyed.
        #[arg(long)]
        state: Option<InstanceState>,
        /// Wait up to SECONDS for the connection parameters (exit code 5 if not published).
        #[arg(long, value_name = "SECONDS")]
        wait: Option<u64>,
        /// A shared instance, hosted by an instance of the same release and type (SLA
        /// `computer_guid`, `instance_guid` choose the host).
        #[arg(long)]
        shared: bool,
    },
    /// List instances (or computers).
    List {
        /// List computers instead.
        #[arg(long)]
        computers: bool,
    },
    /// Show one instance.
    Show {
        /// Instance title.
        title: String,
        /// Title of the tree root, for a child instance.
        #[arg(long)]
        root: Option<String>,
    },
    /// Show one computer.
    Computer {
        /// Computer id.
        id: String,
    },
    /// Destroy a root instance and its whole tree.
    Destroy {
        /// Instance title.
        title: String,
    },
    /// Print the shell completion script of slapos-master for SHELL (scripts/gen-cli-docs.sh).
    #[command(hide = true)]
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Write the man pages: slapos-master.1 and one per subcommand (slapos-master-request.1,
    /// slapos-master-token-create.1, …) into DIR (scripts/gen-cli-docs.sh).
    #[command(hide = true)]
    Man {
        /// Directory for the pages (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Accounting: what instances, users or computers used over a window (CPU seconds, memory
    /// and disk GiB·h, I/O), from the samples nodes report.
    Usage {
        /// Window start (exclusive): unix ms, or a duration back from now (30m, 24h, 7d).
        #[arg(long, default_value = "24h")]
        since: String,
        /// Window end (inclusive): unix ms, or a duration back from now [default: now].
        #[arg(long)]
        until: Option<String>,
        /// Group by instance, user or computer.
        #[arg(long, default_value = "instance")]
        by: UsageBy,
        /// Print CSV (with a header and a total row) instead of a table.
        #[arg(long, conflicts_with = "json")]
        csv: bool,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Create a one-time token that enrolls a computer (`POST /v1/enroll`); prints it.
    Create {
        /// The computer id the token enrolls.
        #[arg(long)]
        computer: String,
        /// Validity in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        /// The master's database [default: slapos-master.db]; it must exist.
        #[arg(long)]
        db: Option<DbUrl>,
        /// Create the database if it does not exist (a new master's first command).
        #[arg(long)]
        create_db: bool,
    },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Issue a user (or admin) certificate: writes NAME.key (0600), NAME.pem and ca.pem to DIR.
    Create {
        /// User name ([A-Za-z0-9_.-]{1,64}).
        name: String,
        /// An admin identity (all routes) instead of a user.
        #[arg(long)]
        admin: bool,
        /// Directory for the files.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The master's TLS directory (its CA).
        #[arg(long, value_name = "DIR")]
        tls_dir: PathBuf,
        /// The master's database [default: slapos-master.db]; it must exist.
        #[arg(long)]
        db: Option<DbUrl>,
        /// Create the database if it does not exist (the first admin, before the first `serve`).
        #[arg(long)]
        create_db: bool,
    },
}

#[derive(Subcommand)]
enum CertCmd {
    /// Revoke a certificate by serial, or every certificate of an identity.
    Revoke {
        /// Serial (hex, as `cert list` shows it).
        #[arg(required_unless_present = "identity", conflicts_with = "identity")]
        serial: Option<String>,
        /// Identity (`computer:C1`, `user:alice`, …).
        #[arg(long)]
        identity: Option<String>,
        /// The master's database [default: slapos-master.db]; it must exist.
        #[arg(long)]
        db: Option<DbUrl>,
    },
    /// List issued certificates.
    List {
        /// The master's database [default: slapos-master.db]; it must exist.
        #[arg(long)]
        db: Option<DbUrl>,
    },
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    // Before any database is opened: SQLite allocates through jemalloc too.
    if !master_lite::store::sqlite_alloc::install() {
        eprintln!("warning: SQLite keeps the C library's malloc (it was initialised already)");
    }
    // Known before parsing, so that a usage error is JSON too under --json.
    let json = std::env::args_os()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json");
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            let asked = matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion);
            if json && !asked {
                let msg = e.render().to_string();
                eprintln!("{}", cli::json_error(Exit::Usage, msg.trim_end()));
                return ExitCode::from(Exit::Usage.code());
            }
            // --help and --version on stdout with 0, usage errors on stderr with 2.
            e.exit()
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            let exit = cli::classify(e.chain());
            let msg = format!("{e:#}");
            if json {
                eprintln!("{}", cli::json_error(exit, &msg));
            } else {
                eprintln!("error: {}", terminal_safe(&msg));
            }
            ExitCode::from(exit.code())
        }
    }
}

/// The client subcommands' master URL and mTLS files: flags, then `SLAPOS_MASTER*` (both read
/// by clap, given here as `flags`), then client.toml, then the default URL.
fn client_settings(flags: &ClientFile) -> Result<(String, Option<[PathBuf; 3]>)> {
    let file = match cli::client_file_path(
        std::env::var("XDG_CONFIG_HOME").ok().as_deref(),
        std::env::var("HOME").ok().as_deref(),
    ) {
        Some(path) => cli::load_toml::<ClientFile>(&path, true)?.unwrap_or_default(),
        None => ClientFile::default(),
    };
    let master = flags
        .master
        .clone()
        .or(file.master)
        .unwrap_or_else(|| DEFAULT_MASTER_URL.to_owned());
    let ca = flags.ca.clone().or(file.ca);
    let cert = flags.cert.clone().or(file.cert);
    let key = flags.key.clone().or(file.key);
    match (ca, cert, key) {
        (Some(ca), Some(cert), Some(key)) => Ok((master, Some([ca, cert, key]))),
        (None, None, None) => Ok((master, None)),
        (ca, cert, key) => {
            let missing: Vec<&str> = [("--ca", ca.is_none()), ("--cert", cert.is_none())]
                .into_iter()
                .chain([("--key", key.is_none())])
                .filter_map(|(n, m)| m.then_some(n))
                .collect();
            Err(CliError::Usage(format!(
                "--ca, --cert and --key go together; missing {} (flags, SLAPOS_MASTER_CA/CERT/KEY \
                 or client.toml)",
                missing.join(", ")
            ))
            .into())
        }
    }
}

/// glibc's malloc serves only what bypasses the global allocator (jemalloc, above): C code, and
/// SQLite should [`master_lite::store::sqlite_alloc::install`] be refused. What follows was
/// measured when it served everything; one arena then also made every allocation of every
/// thread that missed its cache queue on that arena's lock (docs/fleet.md, "The allocator").
///
/// glibc gives each thread that allocates its own malloc arena (up to 8 per core), memory freed
/// into one stays resident there, and a freed large block raises the mmap threshold so the next
/// large body comes from the heap too: the server's peak RSS grew with every runtime thread that
/// once handled a large format or `getFullComputerInformation` (slap-bench: 33.5–35.4 MB). One
/// arena (threads keep their tcache for small blocks, so it is not a lock per allocation) and a
/// fixed 256 KiB mmap threshold (large buffers go back to the kernel when freed) hold it at
/// 22 MB, with request and `getFullComputerInformation` latency unchanged (docs/slap.md).
/// `MALLOC_ARENA_MAX` / `MALLOC_MMAP_THRESHOLD_` in the environment still win.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; it runs first thing in main, before
        // any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: as above.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

fn run(cli: Cli) -> Result<ExitCode> {
    let json = cli.json;
    let flags = ClientFile {
        master: cli.master,
        ca: cli.ca,
        cert: cli.cert,
        key: cli.key,
    };
    let client = || -> Result<Client> {
        match client_settings(&flags)? {
            (master, Some([ca, cert, key])) => {
                let read = |p: &PathBuf| {
                    std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))
                };
                Client::with_identity(&master, &read(&ca)?, &read(&cert)?, &read(&key)?)
                    .with_context(|| format!("--master {master} with --ca/--cert/--key"))
            }
            (master, None) => Client::new(&master).with_context(|| format!("--master {master}")),
        }
    };
    match cli.cmd {
        Cmd::Token {
            cmd:
                TokenCmd::Create {
                    computer,
                    ttl,
                    db,
                    create_db,
                },
        } => {
            let db = cli::operator_db("token create", db, Some(create_db))?;
            let token = master_lite::admin::create_token(&db, &ComputerId::parse(computer)?, ttl)?;
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::User {
            cmd:
                UserCmd::Create {
                    name,
                    admin,
                    out,
                    tls_dir,
                    db,
                    create_db,
                },
        } => {
            let db = cli::operator_db("user create", db, Some(create_db))?;
            let made = master_lite::admin::create_user(&db, &tls_dir, &name, admin, &out)?;
            println!(
                "{} serial {} in {}",
                made.identity,
                made.serial,
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Cert {
            cmd:
                CertCmd::Revoke {
                    serial,
                    identity,
                    db,
                },
        } => {
            let db = cli::operator_db("cert revoke", db, None)?;
            match (serial, identity) {
                (Some(serial), _) => {
                    let row = master_lite::admin::revoke_serial(&db, &serial)?;
                    println!("revoked {} ({})", row.serial, row.identity);
                }
                (None, Some(identity)) => {
                    let (id, serials) = master_lite::admin::revoke_identity(&db, &identity)?;
                    for s in serials {
                        println!("revoked {s} ({id})");
                    }
                }
                (None, None) => {
                    return Err(CliError::Usage("give a SERIAL or --identity".into()).into());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Cert {
            cmd: CertCmd::List { db },
        } => {
            let db = cli::operator_db("cert list", db, None)?;
            let list = master_lite::admin::certificates(&db)?;
            let mut rows = vec![
                ["SERIAL", "IDENTITY", "ISSUED", "REVOKED"]
                    .map(String::from)
                    .to_vec(),
            ];
            for c in list {
                rows.push(vec![
                    c.serial,
                    c.identity,
                    ago(Some(c.issued_ms)),
                    c.revoked_ms.map_or_else(|| "-".into(), |t| ago(Some(t))),
                ]);
            }
            table(&rows);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Completions { shell } => {
            // Into memory first: clap_complete panics on a failed write (a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "slapos-master", &mut script);
            let mut out = std::io::stdout().lock();
            out.write_all(&script)
                .and_then(|()| out.flush())
                .context("write the completions to stdout")?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Man { out } => {
            std::fs::create_dir_all(&out)
                .with_context(|| format!("create the man page directory {}", out.display()))?;
            clap_mangen::generate_to(Cli::command(), &out)
                .with_context(|| format!("write the man pages into {}", out.display()))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Migrate { from, to, force } => {
            let report = master_lite::store::copy::copy(&from, &to, force, master_lite::now_ms())?;
            for (table, n) in report.rows {
                println!("{table}: {n} rows");
            }
            println!("copied {from} to {to}");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Serve {
            config,
            listen,
            db,
            cfg,
            tls_dir,
            tls_names,
            allow_plain_http,
            local_operators,
            federate,
        } => {
            let file = match &config {
                Some(path) => cli::load_toml::<ServeFile>(path, false)?,
                None => cli::load_toml::<ServeFile>(Path::new(cli::DEFAULT_SERVE_CONFIG), true)?,
            }
            .unwrap_or_default();
            let config_name = config
                .unwrap_or_else(|| PathBuf::from(cli::DEFAULT_SERVE_CONFIG))
                .display()
                .to_string();
            let listen = listen.or(file.listen);
            let db = match (db, file.db) {
                (Some(db), _) => Some(db),
                (None, Some(s)) => Some(s.parse::<DbUrl>().map_err(|e| CliError::Config {
                    path: config_name.clone().into(),
                    reason: format!("db: {e}"),
                })?),
                (None, None) => None,
            };
            let cfg = cfg.or(file.cfg);
            let tls_dir = tls_dir.or(file.tls_dir);
            let tls_names = if tls_names.is_empty() {
                file.tls_name
            } else {
                tls_names
            };
            if tls_dir.is_none() && !tls_names.is_empty() {
                return Err(CliError::Usage("--tls-name needs --tls-dir".into()).into());
            }
            let allow_plain_http = allow_plain_http || file.allow_plain_http.unwrap_or(false);
            let local_operators = if local_operators.is_empty() {
                file.local_operator
                    .iter()
                    .map(|u| master_lite::local::parse_user(u))
                    .collect::<Result<Vec<u32>, String>>()
                    .map_err(|e| CliError::Config {
                        path: config_name.clone().into(),
                        reason: format!("local-operator: {e}"),
                    })?
            } else {
                local_operators
            };
            let proxy = cfg
                .map(|path| master_lite::slap::ProxyConfig::load(&path))
                .transpose()?;
            let listen = listen
                .or_else(|| proxy.as_ref().map(|p| p.listen()))
                .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
            let db = db
                .or_else(|| proxy.as_ref().map(|p| DbUrl::Sqlite(p.database.clone())))
                .unwrap_or_else(|| DbUrl::Sqlite(PathBuf::from("slapos-master.db")));
            let (slap, mut federation) = proxy.map(|p| (p.slap, p.federation)).unwrap_or_default();
            let federate = if federate.is_empty() {
                file.federate
            } else {
                federate
            };
            for spec in &federate {
                master_lite::federation::Remote::parse_flag(spec)
                    .and_then(|r| federation.add(r))
                    .map_err(|e| CliError::Usage(format!("--federate: {e}")))?;
            }
            let tls = tls_dir.map(|dir| (dir, tls_names));
            let opts = (allow_plain_http, local_operators, federation);
            serve(&listen, db, slap, tls, opts).map(|()| ExitCode::SUCCESS)
        }
        Cmd::Standalone {
            dir,
            listen,
            partitions,
            example,
            isolation,
            local_operators,
        } => standalone(master_lite::standalone::StandaloneOptions {
            dir,
            listen,
            partitions,
            example,
            isolation,
            local_operators,
        })
        .map(|()| ExitCode::SUCCESS),
        Cmd::Supply {
            url,
            computer,
            remove,
        } => {
            let url = SoftwareUrl::parse(url)?;
            if !remove {
                warn_unfetchable(&url);
            }
            let c = match computer {
                Some(id) => ComputerId::parse(id)?,
                None => only_computer(&client()?)?,
            };
            let req = SupplyRequest {
                url,
                state: if remove {
                    SupplyState::Destroyed
                } else {
                    SupplyState::Available
                },
            };
            let info = client()?.supply(&c, &req)?;
            if json {
                print_json(&info)?;
            } else {
                let verb = if remove {
                    "removal requested"
                } else {
                    "supplied"
                };
                println!("{} on {c}: {verb}", info.url);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Request {
            title,
            url,
            software_type,
            params,
            params_json,
            sla,
            state,
            wait,
            shared,
        } => {
            let software_url = SoftwareUrl::parse(url)?;
            warn_unfetchable(&software_url);
            let req = InstanceRequest {
                title: InstanceTitle::parse(title)?,
                software_url,
                software_type: SoftwareType::parse(software_type)?,
                parameters: parameters(params_json.as_deref(), &params)?,
                sla: pairs(&sla, "--sla")?.into_iter().collect(),
                state,
                shared,
            };
            request(&client()?, &req, wait.map(Duration::from_secs), json)
        }
        Cmd::List { computers } => {
            let c = client()?;
            if computers {
                let list = c.computers()?;
                if json {
                    print_json(&list)?;
                } else {
                    print_computers(&list);
                }
            } else {
                let list = c.instances()?;
                if json {
                    print_json(&list)?;
                } else {
                    print_instances(&list);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Show { title, root } => {
            let t = InstanceTitle::parse(title)?;
            let r = root.map(InstanceTitle::parse).transpose()?;
            let info = client()?.instance(&t, r.as_ref())?;
            if json {
                print_json(&info)?;
            } else {
                print_instance(&info);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Computer { id } => {
            let info = client()?.computer(&ComputerId::parse(id)?)?;
            if json {
                print_json(&info)?;
            } else {
                print_computer(&info);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Usage {
            since,
            until,
            by,
            csv,
        } => {
            let now = master_lite::now_ms();
            let since = cli::parse_when(&since, now)?;
            let until = until.map_or(Ok(now), |u| cli::parse_when(&u, now))?;
            let report = client()?.usage(since, until, by)?;
            if json {
                print_json(&report)?;
                return Ok(ExitCode::SUCCESS);
            }
            let head = [
                "KEY",
                "CPU_S",
                "MEM_GIB_H",
                "DISK_GIB_H",
                "IO_READ_B",
                "IO_WRITE_B",
                "PEAK_MEM_B",
                "SAMPLES",
            ];
            let mut rows = vec![head.map(String::from).to_vec()];
            for r in report.rows.iter().chain([&report.total]) {
                rows.push(vec![
                    r.key.clone(),
                    format!("{:.3}", r.cpu_seconds),
                    format!("{:.6}", r.memory_gib_hours),
                    format!("{:.6}", r.disk_gib_hours),
                    r.io_read_bytes.to_string(),
                    r.io_write_bytes.to_string(),
                    r.memory_peak_bytes.to_string(),
                    r.samples.to_string(),
                ]);
            }
            if csv {
                for r in &rows {
                    let cells: Vec<_> = r.iter().map(|c| csv_cell(c)).collect();
                    println!("{}", cells.join(","));
                }
            } else {
                table(&rows);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Destroy { title } => {
            let t = InstanceTitle::parse(title)?;
            let info = client()?.set_state(
                &t,
                &StateChange {
                    state: InstanceState::Destroyed,
                },
            )?;
            if json {
                print_json(&info)?;
            } else {
                println!(
                    "{}: destruction of the instance and its tree requested; the node wipes \
                     and frees the partitions",
                    info.title
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn init_runtime() -> Result<tokio::runtime::Runtime> {
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(log_level());
    // SLAPOS_LOG_FORMAT=json: one JSON object per line, for log shippers (the node's reading of
    // the variable, so both programs accept and refuse the same values).
    match node_edge::log::format_from_env().map_err(anyhow::Error::msg)? {
        node_edge::log::Format::Json => logs.json().init(),
        node_edge::log::Format::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")
}

fn standalone(opts: master_lite::standalone::StandaloneOptions) -> Result<()> {
    let rt = init_runtime()?;
    let stop = {
        let _in_runtime = rt.enter();
        shutdown_signal()
    };
    rt.block_on(master_lite::standalone::run(opts, stop))?;
    Ok(())
}

fn serve(
    listen: &str,
    db: DbUrl,
    slap: master_lite::slap::SlapConfig,
    tls: Option<(PathBuf, Vec<String>)>,
    (allow_plain_http, local_operators, federation): (
        bool,
        Vec<u32>,
        master_lite::federation::Federation,
    ),
) -> Result<()> {
    let rt = init_runtime()?;
    let nofile = master_lite::server::raise_nofile();
    rt.block_on(async move {
        let listener = master_lite::bind(listen).await?;
        let addr = listener.local_addr().context("read the bound address")?;
        let db_shown = db.to_string();
        let tls = match tls {
            None => {
                master_lite::check_plain_http(addr, allow_plain_http)?;
                None
            }
            Some((dir, extra)) => {
                let ca = master_lite::pki::Ca::open(&dir)?;
                let mut names: Vec<String> =
                    ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
                if !addr.ip().is_unspecified() {
                    names.push(addr.ip().to_string());
                }
                names.extend(extra);
                names.sort();
                names.dedup();
                let config = master_lite::tls::server_config(&ca, &names)?;
                Some((std::sync::Arc::new(ca), config))
            }
        };
        // Open the database before announcing the address: a test reading this line may call
        // the API at once.
        let mut master = tokio::task::spawn_blocking(move || master_lite::Master::open_db(&db))
            .await
            .context("open the database")??;
        master.set_slap_config(slap);
        master.set_limits(master_lite::server::Limits::for_nofile(nofile));
        master.set_local_trust(master_lite::local::LocalTrust::new(local_operators));
        for r in &federation.remotes {
            tracing::info!(remote = %r.url, releases = r.releases.len(), "federation: delegating");
        }
        master.set_federation(federation);
        let url = match &tls {
            None => master_lite::url_of(addr),
            Some(_) => master_lite::tls_url_of(addr),
        };
        let stop = shutdown_signal();
        println!("{}{url}", master_lite::LISTENING);
        std::io::stdout().flush().ok();
        master_lite::notify_systemd_ready();
        tracing::info!(%addr, db = %db_shown, tls = tls.is_some(), "master started");
        match tls {
            None => master.run(listener, stop).await?,
            Some((ca, config)) => {
                master.set_ca(ca);
                master.run_tls(listener, config, stop).await?
            }
        }
        tracing::info!("master stopped");
        Ok(())
    })
}

/// SIGINT or SIGTERM.
/// Completes on SIGTERM or Ctrl-C. The handlers are installed by this call, not when the
/// future is first polled, so a stop that arrives right after the address is announced ends the
/// master cleanly rather than killing it. Call it inside the runtime.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!("cannot watch SIGTERM/SIGINT ({e}); stopping on Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

/// `SLAPOS_LOG=error|warn|info|debug|trace` (default info).
fn log_level() -> tracing::Level {
    std::env::var("SLAPOS_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(tracing::Level::INFO)
}

fn request(
    client: &Client,
    req: &InstanceRequest,
    wait: Option<Duration>,
    json: bool,
) -> Result<ExitCode> {
    let mut info = client.request(req)?;
    if let Some(wait) = wait
        && info.state != InstanceState::Destroyed
    {
        let started = Instant::now();
        let deadline = started + wait;
        let mut progress = WaitProgress::new(json);
        // The computer is read while the node has not reported this revision (its release
        // install state), and no more once it refuses (a user's certificate).
        let mut computer_readable = true;
        while info.connection.is_empty() {
            let current = info
                .reported
                .as_ref()
                .is_some_and(|r| r.report.revision == info.revision);
            let computer = if computer_readable && !current {
                match client.computer(&info.computer) {
                    Ok(c) => Some(c),
                    Err(e) if matches!(e.status(), Some(401 | 403 | 404)) => {
                        computer_readable = false;
                        None
                    }
                    Err(e) => return Err(e.into()),
                }
            } else {
                None
            };
            let release = match &computer {
                None => cli::ReleaseSeen::Unknown,
                Some(c) => c
                    .software
                    .iter()
                    .find(|s| s.url == info.software_url)
                    .and_then(|s| s.install.as_ref())
                    .map_or(cli::ReleaseSeen::NotReported, cli::ReleaseSeen::Reported),
            };
            let waiting_for = cli::wait_progress(&info, release);
            progress.show(&waiting_for, started.elapsed());
            if Instant::now() >= deadline {
                progress.clear();
                if json {
                    print_json(&info)?;
                }
                let msg = format!(
                    "connection parameters not published within {} s ({waiting_for}; state {}, \
                     {}); see `slapos-master show {:?}`",
                    wait.as_secs(),
                    info.state.as_str(),
                    reported(&info),
                    info.title.as_str()
                );
                return Err(CliError::WaitTimeout(msg).into());
            }
            std::thread::sleep(Duration::from_millis(200));
            info = client.instance(&req.title, None)?;
        }
        progress.clear();
    }
    if json {
        print_json(&info)?;
    } else {
        say(&format!(
            "{} on {}/{}: requested {}, {}",
            info.title,
            info.computer,
            info.partition,
            info.state.as_str(),
            reported(&info)
        ));
        if info.connection.is_empty() {
            say("connection parameters: (not published yet)");
        } else {
            say("connection parameters:");
            print_params(&info.connection);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `request --wait` shows on stderr while it waits (docs/cli.md): on a terminal, one
/// line rewritten in place (`\r`, clear line) with the seconds waited; otherwise one line per
/// change of what it waits for; nothing under `--json` (stderr then carries only the error).
struct WaitProgress {
    tty: bool,
    quiet: bool,
    last: String,
    shown: bool,
}

impl WaitProgress {
    fn new(json: bool) -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            quiet: json,
            last: String::new(),
            shown: false,
        }
    }

    fn show(&mut self, line: &str, waited: Duration) {
        if self.quiet {
            return;
        }
        let line = terminal_safe(line);
        let shown = if self.tty {
            format!("{line} ({} s)", waited.as_secs())
        } else {
            line.into_owned()
        };
        if shown == self.last {
            return;
        }
        if self.tty {
            // Cut to the terminal's width (COLUMNS, else 80): a wrapped line is not erased by `\r`.
            let width = std::env::var("COLUMNS")
                .ok()
                .and_then(|c| c.parse::<usize>().ok())
                .unwrap_or(80);
            let cut: String = shown.chars().take(width.saturating_sub(1)).collect();
            eprint!("\r\x1b[2K{cut}");
            self.shown = true;
        } else {
            eprintln!("waiting: {shown}");
        }
        self.last = shown;
    }

    /// Erases the line on a terminal, before the result or the error is printed.
    fn clear(&mut self) {
        if std::mem::take(&mut self.shown) {
            eprint!("\r\x1b[2K");
        }
    }
}

/// `supply` without `--computer`: the master's only computer, else a usage error naming the
/// ones that exist.
/// Said on stderr, not refused: the master takes any URL string (SLAP clients do), and a
/// native user must be able to re-request or remove what they supplied; but a slapos-node
/// installs only the fetchable forms, and would report this release's install as an error.
fn warn_unfetchable(url: &SoftwareUrl) {
    if !url.is_fetchable() {
        eprintln!(
            "warning: software URL `{url}` is not {}: the master records it, but a slapos-node \
             cannot install it",
            slapos_proto::FETCHABLE_URL_FORMS
        );
    }
}

fn only_computer(client: &Client) -> Result<ComputerId> {
    let list = client.computers()?;
    match list.as_slice() {
        [one] => {
            eprintln!("supply: --computer {} (the master's only computer)", one.id);
            Ok(one.id.clone())
        }
        [] => Err(CliError::Usage(
            "supply: no --computer given and the master has no computer yet".into(),
        )
        .into()),
        many => {
            let ids: Vec<&str> = many.iter().map(|c| c.id.as_str()).collect();
            Err(CliError::Usage(format!(
                "supply: no --computer given and the master has {} computers: {}; name one \
                 with --computer",
                ids.len(),
                terminal_safe(&ids.join(", "))
            ))
            .into())
        }
    }
}

/// Instance parameters from `--params-json` (inline JSON or a file) overridden by `--param`.
fn parameters(params_json: Option<&str>, params: &[String]) -> Result<Params> {
    let mut out = match params_json {
        None => Params::new(),
        Some(s) => {
            let text = if s.trim_start().starts_with('{') {
                s.to_owned()
            } else {
                std::fs::read_to_string(s).with_context(|| format!("read --params-json {s}"))?
            };
            serde_json::from_str(&text)
                .with_context(|| format!("--params-json {s}: not a JSON object"))?
        }
    };
    for (k, v) in pairs(params, "--param")? {
        out.insert(k, serde_json::Value::String(v));
    }
    Ok(out)
}

fn pairs(items: &[String], what: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in items {
        let Some((k, v)) = item.split_once('=') else {
            return Err(CliError::Usage(format!("{what} {item:?}: expected KEY=VALUE")).into());
        };
        if k.is_empty() {
            return Err(CliError::Usage(format!("{what} {item:?}: empty key")).into());
        }
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Print one line for a human: control characters in stored values (ESC, CR, …) are shown as
/// escapes, never acted on by the terminal ([`slapos_proto::text::terminal_safe`]).
fn say(line: &str) {
    println!("{}", terminal_safe(line));
}

/// `started (rev 12)`, `error: …`, or `not reported yet`.
fn reported(info: &InstanceInfo) -> String {
    match &info.reported {
        None => "not reported yet".into(),
        Some(r) => {
            let failed = r.report.promises.iter().filter(|p| !p.ok).count();
            let mut s = format!("reported {}", r.report.state.as_str());
            if r.report.revision != info.revision {
                s.push_str(&format!(" (older revision {})", r.report.revision));
            }
            if let Some(e) = &r.report.error {
                s.push_str(&format!(", error: {e}"));
            }
            if failed > 0 {
                s.push_str(&format!(", {failed} promise(s) failing"));
            }
            s
        }
    }
}

/// Print rows as aligned columns (the first row is the header).
/// One CSV field (RFC 4180): quoted when it holds a comma, a quote or a line break.
fn csv_cell(c: &str) -> std::borrow::Cow<'_, str> {
    if c.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", c.replace('"', "\"\"")).into()
    } else {
        c.into()
    }
}

fn table(rows: &[Vec<String>]) {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| terminal_safe(c).into_owned()).collect())
        .collect();
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        say(line.join("  ").trim_end());
    }
}

fn print_instances(list: &[InstanceInfo]) {
    if list.is_empty() {
        say("no instances");
        return;
    }
    let mut rows = vec![
        [
            "TITLE", "TREE", "STATE", "REPORTED", "PROMISES", "WHERE", "REV",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for i in list {
        let (state, promises) = match &i.reported {
            None => ("-".to_owned(), "-".to_owned()),
            Some(r) => {
                let ok = r.report.promises.iter().filter(|p| p.ok).count();
                let st = if r.report.error.is_some() {
                    format!("{} (error)", r.report.state.as_str())
                } else {
                    r.report.state.as_str().to_owned()
                };
                (st, format!("{ok}/{}", r.report.promises.len()))
            }
        };
        rows.push(vec![
            i.title.to_string(),
            i.root_title.to_string(),
            i.state.as_str().to_owned(),
            state,
            promises,
            format!("{}/{}", i.computer, i.partition),
        ]);
    }
    table(&rows);
}

fn print_params(p: &Params) {
    for (k, v) in p {
        match v {
            serde_json::Value::String(s) => say(&format!("  {k} = {s}")),
            other => say(&format!("  {k} = {other}")),
        }
    }
}

fn print_instance(i: &InstanceInfo) {
    let rows: Vec<(&str, String)> = vec![
        ("title", i.title.to_string()),
        ("tree", i.root_title.to_string()),
        (
            "requested by",
            i.requester.clone().unwrap_or_else(|| "user".into()),
        ),
        ("software", i.software_url.to_string()),
        ("type", i.software_type.to_string()),
        ("state", i.state.as_str().to_owned()),
        ("where", format!("{}/{}", i.computer, i.partition)),
        ("revision", i.revision.to_string()),
        ("reported", reported(i)),
        ("bang", i.bang.clone().unwrap_or_else(|| "-".into())),
        (
            "children",
            if i.children.is_empty() {
                "-".into()
            } else {
                i.children
                    .iter()
                    .map(|c| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        ),
    ];
    for (k, v) in rows {
        say(&format!("{k:<13} {v}"));
    }
    say("parameters:");
    print_params(&i.parameters);
    say("connection parameters:");
    print_params(&i.connection);
    if let Some(r) = &i.reported
        && !r.report.promises.is_empty()
    {
        say("promises:");
        for p in &r.report.promises {
            let mark = if p.ok { "ok  " } else { "FAIL" };
            say(&format!("  {mark} {}: {}", p.name, p.message.trim()));
        }
    }
}

fn print_computers(list: &[ComputerInfo]) {
    if list.is_empty() {
        say("no computers");
        return;
    }
    let mut rows = vec![
        [
            "COMPUTER",
            "PARTITIONS",
            "FREE",
            "RELEASES",
            "LABELS",
            "LAST SEEN",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for c in list {
        let free = c.partitions.iter().filter(|p| p.instance.is_none()).count();
        let labels: Vec<String> = c.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        rows.push(vec![
            c.id.to_string(),
            c.partitions.len().to_string(),
            free.to_string(),
            c.software.len().to_string(),
            labels.join(","),
            ago(c.last_seen_ms),
        ]);
    }
    table(&rows);
}

fn print_computer(c: &ComputerInfo) {
    say(&format!("computer   {}", c.id));
    say(&format!("last seen  {}", ago(c.last_seen_ms)));
    for (k, v) in &c.labels {
        say(&format!("label      {k}={v}"));
    }
    say("releases:");
    let mut rows = vec![["URL", "REQUESTED", "INSTALL"].map(String::from).to_vec()];
    for s in &c.software {
        let install = match &s.install {
            None => "-".to_owned(),
            Some(r) => {
                let st = serde_json::to_value(r.state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                match &r.message {
                    Some(m) => format!("{st}: {}", m.lines().last().unwrap_or("")),
                    None => st,
                }
            }
        };
        let requested = match s.requested {
            SupplyState::Available => "available",
            SupplyState::Destroyed => "remove",
        };
        rows.push(vec![s.url.to_string(), requested.to_owned(), install]);
    }
    table(&rows);
    say("partitions:");
    let mut rows = vec![
        ["PARTITION", "INSTANCE", "ADDRESSES"]
            .map(String::from)
            .to_vec(),
    ];
    for p in &c.partitions {
        rows.push(vec![
            p.id.to_string(),
            p.instance
                .as_ref()
                .map_or_else(|| "(free)".to_owned(), ToString::to_string),
            p.addresses.join(","),
        ]);
    }
    table(&rows);
}

fn ago(ms: Option<u64>) -> String {
    match ms {
        None => "never".into(),
        Some(t) => {
            let now = master_lite::now_ms();
            format!("{} s ago", now.saturating_sub(t) / 1000)
        }
    }
}
