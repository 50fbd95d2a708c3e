//! The partition certificate (native mTLS).
//!
//! Over native mTLS ([`crate::link::MasterLink::partition_certificates`]), a pass of an allocated partition
//! first makes sure the partition holds the certificate of `partition:<computer>/<partition>`
//! for its current allocation (root title, title, release): fetched once, written into
//! `.slapos/` with the partition's filesystem identity (through [`PartitionFs`]), kept across passes
//! and node restarts, fetched again when the allocation changes. A master that cannot be reached
//! does not hold the pass back (the fetch is retried every `poll_interval`); a refusal fails the
//! pass. The files go with the wipe of a destroy, and are removed when the partition is freed.

use slapos_client::Credentials;
use tokio::time::Instant;

use slapos_proto::Assignment;

use super::{Actor, PassError, allocation};
use crate::host::partition_fs::{FsError, PartitionFs};
use crate::link::off_thread;

/// A partition's certificate (PEM, 0644), relative to the partition directory.
pub const PARTITION_CERT: &str = ".slapos/partition.crt";
/// A partition's private key (PKCS#8 PEM, 0600).
pub const PARTITION_KEY: &str = ".slapos/partition.key";
/// The master's CA (PEM, 0644), for a partition that talks to the master itself.
pub const PARTITION_CA: &str = ".slapos/master-ca.pem";
/// Which allocation the partition's certificate was fetched for (text, [`PartitionRecord`]).
pub const PARTITION_RECORD: &str = ".slapos/partition-cert";

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
        let on_disk = placed(&fs);
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
                place_partition(&fs, &c, &key).map_err(PassError::CertificateWrite)?;
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
            if let Err(e) = remove_partition(&self.fs()) {
                tracing::warn!(partition = %self.id(), "failed to remove the partition certificate: {e}");
            }
        }
    }
}

/// The allocation a partition certificate belongs to. Stored as text (no serde derive: size
/// budget): the identity, the serial, then the allocation, one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRecord {
    /// `partition:<computer>/<partition>`.
    pub identity: String,
    /// Certificate serial.
    pub serial: String,
    /// The allocation: root title, title and release of the instance.
    pub allocation: String,
}

/// The record of the certificate placed in the partition `fs`, when its files are all there
/// (read through [`PartitionFs`]: regular files of the partition, no link followed).
pub fn placed(fs: &PartitionFs) -> Option<PartitionRecord> {
    let complete = [PARTITION_CERT, PARTITION_KEY, PARTITION_CA]
        .iter()
        .all(|f| fs.open(f).is_ok());
    if !complete {
        return None;
    }
    let body = fs.read(PARTITION_RECORD, 64 * 1024).ok()?;
    let body = String::from_utf8(body).ok()?;
    let mut it = body.splitn(3, '\n');
    Some(PartitionRecord {
        identity: it.next()?.to_owned(),
        serial: it.next()?.to_owned(),
        allocation: it.next()?.to_owned(),
    })
}

/// Write `creds` into the partition `fs` for `allocation` (as the partition, through
/// [`PartitionFs`]). The record is written last: a crash in between means a new fetch.
pub fn place_partition(
    fs: &PartitionFs,
    creds: &Credentials,
    allocation: &str,
) -> Result<(), FsError> {
    fs.remove_file(PARTITION_RECORD)?;
    fs.write_atomic(PARTITION_KEY, creds.key_pem.as_bytes(), Some(0o600))?;
    fs.write_atomic(PARTITION_CERT, creds.cert_pem.as_bytes(), Some(0o644))?;
    fs.write_atomic(PARTITION_CA, creds.ca_pem.as_bytes(), Some(0o644))?;
    let body = format!("{}\n{}\n{allocation}", creds.identity, creds.serial);
    fs.write_atomic(PARTITION_RECORD, body.as_bytes(), Some(0o644))
}

/// Remove the partition certificate files of `fs` (missing files are fine).
pub fn remove_partition(fs: &PartitionFs) -> Result<(), FsError> {
    for f in [
        PARTITION_RECORD,
        PARTITION_KEY,
        PARTITION_CERT,
        PARTITION_CA,
    ] {
        fs.remove_file(f)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn creds() -> Credentials {
        Credentials {
            identity: "partition:C1/slappart0".into(),
            serial: "ab12".into(),
            cert_pem: "CERT".into(),
            key_pem: "KEY".into(),
            ca_pem: "CA".into(),
        }
    }

    #[test]
    fn partition_files_placed_recorded_and_removed() {
        let d = tempfile::tempdir().unwrap();
        let fs = PartitionFs::new(d.path(), None);
        assert_eq!(placed(&fs), None);
        place_partition(&fs, &creds(), "web\nweb\n/sr.toml").unwrap();
        let r = placed(&fs).unwrap();
        assert_eq!(
            (
                r.identity.as_str(),
                r.serial.as_str(),
                r.allocation.as_str()
            ),
            ("partition:C1/slappart0", "ab12", "web\nweb\n/sr.toml")
        );
        let mode = |f: &str| std::fs::metadata(d.path().join(f)).unwrap().mode() & 0o7777;
        assert_eq!(
            (
                mode(PARTITION_KEY),
                mode(PARTITION_CERT),
                mode(PARTITION_CA)
            ),
            (0o600, 0o644, 0o644)
        );
        assert_eq!(
            std::fs::read_to_string(d.path().join(PARTITION_KEY)).unwrap(),
            "KEY"
        );
        // A missing file means no usable certificate (fetched again).
        std::fs::remove_file(d.path().join(PARTITION_CA)).unwrap();
        assert_eq!(placed(&fs), None);
        // A record replaced by a link is not read.
        place_partition(&fs, &creds(), "x").unwrap();
        std::fs::remove_file(d.path().join(PARTITION_RECORD)).unwrap();
        std::os::unix::fs::symlink(
            d.path().join(PARTITION_KEY),
            d.path().join(PARTITION_RECORD),
        )
        .unwrap();
        assert_eq!(placed(&fs), None);
        remove_partition(&fs).unwrap();
        remove_partition(&fs).unwrap();
        assert!(!d.path().join(PARTITION_KEY).exists());
    }
}
