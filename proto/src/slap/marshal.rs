//! xml_marshaller 1.0.3 as wrapped by `slapos.util.dumps`/`loads`: encoder ([`dumps`]) and
//! decoder ([`loads`]).
//!
//! Output is byte-identical to `slapos.util.dumps` (lxml `tostring`, no declaration, one
//! line): ids `i2, i3, …` in document order on lists, dictionaries, sets and objects;
//! dictionaries sorted by key; strings escaped twice and non-ASCII as `&#N;`.
//!
//! The decoder accepts what `slapos.util.loads` accepts, except where noted in
//! `docs/slap-codec.md` (it is stricter about stray text and the root element, and bounded in
//! depth and size), and never panics on any input.

use std::collections::{HashMap, HashSet};
use std::fmt::Write;

use super::error::{EncodeError, MarshalError, truncate};
use super::value::{
    KeyId, Object, PyIntText, PyLong, SLAP_MODULE, SlapClass, Value, check_hashable, key_id, py_eq,
    sorted_entries,
};
use super::xmltext::{Ev, ReadError, XmlEvents, attribute, local_name, push_marshal_string};

/// Deepest container nesting [`loads`] accepts. Python's own `dumps` cannot write more than
/// about 490 levels (recursion limit), so this refuses nothing a real client sends.
pub const MAX_DEPTH: usize = 512;

/// Most values [`loads`] builds from one document, references expanded.
pub const MAX_VALUES: usize = 1 << 20;

/// Largest expanded size (see [`DecodeLimits::max_bytes`]) [`loads`] builds from one document:
/// 128 MiB, twice the largest SLAP body master-lite accepts (`SLAP_BODY_LIMIT`, 64 MiB). A
/// document without references expands to at most its own length plus [`VALUE_BYTES`] per
/// value (≤ 32 MiB under [`MAX_VALUES`]), so nothing the master accepts is refused unless
/// references multiply it.
pub const MAX_EXPANDED_BYTES: usize = 128 << 20;

/// What one decoded value costs in [`DecodeLimits::max_bytes`] besides its text: the size of a
/// [`Value`] cell on 64-bit targets.
pub const VALUE_BYTES: usize = 32;

/// Bounds applied by [`loads_with_limits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Deepest element nesting.
    pub max_depth: usize,
    /// Most values (references count with their full expanded size).
    pub max_values: usize,
    /// Most expanded bytes: every value built counts [`VALUE_BYTES`] plus the UTF-8 bytes of
    /// its text (strings, dictionary keys, attribute names, the digits of a `<long>`); a
    /// `<reference>` counts the full size of the copy it expands to, and a container that a
    /// reference names counts once more for the copy kept to expand it. This bounds the memory
    /// of the result, whatever the references do ([`MarshalError::TooManyBytes`]).
    pub max_bytes: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_depth: MAX_DEPTH,
            max_values: MAX_VALUES,
            max_bytes: MAX_EXPANDED_BYTES,
        }
    }
}

/// Marshals a value exactly as `slapos.util.dumps` does.
///
/// Fails only on text XML cannot carry (NUL, C0 controls other than tab/newline/CR,
/// U+FFFE/U+FFFF), like lxml.
pub fn dumps(value: &Value) -> Result<String, EncodeError> {
    let mut enc = Encoder {
        out: String::with_capacity(256),
        last_id: 1,
    };
    enc.out.push_str("<marshal>");
    enc.value(value)?;
    enc.out.push_str("</marshal>");
    Ok(enc.out)
}

struct Encoder {
    out: String,
    /// xml_marshaller starts its counter at 1 and increments before use: the first id is `i2`.
    last_id: u32,
}

impl Encoder {
    fn open(&mut self, tag: &str, empty: bool) {
        self.last_id += 1;
        let _ = write!(self.out, "<{tag} id=\"i{}\"", self.last_id);
        self.out.push_str(if empty { "/>" } else { ">" });
    }

    fn seq(&mut self, tag: &str, items: &[Value], with_id: bool) -> Result<(), EncodeError> {
        if with_id {
            self.open(tag, items.is_empty());
        } else {
            let _ = write!(
                self.out,
                "<{tag}{}",
                if items.is_empty() { "/>" } else { ">" }
            );
        }
        if items.is_empty() {
            return Ok(());
        }
        for item in items {
            self.value(item)?;
        }
        let _ = write!(self.out, "</{tag}>");
        Ok(())
    }

