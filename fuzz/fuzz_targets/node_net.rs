//! The node's partition network scheme (`node_edge::net`).
//!
//! The netlink side of `node_edge::net` has no decoder to fuzz on its own: the acknowledgement
//! parsing lives inside the private `Netlink::request`, interleaved with `recv` on a socket,
//! and the module has no public pure function over netlink bytes. This target covers the pure
//! part that decides what the node asks the kernel for: the `[network]` table (TOML, as in the
//! node's configuration), `NetworkConfig::validate`, the address scheme (`ipv6`, `ipv4`,
//! `tap_name`), `wanted`, and the `network.json` record (`Applied`).
//!
//! Input: one byte for the partition count (0..=255), then the `[network]` table's text.
//!
//! Properties, for every input:
//! * nothing panics (the address arithmetic included, on any prefix);
//! * a configuration that validates gives every partition an address inside its prefix and
//!   a distinct one, and a TAP name the kernel accepts (1..=15 bytes, no `/`);
//! * `wanted` asks for exactly those addresses and TAPs, and its record survives JSON
//!   (`decode(encode(applied)) == applied`).
#![no_main]

use std::collections::BTreeSet;
use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use node_edge::net::{Applied, NetworkConfig, wanted};

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let partitions = u32::from(n);
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let Ok(cfg) = toml::from_str::<NetworkConfig>(text) else {
        return;
    };
    if cfg.validate(partitions).is_err() {
        return;
    }
    let mut v6 = BTreeSet::new();
    let mut v4 = BTreeSet::new();
    let mut taps = BTreeSet::new();
    for i in 0..partitions {
        if let Some(p) = &cfg.ipv6_prefix {
            let a = cfg.ipv6(i).expect("a validated prefix has addresses");
            assert!(in_prefix(IpAddr::V6(a), p), "{a} outside {p}");
            assert!(v6.insert(a), "{a} given twice");
        }
        if let Some(p) = &cfg.ipv4_prefix {
            let a = cfg.ipv4(i).expect("a validated prefix has addresses");
            assert!(in_prefix(IpAddr::V4(a), p), "{a} outside {p}");
            assert!(v4.insert(a), "{a} given twice");
        }
        if let Some(t) = cfg.tap_name(i) {
            assert!(!t.is_empty() && t.len() <= 15 && !t.contains('/'), "{t:?}");
            assert!(taps.insert(t.clone()), "{t} given twice");
        }
    }
    let w = wanted(Some(&cfg), partitions);
    assert_eq!(w.addresses.len(), v6.len() + v4.len());
    assert!(
        w.addresses
            .iter()
            .all(|(ifname, _)| ifname == &cfg.interface)
    );
    assert_eq!(w.taps, taps);
    let json = serde_json::to_vec(&w).expect("record encodes");
    let back: Applied = serde_json::from_slice(&json).expect("record decodes");
    assert_eq!(back, w);
});

/// `addr` is inside `prefix` ("address/length").
fn in_prefix(addr: IpAddr, prefix: &str) -> bool {
    let Some((base, len)) = prefix.split_once('/') else {
        return false;
    };
    let Ok(len) = len.parse::<u32>() else {
        return false;
    };
    match (addr, base.parse::<IpAddr>()) {
        (IpAddr::V6(a), Ok(IpAddr::V6(b))) => {
            let shift = 128 - len;
            shift >= 128 || u128::from(a) >> shift == u128::from(b) >> shift
        }
        (IpAddr::V4(a), Ok(IpAddr::V4(b))) => {
            let shift = 32 - len;
            shift >= 32 || u32::from(a) >> shift == u32::from(b) >> shift
        }
        _ => false,
    }
}
