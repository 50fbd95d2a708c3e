//! OPC-UA input (feature `opcua`): monitored items of a subscription become records.
//!
//! Each data change is one record: key = the node id (`ns=2;s=temperature`), payload = JSON
//! `{"node": …, "value": …, "status": …, "source_ts": …}`. The client (async-opcua) reconnects
//! and republishes by itself; this task rebuilds the session with backoff if its event loop ends.
//!
//! Security: SecurityPolicy `None`, or `Basic256Sha256` / `Aes128Sha256RsaOaep` /
//! `Aes256Sha256RsaPss` with `Sign` or `SignAndEncrypt`, the client presenting its application
//! instance certificate (`cert_file`, whose URI SAN is `application_uri`) and key (`key_file`, a
//! secret: refused if group or others may read it), and trusting exactly the server certificate
//! of `server_cert_file` (anything else is refused, never trusted on first use). Login is
//! anonymous or username/password (`password_file`). The files are copied into the client's
//! PKI directory (`<stream>/opcua-<i>/`: `own/cert.der`, `private/private.pem` mode 0600,
//! `trusted/<name>.der`) at startup.
//!
//! Limit: async-opcua acknowledges notifications to the server itself, before they are durable
//! here, so a crash can lose the changes still in the ingest channel (as with serial input).
//! Data changes that arrive while the bounded hand-over queue (4096) is full are counted in
//! `input_invalid` and dropped — the server's own queue is the back-pressure point.

use crate::log::{Shared, unix_ms};
use crate::output::Backoff;
use crate::service::{Ingest, RecordIn};
use opcua::client::{ClientBuilder, DataChangeCallback, IdentityToken, MonitoredItem};
use opcua::types::{
    DataValue, EndpointDescription, MessageSecurityMode, MonitoredItemCreateRequest, NodeId,
    TimestampsToReturn, UserTokenPolicy, Variant,
};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// OPC-UA input settings.
#[derive(Debug, Clone)]
pub struct OpcuaIn {
    /// `opc.tcp://host:port/path`.
    pub endpoint: String,
    /// Node ids to monitor.
    pub nodes: Vec<String>,
    /// Sampling and publishing interval.
    pub interval: Duration,
    /// Source index.
    pub source: u16,
    /// Directory for the client's PKI files.
    pub pki_dir: PathBuf,
    /// User name and password (read from its file); anonymous without.
    pub user: Option<(String, String)>,
    /// Security policy name (`None`, `Basic256Sha256`, …).
    pub policy: String,
    /// Message security mode.
    pub mode: MessageSecurityMode,
    /// Application URI (the URI SAN of the client certificate).
    pub application_uri: String,
}

/// Reads a certificate file, DER or PEM.
fn read_x509(path: &std::path::Path) -> Result<opcua::crypto::X509, crate::config::ConfigError> {
    let bad = |why: String| {
        crate::config::ConfigError::Invalid(format!(
            "opcua certificate `{}`: {why}",
            path.display()
        ))
    };
    let data = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    opcua::crypto::X509::from_der(&data)
        .or_else(|_| opcua::crypto::X509::from_pem(&data))
        .map_err(|e| bad(format!("neither DER nor PEM: {e:?}")))
}

/// Lays out the client's PKI directory: own certificate, private key (0600), the one trusted
/// server certificate. Earlier trusted certificates are removed.
fn prepare_pki(
    dir: &std::path::Path,
    cert_file: &std::path::Path,
    key_file: &std::path::Path,
    server_cert_file: &std::path::Path,
) -> Result<(), crate::config::ConfigError> {
    use crate::config::ConfigError;
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |what: &str, p: &std::path::Path, e: std::io::Error| {
        ConfigError::Invalid(format!("opcua: failed to {what} `{}`: {e}", p.display()))
    };
    let own = read_x509(cert_file)?;
    let server = read_x509(server_cert_file)?;
    let key = crate::tls::read_secret(key_file).map_err(|source| ConfigError::Secret {
        what: "opcua key_file".into(),
        source,
    })?;
    if !key.starts_with(b"-----BEGIN") {
        return Err(ConfigError::Invalid(format!(
            "opcua key_file `{}`: not a PEM private key",
            key_file.display()
        )));
    }
    let trusted = dir.join("trusted");
    if trusted.exists() {
        std::fs::remove_dir_all(&trusted).map_err(|e| io("clear", &trusted, e))?;
    }
    for sub in ["own", "private", "trusted", "rejected"] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).map_err(|e| io("create", &d, e))?;
    }
    let der = |c: &opcua::crypto::X509, p: &std::path::Path| {
        c.to_der().map_err(|e| {
            ConfigError::Invalid(format!("opcua certificate `{}`: {e:?}", p.display()))
        })
    };
    let own_path = dir.join("own/cert.der");
    std::fs::write(&own_path, der(&own, cert_file)?).map_err(|e| io("write", &own_path, e))?;
    let server_path = trusted.join(opcua::crypto::CertificateStore::cert_file_name(&server));
    std::fs::write(&server_path, der(&server, server_cert_file)?)
        .map_err(|e| io("write", &server_path, e))?;
    let key_path = dir.join("private/private.pem");
    let _ = std::fs::remove_file(&key_path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)
        .map_err(|e| io("create", &key_path, e))?;
    f.write_all(&key).map_err(|e| io("write", &key_path, e))?;
    Ok(())
}

