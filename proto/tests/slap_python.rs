//! Cross-check with the real Python library (slapos.core 1.26.1 and its xml_marshaller) in the
//! virtualenv `scripts/deps/slapos-venv.sh` creates at `<repo>/.venv/slapos`.
//!
//! Rust encodes → Python `slapos.util.loads` decodes and `dumps` re-encodes → the bytes must be
//! identical, and Rust decodes Python's output back to the same value. The same for
//! `dict2xml`/`xml2dict`, Python `str()` of values and `json.dumps(indent=2)`. Without the
//! virtualenv the test is skipped with a reason, unless `SLAPOS_REQUIRE_TOOLS=1` (then it fails).

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::strategies::{Kinds, arb_json_object, arb_param_dict, arb_value};
use common::{TRUNCATED, marshal_bodies};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, TestRng, TestRunner};
use slapos_proto::slap::*;
use slapos_test_support::gate::{self, Need};

const SERVER: &str = r#"
import sys, json
from slapos.util import dumps, loads, dict2xml, xml2dict
for line in sys.stdin:
    op, arg = json.loads(line)
    try:
        if op == "remarshal":
            out = dumps(loads(arg.encode("utf-8"))).decode("ascii")
        elif op == "share":
            v = loads(arg.encode("utf-8"))
            out = dumps([v, v, {"k": v}, (v,)]).decode("ascii")
        elif op == "dict2xml":
            out = dict2xml(loads(arg.encode("utf-8")))
        elif op == "xml2dict":
            out = dumps(xml2dict(arg)).decode("ascii")
        elif op == "str_json":
            out = str(json.loads(arg))
        elif op == "json_dumps":
            out = json.dumps(json.loads(arg), indent=2)
        else:
            raise ValueError(op)
        reply = {"ok": out}
    except Exception as e:
        reply = {"err": "%s: %s" % (type(e).__name__, e)}
    print(json.dumps(reply), flush=True)
"#;

fn venv_python() -> Option<PathBuf> {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/slapos/bin/python");
    if python.exists() {
        return Some(python);
    }
    let reason = format!(
        "{} not found: run scripts/deps/slapos-venv.sh",
        python.display()
    );
    gate::skip(Need::Tools, "the Python cross-check", &reason);
    None
}

/// Runs a batch of `(op, arg)` through one Python process; `Ok(text)` or `Err(exception)`.
fn python(python: &PathBuf, batch: &[(&str, String)]) -> Vec<Result<String, String>> {
    let mut child = Command::new(python)
        .arg("-c")
        .arg(SERVER)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start python");
    let mut input = String::new();
    for (op, arg) in batch {
        input.push_str(&serde_json::to_string(&(op, arg)).unwrap());
        input.push('\n');
    }
    let mut stdin = child.stdin.take().unwrap();
    // Write from a thread so a full stdout pipe cannot deadlock the two processes.
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("python output");
    writer.join().unwrap().expect("write to python");
    assert!(out.status.success(), "python failed: {:?}", out.status);
    let replies: Vec<Result<String, String>> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            match (v.get("ok"), v.get("err")) {
                (Some(ok), _) => Ok(ok.as_str().unwrap().to_owned()),
                (_, Some(err)) => Err(err.as_str().unwrap().to_owned()),
                _ => panic!("bad reply {l}"),
            }
        })
        .collect();
    assert_eq!(replies.len(), batch.len());
    replies
}

fn samples<S: Strategy>(strategy: S, n: usize, seed: u8) -> Vec<S::Value> {
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(proptest::test_runner::RngAlgorithm::ChaCha, &[seed; 32]),
    );
    (0..n)
        .map(|_| strategy.new_tree(&mut runner).expect("generate").current())
        .collect()
}

