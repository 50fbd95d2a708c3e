//! Unix users of the tests that run partitions with `isolation = "users"` (root only).
//!
//! The node creates a user `<user_prefix><index>` per partition and its software user; each
//! such test uses its own prefix (and `software_user = "<prefix>soft"`) and holds a
//! [`TestUsers`] guard, which deletes every `<prefix><digits>` user and `<prefix>soft` when it
//! is claimed (leftovers of a crashed run) and again when dropped (also on failure).

use std::process::Command;

/// Deletes the users `<prefix><digits>` when created and when dropped.
pub struct TestUsers {
    prefix: String,
}

impl TestUsers {
    /// Delete the users left with `prefix` now and on drop. `prefix` must be the test's own
    /// (at least `slap` plus four characters, so no real account can match).
    pub fn claim(prefix: &str) -> TestUsers {
        assert!(
            prefix.starts_with("slap") && prefix.len() >= 8,
            "test user prefix {prefix:?} too generic"
        );
        let users = TestUsers {
            prefix: prefix.to_owned(),
        };
        users.clean();
        users
    }

    /// The software user of the test's nodes (`software_user` in their config).
    pub fn software_user(&self) -> String {
        format!("{}soft", self.prefix)
    }

    /// The existing users `<prefix><digits>` and `<prefix>soft` (from `getent passwd`).
    pub fn existing(&self) -> Vec<String> {
        let out = Command::new("getent").arg("passwd").output();
        let text = out
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        text.lines()
            .filter_map(|l| l.split(':').next())
            .filter(|name| {
                name.strip_prefix(self.prefix.as_str()).is_some_and(|n| {
                    n == "soft" || (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                })
            })
            .map(str::to_owned)
            .collect()
    }

    /// Delete them (`userdel`, which also removes their user groups); failures are printed.
    pub fn clean(&self) {
        for name in self.existing() {
            let st = Command::new("userdel").arg(&name).status();
            if !matches!(st, Ok(s) if s.success()) {
                eprintln!("warning: userdel {name} failed: {st:?}");
            }
        }
    }
}

impl Drop for TestUsers {
    fn drop(&mut self) {
        self.clean();
    }
}

/// The uid of `user`, `None` when there is no such user.
pub fn uid_of(user: &str) -> Option<u32> {
    let out = Command::new("id").args(["-u", user]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// The real uid of process `pid` (`/proc/PID/status`).
pub fn uid_of_process(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Run `argv` as `user` (runuser, no shell of the user involved); true when it succeeded.
pub fn as_user(user: &str, argv: &[&str]) -> bool {
    Command::new("runuser")
        .args(["-u", user, "--"])
        .args(argv)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}
