//! The operator's commands on the master's own files (`slapos-master token|user|cert …`): they
//! run on the master's host, next to a serving master (SQLite WAL, busy timeout), and work on
//! the database and the CA directly. `main.rs` only parses their arguments and prints.

use std::path::{Path, PathBuf};

use slapos_proto::ComputerId;
use slapos_proto::identity::{Identity, IdentityError, Name};

use crate::certs::token_hash;
use crate::pki::{self, Ca, PkiError};
use crate::state::now_ms;
use crate::store::{CertificateRow, DbUrl, OpenError, Store, StoreError};

/// An operator command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The database could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The database refused the change.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The CA or a credential file failed.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// A name or identity is invalid.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// Nothing to revoke for this identity.
    #[error("{0} has no unrevoked certificate")]
    NothingToRevoke(Identity),
    /// A directory for the credentials could not be created.
    #[error("failed to create {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// `token create`: a one-time enrollment token for `computer`, valid `ttl_secs`; only its hash
/// is stored. Returns the token (to print once).
pub fn create_token(
    db: &DbUrl,
    computer: &ComputerId,
    ttl_secs: u64,
) -> Result<String, AdminError> {
    let token = hex::encode(pki::random_bytes(32)?);
    let now = now_ms();
    let mut store = Store::open_url(db, now)?;
    let expires = now.saturating_add(ttl_secs.saturating_mul(1000));
    store.create_token(&token_hash(&token), computer, now, expires)?;
    Ok(token)
}

/// What `user create` wrote.
#[derive(Debug, Clone)]
pub struct UserCreated {
    /// `user:<name>` or `admin:<name>`.
    pub identity: Identity,
    /// The certificate's serial.
    pub serial: String,
}

/// `user create`: a certificate for `user:<name>` (or `admin:<name>`) issued by the CA in
/// `tls_dir` (created the first time), recorded in the database, written to `out/<name>.key`
/// (0600), `out/<name>.pem` and `out/ca.pem`.
pub fn create_user(
    db: &DbUrl,
    tls_dir: &Path,
    name: &str,
    admin: bool,
    out: &Path,
) -> Result<UserCreated, AdminError> {
    let n: Name = name.parse()?;
    let id = if admin {
        Identity::Admin(n)
    } else {
        Identity::User(n)
    };
    let ca = Ca::open(tls_dir)?;
    let issued = ca.issue_client(&id)?;
    let now = now_ms();
    let mut store = Store::open_url(db, now)?;
    std::fs::create_dir_all(out).map_err(|source| AdminError::Io {
        path: out.to_owned(),
        source,
    })?;
    pki::write_new(
        &out.join(format!("{name}.key")),
        issued.key_pem.as_bytes(),
        0o600,
    )?;
    pki::write_new(
        &out.join(format!("{name}.pem")),
        issued.cert_pem.as_bytes(),
        0o644,
    )?;
    let ca_path = out.join("ca.pem");
    if !ca_path.exists() {
        pki::write_new(&ca_path, ca.cert_pem().as_bytes(), 0o644)?;
    }
    store.record_certificate(&CertificateRow {
        serial: issued.serial.clone(),
        identity: id.to_string(),
        kind: id.kind().to_owned(),
        issued_ms: now,
        expires_ms: issued.expires_ms,
        revoked_ms: None,
    })?;
    Ok(UserCreated {
        identity: id,
        serial: issued.serial,
    })
}

/// `cert revoke SERIAL`: the revoked certificate.
pub fn revoke_serial(db: &DbUrl, serial: &str) -> Result<CertificateRow, AdminError> {
    let now = now_ms();
    let mut store = Store::open_url(db, now)?;
    Ok(store.revoke_serial(&serial.to_ascii_lowercase(), now)?)
}

/// `cert revoke --identity ID`: the serials revoked (at least one).
pub fn revoke_identity(db: &DbUrl, identity: &str) -> Result<(Identity, Vec<String>), AdminError> {
    let id = Identity::parse_cn(identity)?;
    let now = now_ms();
    let mut store = Store::open_url(db, now)?;
    let serials = store.revoke_identity(&id.to_string(), now)?;
    if serials.is_empty() {
        return Err(AdminError::NothingToRevoke(id));
    }
    Ok((id, serials))
}

/// `cert list`: every certificate issued.
pub fn certificates(db: &DbUrl) -> Result<Vec<CertificateRow>, AdminError> {
    Ok(Store::open_url(db, now_ms())?.certificates()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_tokens_and_revocations_on_the_master_files() {
        let d = tempfile::tempdir().unwrap();
        let (db, tls, out) = (
            DbUrl::Sqlite(d.path().join("m.db")),
            d.path().join("tls"),
            d.path().join("out"),
        );
        let made = create_user(&db, &tls, "ops", true, &out).unwrap();
        assert_eq!(made.identity.to_string(), "admin:ops");
        for f in ["ops.key", "ops.pem", "ca.pem"] {
            assert!(out.join(f).is_file(), "{f}");
        }
        assert!(create_user(&db, &tls, "bad name", false, &out).is_err());
        let token = create_token(&db, &ComputerId::parse("C1").unwrap(), 60).unwrap();
        assert_eq!(token.len(), 64);
        assert_eq!(certificates(&db).unwrap().len(), 1);
        let (id, serials) = revoke_identity(&db, "admin:ops").unwrap();
        assert_eq!((id.to_string(), serials.len()), ("admin:ops".into(), 1));
        assert!(matches!(
            revoke_identity(&db, "admin:ops"),
            Err(AdminError::NothingToRevoke(_))
        ));
        let row = revoke_serial(&db, &made.serial.to_uppercase()).unwrap();
        assert_eq!(row.serial, made.serial, "serials match whatever their case");
        assert!(row.revoked_ms.is_some());
        assert!(revoke_serial(&db, "00ff").is_err(), "an unknown serial");
    }
}
