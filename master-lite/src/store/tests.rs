//! Unit tests of the store: allocation, idempotency, revisions, trees, registration, restart.
//!
//! This file is compiled twice (see the bottom of `store/mod.rs`): as `tests` on SQLite in
//! memory and as `tests_pg` on a fresh database of a real PostgreSQL server
//! ([`crate::testpg`]); without PostgreSQL the `tests_pg` copy prints why and returns.
//! Tests that are about SQLite's files (reopen, statement counts) run on SQLite in both.

use super::*;
use slapos_proto::{PartitionSpec, PromiseResult, UsageBatch, UsageBy, UsageSample};

/// This copy runs on PostgreSQL.
fn on_pg() -> bool {
    module_path!().ends_with("tests_pg")
}

const SR: &str = "/srv/sr/web.toml";
const SR2: &str = "/srv/sr/db.toml";

/// A fresh store on this copy's engine; `None` (with the reason printed) when PostgreSQL is
/// missing.
fn store() -> Option<Store> {
    if !on_pg() {
        return Some(Store::open_in_memory(1_000).unwrap());
    }
    match crate::testpg::TestPg::shared() {
        Ok(pg) => Some(Store::open_postgres(&pg.fresh_db().unwrap(), 1_000).unwrap()),
        Err(skip) => {
            eprintln!("skipped on PostgreSQL: {}", skip.0);
            None
        }
    }
}

fn cid(s: &str) -> ComputerId {
    ComputerId::parse(s).unwrap()
}

fn pid(s: &str) -> PartitionId {
    PartitionId::parse(s).unwrap()
}

fn title(s: &str) -> InstanceTitle {
    InstanceTitle::parse(s).unwrap()
}

fn registration(c: &str, parts: &[&str], labels: &[(&str, &str)]) -> RegisterComputer {
    RegisterComputer {
        id: cid(c),
        partitions: parts
            .iter()
            .map(|p| PartitionSpec {
                id: pid(p),
                addresses: vec!["10.0.0.1".into()],
                interface: None,
                uid: None,
            })
            .collect(),
        labels: labels
            .iter()
            .map(|(k, v)| (LabelKey::parse(*k).unwrap(), (*v).to_owned()))
            .collect(),
    }
}

fn supply(s: &mut Store, c: &str, url: &str) {
    s.supply(
        &cid(c),
        &SupplyRequest {
            url: SoftwareUrl::parse(url).unwrap(),
            state: SupplyState::Available,
        },
    )
    .unwrap();
}

fn req(t: &str, url: &str) -> InstanceRequest {
    InstanceRequest {
        title: title(t),
        software_url: SoftwareUrl::parse(url).unwrap(),
        software_type: SoftwareType::default(),
        parameters: Params::new(),
        sla: BTreeMap::new(),
        state: None,
        shared: false,
    }
}

fn with_param(mut r: InstanceRequest, k: &str, v: &str) -> InstanceRequest {
    r.parameters.insert(k.into(), v.into());
    r
}

fn at(c: &str, p: &str) -> PartitionRef {
    PartitionRef {
        computer: cid(c),
        partition: pid(p),
    }
}

fn report(state: InstanceState) -> PartitionReport {
    PartitionReport {
        state,
        revision: 0,
        promises: vec![],
        error: None,
    }
}

/// The node reports partition `p` of C1 in `state`.
fn node_reports(s: &mut Store, p: &PartitionId, state: InstanceState) -> Result<ReportAck> {
    s.report_partition(&cid("C1"), p, &report(state), 100)
}

fn etag(s: &mut Store, c: &str) -> String {
    s.desired(&cid(c), None).unwrap().unwrap().etag
}

fn assignment(s: &mut Store, c: &str, p: &str) -> Option<Assignment> {
    let d = s.desired(&cid(c), None).unwrap().unwrap();
    d.partitions
        .into_iter()
        .find(|x| x.id.as_str() == p)
        .unwrap()
        .instance
}

/// A computer with `n` partitions `slappart0..` and the release `SR` supplied.
fn ready(n: usize) -> Option<Store> {
    let mut s = store()?;
    let parts: Vec<String> = (0..n).map(|i| format!("slappart{i}")).collect();
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    s.register(&registration("C1", &refs, &[]), 1).unwrap();
    supply(&mut s, "C1", SR);
    s.take_touched();
    Some(s)
}

#[test]
fn allocation_takes_the_first_free_partition_in_registration_order() {
    let Some(mut s) = store() else { return };
    s.register(
        &registration("C1", &["slappart2", "slappart0", "slappart1"], &[]),
        1,
    )
    .unwrap();
    supply(&mut s, "C1", SR);
    let got: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|t| {
            s.request(&req(t, SR), None, 2)
                .unwrap()
                .partition
                .to_string()
        })
        .collect();
    assert_eq!(got, ["slappart2", "slappart0", "slappart1"]);
    let err = s.request(&req("d", SR), None, 2).unwrap_err();
    assert!(matches!(err, StoreError::NoAllocation(_)), "{err}");
    assert!(
        err.to_string().contains("every partition is allocated"),
        "{err}"
    );
    assert!(err.to_string().contains("\"d\""), "{err}");
}

#[test]
fn allocation_needs_the_release_supplied_and_names_the_filter() {
    let Some(mut s) = store() else { return };
    s.register(&registration("C1", &["p0"], &[("region", "eu")]), 1)
        .unwrap();
    let mut r = req("web", SR);
    r.sla.insert("region".into(), "eu".into());
    let before = s.dump();
    let err = s.request(&r, None, 2).unwrap_err();
    assert!(matches!(err, StoreError::NoAllocation(_)), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("{region=eu}"), "{msg}");
    assert!(
        msg.contains("not supplied on any matching computer (C1)"),
        "{msg}"
    );
    assert_eq!(s.dump(), before, "a refused request changed the DB");

    r.sla.insert("region".into(), "us".into());
    let msg = s.request(&r, None, 2).unwrap_err().to_string();
    assert!(msg.contains("no registered computer matches"), "{msg}");
}

#[test]
fn sla_selects_computers_by_guid_and_labels() {
    let Some(mut s) = store() else { return };
    s.register(&registration("A", &["p0", "p1"], &[("region", "eu")]), 1)
        .unwrap();
    s.register(&registration("B", &["p0", "p1"], &[("region", "us")]), 1)
        .unwrap();
    supply(&mut s, "A", SR);
    supply(&mut s, "B", SR);
    // No filter: A registered first.
    assert_eq!(
        s.request(&req("x", SR), None, 2).unwrap().computer.as_str(),
        "A"
    );
    let mut r = req("y", SR);
    r.sla.insert("region".into(), "us".into());
    assert_eq!(s.request(&r, None, 2).unwrap().computer.as_str(), "B");
    let mut r = req("z", SR);
    r.sla.insert("computer_guid".into(), "B".into());
    let info = s.request(&r, None, 2).unwrap();
    assert_eq!(
        (info.computer.as_str(), info.partition.as_str()),
        ("B", "p1")
    );
    // Both filters together must both hold.
    let mut r = req("w", SR);
    r.sla.insert("computer_guid".into(), "A".into());
    r.sla.insert("region".into(), "us".into());
    assert!(matches!(
        s.request(&r, None, 2).unwrap_err(),
        StoreError::NoAllocation(_)
    ));
    // Invalid keys and guids are bad requests.
    let mut r = req("v", SR);
    r.sla.insert("computer_guid".into(), "../x".into());
    assert!(matches!(
        s.request(&r, None, 2).unwrap_err(),
        StoreError::Invalid(_)
    ));
    let mut r = req("v", SR);
    r.sla.insert("bad key".into(), "1".into());
    assert!(matches!(
        s.request(&r, None, 2).unwrap_err(),
        StoreError::Invalid(_)
    ));
}

