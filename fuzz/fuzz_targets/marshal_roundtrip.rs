//! xml_marshaller decoder and encoder (`slapos_proto::slap::{loads, dumps}`).
//!
//! Properties, for every input:
//! * the input as a document: `loads` never panics and stays within its limits (the value
//!   count and the expanded size it reports are what the limits allow); whatever decodes
//!   re-encodes, and that encoding is a fixed point (`dumps(loads(dumps(v))) == dumps(v)`);
//! * the input as a recipe for a value: `loads(dumps(v)) == v.canonical()` (compared through
//!   `dumps` when a NaN makes `==` useless).
//!
//! Time and memory per input are bounded by libFuzzer (`-timeout`, `-rss_limit_mb`, set by
//! scripts/fuzz.sh) and by the tight [`LIMITS`] below.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Unstructured};
use libfuzzer_sys::fuzz_target;
use slapos_proto::slap::marshal::VALUE_BYTES;
use slapos_proto::slap::{
    DecodeLimits, MarshalError, Object, PyLong, SlapClass, Value, dumps, loads, loads_with_limits,
};

/// Small bounds so a reference bomb costs milliseconds, not the default 128 MiB.
const LIMITS: DecodeLimits = DecodeLimits {
    max_depth: 64,
    max_values: 4096,
    max_bytes: 1 << 20,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        document(text);
    }
    let mut u = Unstructured::new(data);
    if let Ok(v) = value(&mut u, 4) {
        roundtrip(&v);
    }
});

fn document(text: &str) {
    let limited = loads_with_limits(text, LIMITS);
    match &limited {
        Ok(v) => {
            assert!(v.node_count() <= LIMITS.max_values, "value limit passed");
            let xml = dumps(v).expect("a decoded value always encodes");
            // A value that decoded within the limits is smaller than the byte bound.
            assert!(
                v.node_count() * VALUE_BYTES <= LIMITS.max_bytes,
                "byte limit passed"
            );
            let again = loads(&xml).expect("the encoder's output always decodes");
            assert_eq!(dumps(&again).expect("re-encode"), xml, "not a fixed point");
        }
        Err(MarshalError::TooManyBytes { limit }) => assert_eq!(*limit, LIMITS.max_bytes),
        Err(MarshalError::TooLarge { limit }) => assert_eq!(*limit, LIMITS.max_values),
        Err(MarshalError::TooDeep { limit }) => assert_eq!(*limit, LIMITS.max_depth),
        Err(_) => {}
    }
    // The default limits accept whatever the tight ones do, with the same value.
    if let Ok(v) = &limited {
        let default = loads(text).expect("default limits are wider");
        assert_eq!(dumps(&default).ok(), dumps(v).ok());
    }
}

fn roundtrip(v: &Value) {
    let Ok(xml) = dumps(v) else {
        return; // text XML cannot carry (a control character): refused, as lxml does
    };
    let back = loads(&xml).unwrap_or_else(|e| panic!("dumps output refused: {e}\n{xml}"));
    assert_eq!(dumps(&back).expect("re-encode"), xml);
    if !has_nan(v) {
        assert_eq!(back, v.canonical());
    }
}

fn has_nan(v: &Value) -> bool {
    match v {
        Value::Float(f) => f.is_nan(),
        Value::List(items) | Value::Tuple(items) | Value::Set(items) => items.iter().any(has_nan),
        Value::Dict(entries) => entries.iter().any(|(k, v)| has_nan(k) || has_nan(v)),
        Value::Object(o) => o.initargs.iter().any(has_nan) || o.state.values().any(has_nan),
        _ => false,
    }
}

/// A value built from fuzzer bytes: every kind, nested up to `depth`, dictionary keys and set
/// items distinct (the round trip holds for values without duplicate keys).
fn value(u: &mut Unstructured, depth: u32) -> arbitrary::Result<Value> {
    let kinds = if depth == 0 { 6 } else { 11 };
    Ok(match u.int_in_range(0..=kinds)? {
        0 => Value::None,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::Int(u.arbitrary()?),
        3 => Value::Float(u.arbitrary()?),
        4 | 5 => Value::String(u.arbitrary()?),
        6 => {
            // Beyond i64: a <long> (or an <int> below 1e24).
            let digits: u128 = u.arbitrary()?;
            let sign = if u.arbitrary()? { "-" } else { "" };
            let text = format!("{sign}{}{digits}", u.int_in_range(1..=9u8)?);
            match PyLong::parse_python(&text) {
                Some(big) => big.into(),
                None => Value::None,
            }
        }
        7 => Value::List(items(u, depth)?),
        8 => Value::Tuple(items(u, depth)?),
        9 => Value::Set(distinct_ints(u)?.into_iter().map(Value::Int).collect()),
        10 => {
            let mut entries = Vec::new();
            for k in distinct_keys(u)? {
                entries.push((Value::String(k), value(u, depth - 1)?));
            }
            Value::Dict(entries)
        }
        _ => {
            let class = *u.choose(&[
                SlapClass::Computer,
                SlapClass::ComputerPartition,
                SlapClass::SoftwareRelease,
                SlapClass::SoftwareInstance,
            ])?;
            let range = class.initargs_range();
            let n = u.int_in_range(*range.start()..=*range.end())?;
            let mut initargs = Vec::with_capacity(n);
            for _ in 0..n {
                initargs.push(value(u, depth - 1)?);
            }
            let mut o = Object::new(class, initargs);
            for k in distinct_keys(u)? {
                o.state.insert(k, value(u, depth - 1)?);
            }
            if o.state.is_empty() {
                // Python ≥ 3.11 cannot read an attribute-less object (docs/slap-codec.md).
                o.state.insert("_id".into(), Value::None);
            }
            Value::Object(o)
        }
    })
}

fn items(u: &mut Unstructured, depth: u32) -> arbitrary::Result<Vec<Value>> {
    let n = u.int_in_range(0..=4)?;
    (0..n).map(|_| value(u, depth - 1)).collect()
}

fn distinct_keys(u: &mut Unstructured) -> arbitrary::Result<Vec<String>> {
    let mut keys: Vec<String> = Vec::new();
    for _ in 0..u.int_in_range(0..=4)? {
        let k: String = u.arbitrary()?;
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    Ok(keys)
}

fn distinct_ints(u: &mut Unstructured) -> arbitrary::Result<Vec<i64>> {
    let mut out: Vec<i64> = Vec::new();
    for _ in 0..u.int_in_range(0..=4)? {
        let i = u.arbitrary()?;
        if !out.contains(&i) {
            out.push(i);
        }
    }
    Ok(out)
}
