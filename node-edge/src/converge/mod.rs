//! The node's main loop: desired state in, installs and partition targets out.
//!
//! ```text
//!  poller ──desired──▶ main loop ──Target (watch)──▶ partition task × N ──▶ services, promises
//!    ▲  (cache write)      │  ▲                               │
//!    │                     ▼  │ install results               ▼
//!  master ◀── flusher ◀── outbox ◀── install tasks (≤ max_installs) / reports, connection, requests
//! ```
//!
//! The main loop owns the release slots ([`Slot`]) and the latest desired state (from the master
//! or, at start, from the cache). On every change — a new desired state, an install result, or
//! the periodic tick (`poll_interval`, which also retries failed installs when due) — it starts
//! release installs/removals and hands each partition task its [`Target`] (only when it
//! changed). Installs run as tasks apart from partition passes, as in SlapOS.
//!
//! Submodules: [`plan`] decides, purely, what to install or remove and whether a partition needs
//! a pass (the skip rule); [`partition`] is the task of one partition (its pass, services,
//! promises, certificate).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use slapos_proto::{
    DesiredState, InstallState, InstanceTitle, PartitionId, SoftwareReport, SoftwareUrl,
};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

pub mod partition;
pub mod plan;

use partition::{PartitionHandle, Shared};
use plan::{Slot, SoftwareAction, Target};

use crate::NodeError;
use crate::config::Config;
use crate::host::isolation::{CurrentUser, Isolation};
use crate::host::jail::Jails;
use crate::host::layout;
use crate::host::quota::Quotas;
use crate::host::resources::{NoResources, Resources};
use crate::link::cache::DesiredCache;
use crate::link::{self, LinkState, MasterLink, Outbox, Outgoing, PollSettings};
use crate::software::fetch::Fetcher;
use crate::software::install::{InstallError, Installer};
use crate::usage;

/// The pluggable parts of a node. `Seams::default()` is the unprivileged production setup.
#[derive(Clone)]
pub struct Seams {
    /// Partition isolation (default: everything runs as the node's user).
    pub isolation: Arc<dyn Isolation>,
    /// Partition resources (default: none; refuses RT profiles).
    pub resources: Arc<dyn Resources>,
    /// The master link (default: HTTP to `master_url`).
    pub link: Option<Arc<dyn MasterLink>>,
    /// Where `/proc` is.
    pub proc_root: PathBuf,
    /// Where the cgroup hierarchies are mounted (partition jails, [`crate::host::jail`]).
    pub cgroup_root: PathBuf,
}

impl Default for Seams {
    fn default() -> Self {
        Self {
            isolation: Arc::new(CurrentUser),
            resources: Arc::new(NoResources),
            link: None,
            proc_root: PathBuf::from("/proc"),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
        }
    }
}

/// The jails of a node ([`crate::host::jail`]): on a root node with a cgroup hierarchy (warned
/// otherwise); jails of partitions it no longer has and of interrupted builds are removed.
fn jails(cfg: &Config, seams: &Seams, parts: &[layout::PartitionLayout]) -> Option<Arc<Jails>> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let key = crate::host::jail::node_key(&cfg.state_dir());
    let Some(j) = Jails::detect(
        &seams.cgroup_root,
        &key,
        cfg.max_processes,
        &seams.proc_root,
    ) else {
        tracing::warn!(
            "no cgroup hierarchy under `{}` (pids+freezer or unified): partition processes are \
             not jailed, a process that leaves its group outlives its service until the uid sweep",
            seams.cgroup_root.display()
        );
        return None;
    };
    if !j.limits_pids() {
        tracing::warn!(
            "no pids controller for the partition jails: `max_processes` is enforced by RLIMIT_NPROC only"
        );
    }
    let names: Vec<&str> = parts.iter().map(|p| p.id.as_str()).collect();
    j.remove_others(&names);
    Some(Arc::new(j))
}

enum SwDone {
    Installed(SoftwareUrl, Result<PathBuf, InstallError>),
    Removed(SoftwareUrl, Result<(), String>),
}

struct Node {
    cfg: Arc<Config>,
    desired: Option<DesiredState>,
    slots: BTreeMap<SoftwareUrl, Slot>,
    partitions: BTreeMap<PartitionId, PartitionHandle>,
    installer: Installer,
    install_sem: Arc<Semaphore>,
    tasks: JoinSet<()>,
    done_tx: mpsc::Sender<SwDone>,
    outbox: Arc<Outbox>,
    unknown_warned: BTreeSet<PartitionId>,
    /// The instance on each partition, for usage samples.
    instances: usage::Instances,
}

