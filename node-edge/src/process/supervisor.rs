//! Service supervision: one task per service, restarting it with capped exponential backoff.
//!
//! * Each run of a service is a new process group (`process_group(0)`); stdout and stderr are
//!   piped into one [`RotatingLog`] (`var/log/<service>.log` under the partition), with the
//!   node's own `[node] …` lines (start, exit status, restart delay, stop) interleaved.
//! * When the leader exits, whatever is left of its group is killed, and the service is started
//!   again after the backoff delay (doubling from `backoff_min` to `backoff_max`; a run that lasted
//!   at least `backoff_max` resets it). A clean exit is restarted too: a service runs forever.
//! * Stop: `SIGTERM` to the group, then `SIGKILL` to whatever is still alive after
//!   `stop_timeout`. Dropping a [`Service`] stops it the same way (its task sees the closed
//!   channel).
//! * The leader's pid and start time are kept in `.slapos/run/<service>.pid` so a node that
//!   crashed can have its orphans killed by the next one ([`crate::process::procs::kill_orphans`]).
//!
//! Processes get a clean environment: `PATH`, `HOME` (the partition), `TMPDIR`, `LANG`, the
//! node's variables (`PARTITION_ID`, `PARTITION_DIR`, `SOFTWARE_DIR`, …) and the manifest's `env`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::io::AsyncReadExt;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::host::isolation::Identity;
use crate::host::jail::JailJoin;
use crate::host::partition_fs::PartitionFs;
use crate::host::resources::ChildSetup;
use crate::process::logfile::RotatingLog;
use crate::process::procs::{self, PidRecord};
use crate::util::backoff::Backoff;

/// How to start one process of a partition (service, promise, prepare step) or a build step.
#[derive(Clone)]
pub struct Launch {
    /// argv.
    pub argv: Vec<String>,
    /// The complete environment (nothing is inherited).
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub cwd: PathBuf,
    /// uid/gid to switch to.
    pub identity: Option<Identity>,
    /// Hook run between fork and exec (resources).
    pub setup: Option<ChildSetup>,
    /// The jail cgroup joined between fork and exec ([`crate::host::jail`]).
    pub jail: Option<JailJoin>,
    /// `RLIMIT_NPROC` of the process (isolated partitions: `max_processes`).
    pub nproc: Option<u64>,
}

impl std::fmt::Debug for Launch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launch")
            .field("argv", &self.argv)
            .field("cwd", &self.cwd)
            .field("identity", &self.identity)
            .field("setup", &self.setup.is_some())
            .field("jail", &self.jail)
            .field("nproc", &self.nproc)
            .finish()
    }
}

impl PartialEq for Launch {
    /// Same command, environment, directory, identity and limits (the setup hook is compared
    /// by the caller through the resource table it came from).
    fn eq(&self, o: &Self) -> bool {
        self.argv == o.argv
            && self.env == o.env
            && self.cwd == o.cwd
            && self.identity == o.identity
            && self.jail == o.jail
            && self.nproc == o.nproc
    }
}

impl Launch {
    /// `argv` run in `cwd` with exactly `env`, as the node, with no hook.
    pub fn new(argv: Vec<String>, env: BTreeMap<String, String>, cwd: PathBuf) -> Self {
        Self {
            argv,
            env,
            cwd,
            identity: None,
            setup: None,
            jail: None,
            nproc: None,
        }
    }

