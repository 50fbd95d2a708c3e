//! The schema and its numbered migrations, for SQLite and PostgreSQL from one list.
//!
//! Migration `n` exists for both engines ([`MIGRATIONS`] holds SQLite's text,
//! [`PG_MIGRATIONS`] PostgreSQL's, same numbers, same tables and columns). On SQLite
//! `PRAGMA user_version` holds the number of the last migration applied; on PostgreSQL the
//! one-row table `schema_version` does, and migrations run under `pg_advisory_lock`
//! ([`PG_MIGRATION_LOCK`]) so that N replicas starting together migrate once and the others
//! find the work done. Opening a database runs every newer migration in order, each in its own
//! transaction together with the version bump, so a crash mid-migration leaves the database at
//! the previous version. A version newer than this build knows is refused rather than guessed
//! at.
//!
//! The PostgreSQL dialect: every integer is `BIGINT` (the store binds 64-bit integers),
//! `INTEGER PRIMARY KEY` becomes an identity column, the supply orders that SQLite keeps in the
//! implicit `rowid` are an explicit identity column named `rowid`, text keys compare bytewise
//! (`COLLATE "C"`, as SQLite does), blobs are `BYTEA`, the trigger is a PL/pgSQL function, and
//! the revision counter is the sequence `revision_seq` (a row updated by every write would
//! make every two concurrent serializable transactions conflict).
//!
//! Migrations are append-only: never edit a released one, add the next number to both lists.

use std::path::Path;

use rusqlite::Connection;