#[test]
fn identical_requests_bump_nothing_and_changes_bump_revision_and_etag() {
    let Some(mut s) = ready(2) else { return };
    let r = with_param(req("web", SR), "port", "8080");
    let first = s.request(&r, None, 2).unwrap();
    assert_eq!(s.take_touched().len(), 1);
    let e1 = etag(&mut s, "C1");

    let again = s.request(&r, None, 3).unwrap();
    assert_eq!(again.revision, first.revision);
    assert_eq!(again.partition, first.partition);
    assert!(
        s.take_touched().is_empty(),
        "identical request touched a computer"
    );
    assert_eq!(etag(&mut s, "C1"), e1);

    let changed = s
        .request(&with_param(req("web", SR), "port", "9090"), None, 4)
        .unwrap();
    assert!(changed.revision > first.revision);
    assert_eq!(
        changed.partition, first.partition,
        "re-request re-allocated"
    );
    let touched = s.take_touched();
    assert_eq!(touched.len(), 1);
    assert_eq!(touched[0].0.as_str(), "C1");
    let e2 = etag(&mut s, "C1");
    assert_ne!(e2, e1);
    assert_eq!(touched[0].1.to_string(), e2);
    let a = assignment(&mut s, "C1", first.partition.as_str()).unwrap();
    assert_eq!(a.revision, changed.revision);
    assert_eq!(a.parameters["port"], "9090");

    // State and type changes bump too; state None keeps the state.
    let mut r = with_param(req("web", SR), "port", "9090");
    r.state = Some(InstanceState::Stopped);
    let stopped = s.request(&r, None, 5).unwrap();
    assert!(stopped.revision > changed.revision);
    r.state = None;
    let kept = s.request(&r, None, 6).unwrap();
    assert_eq!(kept.state, InstanceState::Stopped);
    assert_eq!(kept.revision, stopped.revision);
    r.software_type = SoftwareType::parse("kvm").unwrap();
    assert!(s.request(&r, None, 7).unwrap().revision > stopped.revision);
}

#[test]
fn same_title_with_another_release_is_a_conflict_and_changes_nothing() {
    let Some(mut s) = ready(2) else { return };
    supply(&mut s, "C1", SR2);
    s.request(&req("web", SR), None, 2).unwrap();
    s.take_touched();
    let before = s.dump();
    let err = s.request(&req("web", SR2), None, 3).unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert!(err.to_string().contains(SR), "{err}");
    assert_eq!(s.dump(), before);
    assert!(s.take_touched().is_empty());
}

#[test]
fn children_live_in_the_requesters_tree_and_connections_reach_the_parent() {
    let Some(mut s) = ready(3) else { return };
    let root = s.request(&req("root", SR), None, 2).unwrap();
    let root_part = at("C1", root.partition.as_str());
    let rev0 = root.revision;

    let child = s
        .request(&with_param(req("db", SR), "size", "1"), Some(&root_part), 3)
        .unwrap();
    assert_eq!(child.root_title.as_str(), "root");
    assert_eq!(child.requester.as_deref(), Some("C1/slappart0"));
    let root = s.instance(&title("root"), None).unwrap();
    assert_eq!(root.children, vec![title("db")]);
    assert!(root.revision > rev0, "a new child must bump its parent");
    // The child is scoped to the tree: not visible as a root.
    assert!(matches!(
        s.instance(&title("db"), None).unwrap_err(),
        StoreError::NotFound(_)
    ));
    assert_eq!(
        s.instance(&title("db"), Some(&title("root")))
            .unwrap()
            .partition,
        child.partition
    );
    // A user may hold a root with the same title as a child elsewhere.
    assert_ne!(
        s.request(&req("db", SR), None, 3).unwrap().partition,
        child.partition
    );

    // Identical child re-request: nothing moves.
    let r1 = s.instance(&title("root"), None).unwrap().revision;
    s.take_touched();
    s.request(&with_param(req("db", SR), "size", "1"), Some(&root_part), 4)
        .unwrap();
    assert!(s.take_touched().is_empty());

    // Publishing the child's connection bumps the parent, which then sees the parameters.
    let mut conn = Params::new();
    conn.insert("url".into(), "http://10.0.0.1:5432".into());
    s.publish_connection(&cid("C1"), &child.partition, &conn, 5)
        .unwrap();
    let a = assignment(&mut s, "C1", "slappart0").unwrap();
    assert!(a.revision > r1);
    assert_eq!(a.children["db"]["url"], "http://10.0.0.1:5432");
    assert_eq!(
        s.instance(&title("db"), Some(&title("root")))
            .unwrap()
            .connection,
        conn
    );
    // Same parameters again: no bump.
    s.take_touched();
    s.publish_connection(&cid("C1"), &child.partition, &conn, 6)
        .unwrap();
    assert!(s.take_touched().is_empty());
    assert_eq!(
        assignment(&mut s, "C1", "slappart0").unwrap().revision,
        a.revision
    );
    // The publishing instance's own revision does not move.
    let child_rev = s
        .instance(&title("db"), Some(&title("root")))
        .unwrap()
        .revision;
    assert_eq!(child_rev, child.revision);
}

#[test]
fn requests_from_unknown_or_free_partitions_are_refused() {
    let Some(mut s) = ready(2) else { return };
    let before = s.dump();
    let err = s
        .request(&req("x", SR), Some(&at("C1", "nope")), 2)
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    let err = s
        .request(&req("x", SR), Some(&at("C1", "slappart1")), 2)
        .unwrap_err();
    assert!(matches!(err, StoreError::Forbidden(_)), "{err}");
    let mut r = req("ghost", SR);
    r.state = Some(InstanceState::Destroyed);
    assert!(matches!(
        s.request(&r, None, 2).unwrap_err(),
        StoreError::NotFound(_)
    ));
    assert_eq!(s.dump(), before);
}

#[test]
fn destroying_a_root_destroys_its_tree_and_frees_bottom_up() {
    let Some(mut s) = ready(4) else { return };
    let root = s.request(&req("root", SR), None, 2).unwrap();
    let rp = at("C1", root.partition.as_str());
    let child = s.request(&req("child", SR), Some(&rp), 3).unwrap();
    let cp = at("C1", child.partition.as_str());
    let grandchild = s.request(&req("grand", SR), Some(&cp), 4).unwrap();
    assert_eq!(grandchild.root_title.as_str(), "root");

    let destroyed = s
        .set_state(&title("root"), InstanceState::Destroyed)
        .unwrap();
    assert_eq!(destroyed.state, InstanceState::Destroyed);
    for (t, r) in [("child", "root"), ("grand", "root")] {
        let i = s.instance(&title(t), Some(&title(r))).unwrap();
        assert_eq!(i.state, InstanceState::Destroyed, "{t}");
    }
    // The root cannot be freed while children hold partitions.
    let ack = node_reports(&mut s, &root.partition, InstanceState::Destroyed).unwrap();
    assert!(!ack.freed);
    assert_eq!(ack.waiting_for, vec![title("child")]);
    let ack = node_reports(&mut s, &child.partition, InstanceState::Destroyed).unwrap();
    assert_eq!(ack.waiting_for, vec![title("grand")]);
    // Bottom-up: the grandchild goes, its parent is bumped so the node reports again.
    let child_rev = s
        .instance(&title("child"), Some(&title("root")))
        .unwrap()
        .revision;
    let ack = node_reports(&mut s, &grandchild.partition, InstanceState::Destroyed).unwrap();
    assert!(ack.freed);
    assert!(
        s.instance(&title("child"), Some(&title("root")))
            .unwrap()
            .revision
            > child_rev
    );
    assert!(
        node_reports(&mut s, &child.partition, InstanceState::Destroyed)
            .unwrap()
            .freed
    );
    assert!(
        node_reports(&mut s, &root.partition, InstanceState::Destroyed)
            .unwrap()
            .freed
    );
    assert!(s.instances().unwrap().is_empty());
    let c = s.computer(&cid("C1")).unwrap();
    assert!(c.partitions.iter().all(|p| p.instance.is_none()));
    // A destroyed report for a free partition is acknowledged (idempotent); others conflict.
    assert!(
        node_reports(&mut s, &root.partition, InstanceState::Destroyed)
            .unwrap()
            .freed
    );
    assert!(matches!(
        node_reports(&mut s, &root.partition, InstanceState::Started).unwrap_err(),
        StoreError::Conflict(_)
    ));
}

