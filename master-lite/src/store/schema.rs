//! The SQLite schema and its numbered migrations.
//!
//! `PRAGMA user_version` holds the number of the last migration applied. Opening a database runs
//! every newer migration in order, each in its own transaction together with the version bump,
//! so a crash mid-migration leaves the file at the previous version. A file with a version newer
//! than [`MIGRATIONS`] knows is refused rather than guessed at.
//!
//! Migrations are append-only: never edit a released one, add the next number.

use std::path::Path;

use rusqlite::Connection;

use super::error::OpenError;

/// Migration `n` (1-based) is `MIGRATIONS[n - 1]`.
pub const MIGRATIONS: &[&str] = &[
    // 1: initial schema.
    r#"
    -- One global, monotonic counter. Every write transaction that changes something a node acts
    -- on takes the next value once and stamps it on the instances (revision) and computers (etag)
    -- it changed. Initialised to the creation time in ms, so a recreated database still hands out
    -- numbers above those a node may have cached from an older one.
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE computer (
        id            TEXT PRIMARY KEY,
        etag          INTEGER NOT NULL,       -- value of meta.seq at the last change
        registered_ms INTEGER NOT NULL,
        last_seen_ms  INTEGER                 -- last write call from the node
    ) WITHOUT ROWID;

    CREATE TABLE label (
        computer TEXT NOT NULL REFERENCES computer(id) ON DELETE CASCADE,
        key      TEXT NOT NULL,
        value    TEXT NOT NULL,
        PRIMARY KEY (computer, key)
    ) WITHOUT ROWID;
    CREATE INDEX label_key_value ON label(key, value);

    -- seq (the rowid) is the registration order: allocation takes the lowest free one.
    CREATE TABLE partition (
        seq       INTEGER PRIMARY KEY,
        computer  TEXT NOT NULL REFERENCES computer(id) ON DELETE CASCADE,
        id        TEXT NOT NULL,
        addresses TEXT NOT NULL DEFAULT '[]', -- JSON array of IP literals
        UNIQUE (computer, id)
    );

    -- rowid is the supply order.
    CREATE TABLE software (
        computer        TEXT NOT NULL REFERENCES computer(id) ON DELETE CASCADE,
        url             TEXT NOT NULL,
        requested       TEXT NOT NULL CHECK (requested IN ('available', 'destroyed')),
        install_state   TEXT CHECK (install_state IN ('building', 'available', 'error', 'destroyed')),
        install_message TEXT,
        install_ms      INTEGER,
        PRIMARY KEY (computer, url)
    );

    -- A row exists exactly while the instance holds a partition: freeing deletes it.
    CREATE TABLE instance (
        id            INTEGER PRIMARY KEY,
        title         TEXT NOT NULL,
        root          TEXT NOT NULL,          -- '' for a root instance, else its tree root's title
        requester     INTEGER REFERENCES instance(id) ON DELETE SET NULL,  -- direct parent
        software_url  TEXT NOT NULL,
        software_type TEXT NOT NULL,
        parameters    TEXT NOT NULL,          -- JSON object
        state         TEXT NOT NULL CHECK (state IN ('started', 'stopped', 'destroyed')),
        computer      TEXT NOT NULL,
        partition     TEXT NOT NULL,
        connection    TEXT NOT NULL DEFAULT '{}',  -- JSON object published by the node
        reported      TEXT,                   -- JSON ReportedStatus
        bang          TEXT,
        revision      INTEGER NOT NULL,
        created_ms    INTEGER NOT NULL,
        UNIQUE (root, title),
        UNIQUE (computer, partition),
        FOREIGN KEY (computer, partition) REFERENCES partition(computer, id)
    );
    CREATE INDEX instance_requester ON instance(requester);
    "#,
    // 2: what the classic SLAP format payload carries beyond the native registration: the
    // computer's address and each partition's interface/address/netmask triples (`ip_list`).
    r#"
    CREATE TABLE slap_computer (
        id      TEXT PRIMARY KEY REFERENCES computer(id) ON DELETE CASCADE,
        address TEXT,
        netmask TEXT
    ) WITHOUT ROWID;

    CREATE TABLE slap_address (
        computer  TEXT NOT NULL,
        partition TEXT NOT NULL,
        seq       INTEGER NOT NULL,          -- order in the format payload
        interface TEXT NOT NULL,
        address   TEXT NOT NULL,
        netmask   TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (computer, partition, seq),
        FOREIGN KEY (computer, partition) REFERENCES partition(computer, id) ON DELETE CASCADE
    ) WITHOUT ROWID;
    "#,
    // 3: shared ("slave") instances of the SLAP API. A shared instance is no partition of its
    // own: it lives in the `slave_instance_list` of its host instance. Keyed like slapproxy's
    // `slave.reference` = `<root>_<title>` (scope: the requester's tree). Parameters keep their
    // xml_marshaller types (stored as the marshalled dictionary), connection parameters are the
    // host's published strings (JSON object). Freed with its host.
    r#"
    CREATE TABLE slap_shared (
        root          TEXT NOT NULL,          -- requester tree's root title, '' from a user
        title         TEXT NOT NULL,
        host          INTEGER NOT NULL REFERENCES instance(id) ON DELETE CASCADE,
        requester     INTEGER REFERENCES instance(id) ON DELETE SET NULL,
        software_type TEXT NOT NULL,
        parameters    TEXT NOT NULL,          -- xml_marshaller dictionary
        connection    TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (root, title)
    );
    CREATE INDEX slap_shared_host ON slap_shared(host);
    "#,
    // 4: the parameter model a release declares (reported by the node with `available`), so
    // requests of the release are checked at request time (store::models).
    r#"
    ALTER TABLE software ADD COLUMN parameter_model TEXT;
    "#,
    // 5: identities (issue 8). The owner of a root instance (the identity that requested it,
    // `user:alice`; NULL for the local operator, SLAP clients and children); the certificates
    // the master CA issued (a request is served only for a recorded, unrevoked serial); one-time
    // enrollment tokens of computers (only their SHA-256 is kept). Freeing a partition revokes
    // the certificates issued to it, whatever route freed it.
    r#"
    ALTER TABLE instance ADD COLUMN owner TEXT;

    CREATE TABLE certificate (
        serial     TEXT PRIMARY KEY,          -- lower-case hex of the DER serial
        identity   TEXT NOT NULL,             -- subject common name: 'computer:C1', ...
        kind       TEXT NOT NULL CHECK (kind IN ('computer', 'partition', 'user', 'admin')),
        issued_ms  INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        revoked_ms INTEGER
    ) WITHOUT ROWID;
    CREATE INDEX certificate_identity ON certificate(identity);

    CREATE TABLE enroll_token (
        hash       TEXT PRIMARY KEY,          -- hex SHA-256 of the token
        computer   TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        used_ms    INTEGER
    ) WITHOUT ROWID;

    CREATE TRIGGER instance_freed_revokes AFTER DELETE ON instance
    BEGIN
        UPDATE certificate SET revoked_ms = CAST(unixepoch('subsec') * 1000 AS INTEGER)
        WHERE identity = 'partition:' || OLD.computer || '/' || OLD.partition
          AND revoked_ms IS NULL;
    END;
    "#,
    // 6: the interface a natively registered partition's addresses sit on (its TAP, else the
    // node's network interface), the first element of SlapOS's `ip_list` pairs; NULL: the
    // partition reference, as before.
    r#"
    ALTER TABLE partition ADD COLUMN interface TEXT;
    "#,
    // 7: hardening (issues 19, 21). `space_reserve` is the scratch table through which the store
    // keeps free pages for writes on a full disk (store::disk; always empty between calls).
    // `local_uid`: the unix user a partition's processes run as, recorded only when its node
    // registered over a loopback connection (same host), so that a plain-HTTP caller on that
    // host with this uid acts as that partition and nothing more (docs/identity.md).
    r#"
    CREATE TABLE space_reserve (filler BLOB);
    ALTER TABLE partition ADD COLUMN local_uid INTEGER;
    "#,
];

