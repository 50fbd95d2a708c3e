//! The desired-state cache: the last [`DesiredState`] received, on disk.
//!
//! Written atomically (temporary file, fsync, rename) each time a new desired state arrives, and
//! read once at node start, before the master is contacted: a node that restarts while its
//! master is down brings every partition back to this state. A cache for another computer id or
//! that does not parse is ignored with a warning (never fatal: the master is the source of truth).

use std::path::{Path, PathBuf};

use slapos_proto::{ComputerId, DesiredState};

use crate::util::atomic_write;

/// File name under the state directory.
pub const FILE: &str = "desired.json";

/// The on-disk cache.
#[derive(Debug, Clone)]
pub struct DesiredCache {
    path: PathBuf,
}

impl DesiredCache {
    /// The cache in `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join(FILE),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cached state of `computer`, if any.
    pub fn load(&self, computer: &ComputerId) -> Option<DesiredState> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(
                    "ignoring desired-state cache `{}`: {e}",
                    self.path.display()
                );
                return None;
            }
        };
        match serde_json::from_slice::<DesiredState>(&bytes) {
            Ok(d) if &d.computer == computer => Some(d),
            Ok(d) => {
                tracing::warn!(
                    "ignoring desired-state cache `{}`: it is for computer `{}`, not `{computer}`",
                    self.path.display(),
                    d.computer
                );
                None
            }
            Err(e) => {
                tracing::warn!(
                    "ignoring desired-state cache `{}`: {e}",
                    self.path.display()
                );
                None
            }
        }
    }

    /// Replace the cached state.
    pub fn save(&self, d: &DesiredState) -> std::io::Result<()> {
        let body = serde_json::to_vec(d).map_err(std::io::Error::other)?;
        atomic_write(&self.path, &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(computer: &str, etag: &str) -> DesiredState {
        DesiredState {
            computer: ComputerId::parse(computer).unwrap(),
            etag: etag.into(),
            software: vec![],
            partitions: vec![],
        }
    }

    #[test]
    fn round_trips_and_refuses_other_computers_and_garbage() {
        let d = tempfile::tempdir().unwrap();
        let c = DesiredCache::new(d.path());
        let me = ComputerId::parse("COMP-1").unwrap();
        assert_eq!(c.load(&me), None);
        c.save(&state("COMP-1", "1")).unwrap();
        c.save(&state("COMP-1", "2")).unwrap();
        assert_eq!(c.load(&me).unwrap().etag, "2");
        assert_eq!(c.load(&ComputerId::parse("COMP-2").unwrap()), None);
        std::fs::write(c.path(), b"{not json").unwrap();
        assert_eq!(c.load(&me), None);
    }
}
