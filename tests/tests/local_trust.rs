//! Who a plain-HTTP caller on the master's own host is (root only): the owner of the client
//! socket, looked up in the kernel (issue 19, item 2), not "whoever reaches loopback".
//!
//! A real `slapos-master serve` on loopback; local users run the real `slapos-master` client
//! (and Python's `urllib` for the partition calls the CLI has no command for):
//!
//! | caller | may |
//! |---|---|
//! | root (the operator) | everything |
//! | a partition's user | what its partition certificate allows: read its instance, request children, publish its connection parameters, bang |
//! | another partition's user | the same on its own partition, nothing on the first |
//! | any other local user (`nobody`) | `/v1/health` only: no supply (so no build step of its choosing), no request, no read |
//!
//! Each refusal is checked to be the master's 403 (the call really reached it), and the allowed
//! calls of the same users succeed, so the refusals come from the rule, not from a broken call.

use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

use serde_json::json;
use slapos_proto::{ComputerId, PartitionId, PartitionSpec, RegisterComputer, SoftwareUrl};
use slapos_tests::users::{TestUsers, uid_of};
use slapos_tests::{Master, bin, instance_request, params, privileged, supply};

const PREFIX: &str = "slaplocaltr";
const SR: &str = "/srv/sr/local-trust.toml";

fn useradd(name: &str) -> u32 {
    let st = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ])
        .status()
        .expect("useradd");
    assert!(st.success(), "useradd {name}");
    uid_of(name).expect("uid of the new user")
}

/// `slapos-master --master URL ARGS…` as `uid`.
fn cli_as(uid: u32, master: &str, args: &[&str]) -> Output {
    Command::new(bin("slapos-master"))
        .arg("--master")
        .arg(master)
        .args(args)
        .uid(uid)
        .gid(uid_gid(uid))
        .env_remove("HOME")
        .output()
        .expect("run slapos-master")
}

fn uid_gid(uid: u32) -> u32 {
    let out = Command::new("id")
        .args(["-g", &uid.to_string()])
        .output()
        .expect("id -g");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(65534)
}

/// One HTTP call as `uid` (Python's urllib: any local user can run it); returns the status.
fn http_as(uid: u32, method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> u16 {
    let script = r#"
import sys, json, urllib.request, urllib.error
method, url, headers, body = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
req = urllib.request.Request(url, data=body.encode() if body else None, method=method, headers=headers)
try:
    print(urllib.request.urlopen(req, timeout=10).status)
except urllib.error.HTTPError as e:
    print(e.code)
"#;
    let hdrs: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    let out = Command::new("python3")
        .args(["-c", script, method, url])
        .arg(serde_json::Value::Object(hdrs).to_string())
        .arg(body)
        .uid(uid)
        .gid(uid_gid(uid))
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().parse().unwrap_or_else(|_| {
        panic!(
            "{method} {url} as {uid}: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn refused(what: &str, out: &Output) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what}: succeeded");
    assert!(err.contains("403"), "{what}: not the master's 403: {err}");
}

fn allowed(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn local_callers_get_exactly_their_own_rights() {
    if !privileged("local_callers_get_exactly_their_own_rights") {
        return;
    }
    let _users = TestUsers::claim(PREFIX);
    let (u0, u1) = (
        useradd(&format!("{PREFIX}0")),
        useradd(&format!("{PREFIX}1")),
    );
    let nobody = uid_of("nobody").expect("nobody");
    let tmp = tempfile::tempdir().expect("tempdir");
    let master = Master::start(&tmp.path().join("master.db"));
    let url = master.url.clone();

    // The node (root, on this host) registers its partitions with their users.
    let c = master.client();
    let part = |i: u32, uid| PartitionSpec {
        id: PartitionId::parse(format!("slappart{i}")).expect("id"),
        addresses: vec![],
        interface: None,
        uid,
    };
    c.register(&RegisterComputer {
        id: ComputerId::parse("COMP-LT").expect("id"),
        partitions: vec![part(0, Some(u0)), part(1, Some(u1)), part(2, None)],
        labels: Default::default(),
    })
    .expect("register");
    let sr = SoftwareUrl::parse(SR).expect("url");
    supply(&c, "COMP-LT", &sr);
    c.request(&instance_request("a", &sr, params(json!({}))))
        .expect("request a");
    c.request(&instance_request("b", &sr, params(json!({}))))
        .expect("request b");

    // nobody: health only.
    assert_eq!(
        http_as(nobody, "GET", &format!("{url}/v1/health"), &[], ""),
        200
    );
    let out = cli_as(nobody, &url, &["list"]);
    refused("nobody: list", &out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("neither this master's operator"),
        "the refusal says why: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    refused(
        "nobody: supply",
        &cli_as(
            nobody,
            &url,
            &["supply", "/srv/sr/evil.toml", "--computer", "COMP-LT"],
        ),
    );
    refused(
        "nobody: request",
        &cli_as(nobody, &url, &["request", "evil", SR]),
    );
    refused("nobody: show a", &cli_as(nobody, &url, &["show", "a"]));

    // The user of slappart0 is partition COMP-LT/slappart0.
    allowed(
        "u0: show a (its own instance)",
        &cli_as(u0, &url, &["show", "a"]),
    );
    refused(
        "u0: show b (another partition's)",
        &cli_as(u0, &url, &["show", "b"]),
    );
    refused(
        "u0: supply",
        &cli_as(
            u0,
            &url,
            &["supply", "/srv/sr/evil.toml", "--computer", "COMP-LT"],
        ),
    );
    refused(
        "u0: request a root instance",
        &cli_as(u0, &url, &["request", "evil", SR]),
    );
    let child = json!({"title": "a-child", "software_url": SR}).to_string();
    let own = [
        ("content-type", "application/json"),
        ("x-slapos-partition", "COMP-LT/slappart0"),
    ];
    let other = [
        ("content-type", "application/json"),
        ("x-slapos-partition", "COMP-LT/slappart1"),
    ];
    assert_eq!(
        http_as(u0, "POST", &format!("{url}/v1/instances"), &own, &child),
        200,
        "u0: child of its own"
    );
    assert_eq!(
        http_as(u0, "POST", &format!("{url}/v1/instances"), &other, &child),
        403,
        "u0: as slappart1"
    );
    let conn = json!({"parameters": {"url": "http://a"}}).to_string();
    let route = |p: &str, what: &str| format!("{url}/v1/computers/COMP-LT/partitions/{p}/{what}");
    let ct = [("content-type", "application/json")];
    assert_eq!(
        http_as(u0, "POST", &route("slappart0", "connection"), &ct, &conn),
        200
    );
    assert_eq!(
        http_as(u0, "POST", &route("slappart1", "connection"), &ct, &conn),
        403
    );
    let bang = json!({"message": "x"}).to_string();
    assert_eq!(
        http_as(u1, "POST", &route("slappart1", "bang"), &ct, &bang),
        200
    );
    assert_eq!(
        http_as(u1, "POST", &route("slappart0", "bang"), &ct, &bang),
        403
    );
    assert_eq!(
        http_as(
            u1,
            "GET",
            &format!("{url}/v1/computers/COMP-LT/desired"),
            &[],
            ""
        ),
        403,
        "u1: the node's desired state"
    );

    // The operator keeps every right, and sees what the partitions did.
    let shown = allowed("root: show a", &cli_as(0, &url, &["show", "a"]));
    assert!(shown.contains("a-child"), "{shown}");
    allowed(
        "root: supply",
        &cli_as(
            0,
            &url,
            &["supply", "/srv/sr/other.toml", "--computer", "COMP-LT"],
        ),
    );
}
