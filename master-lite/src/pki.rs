//! The master's certificate authority (rcgen): created once in the TLS state directory, loaded on
//! every start, it issues the server certificate and the client certificates of computers,
//! partitions, users and admins.
//!
//! # Layout of the TLS directory (`slapos-master serve --tls-dir DIR`)
//!
//! | file | content |
//! |---|---|
//! | `ca.key` | the CA's private key, PKCS#8 PEM, mode `0600` (created with it, never widened) |
//! | `ca.pem` | the CA certificate (self-signed, ECDSA P-256) |
//!
//! The server certificate is issued again at every start (its names come from the command
//! line), so nothing but the CA needs to persist.
//!
//! # Identities
//!
//! Every client certificate carries exactly one identity as its subject common name, in the form
//! [`Identity`]'s `Display` writes and [`Identity::parse_cn`] reads: `computer:<id>`,
//! `partition:<computer>/<partition>`, `user:<name>`, `admin:<name>`. Serial numbers are 16
//! random bytes (first byte in `1..=0x7f`, so the DER integer is exactly these bytes), written as
//! lower-case hex; each issued certificate is recorded in the database (`certificate` table) and
//! a request is served only when its serial is recorded and not revoked.
//!
//! # Limits
//!
//! * The master generates the client's key (enrollment answers key + certificate); a CSR flow,
//!   where the key never leaves the node, is the hardening step.
//! * No renewal yet: client certificates are valid [`LEAF_VALIDITY_DAYS`] days.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};

use slapos_proto::identity::Identity;

/// Validity of the CA certificate, in days.
pub const CA_VALIDITY_DAYS: i64 = 20 * 365;
/// Validity of client and server certificates, in days.
pub const LEAF_VALIDITY_DAYS: i64 = 5 * 365;
/// Common name of the CA (the issuer name of every certificate it signs).
pub const CA_COMMON_NAME: &str = "slapos-master CA";

/// A PKI operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Reading or writing a file of the TLS directory failed.
    #[error("failed to {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Generating a key or signing a certificate failed.
    #[error("failed to {op}: {source}")]
    Cert {
        /// What was being done.
        op: String,
        /// The rcgen error.
        #[source]
        source: rcgen::Error,
    },
    /// A file of the TLS directory is not what it should be.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `ca.key` is readable by others than its owner.
    #[error("{path} has mode {mode:o}: the CA key must be 0600 (chmod 600 it)")]
    KeyMode {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// A certificate just issued, with its private key.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The identity written in its common name.
    pub identity: Identity,
    /// Serial number, lower-case hex.
    pub serial: String,
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Private key, PKCS#8 PEM.
    pub key_pem: String,
    /// Not-after time, Unix ms.
    pub expires_ms: u64,
}

/// The certificate authority of one master.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: Vec<u8>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

fn io_err<'p>(op: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> PkiError + 'p {
    move |source| PkiError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

fn cert_err(op: impl Into<String>) -> impl FnOnce(rcgen::Error) -> PkiError {
    let op = op.into();
    move |source| PkiError::Cert { op, source }
}

/// The CA's parameters: also what rebuilds its issuer from the key on restart (same name, same
/// key identifier), so the certificate file is never parsed back into parameters.
fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

fn validity(p: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::minutes(5);
    p.not_after = now + time::Duration::days(days);
}

/// 16 random bytes, the first in `1..=0x7f` (a positive DER integer of exactly 16 bytes).
fn random_serial() -> Result<Vec<u8>, PkiError> {
    let mut b = random_bytes(16)?;
    b[0] = (b[0] & 0x7f).max(1);
    Ok(b)
}

/// `n` bytes from the OS's random source (`/dev/urandom`).
pub fn random_bytes(n: usize) -> Result<Vec<u8>, PkiError> {
    use std::io::Read;
    let path = Path::new("/dev/urandom");
    let mut f = std::fs::File::open(path).map_err(io_err("open", path))?;
    let mut b = vec![0u8; n];
    f.read_exact(&mut b).map_err(io_err("read", path))?;
    Ok(b)
}

/// Write `data` to a new file `path` with `mode` (fails if it exists).
pub fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), PkiError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_err("create", path))?;
    f.write_all(data).map_err(io_err("write", path))?;
    f.sync_all().map_err(io_err("sync", path))
}

