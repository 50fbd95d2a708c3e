//! Supervisor with real processes in temp dirs: restarts with backoff, log rotation, TERM/KILL.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use node_edge::host::partition_fs::PartitionFs;
use node_edge::process::procs;
use node_edge::process::supervisor::{Launch, Service, ServiceParams};

fn params(dir: &Path, name: &str, script: &str) -> ServiceParams {
    let mut env = BTreeMap::new();
    env.insert("PATH".to_owned(), "/usr/bin:/bin".to_owned());
    ServiceParams {
        name: name.into(),
        launch: Launch::new(
            vec!["sh".into(), "-c".into(), script.into()],
            env,
            dir.to_path_buf(),
        ),
        fs: PartitionFs::new(dir, None),
        log: Path::new("var/log").join(format!("{name}.log")),
        log_max_bytes: 1 << 20,
        log_keep: 2,
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(400),
        stop_timeout: Duration::from_secs(5),
        proc_root: "/proc".into(),
    }
}

#[tokio::test]
async fn crashing_service_is_restarted_with_capped_backoff() {
    let d = tempfile::tempdir().unwrap();
    let svc = Service::start(params(
        d.path(),
        "crash",
        "echo run >> runs; echo boom >&2; exit 3",
    ));
    let st = common::until(20, "6 starts", || {
        let s = svc.status();
        (s.starts >= 6 && s.delays.len() >= 5).then_some(s)
    })
    .await;
    let ms = Duration::from_millis;
    // Doubling from the minimum, capped at the maximum (each run is far shorter than the cap).
    assert_eq!(st.delays[..5], [ms(50), ms(100), ms(200), ms(400), ms(400)]);
    svc.stop().await;
    let runs = std::fs::read_to_string(d.path().join("runs")).unwrap();
    assert!(runs.lines().count() >= 6, "{runs}");
    let log = std::fs::read_to_string(d.path().join("var/log/crash.log")).unwrap();
    assert!(log.contains("boom"), "{log}");
    assert!(log.contains("exited: exit status: 3"), "{log}");
    assert!(log.contains("restarting in 400ms"), "{log}");
}

#[tokio::test]
async fn a_service_that_cannot_start_is_retried() {
    let d = tempfile::tempdir().unwrap();
    let mut p = params(d.path(), "missing", "");
    p.launch.argv = vec!["/nonexistent/binary".into()];
    let svc = Service::start(p);
    let st = common::until(10, "3 failed starts", || {
        let s = svc.status();
        (s.delays.len() >= 3).then_some(s)
    })
    .await;
    assert_eq!(st.starts, 0);
    assert!(st.last_exit.unwrap().contains("failed to start"));
    svc.stop().await;
}

#[tokio::test]
async fn logs_rotate_and_keep_at_most_n_files() {
    let d = tempfile::tempdir().unwrap();
    let mut p = params(
        d.path(),
        "chatty",
        "i=0; while [ $i -lt 600 ]; do echo \"line $i 0123456789abcdef0123456789abcdef\"; i=$((i+1)); done; echo done; exec sleep 30",
    );
    p.log_max_bytes = 2048;
    p.log_keep = 2;
    let svc = Service::start(p);
    let log = d.path().join("var/log/chatty.log");
    common::until(20, "all output logged", || {
        let rotated = d.path().join("var/log/chatty.log.2").exists();
        let tail = std::fs::read_to_string(&log).unwrap_or_default();
        (rotated && tail.contains("done")).then_some(())
    })
    .await;
    svc.stop().await;
    let mut names: Vec<String> = std::fs::read_dir(d.path().join("var/log"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["chatty.log", "chatty.log.1", "chatty.log.2"]);
    for n in &names {
        let len = std::fs::metadata(d.path().join("var/log").join(n))
            .unwrap()
            .len();
        // One pipe read (≤ 8 KiB) is never split, so a file may exceed the limit by one chunk.
        assert!(len <= 2048 + 8192, "{n}: {len} bytes");
    }
    let newest = std::fs::read_to_string(&log).unwrap();
    assert!(
        newest.contains("line 599")
            || std::fs::read_to_string(d.path().join("var/log/chatty.log.1"))
                .unwrap()
                .contains("line 599")
    );
}

#[tokio::test]
async fn stop_sends_term_to_the_group_and_kills_what_ignores_it() {
    let d = tempfile::tempdir().unwrap();

    // A polite service (and its child) ends on TERM.
    let svc = Service::start(params(d.path(), "polite", "sleep 30 & wait"));
    let pid = common::until(10, "polite running", || svc.status().pid).await;
    let pid_file = d.path().join(".slapos/run/polite.pid");
    common::until(10, "pid file", || pid_file.exists().then_some(())).await;
    svc.stop().await;
    assert!(
        !procs::group_alive(Path::new("/proc"), pid as i32),
        "group {pid} survived"
    );
    assert!(!pid_file.exists());
    let log = std::fs::read_to_string(d.path().join("var/log/polite.log")).unwrap();
    assert!(log.contains("stopped (TERM)"), "{log}");

    // A stubborn one (TERM ignored, inherited by its child) is killed after the stop timeout.
    let mut p = params(
        d.path(),
        "stubborn",
        "trap '' TERM; echo ready; sleep 30 & wait; sleep 30",
    );
    p.stop_timeout = Duration::from_millis(300);
    let svc = Service::start(p);
    let log_path = d.path().join("var/log/stubborn.log");
    common::until(10, "stubborn ready", || {
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .contains("ready")
            .then_some(())
    })
    .await;
    let pid = svc.status().pid.unwrap();
    svc.stop().await;
    assert!(
        !procs::group_alive(Path::new("/proc"), pid as i32),
        "group {pid} survived"
    );
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("killed (KILL after stop timeout)"), "{log}");
}

/// Root only: the resource hook runs with the node's privileges, then the process takes the
/// partition's uid/gid (std would switch first and the hook would lose its privileges).
#[tokio::test]
async fn resource_hook_runs_before_the_identity_switch() {
    if !slapos_test_support::gate::privileged("resource_hook_runs_before_the_identity_switch") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        d.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let mut p = params(
        d.path(),
        "dropped",
        "{ id -u; id -g; cut -d' ' -f19 /proc/self/stat; } > out.tmp; mv out.tmp out; exec sleep 30",
    );
    p.launch.identity = Some(node_edge::host::isolation::Identity {
        uid: 65534,
        gid: 65534,
    });
    // Lowering the nice value needs privileges: it fails if run after the switch.
    p.launch.setup = Some(std::sync::Arc::new(|| {
        // SAFETY: one async-signal-safe syscall with integer arguments.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -3) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }));
    let svc = Service::start(p);
    let out = d.path().join("out");
    let text = common::until(10, "service output", || std::fs::read_to_string(&out).ok()).await;
    svc.stop().await;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines, ["65534", "65534", "-3"], "{text}");
}
