//! `slapos-master migrate --from sqlite:PATH --to postgres://…`: a box's whole state, made
//! through the real server (native API and SLAP format), copied into a real PostgreSQL and
//! compared table by table and row by row; a non-empty target is refused without `--force`;
//! the copy serves, and its revisions continue above the copied ones.

mod common;

use std::collections::BTreeMap;

use common::{Server, available, cid, registration, title};
use master_lite::store::copy::{columns, rows};
use master_lite::store::{DbUrl, Store, TABLES};
use master_lite::testpg::TestPg;
use slapos_proto::{InstanceRequest, Params, SoftwareType, SoftwareUrl};

const SR: &str = "/srv/sr/web.toml";

fn req(t: &str) -> InstanceRequest {
    let mut parameters = Params::new();
    parameters.insert("port".into(), "8080".into());
    InstanceRequest {
        title: title(t),
        software_url: SoftwareUrl::parse(SR).unwrap(),
        software_type: SoftwareType::default(),
        parameters,
        sla: BTreeMap::new(),
        state: None,
        shared: false,
    }
}

fn migrate(args: &[&str]) -> std::process::Output {
    std::process::Command::new(common::BIN)
        .arg("migrate")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_box_migrated_to_postgres_keeps_every_row() {
    let pg = match TestPg::start() {
        Ok(pg) => pg,
        Err(skip) => return eprintln!("skipped: {}", skip.0),
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("box.db");
    {
        let server = Server::start(&db);
        let c = server.client();
        for comp in ["C1", "C2"] {
            c.register(&registration(
                comp,
                &["slappart0", "slappart1", "slappart2"],
            ))
            .unwrap();
            c.supply(&cid(comp), &available(SR)).unwrap();
        }
        for t in ["web", "db", "cache"] {
            c.request(&req(t)).unwrap();
        }
        // A child requested by a partition, a report, a bang: rows in every corner.
        let web = c.instance(&title("web"), None).unwrap();
        let part = slapos_proto::PartitionRef {
            computer: web.computer.clone(),
            partition: web.partition.clone(),
        };
        c.clone()
            .as_partition(&part)
            .request(&req("child"))
            .unwrap();
        c.bang(
            &part.computer,
            &part.partition,
            &slapos_proto::Bang {
                message: "look".into(),
            },
        )
        .unwrap();
    }
    let url = pg.fresh_db().unwrap();
    let from = format!("sqlite:{}", db.display());
    let out = migrate(&["--from", &from, "--to", &url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let src = Store::open_url(&DbUrl::Sqlite(db.clone()), 0).unwrap();
    let dst = Store::open_url(&url.parse().unwrap(), 0).unwrap();
    let mut compared = 0;
    for table in TABLES {
        let cols = columns(src.connection(), table).unwrap();
        let a = rows(src.connection(), table, &cols).unwrap();
        let b = rows(dst.connection(), table, &cols).unwrap();
        assert_eq!(a, b, "table {table} differs after the copy");
        compared += a.len();
    }
    assert!(
        compared >= 15,
        "a real state was compared ({compared} rows)"
    );

    // A second copy into the same target is refused, then allowed with --force.
    let again = migrate(&["--from", &from, "--to", &url]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not empty"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(
        migrate(&["--from", &from, "--to", &url, "--force"])
            .status
            .success()
    );

    // The copy serves; a new change gets a revision above every copied one.
    let max_rev = src
        .connection()
        .q_row("SELECT MAX(revision) FROM instance", [], |r| {
            r.get::<i64>(0)
        })
        .unwrap();
    drop(dst);
    let server = Server::spawn(["--listen", "127.0.0.1:0", "--db", url.as_str()], "warn");
    let c = server.client();
    assert_eq!(c.instances().unwrap().len(), 4);
    let new = c.request(&req("after")).unwrap();
    assert!(
        i64::try_from(new.revision).unwrap() > max_rev,
        "revision {} not above {max_rev}",
        new.revision
    );
}
