//! Federation (issue 15, part 4): a master delegates requests to another master, slapproxy's
//! multimaster.
//!
//! ```text
//!  master A (serve --federate B,release=hello-web | serve --cfg with [multimaster/B])
//!   ├─ node COMP-A (never gets the delegated instance)
//!   └─ delegates hello-web ──► master B (serve)
//!                               └─ node COMP-B converges it; its connection parameters go
//!                                  back to A, where the requester reads them
//! ```
//!
//! * native: A speaks B's native API; the request on A converges on B's node and the page's
//!   URL reaches the requester on A. Then B stops: a new request on A stays pending with a
//!   status naming the unreachable remote (`GET /v1/instances/{title}` and `request --wait`
//!   progress), and completes once B is back on the same port and database.
//! * slapproxy's configuration: A is `serve --cfg` with a `[multimaster/B]` section listing
//!   hello-web; the real `slapos request` CLI (slapos.core 1.26.1, `.venv/slapos`) asks A, A
//!   forwards over the SLAP wire to B, and the CLI prints the connection parameters B's node
//!   published.
//! * the reverse: the real slapproxy with a `[multimaster/B]` section forwards to master-lite B
//!   (its SLAP routes as a multimaster remote), the instance converges on B's node.
//! * master-lite A delegating over SLAP to the real slapproxy B, whose node runs
//!   `protocol = "slap"`: the connection parameters come back from slapproxy's answers.
//!
//! Real processes throughout (both masters, both nodes, hello-web, the slapos CLI, slapproxy);
//! needs python3 (hello-web) and, for the last three, the venv (`scripts/deps/slapos-venv.sh`;
//! skipped with a reason without it, failing under `SLAPOS_REQUIRE_TOOLS=1`). Run: `cargo build --workspace --bins && cargo test -p slapos-tests
//! --test federation`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use slapos_proto::{ComputerId, InstanceTitle, SoftwareUrl};
use slapos_test_support::gate::{self, Need, skip};
use slapos_tests::{
    Client, Master, Node, Proc, bin, example_release, http_get, instance_request, output_text,
    params, repo_root, supply, url_in, wait_for,
};

const LONG: Duration = Duration::from_secs(120);

/// `slapos-master serve ARGS` on a free loopback port, and its URL.
fn serve(name: &str, args: &[&str], dir: &Path) -> (Proc, String) {
    let mut cmd = Command::new(bin("slapos-master"));
    cmd.arg("serve").args(args).current_dir(dir);
    let proc = Proc::spawn(name, cmd);
    let line = proc.wait_line("listening on http://", Duration::from_secs(30));
    (proc, url_in(&line).expect("url in the listening line"))
}

/// Master A (`serve --federate SPEC`, database `dir/a.db`), its URL and a client.
fn federated_master(dir: &Path, spec: &str) -> (Proc, String, Client) {
    let a_db = dir.join("a.db");
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--db",
        path(&a_db),
        "--federate",
        spec,
    ];
    let (proc, url) = serve("master-a", &args, dir);
    let client = Client::new(&url).expect("client of A");
    (proc, url, client)
}

/// Master B with node COMP-B (hello-web supplied), and node COMP-A on `a_url`.
fn nodes(dir: &Path, b: &Master, a_url: &str) -> (Node, Node) {
    let node_a = Node::start_with(&dir.join("node-a"), a_url, "COMP-A", 1, "rt = false\n");
    (node_a, node_b(dir, b))
}

/// Node COMP-B on master B, registered, with hello-web supplied.
fn node_b(dir: &Path, b: &Master) -> Node {
    let node = Node::start_with(&dir.join("node-b"), &b.url, "COMP-B", 2, "rt = false\n");
    let bc = b.client();
    wait_for("COMP-B registered", LONG, || {
        bc.computer(&ComputerId::parse("COMP-B").ok()?).ok()
    });
    supply(&bc, "COMP-B", &example_release("hello-web"));
    node
}

/// The connection parameter `key` of `title` on `c`, once published.
fn published(c: &Client, title: &str, key: &str) -> String {
    let t = InstanceTitle::parse(title).expect("title");
    wait_for(
        &format!("{title}'s {key} on the requester's master"),
        LONG,
        || {
            let i = c.instance(&t, None).ok()?;
            Some(i.connection.get(key)?.as_str()?.to_owned())
        },
    )
}

