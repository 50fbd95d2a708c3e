//! The partition certificate (native mTLS).
//!
//! Over native mTLS ([`crate::link::MasterLink::partition_certificates`]), a pass of an allocated partition
//! first makes sure the partition holds the certificate of `partition:<computer>/<partition>`
//! for its current allocation (root title, title, release): fetched once, written into
//! `.slapos/` with the partition's filesystem identity ([`crate::identity`]), kept across passes
//! and node restarts, fetched again when the allocation changes. A master that cannot be reached
//! does not hold the pass back (the fetch is retried every `poll_interval`); a refusal fails the
//! pass. The files go with the wipe of a destroy, and are removed when the partition is freed.

use tokio::time::Instant;

use slapos_proto::Assignment;

use super::{Actor, PassError, allocation};
use crate::identity;
use crate::link::off_thread;

impl Actor {
    /// Make sure the partition holds its certificate for allocation `a` (see the module doc).
    pub(super) async fn ensure_certificate(&mut self, a: &Assignment) -> Result<(), PassError> {
        if !self.sh.link.partition_certificates() {
            return Ok(());
        }
        // A retry pending for an earlier allocation is superseded by this one.
        self.cert_retry = None;
        let key = allocation(a);
        let fs = self.fs();
        let on_disk = identity::placed(&fs);
        if on_disk.is_some_and(|r| r.allocation == key) {
            return Ok(());
        }
        let link = self.sh.link.clone();
        let p = self.layout.id.clone();
        match off_thread(move || link.partition_certificate(&p)).await {
            Some(Ok(Some(c))) => {
                let want = format!("partition:{}/{}", self.sh.cfg.computer_id, self.layout.id);
                if c.identity != want {
                    return Err(PassError::CertificateIdentity {
                        issued: c.identity,
                        expected: want,
                    });
                }
                identity::place_partition(&fs, &c, &key).map_err(PassError::CertificateWrite)?;
                tracing::info!(partition = %self.id(), serial = %c.serial, "partition certificate in place");
                Ok(())
            }
            Some(Ok(None)) => Ok(()),
            Some(Err(e)) if e.is_unreachable() => {
                let wait = self.sh.cfg.poll_interval;
                tracing::warn!(partition = %self.id(), "partition certificate not fetched, retry in {wait:?}: {e}");
                self.cert_retry = Some((Instant::now() + wait, a.clone()));
                Ok(())
            }
            Some(Err(e)) => Err(PassError::Certificate(e)),
            None => Err(PassError::CertificateThread),
        }
    }

    /// The partition is free: its certificate goes (the master revoked it when it freed the
    /// partition).
    pub(super) fn remove_certificate(&self) {
        if self.sh.link.partition_certificates() {
            // The master revoked them when it freed the partition.
            if let Err(e) = identity::remove_partition(&self.fs()) {
                tracing::warn!(partition = %self.id(), "failed to remove the partition certificate: {e}");
            }
        }
    }
}