impl Node {
    fn report(&self, url: &SoftwareUrl, state: InstallState, message: Option<String>) {
        self.outbox.push(Outgoing::Software(SoftwareReport {
            url: url.clone(),
            state,
            message,
            parameter_model: None,
        }));
    }

    fn start_install(&mut self, url: SoftwareUrl) {
        self.slots.insert(url.clone(), Slot::Installing);
        let installer = self.installer.clone();
        let sem = self.install_sem.clone();
        let tx = self.done_tx.clone();
        let outbox = self.outbox.clone();
        self.tasks.spawn(async move {
            let res = match installer.installed(&url) {
                Some(d) => Ok(d),
                None => {
                    let _permit = sem.acquire_owned().await;
                    tracing::info!(software = %url, "installing");
                    // Building, then each step as it starts (the outbox keeps only the latest
                    // unsent one): `request --wait` shows it.
                    let building = |message: Option<String>| {
                        outbox.push(Outgoing::Software(SoftwareReport {
                            url: url.clone(),
                            state: InstallState::Building,
                            message,
                            parameter_model: None,
                        }))
                    };
                    building(None);
                    installer
                        .install_with(&url, &|line: &str| building(Some(line.to_owned())))
                        .await
                }
            };
            let _ = tx.send(SwDone::Installed(url, res)).await;
        });
    }

    fn start_remove(&mut self, url: SoftwareUrl) {
        self.slots.insert(url.clone(), Slot::Installing);
        let installer = self.installer.clone();
        let tx = self.done_tx.clone();
        self.tasks.spawn(async move {
            let u = url.clone();
            let res = link::off_thread(move || installer.remove(&u))
                .await
                .unwrap_or_else(|| Err(std::io::Error::other("remover thread failed")))
                .map_err(|e| e.to_string());
            let _ = tx.send(SwDone::Removed(url, res)).await;
        });
    }

    fn done(&mut self, d: SwDone) {
        match d {
            SwDone::Installed(url, Ok(dir)) => {
                tracing::info!(software = %url, dir = %dir.display(), "software release available");
                // The manifest was parsed at install time; a read failure here only loses the
                // request-time check (the profile still validates on the node).
                let parameter_model = match crate::software::install::load_manifest(&dir) {
                    Ok(m) => m.parameter_model,
                    Err(e) => {
                        tracing::warn!(software = %url, "parameter model unknown: {e}");
                        None
                    }
                };
                self.slots.insert(url.clone(), Slot::Available(dir));
                self.outbox.push(Outgoing::Software(SoftwareReport {
                    url: url.clone(),
                    state: InstallState::Available,
                    message: None,
                    parameter_model,
                }));
            }
            SwDone::Installed(url, Err(e)) => self.failed(url, e.to_string()),
            SwDone::Removed(url, Ok(())) => {
                tracing::info!(software = %url, "software release removed");
                self.slots.insert(url.clone(), Slot::Removed);
                self.report(&url, InstallState::Destroyed, None);
            }
            SwDone::Removed(url, Err(e)) => {
                let message = format!(
                    "failed to remove `{}`: {e}",
                    self.installer.dir(&url).display()
                );
                self.failed(url, message);
            }
        }
    }

    /// An install or removal failed: report it and retry after `install_retry`.
    fn failed(&mut self, url: SoftwareUrl, message: String) {
        let message = crate::util::cap_message(&message);
        tracing::error!(software = %url, "{message}");
        self.slots.insert(
            url.clone(),
            Slot::Failed {
                message: message.clone(),
                retry_at: Instant::now() + self.cfg.install_retry,
            },
        );
        self.report(&url, InstallState::Error, Some(message));
    }

    fn reconcile(&mut self) {
        let Some(desired) = self.desired.clone() else {
            return;
        };
        // A failed release that is supplied again (e.g. after a fix at the same URL) is retried
        // on the next change of the desired state; here only when its retry time has come.
        for action in plan::software_actions(&desired, &self.slots, Instant::now()) {
            match action {
                SoftwareAction::Install(u) => self.start_install(u),
                SoftwareAction::Remove(u) => self.start_remove(u),
            }
        }
        let mut seen = BTreeSet::new();
        for p in &desired.partitions {
            seen.insert(p.id.clone());
            let Some(h) = self.partitions.get(&p.id) else {
                if self.unknown_warned.insert(p.id.clone()) {
                    tracing::warn!(partition = %p.id, "the master knows a partition this node does not have");
                }
                continue;
            };
            let software = match &p.instance {
                Some(a) => plan::software_ready(self.slots.get(&a.software_url)),
                None => plan::SoftwareReady::Pending,
            };
            let t = Target {
                assignment: p.instance.clone(),
                software,
            };
            h.target.send_if_modified(|cur| {
                if cur.as_ref() == Some(&t) {
                    false
                } else {
                    *cur = Some(t);
                    true
                }
            });
        }
        // Partitions the master does not list are free.
        for (id, h) in &self.partitions {
            if !seen.contains(id) {
                let free = Target {
                    assignment: None,
                    software: plan::SoftwareReady::Pending,
                };
                h.target.send_if_modified(|cur| {
                    if cur.as_ref() == Some(&free) {
                        false
                    } else {
                        *cur = Some(free);
                        true
                    }
                });
            }
        }
    }