    fn string(&mut self, s: &str) -> Result<(), EncodeError> {
        // lxml writes an element whose text is '' as <string></string>, not <string/>.
        self.out.push_str("<string>");
        push_marshal_string(&mut self.out, s)?;
        self.out.push_str("</string>");
        Ok(())
    }

    fn value(&mut self, v: &Value) -> Result<(), EncodeError> {
        match v {
            Value::None => self.out.push_str("<none/>"),
            Value::Bool(b) => {
                let _ = write!(self.out, "<bool>{}</bool>", u8::from(*b));
            }
            Value::Int(i) => {
                let _ = write!(self.out, "<int>{i}</int>");
            }
            Value::Long(l) => {
                let tag = if l.is_marshalled_as_long() {
                    "long"
                } else {
                    "int"
                };
                let _ = write!(self.out, "<{tag}>{l}</{tag}>");
            }
            Value::Float(f) => {
                let _ = write!(self.out, "<float>{}</float>", super::pyrepr::float_repr(*f));
            }
            Value::String(s) => self.string(s)?,
            Value::List(items) => self.seq("list", items, true)?,
            Value::Tuple(items) => self.seq("tuple", items, false)?,
            Value::Set(items) => self.seq("set", items, true)?,
            Value::Dict(entries) => {
                self.open("dictionary", entries.is_empty());
                if !entries.is_empty() {
                    for (k, v) in sorted_entries(entries) {
                        self.value(k)?;
                        self.value(v)?;
                    }
                    self.out.push_str("</dictionary>");
                }
            }
            Value::Object(o) => self.object(o)?,
        }
        Ok(())
    }

    fn object(&mut self, o: &Object) -> Result<(), EncodeError> {
        self.last_id += 1;
        let _ = write!(
            self.out,
            "<object id=\"i{}\" module=\"{SLAP_MODULE}\" class=\"{}\">",
            self.last_id,
            o.class.name()
        );
        self.seq("tuple", &o.initargs, false)?;
        self.open("dictionary", o.state.is_empty());
        if !o.state.is_empty() {
            // BTreeMap order is code-point order, which is Python's str order.
            for (name, v) in &o.state {
                self.string(name)?;
                self.value(v)?;
            }
            self.out.push_str("</dictionary>");
        }
        self.out.push_str("</object>");
        Ok(())
    }
}

/// Unmarshals a document the way `slapos.util.loads` does, with [`DecodeLimits::default`].
pub fn loads(xml: &str) -> Result<Value, MarshalError> {
    loads_with_limits(xml, DecodeLimits::default())
}

/// [`loads`] with explicit bounds.
pub fn loads_with_limits(xml: &str, limits: DecodeLimits) -> Result<Value, MarshalError> {
    // Only containers that a <reference> names are kept for copying; most documents have none
    // (a `reference` dictionary key, as in every format payload, does not count).
    let referenced = if xml.contains("<reference") || xml.contains(":reference") {
        referenced_ids(xml)
    } else {
        HashSet::new()
    };
    let mut d = Decoder {
        events: XmlEvents::new(xml),
        frames: Vec::new(),
        registry: HashMap::new(),
        referenced,
        budget: Budget {
            limits,
            values: 0,
            bytes: 0,
        },
        result: None,
    };
    loop {
        match d.events.next().map_err(read_error)? {
            Ev::Start(s) => d.start(&s)?,
            Ev::Empty(s) => {
                d.start(&s)?;
                d.end()?;
            }
            Ev::End => d.end()?,
            Ev::Text(t) => d.text(&t)?,
            Ev::Other => {}
            Ev::Eof => break,
        }
    }
    if !d.frames.is_empty() {
        return Err(MarshalError::Xml {
            position: d.events.position(),
            message: "unexpected end of document: unclosed elements".to_owned(),
        });
    }
    d.result.ok_or(MarshalError::NotMarshal {
        found: "nothing".to_owned(),
    })
}

fn read_error(e: ReadError) -> MarshalError {
    match e {
        ReadError::Syntax { position, message } => MarshalError::Xml { position, message },
        ReadError::Doctype => MarshalError::Doctype,
    }
}

