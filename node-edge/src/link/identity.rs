//! The node's identity at its master (issue 8, node side): enrollment and the mTLS identity.
//!
//! * **Enrollment** ([`enroll`], `slapos-node enroll --config F --token T`): the one-time token
//!   from `slapos-master token create` is redeemed over TLS without a client certificate, the
//!   master being authenticated by its CA (`master_ca`, or `--ca`); the answer's key, certificate
//!   and CA are written atomically to `key` (mode 0600), `cert` and `<state_dir>/master-ca.pem`
//!   (defaults: `<state_dir>/computer.key|crt`).
//! * **Use** ([`load`]): an `https://` master (`Config::uses_identity`), native or SLAP, is
//!   reached over mTLS with that identity; without it `run` and `format` refuse to start with
//!   [`IdentityError::NotEnrolled`], which names the command to run.
//! * The partitions' own certificates are placed by the partition task
//!   ([`crate::converge::partition::certificate`]).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use slapos_client::ClientError;

use crate::config::Config;

/// The node has no usable identity, or enrollment failed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// `run`/`format` against an `https://` master before `enroll`.
    #[error(
        "no computer identity for the https master: `{path}` does not exist; enroll this node \
         first with `slapos-node enroll --config <FILE> --token-file <FILE>` (token from \
         `slapos-master token create --computer {computer}`)"
    )]
    NotEnrolled {
        /// The missing certificate or key file.
        path: PathBuf,
        /// This node's computer id.
        computer: String,
    },
    /// The master CA file is missing.
    #[error(
        "master CA `{path}` does not exist: set `master_ca` (or pass --ca) to the master's \
         ca.pem (in its --tls-dir), copied to this node out of band"
    )]
    NoCa {
        /// The file looked for.
        path: PathBuf,
    },
    /// A file could not be read.
    #[error("failed to read {what} `{path}`: {source}")]
    Read {
        /// What the file is.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("failed to write `{path}`: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// `enroll` with a config whose master is not `https://`.
    #[error("enroll needs `master_url` = https://… (got {url:?}): identities are for mTLS masters")]
    NotTls {
        /// `master_url`.
        url: String,
    },
    /// The master refused the token.
    #[error(
        "enrollment refused by the master: the token is already used, expired or unknown \
         ({source}); ask for a new one: `slapos-master token create --computer {computer}`"
    )]
    TokenRefused {
        /// This node's computer id.
        computer: String,
        /// The master's answer.
        #[source]
        source: ClientError,
    },
    /// The master issued a certificate for another computer (the token was not for this node).
    #[error(
        "the token enrolls `{got}`, but this node is computer `{want}`: nothing was written \
         (the token is spent; revoke the certificate {serial} on the master)"
    )]
    WrongComputer {
        /// Identity in the certificate.
        got: String,
        /// Expected identity.
        want: String,
        /// The certificate's serial.
        serial: String,
    },
    /// Any other failure of the enrollment call.
    #[error("enrollment failed: {0}")]
    Client(#[from] ClientError),
}

/// The PEM texts of the node's mTLS identity.
#[derive(Clone)]
pub struct NodeIdentity {
    /// The master CA.
    pub ca_pem: String,
    /// The computer's certificate.
    pub cert_pem: String,
    /// The computer's private key.
    pub key_pem: String,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity").finish_non_exhaustive()
    }
}