    /// A new desired state: failed installs of releases it still needs get another try.
    fn set_desired(&mut self, d: DesiredState) {
        let need = plan::needed(&d);
        for (url, slot) in self.slots.iter_mut() {
            if let Slot::Failed { retry_at, .. } = slot
                && need.contains(url)
            {
                *retry_at = Instant::now();
            }
        }
        *self.instances.lock().unwrap_or_else(|e| e.into_inner()) = instances_of(&d);
        self.desired = Some(d);
    }
}

/// The instance title on each allocated partition of `d`.
fn instances_of(d: &DesiredState) -> Vec<(PartitionId, InstanceTitle)> {
    d.partitions
        .iter()
        .filter_map(|p| Some((p.id.clone(), p.instance.as_ref()?.title.clone())))
        .collect()
}

/// The usage sampler's task ([`crate::usage`]), unless `usage_period` is 0; an outbox
/// that cannot be opened is logged and sampling stays off.
fn usage_task(
    cfg: &Config,
    parts: &[layout::PartitionLayout],
    jails: Option<Arc<Jails>>,
    seams: &Seams,
    link: Arc<dyn MasterLink>,
    instances: usage::Instances,
    stop: watch::Receiver<bool>,
) -> Option<(tokio::task::JoinHandle<()>, Arc<usage::Sampler>)> {
    if cfg.usage_period.is_zero() {
        return None;
    }
    let src = usage::Sources {
        parts: parts.to_vec(),
        jails,
        resources: seams.resources.clone(),
        link,
        instances,
        metrics_file: cfg.usage_metrics_file.clone(),
    };
    let dir = cfg.state_dir().join(usage::DIR);
    match usage::Sampler::new(src, &dir, cfg.usage_outbox_max) {
        Ok(s) => {
            let s = Arc::new(s);
            Some((
                tokio::spawn(usage::run(s.clone(), cfg.usage_period, stop)),
                s,
            ))
        }
        Err(e) => {
            usage::error(format_args!("sampling off: {e}"));
            None
        }
    }
}

/// The partitions' disk budgets (`disk_quota_mb`), put in place (project quotas, where the
/// filesystem has them); `None` (logged) without the key.
fn quotas(cfg: &Config, parts: &[layout::PartitionLayout]) -> Option<Arc<Quotas>> {
    let Some(mb) = cfg.disk_quota_mb else {
        tracing::info!(
            "disk_quota_mb is not set: partitions share the filesystem of `{}` without a budget",
            cfg.instance_root.display()
        );
        return None;
    };
    let key = crate::host::jail::node_key(&cfg.state_dir());
    let q = Quotas::detect(&cfg.instance_root, mb, &key);
    for p in parts {
        if let Err(e) = q.apply(&p.path, p.index) {
            tracing::warn!(partition = %p.id, "disk budget: {e}");
        }
    }
    Some(Arc::new(q))
}

/// Name of the lock file in the state directory.
pub const LOCK_FILE: &str = "node.lock";

/// Hold an exclusive `flock` on `<state_dir>/node.lock` for the node's lifetime: two nodes on the
/// same directories would fight over every process and file.
fn lock_state_dir(dir: &std::path::Path) -> Result<nix::fcntl::Flock<std::fs::File>, NodeError> {
    let path = dir.join(LOCK_FILE);
    std::fs::create_dir_all(dir).map_err(|source| NodeError::Io {
        op: "create directory".into(),
        path: dir.to_path_buf(),
        source,
    })?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| NodeError::Io {
            op: "open".into(),
            path: path.clone(),
            source,
        })?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        NodeError::Io {
            op: "lock (is another node running on these directories?)".into(),
            path,
            source: std::io::Error::from(e),
        }
    })
}

