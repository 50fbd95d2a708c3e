//! "Instance XML": `slapos.util.dict2xml` / `xml2dict`, the format slapproxy stores parameters
//! and connection parameters in, and that travels in `connection_xml` and the HATEOAS JSON.
//!
//! ```xml
//! <?xml version='1.0' encoding='utf-8'?>
//! <instance>
//!   <parameter id="_">{"foo": "bar"}</parameter>
//!   <parameter id="n">3</parameter>
//! </instance>
//! ```
//!
//! * keys sorted (code-point order), one `<parameter>` per key, 2-space indent, final newline;
//!   an empty dict is `<instance/>`;
//! * values are Python `str(value)`: `3`→`3`, `True`→`True`, `None`→`None`,
//!   `{'k': 'v'}`→`{'k': 'v'}` ([`dict2xml_value`], [`dict2xml_json`]);
//! * text is UTF-8 (not character references), `& < >` escaped and `\r` as `&#13;`;
//! * reading back ([`xml2dict`]) gives strings, and `None` for an empty element (so `''` comes
//!   back as `None`); a repeated id concatenates the texts with one space.
//! * The `_` key (json-in-xml serialisation) is an ordinary parameter: its value is a JSON text
//!   the client wrote with `json.dumps(…, indent=2)`; the server never interprets it.
//!   [`json_in_xml`] reads it for display, like `slapos request` does.

use std::borrow::Cow;
use std::collections::BTreeMap;

use super::error::{EncodeError, InstanceXmlError};
use super::pyrepr;
use super::value::Value;
use super::xmltext::{Ev, ReadError, XmlEvents, attribute, push_attr_utf8, push_text_utf8};

/// The XML declaration lxml writes with `xml_declaration=True, encoding='utf-8'`.
pub const XML_DECLARATION: &str = "<?xml version='1.0' encoding='utf-8'?>";

/// Parameters read back from instance XML: every value is a string, or `None` for an empty
/// element.
pub type ParamDict = BTreeMap<String, Option<String>>;

fn write_instance<'a>(
    entries: impl Iterator<Item = (&'a str, Cow<'a, str>)>,
) -> Result<String, EncodeError> {
    let mut out = String::with_capacity(128);
    out.push_str(XML_DECLARATION);
    out.push('\n');
    let mut any = false;
    for (key, text) in entries {
        if !any {
            out.push_str("<instance>\n");
            any = true;
        }
        out.push_str("  <parameter id=\"");
        push_attr_utf8(&mut out, key, "parameter id")?;
        out.push_str("\">");
        push_text_utf8(&mut out, &text, "parameter value")?;
        out.push_str("</parameter>\n");
    }
    out.push_str(if any {
        "</instance>\n"
    } else {
        "<instance/>\n"
    });
    Ok(out)
}

/// `dict2xml` of a dictionary whose values are already the stored texts (Python `str` values).
/// Keys are sorted; a repeated key keeps its last value.
pub fn dict2xml<K: AsRef<str>, V: AsRef<str>>(
    entries: impl IntoIterator<Item = (K, V)>,
) -> Result<String, EncodeError> {
    let sorted: BTreeMap<String, String> = entries
        .into_iter()
        .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
        .collect();
    write_instance(
        sorted
            .iter()
            .map(|(k, v)| (k.as_str(), Cow::Borrowed(v.as_str()))),
    )
}

/// The exact inverse of [`xml2dict`]: `None` is written as an empty element (which is what an
/// empty string becomes). Use it to re-emit what was read; Python's `dict2xml` of a real
/// `None` writes the text `None` ([`dict2xml_value`] with [`Value::None`]).
pub fn dict2xml_params(params: &ParamDict) -> Result<String, EncodeError> {
    write_instance(
        params
            .iter()
            .map(|(k, v)| (k.as_str(), Cow::Borrowed(v.as_deref().unwrap_or("")))),
    )
}

