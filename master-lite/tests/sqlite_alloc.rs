//! `store::sqlite_alloc`: SQLite's allocations go through the Rust global allocator once
//! installed, before SQLite's first use in the process (this test binary opens nothing before).

use master_lite::store::sqlite_alloc::{install, live_bytes};

#[test]
fn sqlite_allocates_through_the_global_allocator_once_installed() {
    assert!(
        install(),
        "SQLite refused the allocator before its first use"
    );
    assert!(install(), "a second call gives the first answer");
    let dir = tempfile::tempdir().expect("tempdir");
    let conn = rusqlite::Connection::open(dir.path().join("t.db")).expect("open");
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL);
         CREATE INDEX t_v ON t (v);",
    )
    .expect("schema");
    let tx = conn.unchecked_transaction().expect("begin");
    let value = |k: i64| format!("value {k} {}", "x".repeat((k % 300) as usize));
    for k in 0..20_000i64 {
        tx.execute("INSERT INTO t (k, v) VALUES (?1, ?2)", (k, value(k)))
            .expect("insert");
    }
    tx.commit().expect("commit");
    let held = live_bytes();
    // The page cache alone holds hundreds of KiB of this table by now.
    assert!(
        held > 256 * 1024,
        "SQLite holds only {held} B through the shim"
    );
    // Growing blocks (xRealloc) keep their contents: the data reads back whole.
    let (n, longest): (i64, i64) = conn
        .query_row("SELECT count(*), max(length(v)) FROM t", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("read back");
    let expected = (0..20_000).map(|k| value(k).len()).max().unwrap_or(0) as i64;
    assert_eq!((n, longest), (20_000, expected));
    drop(conn);
    let after = live_bytes();
    assert!(
        after < held / 2,
        "closing the connection gave back too little: {held} B before, {after} B after"
    );
}
