//! Python's `str()` and `repr()` of the values SLAP carries.
//!
//! `slapos.util.dict2xml` stores every parameter value as `str(value)`, so `3` is kept as
//! `'3'`, `True` as `'True'`, `{'k': 'v'}` as `"{'k': 'v'}"` and `1e20` as `'1e+20'`. The master
//! must produce the same text, for values decoded from xml_marshaller ([`py_str`]) and for
//! values received as JSON ([`py_str_json`]).
//!
//! Limits: `repr()` of a non-ASCII character depends on the Unicode database of the Python
//! build (`str.isprintable`). Control, format, separator, private-use and non-character code
//! points are escaped like Python does; unassigned code points outside planes 4–13 are treated
//! as printable (Python escapes them). Objects have no stable repr (Python prints an address):
//! they render as `<slapos.slap.slap.Computer object>`.

use std::fmt::Write;

use super::value::Value;

/// Python `str(value)`.
pub fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => py_repr(other),
    }
}

/// Python `repr(value)`.
pub fn py_repr(v: &Value) -> String {
    let mut out = String::new();
    write_repr(&mut out, v);
    out
}

fn write_repr(out: &mut String, v: &Value) {
    match v {
        Value::None => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Long(l) => out.push_str(l.as_str()),
        Value::Float(f) => out.push_str(&float_repr(*f)),
        Value::String(s) => write_str_repr(out, s),
        Value::List(items) => write_seq(out, "[", "]", items, write_repr),
        Value::Tuple(items) if items.len() == 1 => {
            out.push('(');
            write_repr(out, &items[0]);
            out.push_str(",)");
        }
        Value::Tuple(items) => write_seq(out, "(", ")", items, write_repr),
        Value::Set(items) if items.is_empty() => out.push_str("set()"),
        Value::Set(items) => write_seq(out, "{", "}", items, write_repr),
        Value::Dict(entries) => write_map(
            out,
            entries.iter().map(|(k, v)| (k, v)),
            write_repr,
            write_repr,
        ),
        Value::Object(o) => {
            let _ = write!(out, "<{} object>", o.class);
        }
    }
}

/// `{k: v, …}` in the given order (a Python dict's insertion order).
fn write_map<'a, K: 'a, V: 'a>(
    out: &mut String,
    entries: impl Iterator<Item = (&'a K, &'a V)>,
    key: fn(&mut String, &K),
    value: fn(&mut String, &V),
) {
    out.push('{');
    for (i, (k, v)) in entries.enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        key(out, k);
        out.push_str(": ");
        value(out, v);
    }
    out.push('}');
}

fn write_seq<T>(out: &mut String, open: &str, close: &str, items: &[T], f: fn(&mut String, &T)) {
    out.push_str(open);
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        f(out, item);
    }
    out.push_str(close);
}

/// Python `str(value)` of a value decoded by `json.loads`.
pub fn py_str_json(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => py_repr_json(other),
    }
}

/// Python `repr(value)` of a value decoded by `json.loads` (objects in the map's order).
pub fn py_repr_json(v: &serde_json::Value) -> String {
    let mut out = String::new();
    write_json_repr(&mut out, v);
    out
}

fn write_json_repr(out: &mut String, v: &serde_json::Value) {
    use serde_json::Value as J;
    match v {
        J::Null => out.push_str("None"),
        J::Bool(true) => out.push_str("True"),
        J::Bool(false) => out.push_str("False"),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                let _ = write!(out, "{i}");
            } else if let Some(u) = n.as_u64() {
                let _ = write!(out, "{u}");
            } else {
                out.push_str(&float_repr(n.as_f64().unwrap_or(f64::NAN)));
            }
        }
        J::String(s) => write_str_repr(out, s),
        J::Array(items) => write_seq(out, "[", "]", items, write_json_repr),
        J::Object(map) => write_map(
            out,
            map.iter(),
            |out, k: &String| write_str_repr(out, k),
            write_json_repr,
        ),
    }
}

/// Python `repr(str)`: single quotes unless the text holds `'` and no `"`.
pub fn str_repr(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    write_str_repr(&mut out, s);
    out
}

fn write_str_repr(out: &mut String, s: &str) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            c if is_printable(c) => out.push(c),
            c => {
                let n = u32::from(c);
                let _ = if n <= 0xff {
                    write!(out, "\\x{n:02x}")
                } else if n <= 0xffff {
                    write!(out, "\\u{n:04x}")
                } else {
                    write!(out, "\\U{n:08x}")
                };
            }
        }
    }
    out.push(quote);
}

