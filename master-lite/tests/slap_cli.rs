//! The classic SLAP protocol of master-lite, driven by the real slapos.core 1.26.1 (`slapos`
//! CLI and `slapos.slap` library from `.venv/slapos`, see `scripts/deps/slapos-venv.sh`)
//! against the real `slapos-master serve --cfg slapos-proxy.cfg`; and the bad-input status
//! codes, in process, with the database compared before and after.
//!
//! Without the venv the CLI tests print a reason and pass, unless `SLAPOS_REQUIRE_TOOLS=1`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{Server, respond, slap_master, slap_python};
use slapos_client::Client;

const SR: &str = "/srv/slap-test/software.cfg";

fn venv() -> Option<PathBuf> {
    common::venv(&["slapos", "python"], "the test")
}

/// `slapos-master serve --cfg slapos-proxy.cfg` for computer `COMP`, plus the CLI's
/// `client.cfg` in `dir` (`master_url`, and `master_rest_url` for `slapos service/computer …`).
fn serve(dir: &Path) -> Server {
    let cfg = dir.join("slapos-proxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "[slapos]\ncomputer_id = COMP\n\n[slapproxy]\nhost = 127.0.0.1\nport = 0\n\
             database_uri = {}\nsoftware_product_list =\n  demo {SR}\n",
            dir.join("proxy.db").display()
        ),
    )
    .unwrap();
    // `--db` wins over `database_uri`: under `SLAPOS_TEST_DB=postgres` a fresh PostgreSQL
    // database stands in for the file.
    let mut args = vec!["--cfg".into(), cfg.into_os_string()];
    if let Some(url) = common::test_pg_url() {
        args.extend(["--db".into(), url.into()]);
    }
    let server = Server::spawn(args, "warn");
    let url = &server.url;
    std::fs::write(
        dir.join("client.cfg"),
        format!("[slapos]\nmaster_url = {url}\nmaster_rest_url = {url}/hateoas\n"),
    )
    .unwrap();
    server
}

