//! The node's software release manifest (`node_edge::release::SoftwareManifest::parse`): the
//! `software.toml` a release URL serves, read by every node that installs it.
//!
//! Properties, for every input:
//! * parsing never panics;
//! * a manifest that parses keeps the format's promises (docs/software-release.md): every
//!   destination and profile is a relative path without `..` (and outside `.slapos`), unique;
//!   every sha256 is 64 lowercase hex digits; modes are ≤ 0o7777; every build command has a
//!   program; at least one software type, each with its profile found by `profile`.
#![no_main]

use std::collections::BTreeSet;
use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use node_edge::release::SoftwareManifest;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(m) = SoftwareManifest::parse(text) else {
        return;
    };
    let mut dests = BTreeSet::new();
    for a in &m.artifacts {
        assert!(contained(&a.path), "artifact path {:?}", a.path);
        assert!(dests.insert(a.path.clone()), "{:?} twice", a.path);
        assert_eq!(a.sha256.len(), 64);
        assert!(
            a.sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{}",
            a.sha256
        );
        assert!(a.mode <= 0o7777, "{:o}", a.mode);
        assert!(!a.url.is_empty());
    }
    for b in &m.build {
        assert!(b.command.first().is_some_and(|p| !p.is_empty()), "{b:?}");
    }
    assert!(!m.instance.is_empty(), "no software type");
    for (ty, path) in &m.instance {
        assert!(contained(path), "profile path {path:?}");
        assert_eq!(m.profile(ty), Ok(path));
    }
    if let Some(model) = &m.parameter_model {
        assert!(!model.is_empty());
    }
});

/// A relative path that stays below its base and out of the node's `.slapos` directory.
fn contained(p: &Path) -> bool {
    !p.as_os_str().is_empty()
        && p.components().all(|c| matches!(c, Component::Normal(_)))
        && p.components()
            .next()
            .is_some_and(|c| !c.as_os_str().to_string_lossy().starts_with(".slapos"))
}