    /// A `tokio` command in its own process group, stdin closed. Between fork and exec, in
    /// this order: join the jail, run the resource hook (both need the node's privileges), set
    /// `RLIMIT_NPROC`, take the partition's gid/uid with no supplementary group, then
    /// [`crate::sys::harden`] (`no_new_privs`, death signal with the node, parent check).
    /// std's `Command::uid` is not used: it switches before `pre_exec` hooks run.
    pub fn command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..])
            .env_clear()
            .envs(&self.env)
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        let (jail, setup, identity) = (self.jail.clone(), self.setup.clone(), self.identity);
        let nproc = self
            .nproc
            .map(|n| libc::rlim_t::try_from(n).unwrap_or(libc::rlim_t::MAX));
        // Captured before the fork: the child compares it with its parent after the prctl.
        let parent = std::process::id();
        // SAFETY: the closure runs in the forked child before exec and only makes
        // async-signal-safe calls: the jail join writes prepared paths, the `ChildSetup`
        // contract (see `resources`) requires the hook to be async-signal-safe, setrlimit,
        // setgroups/setgid/setuid, prctl and getppid are single system calls.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(j) = &jail {
                    j.join()?;
                }
                if let Some(s) = &setup {
                    s()?;
                }
                if let Some(n) = nproc {
                    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NPROC, n, n)
                        .map_err(std::io::Error::from)?;
                }
                if let Some(id) = identity {
                    crate::sys::drop_to(id)?;
                }
                crate::sys::harden(parent)
            });
        }
        cmd
    }
}

/// Timing and log settings of a service.
#[derive(Debug, Clone)]
pub struct ServiceParams {
    /// Service name (pid file and log name).
    pub name: String,
    /// What to run.
    pub launch: Launch,
    /// The partition's files (the log and the pid file are written there, as the partition).
    pub fs: PartitionFs,
    /// Log file, relative to the partition (`var/log/<name>.log`).
    pub log: PathBuf,
    /// Rotation size.
    pub log_max_bytes: u64,
    /// Rotated files kept.
    pub log_keep: u32,
    /// First restart delay.
    pub backoff_min: Duration,
    /// Restart delay cap.
    pub backoff_max: Duration,
    /// TERM → KILL delay.
    pub stop_timeout: Duration,
    /// `/proc`.
    pub proc_root: PathBuf,
}

/// What a service is doing, for callers and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceStatus {
    /// Pid of the running leader.
    pub pid: Option<u32>,
    /// Times it was started.
    pub starts: u32,
    /// How the last run ended.
    pub last_exit: Option<String>,
    /// Restart delays chosen so far (the last 32).
    pub delays: Vec<Duration>,
}

/// A supervised service. Dropping it stops the service.
#[derive(Debug)]
pub struct Service {
    stop: Option<oneshot::Sender<()>>,
    status: watch::Receiver<ServiceStatus>,
    task: JoinHandle<()>,
}

impl Service {
    /// Start supervising.
    pub fn start(params: ServiceParams) -> Self {
        let (stop_tx, stop_rx) = oneshot::channel();
        let (st_tx, st_rx) = watch::channel(ServiceStatus::default());
        let task = tokio::spawn(supervise(params, stop_rx, st_tx));
        Self {
            stop: Some(stop_tx),
            status: st_rx,
            task,
        }
    }

    /// Current status.
    pub fn status(&self) -> ServiceStatus {
        self.status.borrow().clone()
    }

    /// A receiver to wait on status changes.
    pub fn watch(&self) -> watch::Receiver<ServiceStatus> {
        self.status.clone()
    }

    /// Stop (TERM, then KILL after the stop timeout) and wait until the group is gone.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.task).await;
    }
}

fn pump<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    mut r: R,
    log: Arc<Mutex<Option<RotatingLog>>>,
) {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 8192];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if let Ok(mut g) = log.lock()
                        && let Some(l) = g.as_mut()
                    {
                        let _ = l.write(&buf[..n]);
                    }
                }
            }
        }
    });
}

fn note(log: &Mutex<Option<RotatingLog>>, line: &str) {
    if let Ok(mut g) = log.lock()
        && let Some(l) = g.as_mut()
    {
        l.note(line);
    }
}