/// Ids named by `<reference id=…>` elements (a syntax error here resurfaces in the real pass).
fn referenced_ids(xml: &str) -> HashSet<String> {
    let mut ids = HashSet::new();
    let mut events = XmlEvents::new(xml);
    while let Ok(ev) = events.next() {
        match ev {
            Ev::Start(s) | Ev::Empty(s) if local_name(&s) == "reference" => {
                if let Ok(Some(id)) = attribute(&s, "id", events.position()) {
                    ids.insert(id);
                }
            }
            Ev::Eof => break,
            _ => {}
        }
    }
    ids
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scalar {
    String,
    Int,
    Long,
    Float,
    Bool,
    None,
}

enum Kind {
    Marshal,
    List,
    Tuple,
    Dict,
    Set,
    Object(SlapClass),
    Scalar(Scalar),
    /// A `<reference>` element: its value (a copy) is known, and counted, at the start tag.
    Reference(Box<Registered>),
}

struct Frame {
    kind: Kind,
    name: &'static str,
    /// Registration id when a reference names this container.
    id: Option<String>,
    items: Vec<Value>,
    /// Values in `items`, nested ones included.
    nodes: usize,
    /// Expanded bytes of `items` ([`DecodeLimits::max_bytes`]).
    bytes: usize,
    text: String,
}

/// A closed container that a reference names, with its size.
#[derive(Clone)]
struct Registered {
    value: Value,
    nodes: usize,
    bytes: usize,
}

struct Decoder<'a> {
    events: XmlEvents<'a>,
    frames: Vec<Frame>,
    /// id → `None` while the container is open, its value once closed.
    registry: HashMap<String, Option<Registered>>,
    referenced: HashSet<String>,
    budget: Budget,
    result: Option<Value>,
}

/// Values and expanded bytes built so far, copies included, against the limits.
struct Budget {
    limits: DecodeLimits,
    values: usize,
    bytes: usize,
}

impl Budget {
    /// Counts `values` more values and `bytes` more expanded bytes; the error names the limit
    /// passed.
    fn spend(&mut self, values: usize, bytes: usize) -> Result<(), MarshalError> {
        self.values = self.values.saturating_add(values);
        if self.values > self.limits.max_values {
            return Err(MarshalError::TooLarge {
                limit: self.limits.max_values,
            });
        }
        self.bytes = self.bytes.saturating_add(bytes);
        if self.bytes > self.limits.max_bytes {
            return Err(MarshalError::TooManyBytes {
                limit: self.limits.max_bytes,
            });
        }
        Ok(())
    }
}

