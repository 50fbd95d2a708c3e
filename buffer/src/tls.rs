//! TLS client settings of the outputs and of the MQTT input, and the secret files they read.
//!
//! One TLS stack: rustls with the ring provider (never aws-lc), given to rumqttc as a finished
//! `ClientConfig` and to ureq as roots plus client certificate. The server is verified against
//! the PEM certificates of `ca_file`, or against the system bundle
//! ([`SYSTEM_CA_BUNDLE`], Debian's `ca-certificates`) when no `ca_file` is named: no root
//! store is compiled in. `cert_file` + `key_file` present a client certificate (mutual TLS).
//! SNI is the configured host name (an IP address sends none and is checked against the
//! certificate's IP SANs); `alpn` lists protocols for brokers that need one (AWS IoT Core
//! on port 443: `x-amzn-mqtt-ca`).
//!
//! Secrets — private keys and passwords — come from files only, never from the command line
//! or the config text, and a secret file that its group or others may read (or write) is
//! refused, as the master refuses its CA key. The mode is read from the opened file, so the
//! check and the read concern the same file.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The PEM bundle trusted when a TLS table names no `ca_file` (Debian, Ubuntu, Alpine).
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The `tls` table of an MQTT input, an MQTT output or an `https://` HTTP output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsCfg {
    /// PEM certificates the server must chain to (default: [`SYSTEM_CA_BUNDLE`]).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain (mutual TLS); needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file` (PKCS#8, PKCS#1 or SEC1), mode 0600 or stricter.
    pub key_file: Option<PathBuf>,
    /// ALPN protocols offered (MQTT only).
    #[serde(default)]
    pub alpn: Vec<String>,
}

/// Why TLS settings or a secret could not be loaded. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be opened, inspected or read.
    #[error("failed to {op} `{path}`: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A secret file that group or others may access.
    #[error(
        "`{path}` has mode {mode:03o}: a secret must not be accessible to group or others \
         (chmod 600 it)"
    )]
    Mode {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A file whose content is not what it should be.
    #[error("`{path}`: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Settings that do not go together, or that rustls refused.
    #[error("TLS settings: {0}")]
    Settings(String),
}

fn io_err<'p>(op: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> TlsError + 'p {
    move |source| TlsError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn invalid(path: &Path, reason: impl Into<String>) -> TlsError {
    TlsError::Invalid {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Reads a secret file, refusing it if group or others have any access to it.
pub fn read_secret(path: &Path) -> Result<Vec<u8>, TlsError> {
    let mut f = std::fs::File::open(path).map_err(io_err("open", path))?;
    let mode = f
        .metadata()
        .map_err(io_err("stat", path))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(TlsError::Mode {
            path: path.to_path_buf(),
            mode,
        });
    }
    let mut data = Vec::new();
    f.read_to_end(&mut data).map_err(io_err("read", path))?;
    Ok(data)
}

/// Reads a password file (a secret): its text without one trailing newline.
pub fn read_password(path: &Path) -> Result<String, TlsError> {
    let data = read_secret(path)?;
    let mut s = String::from_utf8(data).map_err(|_| invalid(path, "the password is not UTF-8"))?;
    for eol in ["\n", "\r"] {
        if s.ends_with(eol) {
            s.pop();
        }
    }
    if s.is_empty() {
        return Err(invalid(path, "the password file is empty"));
    }
    Ok(s)
}

/// The PEM certificates of `path` (at least one).
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(io_err("read", path))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(path, format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(path, "no PEM certificate in it"));
    }
    Ok(certs)
}

/// Loaded client TLS settings: roots, optional client identity, ALPN.
#[derive(Debug)]
pub struct ClientTls {
    roots: Vec<CertificateDer<'static>>,
    /// Chain, key, and the key's PEM text (for ureq).
    identity: Option<(
        Vec<CertificateDer<'static>>,
        PrivateKeyDer<'static>,
        Vec<u8>,
    )>,
    alpn: Vec<Vec<u8>>,
}

impl ClientTls {
    /// Reads the files `cfg` names (the system bundle when it names no CA).
    pub fn load(cfg: &TlsCfg) -> Result<ClientTls, TlsError> {
        Self::load_with_bundle(cfg, Path::new(SYSTEM_CA_BUNDLE))
    }

    /// [`ClientTls::load`] with another default bundle (tests).
    pub fn load_with_bundle(cfg: &TlsCfg, bundle: &Path) -> Result<ClientTls, TlsError> {
        let mut store = rustls::RootCertStore::empty();
        let mut roots = Vec::new();
        match &cfg.ca_file {
            Some(p) => {
                for c in read_certs(p)? {
                    store
                        .add(c.clone())
                        .map_err(|e| invalid(p, format!("unusable CA certificate: {e}")))?;
                    roots.push(c);
                }
            }
            None => {
                // A distribution bundle may hold certificates webpki cannot use; skip those.
                for c in read_certs(bundle)? {
                    if store.add(c.clone()).is_ok() {
                        roots.push(c);
                    }
                }
                if roots.is_empty() {
                    return Err(invalid(bundle, "no usable CA certificate in the bundle"));
                }
            }
        }
        let identity = match (&cfg.cert_file, &cfg.key_file) {
            (Some(c), Some(k)) => {
                let chain = read_certs(c)?;
                let pem = read_secret(k)?;
                let key = PrivateKeyDer::from_pem_slice(&pem)
                    .map_err(|e| invalid(k, format!("not a PEM private key: {e}")))?;
                Some((chain, key, pem))
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(TlsError::Settings(
                    "cert_file needs key_file (the client certificate's private key)".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(TlsError::Settings(
                    "key_file needs cert_file (the client certificate)".into(),
                ));
            }
        };
        let tls = ClientTls {
            roots,
            identity,
            alpn: cfg.alpn.iter().map(|a| a.as_bytes().to_vec()).collect(),
        };
        // Refuse now what rustls would refuse at the first connection (a key that does not
        // match its certificate, an unsupported key type).
        tls.rustls()?;
        Ok(tls)
    }

    /// A rustls client configuration (ring provider) for rumqttc.
    pub fn rustls(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let settings = |e: rustls::Error| TlsError::Settings(e.to_string());
        let mut store = rustls::RootCertStore::empty();
        // Every root was accepted by a store at load.
        let _ = store.add_parsable_certificates(self.roots.iter().cloned());
        let b = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(settings)?
        .with_root_certificates(store);
        let mut c = match &self.identity {
            Some((chain, key, _)) => b
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|e| TlsError::Settings(format!("client certificate and key: {e}")))?,
            None => b.with_no_client_auth(),
        };
        c.alpn_protocols = self.alpn.clone();
        Ok(Arc::new(c))
    }

    /// The same trust and identity for ureq (HTTPS output; ureq sets ALPN itself).
    pub fn ureq(&self) -> Result<ureq::tls::TlsConfig, TlsError> {
        use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
        let roots: Vec<Certificate<'static>> = self
            .roots
            .iter()
            .map(|d| Certificate::from_der(d).to_owned())
            .collect();
        let mut b = TlsConfig::builder()
            .root_certs(RootCerts::new_with_certs(&roots))
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()));
        if let Some((chain, _, pem)) = &self.identity {
            let chain: Vec<Certificate<'static>> = chain
                .iter()
                .map(|c| Certificate::from_der(c).to_owned())
                .collect();
            let key = PrivateKey::from_pem(pem)
                .map_err(|e| TlsError::Settings(format!("client key for HTTPS: {e}")))?;
            b = b.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
        }
        Ok(b.build())
    }
}