impl OpcuaIn {
    /// The settings of an `opcua` input of the config, its password read from its file.
    ///
    /// Limit (issue 17, not done yet): only SecurityPolicy `None` is implemented; a config
    /// asking for `Basic256Sha256` or another policy is refused here, at startup, rather than
    /// connecting with less security than it asked for.
    pub fn from_config(
        input: &crate::config::InputCfg,
        source: u16,
        pki_dir: &std::path::Path,
    ) -> Result<OpcuaIn, crate::config::ConfigError> {
        use crate::config::{ConfigError, InputCfg};
        let InputCfg::Opcua {
            endpoint,
            nodes,
            interval_ms,
            username,
            password_file,
            cert_file,
            key_file,
            server_cert_file,
            application_uri,
            ..
        } = input
        else {
            return Err(ConfigError::Invalid("not an opcua input".into()));
        };
        let (policy, mode) = crate::config::opcua_security(input)?;
        let mode = match mode.as_str() {
            "Sign" => MessageSecurityMode::Sign,
            "SignAndEncrypt" => MessageSecurityMode::SignAndEncrypt,
            _ => MessageSecurityMode::None,
        };
        if let (Some(c), Some(k), Some(sc)) = (cert_file, key_file, server_cert_file)
            && policy != "None"
        {
            prepare_pki(pki_dir, c, k, sc)?;
        }
        let what = format!("opcua input `{endpoint}`");
        let password = crate::config::read_password(&what, password_file)?;
        let user = match (username, password) {
            (Some(u), Some(p)) => Some((u.clone(), p)),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid(format!(
                    "{what}: username and password_file go together"
                )));
            }
        };
        Ok(OpcuaIn {
            endpoint: endpoint.clone(),
            nodes: nodes.clone(),
            interval: Duration::from_millis(interval_ms.unwrap_or(1000)),
            source,
            pki_dir: pki_dir.to_path_buf(),
            user,
            policy,
            mode,
            application_uri: application_uri
                .clone()
                .unwrap_or_else(|| "urn:slapos-buffer".into()),
        })
    }
}

/// A variant as JSON (scalars natively, anything else as its debug text).
pub fn variant_json(v: &Variant) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Variant::Empty => J::Null,
        Variant::Boolean(b) => J::Bool(*b),
        Variant::SByte(x) => (*x).into(),
        Variant::Byte(x) => (*x).into(),
        Variant::Int16(x) => (*x).into(),
        Variant::UInt16(x) => (*x).into(),
        Variant::Int32(x) => (*x).into(),
        Variant::UInt32(x) => (*x).into(),
        Variant::Int64(x) => (*x).into(),
        Variant::UInt64(x) => (*x).into(),
        Variant::Float(x) => serde_json::Number::from_f64(f64::from(*x)).map_or(J::Null, J::Number),
        Variant::Double(x) => serde_json::Number::from_f64(*x).map_or(J::Null, J::Number),
        Variant::String(s) => J::String(s.to_string()),
        other => J::String(format!("{other:?}")),
    }
}

fn record(source: u16, dv: &DataValue, item: &MonitoredItem) -> RecordIn {
    let node = item.item_to_monitor().node_id.to_string();
    let payload = serde_json::json!({
        "node": node,
        "value": dv.value.as_ref().map(variant_json),
        "status": dv.status.map(|s| s.to_string()),
        "source_ts": dv.source_timestamp.map(|t| t.to_string()),
    });
    RecordIn {
        ts_ms: unix_ms(),
        source,
        key: node.into_bytes(),
        payload: payload.to_string().into_bytes(),
        origin: None,
    }
}