#[test]
fn a_destroyed_report_frees_only_what_was_asked_destroyed() {
    let Some(mut s) = ready(1) else { return };
    let web = s.request(&req("web", SR), None, 2).unwrap();
    let mut rep = report(InstanceState::Destroyed);
    rep.error = Some("stale".into());
    let ack = s
        .report_partition(&cid("C1"), &web.partition, &rep, 3)
        .unwrap();
    assert!(!ack.freed, "freed an instance the user still wants");
    let info = s.instance(&title("web"), None).unwrap();
    assert_eq!(
        info.reported.unwrap().report.error.as_deref(),
        Some("stale")
    );
}

#[test]
fn slapproxy_reported_destroyed_frees_a_leaf_whatever_was_requested() {
    let Some(mut s) = ready(2) else { return };
    let root = s.request(&req("root", SR), None, 2).unwrap();
    let root_part = at("C1", root.partition.as_str());
    let kid = s.request(&req("kid", SR), Some(&root_part), 3).unwrap();
    // A root with a child: refused, nothing changed.
    let before = s.dump();
    let answer = s
        .slap_destroyed_anyway("C1", root.partition.as_str(), 4)
        .unwrap();
    assert!(answer.contains("has child partitions: kid"), "{answer}");
    assert_eq!(before, s.dump(), "a refusal changed the database");
    // The child (requested started): freed.
    let answer = s
        .slap_destroyed_anyway("C1", kid.partition.as_str(), 5)
        .unwrap();
    assert_eq!(answer, "OK");
    assert!(
        s.slap_partition("C1", kid.partition.as_str())
            .unwrap()
            .unwrap()
            .instance
            .is_none()
    );
    // Then the root.
    let answer = s
        .slap_destroyed_anyway("C1", root.partition.as_str(), 6)
        .unwrap();
    assert_eq!(answer, "OK");
    assert!(s.instance(&title("root"), None).is_err());
    // A release is forgotten whatever was requested; once.
    assert!(s.slap_forget_software("C1", SR).unwrap());
    assert!(!s.slap_forget_software("C1", SR).unwrap());
    assert!(s.slap_computer("C1").unwrap().unwrap().software.is_empty());
}

#[test]
fn revisions_never_repeat_after_a_partition_is_reallocated() {
    let Some(mut s) = ready(1) else { return };
    let a = s.request(&req("a", SR), None, 2).unwrap();
    s.set_state(&title("a"), InstanceState::Destroyed).unwrap();
    let last = assignment(&mut s, "C1", "slappart0").unwrap().revision;
    node_reports(&mut s, &a.partition, InstanceState::Destroyed).unwrap();
    assert!(assignment(&mut s, "C1", "slappart0").is_none());
    let b = s.request(&req("b", SR), None, 4).unwrap();
    assert_eq!(b.partition, a.partition);
    assert!(b.revision > last);
}

#[test]
fn root_state_applies_to_the_tree() {
    let Some(mut s) = ready(3) else { return };
    let root = s.request(&req("root", SR), None, 2).unwrap();
    let rp = at("C1", root.partition.as_str());
    s.request(&req("child", SR), Some(&rp), 3).unwrap();
    s.set_state(&title("root"), InstanceState::Stopped).unwrap();
    let child = s.instance(&title("child"), Some(&title("root"))).unwrap();
    assert_eq!(child.state, InstanceState::Stopped);
    // A child re-requested as started while the root is stopped stays stopped (SlapOS rule).
    let mut r = req("child", SR);
    r.state = Some(InstanceState::Started);
    assert_eq!(
        s.request(&r, Some(&rp), 4).unwrap().state,
        InstanceState::Stopped
    );
    // Starting the root (through a request) starts the tree again.
    let mut r = req("root", SR);
    r.state = Some(InstanceState::Started);
    s.request(&r, None, 5).unwrap();
    let child = s.instance(&title("child"), Some(&title("root"))).unwrap();
    assert_eq!(child.state, InstanceState::Started);
}

#[test]
fn bang_bumps_every_instance_of_the_tree() {
    let Some(mut s) = ready(3) else { return };
    let root = s.request(&req("root", SR), None, 2).unwrap();
    let rp = at("C1", root.partition.as_str());
    let child = s.request(&req("child", SR), Some(&rp), 3).unwrap();
    let other = s.request(&req("other", SR), None, 3).unwrap();
    let before: Vec<u64> = s.instances().unwrap().iter().map(|i| i.revision).collect();
    let n = s
        .bang(&cid("C1"), &child.partition, "disk full", 4)
        .unwrap();
    assert_eq!(n, 2);
    let after = s.instances().unwrap();
    assert!(after[0].revision > before[0]); // root
    assert!(after[1].revision > before[1]); // child
    assert_eq!(after[2].revision, other.revision); // another tree
    assert_eq!(after[1].bang.as_deref(), Some("disk full"));
    assert!(matches!(
        s.bang(&cid("C1"), &pid("slappart9"), "x", 5).unwrap_err(),
        StoreError::NotFound(_)
    ));
}

#[test]
fn re_registration_keeps_allocations_and_drops_missing_free_partitions() {
    let Some(mut s) = ready(3) else { return }; // slappart0..2
    let web = s.request(&req("web", SR), None, 2).unwrap(); // slappart0
    let e1 = etag(&mut s, "C1");
    let info = s
        .register(
            &registration("C1", &["slappart2", "slappart3"], &[("arch", "aarch64")]),
            3,
        )
        .unwrap();
    let ids: Vec<&str> = info.partitions.iter().map(|p| p.id.as_str()).collect();
    // slappart0 is allocated: kept, in its place; slappart1 free and missing: dropped.
    assert_eq!(ids, ["slappart0", "slappart2", "slappart3"]);
    assert_eq!(info.partitions[0].instance.as_ref(), Some(&web.title));
    assert_eq!(info.labels[&LabelKey::parse("arch").unwrap()], "aarch64");
    assert_ne!(etag(&mut s, "C1"), e1);
    // Identical re-registration: same etag.
    let e2 = etag(&mut s, "C1");
    s.take_touched();
    s.register(
        &registration("C1", &["slappart2", "slappart3"], &[("arch", "aarch64")]),
        4,
    )
    .unwrap();
    assert_eq!(etag(&mut s, "C1"), e2);
    assert!(s.take_touched().is_empty());
    assert_eq!(s.computer(&cid("C1")).unwrap().last_seen_ms, Some(4));
}

#[test]
fn bad_registrations_change_nothing() {
    let Some(mut s) = ready(1) else { return };
    let before = s.dump();
    let dup = registration("C1", &["p0", "p0"], &[]);
    assert!(matches!(
        s.register(&dup, 2).unwrap_err(),
        StoreError::Invalid(_)
    ));
    let mut bad_addr = registration("C1", &["p0"], &[]);
    bad_addr.partitions[0].addresses = vec!["not-an-ip".into()];
    let err = s.register(&bad_addr, 2).unwrap_err();
    assert!(err.to_string().contains("not-an-ip"), "{err}");
    let long = "x".repeat(MAX_LABEL_VALUE + 1);
    let bad_label = registration("C1", &["p0"], &[("region", long.as_str())]);
    assert!(matches!(
        s.register(&bad_label, 2).unwrap_err(),
        StoreError::Invalid(_)
    ));
    assert_eq!(s.dump(), before);
}