impl Decoder<'_> {
    fn start(&mut self, s: &quick_xml::events::BytesStart<'_>) -> Result<(), MarshalError> {
        let name = local_name(s);
        let position = self.events.position();
        let attr = |key: &str| attribute(s, key, position).map_err(read_error);
        let Some(parent) = self.frames.last() else {
            if self.result.is_some() {
                return Err(MarshalError::UnexpectedElement {
                    parent: "document (after </marshal>)".to_owned(),
                    child: name.to_owned(),
                });
            }
            if name != "marshal" {
                return Err(MarshalError::NotMarshal {
                    found: format!("<{name}>"),
                });
            }
            self.push(Kind::Marshal, "marshal", None);
            return Ok(());
        };
        if matches!(parent.kind, Kind::Scalar(_) | Kind::Reference(_)) {
            return Err(MarshalError::UnexpectedElement {
                parent: parent.name.to_owned(),
                child: name.to_owned(),
            });
        }
        let (kind, tag): (Kind, &'static str) = match name {
            "string" | "unicode" => (Kind::Scalar(Scalar::String), "string"),
            "int" => (Kind::Scalar(Scalar::Int), "int"),
            "long" => (Kind::Scalar(Scalar::Long), "long"),
            "float" => (Kind::Scalar(Scalar::Float), "float"),
            "bool" => (Kind::Scalar(Scalar::Bool), "bool"),
            "none" => (Kind::Scalar(Scalar::None), "none"),
            "tuple" => (Kind::Tuple, "tuple"),
            "list" => (Kind::List, "list"),
            "dictionary" => (Kind::Dict, "dictionary"),
            "set" => (Kind::Set, "set"),
            "object" => {
                let module = attr("module")?.ok_or(MarshalError::MissingAttribute {
                    element: "object",
                    attribute: "module",
                })?;
                let class = attr("class")?.ok_or(MarshalError::MissingAttribute {
                    element: "object",
                    attribute: "class",
                })?;
                let class = SlapClass::from_names(&module, &class).ok_or_else(|| {
                    MarshalError::RefusedClass {
                        module: truncate(&module),
                        class: truncate(&class),
                    }
                })?;
                (Kind::Object(class), "object")
            }
            "reference" => {
                let id = attr("id")?.ok_or(MarshalError::MissingAttribute {
                    element: "reference",
                    attribute: "id",
                })?;
                let copy = match self.registry.get(&id) {
                    Some(Some(r)) => {
                        // The copy counts with its full size, before it is made: this bounds
                        // reference "bombs" in values and in memory. Its last value is
                        // counted at the end tag, like every other.
                        self.budget.spend(r.nodes.saturating_sub(1), r.bytes)?;
                        r.clone()
                    }
                    Some(None) => return Err(MarshalError::CyclicReference { id: truncate(&id) }),
                    None => return Err(MarshalError::UnknownReference { id: truncate(&id) }),
                };
                (Kind::Reference(Box::new(copy)), "reference")
            }
            "marshal" => {
                return Err(MarshalError::UnexpectedElement {
                    parent: parent.name.to_owned(),
                    child: name.to_owned(),
                });
            }
            "complex" | "code" => {
                return Err(MarshalError::Unsupported {
                    name: name.to_owned(),
                });
            }
            _ => {
                return Err(MarshalError::UnknownElement {
                    name: truncate(name),
                });
            }
        };
        let id = match kind {
            // Ids only matter when a reference names them.
            Kind::List | Kind::Dict | Kind::Set | Kind::Object(_)
                if !self.referenced.is_empty() =>
            {
                attr("id")?
            }
            _ => None,
        };
        let id = id.filter(|id| self.referenced.contains(id));
        if let Some(id) = &id {
            self.registry.insert(id.clone(), None);
        }
        let container = !matches!(kind, Kind::Scalar(_) | Kind::Reference(_));
        self.push(kind, tag, id);
        // Containers count; the marshal root and a scalar leaf do not.
        if container && self.frames.len() > self.budget.limits.max_depth + 1 {
            return Err(MarshalError::TooDeep {
                limit: self.budget.limits.max_depth,
            });
        }
        Ok(())
    }

    fn push(&mut self, kind: Kind, name: &'static str, id: Option<String>) {
        self.frames.push(Frame {
            kind,
            name,
            id,
            items: Vec::new(),
            nodes: 0,
            bytes: 0,
            text: String::new(),
        });
    }

    fn text(&mut self, t: &str) -> Result<(), MarshalError> {
        match self.frames.last_mut() {
            Some(Frame {
                kind: Kind::Scalar(_),
                text,
                ..
            }) => text.push_str(t),
            frame => {
                if !t.chars().all(|c| matches!(c, ' ' | '\t' | '\n' | '\r')) {
                    return Err(MarshalError::UnexpectedText {
                        parent: frame.map_or("document", |f| f.name).to_owned(),
                        text: truncate(t),
                    });
                }
            }
        }
        Ok(())
    }

    fn end(&mut self) -> Result<(), MarshalError> {
        let Some(frame) = self.frames.pop() else {
            return Err(MarshalError::Xml {
                position: self.events.position(),
                message: "end tag without start tag".to_owned(),
            });
        };
        // (value, its nodes, its expanded bytes, the bytes it adds now): a container adds its
        // own cell (its items were counted as they closed), a reference nothing (its copy was
        // counted at the start tag).
        let (nodes, bytes) = (frame.nodes, frame.bytes);
        let container = |v: Value| {
            let bytes = bytes.saturating_add(VALUE_BYTES);
            (v, nodes.saturating_add(1), bytes, VALUE_BYTES)
        };
        let (value, nodes, bytes, adds) = match frame.kind {
            Kind::Marshal => {
                let count = frame.items.len();
                let mut items = frame.items;
                match items.pop() {
                    Some(v) if count == 1 => self.result = Some(v),
                    _ => return Err(MarshalError::RootCount { count }),
                }
                return Ok(());
            }
            Kind::Scalar(s) => {
                // The element's text bounds the string's (unescaping only shortens it) and a
                // number's digits.
                let bytes = VALUE_BYTES.saturating_add(frame.text.len());
                (scalar(s, frame.text)?, 1, bytes, bytes)
            }
            Kind::Reference(r) => {
                let Registered {
                    value,
                    nodes,
                    bytes,
                } = *r;
                (value, nodes, bytes, 0)
            }
            Kind::List => container(Value::List(frame.items)),
            Kind::Tuple => container(Value::Tuple(frame.items)),
            Kind::Set => container(Value::Set(dedup_set(frame.items)?)),
            Kind::Dict => container(Value::Dict(dict_entries(frame.items)?)),
            Kind::Object(class) => container(Value::Object(object(class, frame.items)?)),
        };
        self.budget.spend(1, adds)?;
        if let Some(id) = frame.id {
            // The copy kept for the references is memory too.
            self.budget.spend(0, bytes)?;
            let kept = Registered {
                value: value.clone(),
                nodes,
                bytes,
            };
            self.registry.insert(id, Some(kept));
        }
        match self.frames.last_mut() {
            Some(parent) => {
                parent.items.push(value);
                parent.nodes = parent.nodes.saturating_add(nodes);
                parent.bytes = parent.bytes.saturating_add(bytes);
            }
            None => {
                return Err(MarshalError::NotMarshal {
                    found: format!("<{}>", frame.name),
                });
            }
        }
        Ok(())
    }
}