use super::error::OpenError;
use super::sql::SqlError;

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
    // 8: usage samples posted by nodes (issue 14, store::usage): one row per partition and
    // period, keyed so that a batch sent again is stored once. `root` and `owner` are the
    // instance's tree and its owner when the sample arrived (NULL: free partition, unknown
    // instance, or the local operator's tree).
    r#"
    CREATE TABLE usage_sample (
        computer          TEXT NOT NULL,
        partition         TEXT NOT NULL,
        start_ms          INTEGER NOT NULL,
        end_ms            INTEGER NOT NULL,
        instance          TEXT,
        root              TEXT,
        owner             TEXT,
        cpu_ns            INTEGER NOT NULL,
        memory_bytes      INTEGER NOT NULL,
        memory_peak_bytes INTEGER NOT NULL,
        io_read_bytes     INTEGER NOT NULL,
        io_write_bytes    INTEGER NOT NULL,
        disk_bytes        INTEGER NOT NULL,
        tasks             INTEGER NOT NULL,
        folded            INTEGER NOT NULL,
        received_ms       INTEGER NOT NULL,
        PRIMARY KEY (computer, partition, start_ms)
    ) WITHOUT ROWID;
    CREATE INDEX usage_sample_end ON usage_sample(end_ms);
    "#,
    // 9: running usage totals per computer, kept with each stored sample, so that `/metrics`
    // reads one row per computer instead of summing every sample ever stored.
    r#"
    CREATE TABLE usage_total (
        computer       TEXT PRIMARY KEY,
        cpu_ns         REAL NOT NULL,
        memory_byte_ms REAL NOT NULL,
        disk_byte_ms   REAL NOT NULL,
        io_read_bytes  REAL NOT NULL,
        io_write_bytes REAL NOT NULL,
        samples        INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO usage_total
        SELECT computer, SUM(CAST(cpu_ns AS REAL)),
               SUM(CAST(memory_bytes AS REAL) * (end_ms - start_ms)),
               SUM(CAST(disk_bytes AS REAL) * (end_ms - start_ms)),
               SUM(CAST(io_read_bytes AS REAL)), SUM(CAST(io_write_bytes AS REAL)), SUM(folded)
        FROM usage_sample GROUP BY computer;
    "#,
    // 10: federation (issue 15, crate::federation): a request delegated to another master
    // instead of allocated here. Keyed like an instance (`root`, `title`), so a request is
    // idempotent by title whether it is local or delegated. `revision` takes the next value of
    // the counter at each change to forward; `forwarded` is the revision the remote last
    // accepted; `connection` what the remote answered; `status` the line users see.
    r#"
    CREATE TABLE delegation (
        root            TEXT NOT NULL,
        title           TEXT NOT NULL,
        requester       TEXT,                 -- computer/partition of the requesting instance
        requester_id    INTEGER,              -- its instance id (NULL from a user)
        owner           TEXT,
        remote          TEXT NOT NULL,        -- the remote master's URL
        remote_title    TEXT NOT NULL,
        software_url    TEXT NOT NULL,
        software_type   TEXT NOT NULL,
        parameters      TEXT NOT NULL,        -- JSON object
        sla             TEXT NOT NULL,        -- JSON object, without the master keys
        shared          INTEGER NOT NULL DEFAULT 0,
        state           TEXT NOT NULL CHECK (state IN ('started', 'stopped', 'destroyed')),
        revision        INTEGER NOT NULL,
        forwarded       INTEGER NOT NULL DEFAULT 0,
        connection      TEXT NOT NULL DEFAULT '{}',
        status          TEXT NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_ms         INTEGER NOT NULL DEFAULT 0,
        created_ms      INTEGER NOT NULL,
        PRIMARY KEY (root, title)
    );
    CREATE INDEX delegation_next ON delegation(next_ms);
    "#,
    // 11: every new request looks up its release's parameter model by URL; without this index
    // that was a scan of one `software` row per computer and release (65 us per request at 2,000
    // computers, growing with the fleet). And allocation takes the lowest free partition by
    // `seq`: `partition.busy`, kept by triggers on `instance` whatever statement adds, removes
    // or moves an instance, lets it read the first entry of an index of the free partitions
    // instead of checking every partition of the computer for an instance (1,126 partitions,
    // 500 busy: 238 us). The allocation still checks that no instance holds the partition.
    r#"
    CREATE INDEX software_url_model ON software(url) WHERE parameter_model IS NOT NULL;
    ALTER TABLE partition ADD COLUMN busy INTEGER NOT NULL DEFAULT 0;
    UPDATE partition SET busy = 1 WHERE EXISTS (SELECT 1 FROM instance i
        WHERE i.computer = partition.computer AND i.partition = partition.id);
    CREATE INDEX partition_free ON partition(computer, seq) WHERE busy = 0;
    CREATE INDEX partition_free_seq ON partition(seq) WHERE busy = 0;
    CREATE TRIGGER instance_takes_partition AFTER INSERT ON instance BEGIN
        UPDATE partition SET busy = 1 WHERE computer = NEW.computer AND id = NEW.partition;
    END;
    CREATE TRIGGER instance_frees_partition AFTER DELETE ON instance BEGIN
        UPDATE partition SET busy = 0 WHERE computer = OLD.computer AND id = OLD.partition;
    END;
    CREATE TRIGGER instance_moves_partition AFTER UPDATE OF computer, partition ON instance BEGIN
        UPDATE partition SET busy = 0 WHERE computer = OLD.computer AND id = OLD.partition;
        UPDATE partition SET busy = 1 WHERE computer = NEW.computer AND id = NEW.partition;
    END;
    "#,
    // 12: a plain-HTTP caller on this host is looked up by its uid (middleware, on every such
    // request): by index, not a scan of every partition of the fleet.
    r#"
    CREATE INDEX partition_local_uid ON partition(local_uid) WHERE local_uid IS NOT NULL;
    "#,
];