#[test]
fn a_release_parameter_model_refuses_bad_requests_before_allocation() {
    let Some(mut s) = ready(2) else { return };
    let c = cid("C1");
    let url = SoftwareUrl::parse(SR).unwrap();
    let cell = |earfcn: u32| {
        let mut r = req("enb", SR);
        r.parameters = serde_json::from_str(&format!(
            r#"{{"enb_id": "0x1A2D0", "plmn_list": {{"p1": {{"plmn": "00101"}}}},
                "mme_list": {{"m1": {{"mme_addr": "127.0.1.100"}}}},
                "cell_list": {{"cell1": {{"cell_type": "lte", "rf_mode": "fdd",
                "dl_earfcn": {earfcn}, "bandwidth": "20 MHz", "pci": 1, "tac": "0x0001",
                "cell_id": "0x01", "ru": {{"ru_type": "sdr", "ru_link_type": "sdr",
                "sdr_dev_list": [0], "n_antenna_dl": 2, "n_antenna_ul": 2, "tx_gain": 80,
                "rx_gain": 40}}}}}}}}"#
        ))
        .unwrap();
        r
    };
    // Before the node reports the model, nothing is checked (the node checks later).
    s.request(&cell(99999), None, 1).unwrap();
    s.set_state(&title("enb"), InstanceState::Destroyed)
        .unwrap();
    s.report_partition(&c, &pid("slappart0"), &report(InstanceState::Destroyed), 2)
        .unwrap();
    let available = SoftwareReport {
        url: url.clone(),
        state: InstallState::Available,
        message: None,
        parameter_model: Some("radio-enb".into()),
    };
    s.report_software(&c, &available, 3).unwrap();
    let sw = &s.computer(&c).unwrap().software[0];
    let model = sw
        .install
        .as_ref()
        .and_then(|i| i.parameter_model.as_deref());
    assert_eq!(model, Some("radio-enb"));

    let err = s.request(&cell(99999), None, 4).unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    assert!(
        err.to_string().contains("cell_list.cell1.dl_earfcn"),
        "{err}"
    );
    assert!(s.instance(&title("enb2"), None).is_err());
    // Nothing was changed or allocated by the refused request.
    let before = etag(&mut s, "C1");
    let mut r = cell(99999);
    r.title = title("enb2");
    assert!(s.request(&r, None, 5).is_err());
    assert_eq!(etag(&mut s, "C1"), before);
    // A valid cell goes through; a later report without a model (building) keeps it.
    let mut r = cell(3350);
    r.title = title("enb2");
    s.request(&r, None, 6).unwrap();
    let building = SoftwareReport {
        state: InstallState::Building,
        parameter_model: None,
        ..available
    };
    s.report_software(&c, &building, 7).unwrap();
    assert!(s.request(&cell(99999), None, 8).is_err());
}

#[test]
fn supply_reports_and_removal() {
    let Some(mut s) = ready(1) else { return };
    let c = cid("C1");
    let url = SoftwareUrl::parse(SR).unwrap();
    s.report_software(
        &c,
        &SoftwareReport {
            url: url.clone(),
            state: InstallState::Error,
            message: Some("sha256 mismatch".into()),
            parameter_model: None,
        },
        5,
    )
    .unwrap();
    let info = s.computer(&c).unwrap();
    let sw = &info.software[0];
    assert_eq!(sw.install.as_ref().unwrap().state, InstallState::Error);
    assert_eq!(
        sw.install.as_ref().unwrap().message.as_deref(),
        Some("sha256 mismatch")
    );
    assert_eq!(info.last_seen_ms, Some(5));

    // Removing a release in use is refused.
    s.request(&req("web", SR), None, 6).unwrap();
    let remove = SupplyRequest {
        url: url.clone(),
        state: SupplyState::Destroyed,
    };
    let err = s.supply(&c, &remove).unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert!(err.to_string().contains("web"), "{err}");
    // Once the instance is gone, removal is asked, then confirmed by the node.
    s.set_state(&title("web"), InstanceState::Destroyed)
        .unwrap();
    s.report_partition(&c, &pid("slappart0"), &report(InstanceState::Destroyed), 7)
        .unwrap();
    let e1 = etag(&mut s, "C1");
    assert_eq!(
        s.supply(&c, &remove).unwrap().requested,
        SupplyState::Destroyed
    );
    assert_ne!(etag(&mut s, "C1"), e1);
    let d = s.desired(&c, None).unwrap().unwrap();
    assert_eq!(d.software[0].state, SupplyState::Destroyed);
    // A removed release cannot be allocated.
    assert!(matches!(
        s.request(&req("web2", SR), None, 8).unwrap_err(),
        StoreError::NoAllocation(_)
    ));
    s.report_software(
        &c,
        &SoftwareReport {
            url: url.clone(),
            state: InstallState::Destroyed,
            message: None,
            parameter_model: None,
        },
        9,
    )
    .unwrap();
    assert!(s.desired(&c, None).unwrap().unwrap().software.is_empty());
    // Unknown release or computer: 404.
    let err = s
        .report_software(
            &c,
            &SoftwareReport {
                url,
                state: InstallState::Available,
                message: None,
                parameter_model: None,
            },
            10,
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    assert!(matches!(
        s.supply(&cid("NOPE"), &remove).unwrap_err(),
        StoreError::NotFound(_)
    ));
}

#[test]
fn desired_state_lists_every_partition_and_honours_the_etag() {
    let Some(mut s) = ready(3) else { return };
    s.request(&with_param(req("web", SR), "port", "80"), None, 2)
        .unwrap();
    let d = s.desired(&cid("C1"), None).unwrap().unwrap();
    assert_eq!(d.partitions.len(), 3);
    assert_eq!(d.software.len(), 1);
    let a = d.partitions[0].instance.as_ref().unwrap();
    assert_eq!((a.title.as_str(), a.root_title.as_str()), ("web", "web"));
    assert_eq!(a.state, InstanceState::Started);
    assert!(d.partitions[1].instance.is_none());
    assert!(s.desired(&cid("C1"), Some(&d.etag)).unwrap().is_none());
    assert!(s.desired(&cid("C1"), Some("stale")).unwrap().is_some());
    assert!(matches!(
        s.desired(&cid("NOPE"), None).unwrap_err(),
        StoreError::NotFound(_)
    ));
}

#[test]
fn reports_are_stored_with_promises() {
    let Some(mut s) = ready(1) else { return };
    let web = s.request(&req("web", SR), None, 2).unwrap();
    let rep = PartitionReport {
        state: InstanceState::Started,
        revision: web.revision,
        promises: vec![PromiseResult {
            name: "port-open".into(),
            ok: false,
            message: "connection refused".into(),
            at_ms: 3,
        }],
        error: None,
    };
    s.take_touched();
    let ack = s
        .report_partition(&cid("C1"), &web.partition, &rep, 4)
        .unwrap();
    assert!(!ack.freed);
    assert!(
        s.take_touched().is_empty(),
        "a report must not wake the node"
    );
    let got = s.instance(&title("web"), None).unwrap().reported.unwrap();
    assert_eq!(got.at_ms, 4);
    assert_eq!(got.report.promises, rep.promises);
    assert_eq!(got.report.revision, web.revision);
}

#[test]
fn everything_acknowledged_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.db");
    let (dump_before, rev) = {
        let mut s = Store::open(&path, 1_000).unwrap();
        s.set_clock(|| 0);
        s.register(&registration("C1", &["p0", "p1"], &[("region", "eu")]), 1)
            .unwrap();
        supply(&mut s, "C1", SR);
        let web = s
            .request(&with_param(req("web", SR), "port", "80"), None, 2)
            .unwrap();
        let mut conn = Params::new();
        conn.insert("url".into(), "http://x".into());
        s.publish_connection(&cid("C1"), &web.partition, &conn, 3)
            .unwrap();
        (s.dump(), web.revision)
        // dropped without any explicit close
    };
    let mut s = Store::open(&path, 999_999).unwrap();
    s.set_clock(|| 0);
    assert_eq!(s.dump(), dump_before);
    let web = s.instance(&title("web"), None).unwrap();
    assert_eq!(web.connection["url"], "http://x");
    assert_eq!(web.revision, rev);
    // The counter continues where it was (not re-seeded by the later clock).
    let changed = s
        .request(&with_param(req("web", SR), "port", "81"), None, 4)
        .unwrap();
    assert!(changed.revision > rev && changed.revision < 999_999);
}

