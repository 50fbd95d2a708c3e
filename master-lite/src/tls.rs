//! Serving the API over mTLS (tokio-rustls, ring provider).
//!
//! [`server_config`] builds a rustls server configuration whose client verifier is rooted at
//! the master CA only. A client certificate is *optional* at the handshake (so a new node can
//! enroll), but a certificate that does not chain to the CA fails the handshake. The identity of
//! a verified certificate is parsed (x509-parser) once per connection into the [`Peer`] that
//! axum attaches to every request of that connection (`ConnectInfo<Peer>`); the HTTP layer then
//! checks its serial against the database on every request and applies the rules of
//! [`crate::auth`].
//!
//! [`TlsListener`] runs the TCP accept loop on its own task and performs the handshakes
//! concurrently (bounded by [`MAX_HANDSHAKES`], each within [`HANDSHAKE_TIMEOUT`]), so one slow
//! or silent client never delays the others.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::auth::Identity;
use crate::error::MasterError;
use crate::pki::{self, Ca};

/// Handshakes in progress at once; further connections wait in the kernel's backlog.
pub const MAX_HANDSHAKES: usize = 128;
/// Time a client has to complete its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The client of one TLS connection.
#[derive(Clone, Debug)]
pub struct Peer {
    /// Its address.
    pub addr: SocketAddr,
    /// `None` without a client certificate; else the identity and serial of the verified
    /// certificate, or why its subject is no identity.
    pub cert: Option<Result<(Identity, String), String>>,
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

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

/// The [`Peer`] of an established connection.
fn peer_of(addr: SocketAddr, tls: &TlsStream<TcpStream>) -> Peer {
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|der| pki::parse_client_cert(der));
    Peer { addr, cert }
}

/// A listener that yields established TLS connections (see the module doc).
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
    local: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Accept TLS connections on `tcp` with `config`.
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, rx) = mpsc::channel(MAX_HANDSHAKES);
        let acceptor = TlsAcceptor::from(config);
        let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        let task = tokio::spawn(async move {
            loop {
                let (stream, addr) = tokio::select! {
                    accepted = tcp.accept() => match accepted {
                        Ok(v) => v,
                        Err(e) => {
                            // EMFILE and friends: back off instead of spinning.
                            tracing::warn!("accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                    _ = tx.closed() => return,
                };
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let peer = peer_of(addr, &tls);
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::info!(%addr, "TLS handshake refused: {e}"),
                        Err(_) => tracing::info!(%addr, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { rx, local, task })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(v) => v,
            // The accept task ended (runtime shutting down): accept nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Peer {
            addr: self.local,
            cert: None,
        })
    }
}