/// Instance `web` as B shows it, allocated on COMP-B.
fn web_on_comp_b(b: &Master) -> slapos_proto::InstanceInfo {
    let on_b = b
        .client()
        .instance(&InstanceTitle::parse("web").expect("title"), None)
        .expect("web on B");
    assert_eq!(on_b.computer.as_str(), "COMP-B");
    on_b
}

/// No partition of COMP-A holds an instance (the delegated ones are not allocated there).
fn nothing_allocated_on_a(a: &Client) {
    let list = a.instances().expect("instances on A");
    assert!(
        list.iter().all(|i| i.computer.as_str() != "COMP-A"),
        "{list:#?}"
    );
}

#[test]
fn a_request_delegated_to_another_master_converges_there_and_comes_back() {
    const TEST: &str = "a_request_delegated_to_another_master_converges_there_and_comes_back";
    if !gate::tool(TEST, "python3") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let web = example_release("hello-web");

    let b = Master::start(&dir.join("b.db"));
    let b_addr = b.addr();
    let spec = format!("{},release={web}", b.url);
    let (_a, a_url, a) = federated_master(dir, &spec);
    let (_node_a, _node_b) = nodes(dir, &b, &a_url);
    wait_for("COMP-A registered", LONG, || {
        a.computer(&ComputerId::parse("COMP-A").ok()?).ok()
    });

    // The request on A answers at once, delegated; B's node converges it.
    let first_request = instance_request("web", &web, params(json!({"title": "Federated page"})));
    let info = a.request(&first_request).expect("request on A");
    assert_eq!(info.computer.as_str(), "federated", "{info:?}");
    let status = info.bang.clone().unwrap_or_default();
    assert!(
        status.starts_with(&format!("delegated to {}", b.url)),
        "{status}"
    );
    let url = published(&a, "web", "url");
    let page = wait_for("the page", LONG, || http_get(&url));
    assert!(page.contains("Federated page"), "{page}");
    // It runs on COMP-B, requested on B by A under the same title.
    let on_b = web_on_comp_b(&b);
    assert_eq!(
        on_b.connection.get("url").and_then(|v| v.as_str()),
        Some(url.as_str())
    );
    nothing_allocated_on_a(&a);
    // Idempotent by title: the same request again changes nothing.
    let again = a.request(&first_request).expect("request again");
    assert_eq!(again.revision, info.revision);
    // A parameter change travels to B and the new page comes back.
    a.request(&instance_request(
        "web",
        &web,
        params(json!({"title": "Changed on A"})),
    ))
    .expect("change on A");
    wait_for("the changed page", LONG, || {
        http_get(&url).filter(|p| p.contains("Changed on A"))
    });

    // B goes away: a new request stays pending with the reason, also in `request --wait`.
    drop(b);
    let info = a
        .request(&instance_request(
            "web2",
            &web,
            params(json!({"title": "While B was away"})),
        ))
        .expect("request on A while B is down");
    assert!(info.connection.is_empty());
    let t2 = InstanceTitle::parse("web2").expect("title");
    let status = wait_for("the unreachable status", LONG, || {
        let s = a.instance(&t2, None).ok()?.bang?;
        s.contains("remote unreachable").then_some(s)
    });
    assert!(
        status.starts_with(&format!(
            "delegated to http://{b_addr}: pending, remote unreachable"
        )),
        "{status}"
    );
    assert!(status.ends_with("; retrying"), "{status}");
    let wait = Command::new(bin("slapos-master"))
        .args(["--master", &a_url, "request", "web2", web.as_str()])
        .args(["--param", "title=While B was away", "--wait", "2"])
        .output()
        .expect("run slapos-master request --wait");
    let stderr = String::from_utf8_lossy(&wait.stderr);
    assert_eq!(wait.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("remote unreachable"), "{stderr}");
    nothing_allocated_on_a(&a);

    // B comes back (same port, same database): the pending request completes.
    let b = Master::start_on(&dir.join("b.db"), &b_addr);
    let url2 = published(&a, "web2", "url");
    let page = wait_for("the second page", LONG, || http_get(&url2));
    assert!(page.contains("While B was away"), "{page}");
    let done = a.instance(&t2, None).expect("web2 on A");
    assert!(
        done.bang
            .as_deref()
            .is_some_and(|s| s.contains("connection parameters received")),
        "{done:?}"
    );

    // Destroying on A destroys on B, and A forgets the delegation once B accepted it.
    a.set_state(
        &t2,
        &slapos_proto::StateChange {
            state: slapos_proto::InstanceState::Destroyed,
        },
    )
    .expect("destroy web2 on A");
    wait_for("web2 forgotten on A", LONG, || {
        a.instance(&t2, None).is_err().then_some(())
    });
    let bc = b.client();
    wait_for("web2's partition freed on B", LONG, || {
        bc.instance(&t2, None).is_err().then_some(())
    });
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The venv's `bin` directory and a temporary directory, `None` (after printing why) when the
/// test `test` must be skipped (no python3 for hello-web, no venv).
fn with_venv(test: &str) -> Option<(PathBuf, tempfile::TempDir)> {
    if !gate::tool(test, "python3") {
        return None;
    }
    Some((venv()?, tempfile::tempdir().expect("tempdir")))
}

/// The venv's `bin` directory, `None` (after printing why) when the test must be skipped.
fn venv() -> Option<PathBuf> {
    let v = repo_root().join(".venv/slapos/bin");
    if !v.join("slapos").exists() {
        skip(
            Need::Tools,
            "federation",
            &format!("{} missing: run scripts/deps/slapos-venv.sh", v.display()),
        );
        return None;
    }
    Some(v)
}

/// The value of `'key': '…'` in the slapos CLI's printed connection dictionary.
fn printed(output: &str, key: &str) -> Option<String> {
    let start = output.find(&format!("'{key}': '"))? + key.len() + 5;
    let end = output[start..].find('\'')?;
    Some(output[start..start + end].to_owned())
}

/// `dir/name`, the slapos CLI's configuration for `master`.
fn client_cfg(dir: &Path, name: &str, master: &str) -> PathBuf {
    let cfg = dir.join(name);
    std::fs::write(
        &cfg,
        format!("[slapos]\nmaster_url = {master}\nmaster_rest_url = {master}/hateoas\n"),
    )
    .expect("write the CLI's configuration");
    cfg
}

/// `slapos request web WEB --parameters title=TITLE` against `master`, run until it prints the
/// connection parameter `url`; its whole output.
fn cli_until_printed(
    venv: &Path,
    dir: &Path,
    master: &str,
    web: &SoftwareUrl,
    title: &str,
) -> String {
    let cfg = client_cfg(dir, "client.cfg", master);
    let param = format!("title={title}");
    wait_for("the slapos CLI to print the url", LONG, || {
        let o = Command::new(venv.join("slapos"))
            .args(["request", "web", web.as_str(), "--parameters", &param])
            .arg("--cfg")
            .arg(&cfg)
            .current_dir(dir)
            .output()
            .ok()?;
        let text = output_text(&o);
        if printed(&text, "url").is_none() {
            std::thread::sleep(Duration::from_millis(500));
            return None;
        }
        Some(text)
    })
}

#[test]
fn serve_cfg_forwards_a_multimaster_release_over_slap() {
    const TEST: &str = "serve_cfg_forwards_a_multimaster_release_over_slap";
    let Some((venv, tmp)) = with_venv(TEST) else {
        return;
    };
    let dir = tmp.path();
    let web = example_release("hello-web");

    let b = Master::start(&dir.join("b.db"));
    // slapproxy's configuration file, with a multimaster section for B (SLAP, plain http).
    let cfg = dir.join("slapos-proxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "[slapos]\ncomputer_id = COMP-A\n\n[slapproxy]\nhost = 127.0.0.1\nport = 0\n\
             database_uri = {}\n\n[multimaster/{}]\nsoftware_release_list =\n  {web}\n",
            dir.join("a.db").display(),
            b.url
        ),
    )
    .expect("write slapos-proxy.cfg");
    let (_a, a_url) = serve("master-a", &["--cfg", path(&cfg)], dir);
    let (_node_a, _node_b) = nodes(dir, &b, &a_url);
    // The real CLI asks A until it prints the connection parameters B's node published.
    let text = cli_until_printed(&venv, dir, &a_url, &web, "Over SLAP");
    assert_eq!(
        printed(&text, "title").as_deref(),
        Some("Over SLAP"),
        "{text}"
    );
    let url = printed(&text, "url").unwrap_or_default();
    let page = wait_for("the page", LONG, || http_get(&url));
    assert!(page.contains("Over SLAP"), "{page}");
    // Allocated on B's node, nothing on A's.
    web_on_comp_b(&b);
    nothing_allocated_on_a(&Client::new(&a_url).expect("client of A"));
}