fn out(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Run `slapos ARGS --cfg client.cfg`; asserts success and returns its whole output.
fn slapos(venv: &Path, dir: &Path, args: &[&str]) -> String {
    let o = slapos_output(venv, dir, args);
    assert!(o.status.success(), "slapos {args:?}: {}", out(&o));
    // The CLI logs its results (`State is : …`, the parameters) on stderr.
    out(&o)
}

fn slapos_output(venv: &Path, dir: &Path, args: &[&str]) -> Output {
    Command::new(venv.join("slapos"))
        .args(args)
        .arg("--cfg")
        .arg(dir.join("client.cfg"))
        .current_dir(dir)
        .output()
        .unwrap()
}

/// Run a python snippet with the slap library; `URL` is the master URL. Prints go to stdout.
fn py(venv: &Path, url: &str, script: &str) -> String {
    let o = slap_python(venv, url, None, script);
    assert!(
        o.status.success(),
        "python snippet failed: {}\n{script}",
        out(&o)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `slapos node format`'s last step: `Computer.updateConfiguration(dumps(computer_dict))`.
const FORMAT: &str = r#"
computer = slap.registerComputer('COMP')
computer.updateConfiguration(slapos.util.dumps({
    'reference': 'COMP', 'address': '10.0.0.1', 'netmask': '255.255.255.0',
    'instance_root': '/srv/slapgrid', 'software_root': '/opt/slapgrid',
    'partition_list': [{
        'reference': 'slappart%d' % i, 'path': '/srv/slapgrid/slappart%d' % i,
        'address_list': [{'addr': '10.0.0.%d' % (10 + i), 'netmask': '255.255.255.255'},
                         {'addr': 'fd00::%d' % (10 + i), 'netmask': 'ffff:ffff:ffff:ffff::'}],
        'tap': {'name': 'slaptap%d' % i}, 'user': {'name': 'slapuser%d' % i},
        'external_storage_list': [],
    } for i in range(3)]}))
"#;

/// A served master (see [`serve`]) whose computer `COMP` is formatted with three partitions as
/// `slapos node format` does: its directory (the CLI's `client.cfg`), the server, its URL.
fn formatted(venv: &Path) -> (tempfile::TempDir, Server, String) {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path());
    let url = server.url.clone();
    py(venv, &url, FORMAT);
    (dir, server, url)
}

/// `slapos service list/info` and `slapos computer list/info` through `/hateoas` (slapproxy's
/// `TestCliInformation`): a root instance with parameters and published connection parameters,
/// a child that must not be listed, the formatted computer, unknown names, quoted names → 400.
#[test]
fn hateoas_service_and_computer_commands_with_the_real_cli() {
    let Some(venv) = venv() else { return };
    let (dir, _server, url) = formatted(&venv);
    let d = dir.path();
    let empty = slapos(&venv, d, &["service", "list"]);
    assert!(!empty.contains("myinstance"), "{empty}");
    slapos(&venv, d, &["supply", SR, "COMP"]);
    slapos(
        &venv,
        d,
        &["request", "myinstance", SR, "--parameters", "foo=bar"],
    );
    py(
        &venv,
        &url,
        "cp = slap.registerComputerPartition('COMP', 'slappart0')\n\
         cp.setConnectionDict({'url': 'http://[fd00::10]:8080/'})\n\
         cp.request('/srv/slap-test/software.cfg', 'default', 'kid')\n",
    );

    let list = slapos(&venv, d, &["service", "list"]);
    assert!(
        list.contains(&format!("\"myinstance\": \"{SR}\"")),
        "{list}"
    );
    assert!(
        !list.contains("kid"),
        "a child is not an instance tree: {list}"
    );

    let info = slapos(&venv, d, &["service", "info", "myinstance"]);
    for want in [
        format!("\"software-url\": \"{SR}\""),
        "\"software-type\": \"default\"".to_owned(),
        "\"shared\": false".to_owned(),
        "\"requested-state\": \"started\"".to_owned(),
        "\"foo\": \"bar\"".to_owned(),
        "\"url\": \"http://[fd00::10]:8080/\"".to_owned(),
    ] {
        assert!(info.contains(&want), "missing {want} in {info}");
    }
    let stopped = slapos(
        &venv,
        d,
        &["request", "myinstance", SR, "--state", "stopped"],
    );
    assert!(stopped.contains("stopped"), "{stopped}");
    let info = slapos(&venv, d, &["service", "info", "myinstance"]);
    assert!(info.contains("\"requested-state\": \"stopped\""), "{info}");

    let missing = slapos_output(&venv, d, &["service", "info", "nope"]);
    assert_eq!(missing.status.code(), Some(2), "{}", out(&missing));
    assert!(
        out(&missing).contains("Instance nope does not exist"),
        "{}",
        out(&missing)
    );

    let computers = slapos(&venv, d, &["computer", "list"]);
    assert!(computers.contains("COMP COMP"), "{computers}");
    let computer = slapos(&venv, d, &["computer", "info", "COMP"]);
    assert!(computer.contains("Computer Reference: COMP"), "{computer}");

    // slapproxy: a name with a double quote is not a valid query → 400.
    for args in [["service", "info", "a\"b"], ["computer", "info", "a\"b"]] {
        let o = slapos_output(&venv, d, &args);
        assert!(!o.status.success(), "{args:?}: {}", out(&o));
        assert!(
            out(&o).contains("400 Client Error"),
            "{args:?}: {}",
            out(&o)
        );
    }
}

/// Shared ("slave") instances: `slapos request --slave` lands in the host's
/// `slave_instance_list` (types kept), the host publishes for it, the CLI prints it; the host
/// is bumped on change only; destroy removes it; no host → 404 (`NotFoundError`).
#[test]
fn shared_instances_with_the_real_cli() {
    let Some(venv) = venv() else { return };
    let (dir, _server, url) = formatted(&venv);
    let d = dir.path();
    slapos(&venv, d, &["supply", SR, "COMP"]);

    // No host yet.
    let o = slapos_output(&venv, d, &["request", "--slave", "myslave", SR]);
    assert!(!o.status.success(), "{}", out(&o));
    assert!(out(&o).contains("NotFoundError"), "{}", out(&o));

    slapos(&venv, d, &["request", "host", SR]);
    let host_ts = "print(slap.registerComputerPartition('COMP', 'slappart0').getInstanceParameterDict()['timestamp'])";
    let t0 = py(&venv, &url, host_ts);
    let first = slapos(
        &venv,
        d,
        &["request", "--slave", "myslave", SR, "--parameters", "a=1"],
    );
    assert!(first.contains("State is : started"), "{first}");
    assert!(
        first.contains("INFO {}"),
        "no connection parameters yet: {first}"
    );
    let t1 = py(&venv, &url, host_ts);
    assert_ne!(t0, t1, "a new shared instance bumps its host");

    // Types kept in the host's list (a child request with an int parameter).
    let host = py(
        &venv,
        &url,
        r#"
cp = slap.registerComputerPartition('COMP', 'slappart0')
cp.request('/srv/slap-test/software.cfg', 'default', 'kidslave', shared=True,
           partition_parameter_kw={'n': 3})
cp = slap.registerComputerPartition('COMP', 'slappart0')
lst = cp.getInstanceParameterDict()['slave_instance_list']
print('SLAVES', sorted((e['slave_reference'], e.get('a'), e.get('n'), e['slap_software_type']) for e in lst))
cp.setConnectionDict({'url': 'https://shared/'}, slave_reference='_myslave')
"#,
    );
    assert!(
        host.contains(
            "SLAVES [('_myslave', '1', None, 'default'), ('host_kidslave', None, 3, 'default')]"
        ),
        "{host}"
    );
    // The request's answer carries what the host published. (`slapos request --slave` itself
    // prints the *host's* parameters: its `getState()` re-fetches the host partition, as
    // against slapproxy.)
    let again = py(
        &venv,
        &url,
        "r = slap.registerOpenOrder().request('/srv/slap-test/software.cfg', 'myslave', \
         shared=True, partition_parameter_kw={'a': '1'})\n\
         print('CONN', r.getConnectionParameterDict(), r.getId())",
    );
    assert!(
        again.contains("CONN {'url': 'https://shared/'} slappart0"),
        "{again}"
    );
    let t2 = py(&venv, &url, host_ts);
    let t3 = py(&venv, &url, host_ts);
    assert_eq!(t2, t3);
    slapos(
        &venv,
        d,
        &["request", "--slave", "myslave", SR, "--parameters", "a=1"],
    );
    assert_eq!(
        py(&venv, &url, host_ts),
        t3,
        "an identical shared request changes nothing"
    );

    // /hateoas shows the root shared instance (not the child's) with its own view.
    let list = slapos(&venv, d, &["service", "list"]);
    assert!(list.contains(&format!("\"myslave\": \"{SR}\"")), "{list}");
    assert!(!list.contains("kidslave"), "{list}");
    let info = slapos(&venv, d, &["service", "info", "myslave"]);
    for want in [
        "\"shared\": true",
        "\"requested-state\": \"unused\"",
        "\"a\": \"1\"",
        "\"url\": \"https://shared/\"",
    ] {
        assert!(info.contains(want), "missing {want} in {info}");
    }

    slapos(
        &venv,
        d,
        &["request", "--slave", "myslave", SR, "--state", "destroyed"],
    );
    let left = py(
        &venv,
        &url,
        "lst = slap.registerComputerPartition('COMP', 'slappart0').getInstanceParameterDict()['slave_instance_list']\n\
         print('LEFT', [e['slave_reference'] for e in lst])",
    );
    assert!(left.contains("LEFT ['host_kidslave']"), "{left}");
    assert_ne!(py(&venv, &url, host_ts), t3, "removal bumps the host");
}

#[test]
fn slapos_cli_and_slap_library_against_master_lite() {
    let Some(venv) = venv() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = serve(d);
    let url = server.url.clone();

    // Before format, the configured computer answers an empty Computer (slapproxy's rule).
    let empty = py(
        &venv,
        &url,
        "c = slap.registerComputer('COMP')\nprint(len(c.getComputerPartitionList()))",
    );
    assert_eq!(empty.trim(), "0");

    // Format through the library, supply and request with the CLI.
    py(&venv, &url, FORMAT);
    slapos(&venv, d, &["supply", SR, "COMP"]);
    let first = slapos(
        &venv,
        d,
        &[
            "request",
            "myinstance",
            SR,
            "--parameters",
            "foo=bar",
            "n=3",
        ],
    );
    assert!(first.contains("State is : started"), "{first}");

    // Node side: software states, the partition's parameters and addresses, publish.
    let node = py(
        &venv,
        &url,
        r#"
computer = slap.registerComputer('COMP')
srs = computer.getSoftwareReleaseList()
print('SR', [(s.getURI(), s.getState()) for s in srs])
for s in srs:
    s.building(); s.available(); s.error('boom')
parts = {p.getId(): p for p in computer.getComputerPartitionList()}
print('STATES', sorted((k, p.getState()) for k, p in parts.items()))
cp = slap.registerComputerPartition('COMP', 'slappart0')
params = cp.getInstanceParameterDict()
print('PARAMS', params['foo'], params['n'], params['instance_title'], params['slap_software_type'])
print('IP', sorted(map(tuple, params['ip_list'])))
print('CERT', sorted(cp.getCertificate().items()))
cp.setConnectionDict({'url': 'http://[fd00::10]:8080/', 'password': 'secret'})
cp.started()
computer.reportUsage('<?xml version="1.0"?><journal/>')
print('PRODUCT', slap.getSoftwareReleaseListFromSoftwareProduct('demo'))
assert cp.getInstanceGuid() == 'COMP-slappart0'
"#,
    );
    assert!(
        node.contains(&format!("SR [('{SR}', 'available')]")),
        "{node}"
    );
    assert!(
        node.contains(
            "STATES [('slappart0', 'started'), ('slappart1', 'destroyed'), ('slappart2', 'destroyed')]"
        ),
        "{node}"
    );
    assert!(node.contains("PARAMS bar 3 myinstance default"), "{node}");
    assert!(
        node.contains("IP [('slaptap0', '10.0.0.10'), ('slaptap0', 'fd00::10')]"),
        "{node}"
    );
    assert!(
        node.contains("CERT [('certificate', ''), ('key', '')]"),
        "{node}"
    );
    assert!(node.contains(&format!("PRODUCT ['{SR}']")), "{node}");

    // The CLI now prints the connection parameters the node published.
    let again = slapos(
        &venv,
        d,
        &[
            "request",
            "myinstance",
            SR,
            "--parameters",
            "foo=bar",
            "n=3",
        ],
    );
    assert!(
        again.contains("secret") && again.contains("fd00::10"),
        "{again}"
    );

    // One model: the native API sees the same instance, with the same revision as timestamp.
    let native = Client::new(&url).unwrap();
    let info = native.instances().unwrap();
    assert_eq!(info.len(), 1, "{info:?}");
    assert_eq!(info[0].title.as_str(), "myinstance");
    assert_eq!(info[0].partition.as_str(), "slappart0");
    assert_eq!(info[0].parameters["foo"], "bar");
    assert_eq!(info[0].connection["password"], "secret");
    let ts = |script: &str| py(&venv, &url, script).trim().to_owned();
    let read_ts = "print(slap.registerComputerPartition('COMP', 'slappart0').getInstanceParameterDict()['timestamp'])";
    let t1 = ts(read_ts);
    assert_eq!(
        t1,
        master_lite::slap::timestamp(info[0].revision as i64),
        "timestamp is the revision in seconds"
    );

    // Identical re-request: no new timestamp. Bang: a new one.
    slapos(
        &venv,
        d,
        &[
            "request",
            "myinstance",
            SR,
            "--parameters",
            "foo=bar",
            "n=3",
        ],
    );
    assert_eq!(ts(read_ts), t1);
    py(
        &venv,
        &url,
        "slap.registerComputerPartition('COMP', 'slappart0').bang('promise failed')",
    );
    let t2 = ts(read_ts);
    assert!(
        t2.parse::<f64>().unwrap() > t1.parse::<f64>().unwrap(),
        "{t1} -> {t2}"
    );

    // A child requested by the instance (X-SlapPartition), then a rename.
    let child = py(
        &venv,
        &url,
        &format!(
            r#"
cp = slap.registerComputerPartition('COMP', 'slappart0')
ch = cp.request('{SR}', 'default', 'mychild', partition_parameter_kw={{'k': 'v'}})
print('CHILD', ch.getId(), ch.getInstanceParameterDict()['k'])
c2 = slap.registerComputerPartition('COMP', ch.getId())
print('ROOT', c2.getInstanceParameterDict()['root_instance_title'])
c2.rename('mychild-renamed')
print('RENAMED', slap.registerComputerPartition('COMP', ch.getId()).getInstanceParameterDict()['instance_title'])
"#
        ),
    );
    assert!(child.contains("CHILD slappart1 v"), "{child}");
    assert!(child.contains("ROOT myinstance"), "{child}");
    assert!(child.contains("RENAMED mychild-renamed"), "{child}");

    // State changes and destroy.
    let stopped = slapos(
        &venv,
        d,
        &["request", "myinstance", SR, "--state", "stopped"],
    );
    assert!(stopped.contains("State is : stopped"), "{stopped}");
    let destroyed = slapos(
        &venv,
        d,
        &["request", "myinstance", SR, "--state", "destroyed"],
    );
    assert!(destroyed.contains("State is : destroyed"), "{destroyed}");
    // The node reports: the root waits for its child, the child goes, then the root.
    let report = py(
        &venv,
        &url,
        r#"
import requests
def destroyed(p):
    r = requests.post(URL + '/destroyedComputerPartition',
                      data={'computer_id': 'COMP', 'computer_partition_id': p})
    return r.status_code, r.text
cp = slap.registerComputerPartition('COMP', 'slappart1')
print('CHILDSTATE', cp.getState())
slap.registerComputerPartition('COMP', 'slappart0').stopped()
print('ROOT1', destroyed('slappart0'))
print('CHILD', destroyed('slappart1'))
slap.registerComputerPartition('COMP', 'slappart0').destroyed()
computer = slap.registerComputer('COMP')
print('STATES', sorted((p.getId(), p.getState()) for p in computer.getComputerPartitionList()))
"#,
    );
    assert!(report.contains("CHILDSTATE destroyed"), "{report}");
    assert!(
        report.contains(
            "ROOT1 (200, 'Not destroying yet because this partition has child partitions: mychild-renamed')"
        ),
        "{report}"
    );
    assert!(report.contains("CHILD (200, 'OK')"), "{report}");
    assert!(
        report.contains(
            "STATES [('slappart0', 'destroyed'), ('slappart1', 'destroyed'), ('slappart2', 'destroyed')]"
        ),
        "{report}"
    );
    assert!(native.instances().unwrap().is_empty());

    // Remove the release: the node sees it destroyed and reports it gone.
    slapos(&venv, d, &["remove", SR, "COMP"]);
    let gone = py(
        &venv,
        &url,
        r#"
computer = slap.registerComputer('COMP')
srs = computer.getSoftwareReleaseList()
print('BEFORE', [s.getState() for s in srs])
for s in srs:
    s.destroyed()
print('AFTER', len(slap.registerComputer('COMP').getSoftwareReleaseList()))
"#,
    );
    assert!(gone.contains("BEFORE ['destroyed']"), "{gone}");
    assert!(gone.contains("AFTER 0"), "{gone}");
}

// ---------------------------------------------------------------------------------------------
// Bad input, in process: slapproxy's status codes and an unchanged database.

struct InProcess {
    master: master_lite::Master,
}

impl InProcess {
    fn new() -> Self {
        InProcess {
            master: slap_master("COMP"),
        }
    }

    async fn call(&self, req: Request<Body>) -> (StatusCode, String) {
        let (status, _, body) = respond(self.master.router(), req).await;
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> (StatusCode, String) {
        self.post_auth(path, form, None).await
    }

    async fn post_auth(
        &self,
        path: &str,
        form: &[(&str, &str)],
        auth: Option<&str>,
    ) -> (StatusCode, String) {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut b = Request::post(path).header("content-type", "application/x-www-form-urlencoded");
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        self.call(b.body(Body::from(body)).unwrap()).await
    }

    async fn get(&self, path_and_query: &str) -> (StatusCode, String) {
        self.call(Request::get(path_and_query).body(Body::empty()).unwrap())
            .await
    }

    async fn dump(&self) -> String {
        self.master
            .state()
            .db
            .call(|s| Ok::<_, master_lite::StoreError>(s.dump()))
            .await
            .unwrap()
    }

    /// `call` must answer `status` and leave every table as it was.
    async fn refused(
        &self,
        what: &str,
        status: StatusCode,
        call: (StatusCode, String),
        before: &str,
    ) {
        assert_eq!(call.0, status, "{what}: {}", call.1);
        assert_eq!(self.dump().await, before, "{what} changed the database");
    }
}

fn format_xml(partitions: usize) -> String {
    use slapos_proto::slap::Value;
    let parts = (0..partitions)
        .map(|i| {
            Value::dict([
                ("reference", Value::str(format!("slappart{i}"))),
                (
                    "address_list",
                    Value::List(vec![Value::dict([
                        ("addr", Value::str(format!("10.0.0.{}", 10 + i))),
                        ("netmask", Value::str("255.255.255.255")),
                    ])]),
                ),
                (
                    "tap",
                    Value::dict([("name", Value::str(format!("slaptap{i}")))]),
                ),
            ])
        })
        .collect();
    slapos_proto::slap::dumps(&Value::dict([
        ("reference", Value::str("COMP")),
        ("address", Value::str("10.0.0.1")),
        ("netmask", Value::str("255.255.255.0")),
        ("partition_list", Value::List(parts)),
    ]))
    .unwrap()
}

const NONE: &str = "<marshal><none/></marshal>";

#[tokio::test]
async fn bad_input_gets_slapproxys_status_codes_and_changes_nothing() {
    let m = InProcess::new();
    // The configured computer answers before it is formatted; another one is a 404, which the
    // slap library raises as NotFoundError (slapproxy raises it in process).
    assert_eq!(
        m.get("/getFullComputerInformation?computer_id=COMP")
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        m.get("/getFullComputerInformation?computer_id=OTHER")
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let fx = format_xml(1);
    let ok = m
        .post("/loadComputerConfigurationFromXML", &[("xml", &fx)])
        .await;
    assert_eq!(ok, (StatusCode::OK, "done".into()));
    let ok = m
        .post(
            "/requestComputerPartition",
            &[
                ("software_release", SR),
                ("software_type", "default"),
                ("partition_reference", "a"),
                ("state", NONE),
            ],
        )
        .await;
    assert_eq!(ok.0, StatusCode::OK, "{}", ok.1);
    assert!(ok.1.contains("class=\"SoftwareInstance\""), "{}", ok.1);
    let before = m.dump().await;

    use StatusCode as S;
    let cases: Vec<(&str, StatusCode, (StatusCode, String))> = vec![
        ("format without xml", S::BAD_REQUEST, m.post("/loadComputerConfigurationFromXML", &[]).await),
        (
            "format with malformed XML",
            S::INTERNAL_SERVER_ERROR,
            m.post("/loadComputerConfigurationFromXML", &[("xml", "<marshal><dictionary")]).await,
        ),
        (
            "format with a refused class",
            S::INTERNAL_SERVER_ERROR,
            m.post("/loadComputerConfigurationFromXML", &[(
                "xml",
                "<marshal><object module=\"os\" class=\"system\"><tuple/><dictionary/></object></marshal>",
            )])
            .await,
        ),
        (
            "format of a non-dictionary",
            S::INTERNAL_SERVER_ERROR,
            m.post("/loadComputerConfigurationFromXML", &[("xml", "<marshal><int>3</int></marshal>")])
                .await,
        ),
        (
            "request without state",
            S::BAD_REQUEST,
            m.post("/requestComputerPartition", &[
                ("software_release", SR),
                ("software_type", "default"),
                ("partition_reference", "b"),
            ])
            .await,
        ),
        (
            "request with malformed parameters",
            S::INTERNAL_SERVER_ERROR,
            m.post("/requestComputerPartition", &[
                ("software_release", SR),
                ("software_type", "default"),
                ("partition_reference", "b"),
                ("state", NONE),
                ("partition_parameter_xml", "<marshal><dictionary id=\"i2\"><string>x"),
            ])
            .await,
        ),
        (
            "request from an unknown partition",
            S::BAD_REQUEST,
            m.post_auth(
                "/requestComputerPartition",
                &[
                    ("software_release", SR),
                    ("software_type", "default"),
                    ("partition_reference", "b"),
                    ("state", NONE),
                ],
                Some("X-SlapPartition computer_id=COMP,computer_partition_id=slappart9"),
            )
            .await,
        ),
        (
            "request with no free partition",
            S::NOT_FOUND,
            m.post("/requestComputerPartition", &[
                ("software_release", SR),
                ("software_type", "default"),
                ("partition_reference", "b"),
                ("state", NONE),
            ])
            .await,
        ),
        (
            "registerComputerPartition of an unknown partition",
            S::INTERNAL_SERVER_ERROR,
            m.get("/registerComputerPartition?computer_reference=COMP&computer_partition_reference=slappart9")
                .await,
        ),
        (
            "registerComputerPartition without parameters",
            S::BAD_REQUEST,
            m.get("/registerComputerPartition").await,
        ),
        ("supply without url", S::BAD_REQUEST, m.post("/supplySupply", &[("computer_id", "COMP"), ("state", "available")]).await),
        (
            "supply with a bad state",
            S::INTERNAL_SERVER_ERROR,
            m.post("/supplySupply", &[("url", SR), ("computer_id", "COMP"), ("state", "bogus")]).await,
        ),
        (
            "connection XML of an unknown partition",
            S::OK,
            m.post("/setComputerPartitionConnectionXml", &[
                ("computer_id", "COMP"),
                ("computer_partition_id", "slappart9"),
                ("connection_xml", "<marshal><dictionary id=\"i2\"/></marshal>"),
            ])
            .await,
        ),
        (
            "connection XML that is not XML",
            S::INTERNAL_SERVER_ERROR,
            m.post("/setComputerPartitionConnectionXml", &[
                ("computer_id", "COMP"),
                ("computer_partition_id", "slappart0"),
                ("connection_xml", "not xml"),
            ])
            .await,
        ),
        ("bang without partition", S::BAD_REQUEST, m.post("/softwareInstanceBang", &[("computer_id", "COMP")]).await),
        (
            "bang of an unknown partition",
            S::OK,
            m.post("/softwareInstanceBang", &[("computer_id", "COMP"), ("computer_partition_id", "slappart9"), ("message", "x")]).await,
        ),
        (
            "destroyed of an unknown partition",
            S::OK,
            m.post("/destroyedComputerPartition", &[("computer_id", "COMP"), ("computer_partition_id", "slappart9")]).await,
        ),
        ("rename without new_name", S::BAD_REQUEST, m.post("/softwareInstanceRename", &[("computer_id", "COMP"), ("computer_partition_id", "slappart0")]).await),
        (
            "product with both parameters",
            S::INTERNAL_SERVER_ERROR,
            m.get("/getSoftwareReleaseListFromSoftwareProduct?software_product_reference=a&software_release_url=b").await,
        ),
    ];
    for (what, status, got) in cases {
        m.refused(what, status, got, &before).await;
    }
    // The 200-with-text answers say what happened, as slapproxy's do.
    let (_, t) = m
        .post(
            "/destroyedComputerPartition",
            &[
                ("computer_id", "COMP"),
                ("computer_partition_id", "slappart9"),
            ],
        )
        .await;
    assert_eq!(t, "Unknown partition ('slappart9', 'COMP')");
    // Re-formatting with the same payload keeps the allocation.
    assert_eq!(
        m.post("/loadComputerConfigurationFromXML", &[("xml", &fx)])
            .await
            .0,
        S::OK
    );
    let (s, body) = m
        .get("/registerComputerPartition?computer_reference=COMP&computer_partition_reference=slappart0")
        .await;
    assert_eq!(s, S::OK);
    assert!(
        body.contains("<string>instance_title</string><string>a</string>"),
        "{body}"
    );
}

/// `slapos node report`'s `Computer.reportUsage` with a journal written by slapos.collect's own
/// `Journal` class: stored as usage samples (partition users mapped to partitions, the instance
/// on the partition recorded), counted once when sent again, shown by the usage report and as
/// the computer's counters on `/metrics`; a broken journal is a 400 that stores nothing.
#[test]
fn use_computer_with_a_journal_from_slapos_collect_is_accounted_once() {
    let Some(venv) = venv() else { return };
    let (dir, _server, url) = formatted(&venv);
    let d = dir.path();
    slapos(&venv, d, &["supply", SR, "COMP"]);
    slapos(&venv, d, &["request", "web", SR]);
    let report = r#"
from slapos.collect.reporter import Journal
j = Journal()
t = j.newTransaction()
j.setProperty(t, 'title', 'Eco Information for COMP ')
j.setProperty(t, 'start_date', '2026-12-01 00:00:00')
j.setProperty(t, 'stop_date', '2026-12-01 01:00:00')
j.setProperty(t, 'reference', '2026-12-01-global')
j.newMovement(t, resource='service_module/cpu_load_percent', title='CPU', quantity='50.0',
              reference='slapuser0', category='')
j.newMovement(t, resource='service_module/memory_used', title='Mem', quantity='512.0',
              reference='slapuser0', category='')
j.newMovement(t, resource='service_module/cpu_load_percent', title='CPU', quantity='10.0',
              reference='COMP', category='')
computer = slap.registerComputer('COMP')
computer.reportUsage(j.getXML())
computer.reportUsage(j.getXML())
print('SENT')
"#;
    assert!(py(&venv, &url, report).contains("SENT"));

    let client = Client::new(&url).unwrap();
    let by_instance = client
        .usage(0, u64::MAX, slapos_proto::UsageBy::Instance)
        .unwrap();
    assert_eq!(by_instance.rows.len(), 1, "{by_instance:?}");
    let row = &by_instance.rows[0];
    assert_eq!(row.key, "web");
    assert_eq!(row.samples, 1, "sent twice, counted once: {row:?}");
    // Half a CPU for an hour; 512 MB for an hour.
    assert!((row.cpu_seconds - 1800.0).abs() < 1e-6, "{row:?}");
    assert!((row.memory_gib_hours - 0.5).abs() < 1e-9, "{row:?}");

    let metrics = client.metrics().unwrap();
    assert!(
        metrics.contains("slapos_master_usage_cpu_seconds_total{computer=\"COMP\"} 1800"),
        "{metrics}"
    );

    // A journal that is not one: refused, nothing more stored.
    let o = slap_python(
        &venv,
        &url,
        None,
        "slap.registerComputer('COMP').reportUsage('<journal><transaction>')",
    );
    assert!(!o.status.success(), "{}", out(&o));
    assert!(out(&o).contains("400 Client Error"), "{}", out(&o));
    let again = client
        .usage(0, u64::MAX, slapos_proto::UsageBy::Computer)
        .unwrap();
    assert_eq!(again.rows.len(), 1);
    assert_eq!(again.rows[0].samples, 1);
}
