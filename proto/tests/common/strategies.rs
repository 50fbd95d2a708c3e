//! proptest strategies for marshal values.

use proptest::prelude::*;
use slapos_proto::slap::*;

/// Characters that exercise the escaping rules: ASCII, the XML specials, and non-ASCII from
/// ranges assigned in every Unicode version Python 3.8+ ships (so `repr()` agrees), plus
/// chosen non-printable ones.
pub fn arb_char() -> impl Strategy<Value = char> {
    prop_oneof![
        6 => prop::char::range(' ', '~'),
        2 => prop::sample::select(vec!['<', '>', '&', '"', '\'', '\t', '\n', '\r', ';', '#', '\\']),
        1 => prop::char::range('\u{a1}', '\u{17f}'),
        1 => prop::char::range('\u{400}', '\u{45f}'),
        1 => prop::char::range('\u{4e00}', '\u{4fff}'),
        1 => prop::char::range('\u{1f600}', '\u{1f64f}'),
        1 => prop::sample::select(vec!['\u{85}', '\u{a0}', '\u{ad}', '\u{2028}', '\u{feff}', '\u{e000}', '\u{fffd}', '\u{7f}']),
    ]
}

/// A string of [`arb_char`]s.
pub fn arb_string() -> impl Strategy<Value = String> {
    prop::collection::vec(arb_char(), 0..10).prop_map(|v| v.into_iter().collect())
}

/// An integer outside `i64`, often near the `<int>`/`<long>` threshold (1e24).
pub fn arb_long() -> impl Strategy<Value = Value> {
    let digits = prop_oneof![
        (19usize..=40).prop_flat_map(|n| prop::collection::vec(0u8..10, n)),
        // 23 to 25 digits: both sides of 999999999999999983222784.
        (23usize..=25).prop_flat_map(|n| prop::collection::vec(prop_oneof![0u8..10, Just(9u8)], n)),
    ];
    (digits, any::<bool>()).prop_filter_map("outside i64", |(d, negative)| {
        let mut text: String = d.iter().map(|x| char::from(b'0' + x)).collect();
        if negative {
            text.insert(0, '-');
        }
        match PyLong::parse_python(&text)? {
            value::PyIntText::Big(b) => Some(Value::Long(b)),
            value::PyIntText::Small(_) => None,
        }
    })
}

/// A finite float or ±inf (NaN is left out: it is not equal to itself).
pub fn arb_float() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("not NaN", |f| !f.is_nan()),
        prop::sample::select(vec![
            0.0,
            -0.0,
            1e16,
            1e15,
            1e-4,
            1e-5,
            0.1,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1795312642.4379225
        ]),
        (-1.0e6..1.0e6f64),
    ]
}

/// A scalar value.
pub fn arb_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::None),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        arb_long(),
        arb_float().prop_map(Value::Float),
        arb_string().prop_map(Value::String),
    ]
}

/// A dictionary key: mostly strings, sometimes ints (unique by Python equality).
fn arb_key(with_int_keys: bool) -> BoxedStrategy<Value> {
    if with_int_keys {
        prop_oneof![3 => arb_string().prop_map(Value::String), 1 => any::<i64>().prop_map(Value::Int)].boxed()
    } else {
        arb_string().prop_map(Value::String).boxed()
    }
}

fn unique_keys(entries: Vec<(Value, Value)>) -> Vec<(Value, Value)> {
    let mut seen = std::collections::HashSet::new();
    entries
        .into_iter()
        .filter(|(k, _)| seen.insert(k.py_repr()))
        .collect()
}

/// One of the slapos objects, built with the typed builders (their Python constructors accept
/// them and `__dict__` re-dumps identically).
pub fn arb_object() -> impl Strategy<Value = Value> {
    // SoftwareInstance gets at least one attribute: Python 3.11+ marshals an empty __dict__
    // as <none/> (object.__getstate__), which its own loads then cannot read.
    (
        arb_string(),
        arb_string(),
        arb_string(),
        0u8..4,
        prop::collection::btree_map("_[a-z_]{1,8}", arb_scalar(), 1..4),
    )
        .prop_map(|(a, b, c, kind, attrs)| match kind {
            0 => Value::Object(SoftwareReleaseDoc::supplied(&a, &b, &c).to_object()),
            1 => Value::Object(ComputerPartitionDoc::free(&a, &b).to_object()),
            2 => Value::Object(SoftwareInstanceDoc { attributes: attrs }.to_object()),
            _ => Value::Object(
                ComputerDoc {
                    computer_id: a.clone(),
                    software_release_list: vec![SoftwareReleaseDoc::supplied(&c, &a, "available")],
                    partition_list: vec![ComputerPartitionDoc::free(&a, &b)],
                    extra: attrs,
                }
                .to_object(),
            ),
        })
}

/// What [`arb_value`] may generate besides scalars, lists, tuples and string-keyed dicts.
#[derive(Debug, Clone, Copy)]
pub struct Kinds {
    /// Sets (their Python iteration order is hash-dependent, so tests comparing with
    /// Python's own output leave them out).
    pub sets: bool,
    /// Int dictionary keys.
    pub int_keys: bool,
    /// slapos objects (their Python `repr()` holds an address).
    pub objects: bool,
}

/// Any value of the given kinds.
pub fn arb_value(kinds: Kinds) -> impl Strategy<Value = Value> {
    let with_sets = kinds.sets;
    let with_int_keys = kinds.int_keys;
    let leaf = if kinds.objects {
        prop_oneof![8 => arb_scalar(), 1 => arb_object()].boxed()
    } else {
        arb_scalar().boxed()
    };
    leaf.prop_recursive(4, 48, 6, move |inner| {
        let set = prop::collection::vec(arb_scalar(), 0..5).prop_map(|items| {
            let mut seen = std::collections::HashSet::new();
            // Keep one of each Python-equal element (1 == 1.0 == True).
            Value::Set(
                items
                    .into_iter()
                    .filter(|v| {
                        let key = match v {
                            Value::Bool(b) => format!("n{}", i64::from(*b)),
                            Value::Int(i) => format!("n{i}"),
                            Value::Float(f) if f.fract() == 0.0 && f.abs() < 9e18 => {
                                format!("n{}", *f as i64)
                            }
                            other => other.py_repr(),
                        };
                        seen.insert(key)
                    })
                    .collect(),
            )
        });
        let dict = prop::collection::vec((arb_key(with_int_keys), inner.clone()), 0..5)
            .prop_map(|e| Value::Dict(unique_keys(e)));
        let list = prop::collection::vec(inner.clone(), 0..5).prop_map(Value::List);
        let tuple = prop::collection::vec(inner, 0..4).prop_map(Value::Tuple);
        if with_sets {
            prop_oneof![list, tuple, dict, set].boxed()
        } else {
            prop_oneof![list, tuple, dict].boxed()
        }
    })
}

/// A dictionary with string keys and no objects or sets, the shape of SLAP parameters.
pub fn arb_param_dict() -> impl Strategy<Value = Value> {
    let kinds = Kinds {
        sets: false,
        int_keys: false,
        objects: false,
    };
    prop::collection::vec((arb_key(false), arb_value(kinds)), 0..6)
        .prop_map(|e| Value::Dict(unique_keys(e)))
}

/// A JSON object as the JSON API receives parameters.
pub fn arb_json_object() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(serde_json::Value::from),
        arb_float()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        arb_string().prop_map(serde_json::Value::String),
    ];
    let value = leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(arb_string(), inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    });
    prop::collection::btree_map(arb_string(), value, 0..5)
        .prop_map(|m| serde_json::Value::Object(m.into_iter().collect()))
}