/// Runs the input until `stop`.
pub async fn run(ingest: Ingest, sh: Arc<Shared>, cfg: OpcuaIn, mut stop: watch::Receiver<bool>) {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let nodes: Vec<NodeId> = cfg
        .nodes
        .iter()
        .filter_map(|n| match NodeId::from_str(n) {
            Ok(id) => Some(id),
            Err(_) => {
                tracing::error!("buffer: opcua: invalid node id `{n}`");
                None
            }
        })
        .collect();
    loop {
        if *stop.borrow() {
            return;
        }
        let secured = cfg.policy != "None";
        let mut builder = ClientBuilder::new()
            .application_name("slapos-buffer")
            .application_uri(cfg.application_uri.clone())
            .product_uri("urn:slapos-buffer")
            .pki_dir(cfg.pki_dir.clone())
            .create_sample_keypair(false)
            // Without a security policy no certificate is exchanged; with one, only the
            // configured server certificate (in `trusted/`) is accepted.
            .trust_server_certs(!secured)
            .session_retry_limit(3);
        if secured {
            builder = builder
                .certificate_path("own/cert.der")
                .private_key_path("private/private.pem");
        }
        let client = builder.client();
        let mut client = match client {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("buffer: opcua client configuration: {e:?}");
                return;
            }
        };
        let (token_policy, identity) = match &cfg.user {
            Some((u, p)) => (
                UserTokenPolicy {
                    token_type: opcua::types::UserTokenType::UserName,
                    ..UserTokenPolicy::anonymous()
                },
                IdentityToken::new_user_name(u.clone(), p.clone()),
            ),
            None => (UserTokenPolicy::anonymous(), IdentityToken::Anonymous),
        };
        let endpoint: EndpointDescription = (
            cfg.endpoint.as_str(),
            cfg.policy.as_str(),
            cfg.mode,
            token_policy,
        )
            .into();
        let connected = client
            .connect_to_matching_endpoint(endpoint, identity)
            .await;
        let (session, event_loop) = match connected {
            Ok(x) => x,
            Err(e) => {
                sh.metrics
                    .input_failed(&format!("opcua {}: {e}", cfg.endpoint));
                tokio::select! {
                    _ = crate::service::stopped(&mut stop) => return,
                    _ = tokio::time::sleep(backoff.next_delay()) => continue,
                }
            }
        };
        let mut handle = event_loop.spawn();
        // The event loop ends (refused login, refused certificate) without the session ever
        // connecting: say why and retry later.
        let up = tokio::select! {
            _ = crate::service::stopped(&mut stop) => {
                handle.abort();
                return;
            }
            c = session.wait_for_connection() => c,
            r = &mut handle => {
                let why = match r {
                    Ok(status) => {
                        use opcua::types::StatusCode as S;
                        let hint = match status {
                            S::BadIdentityTokenRejected
                            | S::BadUserAccessDenied
                            | S::BadIdentityTokenInvalid => " (user name or password refused)",
                            S::BadCertificateUntrusted | S::BadSecurityChecksFailed => {
                                " (certificate refused: check cert_file and server_cert_file)"
                            }
                            _ => "",
                        };
                        format!("{status}{hint}")
                    }
                    Err(e) => format!("session task: {e}"),
                };
                sh.metrics
                    .input_failed(&format!("opcua {}: session refused: {why}", cfg.endpoint));
                false
            }
        };
        if !up {
            handle.abort();
            tokio::select! {
                _ = crate::service::stopped(&mut stop) => return,
                _ = tokio::time::sleep(backoff.next_delay()) => continue,
            }
        }
        sh.metrics.input_ok();
        let (tx, mut rx) = mpsc::channel::<RecordIn>(4096);
        let source = cfg.source;
        let sh_cb = sh.clone();
        let sub = session
            .create_subscription(
                cfg.interval,
                30,
                10,
                0,
                0,
                true,
                DataChangeCallback::new(move |dv, item| {
                    if tx.try_send(record(source, &dv, item)).is_err() {
                        sh_cb.metrics.input_invalid.fetch_add(1, Relaxed);
                    }
                }),
            )
            .await;
        let ok = match sub {
            Ok(id) => {
                let items: Vec<MonitoredItemCreateRequest> =
                    nodes.iter().map(|n| n.clone().into()).collect();
                session
                    .create_monitored_items(id, TimestampsToReturn::Both, items)
                    .await
                    .is_ok()
            }
            Err(_) => false,
        };
        if ok {
            backoff.reset();
            sh.metrics.input_subscriptions.fetch_add(1, Relaxed);
            loop {
                tokio::select! {
                    _ = crate::service::stopped(&mut stop) => {
                        let _ = session.disconnect().await;
                        handle.abort();
                        return;
                    }
                    r = rx.recv() => match r {
                        Some(rec) => {
                            let mut batch = vec![rec];
                            while batch.len() < 256 {
                                match rx.try_recv() {
                                    Ok(r) => batch.push(r),
                                    Err(_) => break,
                                }
                            }
                            if ingest.send(batch, None).await.is_err() {
                                return;
                            }
                        }
                        None => break,
                    },
                    _ = &mut handle => break,
                }
            }
        }
        let _ = session.disconnect().await;
        handle.abort();
        tokio::select! {
            _ = crate::service::stopped(&mut stop) => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}
