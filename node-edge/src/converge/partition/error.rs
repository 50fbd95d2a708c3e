//! [`PassError`]: why a pass over a partition failed.

use std::path::PathBuf;

use slapos_client::ClientError;
use slapos_proto::{PartitionId, SoftwareUrl};

use crate::host::jail;
use crate::host::partition_fs::FsError;
use crate::host::resources::ResourceError;
use crate::software::profile::ProfileError;

/// Why a pass over a partition failed: reported to the master as the instance's error (its
/// `Display`, capped) and retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// Emptying the partition failed (a process survived, or the kill thread did not start).
    #[error("partition {partition}: {reason}")]
    Empty {
        /// The partition.
        partition: PartitionId,
        /// What went wrong.
        reason: String,
    },
    /// The partition's jail could not be prepared.
    #[error("partition {partition}: {source}")]
    Jail {
        /// The partition.
        partition: PartitionId,
        /// Cause.
        #[source]
        source: jail::JailError,
    },
    /// An isolated node has no user for the partition.
    #[error("partition {0} has no user: refusing to run its processes as the node's user")]
    NoUser(PartitionId),
    /// The instance's software release did not install.
    #[error("software release `{url}` is not installed: {reason}")]
    Software {
        /// The release.
        url: SoftwareUrl,
        /// Its install error.
        reason: String,
    },
    /// The master issued a certificate for another identity.
    #[error("partition certificate: the master issued `{issued}`, expected `{expected}`")]
    CertificateIdentity {
        /// The identity of the certificate received.
        issued: String,
        /// The partition's identity.
        expected: String,
    },
    /// The partition certificate could not be written.
    #[error("failed to write the partition certificate: {0}")]
    CertificateWrite(#[source] FsError),
    /// The master refused the partition certificate.
    #[error("partition certificate: {0}")]
    Certificate(#[source] ClientError),
    /// The certificate call could not be made.
    #[error("partition certificate: the link thread failed")]
    CertificateThread,
    /// Destroying: the partition directory could not be wiped.
    #[error("failed to wipe `{}`: {source}", path.display())]
    Wipe {
        /// The partition directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Destroying: the partition directory could not be made again.
    #[error(transparent)]
    Format(Box<crate::NodeError>),
    /// The disk budget could not be applied.
    #[error("{0}")]
    Quota(String),
    /// The release's manifest is unusable or has no profile for the software type.
    #[error("{0}")]
    Release(String),
    /// The instance profile did not render.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// A file of the instance could not be written.
    #[error("{0}")]
    Files(String),
    /// The rendered profile could not be recorded.
    #[error(transparent)]
    Rendered(FsError),
    /// A `[[prepare]]` command failed.
    #[error("prepare `{name}`: {message}")]
    Prepare {
        /// The command's name.
        name: String,
        /// Its output.
        message: String,
    },
    /// The `resources_file` is unusable.
    #[error("{0}")]
    ResourcesFile(String),
    /// The resources could not be applied.
    #[error(transparent)]
    Resources(#[from] ResourceError),
    /// Child requests the master refused (`; `-separated).
    #[error("{0}")]
    Requests(String),
}