fn read(what: &'static str, path: &Path) -> Result<String, IdentityError> {
    std::fs::read_to_string(path).map_err(|source| IdentityError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// The CA, certificate and key the config points at. A missing certificate or key is
/// [`IdentityError::NotEnrolled`]; a missing CA [`IdentityError::NoCa`].
pub fn load(cfg: &Config) -> Result<NodeIdentity, IdentityError> {
    for path in [cfg.cert_path(), cfg.key_path()] {
        if !path.exists() {
            return Err(IdentityError::NotEnrolled {
                path,
                computer: cfg.computer_id.to_string(),
            });
        }
    }
    let ca = cfg.master_ca_path();
    if !ca.exists() {
        return Err(IdentityError::NoCa { path: ca });
    }
    Ok(NodeIdentity {
        ca_pem: read("the master CA", &ca)?,
        cert_pem: read("the computer certificate", &cfg.cert_path())?,
        key_pem: read("the computer key", &cfg.key_path())?,
    })
}

/// What [`enroll`] wrote.
#[derive(Debug, Clone)]
pub struct Enrolled {
    /// `computer:<id>`.
    pub identity: String,
    /// Certificate serial (what `slapos-master cert revoke` takes).
    pub serial: String,
    /// Key file (0600).
    pub key: PathBuf,
    /// Certificate file.
    pub cert: PathBuf,
    /// Master CA file.
    pub ca: PathBuf,
    /// An identity was there before and has been replaced.
    pub replaced: bool,
}

/// `slapos-node enroll`: redeem `token` at the config's master, authenticated by the CA file
/// `ca` (default: `master_ca`), and store the identity (see the module doc).
pub fn enroll(cfg: &Config, token: &str, ca: Option<&Path>) -> Result<Enrolled, IdentityError> {
    if !cfg.uses_identity() {
        return Err(IdentityError::NotTls {
            url: cfg.master_url.clone(),
        });
    }
    let ca_path = ca.map_or_else(|| cfg.master_ca_path(), Path::to_path_buf);
    if !ca_path.exists() {
        return Err(IdentityError::NoCa { path: ca_path });
    }
    let ca_pem = read("the master CA", &ca_path)?;
    let creds = match slapos_client::Client::enroll(&cfg.master_url, &ca_pem, token) {
        Ok(c) => c,
        Err(e) if e.status() == Some(403) => {
            return Err(IdentityError::TokenRefused {
                computer: cfg.computer_id.to_string(),
                source: e,
            });
        }
        Err(e) => return Err(e.into()),
    };
    let want = format!("computer:{}", cfg.computer_id);
    if creds.identity != want {
        return Err(IdentityError::WrongComputer {
            got: creds.identity,
            want,
            serial: creds.serial,
        });
    }
    let (key, cert) = (cfg.key_path(), cfg.cert_path());
    let replaced = key.exists() || cert.exists();
    let state = cfg.state_dir();
    if !state.exists() {
        std::fs::create_dir_all(&state)
            .and_then(|()| std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)))
            .map_err(|source| IdentityError::Write {
                path: state.clone(),
                source,
            })?;
    }
    // The key first: a certificate on disk always has its key.
    let ca_out = state.join("master-ca.pem");
    for (path, body, mode) in [
        (&key, &creds.key_pem, 0o600),
        (&cert, &creds.cert_pem, 0o644),
        (&ca_out, &creds.ca_pem, 0o644),
    ] {
        write_mode(path, body.as_bytes(), mode).map_err(|source| IdentityError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(Enrolled {
        identity: creds.identity,
        serial: creds.serial,
        key,
        cert,
        ca: cfg.master_ca.clone().unwrap_or(ca_out),
        replaced,
    })
}

/// Write `data` to `path` atomically with `mode`: a temporary file created with that mode in
/// the same directory (a key is never readable by others, not even briefly), fsync, rename,
/// fsync of the directory.
pub fn write_mode(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    crate::util::atomic_write_mode(path, data, Some(mode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn files_get_their_modes_atomically() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/k.pem");
        write_mode(&p, b"one", 0o600).unwrap();
        write_mode(&p, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o7777, 0o600);
        write_mode(&p, b"three", 0o644).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o7777, 0o644);
        let names: Vec<_> = std::fs::read_dir(d.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["k.pem"]);
    }

    #[test]
    fn missing_identity_says_to_enroll() {
        let d = tempfile::tempdir().unwrap();
        let mut cfg = Config::new(
            "https://127.0.0.1:1",
            slapos_proto::ComputerId::parse("C1").unwrap(),
            1,
            d.path().join("soft"),
            d.path().join("inst"),
        );
        let e = load(&cfg).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("slapos-node enroll") && msg.contains("computer.crt"),
            "{msg}"
        );
        std::fs::create_dir_all(cfg.state_dir()).unwrap();
        std::fs::write(cfg.cert_path(), "c").unwrap();
        std::fs::write(cfg.key_path(), "k").unwrap();
        let e = load(&cfg).unwrap_err();
        assert!(matches!(e, IdentityError::NoCa { .. }), "{e}");
        std::fs::write(cfg.master_ca_path(), "ca").unwrap();
        let id = load(&cfg).unwrap();
        assert_eq!((id.ca_pem.as_str(), id.key_pem.as_str()), ("ca", "k"));
        // enroll refuses a plain-http master, before any call.
        cfg.master_url = "http://127.0.0.1:1".into();
        let e = enroll(&cfg, "t", None).unwrap_err();
        assert!(matches!(e, IdentityError::NotTls { .. }), "{e}");
        cfg.master_url = "https://127.0.0.1:1".into();
        let e = enroll(&cfg, "t", Some(&d.path().join("nope.pem"))).unwrap_err();
        assert!(e.to_string().contains("nope.pem"), "{e}");
    }
}
