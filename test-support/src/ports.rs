//! Blocks of loopback ports that no other test is given at the same time.
//!
//! A port is handed out only when this process holds its lock file
//! (`<tmp>/slapos-test-ports/<port>`, an exclusive `flock` kept until the process exits) and it
//! can be bound on 127.0.0.1 right now. The lock makes concurrent test processes (parallel
//! test binaries, other worktrees on the same machine) skip each other's blocks; the bind skips
//! ports held by anything else. The search runs below the kernel's ephemeral range (32768+),
//! where the local ends of outgoing connections land, starting at a point that depends on the
//! pid so that processes spread out.

use std::fs::{File, OpenOptions, TryLockError};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

const LOW: u32 = 20_000;
const HIGH: u32 = 32_000;

/// Lock files held for the life of the process.
static HELD: Mutex<Vec<File>> = Mutex::new(Vec::new());

fn lock_dir() -> PathBuf {
    std::env::temp_dir().join("slapos-test-ports")
}

/// Lock `port` for this process: `None` when another process (or an earlier call) has it.
fn lock(port: u16) -> Option<File> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_dir().join(port.to_string()))
        .ok()?;
    match f.try_lock() {
        Ok(()) => Some(f),
        Err(TryLockError::WouldBlock | TryLockError::Error(_)) => None,
    }
}

/// A base port with `count` consecutive ports reserved for the caller: locked for this process
/// (no other test gets them while it runs) and free on 127.0.0.1 now.
pub fn free_port_block(count: u16) -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = u32::from(count.max(1));
    // Without the directory, locking fails and every block is skipped: say so.
    std::fs::create_dir_all(lock_dir())
        .unwrap_or_else(|e| panic!("create {}: {e}", lock_dir().display()));
    let span = HIGH - LOW - n;
    let seed = std::process::id().wrapping_mul(7919);
    for _ in 0..span / n {
        let step = NEXT.fetch_add(n, Ordering::SeqCst);
        let base = (LOW + seed.wrapping_add(step) % span) as u16;
        let ports = base..base + count;
        let locks: Vec<File> = ports.clone().map_while(lock).collect();
        if locks.len() != usize::from(count) {
            continue;
        }
        let bound: Vec<_> = ports
            .map_while(|p| TcpListener::bind(("127.0.0.1", p)).ok())
            .collect();
        if bound.len() == usize::from(count) {
            HELD.lock().unwrap_or_else(|e| e.into_inner()).extend(locks);
            return base;
        }
    }
    panic!("no block of {count} free ports found in {LOW}..{HIGH}");
}

/// One reserved loopback port.
pub fn free_port() -> u16 {
    free_port_block(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_never_overlap_and_are_free() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..20 {
            let b = free_port_block(5);
            for p in b..b + 5 {
                assert!(seen.insert(p), "port {p} handed out twice");
                TcpListener::bind(("127.0.0.1", p)).unwrap();
            }
        }
    }

    #[test]
    fn a_port_locked_elsewhere_is_not_handed_out() {
        let b = free_port_block(3);
        // This process holds the locks: a second lock (another process would get the same
        // answer from flock) fails.
        assert!(lock(b).is_none());
    }
}