/// The real slapproxy (`slapos proxy start`) with computer `computer` and `extra` sections in
/// its configuration, and its URL. It cannot take port 0: a port that was free a moment ago.
fn slapproxy(venv: &Path, dir: &Path, computer: &str, extra: &str) -> (Proc, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let cfg = dir.join("slapos-proxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "[slapos]\ncomputer_id = {computer}\n\n[slapproxy]\nhost = 127.0.0.1\nport = {port}\n\
             database_uri = {}\n\n{extra}",
            dir.join("proxy.db").display(),
        ),
    )
    .expect("write slapos-proxy.cfg");
    let mut cmd = Command::new(venv.join("slapos"));
    cmd.args(["proxy", "start", "--cfg"])
        .arg(&cfg)
        .current_dir(dir);
    let proc = Proc::spawn("slapproxy", cmd);
    wait_for("slapproxy to listen", LONG, || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(drop)
    });
    (proc, format!("http://127.0.0.1:{port}"))
}

/// The reverse: the real slapproxy (`slapos proxy start`) with a `[multimaster/B]` section
/// forwards, synchronously and as slapproxy does, to master-lite B's SLAP routes; B's node
/// converges it and the CLI asking slapproxy prints its connection parameters.
#[test]
fn slapproxy_forwards_to_master_lite_as_its_multimaster() {
    const TEST: &str = "slapproxy_forwards_to_master_lite_as_its_multimaster";
    let Some((venv, tmp)) = with_venv(TEST) else {
        return;
    };
    let dir = tmp.path();
    let web = example_release("hello-web");

    let b = Master::start(&dir.join("b.db"));
    let _node_b = node_b(dir, &b);
    let bc = b.client();
    let extra = format!(
        "[multimaster/{}]\nsoftware_release_list =\n  {web}\n",
        b.url
    );
    let (_a, a_url) = slapproxy(&venv, dir, "COMP-A", &extra);
    let text = cli_until_printed(&venv, dir, &a_url, &web, "From slapproxy");
    let url = printed(&text, "url").unwrap_or_default();
    let page = wait_for("the page", LONG, || http_get(&url));
    assert!(page.contains("From slapproxy"), "{page}");
    // slapproxy names it `<requester>_<title>` there: `user_web`, allocated on COMP-B.
    let on_b = bc
        .instance(&InstanceTitle::parse("user_web").expect("title"), None)
        .expect("user_web on B");
    assert_eq!(on_b.computer.as_str(), "COMP-B");
}