/// `dict2xml` of a decoded xml_marshaller dictionary (what slapproxy does with
/// `partition_parameter_xml` and `connection_xml`): values through Python `str()`.
pub fn dict2xml_value(dict: &Value) -> Result<String, EncodeError> {
    let Value::Dict(entries) = dict else {
        return Err(EncodeError::NotADict {
            type_name: dict.type_name(),
        });
    };
    let mut sorted: BTreeMap<&str, String> = BTreeMap::new();
    for (k, v) in entries {
        let Value::String(key) = k else {
            return Err(EncodeError::NonStringKey {
                key: k.py_repr(),
                type_name: k.type_name(),
            });
        };
        sorted.insert(key, v.py_str());
    }
    write_instance(sorted.iter().map(|(k, v)| (*k, Cow::Borrowed(v.as_str()))))
}

/// `dict2xml` of a dictionary decoded from JSON (the JSON API): values through Python `str()`
/// of what `json.loads` returns.
pub fn dict2xml_json(
    map: &serde_json::Map<String, serde_json::Value>,
) -> Result<String, EncodeError> {
    let sorted: BTreeMap<&str, String> = map
        .iter()
        .map(|(k, v)| (k.as_str(), pyrepr::py_str_json(v)))
        .collect();
    write_instance(sorted.iter().map(|(k, v)| (*k, Cow::Borrowed(v.as_str()))))
}

/// `xml2dict`: reads the `<parameter id=…>` children of the root element. An empty input gives
/// an empty dict (Python: `if xml:`).
pub fn xml2dict(xml: &str) -> Result<ParamDict, InstanceXmlError> {
    if xml.is_empty() {
        return Ok(ParamDict::new());
    }
    let mut events = XmlEvents::new(xml);
    let err = |e: ReadError| match e {
        ReadError::Syntax { position, message } => InstanceXmlError::Xml { position, message },
        ReadError::Doctype => InstanceXmlError::Doctype,
    };
    let mut reader = ParamReader::default();
    loop {
        match events.next().map_err(err)? {
            Ev::Start(s) => reader.start(&s, false, &events)?,
            Ev::Empty(s) => reader.start(&s, true, &events)?,
            Ev::End => reader.end()?,
            Ev::Text(t) => reader.text(&t),
            // Comments and processing instructions are child nodes in lxml: they end `.text`.
            Ev::Other => reader.child_node(),
            Ev::Eof => break,
        }
    }
    if !reader.root_seen {
        return Err(InstanceXmlError::NoRoot);
    }
    if reader.depth > 0 {
        return Err(InstanceXmlError::Xml {
            position: events.position(),
            message: "unexpected end of document: unclosed elements".to_owned(),
        });
    }
    Ok(reader.dict)
}

/// State of [`xml2dict`].
#[derive(Default)]
struct ParamReader {
    dict: ParamDict,
    /// 0 outside the root, 1 inside the root, 2 inside a child of the root, …
    depth: usize,
    root_seen: bool,
    /// Number of `<parameter>` elements seen.
    index: usize,
    /// The parameter being read: its id, its text so far, and whether `.text` has ended.
    current: Option<(String, String, bool)>,
}

impl ParamReader {
    fn start(
        &mut self,
        s: &quick_xml::events::BytesStart<'_>,
        empty: bool,
        events: &XmlEvents<'_>,
    ) -> Result<(), InstanceXmlError> {
        if self.depth == 0 {
            if self.root_seen {
                return Err(InstanceXmlError::Xml {
                    position: events.position(),
                    message: "extra content after the root element".to_owned(),
                });
            }
            self.root_seen = true;
        } else if self.depth == 1 && s.name().0 == "parameter" {
            self.index += 1;
            let id = attribute(s, "id", events.position())
                .map_err(|e| match e {
                    ReadError::Syntax { position, message } => {
                        InstanceXmlError::Xml { position, message }
                    }
                    ReadError::Doctype => InstanceXmlError::Doctype,
                })?
                .ok_or(InstanceXmlError::MissingId { index: self.index })?;
            if empty {
                return store(&mut self.dict, id, String::new());
            }
            self.current = Some((id, String::new(), false));
        } else {
            self.child_node();
        }
        if !empty {
            self.depth += 1;
        }
        Ok(())
    }

