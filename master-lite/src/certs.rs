//! Certificates the master issues through its API: a computer's at enrollment, a partition's
//! for its node; and the hash under which enrollment tokens are kept.

use std::sync::Arc;

use slapos_proto::identity::{Credentials, Identity};

use crate::error::ApiError;
use crate::pki::{Ca, Issued};
use crate::state::now_ms;
use crate::store::CertificateRow;

/// Issue a client certificate for `id` (CPU work, off the runtime threads).
pub(crate) async fn issue(ca: Arc<Ca>, id: Identity) -> Result<(Issued, CertificateRow), ApiError> {
    let issued = tokio::task::spawn_blocking(move || ca.issue_client(&id))
        .await
        .map_err(|e| ApiError::Internal(format!("certificate issuing task failed: {e}")))?
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let row = CertificateRow {
        serial: issued.serial.clone(),
        identity: issued.identity.to_string(),
        kind: issued.identity.kind().to_owned(),
        issued_ms: now_ms(),
        expires_ms: issued.expires_ms,
        revoked_ms: None,
    };
    Ok((issued, row))
}

/// The answer carrying `issued`, its key and the CA.
pub(crate) fn credentials(ca: &Ca, issued: Issued) -> Credentials {
    Credentials {
        identity: issued.identity.to_string(),
        serial: issued.serial,
        cert_pem: issued.cert_pem,
        key_pem: issued.key_pem,
        ca_pem: ca.cert_pem().to_owned(),
    }
}

/// SHA-256 of an enrollment token, hex: what the database keeps.
pub fn token_hash(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}
