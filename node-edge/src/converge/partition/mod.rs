//! One task per partition: converges it to its target and keeps it running.
//!
//! The task owns the partition's services, promises and applied resources, so a partition is
//! never processed twice at once, and a failing partition (bad template, failing service or
//! promise, refused resources) only ever affects itself. Passes of different partitions run
//! concurrently, at most `max_instance_passes` at a time (a semaphore).
//!
//! A pass, for an instance that must be `started` or `stopped`:
//! 1. render the release's instance profile for the software type into the instance manifest
//!    (kept in `.slapos/instance.toml`); on error the old services keep running;
//! 2. write the manifest's files;
//! 3. `started`: apply `[resources]`, (re)start the services whose command, environment or
//!    resources changed, stop those gone, run every promise once (when services were
//!    (re)started, failing promises get up to [`SETTLE`] to pass, re-checked at 0.2 s, 0.4 s …);
//!    `stopped`: stop every service, release resources;
//! 4. publish the connection parameters, request the children (as this partition);
//! 5. report `started`/`stopped` with the revision, promise results and any error.
//!
//! `destroyed`: stop everything, release resources, empty the partition directory (then write
//! its resource record again) and report `destroyed`; the master then frees the partition. A free
//! partition that still runs something is stopped; files left by an earlier instance are kept
//! (with a warning), as SlapOS does.
//!
//! Over native mTLS, a pass of an allocated partition first makes sure the partition holds its
//! certificate (`partition/certificate.rs`).
//!
//! A failed pass is reported and retried with backoff (2 s doubling to 5 min). Between passes
//! promises run on their schedule; a report is sent whenever a promise's verdict changes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use slapos_proto::{
    Assignment, ConnectionPublish, InstanceState, Params, PartitionReport, PromiseResult,
};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::Config;
use crate::converge::plan::{Converged, SoftwareReady, Target, needs_pass};
use crate::host::isolation::{Identity, Isolation};
use crate::host::jail::{self, JailJoin, Jails};
use crate::host::layout::{PartitionLayout, format_partition};
use crate::host::partition_fs::PartitionFs;
use crate::host::quota::Quotas;
use crate::host::resources::Resources;
use crate::link::{MasterLink, Outbox, Outgoing, off_thread};
use crate::process::procs;
use crate::process::promise::{self, Schedule};
use crate::process::supervisor::{Launch, Service, ServiceParams};
use crate::software::install::load_manifest;
use crate::software::profile::{
    InstanceManifest, PartitionContext, PromiseSpec, RenderContext, render_file,
};
use crate::util::backoff::Backoff;
use crate::util::{cap_message, empty_dir};

pub mod certificate;
mod error;

pub use error::PassError;

/// The rendered manifest, kept for operators.
pub const RENDERED: &str = ".slapos/instance.toml";

/// Where promise outputs go, relative to the partition.
const PROMISE_DIR: &str = ".slapos/promise";
/// Where prepare step outputs go.
const PREPARE_DIR: &str = ".slapos/prepare";
/// Largest `connection_file` read.
const CONNECTION_FILE_MAX: u64 = 256 * 1024;
/// Largest `resources_file` read.
const RESOURCES_FILE_MAX: u64 = 64 * 1024;

/// How long failing promises are re-checked in a pass that (re)started services.
pub const SETTLE: Duration = Duration::from_secs(3);

/// Which promises to run.
#[derive(Debug, Clone, Copy)]
enum Which {
    All,
    Due,
    Failing,
}

/// Node-wide things every partition task uses.
pub struct Shared {
    /// Configuration.
    pub cfg: Arc<Config>,
    /// Isolation seam.
    pub isolation: Arc<dyn Isolation>,
    /// Resources seam.
    pub resources: Arc<dyn Resources>,
    /// Master link (child requests).
    pub link: Arc<dyn MasterLink>,
    /// Messages for the master.
    pub outbox: Arc<Outbox>,
    /// Bounds concurrent passes.
    pub passes: Arc<Semaphore>,
    /// `/proc`.
    pub proc_root: PathBuf,
    /// The partitions' jail cgroups (`None`: no usable cgroup hierarchy, or not root).
    pub jails: Option<Arc<Jails>>,
    /// The partitions' disk budget (`None`: `disk_quota_mb` unset).
    pub quotas: Option<Arc<Quotas>>,
}

/// The node's handle on a partition task.
#[derive(Debug)]
pub struct PartitionHandle {
    /// Latest target (`None` until the node knows one).
    pub target: watch::Sender<Option<Target>>,
    /// The task.
    pub task: JoinHandle<()>,
}

