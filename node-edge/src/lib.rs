//! # node-edge — the edge node
//!
//! The agent of a computer: it registers the computer's partitions with its master, follows the
//! computer's desired state (long poll, polling as fallback), installs the software releases it is
//! told to and converges every computer partition to its instance's requested state, then keeps
//! the instances running (supervised services, periodic promises) and reports back.
//!
//! ## Design
//!
//! * **Pure cores, I/O at the edge.** Decisions are pure functions tested without processes or
//!   sockets: [`config`] rules, [`release`] (software manifest), [`profile`] (render + instance
//!   manifest), [`converge::plan`] (what to install/remove, the skip rule),
//!   [`util::backoff`], promise scheduling. Thin drivers do the I/O: [`install`],
//!   [`process::supervisor`], [`process::promise`], [`link`], [`converge::partition`],
//!   [`converge`].
//! * **One task per partition** ([`converge::partition`]) owns its services, promises and
//!   resources and receives its latest target through a `watch` channel, so a partition is never
//!   processed twice at once and one failing partition never blocks another. Passes are bounded
//!   by a semaphore; installs run as separate bounded tasks ([`converge`]).
//! * **Offline autonomy.** Every desired state received is cached on disk ([`link::cache`]); a node
//!   that starts without its master converges to the cache. Reports wait in an outbox
//!   ([`link::Outbox`]) until the master is back.
//! * **Seams** for later issues: [`host::isolation::Isolation`] (a unix user per partition),
//!   [`host::resources::Resources`] (the `rt` crate: cgroups, exclusive CPUs, SCHED_FIFO), and
//!   [`link::MasterLink`]; all plugged in through [`Seams`] (with the kernel paths `/proc` and
//!   `/sys/fs/cgroup`).
//! * **The tenant is hostile** (issue 21). [`host::partition_fs`] owns the node touching a
//!   partition's files (its fsuid, no link followed, regular files of the partition only,
//!   capped reads); [`host::jail`] owns process lifetime (a cgroup per partition, a uid sweep,
//!   `pids.max`); [`host::quota`] the disk budget; profiles are escaped by construction and linted
//!   ([`profile`]); builds run as the software user and are sealed ([`install`]); raw system
//!   calls live in [`sys`].
//!
//! ## Modules, by concern
//!
//! Imports point downward only, in this order (`scripts/checks/module-cycles.sh`):
//!
//! * [`converge`]: the main loop, the pure [`converge::plan`], one task per partition;
//! * [`software`]: release install, downloads, manifest, profiles;
//! * [`process`]: services, promises, process groups and pid records, rotated logs;
//! * [`host`]: partition users, directories, files, jail cgroups, disk quota, resources;
//! * [`link`]: the master link, its session, the desired-state cache, the node's identity;
//! * [`config`], [`net`] (partition addresses and TAPs), [`sys`] (every libc call), [`util`],
//!   [`log`].
//!
//! ## Invariants
//!
//! * A release directory `<software_root>/<hash>` exists only fully installed (built in a temp
//!   dir, renamed last).
//! * Every process the node starts leads its own process group; stopping a service reaches its
//!   whole group (TERM, then KILL after `stop_timeout`). On a root node every partition process
//!   and build step is in a jail cgroup it cannot leave; nothing of a partition runs while it
//!   is stopped, freed, destroyed or re-allocated, nor before the node started it.
//! * Every partition process runs with `no_new_privs` and dies with the node's forking thread
//!   (`PR_SET_PDEATHSIG`); an isolated one never runs as root.
//! * The node never follows a link inside a partition, never blocks on a file a partition
//!   planted, and reads only the partition's own regular files there.
//! * Files an instance manifest writes stay inside the partition (no `..`, no absolute paths, no
//!   symlinked parents, nothing under `.slapos*`).
//! * Ids that become paths are validated types from `slapos-proto`.
//! * One node per state directory (`<state_dir>/node.lock`, an exclusive `flock`).
//!
//! ## Limits
//!
//! * A root node runs each partition as its own unix user ([`host::isolation::UnixUsers`],
//!   `isolation` key); an unprivileged node runs every partition as itself, on `127.0.0.1`
//!   with a block of ports each.
//! * Services die with a crashed node (parent-death signal); their descendants (a shell's
//!   children) live until the next node starts, which empties every jail (and kills recorded
//!   groups: pid files with start times) before starting the services again.
//! * Project quotas need a filesystem with them on (ext4 `project,quota` + `prjquota`, XFS);
//!   elsewhere the disk budget is measured and reported, not enforced.
//! * Children an instance stops requesting are not destroyed automatically.
//! * Formats: `docs/software-release.md`; operation and config keys: `docs/node.md`.

pub mod config;
pub mod converge;
pub mod host;
pub mod link;
pub mod log;
pub mod net;
pub mod process;
pub mod software;
pub mod sys;
pub mod usage;
pub mod util;

