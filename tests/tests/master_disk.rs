//! The master on a full disk (root: a loop-mounted ext4 of its own, no blocks reserved to
//! root, so nothing but the master's own reserve protects it).
//!
//! * Another process fills the filesystem: the master keeps acknowledging writes from the
//!   space it reserved inside its database files, reads keep working, and once the reserve is
//!   used up a write is answered 507 `disk_full` (never a generic 500) and changes nothing.
//! * Space comes back: writes succeed again, without a restart.
//! * A master started on a full filesystem says so, instead of "disk I/O error".
//! * The database files are private (0600) in a 0700 directory.
//!
//! Run: `cargo build -p master-lite --bins && cargo test -p slapos-tests --test master_disk`.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use serde_json::json;
use slapos_proto::{ComputerId, PartitionId, PartitionSpec, RegisterComputer, SoftwareUrl};
use slapos_tests::loopfs::LoopFs;
use slapos_tests::{Master, bin, instance_request, params, privileged, supply};

const PARTITIONS: usize = 400;

fn registration(id: &str) -> RegisterComputer {
    RegisterComputer {
        id: ComputerId::parse(id).expect("id"),
        partitions: (0..PARTITIONS)
            .map(|i| PartitionSpec {
                id: PartitionId::parse(format!("slappart{i}")).expect("partition id"),
                addresses: vec![],
                interface: None,
                uid: None,
            })
            .collect(),
        labels: Default::default(),
    }
}

#[test]
fn a_full_disk_is_ridden_out_on_the_reserve_then_answered_507() {
    if !privileged("a_full_disk_is_ridden_out_on_the_reserve_then_answered_507") {
        return;
    }
    let fs = LoopFs::new(64, &["-m", "0"], "");
    let db = fs.path().join("master/master.db");
    let mut master = Master::start(&db);
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777;
    assert_eq!(mode(&db), 0o600, "database file mode");
    assert_eq!(
        mode(db.parent().expect("dir")),
        0o700,
        "database directory mode"
    );

    let c = master.client();
    c.register(&registration("COMP-FULL")).expect("register");
    let url = SoftwareUrl::parse("/srv/sr/full.toml").expect("url");
    supply(&c, "COMP-FULL", &url);
    // 60 KB of parameters per instance: each request needs 15 fresh pages, 400 need more than
    // the reserve (free pages + the -wal file, about 16 MiB).
    let big = "x".repeat(60_000);
    let request = |i: usize| {
        c.request(&instance_request(
            &format!("inst-{i}"),
            &url,
            params(json!({ "blob": big, "i": i })),
        ))
    };
    request(0).expect("a write before the disk fills");

    let filled = fs.fill("filler");
    assert!(
        filled > 10 << 20,
        "the filler took the free space ({filled} bytes)"
    );
    // The reserve carries the next writes.
    for i in 1..=20 {
        request(i).unwrap_or_else(|e| panic!("write {i} on a full disk, from the reserve: {e}"));
    }
    // Then it runs out: a clean 507, and that write changed nothing.
    let mut refused = None;
    for i in 21..PARTITIONS {
        match request(i) {
            Ok(_) => continue,
            Err(e) => {
                refused = Some((i, e));
                break;
            }
        }
    }
    let (i, e) = refused.expect("the reserve is finite: a write is eventually refused");
    assert_eq!(e.status(), Some(507), "{e}");
    assert!(e.to_string().contains("disk is full"), "{e}");
    let title = slapos_proto::InstanceTitle::parse(format!("inst-{i}")).expect("title");
    assert_eq!(
        c.instance(&title, None).err().and_then(|e| e.status()),
        Some(404),
        "the refused request left nothing behind"
    );
    // Reads keep working.
    assert_eq!(c.instances().expect("list on a full disk").len(), i);
    c.computer(&ComputerId::parse("COMP-FULL").expect("id"))
        .expect("show on a full disk");

    // Space comes back: writes succeed again without a restart.
    std::fs::remove_file(fs.path().join("filler")).expect("remove the filler");
    request(i).expect("a write once space is back");

    // A master started on a full filesystem says so.
    master.proc.stop();
    fs.fill("filler");
    let out = Command::new(bin("slapos-master"))
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(fs.path().join("other/master.db"))
        .output()
        .expect("run slapos-master");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started on a full disk: {err}");
    assert!(err.contains("filesystem is full"), "{err}");
}
