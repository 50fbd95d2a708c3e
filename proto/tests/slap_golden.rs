//! Golden tests of the SLAP codec against the exchanges captured from slapos.core 1.26.1
//! (`tests/fixtures/slap-wire/`, copied from `../shared/reference/slap-wire/`).
//!
//! The captures show XML re-parsed and pretty-printed by lxml (see the fixtures' README), so
//! each check is: decode the captured body, re-encode it (the one-line wire form), render that
//! the way the capture tool did, and compare byte for byte with the capture. The one-line wire
//! form itself is checked against the real Python library in `slap_python.rs`. Instance XML and
//! the raw marshal string inside the HATEOAS JSON are real wire bytes and compared directly.

mod common;

use std::collections::BTreeMap;

use common::{Exchange, TRUNCATED, exchanges, fixture, lxml_pretty, marshal_bodies};
use slapos_proto::slap::*;

const FILES: [&str; 2] = ["http-exchanges.txt", "node-http-exchanges.txt"];

/// Decodes a captured body, re-encodes it and checks the result renders to the same bytes.
fn reencode(label: &str, body: &str) -> (Value, String) {
    let value = loads(body).unwrap_or_else(|e| panic!("{label}: {e}"));
    let wire = dumps(&value).unwrap_or_else(|e| panic!("{label}: {e}"));
    assert_eq!(
        lxml_pretty(&wire),
        body,
        "{label}: re-encoded body differs from the capture"
    );
    let again = loads(&wire).unwrap_or_else(|e| panic!("{label}: wire form: {e}"));
    assert_eq!(again, value, "{label}");
    // Without references a document expands to at most its length plus a cell per value
    // (docs/slap-codec.md): the default byte bound cannot refuse a body the master accepts.
    let tight = DecodeLimits {
        max_bytes: wire.len() + marshal::VALUE_BYTES * value.node_count(),
        ..DecodeLimits::default()
    };
    assert_eq!(
        loads_with_limits(&wire, tight).as_ref(),
        Ok(&value),
        "{label}: over the no-reference size bound"
    );
    assert_eq!(dumps(&again).unwrap(), wire, "{label}");
    (value, wire)
}

#[test]
fn every_captured_marshal_body_reencodes_byte_identically() {
    let (mut checked, mut truncated) = (0, 0);
    for file in FILES {
        for (label, body) in marshal_bodies(file) {
            if body.ends_with(TRUNCATED) {
                truncated += 1;
                continue;
            }
            reencode(&label, &body);
            checked += 1;
        }
    }
    // 6 + 2 requests × (4 marshalled fields + response), 2 registerComputerPartition
    // responses, 2 connection_xml fields. The 7 truncated bodies (2 format payloads, 5
    // getFullComputerInformation) are covered by the builder tests below.
    assert_eq!((checked, truncated), (44, 7));
}

/// Walks JSON and calls `f` on every string.
fn json_strings<'a>(v: &'a serde_json::Value, f: &mut dyn FnMut(&'a str)) {
    match v {
        serde_json::Value::String(s) => f(s),
        serde_json::Value::Array(a) => a.iter().for_each(|x| json_strings(x, f)),
        serde_json::Value::Object(o) => o.values().for_each(|x| json_strings(x, f)),
        _ => {}
    }
}

/// Walks a marshal value and calls `f` on every string.
fn value_strings<'a>(v: &'a Value, f: &mut dyn FnMut(&'a str)) {
    match v {
        Value::String(s) => f(s),
        Value::List(a) | Value::Tuple(a) | Value::Set(a) => {
            a.iter().for_each(|x| value_strings(x, f))
        }
        Value::Dict(d) => d.iter().for_each(|(k, x)| {
            value_strings(k, f);
            value_strings(x, f);
        }),
        Value::Object(o) => {
            o.initargs.iter().for_each(|x| value_strings(x, f));
            o.state.values().for_each(|x| value_strings(x, f));
        }
        _ => {}
    }
}

fn check_instance_xml(label: &str, xml: &str) -> ParamDict {
    let params = xml2dict(xml).unwrap_or_else(|e| panic!("{label}: {e}"));
    assert_eq!(
        dict2xml_params(&params).unwrap(),
        xml,
        "{label}: instance XML differs"
    );
    params
}

