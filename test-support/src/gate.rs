//! Skip gates: skip with a printed reason, or fail when the environment demands the test.

use std::process::Command;

/// What a test needs besides the unit tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Root (real cgroups, users, netns, SCHED_FIFO).
    Privileged,
    /// An external tool (python3, slapos.core's venv, unshare, …).
    Tools,
    /// QEMU, a board kernel and a cross toolchain.
    Qemu,
}

impl Need {
    /// The variable that turns a skip into a failure.
    pub fn var(self) -> &'static str {
        match self {
            Self::Privileged => "SLAPOS_REQUIRE_PRIVILEGED",
            Self::Tools => "SLAPOS_REQUIRE_TOOLS",
            Self::Qemu => "SLAPOS_REQUIRE_QEMU",
        }
    }

    /// True when the environment demands the tests of this tier (`<var>=1`).
    pub fn required(self) -> bool {
        std::env::var(self.var()).as_deref() == Ok("1")
    }
}

/// Skip `test` because of `reason`: prints `SKIP <test>: <reason> …` and returns `false` (so
/// `if !ok { return skip(…) }` reads naturally), or panics when [`Need::required`].
pub fn skip(need: Need, test: &str, reason: &str) -> bool {
    let var = need.var();
    assert!(
        !need.required(),
        "{test}: {reason} ({var}=1 forbids skipping)"
    );
    eprintln!("SKIP {test}: {reason} (set {var}=1 to make this a failure)");
    false
}

/// True when the test runs as root (`id -u`: no libc needed).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Gate for tests that need root: `true` to run; `false` (after printing why) to skip; a
/// failure under `SLAPOS_REQUIRE_PRIVILEGED=1`.
pub fn privileged(test: &str) -> bool {
    is_root() || skip(Need::Privileged, test, "needs root")
}

/// Gate for tests that need `tool` on the `PATH` (run with `--version`).
pub fn tool(test: &str, tool: &str) -> bool {
    let ok = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    ok || skip(Need::Tools, test, &format!("{tool} not found"))
}
