//! `slapos-master standalone`: the master with its embedded database **and** a local node in one
//! process — the single-box "factory-in-a-box" default.
//!
//! Layout under `--dir`: `master/master.db` (the master's SQLite database, in a 0700 directory
//! of its own: partition users reach `--dir` but never the database; a `master.db` left at the
//! top by an older version is moved there) and the node's standalone layout (`software/`,
//! `instance/`, `node-state/`, see `node_edge::Config::standalone`). Both
//! halves are the production code paths: the node talks to the master over loopback HTTP exactly
//! as a remote node would, so a standalone box can later be split into a master and nodes
//! without changing anything but addresses.

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use slapos_client::Client;
use slapos_proto::{
    ComputerId, InstanceRequest, InstanceTitle, SoftwareType, SoftwareUrl, SupplyRequest,
    SupplyState,
};

use crate::{LISTENING, Master, MasterError, url_of};

/// How long `--example` waits for the example's connection parameters.
const EXAMPLE_WAIT: Duration = Duration::from_secs(300);

/// What `standalone` runs.
#[derive(Debug, Clone)]
pub struct StandaloneOptions {
    /// Directory holding the database and the node's files (created if missing).
    pub dir: PathBuf,
    /// Address the master listens on.
    pub listen: String,
    /// Number of partitions of the local node.
    pub partitions: u32,
    /// An example release to supply and request once up: a name under `examples/` or a path to
    /// a release manifest.
    pub example: Option<String>,
    /// Who the local node's partitions run as (`isolation` key of the node, default `auto`:
    /// a unix user per partition when run as root).
    pub isolation: node_edge::IsolationMode,
    /// Local users acting as the operator over plain HTTP besides root and the box's own user
    /// (`crate::local`).
    pub local_operators: Vec<u32>,
}

/// A standalone box that failed.
#[derive(Debug, thiserror::Error)]
pub enum StandaloneError {
    /// The master half failed.
    #[error(transparent)]
    Master(#[from] MasterError),
    /// The node half failed.
    #[error("local node: {0}")]
    Node(#[from] node_edge::NodeError),
    /// A file-system step failed.
    #[error("failed to {op} `{path}`: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// `--example` names nothing usable.
    #[error(
        "example {0:?} not found: give a name under examples/ (hello-web, flaky, …) or the path of a software.toml"
    )]
    NoExample(String),
    /// The example could not be deployed.
    #[error("example: {0}")]
    Example(String),
}

/// Resolve `--example`: an existing path, `examples/<name>/software.toml` under the current
/// directory, or under the source tree this binary was built from.
pub fn resolve_example(name: &str) -> Result<SoftwareUrl, StandaloneError> {
    let built_in = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let candidates = [
        PathBuf::from(name),
        PathBuf::from(name).join("software.toml"),
        Path::new("examples").join(name).join("software.toml"),
        built_in.join(name).join("software.toml"),
    ];
    let found = candidates
        .iter()
        .find(|p| p.is_file())
        .ok_or_else(|| StandaloneError::NoExample(name.to_owned()))?;
    let abs = found.canonicalize().map_err(|source| StandaloneError::Io {
        op: "resolve",
        path: found.clone(),
        source,
    })?;
    SoftwareUrl::parse(abs.to_string_lossy().into_owned())
        .map_err(|e| StandaloneError::Example(e.to_string()))
}

/// Run the box until `shutdown` completes. Prints `listening on URL` once the API answers,
/// `web console: URL/` (the operator's page, [`crate::console`]) and,
/// with an example, `open URL` once the example published its `url` connection parameter.
pub async fn run(
    opts: StandaloneOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StandaloneError> {
    std::fs::create_dir_all(&opts.dir).map_err(|source| StandaloneError::Io {
        op: "create",
        path: opts.dir.clone(),
        source,
    })?;
    let dir = opts
        .dir
        .canonicalize()
        .map_err(|source| StandaloneError::Io {
            op: "resolve",
            path: opts.dir.clone(),
            source,
        })?;
    let example = opts.example.as_deref().map(resolve_example).transpose()?;

    let listener = crate::bind(&opts.listen).await?;
    let addr = listener
        .local_addr()
        .map_err(|source| StandaloneError::Io {
            op: "read the address of",
            path: PathBuf::from(&opts.listen),
            source,
        })?;
    let url = url_of(addr);
    let db = database_path(&dir)?;
    let nofile = crate::server::raise_nofile();
    let mut master = tokio::task::spawn_blocking(move || Master::open_fixing_modes(&db))
        .await
        .map_err(|e| MasterError::Worker(std::io::Error::other(e.to_string())))??;
    master.set_limits(crate::server::Limits::for_nofile(nofile));
    master.set_local_trust(crate::local::LocalTrust::new(opts.local_operators.clone()));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let master_task = tokio::spawn(master.run(listener, stopped(stop_rx.clone())));
    println!("{LISTENING}{url}");
    println!("{}{url}/", crate::console::ANNOUNCE);
    let _ = std::io::stdout().flush();
    crate::notify_systemd_ready();

    let mut config = node_edge::Config::standalone(&dir, url.clone(), opts.partitions);
    config.isolation = opts.isolation;
    let computer = config.computer_id.clone();
    // The node runs on a thread of its own with a current-thread runtime, as `slapos-node run`
    // does: every partition process is forked by that one thread, which lives as long as the
    // node. A process's parent-death signal (PR_SET_PDEATHSIG) fires when the *thread* that
    // forked it exits, so services must not be forked by runtime workers that may come and go.
    let node_stop = stopped(stop_rx.clone());
    let node_dir = dir.clone();
    let node_thread = std::thread::Builder::new()
        .name("slapos-node".into())
        .spawn(move || -> Result<(), StandaloneError> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| StandaloneError::Io {
                    op: "start the runtime of the node in",
                    path: node_dir,
                    source,
                })?;
            rt.block_on(node_edge::run(config, node_stop))?;
            Ok(())
        })
        .map_err(|source| StandaloneError::Io {
            op: "start the node thread in",
            path: dir.clone(),
            source,
        })?;

    if let Some(release) = example {
        let url = url.clone();
        tokio::task::spawn_blocking(move || deploy_example(&url, &computer, &release));
    }

    shutdown.await;
    tracing::info!("stopping the node, then the master");
    let _ = stop_tx.send(true);
    let node = tokio::task::spawn_blocking(move || node_thread.join())
        .await
        .map_err(|e| StandaloneError::Example(format!("node thread: {e}")))?
        .map_err(|_| StandaloneError::Example("node thread panicked".into()))?;
    let master = master_task
        .await
        .map_err(|e| StandaloneError::Example(format!("master task: {e}")))?;
    node?;
    master?;
    Ok(())
}