/// The value of a scalar element from its text.
fn scalar(kind: Scalar, text: String) -> Result<Value, MarshalError> {
    let text = match kind {
        Scalar::String => return Ok(Value::String(unescape(text))),
        Scalar::None => return Ok(Value::None),
        _ => text.as_str(),
    };
    let bad = |element: &'static str, expected: &'static str| MarshalError::BadScalar {
        element,
        text: truncate(text),
        expected,
    };
    Ok(match kind {
        Scalar::Int => PyLong::parse_python(text)
            .ok_or_else(|| bad("int", "integer"))?
            .into(),
        Scalar::Long => PyLong::parse_python(text)
            .ok_or_else(|| bad("long", "integer"))?
            .into(),
        Scalar::Bool => match PyLong::parse_python(text) {
            // bool(int(text))
            Some(PyIntText::Small(i)) => Value::Bool(i != 0),
            Some(PyIntText::Big(_)) => Value::Bool(true),
            None => return Err(bad("bool", "integer")),
        },
        Scalar::Float => {
            Value::Float(parse_python_float(text).ok_or_else(|| bad("float", "float"))?)
        }
        Scalar::String | Scalar::None => Value::None,
    })
}

/// `xml.sax.saxutils.unescape`: three sequential replacements, `&amp;` last.
fn unescape(text: String) -> String {
    if !text.contains('&') {
        return text;
    }
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Python `float(text)` for ASCII text: white space, signs, `inf`/`infinity`/`nan` in any
/// case, exponents, `_` between digits.
pub(crate) fn parse_python_float(text: &str) -> Option<f64> {
    let t = text.trim_matches(|c: char| c.is_whitespace());
    if t.is_empty() || !t.is_ascii() {
        return None;
    }
    let cleaned;
    let t = if t.contains('_') {
        let b = t.as_bytes();
        for (i, &c) in b.iter().enumerate() {
            if c == b'_' {
                let digit_before = i > 0 && b[i - 1].is_ascii_digit();
                let digit_after = b.get(i + 1).is_some_and(u8::is_ascii_digit);
                if !digit_before || !digit_after {
                    return None;
                }
            }
        }
        cleaned = t.replace('_', "");
        cleaned.as_str()
    } else {
        t
    };
    // Rust also accepts these spellings, but not "infinity" with a sign in every version;
    // handle the words explicitly.
    let (sign, word) = match t.as_bytes()[0] {
        b'-' => (-1.0, &t[1..]),
        b'+' => (1.0, &t[1..]),
        _ => (1.0, t),
    };
    let lower = word.to_ascii_lowercase();
    match lower.as_str() {
        "inf" | "infinity" => return Some(sign * f64::INFINITY),
        "nan" => return Some(f64::NAN),
        _ => {}
    }
    if !word
        .bytes()
        .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return None;
    }
    t.parse::<f64>().ok()
}

/// Builds dictionary entries from alternating keys and values, merging duplicate keys like a
/// Python dict (first position, last value) and refusing unhashable keys.
fn dict_entries(items: Vec<Value>) -> Result<Vec<(Value, Value)>, MarshalError> {
    if !items.len().is_multiple_of(2) {
        return Err(MarshalError::OddDictionary { count: items.len() });
    }
    let mut it = items.into_iter();
    let pairs = std::iter::from_fn(move || Some((it.next()?, it.next()?)));
    merge_keys(pairs, |old, new| *old = new)
}

/// Set elements: hashable, duplicates dropped (first kept).
fn dedup_set(items: Vec<Value>) -> Result<Vec<Value>, MarshalError> {
    let merged = merge_keys(items.into_iter().map(|v| (v, ())), |_, _| {})?;
    Ok(merged.into_iter().map(|(v, ())| v).collect())
}