/// master-lite A delegates to the real slapproxy B over SLAP; B's node (`slapos-node` with
/// `protocol = "slap"`) converges the instance and its connection parameters reach A.
#[test]
fn master_lite_forwards_to_a_real_slapproxy() {
    const TEST: &str = "master_lite_forwards_to_a_real_slapproxy";
    let Some((venv, tmp)) = with_venv(TEST) else {
        return;
    };
    let dir = tmp.path();
    let web = example_release("hello-web");

    let (_b, b_url) = slapproxy(&venv, dir, "COMP-B", "");
    let node_b = Node::start_with(
        &dir.join("node-b"),
        &b_url,
        "COMP-B",
        2,
        "rt = false\nprotocol = \"slap\"\n",
    );
    node_b
        .proc
        .as_ref()
        .expect("node running")
        .wait_line("registered", LONG);
    let client_cfg = client_cfg(dir, "client-b.cfg", &b_url);
    let o = Command::new(venv.join("slapos"))
        .args(["supply", web.as_str(), "COMP-B", "--cfg"])
        .arg(&client_cfg)
        .current_dir(dir)
        .output()
        .expect("slapos supply");
    assert!(o.status.success(), "{}", output_text(&o));

    let spec = format!("{b_url},api=slap,release={web}");
    let (_a, _, a) = federated_master(dir, &spec);
    a.request(&instance_request(
        "web",
        &web,
        params(json!({"title": "Behind slapproxy"})),
    ))
    .expect("request on A");
    let url = published(&a, "web", "url");
    let page = wait_for("the page", LONG, || http_get(&url));
    assert!(page.contains("Behind slapproxy"), "{page}");
    let status = a
        .instance(&InstanceTitle::parse("web").expect("title"), None)
        .expect("web on A")
        .bang
        .unwrap_or_default();
    assert!(
        status.contains("on COMP-B/slappart0, connection parameters received"),
        "{status}"
    );
}