pub use config::{Config, ConfigError, IsolationMode, PortRange, Protocol, RtMode};
/// The release modules at their former paths (`node_edge::install`, …).
pub use software::{fetch, install, profile, release};

pub use converge::{Seams, run_with};

use std::path::PathBuf;
use std::sync::Arc;

/// A node that cannot start (or a `format` that failed).
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A filesystem operation failed.
    #[error("failed to {op} `{path}`: {source}")]
    Io {
        /// What was attempted.
        op: String,
        /// On what.
        path: std::path::PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Partition isolation could not be set up.
    #[error(transparent)]
    Isolation(#[from] host::isolation::IsolationError),
    /// The master URL is unusable.
    #[error(transparent)]
    Client(#[from] slapos_client::ClientError),
    /// The node has no usable identity for its `https://` master (not enrolled, no CA).
    #[error(transparent)]
    Identity(#[from] link::identity::IdentityError),
    /// Partition addresses could not be set up.
    #[error(transparent)]
    Net(#[from] net::NetError),
    /// Real-time partitions were asked for (`rt = true`) and cannot work.
    #[error(transparent)]
    Rt(#[from] host::rt_resources::RtSetupError),
    /// A bang that cannot be sent (an unknown partition, nothing to bang).
    #[error("bang: {0}")]
    Bang(String),
}

/// `slapos-node bang`: tell the master something is wrong (`slapos node bang`), so that it has
/// the instances processed again. With partition `p`: its bang as the partition (native
/// `POST /v1/computers/{c}/partitions/{p}/bang`, SLAP `softwareInstanceBang`); the master
/// bumps the instance tree's revision (SLAP: timestamp), every node of the tree processes it
/// again. Without: SLAP's `computerBang`; natively (no such route) the bang of every partition
/// holding an instance in the cached desired state. Returns what was banged.
pub fn bang(
    config: &Config,
    p: Option<&slapos_proto::PartitionId>,
    message: &str,
) -> Result<String, NodeError> {
    config.validate()?;
    let link = master_link(config)?;
    let parts = match (p, config.protocol) {
        (Some(p), _) if !config.partition_ids().iter().any(|(_, id)| id == p) => {
            return Err(NodeError::Bang(format!(
                "`{p}` is not a partition of this node ({} partitions)",
                config.partitions
            )));
        }
        (Some(p), _) => vec![p.clone()],
        (None, Protocol::Slap) => {
            link.bang(None, message)?;
            return Ok(format!("computer {}", config.computer_id));
        }
        (None, Protocol::Native) => link::cache::DesiredCache::new(&config.state_dir())
            .load(&config.computer_id)
            .map(|d| d.partitions.into_iter().filter(|p| p.instance.is_some()))
            .ok_or_else(|| {
                NodeError::Bang(
                    "no cached desired state to find the partitions in: give --partition".into(),
                )
            })?
            .map(|p| p.id)
            .collect(),
    };
    if parts.is_empty() {
        return Err(NodeError::Bang(
            "no partition holds an instance (cached desired state): nothing to bang".into(),
        ));
    }
    let mut names = Vec::new();
    for p in &parts {
        link.bang(Some(p), message)?;
        names.push(p.as_str());
    }
    Ok(format!("partition(s) {}", names.join(", ")))
}

/// `slapos-node format`: create partitions (idempotent) and register with the master when it is
/// reachable. Returns whether the registration succeeded (`false`: offline, nothing lost).
pub fn format(config: &Config) -> Result<bool, NodeError> {
    config.validate()?;
    let iso = select_isolation(config)?;
    match host::rt_resources::build(config)? {
        Some(rt) => format_with(config, &*iso, &rt),
        None => format_with(config, &*iso, &host::resources::NoResources),
    }
}

/// [`format()`] with explicit seams.
pub fn format_with(
    config: &Config,
    iso: &dyn host::isolation::Isolation,
    res: &dyn host::resources::Resources,
) -> Result<bool, NodeError> {
    config.validate()?;
    // Before touching anything: an https master without an identity is a clear error.
    let link = master_link(config)?;
    let parts = host::layout::format(config, iso)?;
    let reg = host::layout::registration(config, &parts, &res.labels(), iso);
    match link.register(&reg) {
        Ok(()) => Ok(true),
        Err(e) if e.is_unreachable() => {
            tracing::warn!("partitions formatted; master unreachable, registration deferred: {e}");
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// The link to the master the `protocol` key selects: [`link::ClientLink`] (`native`) or
/// [`link::slap::SlapLink`] (`slap`), either over mTLS with the enrolled identity when
/// `master_url` is `https://` (see [`link::identity`]).
pub fn master_link(config: &Config) -> Result<Arc<dyn link::MasterLink>, NodeError> {
    let computer = config.computer_id.clone();
    Ok(match config.protocol {
        Protocol::Native if config.uses_identity() => {
            let id = link::identity::load(config)?;
            Arc::new(link::ClientLink::with_identity(
                &config.master_url,
                computer,
                &id,
            )?)
        }
        Protocol::Native => Arc::new(link::ClientLink::new(&config.master_url, computer)?),
        Protocol::Slap if config.uses_identity() => {
            let id = link::identity::load(config)?;
            Arc::new(link::slap::SlapLink::with_identity(
                &config.master_url,
                computer,
                &id,
            )?)
        }
        Protocol::Slap => Arc::new(link::slap::SlapLink::new(&config.master_url, computer)?),
    })
}

/// The isolation the `isolation` key selects (see the [`host::isolation`] module doc):
///
/// * `users`: [`host::isolation::UnixUsers`]; refused when the node is not root, or when `instance_root` or
///   `software_root` cannot be reached by partition users (an ancestor lacks `o+x`);
/// * `none`: [`host::isolation::CurrentUser`] (a root node then runs partitions as root: warned);
/// * `auto`: `users` on a root node whose roots partition users can reach and that has
///   `useradd`; otherwise `none`, with a warning naming the reason on a root node.
pub fn select_isolation(cfg: &Config) -> Result<Arc<dyn host::isolation::Isolation>, ConfigError> {
    let root = nix::unistd::geteuid().is_root();
    let unreachable = [&cfg.instance_root, &cfg.software_root]
        .into_iter()
        .find_map(|d| host::isolation::reachable_by_others(d).err());
    // Looked up only where users are possible (a root node that may isolate).
    let useradd = (root && cfg.isolation != IsolationMode::None)
        .then(host::isolation::find_useradd)
        .flatten();
    let users = |tool: PathBuf| -> Arc<dyn host::isolation::Isolation> {
        Arc::new(host::isolation::UnixUsers::with_useradd(
            cfg.user_prefix.clone(),
            tool,
        ))
    };
    match cfg.isolation {
        IsolationMode::Users if !root => Err(ConfigError::Invalid {
            key: "isolation",
            reason: "\"users\" needs a node running as root (use \"none\" or \"auto\")".into(),
        }),
        IsolationMode::Users => match unreachable {
            Some(d) => Err(ConfigError::Invalid {
                key: "isolation",
                reason: format!(
                    "partition users cannot reach `{}` (not searchable by others): \
                     make it o+x or move instance_root/software_root",
                    d.display()
                ),
            }),
            None => match useradd {
                Some(tool) => Ok(users(tool)),
                None => Err(ConfigError::Invalid {
                    key: "isolation",
                    reason: "\"users\" needs `useradd` (Debian: apt-get install passwd)".into(),
                }),
            },
        },
        IsolationMode::Auto if root => match (useradd, unreachable) {
            (None, _) => {
                tracing::warn!(
                    "isolation = \"auto\": no `useradd` on this system (e.g. a minimal board \
                     image): partitions run as root; install passwd or set isolation = \"none\""
                );
                Ok(Arc::new(host::isolation::CurrentUser))
            }
            (Some(_), Some(d)) => {
                tracing::warn!(
                    "isolation = \"auto\": partition users could not reach `{}` (not o+x): \
                     partitions run as root; set isolation = \"users\" to make this an error",
                    d.display()
                );
                Ok(Arc::new(host::isolation::CurrentUser))
            }
            (Some(tool), None) => Ok(users(tool)),
        },
        IsolationMode::None if root => {
            tracing::warn!("isolation = \"none\" on a root node: partitions run as root");
            Ok(Arc::new(host::isolation::CurrentUser))
        }
        IsolationMode::Auto | IsolationMode::None => Ok(Arc::new(host::isolation::CurrentUser)),
    }
}

/// Run a node until `shutdown` resolves, with resources from the `rt` config key
/// ([`host::rt_resources::from_config`]), isolation from the `isolation` key
/// ([`select_isolation`]) and the master link from the `protocol` key ([`master_link`]);
/// [`run_with`] takes explicit seams instead.
///
/// Formats the partitions (idempotent), brings every partition back to the cached desired state
/// (if any), then follows the master. Works on a current-thread runtime; the runtime needs IO and
/// time enabled (`enable_all`). On `shutdown`, every service is stopped (TERM, then KILL after
/// `stop_timeout`) before this returns; a node started again restarts them.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    config.validate()?;
    let seams = Seams {
        // Built first: an https master without an identity stops the node before it formats.
        link: Some(master_link(&config)?),
        resources: host::rt_resources::from_config(&config)?,
        isolation: select_isolation(&config)?,
        ..Seams::default()
    };
    run_with(config, seams, shutdown).await
}