/// Wait until no live process of `pgid` is left, at most until `deadline`.
async fn wait_group_gone(proc_root: &Path, pgid: i32, deadline: Instant) -> bool {
    loop {
        if !procs::group_alive(proc_root, pgid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn supervise(
    p: ServiceParams,
    mut stop: oneshot::Receiver<()>,
    status: watch::Sender<ServiceStatus>,
) {
    // The log lives in the partition: it is opened (and rotated) through `PartitionFs`, so a
    // link or FIFO planted there cannot redirect or block the node's writes.
    let log = match RotatingLog::open(p.fs.clone(), &p.log, p.log_max_bytes, p.log_keep) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!(service = %p.name, "failed to open the log: {e}");
            None
        }
    };
    let log = Arc::new(Mutex::new(log));
    let mut backoff = Backoff::new(p.backoff_min, p.backoff_max);
    loop {
        let mut cmd = p.launch.command();
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        match cmd.spawn() {
            Err(e) => {
                let msg = format!("failed to start {:?}: {e}", p.launch.argv[0]);
                note(&log, &msg);
                tracing::warn!(service = %p.name, "{msg}");
                status.send_modify(|s| s.last_exit = Some(msg));
            }
            Ok(mut child) => {
                let pid = child.id().unwrap_or(0);
                let pgid = i32::try_from(pid).unwrap_or(0);
                if let Some(rec) = PidRecord::capture(&p.proc_root, pgid)
                    && let Err(e) = procs::write_pid_file(&p.fs, &p.name, &rec)
                {
                    tracing::warn!(service = %p.name, "failed to write pid file: {e}");
                }
                if let Some(o) = child.stdout.take() {
                    pump(o, log.clone());
                }
                if let Some(e) = child.stderr.take() {
                    pump(e, log.clone());
                }
                note(&log, &format!("started {:?} (pid {pid})", p.launch.argv));
                tracing::debug!(service = %p.name, pid, "started");
                status.send_modify(|s| {
                    s.pid = Some(pid);
                    s.starts += 1;
                });
                let started = Instant::now();
                tokio::select! {
                    res = child.wait() => {
                        let _ = procs::signal_group(pgid, Signal::SIGKILL);
                        procs::remove_pid_file(&p.fs, &p.name);
                        let msg = match res {
                            Ok(st) => format!("exited: {st}"),
                            Err(e) => format!("wait failed: {e}"),
                        };
                        note(&log, &msg);
                        tracing::info!(service = %p.name, pid, "{msg}");
                        status.send_modify(|s| {
                            s.pid = None;
                            s.last_exit = Some(msg);
                        });
                        if started.elapsed() >= p.backoff_max {
                            backoff.reset();
                        }
                    }
                    _ = &mut stop => {
                        let _ = procs::signal_group(pgid, Signal::SIGTERM);
                        let deadline = Instant::now() + p.stop_timeout;
                        let exited = tokio::time::timeout_at(deadline, child.wait()).await;
                        let clean = exited.is_ok() && wait_group_gone(&p.proc_root, pgid, deadline).await;
                        if !clean {
                            let _ = procs::signal_group(pgid, Signal::SIGKILL);
                            let _ = child.wait().await;
                            let grace = Instant::now() + Duration::from_secs(2);
                            wait_group_gone(&p.proc_root, pgid, grace).await;
                        }
                        procs::remove_pid_file(&p.fs, &p.name);
                        let how = if clean { "stopped (TERM)" } else { "killed (KILL after stop timeout)" };
                        note(&log, how);
                        tracing::info!(service = %p.name, pid, "{how}");
                        status.send_modify(|s| {
                            s.pid = None;
                            s.last_exit = Some(how.to_owned());
                        });
                        return;
                    }
                }
            }
        }
        let delay = backoff.fail();
        note(&log, &format!("restarting in {delay:?}"));
        status.send_modify(|s| {
            if s.delays.len() >= 32 {
                s.delays.remove(0);
            }
            s.delays.push(delay);
        });
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = &mut stop => return,
        }
    }
}
