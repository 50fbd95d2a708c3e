//! A node's long poll over mTLS, as the master serves it: parked outside hyper while nothing
//! is new (server.rs; `slapos_master_long_polls_parked` counts it), woken by a change, answered `304` when its own wait ends (the time it
//! spent parked counts), refused at once for a revoked certificate; the connection goes on
//! with other calls in between.

mod common;

use std::time::{Duration, Instant};

use common::{Env, Server, available, cid, ok, registration, run, s};
use slapos_client::{Client, ClientError};

fn status<T>(r: &Result<T, ClientError>) -> Option<u16> {
    r.as_ref().err().and_then(ClientError::status)
}

#[test]
fn a_nodes_long_poll_waits_is_woken_and_ends_on_time() {
    let env = Env::new();
    let ops = env.user("ops", true);
    let server = Server::start_tls(&env.db(), &env.tls(), "warn");
    let (url, ca) = (server.url.clone(), env.ca_pem());
    let admin = ops.client(&url, &ca);
    admin.register(&registration("N1", &["slappart0"])).unwrap();
    let cred = Client::enroll(&url, &ca, &env.token("N1", "600")).unwrap();
    let node = Client::with_identity(&url, &ca, &cred.cert_pem, &cred.key_pem).unwrap();
    let n1 = cid("N1");
    let etag = node.desired(&n1, None, None).unwrap().unwrap().etag;

    // Held while nothing changes, answered at once when something does.
    let poll = {
        let (node, n1, etag) = (node.clone(), n1.clone(), etag.clone());
        std::thread::spawn(move || node.desired(&n1, Some(&etag), Some(Duration::from_secs(30))))
    };
    std::thread::sleep(Duration::from_millis(700));
    assert!(!poll.is_finished(), "answered while nothing changed");
    // It waits outside hyper, not inside it.
    let gauges = admin.metrics().unwrap();
    for want in [
        "slapos_master_long_polls_held 1\n",
        "slapos_master_long_polls_parked 1\n",
    ] {
        assert!(gauges.contains(want), "`{want}` not in:\n{gauges}");
    }
    admin.supply(&n1, &available("/srv/sr/a.toml")).unwrap();
    let new = poll
        .join()
        .unwrap()
        .unwrap()
        .expect("the new desired state");
    assert_ne!(new.etag, etag);

    // Nothing changes: `304` once its own wait is over, not after a second one.
    let t = Instant::now();
    let same = node
        .desired(&n1, Some(&new.etag), Some(Duration::from_secs(2)))
        .unwrap();
    let took = t.elapsed();
    assert!(same.is_none(), "304 expected, got {same:?}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "a 2 s wait answered after {took:?}"
    );
    // The same client (its kept-alive connection) makes other calls in between.
    node.health().unwrap();
    let gauges = admin.metrics().unwrap();
    assert!(
        gauges.contains("slapos_master_long_polls_parked 0\n"),
        "{gauges}"
    );

    // A revoked certificate is not parked: refused at once.
    ok(run(&[
        "cert",
        "revoke",
        "--identity",
        "computer:N1",
        "--db",
        s(&env.db()),
    ]));
    let t = Instant::now();
    let r = node.desired(&n1, Some(&new.etag), Some(Duration::from_secs(20)));
    assert_eq!(status(&r), Some(403), "{r:?}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "held before refusing"
    );
}
