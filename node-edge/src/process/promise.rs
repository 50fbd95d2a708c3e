//! Promises: run one check command with a time limit and turn its outcome into a
//! [`PromiseResult`]; schedule periodic runs (pure).
//!
//! A promise holds when its command exits 0 within its timeout. Its combined stdout/stderr goes
//! to `.slapos/promise/<name>.out` (a fresh file at each run, created through
//! [`PartitionFs`]) and the last bytes become the result's message, read back through the
//! node's own fd of that file: whatever the promise does to the path (a symlink to
//! `/etc/shadow`, a FIFO) the node only ever reads what the promise wrote. On timeout the whole
//! process group is killed.
//!
//! Scheduling ([`Schedule`]): a passing promise runs again after its period; a failing one is
//! re-checked sooner, after 1 s, 2 s, 4 s … capped at its period, so a service that takes a
//! moment to come up is seen healthy quickly without hammering a broken one.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;
use slapos_proto::PromiseResult;
use tokio::time::Instant;

use crate::host::partition_fs::{PartitionFs, tail_of};
use crate::process::procs;
use crate::process::supervisor::Launch;
use crate::util::backoff::Backoff;
use crate::util::now_ms;

/// Bytes of output kept in a result's message.
pub const MESSAGE_BYTES: usize = 1024;

/// First re-check delay of a failing promise.
pub const FAIL_RECHECK_MIN: Duration = Duration::from_secs(1);

/// Run `launch` as promise `name`, writing its output into `out_dir` (relative to the
/// partition `fs`).
pub async fn run(
    name: &str,
    launch: &Launch,
    timeout: Duration,
    fs: &PartitionFs,
    out_dir: &Path,
) -> PromiseResult {
    let at_ms = now_ms();
    let result = |ok: bool, message: String| PromiseResult {
        name: name.to_owned(),
        ok,
        message,
        at_ms,
    };
    let out_rel = out_dir.join(format!("{name}.out"));
    // The output lives in the partition: a fresh file, created as the partition.
    let files = fs
        .create_fresh(&out_rel)
        .map_err(|e| e.to_string())
        .and_then(|f| {
            let dup = |f: &std::fs::File| f.try_clone().map_err(|e| e.to_string());
            Ok((dup(&f)?, dup(&f)?, f))
        });
    let (out, err, mine) = match files {
        Ok(f) => f,
        Err(e) => return result(false, e),
    };
    let mut cmd = launch.command();
    cmd.stdout(Stdio::from(out)).stderr(Stdio::from(err));
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return result(false, format!("failed to start {:?}: {e}", launch.argv[0])),
    };
    let pgid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
    let waited = tokio::time::timeout(timeout, child.wait()).await;
    // Nothing of a promise outlives its run.
    let _ = procs::signal_group(pgid, Signal::SIGKILL);
    let output = tail_of(&mine, MESSAGE_BYTES as u64).trim().to_owned();
    match waited {
        Err(_) => {
            let _ = child.wait().await;
            result(
                false,
                format!("timed out after {timeout:?}. {output}")
                    .trim()
                    .to_owned(),
            )
        }
        Ok(Err(e)) => result(false, format!("wait failed: {e}")),
        Ok(Ok(st)) if st.success() => result(
            true,
            if output.is_empty() {
                "ok".into()
            } else {
                output
            },
        ),
        Ok(Ok(st)) => result(
            false,
            if output.is_empty() {
                format!("failed: {st}")
            } else {
                format!("failed ({st}): {output}")
            },
        ),
    }
}

/// When a promise runs next.
#[derive(Debug, Clone)]
pub struct Schedule {
    period: Duration,
    fail: Backoff,
    due: Instant,
}

impl Schedule {
    /// A promise with `period`, due at `now`.
    pub fn new(period: Duration, now: Instant) -> Self {
        Self {
            period,
            fail: Backoff::new(FAIL_RECHECK_MIN.min(period), period),
            due: now,
        }
    }

    /// When it is due.
    pub fn due(&self) -> Instant {
        self.due
    }