#[test]
fn sqlite_revisions_never_fall_behind_the_clock_and_never_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("master.db"), 1_000).unwrap();
    s.set_clock(|| 5_000_000);
    s.register(&registration("C1", &["p0", "p1"], &[]), 1)
        .unwrap();
    supply(&mut s, "C1", SR);
    let a = s.request(&req("a", SR), None, 2).unwrap();
    assert!(
        a.revision >= 5_000_000,
        "{} is behind the clock",
        a.revision
    );
    // Same clock reading: the counter still advances.
    let b = s.request(&req("b", SR), None, 3).unwrap();
    assert!(
        b.revision > a.revision,
        "{} then {}",
        a.revision,
        b.revision
    );
    // A clock going back never takes the counter back.
    s.set_clock(|| 1);
    let a2 = s
        .request(&with_param(req("a", SR), "port", "81"), None, 4)
        .unwrap();
    assert!(
        a2.revision > b.revision,
        "{} then {}",
        b.revision,
        a2.revision
    );
}

#[test]
fn re_parenting_moves_a_child_but_never_makes_a_cycle() {
    let Some(mut s) = ready(4) else { return };
    let root = s.request(&req("root", SR), None, 2).unwrap();
    let rp = at("C1", root.partition.as_str());
    let c1 = s.request(&req("c1", SR), Some(&rp), 3).unwrap();
    let p1 = at("C1", c1.partition.as_str());
    let c2 = s.request(&req("c2", SR), Some(&p1), 4).unwrap();
    let p2 = at("C1", c2.partition.as_str());
    s.take_touched();
    let before = s.dump();
    // c2 asking for c1 (its own parent) or c1 asking for itself would form a cycle.
    for (who, t) in [(&p2, "c1"), (&p1, "c1")] {
        let err = s.request(&req(t, SR), Some(who), 5).unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");
        assert!(err.to_string().contains("descendants"), "{err}");
    }
    assert_eq!(s.dump(), before);
    assert!(s.take_touched().is_empty());
    // The root taking c2 over is fine: both parents are bumped, the children lists follow.
    let r_rev = s.instance(&title("root"), None).unwrap().revision;
    let c1_rev = s
        .instance(&title("c1"), Some(&title("root")))
        .unwrap()
        .revision;
    let moved = s.request(&req("c2", SR), Some(&rp), 6).unwrap();
    assert_eq!(moved.requester.as_deref(), Some("C1/slappart0"));
    assert_eq!(moved.partition, c2.partition, "re-parenting re-allocated");
    let root = s.instance(&title("root"), None).unwrap();
    let c1 = s.instance(&title("c1"), Some(&title("root"))).unwrap();
    assert!(root.revision > r_rev && c1.revision > c1_rev);
    assert_eq!(root.children, vec![title("c1"), title("c2")]);
    assert!(c1.children.is_empty());
}

#[test]
fn a_panicking_job_does_not_kill_the_worker() {
    let hub = std::sync::Arc::new(crate::hub::Hub::default());
    let Some(store) = store() else { return };
    let (db, _worker) = crate::db::start(store, hub).unwrap();
    let err = db
        .call_blocking(|_s: &mut Store| -> Result<()> { panic!("boom") })
        .unwrap_err();
    assert!(matches!(err, crate::ApiError::Internal(_)), "{err}");
    assert!(db.call_blocking(|s| s.computers()).unwrap().is_empty());
}

fn cert(serial: &str, identity: &str) -> CertificateRow {
    CertificateRow {
        serial: serial.into(),
        identity: identity.into(),
        kind: identity.split(':').next().unwrap().into(),
        issued_ms: 1,
        expires_ms: 10_000,
        revoked_ms: None,
    }
}

#[test]
fn owners_tokens_and_certificates() {
    let Some(mut s) = ready(2) else { return };
    // The owner is recorded on new roots only, and a re-request keeps it.
    let web = s
        .request_as(
            &req("web", SR),
            None,
            Some("user:alice"),
            2,
            RequestRules::NATIVE,
        )
        .unwrap();
    assert_eq!(
        s.root_owner(&title("web")).unwrap(),
        Some(Some("user:alice".into()))
    );
    s.request_as(
        &req("web", SR),
        None,
        Some("user:bob"),
        3,
        RequestRules::NATIVE,
    )
    .unwrap();
    assert_eq!(
        s.root_owner(&title("web")).unwrap(),
        Some(Some("user:alice".into()))
    );
    assert_eq!(s.root_owner(&title("nope")).unwrap(), None);
    let (_, owner) = s.instance_owned(&title("web"), None).unwrap();
    assert_eq!(owner.as_deref(), Some("user:alice"));

    // Tokens: once, before expiry.
    s.create_token("h1", &cid("C1"), 1, 100).unwrap();
    s.create_token("h2", &cid("C1"), 1, 100).unwrap();
    assert!(matches!(
        s.check_token("h1", 100).unwrap_err(),
        StoreError::Forbidden(_)
    ));
    s.redeem_token("h1", &cert("aa", "computer:C1"), 50)
        .unwrap();
    assert!(matches!(
        s.redeem_token("h1", &cert("bb", "computer:C1"), 51)
            .unwrap_err(),
        StoreError::Forbidden(_)
    ));
    assert!(
        s.certificate("bb").unwrap().is_none(),
        "a refused redeem recorded a certificate"
    );
    assert!(matches!(
        s.redeem_token("h2", &cert("cc", "computer:C2"), 51)
            .unwrap_err(),
        StoreError::Internal(_)
    ));

    // Revocation by serial and by identity; freeing a partition revokes its certificates.
    let part = format!("partition:C1/{}", web.partition);
    s.record_certificate(&cert("p1", &part)).unwrap();
    s.record_certificate(&cert("p2", &part)).unwrap();
    assert_eq!(s.revoke_serial("p1", 60).unwrap().revoked_ms, Some(60));
    assert!(matches!(
        s.revoke_serial("zz", 60).unwrap_err(),
        StoreError::NotFound(_)
    ));
    s.set_state(&title("web"), InstanceState::Destroyed)
        .unwrap();
    let ack = node_reports(&mut s, &web.partition, InstanceState::Destroyed).unwrap();
    assert!(ack.freed);
    assert_eq!(s.certificate("p1").unwrap().unwrap().revoked_ms, Some(60));
    assert!(s.certificate("p2").unwrap().unwrap().revoked_ms.is_some());
    assert!(s.certificate("aa").unwrap().unwrap().revoked_ms.is_none());
    assert_eq!(
        s.revoke_identity("computer:C1", 70).unwrap(),
        vec!["aa".to_owned()]
    );
    assert!(s.revoke_identity("computer:C1", 71).unwrap().is_empty());
}

#[test]
fn a_partition_interface_is_the_first_element_of_its_ip_list() {
    let mut s = Store::open_in_memory(0).unwrap();
    let mut reg = registration("C1", &["slappart0", "slappart1"], &[]);
    reg.partitions[0].interface = Some("slaptap0".into());
    s.register(&reg, 1).unwrap();
    let ip = |s: &mut Store, p: &str| s.slap_partition("C1", p).unwrap().unwrap().ip_list;
    assert_eq!(
        ip(&mut s, "slappart0"),
        [("slaptap0".into(), "10.0.0.1".into())]
    );
    // Without an interface: the partition reference, as before.
    assert_eq!(
        ip(&mut s, "slappart1"),
        [("slappart1".into(), "10.0.0.1".into())]
    );
    // A re-registration with another interface (same addresses) updates it.
    reg.partitions[0].interface = Some("eth1".into());
    s.register(&reg, 2).unwrap();
    assert_eq!(
        ip(&mut s, "slappart0"),
        [("eth1".into(), "10.0.0.1".into())]
    );
}