    fn child_node(&mut self) {
        if let Some((_, _, ended)) = self.current.as_mut() {
            *ended = true;
        }
    }

    fn end(&mut self) -> Result<(), InstanceXmlError> {
        self.depth = self.depth.saturating_sub(1);
        if self.depth == 1
            && let Some((id, text, _)) = self.current.take()
        {
            store(&mut self.dict, id, text)?;
        }
        Ok(())
    }

    fn text(&mut self, t: &str) {
        if let Some((_, text, false)) = self.current.as_mut() {
            text.push_str(t);
        }
    }
}

/// One `<parameter>`: `value = old + ' ' + text` when the id repeats and the old value is not
/// `None`, else `text`.
fn store(dict: &mut ParamDict, id: String, text: String) -> Result<(), InstanceXmlError> {
    let text = if text.is_empty() { None } else { Some(text) };
    match dict.get_mut(&id) {
        Some(Some(old)) => match text {
            Some(t) => {
                old.push(' ');
                old.push_str(&t);
            }
            None => return Err(InstanceXmlError::EmptyDuplicate { id }),
        },
        _ => {
            dict.insert(id, text);
        }
    }
    Ok(())
}

/// The parameters for display the way `slapos request` shows them: when the only key is `_`
/// and it holds JSON, the decoded JSON; otherwise `None`.
pub fn json_in_xml(params: &ParamDict) -> Option<serde_json::Value> {
    if params.len() != 1 {
        return None;
    }
    let text = params.get("_")?.as_deref()?;
    serde_json::from_str(text).ok()
}

/// The `{'_': json.dumps(parameters, indent=2)}` dictionary `slapos request --parameters-file`
/// sends for a software release with `"serialisation": "json-in-xml"`.
pub fn to_json_in_xml(parameters: &serde_json::Value) -> Value {
    Value::dict([("_", Value::String(python_json_dumps_indent2(parameters)))])
}

/// Python `json.dumps(value, indent=2)`: `", "` → `","` at line ends, `": "` separators,
/// non-ASCII as `\uXXXX` (ensure_ascii), floats with `repr()`.
pub fn python_json_dumps_indent2(v: &serde_json::Value) -> String {
    let mut out = String::new();
    write_json(&mut out, v, 0);
    out
}

fn write_json(out: &mut String, v: &serde_json::Value, level: usize) {
    use serde_json::Value as J;
    let indent = |out: &mut String, level: usize| {
        out.push('\n');
        out.push_str(&"  ".repeat(level));
    };
    match v {
        J::Null => out.push_str("null"),
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::Number(n) => {
            if n.is_f64() {
                let f = n.as_f64().unwrap_or(f64::NAN);
                match pyrepr::float_repr(f).as_str() {
                    "inf" => out.push_str("Infinity"),
                    "-inf" => out.push_str("-Infinity"),
                    "nan" => out.push_str("NaN"),
                    s => out.push_str(s),
                }
            } else {
                out.push_str(&n.to_string());
            }
        }
        J::String(s) => write_json_str(out, s),
        J::Array(items) if items.is_empty() => out.push_str("[]"),
        J::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                indent(out, level + 1);
                write_json(out, item, level + 1);
            }
            indent(out, level);
            out.push(']');
        }
        J::Object(map) if map.is_empty() => out.push_str("{}"),
        J::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                indent(out, level + 1);
                write_json_str(out, k);
                out.push_str(": ");
                write_json(out, item, level + 1);
            }
            indent(out, level);
            out.push('}');
        }
    }
}

