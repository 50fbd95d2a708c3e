//! Identities in the store (migration 5): issued certificates and their revocation, one-time
//! enrollment tokens, and the owners of root instances.

use super::sql::{OptionalExtension, params};
use slapos_proto::{ComputerId, InstanceInfo, InstanceTitle, PartitionRef};

use super::error::{DbContext, StoreError};
use super::{Result, Store, decode, ms};

/// One row of the `certificate` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRow {
    /// Serial, lower-case hex.
    pub serial: String,
    /// Subject common name (`computer:C1`, …).
    pub identity: String,
    /// `computer`, `partition`, `user` or `admin`.
    pub kind: String,
    /// Issue time, Unix ms.
    pub issued_ms: u64,
    /// Not-after time, Unix ms.
    pub expires_ms: u64,
    /// Revocation time, Unix ms.
    pub revoked_ms: Option<u64>,
}

/// What a redeemed enrollment token was for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolled {
    /// The computer the token enrolls.
    pub computer: ComputerId,
}

fn cert_row(r: &super::sql::Row) -> super::sql::SqlResult<CertificateRow> {
    Ok(CertificateRow {
        serial: r.get(0)?,
        identity: r.get(1)?,
        kind: r.get(2)?,
        issued_ms: r.get::<i64>(3)? as u64,
        expires_ms: r.get::<i64>(4)? as u64,
        revoked_ms: r.get::<Option<i64>>(5)?.map(|v| v as u64),
    })
}

const CERT_COLUMNS: &str = "serial, identity, kind, issued_ms, expires_ms, revoked_ms";

impl Store {
    /// Record a certificate the CA issued.
    pub fn record_certificate(&mut self, row: &CertificateRow) -> Result<()> {
        let tx = self.write()?;
        insert_certificate(&tx, row)?;
        tx.commit()
    }

    /// The certificate with this serial, if the CA issued it.
    pub fn certificate(&mut self, serial: &str) -> Result<Option<CertificateRow>> {
        let tx = self.read()?;
        tx.q_row(
            &format!("SELECT {CERT_COLUMNS} FROM certificate WHERE serial = ?1"),
            [serial],
            cert_row,
        )
        .optional()
        .op("look up a certificate")
    }

    /// Every recorded certificate, by identity then issue time.
    pub fn certificates(&mut self) -> Result<Vec<CertificateRow>> {
        let tx = self.read()?;
        super::rows(
            &tx,
            "list certificates",
            &format!("SELECT {CERT_COLUMNS} FROM certificate ORDER BY identity, issued_ms"),
            [],
            cert_row,
        )
    }

    /// Revoke one certificate by serial; unknown serial → 404. Revoking twice keeps the first
    /// time.
    pub fn revoke_serial(&mut self, serial: &str, now_ms: u64) -> Result<CertificateRow> {
        let tx = self.write()?;
        let n = tx
            .exec(
                "UPDATE certificate SET revoked_ms = coalesce(revoked_ms, ?2) WHERE serial = ?1",
                params![serial, ms(now_ms)],
            )
            .op("revoke a certificate")?;
        if n == 0 {
            return Err(StoreError::NotFound(format!(
                "no certificate with serial {serial}"
            )));
        }
        let row = tx
            .q_row(
                &format!("SELECT {CERT_COLUMNS} FROM certificate WHERE serial = ?1"),
                [serial],
                cert_row,
            )
            .op("read a revoked certificate")?;
        tx.commit()?;
        Ok(row)
    }

    /// Revoke every unrevoked certificate of `identity`; returns their serials.
    pub fn revoke_identity(&mut self, identity: &str, now_ms: u64) -> Result<Vec<String>> {
        let tx = self.write()?;
        let serials = super::titles(
            &tx,
            "SELECT serial FROM certificate WHERE identity = ?1 AND revoked_ms IS NULL
             ORDER BY issued_ms",
            [identity],
        )?;
        tx.exec(
            "UPDATE certificate SET revoked_ms = ?2 WHERE identity = ?1 AND revoked_ms IS NULL",
            params![identity, ms(now_ms)],
        )
        .op("revoke certificates")?;
        tx.commit()?;
        Ok(serials)
    }

    /// Store a one-time enrollment token (its SHA-256, hex) for computer `c`.
    pub fn create_token(
        &mut self,
        hash: &str,
        c: &ComputerId,
        now_ms: u64,
        expires_ms: u64,
    ) -> Result<()> {
        let tx = self.write()?;
        tx.exec(
            "INSERT INTO enroll_token (hash, computer, created_ms, expires_ms)
             VALUES (?1, ?2, ?3, ?4)",
            params![hash, c.as_str(), ms(now_ms), ms(expires_ms)],
        )
        .op("store an enrollment token")?;
        tx.commit()
    }

    /// Which computer the token with this hash enrolls, if it is known, unused and unexpired:
    /// a read, so a refused enrollment issues nothing.
    pub fn check_token(&mut self, hash: &str, now_ms: u64) -> Result<Enrolled> {
        let tx = self.read()?;
        token(&tx, hash, now_ms)
    }