#[test]
fn slap_format_rewrites_addresses_only_when_they_change() {
    use slapos_proto::slap::ComputerConfiguration;
    use slapos_proto::slap::forms::{AddressConfiguration, PartitionConfiguration};
    let cfg = |prefix: &str| ComputerConfiguration {
        reference: "COMP".into(),
        address: Some("10.0.0.1".into()),
        netmask: Some("255.255.255.0".into()),
        partitions: (0..3)
            .map(|i| PartitionConfiguration {
                reference: format!("slappart{i}"),
                addresses: vec![
                    AddressConfiguration {
                        addr: format!("{prefix}{i}"),
                        netmask: "ffff:ffff:ffff:ffff::".into(),
                    },
                    AddressConfiguration {
                        addr: format!("10.0.1.{i}"),
                        netmask: "255.255.255.0".into(),
                    },
                ],
                tap_name: Some(format!("slaptap{i}")),
            })
            .collect(),
        raw: slapos_proto::slap::Value::None,
    };
    let ips = |s: &mut Store| {
        s.slap_partition("COMP", "slappart1")
            .unwrap()
            .unwrap()
            .ip_list
    };
    let Some(mut s) = store() else { return };
    s.slap_format(&(&cfg("fd00::")).into(), 1).unwrap();
    let pair = |a: &str| ("slaptap1".to_owned(), a.to_owned());
    assert_eq!(ips(&mut s), vec![pair("fd00::1"), pair("10.0.1.1")]);

    // The same payload again: only the computer's last-seen time is written.
    let changes = |s: &Store| s.connection().as_sqlite().map(|c| c.total_changes());
    let before = changes(&s);
    s.slap_format(&(&cfg("fd00::")).into(), 2).unwrap();
    if let (Some(b), Some(a)) = (before, changes(&s)) {
        assert_eq!(a - b, 1, "SQLite counts one change");
    }
    assert_eq!(ips(&mut s), vec![pair("fd00::1"), pair("10.0.1.1")]);

    // A changed address replaces the rows, in payload order.
    s.slap_format(&(&cfg("fd01::")).into(), 3).unwrap();
    assert_eq!(ips(&mut s), vec![pair("fd01::1"), pair("10.0.1.1")]);
}

#[test]
fn slap_format_keeps_any_address_text_for_slap_and_only_ip_literals_natively() {
    use crate::store::{SlapAddress, SlapFormat};
    let addr = |i: &str, a: &str| SlapAddress {
        interface: i.into(),
        address: a.into(),
        netmask: "MyNetmask".into(),
    };
    let format = |addresses: Vec<SlapAddress>| SlapFormat {
        computer: "COMP".into(),
        address: None,
        netmask: None,
        partitions: vec![("MyFirstPartition".into(), addresses)],
    };
    let Some(mut s) = store() else { return };
    s.slap_format(
        &format(vec![
            addr("MyFirstNetworkInterface", "MyFirstIpAddress"),
            addr("MySecondNetworkInterface", "fd00::1"),
            addr("eth0", "not an ip / ../x"),
        ]),
        1,
    )
    .unwrap();
    // SLAP answers: every address as given, each with its own interface.
    let slap = s
        .slap_partition("COMP", "MyFirstPartition")
        .unwrap()
        .unwrap();
    assert_eq!(
        slap.ip_list,
        [
            ("MyFirstNetworkInterface".into(), "MyFirstIpAddress".into()),
            ("MySecondNetworkInterface".into(), "fd00::1".into()),
            ("eth0".into(), "not an ip / ../x".into()),
        ]
    );
    // Native side: only the IP literal; the desired state a node decodes is unaffected.
    let c = cid("COMP");
    let info = s.computer(&c).unwrap();
    assert_eq!(info.partitions[0].addresses, ["fd00::1"]);
    let desired = s.desired(&c, None).unwrap().unwrap();
    let wire = serde_json::to_string(&desired).unwrap();
    let back: slapos_proto::DesiredState = serde_json::from_str(&wire).unwrap();
    assert_eq!(back, desired);
    let info_wire = serde_json::to_string(&info).unwrap();
    assert!(!info_wire.contains("MyFirstIpAddress"), "{info_wire}");

    // Refused, and nothing changed: empty or control characters, an over-long text.
    for bad in [
        addr("eth0", ""),
        addr("eth0", "a\nb"),
        addr("", "fd00::2"),
        addr("eth0", &"x".repeat(crate::store::MAX_ADDRESS_TEXT + 1)),
        SlapAddress {
            netmask: "m\u{7}".into(),
            ..addr("eth0", "fd00::2")
        },
    ] {
        let e = s.slap_format(&format(vec![bad.clone()]), 2).unwrap_err();
        assert!(
            matches!(e, StoreError::Invalid(ref m) if m.contains("MyFirstPartition")),
            "{bad:?}: {e}"
        );
    }
    assert_eq!(
        s.slap_partition("COMP", "MyFirstPartition")
            .unwrap()
            .unwrap()
            .ip_list
            .len(),
        3
    );
}

#[test]
fn usage_totals_count_each_new_sample_once_and_list_partitions_with_their_instances() {
    let Some(mut s) = ready(2) else { return };
    s.request(&req("web", SR), None, 2).unwrap();
    // A journal's samples are made from the partitions and their instances, in one
    // transaction.
    let mut parts = Vec::new();
    let ack = s
        .record_mapped_usage(&cid("C1"), 4, |p| {
            parts = p.to_vec();
            Vec::new()
        })
        .unwrap();
    assert_eq!((ack.stored, ack.duplicates), (0, 0));
    assert_eq!(
        parts,
        [
            (pid("slappart0"), Some(title("web"))),
            (pid("slappart1"), None)
        ]
    );
    assert!(matches!(
        s.record_mapped_usage(&cid("NOPE"), 4, |_| Vec::new()),
        Err(StoreError::NotFound(_))
    ));
    let sample = |p: &str, start: u64| UsageSample {
        partition: pid(p),
        instance: None,
        start_ms: start,
        end_ms: start + 1_000,
        cpu_ns: 2_000_000_000,
        memory_bytes: 1 << 20,
        memory_peak_bytes: 1 << 20,
        io_read_bytes: 10,
        io_write_bytes: 20,
        disk_bytes: 1 << 30,
        tasks: 1,
        folded: 1,
    };
    let batch = UsageBatch {
        samples: vec![sample("slappart0", 1_000), sample("slappart1", 1_000)],
    };
    s.record_usage(&cid("C1"), &batch, 5).unwrap();
    // Resent with one new sample: only that one adds up.
    let mut again = batch.clone();
    again.samples.push(sample("slappart0", 2_000));
    let ack = s.record_usage(&cid("C1"), &again, 6).unwrap();
    assert_eq!((ack.stored, ack.duplicates), (1, 2));
    let totals = s.usage_totals().unwrap();
    assert_eq!(totals.len(), 1);
    let (c, t) = &totals[0];
    assert_eq!(c, "C1");
    assert_eq!(t.samples, 3);
    assert_eq!(t.cpu_seconds(), 6.0);
    assert_eq!((t.io_read_bytes, t.io_write_bytes), (30.0, 60.0));
    assert!((t.disk_gib_hours() - 3.0 / 3600.0).abs() < 1e-12, "{t:?}");
    // The totals agree with the report over every sample.
    let report = s.usage_report(0, u64::MAX, UsageBy::Computer).unwrap();
    assert_eq!(report.rows[0].cpu_seconds, t.cpu_seconds());
    assert_eq!(report.rows[0].samples, t.samples);
}