impl Ca {
    /// Load the CA of `dir`, creating the directory (0700) and the CA the first time.
    pub fn open(dir: &Path) -> Result<Self, PkiError> {
        let key_path = dir.join("ca.key");
        let cert_path = dir.join("ca.pem");
        if !key_path.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err("create the TLS directory", dir))?;
            let key = KeyPair::generate().map_err(cert_err("generate the CA key"))?;
            let mut p = ca_params();
            p.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
            validity(&mut p, CA_VALIDITY_DAYS);
            let cert = p
                .self_signed(&key)
                .map_err(cert_err("self-sign the CA certificate"))?;
            write_new(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
            write_new(&cert_path, cert.pem().as_bytes(), 0o644)?;
            tracing::info!(dir = %dir.display(), "created the master CA");
        }
        Self::load(&key_path, &cert_path)
    }

    fn load(key_path: &Path, cert_path: &Path) -> Result<Self, PkiError> {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(key_path)
            .map_err(io_err("stat", key_path))?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(PkiError::KeyMode {
                path: key_path.to_owned(),
                mode,
            });
        }
        let key_pem = std::fs::read_to_string(key_path).map_err(io_err("read", key_path))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::Invalid {
            path: key_path.to_owned(),
            reason: format!("not a private key: {e}"),
        })?;
        let cert_pem = std::fs::read_to_string(cert_path).map_err(io_err("read", cert_path))?;
        let cert_der = cert_der(&cert_pem).ok_or_else(|| PkiError::Invalid {
            path: cert_path.to_owned(),
            reason: "no PEM certificate".into(),
        })?;
        let (_, parsed) =
            x509_parser::parse_x509_certificate(&cert_der).map_err(|e| PkiError::Invalid {
                path: cert_path.to_owned(),
                reason: format!("not a certificate: {e}"),
            })?;
        if parsed.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&key).as_slice()
        {
            return Err(PkiError::Invalid {
                path: cert_path.to_owned(),
                reason: format!("does not match the key {}", key_path.display()),
            });
        }
        Ok(Self {
            issuer: Issuer::new(ca_params(), key),
            cert_pem,
            cert_der,
        })
    }

    /// The CA certificate, PEM (what clients trust).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// Issue a client certificate for `identity` with a new key.
    pub fn issue_client(&self, identity: &Identity) -> Result<Issued, PkiError> {
        let cn = identity.to_string();
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, cn.clone());
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        self.sign(
            identity.clone(),
            p,
            &format!("issue a certificate for {cn}"),
        )
    }

    /// Issue the server certificate for `names` (DNS names or IP literals).
    pub fn issue_server(&self, names: &[String]) -> Result<Issued, PkiError> {
        let mut p = CertificateParams::new(names.to_vec())
            .map_err(cert_err(format!("use the server names {names:?}")))?;
        p.distinguished_name
            .push(DnType::CommonName, "slapos-master server");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        self.sign(Identity::Local, p, "issue the server certificate")
    }

    fn sign(
        &self,
        identity: Identity,
        mut p: CertificateParams,
        op: &str,
    ) -> Result<Issued, PkiError> {
        let serial = random_serial()?;
        p.serial_number = Some(SerialNumber::from_slice(&serial));
        validity(&mut p, LEAF_VALIDITY_DAYS);
        let expires_ms = u64::try_from(p.not_after.unix_timestamp()).unwrap_or(0) * 1000;
        let key = KeyPair::generate().map_err(cert_err(op))?;
        let cert = p.signed_by(&key, &self.issuer).map_err(cert_err(op))?;
        Ok(Issued {
            identity,
            serial: hex::encode(serial),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            expires_ms,
        })
    }
}

/// The DER content of the first certificate in `pem`.
pub fn cert_der(pem: &str) -> Option<Vec<u8>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .ok()
        .map(|c| c.to_vec())
}

/// The identity and serial of a client certificate (DER), as the master issued it.
pub fn parse_client_cert(der: &[u8]) -> Result<(Identity, String), String> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| format!("not a certificate: {e}"))?;
    let mut cns = cert.subject().iter_common_name();
    let cn = cns
        .next()
        .ok_or("the certificate has no common name")?
        .as_str()
        .map_err(|e| format!("unreadable common name: {e}"))?;
    if cns.next().is_some() {
        return Err("the certificate has several common names".into());
    }
    let identity = Identity::parse_cn(cn).map_err(|e| e.to_string())?;
    Ok((identity, hex::encode(cert.raw_serial())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use slapos_proto::{ComputerId, PartitionRef};

    #[test]
    fn ca_persists_and_issues_parseable_identities() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        let ca = Ca::open(&tls).unwrap();
        let mode = std::fs::metadata(tls.join("ca.key")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o777, 0o600);
        let again = Ca::open(&tls).unwrap();
        assert_eq!(ca.cert_pem(), again.cert_pem(), "CA recreated on restart");
        for id in [
            Identity::Computer(ComputerId::parse("COMP-1").unwrap()),
            Identity::Partition(PartitionRef::parse("COMP-1/slappart0").unwrap()),
            Identity::User("alice".parse().unwrap()),
            Identity::Admin("ops".parse().unwrap()),
        ] {
            // Issued by the reloaded CA: same issuer name and key as the first.
            let issued = again.issue_client(&id).unwrap();
            let der = cert_der(&issued.cert_pem).unwrap();
            let (parsed, serial) = parse_client_cert(&der).unwrap();
            assert_eq!(parsed, id);
            assert_eq!(serial, issued.serial);
            assert_eq!(serial.len(), 32);
        }
    }

    #[test]
    fn refuses_a_readable_key_and_a_foreign_cert() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        Ca::open(&a).unwrap();
        Ca::open(&b).unwrap();
        std::fs::set_permissions(a.join("ca.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Ca::open(&a).unwrap_err();
        assert!(matches!(err, PkiError::KeyMode { .. }), "{err}");
        std::fs::set_permissions(a.join("ca.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::copy(b.join("ca.pem"), a.join("ca.pem")).unwrap();
        let err = Ca::open(&a).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
    }
}