/// Bring `conn` to the newest schema. `now_ms` seeds the revision counter of a new database.
pub fn migrate(conn: &mut Connection, path: &Path, now_ms: u64) -> Result<(), OpenError> {
    let known = MIGRATIONS.len() as u32;
    let open_err = |source| OpenError::Open {
        path: path.to_owned(),
        source,
    };
    let full = |e: OpenError| match e {
        OpenError::Migrate { source, .. } if super::disk::is_disk_full(&source) => {
            OpenError::DiskFull {
                path: path.to_owned(),
            }
        }
        other => other,
    };
    let found: u32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(open_err)?;
    if found > known {
        return Err(OpenError::SchemaTooNew {
            path: path.to_owned(),
            found,
            known,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = i as u32 + 1;
        let mig_err = |source| OpenError::Migrate {
            path: path.to_owned(),
            version,
            source,
        };
        let tx = conn.transaction().map_err(mig_err).map_err(full)?;
        tx.execute_batch(sql).map_err(mig_err).map_err(full)?;
        if version == 1 {
            let seed = i64::try_from(now_ms).unwrap_or(i64::MAX / 2);
            tx.execute("INSERT INTO meta (key, value) VALUES ('seq', ?1)", [seed])
                .map_err(mig_err)?;
        }
        tx.pragma_update(None, "user_version", version)
            .map_err(mig_err)?;
        tx.commit().map_err(mig_err).map_err(full)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_a_new_database_once() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, Path::new(":memory:"), 1000).unwrap();
        let v: u32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v as usize, MIGRATIONS.len());
        // A second run is a no-op and keeps the counter.
        migrate(&mut conn, Path::new(":memory:"), 5000).unwrap();
        let seq: i64 = conn
            .query_row("SELECT value FROM meta WHERE key = 'seq'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(seq, 1000);
    }

    #[test]
    fn refuses_a_newer_schema() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        let err = migrate(&mut conn, Path::new("x.db"), 0).unwrap_err();
        assert!(
            matches!(err, OpenError::SchemaTooNew { found: 99, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("x.db"), "{err}");
    }
}