/// Representative values: what the master sends and what the client sends.
fn representative() -> Vec<Value> {
    let mut out = vec![
        Value::dict([("certificate", ""), ("key", "")]),
        Value::str(""),
        Value::List(vec![Value::str("http://sr/")]),
        Value::Dict(vec![
            (Value::Int(1), Value::str("x")),
            (Value::str("a"), Value::Int(2)),
            (Value::None, Value::Int(3)),
            (
                Value::Tuple(vec![Value::Int(1), Value::Int(2)]),
                Value::Int(4),
            ),
        ]),
        Value::Set(vec![Value::Int(1), Value::Int(2)]),
        Value::str("<a&b> \"q\" é ☃ 😀 x\ry\nz\tw &lt; ]]>"),
    ];
    let busy = BusyPartition {
        requested_state: "started".into(),
        parameters: PartitionParameters {
            instance: [
                ("_".to_owned(), Some("{\n  \"a\": 1\n}".to_owned())),
                ("empty".to_owned(), None),
            ]
            .into(),
            ip_list: vec![("slaptap0".into(), "10.0.0.10".into())],
            software_type: "default".into(),
            instance_title: "t".into(),
            root_instance_title: "t".into(),
            software_release_url: "http://sr/é".into(),
            slave_instance_list: vec![slave_instance_entry(
                "_s",
                "default",
                &[("n".to_owned(), Value::Int(3))].into(),
            )],
            timestamp: Some("1795312642.4379225".into()),
            extra: [("full_ip_list".to_owned(), Value::List(vec![]))].into(),
        },
        connection: [("url".to_owned(), Some("http://x/".to_owned()))].into(),
    };
    let computer = ComputerDoc {
        computer_id: "COMP-1".into(),
        software_release_list: vec![SoftwareReleaseDoc::supplied(
            "http://sr/",
            "COMP-1",
            "available",
        )],
        partition_list: vec![
            ComputerPartitionDoc::busy("COMP-1", "slappart0", &busy),
            ComputerPartitionDoc::free("COMP-1", "slappart1"),
        ],
        extra: Default::default(),
    };
    out.push(Value::Object(computer.to_object()));
    out.push(Value::Object(
        SoftwareInstanceDoc::for_partition(&RequestedPartition {
            computer_id: "c".into(),
            partition_id: "p".into(),
            software_release_url: "u".into(),
            software_type: "default".into(),
            parameters: [("a".to_owned(), Some("1".to_owned()))].into(),
            timestamp: "1.5".into(),
            connection: ParamDict::new(),
            connection_xml: Some(dict2xml([("k", "<v>")]).unwrap()),
            requested_state: "stopped".into(),
            ip_list: vec![],
        })
        .to_object(),
    ));
    out
}

#[test]
fn python_reencodes_rust_output_byte_identically() {
    let Some(py) = venv_python() else { return };
    let mut values = representative();
    values.extend(samples(
        arb_value(Kinds {
            sets: false,
            int_keys: true,
            objects: true,
        }),
        400,
        1,
    ));
    let batch: Vec<(&str, String)> = values
        .iter()
        .map(|v| ("remarshal", dumps(v).unwrap()))
        .collect();
    for ((v, (_, ours)), reply) in values.iter().zip(&batch).zip(python(&py, &batch)) {
        let theirs = reply.unwrap_or_else(|e| panic!("python refused {ours}: {e}"));
        if matches!(v, Value::Set(_)) {
            // Python's set order is its own; compare as values.
            assert_eq!(loads(&theirs).unwrap(), loads(ours).unwrap());
            continue;
        }
        assert_eq!(&theirs, ours, "python re-encoded differently: {v:?}");
        assert_eq!(loads(&theirs).unwrap(), v.canonical());
    }
}

#[test]
fn references_python_writes_decode_to_copies() {
    // xml_marshaller writes a <reference> when the same container object appears twice:
    // Python marshals [v, v, {"k": v}, (v,)] for the representative values, the captured
    // bodies and random ones; Rust must decode each reference to a copy of v (issue #19: the
    // byte bound refuses none of them), and Python must read Rust's re-encoding back.
    let Some(py) = venv_python() else { return };
    let mut values = representative();
    for file in ["http-exchanges.txt", "node-http-exchanges.txt"] {
        for (_, body) in marshal_bodies(file) {
            if !body.ends_with(TRUNCATED) {
                values.push(loads(&body).unwrap());
            }
        }
    }
    values.extend(samples(
        arb_value(Kinds {
            sets: false,
            int_keys: true,
            objects: true,
        }),
        200,
        3,
    ));
    let batch: Vec<(&str, String)> = values
        .iter()
        .map(|v| ("share", dumps(v).unwrap()))
        .collect();
    let mut with_references = 0;
    let mut back = Vec::new();
    for (v, reply) in values.iter().zip(python(&py, &batch)) {
        let theirs = reply.unwrap_or_else(|e| panic!("python refused {v:?}: {e}"));
        with_references += usize::from(theirs.contains("<reference "));
        let w = v.canonical();
        let expected = Value::List(vec![
            w.clone(),
            w.clone(),
            Value::dict([("k", w.clone())]),
            Value::Tuple(vec![w]),
        ]);
        let got = loads(&theirs).unwrap_or_else(|e| panic!("{theirs}: {e}"));
        assert_eq!(got, expected, "{theirs}");
        back.push(("remarshal", dumps(&got).unwrap()));
    }
    // Every container value (most of them) is shared, hence referenced.
    assert!(with_references > values.len() / 2, "{with_references}");
    for ((_, ours), reply) in back.iter().zip(python(&py, &back)) {
        assert_eq!(&reply.unwrap_or_else(|e| panic!("{ours}: {e}")), ours);
    }
}