    /// Record a run that ended at `now` with `ok`; returns the next due time.
    pub fn record(&mut self, ok: bool, now: Instant) -> Instant {
        let wait = if ok {
            self.fail.reset();
            self.period
        } else {
            self.fail.fail()
        };
        self.due = now + wait;
        self.due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn launch(script: &str, cwd: &Path) -> Launch {
        let mut env = BTreeMap::new();
        env.insert("PATH".to_owned(), "/usr/bin:/bin".to_owned());
        Launch::new(
            vec!["sh".into(), "-c".into(), script.into()],
            env,
            cwd.to_path_buf(),
        )
    }

    #[tokio::test]
    async fn pass_fail_and_timeout() {
        let d = tempfile::tempdir().unwrap();
        let fs = PartitionFs::new(d.path(), None);
        let out = Path::new("out");
        let r = run(
            "p",
            &launch("echo all good", d.path()),
            Duration::from_secs(10),
            &fs,
            out,
        )
        .await;
        assert!(r.ok, "{r:?}");
        assert_eq!(r.message, "all good");

        let r = run(
            "p",
            &launch("echo broken >&2; exit 3", d.path()),
            Duration::from_secs(10),
            &fs,
            out,
        )
        .await;
        assert!(!r.ok);
        assert!(
            r.message.contains("broken") && r.message.contains('3'),
            "{r:?}"
        );

        let r = run(
            "slow",
            &launch("echo started; sleep 30", d.path()),
            Duration::from_millis(200),
            &fs,
            out,
        )
        .await;
        assert!(!r.ok);
        assert!(r.message.starts_with("timed out after"), "{r:?}");
        assert!(r.message.contains("started"), "{r:?}");

        let mut l = launch("", d.path());
        l.argv = vec!["/nonexistent/check".into()];
        let r = run("p", &l, Duration::from_secs(1), &fs, out).await;
        if std::env::var_os("SLAPOS_EMULATED").is_some() {
            // qemu-user reports a failed execve as the child's exit 127, not as a spawn error.
            eprintln!("SLAPOS_EMULATED: spawn error reported as exit status under qemu-user");
            assert!(!r.ok, "{r:?}");
        } else {
            assert!(!r.ok && r.message.contains("failed to start"), "{r:?}");
        }
    }

    #[tokio::test]
    async fn the_message_is_what_the_promise_wrote_not_what_it_links_to() {
        let d = tempfile::tempdir().unwrap();
        let fs = PartitionFs::new(d.path(), None);
        let secret = d.path().join("secret");
        std::fs::write(&secret, "root:$6$hash").unwrap();
        // The promise prints, then swaps its output file for a symlink to the secret.
        let script = format!(
            "echo mine; rm -f out/p.out; ln -s {} out/p.out; exit 1",
            secret.display()
        );
        let r = run(
            "p",
            &launch(&script, d.path()),
            Duration::from_secs(10),
            &fs,
            Path::new("out"),
        )
        .await;
        assert!(!r.ok);
        assert!(
            r.message.contains("mine") && !r.message.contains("hash"),
            "{r:?}"
        );
        // A FIFO planted as the output does not block the node: it is replaced.
        std::fs::remove_file(d.path().join("out/p.out")).unwrap();
        nix::unistd::mkfifo(
            &d.path().join("out/p.out"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let r = run(
            "p",
            &launch("echo fresh", d.path()),
            Duration::from_secs(10),
            &fs,
            Path::new("out"),
        )
        .await;
        assert_eq!((r.ok, r.message.as_str()), (true, "fresh"));
    }

    #[test]
    fn failing_promises_are_rechecked_sooner() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut sch = Schedule::new(s(30), t0);
        assert_eq!(sch.due(), t0);
        assert_eq!(sch.record(false, t0), t0 + s(1));
        assert_eq!(sch.record(false, t0), t0 + s(2));
        assert_eq!(sch.record(false, t0), t0 + s(4));
        assert_eq!(sch.record(true, t0), t0 + s(30));
        assert_eq!(sch.record(false, t0), t0 + s(1));
        let mut short = Schedule::new(Duration::from_millis(300), t0);
        assert_eq!(short.record(false, t0), t0 + Duration::from_millis(300));
    }
}