/// [`crate::run`] with explicit seams (isolation, resources, master link).
pub async fn run_with(
    config: Config,
    seams: Seams,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodeError> {
    config.validate()?;
    let cfg = Arc::new(config);
    let _lock = lock_state_dir(&cfg.state_dir())?;
    let parts = layout::format(&cfg, &*seams.isolation)?;
    let jails = jails(&cfg, &seams, &parts);
    let link: Arc<dyn MasterLink> = match seams.link.clone() {
        Some(l) => l,
        // The `protocol` key decides (native by default).
        None => crate::master_link(&cfg)?,
    };
    // Builds run as the software user (isolated nodes), in their own jails.
    let builder = seams
        .isolation
        .software_identity(&cfg.software_user, &cfg.software_root)?;
    let installer = Installer::new(
        &cfg.software_root,
        Fetcher::new(cfg.fetch_timeout, &cfg.ca_bundle),
    )
    .with_builder(builder)
    .with_jails(jails.clone());
    installer.clean_leftovers();
    let cache = DesiredCache::new(&cfg.state_dir());
    let cached = cache.load(&cfg.computer_id);
    if let Some(d) = &cached {
        tracing::info!(etag = %d.etag, "starting from the cached desired state");
    }
    let outbox = Arc::new(Outbox::default());
    let shared = Arc::new(Shared {
        cfg: cfg.clone(),
        isolation: seams.isolation.clone(),
        resources: seams.resources.clone(),
        link: link.clone(),
        outbox: outbox.clone(),
        passes: Arc::new(Semaphore::new(cfg.max_instance_passes)),
        proc_root: seams.proc_root.clone(),
        jails: jails.clone(),
        quotas: quotas(&cfg, &parts),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let partitions: BTreeMap<PartitionId, PartitionHandle> = parts
        .iter()
        .map(|l| {
            (
                l.id.clone(),
                partition::spawn(shared.clone(), l.clone(), stop_rx.clone()),
            )
        })
        .collect();

    let registration =
        layout::registration(&cfg, &parts, &seams.resources.labels(), &*seams.isolation);
    let (desired_tx, mut desired_rx) = mpsc::channel(4);
    let (link_tx, _link_rx) = watch::channel(LinkState::Unknown);
    let poller = tokio::spawn(link::poller(
        link.clone(),
        PollSettings {
            registration,
            long_poll: cfg.long_poll,
            poll_interval: cfg.poll_interval,
        },
        cache,
        cached.as_ref().map(|d| d.etag.clone()),
        desired_tx,
        link_tx,
        outbox.clone(),
    ));
    let flusher = tokio::spawn(link::flusher(
        link.clone(),
        outbox.clone(),
        cfg.poll_interval,
    ));

    let instances: usage::Instances = Arc::new(std::sync::Mutex::new(
        cached.as_ref().map(instances_of).unwrap_or_default(),
    ));
    let sampler = usage_task(
        &cfg,
        &parts,
        jails.clone(),
        &seams,
        link.clone(),
        instances.clone(),
        stop_rx.clone(),
    );
    let (done_tx, mut done_rx) = mpsc::channel(64);
    let mut node = Node {
        cfg: cfg.clone(),
        desired: cached,
        slots: BTreeMap::new(),
        partitions,
        installer,
        install_sem: Arc::new(Semaphore::new(cfg.max_installs)),
        tasks: JoinSet::new(),
        done_tx,
        outbox,
        unknown_warned: BTreeSet::new(),
        instances,
    };
    tracing::info!(
        computer = %cfg.computer_id,
        master = %cfg.master_url,
        partitions = parts.len(),
        "node started"
    );
    node.reconcile();
    let mut tick = tokio::time::interval(cfg.poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(d) = desired_rx.recv() => {
                tracing::info!(etag = %d.etag, "new desired state");
                node.set_desired(d);
                node.reconcile();
            }
            Some(d) = done_rx.recv() => {
                node.done(d);
                node.reconcile();
            }
            Some(_) = node.tasks.join_next(), if !node.tasks.is_empty() => {}
            _ = tick.tick() => node.reconcile(),
        }
    }

    tracing::info!("shutting down: stopping every service");
    poller.abort();
    node.tasks.abort_all();
    let _ = stop_tx.send(true);
    for (_, h) in std::mem::take(&mut node.partitions) {
        let _ = h.task.await;
    }
    flusher.abort();
    // Its files are consistent at any point (see `usage::outbox`): no need to wait for it. A
    // last sample while the jails still hold the stopped services' counters (sent next start).
    if let Some((task, s)) = sampler {
        task.abort();
        s.sample(crate::util::now_ms());
    }
    if let Some(j) = &jails {
        j.remove_others(&[]);
    }
    tracing::info!("node stopped");
    Ok(())
}