/// Migration `n` (1-based) on PostgreSQL is `PG_MIGRATIONS[n - 1]`; `CTEXT` stands for
/// `TEXT COLLATE "C"`.
pub const PG_MIGRATIONS: &[&str] = &[
    // 1
    r#"
    CREATE SEQUENCE revision_seq;
    CREATE TABLE meta (
        key   CTEXT PRIMARY KEY,
        value BIGINT NOT NULL
    );
    CREATE TABLE computer (
        id            CTEXT PRIMARY KEY,
        etag          BIGINT NOT NULL,
        registered_ms BIGINT NOT NULL,
        last_seen_ms  BIGINT
    );
    CREATE TABLE label (
        computer CTEXT NOT NULL REFERENCES computer(id) ON DELETE CASCADE,
        key      CTEXT NOT NULL,
        value    CTEXT NOT NULL,
        PRIMARY KEY (computer, key)
    );
    CREATE INDEX label_key_value ON label(key, value);
    CREATE TABLE partition (
        seq       BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        computer  CTEXT NOT NULL REFERENCES computer(id) ON DELETE CASCADE,
        id        CTEXT NOT NULL,
        addresses CTEXT NOT NULL DEFAULT '[]',
        UNIQUE (computer, id)
    );
    CREATE TABLE software (
        rowid           BIGINT GENERATED BY DEFAULT AS IDENTITY UNIQUE,
        computer        CTEXT NOT NULL REFERENCES computer(id) ON DELETE CASCADE,
        url             CTEXT NOT NULL,
        requested       CTEXT NOT NULL CHECK (requested IN ('available', 'destroyed')),
        install_state   CTEXT CHECK (install_state IN ('building', 'available', 'error', 'destroyed')),
        install_message CTEXT,
        install_ms      BIGINT,
        PRIMARY KEY (computer, url)
    );
    CREATE TABLE instance (
        id            BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        title         CTEXT NOT NULL,
        root          CTEXT NOT NULL,
        requester     BIGINT REFERENCES instance(id) ON DELETE SET NULL,
        software_url  CTEXT NOT NULL,
        software_type CTEXT NOT NULL,
        parameters    CTEXT NOT NULL,
        state         CTEXT NOT NULL CHECK (state IN ('started', 'stopped', 'destroyed')),
        computer      CTEXT NOT NULL,
        partition     CTEXT NOT NULL,
        connection    CTEXT NOT NULL DEFAULT '{}',
        reported      CTEXT,
        bang          CTEXT,
        revision      BIGINT NOT NULL,
        created_ms    BIGINT NOT NULL,
        UNIQUE (root, title),
        UNIQUE (computer, partition),
        FOREIGN KEY (computer, partition) REFERENCES partition(computer, id)
    );
    CREATE INDEX instance_requester ON instance(requester);
    "#,
    // 2
    r#"
    CREATE TABLE slap_computer (
        id      CTEXT PRIMARY KEY REFERENCES computer(id) ON DELETE CASCADE,
        address CTEXT,
        netmask CTEXT
    );
    CREATE TABLE slap_address (
        computer  CTEXT NOT NULL,
        partition CTEXT NOT NULL,
        seq       BIGINT NOT NULL,
        interface CTEXT NOT NULL,
        address   CTEXT NOT NULL,
        netmask   CTEXT NOT NULL DEFAULT '',
        PRIMARY KEY (computer, partition, seq),
        FOREIGN KEY (computer, partition) REFERENCES partition(computer, id) ON DELETE CASCADE
    );
    "#,
    // 3
    r#"
    CREATE TABLE slap_shared (
        rowid         BIGINT GENERATED BY DEFAULT AS IDENTITY UNIQUE,
        root          CTEXT NOT NULL,
        title         CTEXT NOT NULL,
        host          BIGINT NOT NULL REFERENCES instance(id) ON DELETE CASCADE,
        requester     BIGINT REFERENCES instance(id) ON DELETE SET NULL,
        software_type CTEXT NOT NULL,
        parameters    CTEXT NOT NULL,
        connection    CTEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (root, title)
    );
    CREATE INDEX slap_shared_host ON slap_shared(host);
    "#,
    // 4
    r#"
    ALTER TABLE software ADD COLUMN parameter_model CTEXT;
    "#,
    // 5
    r#"
    ALTER TABLE instance ADD COLUMN owner CTEXT;
    CREATE TABLE certificate (
        serial     CTEXT PRIMARY KEY,
        identity   CTEXT NOT NULL,
        kind       CTEXT NOT NULL CHECK (kind IN ('computer', 'partition', 'user', 'admin')),
        issued_ms  BIGINT NOT NULL,
        expires_ms BIGINT NOT NULL,
        revoked_ms BIGINT
    );
    CREATE INDEX certificate_identity ON certificate(identity);
    CREATE TABLE enroll_token (
        hash       CTEXT PRIMARY KEY,
        computer   CTEXT NOT NULL,
        created_ms BIGINT NOT NULL,
        expires_ms BIGINT NOT NULL,
        used_ms    BIGINT
    );
    CREATE FUNCTION instance_freed_revokes() RETURNS trigger LANGUAGE plpgsql AS $f$
    BEGIN
        UPDATE certificate
           SET revoked_ms = (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT
         WHERE identity = 'partition:' || OLD.computer || '/' || OLD.partition
           AND revoked_ms IS NULL;
        RETURN OLD;
    END
    $f$;
    CREATE TRIGGER instance_freed_revokes AFTER DELETE ON instance
        FOR EACH ROW EXECUTE FUNCTION instance_freed_revokes();
    "#,
    // 6
    r#"
    ALTER TABLE partition ADD COLUMN interface CTEXT;
    "#,
    // 7 (the space reserve is SQLite's; the table exists so both schemas list the same tables)
    r#"
    CREATE TABLE space_reserve (filler BYTEA);
    ALTER TABLE partition ADD COLUMN local_uid BIGINT;
    "#,
    // 8
    r#"
    CREATE TABLE usage_sample (
        computer          CTEXT NOT NULL,
        partition         CTEXT NOT NULL,
        start_ms          BIGINT NOT NULL,
        end_ms            BIGINT NOT NULL,
        instance          CTEXT,
        root              CTEXT,
        owner             CTEXT,
        cpu_ns            BIGINT NOT NULL,
        memory_bytes      BIGINT NOT NULL,
        memory_peak_bytes BIGINT NOT NULL,
        io_read_bytes     BIGINT NOT NULL,
        io_write_bytes    BIGINT NOT NULL,
        disk_bytes        BIGINT NOT NULL,
        tasks             BIGINT NOT NULL,
        folded            BIGINT NOT NULL,
        received_ms       BIGINT NOT NULL,
        PRIMARY KEY (computer, partition, start_ms)
    );
    CREATE INDEX usage_sample_end ON usage_sample(end_ms);
    "#,
    // 9
    r#"
    CREATE TABLE usage_total (
        computer       CTEXT PRIMARY KEY,
        cpu_ns         DOUBLE PRECISION NOT NULL,
        memory_byte_ms DOUBLE PRECISION NOT NULL,
        disk_byte_ms   DOUBLE PRECISION NOT NULL,
        io_read_bytes  DOUBLE PRECISION NOT NULL,
        io_write_bytes DOUBLE PRECISION NOT NULL,
        samples        BIGINT NOT NULL
    );
    INSERT INTO usage_total
        SELECT computer, SUM(CAST(cpu_ns AS DOUBLE PRECISION)),
               SUM(CAST(memory_bytes AS DOUBLE PRECISION) * (end_ms - start_ms)),
               SUM(CAST(disk_bytes AS DOUBLE PRECISION) * (end_ms - start_ms)),
               SUM(CAST(io_read_bytes AS DOUBLE PRECISION)),
               SUM(CAST(io_write_bytes AS DOUBLE PRECISION)), SUM(folded)
        FROM usage_sample GROUP BY computer;
    "#,
    // 10
    r#"
    CREATE TABLE delegation (
        root            CTEXT NOT NULL,
        title           CTEXT NOT NULL,
        requester       CTEXT,
        requester_id    BIGINT,
        owner           CTEXT,
        remote          CTEXT NOT NULL,
        remote_title    CTEXT NOT NULL,
        software_url    CTEXT NOT NULL,
        software_type   CTEXT NOT NULL,
        parameters      TEXT NOT NULL,
        sla             TEXT NOT NULL,
        shared          BIGINT NOT NULL DEFAULT 0,
        state           CTEXT NOT NULL CHECK (state IN ('started', 'stopped', 'destroyed')),
        revision        BIGINT NOT NULL,
        forwarded       BIGINT NOT NULL DEFAULT 0,
        connection      TEXT NOT NULL DEFAULT '{}',
        status          TEXT NOT NULL,
        attempts        BIGINT NOT NULL DEFAULT 0,
        next_ms         BIGINT NOT NULL DEFAULT 0,
        created_ms      BIGINT NOT NULL,
        PRIMARY KEY (root, title)
    );
    CREATE INDEX delegation_next ON delegation(next_ms);
    "#,
    // 11
    r#"
    CREATE INDEX software_url_model ON software(url) WHERE parameter_model IS NOT NULL;
    ALTER TABLE partition ADD COLUMN busy BIGINT NOT NULL DEFAULT 0;
    UPDATE partition p SET busy = 1 WHERE EXISTS (SELECT 1 FROM instance i
        WHERE i.computer = p.computer AND i.partition = p.id);
    CREATE INDEX partition_free ON partition(computer, seq) WHERE busy = 0;
    CREATE INDEX partition_free_seq ON partition(seq) WHERE busy = 0;
    CREATE FUNCTION instance_partition_busy() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP <> 'INSERT' THEN
            UPDATE partition SET busy = 0 WHERE computer = OLD.computer AND id = OLD.partition;
        END IF;
        IF TG_OP <> 'DELETE' THEN
            UPDATE partition SET busy = 1 WHERE computer = NEW.computer AND id = NEW.partition;
        END IF;
        RETURN NULL;
    END $$;
    CREATE TRIGGER instance_partition_busy
        AFTER INSERT OR DELETE OR UPDATE OF computer, partition ON instance
        FOR EACH ROW EXECUTE FUNCTION instance_partition_busy();
    "#,
    // 12
    r#"
    CREATE INDEX partition_local_uid ON partition(local_uid) WHERE local_uid IS NOT NULL;
    "#,
];

/// The advisory lock key under which replicas migrate a PostgreSQL database ("slapos" in ASCII).
pub const PG_MIGRATION_LOCK: i64 = 0x736c_6170_6f73;

/// Bring a PostgreSQL database to the newest schema, once across replicas starting together.
/// `now_ms` seeds the revision sequence of a new database.
pub fn migrate_pg(client: &mut postgres::Client, url: &str, now_ms: u64) -> Result<(), OpenError> {
    assert_eq!(MIGRATIONS.len(), PG_MIGRATIONS.len(), "one list per engine");
    let known = PG_MIGRATIONS.len() as u32;
    let open_err = |source: postgres::Error| OpenError::Postgres {
        url: super::redact(url),
        source,
    };
    client
        .execute("SELECT pg_advisory_lock($1)", &[&PG_MIGRATION_LOCK])
        .map_err(open_err)?;
    let run = |client: &mut postgres::Client| -> Result<(), OpenError> {
        client
            .batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
            .map_err(open_err)?;
        let found: i64 = client
            .query_opt("SELECT version FROM schema_version", &[])
            .map_err(open_err)?
            .map(|r| r.get(0))
            .unwrap_or(0);
        let found = u32::try_from(found).unwrap_or(u32::MAX);
        if found > known {
            return Err(OpenError::SchemaTooNew {
                path: super::redact(url).into(),
                found,
                known,
            });
        }
        for (i, sql) in PG_MIGRATIONS.iter().enumerate().skip(found as usize) {
            let version = i as u32 + 1;
            let mig_err = |source: postgres::Error| OpenError::Migrate {
                path: super::redact(url).into(),
                version,
                source: SqlError::Pg(source),
            };
            let mut tx = client.transaction().map_err(mig_err)?;
            tx.batch_execute(&sql.replace("CTEXT", "TEXT COLLATE \"C\""))
                .map_err(mig_err)?;
            if version == 1 {
                let seed = i64::try_from(now_ms).unwrap_or(i64::MAX / 2);
                tx.execute("SELECT setval('revision_seq', $1)", &[&seed])
                    .map_err(mig_err)?;
                tx.execute("INSERT INTO schema_version (version) VALUES (0)", &[])
                    .map_err(mig_err)?;
            }
            tx.execute(
                "UPDATE schema_version SET version = $1",
                &[&i64::from(version)],
            )
            .map_err(mig_err)?;
            tx.commit().map_err(mig_err)?;
        }
        Ok(())
    };
    let r = run(client);
    let unlock = client.execute("SELECT pg_advisory_unlock($1)", &[&PG_MIGRATION_LOCK]);
    r?;
    unlock.map_err(open_err)?;
    Ok(())
}

/// Bring `conn` to the newest schema. `now_ms` seeds the revision counter of a new database.
pub fn migrate(conn: &mut Connection, path: &Path, now_ms: u64) -> Result<(), OpenError> {
    let known = MIGRATIONS.len() as u32;
    let open_err = |source| OpenError::Open {
        path: path.to_owned(),
        source,
    };
    let full = |e: OpenError| match e {
        OpenError::Migrate { source, .. }
            if source.sqlite().is_some_and(super::disk::is_disk_full) =>
        {
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
        let mig_err = |source: rusqlite::Error| OpenError::Migrate {
            path: path.to_owned(),
            version,
            source: SqlError::Sqlite(source),
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
    fn a_release_model_is_found_by_index_not_by_scan() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, Path::new(":memory:"), 1000).unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!(
                "EXPLAIN QUERY PLAN {}",
                super::super::RELEASE_MODEL
            ))
            .unwrap()
            .query_map(["/srv/sr"], |r| r.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter().any(|s| s.contains("software_url_model"))
                && !plan.iter().any(|s| s.starts_with("SCAN")),
            "{plan:?}"
        );
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
