//! Instance profile rendering (`node_edge::profile`): the node renders a release's profile
//! (minijinja) with the instance parameters a requester chose, then parses the result as an
//! instance manifest (TOML). The profiles are the repository's examples, as shipped; the
//! parameters are the input: what an untrusted requester controls.
//!
//! Input: one byte choosing the profile, then the parameters as a JSON object (any other text
//! becomes the string value of every parameter the profile reads).
//!
//! Properties, for every input:
//! * rendering and parsing never panic;
//! * `hello-web` passes every parameter through the `toml` filter, so for any parameters
//!   without `null` it renders, the result parses, and the published `title` is the parameter
//!   (text in, same text out: no injection into the manifest);
//! * `InstanceManifest::parse` of any rendered text keeps its promises (unique names,
//!   relative file paths).
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use node_edge::profile::{InstanceManifest, PartitionContext, RenderContext, render};
use serde_json::Value;
use slapos_proto::Params;

const PROFILES: &[(&str, &str)] = &[
    (
        "hello-web",
        include_str!("../../examples/hello-web/instance.toml.in"),
    ),
    (
        "sensor-gateway",
        include_str!("../../examples/sensor-gateway/instance.toml.in"),
    ),
    (
        "flaky",
        include_str!("../../examples/flaky/instance.toml.in"),
    ),
    ("enb", include_str!("../../examples/enb/instance.toml.in")),
    (
        "rt-probe",
        include_str!("../../examples/rt-probe/instance.toml.in"),
    ),
];

/// Parameters the example profiles read, for non-JSON input.
const NAMES: &[&str] = &[
    "title",
    "message",
    "stream",
    "max_bytes",
    "full_policy",
    "mqtt_topics",
    "upstream_http_url",
    "upstream_topic",
    "healthy",
    "crash",
    "promise_period",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let (name, source) = PROFILES[usize::from(pick) % PROFILES.len()];
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let parameters: Params = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(o)) => o,
        _ => NAMES
            .iter()
            .map(|n| ((*n).to_owned(), Value::String(text.to_owned())))
            .collect(),
    };
    let rendered = render(name, source, &context(parameters.clone()));
    if name == "hello-web" && !parameters.values().any(has_null) {
        let text = rendered.unwrap_or_else(|e| panic!("hello-web refused parameters: {e}"));
        let m = InstanceManifest::parse(&text)
            .unwrap_or_else(|e| panic!("hello-web rendered an invalid manifest: {e}\n{text}"));
        let title = parameters
            .get("title")
            .cloned()
            .unwrap_or_else(|| Value::from("Hello from the edge"));
        assert_eq!(m.connection.get("title"), Some(&title), "{text}");
        assert_eq!(m.services.len(), 1);
        check(&m);
    } else if let Ok(text) = rendered
        && let Ok(m) = InstanceManifest::parse(&text)
    {
        check(&m);
    }
});

fn check(m: &InstanceManifest) {
    let mut names = std::collections::BTreeSet::new();
    for s in &m.services {
        assert!(names.insert(&s.name), "service {} twice", s.name);
        assert!(s.command.first().is_some_and(|p| !p.is_empty()));
    }
    for f in &m.files {
        assert!(f.path.is_relative(), "{:?}", f.path);
        assert!(f.mode <= 0o7777);
    }
}

fn has_null(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.iter().any(has_null),
        Value::Object(o) => o.values().any(has_null),
        _ => false,
    }
}

fn context(parameters: Params) -> RenderContext {
    let partition = PartitionContext {
        id: "slappart0".into(),
        path: "/srv/inst/slappart0".into(),
        ipv4: "127.0.0.1".into(),
        ipv6: String::new(),
        addresses: vec!["127.0.0.1".into()],
        ports: vec![20000, 20001, 20002, 20003],
        cert: String::new(),
        key: String::new(),
        ca: String::new(),
    };
    // The same untrusted values as a hosted shared instance (what a host's template reads).
    let mut shared = parameters.clone();
    shared.insert("slave_reference".into(), Value::String("_shared".into()));
    RenderContext {
        slave_instance_list: vec![shared],
        parameters,
        ports: partition.ports.clone(),
        partition,
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