#[test]
fn every_captured_instance_xml_and_raw_marshal_reencodes_byte_identically() {
    let (mut instance, mut raw_marshal) = (0, 0);
    for file in FILES {
        for (n, ex) in exchanges(file).iter().enumerate() {
            let Some(body) = &ex.response else { continue };
            let label = format!("{file} #{n} {}", ex.route());
            if body.starts_with('{') {
                let json: serde_json::Value = serde_json::from_str(body).unwrap();
                json_strings(&json, &mut |s| {
                    if s.starts_with("<?xml") {
                        check_instance_xml(&label, s);
                        instance += 1;
                    } else if s.starts_with("<marshal>") {
                        // slave_instance_list as stored by slapproxy: real one-line wire bytes.
                        let v = loads(s).unwrap();
                        assert_eq!(dumps(&v).unwrap(), s, "{label}");
                        raw_marshal += 1;
                    }
                });
            } else if body.starts_with("<marshal>") && !body.ends_with(TRUNCATED) {
                let v = loads(body).unwrap();
                value_strings(&v, &mut |s| {
                    if s.starts_with("<?xml") {
                        check_instance_xml(&label, s);
                        instance += 1;
                    }
                });
            }
        }
    }
    // HATEOAS: 2 searches × 2 (connection_xml, xml) + the traverse view × 2; request responses
    // after publication: 3 connection_xml strings.
    assert_eq!((instance, raw_marshal), (9, 2));
}

#[test]
fn json_in_xml_parameter_reads_back_as_json() {
    let ex = exchanges("http-exchanges.txt");
    let view = ex
        .iter()
        .find(|e| e.path == "/hateoas/partitions/myinstance")
        .and_then(|e| e.response.as_deref())
        .unwrap();
    let json: serde_json::Value = serde_json::from_str(view).unwrap();
    let text = json["_embedded"]["_view"]["my_text_content"]["default"]
        .as_str()
        .unwrap();
    let params = xml2dict(text).unwrap();
    assert_eq!(
        instance_xml::json_in_xml(&params),
        Some(serde_json::json!({"foo": "bar", "n": 3}))
    );
    // What `slapos request --parameters-file` sent for it.
    let sent = instance_xml::to_json_in_xml(&serde_json::json!({"foo": "bar", "n": 3}));
    let request = ex
        .iter()
        .find(|e| e.route() == "requestComputerPartition")
        .unwrap();
    assert_eq!(
        lxml_pretty(&dumps(&sent).unwrap()),
        request.field("partition_parameter_xml").unwrap()
    );
}

// ---------------------------------------------------------------------------------------------
// Client forms

fn form_of(ex: &Exchange) -> Vec<(String, String)> {
    ex.form.clone()
}