/// `str.isprintable()` for one non-ASCII-printable character (see the module limits).
fn is_printable(c: char) -> bool {
    let n = u32::from(c);
    if n < 0x20 || n == 0x7f {
        return false;
    }
    if n < 0x7f {
        return true;
    }
    const NOT_PRINTABLE: &[(u32, u32)] = &[
        (0x0080, 0x00a0), // C1 controls, NO-BREAK SPACE
        (0x00ad, 0x00ad),
        (0x0600, 0x0605),
        (0x061c, 0x061c),
        (0x06dd, 0x06dd),
        (0x070f, 0x070f),
        (0x0890, 0x0891),
        (0x08e2, 0x08e2),
        (0x1680, 0x1680),
        (0x180e, 0x180e),
        (0x2000, 0x200f),
        (0x2028, 0x202f),
        (0x205f, 0x2064),
        (0x2066, 0x206f),
        (0x3000, 0x3000),
        (0xd800, 0xf8ff), // surrogates and private use
        (0xfdd0, 0xfdef),
        (0xfeff, 0xfeff),
        (0xfff0, 0xfffb),
        (0x110bd, 0x110bd),
        (0x110cd, 0x110cd),
        (0x13430, 0x1343f),
        (0x1bca0, 0x1bca3),
        (0x1d173, 0x1d17a),
        (0x40000, 0xdffff),  // unassigned planes 4-13
        (0xe0000, 0xe00ff),  // tags and unassigned
        (0xe01f0, 0x10ffff), // unassigned, private use planes 15-16
    ];
    if n & 0xfffe == 0xfffe {
        return false; // U+xFFFE and U+xFFFF of every plane
    }
    !NOT_PRINTABLE.iter().any(|&(lo, hi)| (lo..=hi).contains(&n))
}

/// Python `repr(float)` (= `str(float)`): the shortest text that reads back to the same
/// float, in fixed notation when the decimal exponent is in `-4..16`, else `1e+20`, `1.5e-07`.
pub fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    // Rust's `{:e}` gives the shortest round-trip digits, like Python's repr: "d.ddde±x".
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if f.is_sign_negative() { "-" } else { "" };
    let decpt = exp + 1; // position of the decimal point relative to the digits
    let n = digits.len() as i32;
    let body = if (-3..=16).contains(&decpt) {
        if decpt <= 0 {
            format!("0.{}{}", "0".repeat((-decpt) as usize), digits)
        } else if decpt < n {
            format!(
                "{}.{}",
                &digits[..decpt as usize],
                &digits[decpt as usize..]
            )
        } else {
            format!("{}{}.0", digits, "0".repeat((decpt - n) as usize))
        }
    } else {
        let frac = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits.clone()
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{frac}e{esign}{:02}", exp.abs())
    };
    format!("{sign}{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_like_python() {
        // Expected texts are Python 3.11's repr() of the same floats.
        let cases: &[(f64, &str)] = &[
            (1.5, "1.5"),
            (1e20, "1e+20"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-0.0, "-0.0"),
            (0.0, "0.0"),
            (1.0 / 3.0, "0.3333333333333333"),
            (123456789.125, "123456789.125"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (-2.5e-7, "-2.5e-07"),
            (1795312642.4379225, "1795312642.4379225"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (f64::NAN, "nan"),
        ];
        for (f, want) in cases {
            assert_eq!(float_repr(*f), *want, "repr of {f:?}");
        }
    }

    #[test]
    fn str_repr_quotes_and_escapes() {
        assert_eq!(str_repr("a"), "'a'");
        assert_eq!(str_repr("it's"), "\"it's\"");
        assert_eq!(str_repr("'\""), "'\\'\"'");
        assert_eq!(
            str_repr("a\\b\n\t\r\x01\x7f"),
            "'a\\\\b\\n\\t\\r\\x01\\x7f'"
        );
        assert_eq!(str_repr("é☃😀"), "'é☃😀'");
        assert_eq!(
            str_repr("\u{a0}\u{ad}\u{2028}\u{e000}\u{10ffff}"),
            "'\\xa0\\xad\\u2028\\ue000\\U0010ffff'"
        );
    }

    #[test]
    fn containers_like_python() {
        let v = Value::dict([
            (
                "k",
                Value::List(vec![
                    Value::str("a"),
                    Value::Int(1),
                    Value::Bool(true),
                    Value::None,
                ]),
            ),
            ("t", Value::Tuple(vec![Value::Float(0.5)])),
        ]);
        assert_eq!(py_str(&v), "{'k': ['a', 1, True, None], 't': (0.5,)}");
        assert_eq!(py_str(&Value::Set(vec![])), "set()");
        assert_eq!(py_str(&Value::Tuple(vec![])), "()");
        assert_eq!(py_str(&Value::str("plain")), "plain");
        let j: serde_json::Value = serde_json::json!({"a": [1, 2.0, "x", null, false], "b": {}});
        assert_eq!(
            py_str_json(&j),
            "{'a': [1, 2.0, 'x', None, False], 'b': {}}"
        );
    }
}