/// Start the task of partition `layout`. It stops everything and returns when `stop` turns true.
pub fn spawn(
    sh: Arc<Shared>,
    layout: PartitionLayout,
    stop: watch::Receiver<bool>,
) -> PartitionHandle {
    let (tx, rx) = watch::channel(None);
    // A profile left applied by a node that crashed: the first pass re-applies or releases.
    let held = sh.resources.held(&layout.id).then(Map::new);
    let actor = Actor {
        sh,
        layout,
        services: BTreeMap::new(),
        resources: held,
        live: None,
        shared_connection: BTreeMap::new(),
        promises: Vec::new(),
        converged: None,
        retry: None,
        retry_backoff: Backoff::new(Duration::from_secs(2), Duration::from_secs(300)),
        last_error: None,
        reported: None,
        waiting: false,
        cert_retry: None,
        allocation: None,
        unclean: false,
        disk: None,
    };
    let task = tokio::spawn(actor.run(rx, stop));
    PartitionHandle { target: tx, task }
}

struct PromiseSlot {
    spec: PromiseSpec,
    launch: Launch,
    timeout: Duration,
    schedule: Schedule,
    last: Option<PromiseResult>,
}

/// What the last started/stopped report said, to report promise changes against it.
#[derive(Debug, Clone, PartialEq)]
struct Reported {
    revision: u64,
    state: InstanceState,
    verdicts: Vec<(String, bool)>,
}

struct Actor {
    sh: Arc<Shared>,
    layout: PartitionLayout,
    services: BTreeMap<String, (Launch, Service)>,
    /// The `[resources]` table applied, `None` when released.
    resources: Option<Map<String, Value>>,
    /// Live connection parameters: `connection_file`, the rendered `[connection]` and what was
    /// last published.
    live: Option<(PathBuf, Params, Params)>,
    /// What the last pass published for the hosted shared instances.
    shared_connection: BTreeMap<String, Params>,
    promises: Vec<PromiseSlot>,
    converged: Option<Converged>,
    retry: Option<Instant>,
    retry_backoff: Backoff,
    last_error: Option<(u64, String)>,
    reported: Option<Reported>,
    /// Nothing to do until the target changes (the release is not installed yet).
    waiting: bool,
    /// A certificate fetch to retry (the master was unreachable), for that assignment.
    cert_retry: Option<(Instant, Assignment)>,
    /// The allocation ([`allocation`]) last converged: a different one is a re-allocation,
    /// which starts from an empty partition (nothing of the previous tenant runs).
    allocation: Option<String>,
    /// Emptying the partition failed (a process survived): passes retry it.
    unclean: bool,
    /// The built-in disk budget promise ([`crate::host::quota`]): its schedule and last result.
    disk: Option<(Schedule, Option<PromiseResult>)>,
}