/// `<dir>/master/master.db`, its directory created 0700 (made 0700 if it exists); a database
/// an older version kept at `<dir>/master.db` is moved there first, with its `-wal`/`-shm`.
fn database_path(dir: &Path) -> Result<PathBuf, StandaloneError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let io = |op: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| StandaloneError::Io { op, path, source }
    };
    let home = dir.join("master");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&home)
        .map_err(io("create", &home))?;
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700))
        .map_err(io("chmod 700", &home))?;
    let db = home.join("master.db");
    let old = dir.join("master.db");
    if old.is_file() && !db.exists() {
        for suffix in ["-wal", "-shm", ""] {
            let from = PathBuf::from(format!("{}{suffix}", old.display()));
            if from.exists() {
                let to = PathBuf::from(format!("{}{suffix}", db.display()));
                std::fs::rename(&from, &to).map_err(io("move", &from))?;
            }
        }
        tracing::info!(from = %old.display(), to = %db.display(), "moved the database into its private directory");
    }
    Ok(db)
}

/// Supply and request an example on the local computer, then print where to open it.
/// Failures are printed, never fatal: the box keeps running for the user to inspect.
fn deploy_example(master: &str, computer: &ComputerId, release: &SoftwareUrl) {
    if let Err(e) = try_deploy_example(master, computer, release) {
        eprintln!("example {release}: {e}");
    }
}

fn try_deploy_example(
    master: &str,
    computer: &ComputerId,
    release: &SoftwareUrl,
) -> Result<(), String> {
    let client = Client::new(master).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + EXAMPLE_WAIT;
    let title = example_title(release)?;
    // The local node registers itself within a second or two.
    while client.computer(computer).is_err() {
        if Instant::now() > deadline {
            return Err(format!("computer {computer} never registered"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    client
        .supply(
            computer,
            &SupplyRequest {
                url: release.clone(),
                state: SupplyState::Available,
            },
        )
        .map_err(|e| e.to_string())?;
    // Keep the parameters of an existing instance (a restart of the box re-requests it).
    let parameters = client
        .instance(&title, None)
        .map(|i| i.parameters)
        .unwrap_or_default();
    client
        .request(&InstanceRequest {
            title: title.clone(),
            software_url: release.clone(),
            software_type: SoftwareType::default(),
            parameters,
            sla: [("computer_guid".to_owned(), computer.to_string())].into(),
            state: None,
            shared: false,
        })
        .map_err(|e| e.to_string())?;
    println!("requested \"{title}\" ({release}); waiting for its connection parameters…");
    let _ = std::io::stdout().flush();
    loop {
        let info = client.instance(&title, None).map_err(|e| e.to_string())?;
        if !info.connection.is_empty() {
            let shown = serde_json::to_string(&info.connection).unwrap_or_default();
            println!("connection parameters of \"{title}\": {shown}");
            if let Some(u) = info.connection.get("url").and_then(|v| v.as_str()) {
                println!("open {u}");
            }
            let _ = std::io::stdout().flush();
            return Ok(());
        }
        if let Some(err) = info.reported.as_ref().and_then(|r| r.report.error.clone()) {
            eprintln!("{title}: {err}");
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no connection parameters after {}s; see `slapos-master show {title}`",
                EXAMPLE_WAIT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The instance title of an example: the name of the directory holding its manifest.
fn example_title(release: &SoftwareUrl) -> Result<InstanceTitle, String> {
    let name = Path::new(release.as_str())
        .parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "example".to_owned());
    InstanceTitle::parse(name).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_resolve_by_name_and_path() {
        let by_name = resolve_example("hello-web").expect("hello-web");
        assert!(
            by_name
                .as_str()
                .ends_with("examples/hello-web/software.toml")
        );
        let by_path = resolve_example(by_name.as_str()).expect("path");
        assert_eq!(by_path, by_name);
        assert_eq!(
            example_title(&by_name).expect("title").as_str(),
            "hello-web"
        );
        let err = resolve_example("no-such-example").unwrap_err();
        assert!(err.to_string().contains("hello-web, flaky"), "{err}");
    }
}