/// A form as the client would send it, rendered like the capture (marshal fields pretty).
fn rendered(form: Vec<(&'static str, String)>) -> Vec<(String, String)> {
    form.into_iter()
        .map(|(k, v)| {
            let v = if v.starts_with("<marshal>") {
                lxml_pretty(&v)
            } else {
                v
            };
            (k.to_owned(), v)
        })
        .collect()
}

#[test]
fn request_forms_parse_and_rewrite_like_the_client() {
    let mut n = 0;
    for file in FILES {
        for ex in exchanges(file)
            .iter()
            .filter(|e| e.route() == "requestComputerPartition")
        {
            let form = RequestForm::from_form(&form_of(ex)).unwrap();
            assert_eq!(
                rendered(form.to_form().unwrap()),
                ex.form,
                "{file} {}",
                ex.path
            );
            // The X-SlapPartition header and the requester fields name the same partition.
            match (&ex.authorization, &form.requester) {
                (Some(h), Some(r)) => {
                    let auth = SlapPartitionAuth::parse(h).unwrap();
                    assert_eq!(
                        (auth.computer_id.as_str(), auth.partition_id.as_deref()),
                        (r.computer_id.as_str(), Some(r.partition_id.as_str()))
                    );
                }
                (None, None) => {}
                other => panic!("requester mismatch {other:?}"),
            }
            n += 1;
        }
    }
    assert_eq!(n, 8);
    let first = exchanges("http-exchanges.txt")
        .into_iter()
        .find(|e| e.route() == "requestComputerPartition")
        .unwrap();
    let form = RequestForm::from_form(&form_of(&first)).unwrap();
    assert_eq!(form.software_release, "/srv/demo/sr/software.cfg");
    assert_eq!(form.partition_reference, "myinstance");
    assert_eq!(form.software_type, "default");
    assert_eq!(
        (form.state, form.shared, form.filter.len()),
        (None, false, 0)
    );
    assert_eq!(
        form.parameters_instance_xml().unwrap(),
        "<?xml version='1.0' encoding='utf-8'?>\n<instance>\n  <parameter id=\"_\">{\n  \"foo\": \"bar\",\n  \"n\": 3\n}</parameter>\n</instance>\n"
    );
}

#[test]
fn connection_forms_parse_and_rewrite_like_the_client() {
    let ex = exchanges("http-exchanges.txt");
    let sets: Vec<&Exchange> = ex
        .iter()
        .filter(|e| e.route() == "setComputerPartitionConnectionXml")
        .collect();
    assert_eq!(sets.len(), 2);
    for e in &sets {
        let form = ConnectionForm::from_form(&form_of(e)).unwrap();
        assert_eq!(form.slave_reference, None);
        assert_eq!(rendered(form.to_form().unwrap()), e.form);
    }
    let form = ConnectionForm::from_form(&form_of(sets[0])).unwrap();
    // What slapproxy stores is what it later sends back as connection_xml (checked below).
    assert_eq!(
        form.connection_instance_xml().unwrap(),
        "<?xml version='1.0' encoding='utf-8'?>\n<instance>\n  <parameter id=\"password\">secret</parameter>\n  <parameter id=\"url\">http://[fd00::10]:8080/</parameter>\n</instance>\n"
    );
}

#[test]
fn other_captured_forms_parse() {
    for file in FILES {
        for ex in exchanges(file) {
            let form = form_of(&ex);
            match ex.route() {
                "supplySupply" => {
                    let s = SupplyForm::from_form(&form).unwrap();
                    assert_eq!(s.state, SupplyState::Available);
                }
                "buildingSoftwareRelease" | "availableSoftwareRelease" => {
                    SoftwareReleaseForm::from_form(&form).unwrap();
                }
                "startedComputerPartition"
                | "stoppedComputerPartition"
                | "destroyedComputerPartition"
                | "softwareInstanceBang" => {
                    let p = PartitionRef::from_form(&form).unwrap();
                    let auth =
                        SlapPartitionAuth::parse(ex.authorization.as_deref().unwrap()).unwrap();
                    assert_eq!(auth.partition_id.as_deref(), Some(p.partition_id.as_str()));
                }
                "registerComputerPartition" => {
                    let query: Vec<(String, String)> = ex
                        .path
                        .split_once('?')
                        .unwrap()
                        .1
                        .split('&')
                        .map(|kv| {
                            let (k, v) = kv.split_once('=').unwrap();
                            (k.to_owned(), v.to_owned())
                        })
                        .collect();
                    let p = PartitionRef::from_register_query(&query).unwrap();
                    assert_eq!(
                        (p.computer_id.as_str(), p.partition_id.as_str()),
                        ("local_computer", "slappart0")
                    );
                }
                _ => {}
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Builders against the captured responses

fn ips(computer: &str, n: u8) -> Vec<(String, String)> {
    let (v4, v6) = if computer == "NODE" {
        (format!("10.0.1.1{n}"), format!("fd00::1:1{n}"))
    } else {
        (format!("10.0.0.1{n}"), format!("fd00::1{n}"))
    };
    vec![(format!("slaptap{n}"), v4), (format!("slaptap{n}"), v6)]
}

fn published() -> ParamDict {
    [("password", "secret"), ("url", "http://[fd00::10]:8080/")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Some(v.to_owned())))
        .collect()
}

/// What slapproxy stores for the request's parameters: `xml2dict(dict2xml(kw))`.
fn stored(form: &RequestForm) -> ParamDict {
    xml2dict(&form.parameters_instance_xml().unwrap()).unwrap()
}

#[test]
fn request_responses_are_rebuilt_byte_identically() {
    // Per requestComputerPartition exchange, in capture order: the partition given, its
    // timestamp and whether the instance had published its connection parameters by then.
    let table: [(&str, &str, &str, bool); 8] = [
        (
            "http-exchanges.txt",
            "slappart0",
            "1795312642.4379225",
            false,
        ),
        (
            "http-exchanges.txt",
            "slappart0",
            "1795312642.4379225",
            true,
        ),
        ("http-exchanges.txt", "slappart0", "", false), // shared instance on slappart0
        (
            "http-exchanges.txt",
            "slappart1",
            "1795312646.7770555",
            false,
        ),
        (
            "http-exchanges.txt",
            "slappart0",
            "1795312647.4878142",
            true,
        ),
        (
            "http-exchanges.txt",
            "slappart0",
            "1795312648.5608864",
            true,
        ),
        (
            "node-http-exchanges.txt",
            "slappart0",
            "1795312672.8965757",
            false,
        ),
        (
            "node-http-exchanges.txt",
            "slappart0",
            "1795312677.553124",
            false,
        ),
    ];
    let requests: Vec<(String, Exchange)> = FILES
        .iter()
        .flat_map(|f| {
            exchanges(f)
                .into_iter()
                .filter(|e| e.route() == "requestComputerPartition")
                .map(|e| (f.to_string(), e))
        })
        .collect();
    assert_eq!(requests.len(), table.len());
    for ((file, ex), (tfile, partition, timestamp, has_published)) in requests.iter().zip(table) {
        assert_eq!(file, tfile);
        let form = RequestForm::from_form(&form_of(ex)).unwrap();
        let computer = form.filter_str("computer_guid").unwrap_or("local_computer");
        let n = partition.as_bytes()[partition.len() - 1] - b'0';
        let connection = if has_published {
            published()
        } else {
            ParamDict::new()
        };
        let doc = if form.shared {
            SoftwareInstanceDoc::for_shared(&RequestedShared {
                computer_id: computer.to_owned(),
                host_partition_id: partition.to_owned(),
                software_release_url: form.software_release.clone(),
                software_type: form.software_type.clone(),
                parameters: stored(&form),
                connection,
                ip_list: ips(computer, n),
            })
        } else {
            SoftwareInstanceDoc::for_partition(&RequestedPartition {
                computer_id: computer.to_owned(),
                partition_id: partition.to_owned(),
                software_release_url: form.software_release.clone(),
                software_type: form.software_type.clone(),
                parameters: stored(&form),
                timestamp: timestamp.to_owned(),
                connection_xml: has_published.then(|| dict2xml_params(&connection).unwrap()),
                connection,
                requested_state: form
                    .state
                    .map_or("started", RequestedState::as_str)
                    .to_owned(),
                ip_list: ips(computer, n),
            })
        };
        let wire = doc.encode().unwrap();
        assert_eq!(
            &lxml_pretty(&wire),
            ex.response.as_ref().unwrap(),
            "{file} {}",
            ex.path
        );
        // And the node-side reader gets the same document back.
        assert_eq!(
            SoftwareInstanceDoc::from_value(&loads(&wire).unwrap()).unwrap(),
            doc
        );
    }
}

fn demo_busy(
    computer: &str,
    url: &str,
    title: &str,
    instance: ParamDict,
    timestamp: &str,
    state: &str,
) -> BusyPartition {
    BusyPartition {
        requested_state: state.to_owned(),
        parameters: PartitionParameters {
            instance,
            ip_list: ips(computer, 0),
            software_type: "default".to_owned(),
            instance_title: title.to_owned(),
            root_instance_title: title.to_owned(),
            software_release_url: url.to_owned(),
            slave_instance_list: Vec::new(),
            timestamp: Some(timestamp.to_owned()),
            extra: BTreeMap::new(),
        },
        connection: ParamDict::new(),
    }
}

#[test]
fn register_partition_responses_are_rebuilt_byte_identically() {
    let ex = exchanges("http-exchanges.txt");
    let request = RequestForm::from_form(&form_of(
        ex.iter()
            .find(|e| e.route() == "requestComputerPartition")
            .unwrap(),
    ))
    .unwrap();
    let slave = RequestForm::from_form(&form_of(
        ex.iter()
            .find(|e| e.field("shared_xml").is_some_and(|s| s.contains("<bool>1")))
            .unwrap(),
    ))
    .unwrap();
    let registers: Vec<&Exchange> = ex
        .iter()
        .filter(|e| e.route() == "registerComputerPartition")
        .collect();
    assert_eq!(registers.len(), 2);

    let url = "/srv/demo/sr/software.cfg";
    let first = demo_busy(
        "local_computer",
        url,
        "myinstance",
        stored(&request),
        "1795312642.4379225",
        "started",
    );
    let doc = ComputerPartitionDoc::busy("local_computer", "slappart0", &first);
    assert_eq!(
        &lxml_pretty(&doc.encode().unwrap()),
        registers[0].response.as_ref().unwrap()
    );

    // After publication and the shared instance request: connection and slave list filled.
    let mut second = demo_busy(
        "local_computer",
        url,
        "myinstance",
        stored(&request),
        "1795312644.3239717",
        "started",
    );
    second.connection = published();
    second.parameters.slave_instance_list = vec![slave_instance_entry(
        &format!("_{}", slave.partition_reference),
        &slave.software_type,
        &slave.parameters,
    )];
    let doc = ComputerPartitionDoc::busy("local_computer", "slappart0", &second);
    let wire = doc.encode().unwrap();
    assert_eq!(&lxml_pretty(&wire), registers[1].response.as_ref().unwrap());
    assert_eq!(
        ComputerPartitionDoc::from_value(&loads(&wire).unwrap(), "p").unwrap(),
        doc
    );
}

#[test]
fn full_computer_information_is_rebuilt_up_to_the_capture_cut() {
    // Node flow: slappart0 allocated to "inst" ({'foo': 'x'}), slappart1 free, one release.
    let url = "/srv/demonode/sr/software.cfg";
    let instance: ParamDict = [("foo".to_owned(), Some("x".to_owned()))].into();
    let expectations = [
        ("1795312672.8965757", "started"),
        ("1795312672.8965757", "started"),
        ("1795312672.8965757", "started"),
        ("1795312677.553124", "destroyed"),
        ("1795312677.553124", "destroyed"),
    ];
    let bodies: Vec<String> = exchanges("node-http-exchanges.txt")
        .into_iter()
        .filter(|e| e.route() == "getFullComputerInformation")
        .map(|e| e.response.unwrap())
        .collect();
    assert_eq!(bodies.len(), expectations.len());
    for (body, (timestamp, state)) in bodies.iter().zip(expectations) {
        let computer = ComputerDoc {
            computer_id: "NODE".to_owned(),
            software_release_list: vec![SoftwareReleaseDoc::supplied(url, "NODE", "available")],
            partition_list: vec![
                ComputerPartitionDoc::busy(
                    "NODE",
                    "slappart0",
                    &demo_busy("NODE", url, "inst", instance.clone(), timestamp, state),
                ),
                ComputerPartitionDoc::free("NODE", "slappart1"),
            ],
            extra: BTreeMap::new(),
        };
        let wire = computer.encode().unwrap();
        // The master's one-partition-at-a-time encoder writes the same bytes.
        assert_eq!(
            ComputerDoc::encode_from(
                &computer.computer_id,
                computer.software_release_list.iter().cloned(),
                computer.partition_list.iter().cloned(),
            )
            .unwrap(),
            wire
        );
        let prefix = body
            .strip_suffix(TRUNCATED)
            .expect("the capture cut this body");
        let pretty = lxml_pretty(&wire);
        assert!(
            pretty.starts_with(prefix),
            "getFullComputerInformation differs before the cut:\n{pretty}"
        );
        assert!(prefix.len() > 3000, "the comparison covers the partitions");
        assert_eq!(
            ComputerDoc::from_value(&loads(&wire).unwrap()).unwrap(),
            computer
        );
    }
}

fn node_format_json() -> serde_json::Value {
    // The node flow formatted /srv/demonode with 2 partitions as nobody, addresses 10.0.1.1N
    // and fd00::1:1N; otherwise the same payload as the protocol flow's slapos.json.
    let text = fixture("slapos.json")
        .replace("/srv/demo/", "/srv/demonode/")
        .replace("10.0.0.1", "10.0.1.1")
        .replace("fd00::1", "fd00::1:1")
        .replace("\"root\"", "\"nobody\"")
        .replace("local_computer", "NODE");
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["partition_list"].as_array_mut().unwrap().truncate(2);
    json
}

#[test]
fn format_payload_is_rebuilt_up_to_the_capture_cut() {
    let protocol: serde_json::Value = serde_json::from_str(&fixture("slapos.json")).unwrap();
    for (file, json) in [
        ("http-exchanges.txt", protocol),
        ("node-http-exchanges.txt", node_format_json()),
    ] {
        let ex = exchanges(file);
        let load = ex
            .iter()
            .find(|e| e.route() == "loadComputerConfigurationFromXML")
            .unwrap();
        let captured = load.field("xml").unwrap();
        let prefix = captured
            .strip_suffix(TRUNCATED)
            .expect("the capture cut this body");
        let value = Value::from_json(&json);
        let pretty = lxml_pretty(&dumps(&value).unwrap());
        assert!(
            pretty.starts_with(prefix),
            "{file}: format payload differs before the cut:\n{pretty}"
        );
        assert!(prefix.len() > 2000);

        let config = ComputerConfiguration::from_value(value).unwrap();
        let computer = if file.starts_with("node") {
            "NODE"
        } else {
            "local_computer"
        };
        assert_eq!(config.reference, computer);
        assert_eq!(config.address.as_deref(), Some("fd00::2"));
        assert_eq!(config.netmask.as_deref(), Some("ffff:ffff:ffff:ffff::"));
        let p1 = &config.partitions[1];
        assert_eq!(
            (p1.reference.as_str(), p1.network_interface()),
            ("slappart1", "slaptap1")
        );
        assert_eq!(p1.addresses[0].netmask, "255.255.255.255");
        assert!(config.raw.get("os_type").is_some());
    }
}