fn shared_req(t: &str, url: &str, k: &str, v: &str) -> InstanceRequest {
    InstanceRequest {
        shared: true,
        ..with_param(req(t, url), k, v)
    }
}

fn hosted(s: &mut Store) -> Vec<(String, Params)> {
    assignment(s, "C1", "slappart0")
        .unwrap()
        .shared
        .into_iter()
        .map(|e| (e.reference, e.parameters))
        .collect()
}

#[test]
fn native_shared_instances_attach_to_a_host_publish_and_detach() {
    let Some(mut s) = ready(2) else { return };
    // No host yet: a 409 naming what is missing; nothing stored.
    let before = s.dump();
    let e = s
        .request_shared(&shared_req("a", SR, "path", "x"), None, 1)
        .unwrap_err();
    assert!(matches!(e, StoreError::NoAllocation(_)), "{e:?}");
    assert!(e.to_string().contains(SR), "{e}");
    assert!(
        e.to_string().contains("request the host instance first"),
        "{e}"
    );
    assert_eq!(s.dump(), before);

    let host = s.request(&req("proxy", SR), None, 2).unwrap();
    let r0 = host.revision;
    let a = s
        .request_shared(&shared_req("a", SR, "message", "hello a"), None, 3)
        .unwrap();
    assert!(a.shared);
    assert_eq!(
        (a.computer.as_str(), a.partition.as_str()),
        ("C1", "slappart0")
    );
    let mut b = shared_req("b", SR, "message", "hello b");
    b.parameters.insert("weight".into(), 3.into());
    s.request_shared(&b, None, 4).unwrap();
    let list = hosted(&mut s);
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].0, "_a");
    assert_eq!(list[0].1["message"], "hello a");
    assert_eq!(
        list[1].1["weight"], 3,
        "JSON types survive the marshalled column"
    );
    // It has no partition of its own: slappart1 stays free.
    assert!(assignment(&mut s, "C1", "slappart1").is_none());
    let r1 = assignment(&mut s, "C1", "slappart0").unwrap().revision;
    assert!(r1 > r0);

    // Identical re-request: nothing changes; another parameter: the host is bumped.
    s.take_touched();
    s.request_shared(&shared_req("a", SR, "message", "hello a"), None, 5)
        .unwrap();
    assert!(s.take_touched().is_empty());
    s.request_shared(&shared_req("a", SR, "message", "changed"), None, 6)
        .unwrap();
    let r2 = assignment(&mut s, "C1", "slappart0").unwrap().revision;
    assert!(r2 > r1);
    assert_eq!(hosted(&mut s)[0].1["message"], "changed");

    // The host publishes for each shared instance; each shows its own.
    let mut conn = Params::new();
    conn.insert("url".into(), "http://h/".into());
    let mut shared = BTreeMap::new();
    for r in ["_a", "_b", "_unknown"] {
        let mut p = Params::new();
        p.insert("url".into(), format!("http://h/{r}/").into());
        shared.insert(r.to_owned(), p);
    }
    let publish = ConnectionPublish {
        parameters: conn,
        shared,
    };
    s.publish(&cid("C1"), &pid("slappart0"), &publish, 7)
        .unwrap();
    let a = s.instance(&title("a"), None).unwrap();
    assert_eq!(a.connection["url"], "http://h/_a/");
    let (b, _) = s.instance_owned(&title("b"), None).unwrap();
    assert_eq!(b.connection["url"], "http://h/_b/");
    assert_eq!(
        s.instance(&title("proxy"), None).unwrap().connection["url"],
        "http://h/"
    );

    // A title of an instance with a partition is not a shared one; stopped is refused.
    assert!(matches!(
        s.request_shared(&shared_req("proxy", SR, "k", "v"), None, 8),
        Err(StoreError::Conflict(_))
    ));
    let mut stop = shared_req("a", SR, "message", "changed");
    stop.state = Some(InstanceState::Stopped);
    assert!(matches!(
        s.request_shared(&stop, None, 8),
        Err(StoreError::Invalid(_))
    ));

    // Destroy: detached from the host (bumped), its connection parameters gone.
    let mut gone = shared_req("a", SR, "message", "changed");
    gone.state = Some(InstanceState::Destroyed);
    let info = s.request_shared(&gone, None, 9).unwrap();
    assert_eq!(info.state, InstanceState::Destroyed);
    let r3 = assignment(&mut s, "C1", "slappart0").unwrap().revision;
    assert!(r3 > r2);
    let list = hosted(&mut s);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].0, "_b");
    assert!(matches!(
        s.instance(&title("a"), None),
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.request_shared(&gone, None, 10),
        Err(StoreError::NotFound(_))
    ));
    // The SLAP view of the host lists the same single entry.
    let slap = s.slap_partition("C1", "slappart0").unwrap().unwrap();
    assert_eq!(slap.instance.unwrap().shared.len(), 1);

    // A host being destroyed takes no new shared instance; once freed, its own go with it.
    s.set_state(&title("proxy"), InstanceState::Destroyed)
        .unwrap();
    assert!(matches!(
        s.request_shared(&shared_req("c", SR, "k", "v"), None, 11),
        Err(StoreError::NoAllocation(_))
    ));
    node_reports(&mut s, &pid("slappart0"), InstanceState::Destroyed).unwrap();
    assert!(matches!(
        s.instance(&title("b"), None),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn a_shared_instance_requested_by_a_partition_is_its_child_and_sla_picks_the_host() {
    let Some(mut s) = ready(3) else { return };
    s.request(&req("proxy", SR), None, 1).unwrap();
    let second = s
        .request(&with_param(req("proxy2", SR), "n", "2"), None, 2)
        .unwrap();
    let app = s.request(&req("app", SR), None, 3).unwrap();
    let mut r = shared_req("front", SR, "k", "v");
    r.sla.insert(
        "instance_guid".into(),
        format!("C1-{}", second.partition.as_str()),
    );
    let front = s
        .request_shared(&r, Some(&at("C1", app.partition.as_str())), 4)
        .unwrap();
    assert_eq!(front.partition, second.partition);
    assert_eq!(front.root_title.as_str(), "app");
    assert_eq!(
        front.requester.as_deref(),
        Some(format!("C1/{}", app.partition.as_str()).as_str())
    );
    // The requester sees it among its children once the host publishes for it.
    let mut shared = BTreeMap::new();
    let mut p = Params::new();
    p.insert("url".into(), "http://f/".into());
    shared.insert("app_front".to_owned(), p);
    s.publish(
        &cid("C1"),
        &second.partition,
        &ConnectionPublish {
            parameters: Params::new(),
            shared,
        },
        5,
    )
    .unwrap();
    let kids = assignment(&mut s, "C1", app.partition.as_str())
        .unwrap()
        .children;
    assert_eq!(kids["front"]["url"], "http://f/");
    // An SLA key other than the two host selectors is refused.
    let mut bad = shared_req("x", SR, "k", "v");
    bad.sla.insert("region".into(), "eu".into());
    assert!(matches!(
        s.request_shared(&bad, None, 6),
        Err(StoreError::Invalid(_))
    ));
}

/// slapproxy's `test_two_same_request_from_one_partition`: `time.time()` (microseconds) read
/// before a request is never later than the instance's timestamp (its revision, in ms, floored
/// by the store's clock when its transaction begins).
#[test]
fn the_revision_clock_is_no_earlier_than_a_microsecond_clock_read_before() {
    for _ in 0..100 {
        let before_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros();
        let floor = wall_clock_ms();
        assert!(
            u128::from(floor) * 1000 >= before_us,
            "clock {floor} ms is before the clock read {before_us} µs"
        );
    }
}

/// The due delegated request titled `t`.
fn due_titled(s: &mut Store, t: &str) -> federation::Delegation {
    s.delegations_due(100, 10)
        .unwrap()
        .into_iter()
        .find(|d| d.title == t)
        .unwrap()
}

/// Federation (migration 10): a delegated request is idempotent by title, a local title stays
/// local, an outcome for an older revision leaves the newer one due, and a delegated child's
/// connection parameters reach its requester's desired state.
#[test]
fn delegated_requests_are_idempotent_and_their_connections_reach_the_requester() {
    use federation::{Outcome, remote_title};
    let Some(mut s) = ready(2) else { return };
    const B: &str = "http://b";
    let r = with_param(req("web", SR2), "k", "v");
    let first = s.delegate(&r, None, Some("user:alice"), B, 10).unwrap();
    assert_eq!(first.computer.as_str(), federation::DELEGATED_COMPUTER);
    assert_eq!(
        s.root_owner(&title("web")).unwrap(),
        Some(Some("user:alice".into()))
    );
    let again = s.delegate(&r, None, None, B, 11).unwrap();
    assert_eq!(again.revision, first.revision);
    assert!(s.take_touched().is_empty(), "no computer changed");
    // A destruction of a title that exists nowhere is a 404, as for a local one.
    let mut gone = req("nothing", SR2);
    gone.state = Some(InstanceState::Destroyed);
    assert!(matches!(
        s.delegate(&gone, None, None, B, 12),
        Err(StoreError::NotFound(_))
    ));

    // The loop reads revision N; a change lands (N+1) before its outcome is recorded: the
    // row stays due for N+1 and keeps the connection parameters it was answered.
    let due = s.delegations_due(100, 10).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].request.title.as_str(), "web");
    assert!(due[0].request.sla.is_empty());
    let changed = s
        .delegate(&with_param(r.clone(), "k", "w"), None, None, B, 13)
        .unwrap();
    assert!(changed.revision > first.revision);
    let answered = Outcome::Accepted {
        connection: [("url".to_owned(), "http://x/".into())]
            .into_iter()
            .collect(),
        placed: None,
    };
    s.delegation_outcome(&due[0], &answered, 5_000).unwrap();
    let info = s.instance(&title("web"), None).unwrap();
    assert_eq!(info.connection["url"], "http://x/");
    assert!(info.reported.is_none(), "revision N+1 not forwarded yet");
    let due = s.delegations_due(100, 10).unwrap();
    assert_eq!(
        due[0].revision, changed.revision,
        "still due for the change"
    );
    s.delegation_outcome(&due[0], &answered, 5_000).unwrap();
    assert!(s.delegations_due(100, 10).unwrap().is_empty());
    assert!(s.instance(&title("web"), None).unwrap().reported.is_some());

    // A title allocated here stays here, even when a remote would be chosen for it now.
    let local = s.request(&req("app", SR), None, 20).unwrap();
    assert_eq!(local.computer.as_str(), "C1");
    let still = s.delegate(&req("app", SR), None, None, B, 21).unwrap();
    assert_eq!(still.computer.as_str(), "C1");

    // A child delegated by the instance on C1/slappart0: its connection parameters reach the
    // parent's desired state, with a new revision for the parent.
    let from = at("C1", local.partition.as_str());
    let child = s
        .delegate(&req("db", SR2), Some(&from), None, B, 22)
        .unwrap();
    assert_eq!(child.root_title.as_str(), "app");
    assert_eq!(child.requester.as_deref(), Some("C1/slappart0"));
    let d = due_titled(&mut s, "db");
    assert_eq!(d.request.title.as_str(), remote_title("app", "db"));
    assert_eq!(d.request.title.as_str(), "app_db");
    let before = assignment(&mut s, "C1", local.partition.as_str())
        .unwrap()
        .revision;
    s.delegation_outcome(&d, &answered, 5_000).unwrap();
    let a = assignment(&mut s, "C1", local.partition.as_str()).unwrap();
    assert!(a.revision > before);
    assert_eq!(a.children["db"]["url"], "http://x/");
    let shown = s.instance(&title("db"), Some(&title("app"))).unwrap();
    assert_eq!(shown.connection["url"], "http://x/");

    // Destroyed and accepted by the remote: forgotten.
    s.set_state(&title("web"), InstanceState::Destroyed)
        .unwrap();
    let d = due_titled(&mut s, "web");
    assert_eq!(d.request.state, Some(InstanceState::Destroyed));
    s.delegation_outcome(&d, &Outcome::Destroyed, 0).unwrap();
    assert!(matches!(
        s.instance(&title("web"), None),
        Err(StoreError::NotFound(_))
    ));
}