#[test]
fn captured_bodies_are_what_python_writes() {
    // The one-line wire form reconstructed from every captured body is byte-identical to
    // Python's dumps(loads(...)): the reconstruction is the real wire form.
    let Some(py) = venv_python() else { return };
    let mut batch = Vec::new();
    for file in ["http-exchanges.txt", "node-http-exchanges.txt"] {
        for (_, body) in marshal_bodies(file) {
            if !body.ends_with(TRUNCATED) {
                batch.push(("remarshal", dumps(&loads(&body).unwrap()).unwrap()));
            }
        }
    }
    assert_eq!(batch.len(), 44);
    for ((_, ours), reply) in batch.iter().zip(python(&py, &batch)) {
        assert_eq!(&reply.unwrap(), ours);
    }
}

#[test]
fn dict2xml_and_python_str_agree_with_python() {
    let Some(py) = venv_python() else { return };
    let dicts = samples(arb_param_dict(), 300, 2);
    let mut batch = Vec::new();
    let mut ours = Vec::new();
    for d in &dicts {
        // The master applies dict2xml to the decoded request, like slapproxy.
        let decoded = loads(&dumps(d).unwrap()).unwrap();
        batch.push(("dict2xml", dumps(d).unwrap()));
        ours.push(dict2xml_value(&decoded).unwrap());
    }
    for (i, reply) in python(&py, &batch).into_iter().enumerate() {
        assert_eq!(reply.unwrap(), ours[i], "dict2xml of {:?}", dicts[i]);
    }
    // xml2dict of Rust's dict2xml output, through Python, is the same dictionary.
    let batch: Vec<(&str, String)> = ours.iter().map(|x| ("xml2dict", x.clone())).collect();
    for (i, reply) in python(&py, &batch).into_iter().enumerate() {
        let theirs = loads(&reply.unwrap()).unwrap();
        assert_eq!(
            theirs,
            Value::from_str_dict(&xml2dict(&ours[i]).unwrap()).canonical()
        );
    }
}

#[test]
fn json_values_render_like_python() {
    let Some(py) = venv_python() else { return };
    let json_values = samples(arb_json_object(), 200, 3);
    let batch: Vec<(&str, String)> = json_values
        .iter()
        .flat_map(|j| {
            let text = serde_json::to_string(j).unwrap();
            [("str_json", text.clone()), ("json_dumps", text)]
        })
        .collect();
    let replies = python(&py, &batch);
    for (i, j) in json_values.iter().enumerate() {
        assert_eq!(
            replies[2 * i].as_ref().unwrap(),
            &pyrepr::py_str_json(j),
            "str() of {j}"
        );
        assert_eq!(
            replies[2 * i + 1].as_ref().unwrap(),
            &instance_xml::python_json_dumps_indent2(j),
            "json.dumps of {j}"
        );
    }
}

#[test]
fn python_and_rust_refuse_the_same_bad_documents() {
    let Some(py) = venv_python() else { return };
    let bad = [
        "<marshal><int>1</int>",
        "<marshal><object id=\"i2\" module=\"os\" class=\"system\"><tuple/><dictionary id=\"i3\"/></object></marshal>",
        "<marshal><object id=\"i2\" module=\"slapos.slap.slap\" class=\"slap\"><tuple/><dictionary id=\"i3\"/></object></marshal>",
        "<marshal><object id=\"i2\" module=\"slapos.slap.slap\" class=\"Computer\"><tuple/><dictionary id=\"i3\"/></object></marshal>",
        "<marshal><bogus/></marshal>",
        "<marshal><int>x</int></marshal>",
        "<marshal><float>1.2.3</float></marshal>",
        "<marshal><dictionary id=\"i2\"><list id=\"i3\"/><int>1</int></dictionary></marshal>",
        "<marshal><string>&bogus;</string></marshal>",
        "<marshal><string>\u{1}</string></marshal>",
        "<marshal><string>&#0;</string></marshal>",
        "<marshal><reference id=\"i9\"/></marshal>",
        "<marshal><list id=\"i2\"/><list id=\"i3\"/></marshal>",
        "<marshal><marshal/></marshal>",
        "",
    ];
    let batch: Vec<(&str, String)> = bad.iter().map(|b| ("remarshal", (*b).to_owned())).collect();
    for (b, reply) in bad.iter().zip(python(&py, &batch)) {
        assert!(reply.is_err(), "python accepted {b:?}");
        assert!(loads(b).is_err(), "rust accepted {b:?}");
    }
}
