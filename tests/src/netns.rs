//! Network namespaces for the root-only tests (`network`, `multihost`): the tests build their
//! topology in namespaces they create, never on the machine's own interfaces.
//!
//! [`Netns`] deletes its namespaces (and with them the veth pairs and TAPs inside) when dropped,
//! also on failure, and deletes any left by an earlier crashed run before creating them.

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Run `ip ARGS`, panicking with its stderr when it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The stdout of `ip ARGS` (whatever its status).
pub fn ip_out(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Named network namespaces (`ip netns add`), deleted when dropped.
pub struct Netns {
    names: Vec<String>,
}

impl Netns {
    /// Create the namespaces `names` with their loopback up, after deleting any of them left by
    /// an earlier run.
    pub fn create(names: &[&str]) -> Netns {
        // The guard exists before the first `ip netns add`: a failure below still cleans up.
        let guard = Netns {
            names: names.iter().map(|n| (*n).to_owned()).collect(),
        };
        guard.delete();
        for ns in names {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        guard
    }

    fn delete(&self) {
        for ns in &self.names {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.delete();
    }
}

/// A veth pair: `dev_a` in namespace `ns_a`, its peer `dev_b` in `ns_b`, both ends up (no
/// addresses: add them with [`ip`]).
pub fn veth((ns_a, dev_a): (&str, &str), (ns_b, dev_b): (&str, &str)) {
    ip(&[
        "-n", ns_a, "link", "add", dev_a, "type", "veth", "peer", "name", dev_b, "netns", ns_b,
    ]);
    ip(&["-n", ns_a, "link", "set", dev_a, "up"]);
    ip(&["-n", ns_b, "link", "set", dev_b, "up"]);
}

fn netns_file(ns: &str) -> std::fs::File {
    std::fs::File::open(format!("/run/netns/{ns}")).expect("open netns")
}

/// Enter network namespace `ns` on this thread (processes it spawns inherit it).
pub fn enter(ns: &str) {
    let f = netns_file(ns);
    // SAFETY: one syscall on a valid descriptor; it changes this thread's network namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}

/// Run `f` on a new thread inside namespace `ns` (`setns` is per thread) and return its result;
/// a panic in `f` is resumed on the calling thread.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_owned();
    let t = std::thread::spawn(move || {
        enter(&ns);
        f()
    });
    match t.join() {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e),
    }
}

/// Make the process `cmd` spawns join network namespace `ns` (between fork and exec).
pub fn spawn_in(cmd: &mut Command, ns: &str) {
    let f = netns_file(ns);
    // SAFETY: the hook runs in the forked child before exec and only makes the setns syscall
    // (async-signal-safe, no allocation) on a descriptor the closure keeps open.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