    /// Redeem a token: mark it used and record the computer's certificate `cert`, in one
    /// transaction. A token already used or expired is a 403 and records nothing.
    pub fn redeem_token(
        &mut self,
        hash: &str,
        cert: &CertificateRow,
        now_ms: u64,
    ) -> Result<Enrolled> {
        let tx = self.write()?;
        let enrolled = token(&tx, hash, now_ms)?;
        if cert.identity != format!("computer:{}", enrolled.computer) {
            return Err(StoreError::Internal(format!(
                "certificate {} is not for computer {}",
                cert.identity, enrolled.computer
            )));
        }
        tx.exec(
            "UPDATE enroll_token SET used_ms = ?2 WHERE hash = ?1",
            params![hash, ms(now_ms)],
        )
        .op("use an enrollment token")?;
        insert_certificate(&tx, cert)?;
        tx.commit()?;
        Ok(enrolled)
    }

    /// The owner of root instance `title`: `None` when no such root exists, `Some(None)` when it
    /// exists without an owner.
    pub fn root_owner(&mut self, title: &InstanceTitle) -> Result<Option<Option<String>>> {
        let tx = self.read()?;
        let local = tx
            .q_row(
                "SELECT owner FROM instance WHERE root = '' AND title = ?1",
                [title.as_str()],
                |r| r.get(0),
            )
            .optional()
            .op("look up the owner of a root instance")?;
        match local {
            Some(owner) => Ok(Some(owner)),
            None => super::federation::delegation_owner(&tx, title.as_str()),
        }
    }

    /// One instance (as [`Store::instance`]) with the owner of its tree.
    pub fn instance_owned(
        &mut self,
        title: &InstanceTitle,
        root: Option<&InstanceTitle>,
    ) -> Result<(InstanceInfo, Option<String>)> {
        let tx = self.read()?;
        let root = root.map(InstanceTitle::as_str).unwrap_or("");
        let info = super::instance_or_shared(&tx, title.as_str(), root)?;
        let owner = match tree_owner(&tx, info.root_title.as_str())? {
            Some(o) => Some(o),
            None => super::federation::delegation_owner(&tx, info.root_title.as_str())?.flatten(),
        };
        Ok((info, owner))
    }

    /// Every instance (as [`Store::instances`]) with the owner of its tree.
    pub fn instances_owned(&mut self) -> Result<Vec<(InstanceInfo, Option<String>)>> {
        let list = self.instances()?;
        let tx = self.read()?;
        let owners: std::collections::HashMap<String, Option<String>> = super::rows(
            &tx,
            "list root owners",
            "SELECT title, owner FROM instance WHERE root = ''",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?
        .into_iter()
        .collect();
        drop(tx);
        let mut out: Vec<_> = list
            .into_iter()
            .map(|i| {
                let o = owners.get(i.root_title.as_str()).cloned().flatten();
                (i, o)
            })
            .collect();
        out.extend(self.delegations()?);
        Ok(out)
    }

    /// The partition whose processes run as local `uid` (recorded by [`Store::register_with`]
    /// from a node on this host), if any.
    pub fn partition_of_local_uid(&mut self, uid: u32) -> Result<Option<PartitionRef>> {
        let tx = self.read()?;
        let found: Option<(String, String)> = tx
            .q_row(LOCAL_UID_PARTITION, [uid], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .op("look up the partition of a local user")?;
        found
            .map(|(c, p)| {
                PartitionRef::parse(&format!("{c}/{p}"))
                    .map_err(|e| StoreError::Internal(format!("stored partition {c}/{p}: {e}")))
            })
            .transpose()
    }

    /// Whether partition `c/p` holds an instance (404 when the partition is unknown).
    pub fn partition_allocated(
        &mut self,
        c: &ComputerId,
        p: &slapos_proto::PartitionId,
    ) -> Result<bool> {
        let tx = self.read()?;
        super::require_partition(&tx, c.as_str(), p.as_str())?;
        Ok(super::instance_on(&tx, c.as_str(), p.as_str())?.is_some())
    }
}

fn tree_owner(tx: &super::sql::Transaction<'_>, root: &str) -> Result<Option<String>> {
    Ok(tx
        .q_row(
            "SELECT owner FROM instance WHERE root = '' AND title = ?1",
            [root],
            |r| r.get::<Option<String>>(0),
        )
        .optional()
        .op("look up the owner of a tree")?
        .flatten())
}

fn token(tx: &super::sql::Transaction<'_>, hash: &str, now_ms: u64) -> Result<Enrolled> {
    let row: Option<(String, i64, Option<i64>)> = tx
        .q_row(
            "SELECT computer, expires_ms, used_ms FROM enroll_token WHERE hash = ?1",
            [hash],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .op("look up an enrollment token")?;
    let Some((computer, expires, used)) = row else {
        return Err(StoreError::Forbidden("unknown enrollment token".into()));
    };
    if used.is_some() {
        return Err(StoreError::Forbidden(format!(
            "this enrollment token (computer {computer}) was already used"
        )));
    }
    if expires <= ms(now_ms) {
        return Err(StoreError::Forbidden(format!(
            "this enrollment token (computer {computer}) has expired"
        )));
    }
    Ok(Enrolled {
        computer: decode(&computer)?,
    })
}

fn insert_certificate(tx: &super::sql::Transaction<'_>, row: &CertificateRow) -> Result<()> {
    tx.exec(
        "INSERT INTO certificate (serial, identity, kind, issued_ms, expires_ms, revoked_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            row.serial,
            row.identity,
            row.kind,
            ms(row.issued_ms),
            ms(row.expires_ms),
            row.revoked_ms.map(ms)
        ],
    )
    .op("record a certificate")?;
    Ok(())
}

/// The partition whose processes run as local uid `?1` (by the `partition_local_uid` index).
pub(super) const LOCAL_UID_PARTITION: &str =
    "SELECT computer, id FROM partition WHERE local_uid = ?1";
