//! A test PKI generated per test (rcgen): a CA, a server certificate for `localhost` and
//! `127.0.0.1`, a client certificate, an expired client certificate, and a second CA nobody
//! trusts. Files are PEM; keys are written mode 0600, as the buffer demands of secrets.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// Paths of the generated files.
pub struct Pki {
    pub dir: PathBuf,
    /// The CA that signed everything below.
    pub ca: PathBuf,
    /// A CA that signed nothing here ("wrong CA").
    pub other_ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// Valid from 60 to 30 days ago.
    pub expired_cert: PathBuf,
    pub expired_key: PathBuf,
}

fn ca(cn: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(p, KeyPair::generate().expect("CA key")).expect("CA")
}

fn write(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).expect("write PEM");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

impl Pki {
    /// Generates everything in `dir`.
    pub fn generate(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).expect("pki dir");
        let issuer = ca("slapos-buffer test CA");
        let other = ca("someone else's CA");
        let leaf = |cn: &str, server: bool, expired: bool, stem: &str| -> (PathBuf, PathBuf) {
            let sans = if server {
                vec!["localhost".to_string(), "127.0.0.1".to_string()]
            } else {
                vec![]
            };
            let mut p = CertificateParams::new(sans).expect("leaf params");
            p.distinguished_name.push(DnType::CommonName, cn);
            p.extended_key_usages = vec![if server {
                ExtendedKeyUsagePurpose::ServerAuth
            } else {
                ExtendedKeyUsagePurpose::ClientAuth
            }];
            let now = OffsetDateTime::now_utc();
            if expired {
                p.not_before = now - Duration::days(60);
                p.not_after = now - Duration::days(30);
            } else {
                p.not_before = now - Duration::days(1);
                p.not_after = now + Duration::days(30);
            }
            let key = KeyPair::generate().expect("leaf key");
            let cert = p.signed_by(&key, &issuer).expect("sign leaf");
            let (c, k) = (
                dir.join(format!("{stem}.crt")),
                dir.join(format!("{stem}.key")),
            );
            write(&c, &cert.pem(), 0o644);
            write(&k, &key.serialize_pem(), 0o600);
            (c, k)
        };
        let (server_cert, server_key) = leaf("localhost", true, false, "server");
        let (client_cert, client_key) = leaf("gw-test", false, false, "client");
        let (expired_cert, expired_key) = leaf("gw-old", false, true, "expired");
        let ca_path = dir.join("ca.crt");
        write(&ca_path, &issuer.pem(), 0o644);
        let other_ca = dir.join("other-ca.crt");
        write(&other_ca, &other.pem(), 0o644);
        Pki {
            dir: dir.to_path_buf(),
            ca: ca_path,
            other_ca,
            server_cert,
            server_key,
            client_cert,
            client_key,
            expired_cert,
            expired_key,
        }
    }

    /// The `[output.tls]` table trusting `ca`, with an optional client identity.
    pub fn tls_table(&self, ca: &Path, identity: Option<(&Path, &Path)>) -> String {
        let mut t = format!("[output.tls]\nca_file = \"{}\"\n", ca.display());
        if let Some((c, k)) = identity {
            t.push_str(&format!(
                "cert_file = \"{}\"\nkey_file = \"{}\"\n",
                c.display(),
                k.display()
            ));
        }
        t
    }
}

// ---------------------------------------------------------------------------------------------
// An HTTPS collector that verifies client certificates (rustls server, ring).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

/// Accepts HTTPS POSTs of NDJSON batches from clients with a certificate of `pki`'s CA,
/// keeping connections alive; records the `n` of each line, the handshakes (and how many
/// resumed a session), and can cut its open sessions or refuse connections (link loss).
pub struct HttpsSink {
    pub addr: String,
    /// The `n` of every line received, in arrival order.
    pub got: Arc<Mutex<Vec<u64>>>,
    pub handshakes: Arc<AtomicU64>,
    pub resumed: Arc<AtomicU64>,
    /// While set, connections are closed as soon as they are accepted.
    pub refuse: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

fn load_certs(p: &Path) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject as _;
    rustls::pki_types::CertificateDer::pem_file_iter(p)
        .expect("cert file")
        .collect::<Result<_, _>>()
        .expect("PEM certs")
}

impl HttpsSink {
    pub fn start(pki: &Pki) -> HttpsSink {
        use rustls::pki_types::pem::PemObject as _;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in load_certs(&pki.ca) {
            roots.add(c).expect("CA");
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .expect("client verifier");
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&pki.server_key).expect("key");
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_client_cert_verifier(verifier)
                .with_single_cert(load_certs(&pki.server_cert), key)
                .expect("server config"),
        );
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        let sink = HttpsSink {
            addr,
            got: Arc::default(),
            handshakes: Arc::default(),
            resumed: Arc::default(),
            refuse: Arc::default(),
            open: Arc::default(),
            stop: Arc::default(),
        };
        let (got, hs, res, refuse, open, stop) = (
            sink.got.clone(),
            sink.handshakes.clone(),
            sink.resumed.clone(),
            sink.refuse.clone(),
            sink.open.clone(),
            sink.stop.clone(),
        );
        std::thread::spawn(move || {
            for s in l.incoming() {
                if stop.load(SeqCst) {
                    return;
                }
                let Ok(s) = s else { continue };
                if refuse.load(SeqCst) {
                    drop(s);
                    continue;
                }
                if let Ok(c) = s.try_clone() {
                    open.lock().unwrap().push(c);
                }
                let (config, got, hs, res) = (config.clone(), got.clone(), hs.clone(), res.clone());
                std::thread::spawn(move || serve(s, config, &got, &hs, &res));
            }
        });
        sink
    }

    pub fn url(&self) -> String {
        format!("https://{}/ingest", self.addr)
    }

    /// Shuts down every open TCP connection under its TLS session (a link lost).
    pub fn cut(&self) {
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    pub fn numbers(&self) -> Vec<u64> {
        self.got.lock().unwrap().clone()
    }
}

impl Drop for HttpsSink {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        self.cut();
        let _ = TcpStream::connect(&self.addr);
    }
}

/// One connection: requests until the client or the link goes away.
fn serve(
    s: TcpStream,
    config: Arc<rustls::ServerConfig>,
    got: &Mutex<Vec<u64>>,
    handshakes: &AtomicU64,
    resumed: &AtomicU64,
) {
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(30)));
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(conn, s);
    while tls.conn.is_handshaking() {
        if tls.conn.complete_io(&mut tls.sock).is_err() {
            return; // refused client certificate, or the link went away
        }
    }
    handshakes.fetch_add(1, SeqCst);
    if tls.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
        resumed.fetch_add(1, SeqCst);
    }
    let mut r = BufReader::new(tls);
    loop {
        let mut len = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0u8; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        {
            let mut g = got.lock().unwrap();
            for l in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let v: serde_json::Value = serde_json::from_slice(l).expect("ndjson line");
                if let Some(n) = v["payload"]
                    .as_str()
                    .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
                    .and_then(|p| p["n"].as_u64())
                {
                    g.push(n);
                }
            }
        }
        let w = r.get_mut();
        if w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .is_err()
            || w.flush().is_err()
        {
            return;
        }
    }
}
