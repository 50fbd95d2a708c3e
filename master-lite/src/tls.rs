//! Serving the API over mTLS (tokio-rustls, ring provider).
//!
//! [`server_config`] builds a rustls server configuration whose client verifier is rooted at
//! the master CA only. A client certificate is *optional* at the handshake (so a new node can
//! enroll), but a certificate that does not chain to the CA fails the handshake. The identity of
//! a verified certificate is parsed (x509-parser) once per connection into the
//! [`crate::server::Peer`] that
//! axum attaches to every request of that connection (`ConnectInfo<Peer>`); the HTTP layer then
//! checks its serial against the database on every request and applies the rules of
//! [`crate::auth`].
//!
//! Connections are accepted by [`crate::server`], which runs each handshake in the connection's
//! own task within its timeout, so one slow or silent client never delays the others.

use std::sync::Arc;

use crate::error::MasterError;
use crate::pki::Ca;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

/// The ring crypto provider every TLS configuration of the master uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration: a certificate for `names` issued by `ca` now, clients verified
/// against `ca` (optional at the handshake), HTTP/1.1.
pub fn server_config(ca: &Ca, names: &[String]) -> Result<Arc<rustls::ServerConfig>, MasterError> {
    let tls = |what: &str, e: &dyn std::fmt::Display| MasterError::Tls(format!("{what}: {e}"));
    let provider = provider();
    let ca_der = CertificateDer::from(ca.cert_der().to_vec());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca_der.clone())
        .map_err(|e| tls("add the CA to the client roots", &e))?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| tls("build the client verifier", &e))?;
    let server = ca.issue_server(names)?;
    let cert = CertificateDer::from_pem_slice(server.cert_pem.as_bytes())
        .map_err(|e| tls("read the server certificate", &e))?;
    let key = PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes())
        .map_err(|e| tls("read the server key", &e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls("choose the protocol versions", &e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert, ca_der], key)
        .map_err(|e| tls("use the server certificate", &e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