/// Keys merged with Python's equality (`1 == 1.0 == True`, NaN never equal): `on_duplicate`
/// folds a repeated key's payload into the first one. Small collections compare pairwise
/// without allocating; larger ones use a hash of [`KeyId`]s.
fn merge_keys<T>(
    pairs: impl Iterator<Item = (Value, T)>,
    on_duplicate: impl Fn(&mut T, T),
) -> Result<Vec<(Value, T)>, MarshalError> {
    const LINEAR: usize = 16;
    let unhashable = |type_name| MarshalError::UnhashableKey { type_name };
    let mut out: Vec<(Value, T)> = Vec::new();
    let mut seen: Option<HashMap<KeyId, usize>> = None;
    for (k, payload) in pairs {
        if out.len() == LINEAR && seen.is_none() {
            let mut map = HashMap::new();
            for (i, (key, _)) in out.iter().enumerate() {
                if let Some(id) = key_id(key).map_err(unhashable)? {
                    map.entry(id).or_insert(i);
                }
            }
            seen = Some(map);
        }
        let existing = match seen.as_mut() {
            None => {
                check_hashable(&k).map_err(unhashable)?;
                out.iter().position(|(key, _)| py_eq(key, &k))
            }
            Some(map) => match key_id(&k).map_err(unhashable)? {
                Some(id) => match map.get(&id) {
                    Some(&i) => Some(i),
                    None => {
                        map.insert(id, out.len());
                        None
                    }
                },
                None => None,
            },
        };
        match existing {
            Some(i) => on_duplicate(&mut out[i].1, payload),
            None => out.push((k, payload)),
        }
    }
    Ok(out)
}

