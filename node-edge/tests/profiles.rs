//! Every example's instance profile, requested with hostile parameter values: rendering either
//! fails cleanly or produces a manifest with exactly the structure of a benign request (same
//! services, promises, prepare steps, files, requests, keys and argv lengths), and the values
//! that are published as they are come back exactly.

use std::collections::BTreeMap;
use std::path::Path;

use node_edge::profile::{InstanceManifest, PartitionContext, RenderContext, lint, render};
use slapos_proto::Params;

fn context(parameters: Params) -> RenderContext {
    RenderContext {
        parameters,
        partition: PartitionContext {
            id: "slappart0".into(),
            path: "/srv/inst/slappart0".into(),
            ipv4: "127.0.0.1".into(),
            ipv6: String::new(),
            addresses: vec!["127.0.0.1".into()],
            ports: vec![20000, 20001],
            cert: String::new(),
            key: String::new(),
            ca: String::new(),
        },
        ports: vec![20000, 20001],
        software_dir: "/srv/soft/abc".into(),
        software_url: "/srv/sr/software.toml".into(),
        software_type: "default".into(),
        title: "web".into(),
        root_title: "web".into(),
        computer_id: "COMP-1".into(),
        master_url: "http://127.0.0.1:1".into(),
        state: "started".into(),
        tools_dir: "/opt/slapos/bin".into(),
        children: BTreeMap::new(),
    }
}

/// What a manifest runs and publishes, to compare with the benign one.
fn shape(m: &InstanceManifest) -> String {
    let argv = |name: &str, cmd: &[String]| format!("{name}:{}", cmd.len());
    let mut parts: Vec<String> = Vec::new();
    parts.extend(
        m.services
            .iter()
            .map(|s| format!("service {}", argv(&s.name, &s.command))),
    );
    parts.extend(
        m.services
            .iter()
            .map(|s| format!("env {:?}", s.env.keys().collect::<Vec<_>>())),
    );
    parts.extend(
        m.promises
            .iter()
            .map(|p| format!("promise {}", argv(&p.name, &p.command))),
    );
    parts.extend(
        m.prepare
            .iter()
            .map(|p| format!("prepare {}", argv(&p.name, &p.command))),
    );
    parts.extend(
        m.files
            .iter()
            .map(|f| format!("file {} {:o}", f.path.display(), f.mode)),
    );
    parts.extend(
        m.requests
            .iter()
            .map(|r| format!("request {}", r.title.as_str())),
    );
    parts.push(format!(
        "connection {:?}",
        m.connection.keys().collect::<Vec<_>>()
    ));
    parts.push(format!(
        "resources {:?}",
        m.resources.keys().collect::<Vec<_>>()
    ));
    parts.push(format!("{:?} {:?}", m.connection_file, m.resources_file));
    parts.join("\n")
}

const MARK: &str = "PWNED";

fn hostile_values() -> Vec<serde_json::Value> {
    let s = |v: String| serde_json::Value::String(v);
    vec![
        s(format!(
            "10\n[[service]]\nname = \"{MARK}\"\ncommand = [\"touch\", \"/tmp/{MARK}\"]\n"
        )),
        // The whole attack: the keys that follow the value land in a promise of its own.
        s(format!(
            "10\n[[service]]\nname = \"{MARK}\"\ncommand = [\"touch\", \"/tmp/{MARK}\"]\n\
             [[promise]]\nname = \"{MARK}-2\"\ncommand = [\"true\"]\n"
        )),
        s(format!(
            "x\"]\n[[service]]\nname = \"{MARK}\"\ncommand = [\"touch\"]\n\
             [[promise]]\nname = \"{MARK}-2\"\ncommand = [\"x"
        )),
        s(format!(
            "\" ]\n[[promise]]\nname = \"{MARK}\"\ncommand = [\"true\"]\n"
        )),
        s(format!("'{MARK}''' ''' \"\"\"\n[[service]]")),
        s(format!("]]}} {MARK} = 1, x = [ # comment")),
        s(format!("{MARK}\u{0}nul\u{1b}[31m\u{7f}\r\n")),
        s(format!("{}{MARK}", "a".repeat(100_000))),
        s(format!("\\\" , \"{MARK}\" ]")),
        serde_json::json!({ "k": format!("{MARK}\n[[service]]"), "[x]": [1, "]"] }),
        serde_json::json!([format!("\"{MARK}\"], [\"x"), 1]),
        serde_json::json!(1e300),
        serde_json::json!(true),
    ]
}

/// The parameter names a profile reads (`parameters.x`, and `p.x` after `set p = parameters`).
fn parameter_names(source: &str) -> Vec<String> {
    let mut names = Vec::new();
    for prefix in ["parameters.", "p."] {
        let mut rest = source;
        while let Some(i) = rest.find(prefix) {
            let before = rest[..i].chars().last();
            rest = &rest[i + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.') {
                continue;
            }
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

#[test]
fn every_example_survives_hostile_parameters() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut checked = 0;
    for e in std::fs::read_dir(&examples).unwrap() {
        let profile = e.unwrap().path().join("instance.toml.in");
        let Ok(source) = std::fs::read_to_string(&profile) else {
            continue;
        };
        let name = profile.display().to_string();
        lint(&name, &source).unwrap_or_else(|e| panic!("{e}"));
        let shape_with = |params: Params| {
            let text = render(&name, &source, &context(params)).ok()?;
            Some(shape(&InstanceManifest::parse(&text).ok()?))
        };
        let names = parameter_names(&source);
        assert!(!names.is_empty(), "{name}: no parameter found");
        for param in &names {
            // A benign value of the parameter (an optional one may add its key).
            let benign = [serde_json::json!("1"), serde_json::json!(1)]
                .into_iter()
                .find_map(|v| shape_with(Params::from_iter([(param.clone(), v)])))
                .unwrap_or_else(|| shape_with(Params::new()).expect("renders without parameters"));
            for value in hostile_values() {
                let mut params = Params::new();
                params.insert(param.clone(), value.clone());
                let Ok(text) = render(&name, &source, &context(params)) else {
                    continue; // a clean failure: nothing runs
                };
                let Ok(m) = InstanceManifest::parse(&text) else {
                    continue;
                };
                assert_eq!(
                    shape(&m),
                    benign,
                    "{name}: parameter {param} = {value:.80} changed the manifest:\n{text:.2000}"
                );
                let names = m.services.iter().map(|s| &s.name);
                let names = names.chain(m.promises.iter().map(|p| &p.name));
                assert!(
                    !names.into_iter().any(|n| n.contains(MARK)),
                    "{name}: injected"
                );
                checked += 1;
            }
        }
        // The values published as they are come back exactly.
        if name.contains("hello-web") {
            for value in hostile_values().into_iter().filter(|v| v.is_string()) {
                let mut params = Params::new();
                params.insert("title".into(), value.clone());
                let text = render(&name, &source, &context(params)).unwrap();
                let m = InstanceManifest::parse(&text).unwrap();
                assert_eq!(m.connection["title"], value);
                assert!(
                    !m.files[0].content.contains(MARK)
                        || m.files[0].content.starts_with("<!doctype")
                );
            }
        }
    }
    assert!(
        checked > 100,
        "only {checked} hostile renders produced a manifest"
    );
}