/// What a partition certificate belongs to: the instance's root title, title and release.
fn allocation(a: &Assignment) -> String {
    format!("{}\n{}\n{}", a.root_title, a.title, a.software_url)
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

impl Actor {
    fn id(&self) -> &slapos_proto::PartitionId {
        &self.layout.id
    }

    /// The identity the partition's processes run as (`None`: the node's).
    fn identity(&self) -> Option<Identity> {
        self.sh.isolation.identity(&self.layout.id)
    }

    /// The partition's files, as the partition ([`PartitionFs`]).
    fn fs(&self) -> PartitionFs {
        PartitionFs::new(&self.layout.path, self.identity())
    }

    /// Kill everything the partition runs (its jail; all processes of its user when isolated)
    /// and verify that nothing is left ([`Jails::empty`]).
    /// A failure leaves the partition `unclean`: it is retried by the next passes.
    async fn empty(&mut self) -> Result<(), PassError> {
        let jails = self.sh.jails.clone();
        let name = self.layout.id.to_string();
        let owner = self.identity();
        let proc_root = self.sh.proc_root.clone();
        if jails.is_none() && owner.is_none() {
            return Ok(());
        }
        let task = move || match (&jails, owner) {
            (Some(j), owner) => j.empty(&name, owner),
            (None, Some(id)) => jail::sweep_uid(&proc_root, id),
            (None, None) => Ok(()),
        };
        // On a plain thread (it waits for the kernel): tokio's blocking pool would cost the
        // static node ~10 KB.
        let res = match off_thread(task).await {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(PassError::Empty {
                partition: self.layout.id.clone(),
                reason: e.to_string(),
            }),
            None => Err(PassError::Empty {
                partition: self.layout.id.clone(),
                reason: "the kill thread failed".into(),
            }),
        };
        self.unclean = res.is_err();
        res
    }

    /// The jail the partition's processes join (created when missing).
    fn jail(&self) -> Result<Option<JailJoin>, PassError> {
        self.sh
            .jails
            .as_ref()
            .map(|j| j.prepare(self.layout.id.as_str()))
            .transpose()
            .map_err(|source| PassError::Jail {
                partition: self.layout.id.clone(),
                source,
            })
    }

    async fn run(
        mut self,
        mut target: watch::Receiver<Option<Target>>,
        mut stop: watch::Receiver<bool>,
    ) {
        let grace = self.sh.cfg.stop_timeout;
        let killed = procs::kill_orphans(&self.sh.proc_root, &self.fs(), grace).await;
        if !killed.is_empty() {
            tracing::info!(partition = %self.id(), "stopped {} service(s) left by a previous node", killed.len());
        }
        // Nothing of a partition runs before this node starts it: whatever a previous node
        // left (descendants of its services, survivors of a crash) goes now.
        if let Err(e) = self.empty().await {
            tracing::warn!(partition = %self.id(), "{e}");
        }
        loop {
            if *stop.borrow() {
                break;
            }
            // A target that changed while a pass ran (e.g. the release became available while
            // this partition was reporting that it waits for it) is new work: marking it seen
            // below without clearing `waiting` would lose the wake-up.
            if target.has_changed().unwrap_or(false) {
                self.retry = None;
                self.waiting = false;
            }
            let current = target.borrow_and_update().clone();
            let due = current.as_ref().is_some_and(|t| {
                !self.waiting
                    && needs_pass(t, self.converged.as_ref(), self.dirty())
                    && self.retry.is_none_or(|r| r <= Instant::now())
            });
            if let Some(t) = current.filter(|_| due) {
                let cancelled = tokio::select! {
                    _ = self.pass(&t) => false,
                    _ = stop.changed() => true,
                };
                if cancelled {
                    break;
                }
                continue;
            }
            let disk_due = self.disk.as_ref().map(|d| d.0.due());
            let next_promise = self
                .promises
                .iter()
                .map(|p| p.schedule.due())
                .chain(disk_due)
                .min();
            let cert_retry = self.cert_retry.as_ref().map(|(t, _)| *t);
            tokio::select! {
                _ = stop.changed() => break,
                r = target.changed() => {
                    if r.is_err() {
                        break;
                    }
                    // A new target is worth trying at once, even after failures.
                    self.retry = None;
                    self.waiting = false;
                }
                _ = sleep_until_opt(self.retry) => self.retry = None,
                _ = sleep_until_opt(cert_retry) => {
                    if let Some((_, a)) = self.cert_retry.take() {
                        let done = tokio::select! {
                            r = self.ensure_certificate(&a) => Some(r),
                            _ = stop.changed() => None,
                        };
                        match done {
                            None => break,
                            Some(Err(e)) => tracing::warn!(partition = %self.id(), "{e}"),
                            Some(Ok(())) => {}
                        }
                    }
                }
                _ = sleep_until_opt(next_promise) => {
                    let ran = tokio::select! {
                        _ = self.run_promises(Which::Due) => true,
                        _ = stop.changed() => false,
                    };
                    if !ran {
                        break;
                    }
                    self.after_promises();
                    self.report_promise_changes();
                }
            }
        }
        self.stop_all().await;
        self.release();
        if let Err(e) = self.empty().await {
            tracing::warn!(partition = %self.id(), "at shutdown: {e}");
        }
        if let Some(j) = &self.sh.jails
            && let Err(e) = j.remove(self.layout.id.as_str())
        {
            tracing::warn!(partition = %self.id(), "at shutdown: {e}");
        }
    }

    /// Services or resources of an instance are still there.
    fn dirty(&self) -> bool {
        !self.services.is_empty() || self.resources.is_some() || self.unclean
    }

    async fn pass(&mut self, t: &Target) {
        let _permit = self.sh.passes.clone().acquire_owned().await;
        let Some(a) = &t.assignment else {
            if let Err(e) = self.free().await {
                let wait = self.retry_backoff.fail();
                tracing::warn!(partition = %self.id(), "freeing failed (retry in {wait:?}): {e}");
                self.retry = Some(Instant::now() + wait);
            }
            return;
        };
        tracing::info!(partition = %self.id(), title = %a.title, state = a.state.as_str(), revision = a.revision, "processing");
        let res = match a.state {
            InstanceState::Destroyed => self.destroy(a).await,
            InstanceState::Started | InstanceState::Stopped => {
                // Stopped: nothing runs (SlapOS). Another allocation: nothing of the previous
                // tenant may run next to the new one.
                let moved = self.allocation.as_deref() != Some(allocation(a).as_str());
                let stopped = a.state == InstanceState::Stopped;
                if stopped || moved {
                    self.stop_all().await;
                    self.release();
                }
                let emptied = if stopped || moved {
                    self.empty().await
                } else {
                    Ok(())
                };
                match (&t.software, emptied) {
                    (_, Err(e)) => Err(e),
                    (SoftwareReady::Ready(dir), Ok(())) => self.converge(a, dir).await,
                    (SoftwareReady::Pending, Ok(())) => {
                        tracing::info!(partition = %self.id(), software = %a.software_url, "waiting for the software release");
                        self.waiting = true;
                        return;
                    }
                    (SoftwareReady::Failed(m), Ok(())) => Err(PassError::Software {
                        url: a.software_url.clone(),
                        reason: m.clone(),
                    }),
                }
            }
        };
        match res {
            Ok(c) => {
                tracing::info!(partition = %self.id(), state = c.state.as_str(), revision = c.revision, "converged");
                self.allocation = (c.state != InstanceState::Destroyed).then(|| allocation(a));
                self.converged = Some(c);
                self.retry = None;
                self.retry_backoff.reset();
                self.last_error = None;
            }
            Err(e) => {
                let msg = e.to_string();
                let wait = self.retry_backoff.fail();
                tracing::warn!(partition = %self.id(), "pass failed (retry in {wait:?}): {msg}");
                self.retry = Some(Instant::now() + wait);
                if self.last_error.as_ref() != Some(&(a.revision, msg.clone())) {
                    self.last_error = Some((a.revision, msg.clone()));
                    self.push_report(a.state, a.revision, Some(msg));
                }
            }
        }
    }

    fn push_report(&mut self, state: InstanceState, revision: u64, error: Option<String>) {
        let error = error.map(|e| cap_message(&e));
        let promises: Vec<PromiseResult> = if state == InstanceState::Started {
            self.results().cloned().collect()
        } else {
            Vec::new()
        };
        self.reported = Some(Reported {
            revision,
            state,
            verdicts: promises.iter().map(|p| (p.name.clone(), p.ok)).collect(),
        });
        self.sh.outbox.push(Outgoing::Report(
            self.id().clone(),
            PartitionReport {
                state,
                revision,
                promises,
                error,
            },
        ));
    }

    /// After periodic promise runs: report if a verdict changed.
    /// The last result of every promise, the built-in disk budget promise last.
    fn results(&self) -> impl Iterator<Item = &PromiseResult> {
        let disk = self.disk.as_ref().and_then(|d| d.1.as_ref());
        self.promises
            .iter()
            .filter_map(|p| p.last.as_ref())
            .chain(disk)
    }

    fn report_promise_changes(&mut self) {
        let Some(r) = self.reported.clone() else {
            return;
        };
        if r.state != InstanceState::Started {
            return;
        }
        let verdicts: Vec<(String, bool)> =
            self.results().map(|l| (l.name.clone(), l.ok)).collect();
        if verdicts != r.verdicts {
            let error = self.last_error.as_ref().map(|(_, m)| m.clone());
            self.push_report(r.state, r.revision, error);
        }
    }

    /// After a promise round: publish changed live connection parameters, record usage.
    fn after_promises(&mut self) {
        let fs = self.fs();
        if let Some((file, base, last)) = &mut self.live {
            let merged = merge_live(base, &fs, file);
            if merged != *last {
                *last = merged.clone();
                let publish = ConnectionPublish {
                    parameters: merged,
                    shared: self.shared_connection.clone(),
                };
                self.sh
                    .outbox
                    .push(Outgoing::Connection(self.layout.id.clone(), publish));
            }
        }
        if self.resources.is_some()
            && let Some(u) = self.sh.resources.usage(&self.layout.id)
            && let Ok(json) = serde_json::to_vec(&u)
            && let Err(e) = fs.write_atomic(".slapos/usage.json", &json, None)
        {
            tracing::debug!(partition = %self.id(), "{e}");
        }
    }

    async fn stop_all(&mut self) {
        self.live = None;
        self.promises.clear();
        self.disk = None;
        let services = std::mem::take(&mut self.services);
        if services.is_empty() {
            return;
        }
        let stops: Vec<_> = services
            .into_values()
            .map(|(_, s)| tokio::spawn(s.stop()))
            .collect();
        for s in stops {
            let _ = s.await;
        }
    }

    fn release(&mut self) {
        if self.resources.take().is_some()
            && let Err(e) = self.sh.resources.release(&self.layout.id)
        {
            tracing::warn!(partition = %self.id(), "{e}");
        }
    }

    async fn free(&mut self) -> Result<(), PassError> {
        if self.dirty() {
            tracing::info!(partition = %self.id(), "partition is free: stopping what it ran");
        }
        self.stop_all().await;
        self.release();
        // A free partition runs nothing (what its tenant left behind included).
        self.empty().await?;
        self.allocation = None;
        if self
            .converged
            .as_ref()
            .is_some_and(|c| c.state != InstanceState::Destroyed)
            && self.fs().exists(RENDERED)
        {
            tracing::warn!(partition = %self.id(), "partition freed without being destroyed: its files are kept");
        }
        self.converged = None;
        self.reported = None;
        self.last_error = None;
        self.cert_retry = None;
        self.remove_certificate();
        Ok(())
    }

    async fn destroy(&mut self, a: &Assignment) -> Result<Converged, PassError> {
        self.stop_all().await;
        self.release();
        procs::kill_orphans(&self.sh.proc_root, &self.fs(), self.sh.cfg.stop_timeout).await;
        // Nothing the tenant started survives into the wipe, nor into the next allocation.
        self.empty().await?;
        // The wipe takes the partition certificate with it.
        self.cert_retry = None;
        empty_dir(&self.layout.path).map_err(|source| PassError::Wipe {
            path: self.layout.path.clone(),
            source,
        })?;
        format_partition(&self.layout, &*self.sh.isolation)
            .map_err(|e| PassError::Format(Box::new(e)))?;
        if let Some(q) = &self.sh.quotas {
            q.apply(&self.layout.path, self.layout.index)
                .map_err(PassError::Quota)?;
        }
        self.push_report(InstanceState::Destroyed, a.revision, None);
        Ok(Converged {
            revision: a.revision,
            state: InstanceState::Destroyed,
            software_dir: None,
        })
    }

    fn context(&self, a: &Assignment, dir: &Path) -> RenderContext {
        let cfg = &self.sh.cfg;
        let tls_file = |f: &str| {
            if self.sh.link.partition_certificates() {
                self.layout.path.join(f).display().to_string()
            } else {
                String::new()
            }
        };
        RenderContext {
            parameters: a.parameters.clone(),
            partition: PartitionContext {
                id: self.layout.id.to_string(),
                path: self.layout.path.display().to_string(),
                ipv4: cfg
                    .network
                    .as_ref()
                    .and_then(|n| n.ipv4(self.layout.index))
                    .map_or_else(
                        || crate::host::layout::LOOPBACK.to_owned(),
                        |a| a.to_string(),
                    ),
                ipv6: cfg
                    .network
                    .as_ref()
                    .and_then(|n| n.ipv6(self.layout.index))
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
                addresses: self.layout.addresses.clone(),
                ports: self.layout.ports.clone(),
                cert: tls_file(certificate::PARTITION_CERT),
                key: tls_file(certificate::PARTITION_KEY),
                ca: tls_file(certificate::PARTITION_CA),
            },
            ports: self.layout.ports.clone(),
            software_dir: dir.display().to_string(),
            software_url: a.software_url.to_string(),
            software_type: a.software_type.to_string(),
            title: a.title.to_string(),
            root_title: a.root_title.to_string(),
            computer_id: cfg.computer_id.to_string(),
            master_url: cfg.master_url.clone(),
            state: a.state.as_str().to_owned(),
            tools_dir: cfg
                .tools_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_default(),
            children: a.children.clone(),
            slave_instance_list: a.shared.iter().map(slave_entry).collect(),
        }
    }

    fn base_env(&self, a: &Assignment, dir: &Path) -> BTreeMap<String, String> {
        let p = &self.layout.path;
        let mut env = BTreeMap::new();
        let mut path =
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
        if let Some(tools) = self.sh.cfg.tools_dir() {
            path = format!("{}:{path}", tools.display());
        }
        for (k, v) in [
            ("PATH", path),
            ("HOME", p.display().to_string()),
            ("TMPDIR", p.join("tmp").display().to_string()),
            ("LANG", "C.UTF-8".into()),
            ("PARTITION_ID", self.layout.id.to_string()),
            ("PARTITION_DIR", p.display().to_string()),
            ("SOFTWARE_DIR", dir.display().to_string()),
            ("SOFTWARE_URL", a.software_url.to_string()),
            ("INSTANCE_TITLE", a.title.to_string()),
            ("COMPUTER_ID", self.sh.cfg.computer_id.to_string()),
            ("MASTER_URL", self.sh.cfg.master_url.clone()),
        ] {
            env.insert(k.to_owned(), v);
        }
        env
    }

    /// Write the manifest's files and the standard directories through [`PartitionFs`]: as the
    /// partition (the files belong to it), never through a link it planted.
    fn write_files(&self, m: &InstanceManifest) -> Result<(), PassError> {
        let fs = self.fs();
        for sub in ["etc", "srv", "tmp", "var/log", ".slapos"] {
            fs.create_dir_all(sub)
                .map_err(|e| PassError::Files(e.to_string()))?;
        }
        for f in &m.files {
            fs.write_atomic(&f.path, f.content.as_bytes(), Some(f.mode))
                .map_err(|e| PassError::Files(format!("file `{}`: {e}", f.path.display())))?;
        }
        Ok(())
    }

    async fn converge(&mut self, a: &Assignment, dir: &Path) -> Result<Converged, PassError> {
        let identity = self.identity();
        if identity.is_none() && self.sh.isolation.requires_identity() {
            return Err(PassError::NoUser(self.layout.id.clone()));
        }
        self.ensure_certificate(a).await?;
        let release = load_manifest(dir).map_err(PassError::Release)?;
        let profile = release
            .profile(&a.software_type)
            .map_err(PassError::Release)?
            .clone();
        let (text, m) = render_file(dir, &profile, &self.context(a, dir))?;
        self.write_files(&m)?;
        let fs = self.fs();
        fs.write_atomic(RENDERED, text.as_bytes(), None)
            .map_err(PassError::Rendered)?;
        let jail = self.jail()?;
        let env = self.base_env(a, dir);
        // Isolated partitions also get RLIMIT_NPROC (per uid); the jail's pids.max holds all.
        let nproc = identity.map(|_| self.sh.cfg.max_processes);
        let make = |argv: &[String], extra: &BTreeMap<String, String>, cwd: Option<&str>, setup| {
            let mut e = env.clone();
            e.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
            Launch {
                argv: argv.to_vec(),
                env: e,
                cwd: cwd.map_or_else(|| self.layout.path.clone(), |c| self.layout.path.join(c)),
                identity,
                setup,
                jail: jail.clone(),
                nproc,
            }
        };

        let mut errors = Vec::new();
        if a.state == InstanceState::Started {
            for p in &m.prepare {
                let launch = make(&p.command, &BTreeMap::new(), None, None);
                let timeout = p.timeout.unwrap_or(self.sh.cfg.promise_timeout);
                let r = promise::run(&p.name, &launch, timeout, &fs, Path::new(PREPARE_DIR)).await;
                if !r.ok {
                    return Err(PassError::Prepare {
                        name: p.name.clone(),
                        message: r.message,
                    });
                }
            }
            let table = effective_resources(&fs, &m).map_err(PassError::ResourcesFile)?;
            let setup = self.sh.resources.apply(&self.layout.id, &table)?;
            let hook = setup.hook.clone();
            let resources_changed = self.resources.as_ref() != Some(&table);
            self.resources = Some(table);

            // Services: keep the unchanged, restart the changed, stop the gone.
            let wanted: BTreeMap<String, Launch> = m
                .services
                .iter()
                .map(|s| {
                    let mut env = setup.env.clone();
                    env.extend(s.env.iter().map(|(k, v)| (k.clone(), v.clone())));
                    (
                        s.name.clone(),
                        make(&s.command, &env, s.cwd.as_deref(), hook.clone()),
                    )
                })
                .collect();
            let old = std::mem::take(&mut self.services);
            let mut stops = Vec::new();
            for (name, (launch, svc)) in old {
                match wanted.get(&name) {
                    Some(w) if *w == launch && !resources_changed => {
                        self.services.insert(name, (launch, svc));
                    }
                    _ => stops.push(tokio::spawn(svc.stop())),
                }
            }
            for s in stops {
                let _ = s.await;
            }
            let cfg = &self.sh.cfg;
            let mut started_any = false;
            for (name, launch) in wanted {
                if self.services.contains_key(&name) {
                    continue;
                }
                started_any = true;
                let svc = Service::start(ServiceParams {
                    name: name.clone(),
                    launch: launch.clone(),
                    fs: fs.clone(),
                    log: Path::new("var/log").join(format!("{name}.log")),
                    log_max_bytes: cfg.log_max_bytes,
                    log_keep: cfg.log_keep,
                    backoff_min: cfg.restart_backoff_min,
                    backoff_max: cfg.restart_backoff_max,
                    stop_timeout: cfg.stop_timeout,
                    proc_root: self.sh.proc_root.clone(),
                });
                self.services.insert(name, (launch, svc));
            }

            let now = Instant::now();
            self.promises = m
                .promises
                .iter()
                .map(|p| PromiseSlot {
                    spec: p.clone(),
                    launch: make(&p.command, &BTreeMap::new(), None, None),
                    timeout: p.timeout.unwrap_or(cfg.promise_timeout),
                    schedule: Schedule::new(p.period.unwrap_or(cfg.promise_interval), now),
                    last: None,
                })
                .collect();
            self.disk = self
                .sh
                .quotas
                .as_ref()
                .map(|_| (Schedule::new(cfg.promise_interval, now), None));
            self.run_promises(Which::All).await;
            if started_any {
                self.settle_promises().await;
            }
        } else {
            self.promises.clear();
            self.disk = None;
        }

        let connection = match &m.connection_file {
            Some(f) if a.state == InstanceState::Started => {
                let merged = merge_live(&m.connection, &fs, f);
                self.live = Some((f.clone(), m.connection.clone(), merged.clone()));
                merged
            }
            _ => {
                self.live = None;
                m.connection.clone()
            }
        };
        self.shared_connection = m.shared_connection.clone();
        let publish = ConnectionPublish {
            parameters: connection,
            shared: m.shared_connection.clone(),
        };
        self.sh
            .outbox
            .push(Outgoing::Connection(self.layout.id.clone(), publish));
        for r in &m.requests {
            let link = self.sh.link.clone();
            let (p, req) = (self.layout.id.clone(), r.clone());
            let item = Outgoing::Request(p, req);
            let it = item.clone();
            match off_thread(move || link.send(&it)).await {
                Some(Ok(())) => {}
                Some(Err(e)) if e.is_unreachable() => self.sh.outbox.push(item),
                Some(Err(e)) => errors.push(format!("request `{}`: {e}", r.title)),
                None => self.sh.outbox.push(item),
            }
        }
        let error = (!errors.is_empty()).then(|| errors.join("; "));
        self.push_report(a.state, a.revision, error.clone());
        if let Some(e) = error {
            return Err(PassError::Requests(e));
        }
        Ok(Converged {
            revision: a.revision,
            state: a.state,
            software_dir: Some(dir.to_path_buf()),
        })
    }

    /// Services were just (re)started: give failing promises up to [`SETTLE`] to pass (re-run
    /// after 0.2 s, 0.4 s, 0.8 s, 1.6 s), so the pass's report does not show a service that is
    /// merely still starting as broken.
    async fn settle_promises(&mut self) {
        let deadline = Instant::now() + SETTLE;
        let mut wait = Duration::from_millis(200);
        while self
            .promises
            .iter()
            .any(|p| p.last.as_ref().is_some_and(|l| !l.ok))
        {
            if Instant::now() + wait > deadline {
                break;
            }
            tokio::time::sleep(wait).await;
            self.run_promises(Which::Failing).await;
            wait *= 2;
        }
    }

    /// Run the selected promises, concurrently.
    async fn run_promises(&mut self, which: Which) {
        let now = Instant::now();
        let fs = self.fs();
        let mut set = tokio::task::JoinSet::new();
        for (i, p) in self.promises.iter().enumerate() {
            let run = match which {
                Which::All => true,
                Which::Due => p.schedule.due() <= now,
                Which::Failing => p.last.as_ref().is_some_and(|l| !l.ok),
            };
            if run {
                let (name, launch, timeout, fs) =
                    (p.spec.name.clone(), p.launch.clone(), p.timeout, fs.clone());
                set.spawn(async move {
                    let dir = Path::new(PROMISE_DIR);
                    (i, promise::run(&name, &launch, timeout, &fs, dir).await)
                });
            }
        }
        let disk = match (&self.sh.quotas, &self.disk) {
            (Some(q), Some((schedule, last))) => {
                let run = match which {
                    Which::All => true,
                    Which::Due => schedule.due() <= now,
                    Which::Failing => last.as_ref().is_some_and(|l| !l.ok),
                };
                run.then(|| (q.clone(), self.layout.path.clone(), self.layout.index))
            }
            _ => None,
        };
        let disk = disk.map(|(q, dir, index)| {
            off_thread(move || {
                let at_ms = crate::util::now_ms();
                let (ok, message) = q.check(&dir, index);
                PromiseResult {
                    name: crate::host::quota::PROMISE.to_owned(),
                    ok,
                    message,
                    at_ms,
                }
            })
        });
        while let Some(r) = set.join_next().await {
            let Ok((i, res)) = r else { continue };
            if let Some(p) = self.promises.get_mut(i) {
                if !res.ok {
                    tracing::info!(partition = %self.layout.id, promise = %res.name, "promise failed: {}", res.message);
                }
                p.schedule.record(res.ok, Instant::now());
                p.last = Some(res);
            }
        }
        if let Some(task) = disk
            && let Some(res) = task.await
            && let Some((schedule, last)) = &mut self.disk
        {
            if !res.ok {
                tracing::warn!(partition = %self.layout.id, promise = %res.name, "{}", res.message);
            }
            schedule.record(res.ok, Instant::now());
            *last = Some(res);
        }
    }
}

/// `[connection]` with the keys of the JSON object in `file` (relative to the partition, read
/// through [`PartitionFs`], at most 256 KiB) merged over it. The file is ignored while missing
/// or not a JSON object (a writer may not have produced it yet); a link, a FIFO, a file of
/// another user or an oversized one is ignored with a warning.
fn merge_live(base: &Params, fs: &PartitionFs, file: &Path) -> Params {
    let mut out = base.clone();
    match fs.read(file, CONNECTION_FILE_MAX) {
        Ok(b) => match serde_json::from_slice::<Value>(&b) {
            Ok(Value::Object(live)) => out.extend(live),
            _ => tracing::debug!("`{}` is not a JSON object", fs.path(file).display()),
        },
        Err(e) if e.is_not_found() => {}
        Err(e) => tracing::warn!("connection_file: {e}"),
    }
    out
}

/// The `[resources]` of a manifest: the `resources_file`'s table (if any, read through
/// [`PartitionFs`], at most 64 KiB) with the inline keys over it.
fn effective_resources(
    fs: &PartitionFs,
    m: &InstanceManifest,
) -> Result<Map<String, Value>, String> {
    let Some(f) = &m.resources_file else {
        return Ok(m.resources.clone());
    };
    let path = fs.path(f);
    let bytes = fs
        .read(f, RESOURCES_FILE_MAX)
        .map_err(|e| format!("resources_file: {e}"))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| format!("resources_file `{}`: not UTF-8", path.display()))?;
    #[derive(serde::Deserialize)]
    struct File {
        #[serde(default)]
        resources: Map<String, Value>,
    }
    let mut table = toml::from_str::<File>(&text)
        .map_err(|e| format!("resources_file `{}`: {e}", path.display()))?
        .resources;
    table.extend(m.resources.clone());
    Ok(table)
}