/// An `<object>` from its two children: `<tuple>` initargs and `<dictionary>` state.
fn object(class: SlapClass, items: Vec<Value>) -> Result<Object, MarshalError> {
    let shape = |problem: String| MarshalError::ObjectShape { class, problem };
    let count = items.len();
    let mut it = items.into_iter();
    let (Some(initargs), Some(state), None) = (it.next(), it.next(), it.next()) else {
        return Err(shape(format!(
            "expected a <tuple> of initargs and a <dictionary> of attributes, found {count} values"
        )));
    };
    let Value::Tuple(initargs) = initargs else {
        return Err(shape(format!(
            "initargs must be a tuple, found {}",
            initargs.type_name()
        )));
    };
    if !class.initargs_range().contains(&initargs.len()) {
        return Err(shape(format!(
            "{} initargs, the constructor takes {:?}",
            initargs.len(),
            class.initargs_range()
        )));
    }
    let Value::Dict(entries) = state else {
        return Err(shape(format!(
            "attributes must be a dictionary, found {}",
            state.type_name()
        )));
    };
    let mut object = Object::new(class, initargs);
    for (k, v) in entries {
        let Value::String(name) = k else {
            return Err(shape(format!(
                "attribute name {} is not a str",
                k.py_repr()
            )));
        };
        object.state.insert(name, v);
    }
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(xml: &str) {
        let v = loads(xml).unwrap_or_else(|e| panic!("{xml}: {e}"));
        assert_eq!(dumps(&v).unwrap(), xml);
    }

    #[test]
    fn observed_python_outputs_roundtrip() {
        // Each string is slapos.util.dumps() output observed with slapos.core 1.26.1.
        for xml in [
            "<marshal><string></string></marshal>",
            "<marshal><string>&amp;lt;a&amp;amp;b&amp;gt; \"q\" &#233; &#9731;</string></marshal>",
            "<marshal><string>x&#13;y\nz\tw</string></marshal>",
            "<marshal><string>&#128512;</string></marshal>",
            "<marshal><string>&amp;amp;lt;</string></marshal>",
            "<marshal><int>-5</int></marshal>",
            "<marshal><int>100000000000000000000000</int></marshal>",
            "<marshal><long>1000000000000000000000000</long></marshal>",
            "<marshal><int>999999999999999983222783</int></marshal>",
            "<marshal><float>1e+20</float></marshal>",
            "<marshal><float>1000000000000000.0</float></marshal>",
            "<marshal><float>1e-05</float></marshal>",
            "<marshal><float>-0.0</float></marshal>",
            "<marshal><float>inf</float></marshal>",
            "<marshal><bool>1</bool></marshal>",
            "<marshal><none/></marshal>",
            "<marshal><tuple/></marshal>",
            "<marshal><tuple><int>1</int></tuple></marshal>",
            "<marshal><list id=\"i2\"/></marshal>",
            "<marshal><list id=\"i2\"><int>1</int><list id=\"i3\"><int>2</int></list></list></marshal>",
            "<marshal><dictionary id=\"i2\"><string>a</string><int>2</int><string>b</string><int>1</int></dictionary></marshal>",
            "<marshal><dictionary id=\"i2\"><string>a</string><int>2</int><tuple><int>1</int><int>2</int></tuple><int>4</int><int>1</int><string>x</string><none/><int>3</int></dictionary></marshal>",
            "<marshal><set id=\"i2\"><int>1</int><int>2</int></set></marshal>",
            "<marshal><set id=\"i2\"/></marshal>",
        ] {
            roundtrip(xml);
        }
    }

    #[test]
    fn references_expand_to_copies() {
        // Observed: x = [1]; dumps([x, x, {'a': x}])
        let xml = "<marshal><list id=\"i2\"><list id=\"i3\"><int>1</int></list><reference id=\"i3\"/><dictionary id=\"i4\"><string>a</string><reference id=\"i3\"/></dictionary></list></marshal>";
        let x = Value::List(vec![Value::Int(1)]);
        assert_eq!(
            loads(xml).unwrap(),
            Value::List(vec![x.clone(), x.clone(), Value::dict([("a", x)])])
        );
        let cyclic = "<marshal><list id=\"i2\"><reference id=\"i2\"/></list></marshal>";
        assert_eq!(
            loads(cyclic),
            Err(MarshalError::CyclicReference { id: "i2".into() })
        );
        let unknown = "<marshal><list id=\"i2\"><reference id=\"i9\"/></list></marshal>";
        assert_eq!(
            loads(unknown),
            Err(MarshalError::UnknownReference { id: "i9".into() })
        );
    }

    #[test]
    fn reference_bombs_are_bounded() {
        // Each level holds two references to the previous one: 2^40 values once expanded.
        let mut xml = String::from("<marshal><list id=\"i1\"><list id=\"i2\"><int>1</int></list>");
        for i in 3..43 {
            let _ = write!(
                xml,
                "<list id=\"i{i}\"><reference id=\"i{}\"/><reference id=\"i{}\"/></list>",
                i - 1,
                i - 1
            );
        }
        xml.push_str("</list></marshal>");
        assert!(matches!(loads(&xml), Err(MarshalError::TooLarge { .. })));
    }

    /// `<marshal><list><list id="i3"><string>{1 MiB}</string></list>` and `n` references to it.
    fn string_bomb(n: usize) -> String {
        let mut xml = String::from("<marshal><list id=\"i2\"><list id=\"i3\"><string>");
        xml.push_str(&"a".repeat(1 << 20));
        xml.push_str("</string></list>");
        xml.push_str(&"<reference id=\"i3\"/>".repeat(n));
        xml.push_str("</list></marshal>");
        xml
    }

    #[test]
    fn a_reference_bomb_of_large_strings_is_refused_by_size_quickly() {
        // Issue #19: 1,000 references to a 1 MiB string, a 1 MB document, expanded to 1 GB
        // (5,000 aborted the master). The value count stays tiny (~1,000): only the byte bound
        // stops it, at 128 MiB, before the copies it would exceed.
        let xml = string_bomb(1000);
        assert!(xml.len() < 1_100_000);
        let t = std::time::Instant::now();
        assert_eq!(
            loads(&xml),
            Err(MarshalError::TooManyBytes {
                limit: MAX_EXPANDED_BYTES
            })
        );
        // ≈0.1 s in release; generous for a debug build on a loaded machine.
        assert!(
            t.elapsed() < std::time::Duration::from_secs(10),
            "{:?}",
            t.elapsed()
        );
        // The same shape within the limit decodes to the copies.
        let Value::List(items) = loads(&string_bomb(3)).unwrap() else {
            panic!("not a list")
        };
        assert_eq!(items.len(), 4);
        assert!(items.iter().all(|v| v == &items[0]));
    }

    #[test]
    fn the_byte_bound_is_exact_and_named() {
        // i3 = [["xy"]]: the string 32 + 2, two lists 2 × 32 → 98 bytes.
        let xml = "<marshal><list id=\"i2\"><list id=\"i3\"><list id=\"i4\"><string>xy</string></list></list><reference id=\"i3\"/></list></marshal>";
        // i3 as written (98), the copy kept for its reference (98), the reference's copy (98)
        // and the outer list (32): 326. i2 and i4 are named by no reference: nothing kept.
        let limits = |max_bytes| DecodeLimits {
            max_bytes,
            ..DecodeLimits::default()
        };
        assert!(loads_with_limits(xml, limits(326)).is_ok());
        let err = loads_with_limits(xml, limits(325)).unwrap_err();
        assert_eq!(err, MarshalError::TooManyBytes { limit: 325 });
        assert!(err.to_string().contains("max_bytes = 325"), "{err}");
    }

    #[test]
    fn copies_kept_for_nested_referenced_containers_count() {
        // 200 nested lists, each named by a reference placed after the document's error: no
        // reference is ever expanded, but every closed list was kept (a copy of all it holds),
        // 200 copies of 1 MiB. Refused by size before the references are reached.
        let depth = 200;
        let mut xml = String::from("<marshal><list>");
        for i in 0..depth {
            xml.push_str(&format!("<list id=\"n{i}\">"));
        }
        xml.push_str("<string>");
        xml.push_str(&"a".repeat(1 << 20));
        xml.push_str("</string>");
        xml.push_str(&"</list>".repeat(depth));
        for i in 0..depth {
            xml.push_str(&format!("<reference id=\"n{i}\"/>"));
        }
        xml.push_str("</list></marshal>");
        assert_eq!(
            loads(&xml),
            Err(MarshalError::TooManyBytes {
                limit: MAX_EXPANDED_BYTES
            })
        );
    }

    #[test]
    fn lenient_where_python_is() {
        // Single-escaped strings still decode; ids are optional; white space is ignored.
        assert_eq!(
            loads("<marshal><string>&lt;a&gt;</string></marshal>").unwrap(),
            Value::str("<a>")
        );
        assert_eq!(
            loads("<marshal>\n <list>\n  <int> 7 </int>\n </list>\n</marshal>\n").unwrap(),
            Value::List(vec![Value::Int(7)])
        );
        assert_eq!(
            loads("<marshal><bool>2</bool></marshal>").unwrap(),
            Value::Bool(true)
        );
        assert_eq!(
            loads("<marshal><unicode>u</unicode></marshal>").unwrap(),
            Value::str("u")
        );
        assert_eq!(
            loads("<?xml version='1.0'?><marshal><none>x</none></marshal>").unwrap(),
            Value::None
        );
        assert_eq!(
            loads("<marshal><dictionary><string>k</string><int>1</int><string>k</string><int>2</int></dictionary></marshal>")
                .unwrap(),
            Value::dict([("k", Value::Int(2))])
        );
        assert_eq!(
            loads("<m:marshal xmlns:m=\"http://www.erp5.org/namespaces/marshaller\"><m:int>1</m:int></m:marshal>")
                .unwrap(),
            Value::Int(1)
        );
    }

    #[test]
    fn duplicate_keys_merge_like_a_python_dict_at_any_size() {
        for n in [3usize, 16, 40] {
            let mut xml = String::from("<marshal><dictionary>");
            for i in 0..n {
                let _ = write!(xml, "<int>{i}</int><string>v{i}</string>");
            }
            // 1.0 == 1 and True == 1: same key; last value wins, first position stays.
            xml.push_str(
                "<float>1.0</float><string>float</string><bool>1</bool><string>bool</string>",
            );
            let _ = write!(xml, "<int>{}</int><string>last</string>", n - 1);
            xml.push_str(
                "<float>nan</float><none/><float>nan</float><none/></dictionary></marshal>",
            );
            let Value::Dict(entries) = loads(&xml).unwrap() else {
                panic!("not a dict")
            };
            assert_eq!(entries.len(), n + 2, "n={n}");
            assert_eq!(entries[1], (Value::Int(1), Value::str("bool")));
            assert_eq!(
                entries[n - 1],
                (Value::Int(n as i64 - 1), Value::str("last"))
            );
        }
        let set =
            loads("<marshal><set><int>1</int><float>1.0</float><string>1</string></set></marshal>");
        assert_eq!(
            set.unwrap(),
            Value::Set(vec![Value::Int(1), Value::str("1")])
        );
    }

    #[test]
    fn python_float_spellings() {
        assert_eq!(parse_python_float(" 1_000.5 "), Some(1000.5));
        assert_eq!(parse_python_float("-Infinity"), Some(f64::NEG_INFINITY));
        assert!(parse_python_float("nan").is_some_and(f64::is_nan));
        assert_eq!(parse_python_float("1e5"), Some(100000.0));
        assert_eq!(parse_python_float("1__0"), None);
        assert_eq!(parse_python_float("0x10"), None);
        assert_eq!(parse_python_float(""), None);
    }
}