/// A tree's requested state reaches its delegated children (to be forwarded), as it reaches its
/// local instances.
#[test]
fn a_trees_state_reaches_its_delegated_children() {
    let Some(mut s) = ready(1) else { return };
    let app = s.request(&req("app", SR), None, 1).unwrap();
    let from = at("C1", app.partition.as_str());
    let child = s
        .delegate(&req("db", SR2), Some(&from), None, "http://b", 2)
        .unwrap();
    s.set_state(&title("app"), InstanceState::Stopped).unwrap();
    let d = due_titled(&mut s, "db");
    assert_eq!(d.request.state, Some(InstanceState::Stopped));
    assert!(d.revision > child.revision);
    s.set_state(&title("app"), InstanceState::Destroyed)
        .unwrap();
    assert_eq!(
        due_titled(&mut s, "db").request.state,
        Some(InstanceState::Destroyed)
    );
    // Destroyed is final: a later start of the tree does not bring the child back.
    s.set_state(&title("app"), InstanceState::Started).unwrap();
    assert_eq!(
        due_titled(&mut s, "db").request.state,
        Some(InstanceState::Destroyed)
    );
}

/// No node may register as the computer delegated requests show (`federated`).
#[test]
fn the_delegated_computer_id_is_reserved() {
    let Some(mut s) = store() else { return };
    let e = s
        .register(
            &registration(federation::DELEGATED_COMPUTER, &["slappart0"], &[]),
            1,
        )
        .unwrap_err();
    assert!(matches!(e, StoreError::Invalid(_)), "{e}");
    assert!(e.to_string().contains("reserved"), "{e}");
}

/// Partitions whose `busy` flag (migration 11, kept by triggers on `instance`) disagrees with
/// the instances holding them.
fn busy_flag_mismatches(s: &Store) -> Vec<String> {
    s.connection()
        .query_map(
            "SELECT p.computer || '/' || p.id FROM partition p
             WHERE p.busy <> CASE WHEN EXISTS (SELECT 1 FROM instance i
                 WHERE i.computer = p.computer AND i.partition = p.id) THEN 1 ELSE 0 END",
            [],
            |r| r.get(0),
        )
        .unwrap()
}

#[test]
fn partition_busy_flags_follow_allocation_and_freeing() {
    let Some(mut s) = ready(3) else { return };
    let a = s.request(&req("a", SR), None, 2).unwrap();
    let b = s.request(&req("b", SR), None, 3).unwrap();
    assert_eq!(busy_flag_mismatches(&s), Vec::<String>::new());
    s.set_state(&title("a"), InstanceState::Destroyed).unwrap();
    assert!(
        node_reports(&mut s, &a.partition, InstanceState::Destroyed)
            .unwrap()
            .freed
    );
    assert_eq!(busy_flag_mismatches(&s), Vec::<String>::new());
    // The freed partition is the lowest free one again: allocation reads the flag.
    let c = s.request(&req("c", SR), None, 4).unwrap();
    assert_eq!(c.partition, a.partition);
    assert_ne!(c.partition, b.partition);
    let d = s.request(&req("d", SR), None, 5).unwrap();
    assert_eq!(busy_flag_mismatches(&s), Vec::<String>::new());
    let err = s.request(&req("e", SR), None, 6).unwrap_err();
    assert!(matches!(err, StoreError::NoAllocation(_)), "{err} ({d:?})");
}