/// One `slave_instance_list` entry (as SlapOS profiles read it): the shared instance's
/// parameters, then `slave_reference`, `slave_title` and `slap_software_type`.
fn slave_entry(s: &slapos_proto::SharedInstance) -> Params {
    let mut e = s.parameters.clone();
    for (k, v) in [
        ("slave_reference", &s.reference),
        ("slave_title", &s.reference),
        ("slap_software_type", &s.software_type),
    ] {
        e.insert(k.to_owned(), Value::String(v.clone()));
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_connection_and_resources_file() {
        let d = tempfile::tempdir().unwrap();
        let fs = PartitionFs::new(d.path(), None);
        let base: Params = serde_json::from_str(r#"{"a":"1","b":"2"}"#).unwrap();
        let rel = Path::new("c.json");
        let f = d.path().join(rel);
        assert_eq!(merge_live(&base, &fs, rel), base, "missing file: base only");
        std::fs::write(&f, "[1]").unwrap();
        assert_eq!(merge_live(&base, &fs, rel), base, "not an object: ignored");
        std::fs::write(&f, r#"{"b":"3","p99":42}"#).unwrap();
        let m = merge_live(&base, &fs, rel);
        assert_eq!((m["a"].as_str(), m["b"].as_str()), (Some("1"), Some("3")));
        assert_eq!(m["p99"], 42);

        let text = "resources_file = \"etc/r.toml\"\n[resources]\npriority = 70\n";
        let man = InstanceManifest::parse(text).unwrap();
        let e = effective_resources(&fs, &man).unwrap_err();
        assert!(e.contains("etc/r.toml"), "{e}");
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/r.toml"),
            "[resources]\ncpus = 2\npolicy = \"fifo\"\npriority = 80\n",
        )
        .unwrap();
        let t = effective_resources(&fs, &man).unwrap();
        assert_eq!(
            (t["cpus"].as_i64(), t["priority"].as_i64()),
            (Some(2), Some(70))
        );
        assert!(
            InstanceManifest::parse(
                "[[prepare]]\nname = \"v\"\ncommand = [\"true\"]\nperiod = 3\n"
            )
            .is_err()
        );
        // A connection file or a resources file replaced by a link to a secret is not read.
        let secret = d.path().join("secret.json");
        std::fs::write(&secret, r#"{"stolen":"yes"}"#).unwrap();
        std::fs::remove_file(&f).unwrap();
        std::os::unix::fs::symlink(&secret, &f).unwrap();
        assert_eq!(merge_live(&base, &fs, rel), base, "a link is not followed");
        std::fs::remove_file(d.path().join("etc/r.toml")).unwrap();
        std::os::unix::fs::symlink(&secret, d.path().join("etc/r.toml")).unwrap();
        let e = effective_resources(&fs, &man).unwrap_err();
        assert!(e.contains("symlink"), "{e}");
    }
}