fn write_json_str(out: &mut String, s: &str) {
    use std::fmt::Write;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (' '..='~').contains(&c) => out.push(c),
            c => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_dict2xml_output() {
        // Observed: dict2xml({'b': 1, 'a': '', 'c': None, 'd': True, 'e': {'k': 'v'},
        //   'f': ['a', 1], 'g': 1e20, 'h': '<&>"\'é\r\n\t', 'i&<>"\t\n\r': 'x'})
        let value = Value::dict([
            ("b", Value::Int(1)),
            ("a", Value::str("")),
            ("c", Value::None),
            ("d", Value::Bool(true)),
            ("e", Value::dict([("k", "v")])),
            ("f", Value::List(vec![Value::str("a"), Value::Int(1)])),
            ("g", Value::Float(1e20)),
            ("h", Value::str("<&>\"'é\r\n\t")),
            ("i&<>\"\t\n\r", Value::str("x")),
        ]);
        let want = "<?xml version='1.0' encoding='utf-8'?>\n<instance>\n  <parameter id=\"a\"></parameter>\n  <parameter id=\"b\">1</parameter>\n  <parameter id=\"c\">None</parameter>\n  <parameter id=\"d\">True</parameter>\n  <parameter id=\"e\">{'k': 'v'}</parameter>\n  <parameter id=\"f\">['a', 1]</parameter>\n  <parameter id=\"g\">1e+20</parameter>\n  <parameter id=\"h\">&lt;&amp;&gt;\"'é&#13;\n\t</parameter>\n  <parameter id=\"i&amp;&lt;&gt;&quot;&#9;&#10;&#13;\">x</parameter>\n</instance>\n";
        let xml = dict2xml_value(&value).unwrap();
        assert_eq!(xml, want);
        let back = xml2dict(&xml).unwrap();
        assert_eq!(back["a"], None);
        assert_eq!(back["c"].as_deref(), Some("None"));
        assert_eq!(back["h"].as_deref(), Some("<&>\"'é\r\n\t"));
        assert_eq!(back["i&<>\"\t\n\r"].as_deref(), Some("x"));
        assert_eq!(
            dict2xml_params(&back).unwrap().replace(">None<", "><"),
            want.replace(">None<", "><")
        );
    }

    #[test]
    fn empty_and_duplicates() {
        assert_eq!(
            dict2xml(Vec::<(&str, &str)>::new()).unwrap(),
            "<?xml version='1.0' encoding='utf-8'?>\n<instance/>\n"
        );
        assert!(xml2dict("").unwrap().is_empty());
        assert!(xml2dict("<instance/>").unwrap().is_empty());
        let d = xml2dict("<instance><parameter id=\"a\">1</parameter><parameter id=\"a\">2</parameter></instance>").unwrap();
        assert_eq!(d["a"].as_deref(), Some("1 2"));
        assert_eq!(
            xml2dict("<instance><parameter id=\"a\">1</parameter><parameter id=\"a\"/></instance>"),
            Err(InstanceXmlError::EmptyDuplicate { id: "a".into() })
        );
        assert_eq!(
            xml2dict("<instance><parameter>1</parameter></instance>"),
            Err(InstanceXmlError::MissingId { index: 1 })
        );
        // `.text` stops at the first child node.
        let d =
            xml2dict("<instance><parameter id=\"a\">x<b>y</b>z</parameter></instance>").unwrap();
        assert_eq!(d["a"].as_deref(), Some("x"));
    }

    #[test]
    fn json_in_xml_key() {
        let params = serde_json::json!({"foo": "bar", "n": 3});
        let v = to_json_in_xml(&params);
        assert_eq!(
            v.get("_").and_then(Value::as_str),
            Some("{\n  \"foo\": \"bar\",\n  \"n\": 3\n}")
        );
        let stored = xml2dict(&dict2xml_value(&v).unwrap()).unwrap();
        assert_eq!(json_in_xml(&stored), Some(params));
        assert_eq!(
            python_json_dumps_indent2(&serde_json::json!({"a": [], "b": [1.5, "é"], "c": {}})),
            "{\n  \"a\": [],\n  \"b\": [\n    1.5,\n    \"\\u00e9\"\n  ],\n  \"c\": {}\n}"
        );
    }
}
