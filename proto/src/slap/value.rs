//! The Python value model that xml_marshaller carries ([`Value`]), with Python's ordering and
//! equality rules where the wire format depends on them (dictionary key order, duplicate keys).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use super::error::ShapeError;
use super::pyrepr;

/// Module of every class xml_marshaller may carry on the SLAP wire.
pub const SLAP_MODULE: &str = "slapos.slap.slap";

/// The four classes `slapos.util.loads` accepts (`_ALLOWED_CLASS_SET`); anything else is refused
/// on both sides, like slapos.core does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SlapClass {
    /// `Computer(computer_id)`.
    Computer,
    /// `ComputerPartition(computer_id, partition_id, request_dict)`.
    ComputerPartition,
    /// `SoftwareRelease(url, computer_guid)`.
    SoftwareRelease,
    /// `SoftwareInstance()`: no initargs.
    SoftwareInstance,
}

impl SlapClass {
    /// Every allowed class.
    pub const ALL: [SlapClass; 4] = [
        SlapClass::Computer,
        SlapClass::ComputerPartition,
        SlapClass::SoftwareRelease,
        SlapClass::SoftwareInstance,
    ];

    /// The Python class name (`class="…"` attribute).
    pub fn name(self) -> &'static str {
        match self {
            SlapClass::Computer => "Computer",
            SlapClass::ComputerPartition => "ComputerPartition",
            SlapClass::SoftwareRelease => "SoftwareRelease",
            SlapClass::SoftwareInstance => "SoftwareInstance",
        }
    }

    /// The class for a `(module, class)` pair, or `None` when slapos.core would refuse it.
    pub fn from_names(module: &str, class: &str) -> Option<SlapClass> {
        if module != SLAP_MODULE {
            return None;
        }
        SlapClass::ALL.into_iter().find(|c| c.name() == class)
    }

    /// How many positional initargs the Python constructor accepts (`klass(*initargs)`):
    /// a marshalled object outside this range fails in Python with `TypeError`.
    pub fn initargs_range(self) -> std::ops::RangeInclusive<usize> {
        match self {
            // Computer(computer_id, connection_helper=None, hateoas_navigator=None)
            SlapClass::Computer => 1..=3,
            // ComputerPartition(computer_id=None, partition_id=None, request_dict=None, ...)
            SlapClass::ComputerPartition => 0..=5,
            // SoftwareRelease(software_release=None, computer_guid=None, requested_state=...)
            SlapClass::SoftwareRelease => 0..=3,
            // SoftwareInstance(**kw)
            SlapClass::SoftwareInstance => 0..=0,
        }
    }
}

impl fmt::Display for SlapClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SLAP_MODULE}.{}", self.name())
    }
}

/// A Python integer outside the `i64` range, kept as its canonical decimal text
/// (optional `-`, no leading zeros). xml_marshaller writes it as `<int>` below 10^24 in
/// magnitude (precisely: below the float `1e24` = 999999999999999983222784) and as `<long>`
/// from there on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PyLong(String);

/// `1e24` as a Python float, written exactly: the `<int>`/`<long>` threshold.
const LONG_THRESHOLD: &str = "999999999999999983222784";

impl PyLong {
    /// Parses decimal text the way Python's `int()` does for ASCII input: surrounding white
    /// space, an optional sign, digits with single `_` between digits. Returns `None` when the
    /// text is not an integer.
    pub fn parse_python(text: &str) -> Option<PyIntText> {
        let t = text.trim_matches(|c: char| c.is_whitespace());
        let (negative, digits) = match t.as_bytes().first() {
            Some(b'-') => (true, &t[1..]),
            Some(b'+') => (false, &t[1..]),
            _ => (false, t),
        };
        if digits.is_empty() || digits.starts_with('_') || digits.ends_with('_') {
            return None;
        }
        let mut clean = String::with_capacity(digits.len() + 1);
        let mut previous_underscore = false;
        for c in digits.chars() {
            match c {
                '0'..='9' => {
                    clean.push(c);
                    previous_underscore = false;
                }
                '_' if !previous_underscore => previous_underscore = true,
                _ => return None,
            }
        }
        let trimmed = clean.trim_start_matches('0');
        let magnitude = if trimmed.is_empty() { "0" } else { trimmed };
        let signed = if negative && magnitude != "0" {
            format!("-{magnitude}")
        } else {
            magnitude.to_owned()
        };
        Some(match signed.parse::<i64>() {
            Ok(v) => PyIntText::Small(v),
            Err(_) => PyIntText::Big(PyLong(signed)),
        })
    }

    /// The canonical decimal text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the value is negative.
    pub fn is_negative(&self) -> bool {
        self.0.starts_with('-')
    }

    fn magnitude(&self) -> &str {
        self.0.trim_start_matches('-')
    }

    /// Whether xml_marshaller writes this value as `<long>` (|v| ≥ 1e24 as a float).
    pub fn is_marshalled_as_long(&self) -> bool {
        let m = self.magnitude();
        match m.len().cmp(&LONG_THRESHOLD.len()) {
            Ordering::Less => false,
            Ordering::Greater => true,
            Ordering::Equal => m >= LONG_THRESHOLD,
        }
    }

    /// Nearest float (for comparisons with floats).
    pub fn to_f64(&self) -> f64 {
        self.0.parse::<f64>().unwrap_or(f64::NAN)
    }

    fn cmp_long(&self, other: &PyLong) -> Ordering {
        match (self.is_negative(), other.is_negative()) {
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            (negative, _) => {
                let (a, b) = (self.magnitude(), other.magnitude());
                let by_magnitude = a.len().cmp(&b.len()).then_with(|| a.cmp(b));
                if negative {
                    by_magnitude.reverse()
                } else {
                    by_magnitude
                }
            }
        }
    }
}

impl fmt::Display for PyLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Result of [`PyLong::parse_python`]: an `i64` when it fits, else a [`PyLong`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PyIntText {
    /// Fits in `i64`.
    Small(i64),
    /// Outside the `i64` range.
    Big(PyLong),
}

impl From<PyIntText> for Value {
    fn from(v: PyIntText) -> Value {
        match v {
            PyIntText::Small(i) => Value::Int(i),
            PyIntText::Big(b) => Value::Long(b),
        }
    }
}

/// An instance of one of the four [`SlapClass`]es: `klass(*initargs)` followed by
/// `setattr(obj, name, value)` for each entry of `state` (the object's `__dict__`).
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// The class.
    pub class: SlapClass,
    /// `__getinitargs__()`, marshalled as a `<tuple>`.
    pub initargs: Vec<Value>,
    /// `__dict__`: attribute names (with their leading underscores) and values. The encoder
    /// writes them sorted by name, like xml_marshaller; a name must appear once.
    pub state: BTreeMap<String, Value>,
}

impl Object {
    /// An object with the given initargs and no attributes yet.
    pub fn new(class: SlapClass, initargs: Vec<Value>) -> Self {
        Object {
            class,
            initargs,
            state: BTreeMap::new(),
        }
    }

    /// Sets an attribute (builder style).
    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.state.insert(name.to_owned(), value.into());
        self
    }

    /// An attribute.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.state.get(name)
    }
}

/// A Python value as xml_marshaller writes and reads it.
///
/// * Dictionaries keep their entries in a `Vec` (document order when decoded); the encoder
///   writes them in Python's sorted order, so the order you build them in does not matter.
///   The decoder merges duplicate keys like a Python dict does (last value, first position).
/// * `<reference id="iN"/>` (a container marshalled a second time) is expanded by the decoder
///   into a copy of the container; the encoder never writes references (values built in Rust
///   share nothing). See `docs/slap-codec.md`.
/// * Sets keep their element order; Python's own set order is hash-dependent.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None` → `<none/>`.
    None,
    /// `True`/`False` → `<bool>1</bool>`/`<bool>0</bool>`.
    Bool(bool),
    /// An `int` in the `i64` range → `<int>`.
    Int(i64),
    /// An `int` outside the `i64` range → `<int>` or `<long>` (see [`PyLong`]).
    Long(PyLong),
    /// A `float` → `<float>` with Python's `repr()` text (`1e+20`, `0.1`, `inf`, `nan`).
    Float(f64),
    /// A `str` → `<string>`, escaped twice.
    String(String),
    /// A `list` → `<list id="iN">`.
    List(Vec<Value>),
    /// A `tuple` → `<tuple>` (no id).
    Tuple(Vec<Value>),
    /// A `dict` → `<dictionary id="iN">` with alternating keys and values, sorted by key.
    Dict(Vec<(Value, Value)>),
    /// A `set` → `<set id="iN">`.
    Set(Vec<Value>),
    /// One of the four slapos classes → `<object id="iN" module="slapos.slap.slap" class="…">`.
    Object(Object),
}

impl Value {
    /// A string value.
    pub fn str(s: impl Into<String>) -> Value {
        Value::String(s.into())
    }

    /// A dictionary with string keys, from any `(key, value)` iterator.
    pub fn dict<K: Into<String>, V: Into<Value>>(
        entries: impl IntoIterator<Item = (K, V)>,
    ) -> Value {
        Value::Dict(
            entries
                .into_iter()
                .map(|(k, v)| (Value::String(k.into()), v.into()))
                .collect(),
        )
    }

    /// The dictionary of strings (or `None`) that `xml2dict` returns, as a marshal value.
    pub fn from_str_dict(dict: &BTreeMap<String, Option<String>>) -> Value {
        Value::Dict(
            dict.iter()
                .map(|(k, v)| {
                    let v = match v {
                        Some(s) => Value::String(s.clone()),
                        None => Value::None,
                    };
                    (Value::String(k.clone()), v)
                })
                .collect(),
        )
    }

    /// Python type name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::Long(_) => "int",
            Value::Float(_) => "float",
            Value::String(_) => "str",
            Value::List(_) => "list",
            Value::Tuple(_) => "tuple",
            Value::Dict(_) => "dict",
            Value::Set(_) => "set",
            Value::Object(o) => o.class.name(),
        }
    }

    /// The string, if this is a `str`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The entries, if this is a `dict`.
    pub fn as_dict(&self) -> Option<&[(Value, Value)]> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// The items, if this is a `list` or a `tuple`.
    pub fn as_seq(&self) -> Option<&[Value]> {
        match self {
            Value::List(v) | Value::Tuple(v) => Some(v),
            _ => None,
        }
    }

    /// The object, if this is one of the four classes.
    pub fn as_object(&self) -> Option<&Object> {
        match self {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }

    /// Looks a string key up in a `dict` (last matching entry, like a Python dict after
    /// duplicates were merged). `None` when absent or not a dict.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_dict()?
            .iter()
            .rev()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// Python truthiness (`bool(value)`).
    pub fn is_truthy(&self) -> bool {
        match self {
            Value::None => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Long(_) => true,
            Value::Float(f) => *f != 0.0,
            Value::String(s) => !s.is_empty(),
            Value::List(v) | Value::Tuple(v) | Value::Set(v) => !v.is_empty(),
            Value::Dict(d) => !d.is_empty(),
            Value::Object(_) => true,
        }
    }

    /// Python `str(value)`: the text `dict2xml` stores for a parameter value.
    pub fn py_str(&self) -> String {
        pyrepr::py_str(self)
    }

    /// Python `repr(value)`.
    pub fn py_repr(&self) -> String {
        pyrepr::py_repr(self)
    }

    /// Number of nodes in the tree (this value included).
    pub fn node_count(&self) -> usize {
        1 + match self {
            Value::List(v) | Value::Tuple(v) | Value::Set(v) => {
                v.iter().map(Value::node_count).sum()
            }
            Value::Dict(d) => d.iter().map(|(k, v)| k.node_count() + v.node_count()).sum(),
            Value::Object(o) => {
                1 + o.initargs.iter().map(Value::node_count).sum::<usize>()
                    + 1
                    + o.state.values().map(|v| 1 + v.node_count()).sum::<usize>()
            }
            _ => 0,
        }
    }

    /// The value with every dictionary in the order the encoder writes it (Python's sorted
    /// key order), recursively. `decode(encode(v)) == v.canonical()` for any value without
    /// duplicate dictionary keys.
    pub fn canonical(&self) -> Value {
        match self {
            Value::List(v) => Value::List(v.iter().map(Value::canonical).collect()),
            Value::Tuple(v) => Value::Tuple(v.iter().map(Value::canonical).collect()),
            Value::Set(v) => Value::Set(v.iter().map(Value::canonical).collect()),
            Value::Dict(d) => {
                let entries: Vec<(Value, Value)> = d
                    .iter()
                    .map(|(k, v)| (k.canonical(), v.canonical()))
                    .collect();
                Value::Dict(sorted_entries(&entries).into_iter().cloned().collect())
            }
            Value::Object(o) => Value::Object(Object {
                class: o.class,
                initargs: o.initargs.iter().map(Value::canonical).collect(),
                state: o
                    .state
                    .iter()
                    .map(|(k, v)| (k.clone(), v.canonical()))
                    .collect(),
            }),
            other => other.clone(),
        }
    }

    /// Converts a JSON value: `null`→`None`, numbers to `int` or `float`, arrays to lists,
    /// objects to dicts.
    pub fn from_json(json: &serde_json::Value) -> Value {
        match json {
            serde_json::Value::Null => Value::None,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value::Int(i)
                } else if let Some(u) = n.as_u64() {
                    Value::Long(PyLong(u.to_string()))
                } else {
                    Value::Float(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            serde_json::Value::String(s) => Value::String(s.clone()),
            serde_json::Value::Array(a) => Value::List(a.iter().map(Value::from_json).collect()),
            serde_json::Value::Object(o) => Value::Dict(
                o.iter()
                    .map(|(k, v)| (Value::String(k.clone()), Value::from_json(v)))
                    .collect(),
            ),
        }
    }

    /// Converts to JSON where JSON can hold the value: tuples and sets become arrays,
    /// big integers numbers when they fit `u64`. Non-string dict keys, non-finite floats,
    /// other big integers and objects cannot be converted: the error names the value.
    pub fn to_json(&self) -> Result<serde_json::Value, ShapeError> {
        use serde_json::Value as J;
        Ok(match self {
            Value::None => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Long(l) => match l.as_str().parse::<u64>() {
                Ok(u) => J::from(u),
                Err(_) => return Err(ShapeError::new("value", "a JSON number", self)),
            },
            Value::Float(f) => match serde_json::Number::from_f64(*f) {
                Some(n) => J::Number(n),
                None => return Err(ShapeError::new("value", "a finite float", self)),
            },
            Value::String(s) => J::String(s.clone()),
            Value::List(v) | Value::Tuple(v) | Value::Set(v) => {
                J::Array(v.iter().map(Value::to_json).collect::<Result<_, _>>()?)
            }
            Value::Dict(d) => {
                let mut map = serde_json::Map::new();
                for (k, v) in d {
                    let Some(k) = k.as_str() else {
                        return Err(ShapeError::new("dict key", "a str", k));
                    };
                    map.insert(k.to_owned(), v.to_json()?);
                }
                J::Object(map)
            }
            Value::Object(_) => return Err(ShapeError::new("value", "JSON data", self)),
        })
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::String(s.to_owned())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::String(s)
    }
}
impl From<&String> for Value {
    fn from(s: &String) -> Value {
        Value::String(s.clone())
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Value {
        Value::Int(i)
    }
}
impl From<f64> for Value {
    fn from(f: f64) -> Value {
        Value::Float(f)
    }
}
impl From<Object> for Value {
    fn from(o: Object) -> Value {
        Value::Object(o)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::None, Into::into)
    }
}
impl From<Vec<Value>> for Value {
    fn from(v: Vec<Value>) -> Value {
        Value::List(v)
    }
}

// ---------------------------------------------------------------------------------------------
// Python comparison rules used for dictionary key order and duplicate keys.

/// A number on Python's numeric tower (bool ⊂ int ⊂ float for comparisons).
enum Num<'a> {
    Int(i64),
    Long(&'a PyLong),
    Float(f64),
}

fn as_num(v: &Value) -> Option<Num<'_>> {
    match v {
        Value::Bool(b) => Some(Num::Int(i64::from(*b))),
        Value::Int(i) => Some(Num::Int(*i)),
        Value::Long(l) => Some(Num::Long(l)),
        Value::Float(f) => Some(Num::Float(*f)),
        _ => None,
    }
}

/// `None` for a NaN comparison (every ordering operator is false).
fn num_partial_cmp(a: &Num<'_>, b: &Num<'_>) -> Option<Ordering> {
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => Some(x.cmp(y)),
        (Num::Long(x), Num::Long(y)) => Some(x.cmp_long(y)),
        // A PyLong is outside the i64 range, so its sign decides.
        (Num::Int(_), Num::Long(y)) => Some(if y.is_negative() {
            Ordering::Greater
        } else {
            Ordering::Less
        }),
        (Num::Long(x), Num::Int(_)) => Some(if x.is_negative() {
            Ordering::Less
        } else {
            Ordering::Greater
        }),
        (Num::Float(x), Num::Float(y)) => x.partial_cmp(y),
        (Num::Int(x), Num::Float(y)) => int_float_cmp(*x, *y),
        (Num::Float(x), Num::Int(y)) => int_float_cmp(*y, *x).map(Ordering::reverse),
        (Num::Long(x), Num::Float(y)) => x.to_f64().partial_cmp(y),
        (Num::Float(x), Num::Long(y)) => x.partial_cmp(&y.to_f64()),
    }
}

/// Exact comparison of an integer with a float, like Python.
fn int_float_cmp(i: i64, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    // ±2^63 as floats; beyond them the float is larger than any i64.
    if f >= 9_223_372_036_854_775_808.0 {
        return Some(Ordering::Less);
    }
    if f < -9_223_372_036_854_775_808.0 {
        return Some(Ordering::Greater);
    }
    let floor = f.floor();
    // `floor` is integral and in range, so the cast is exact.
    let fi = floor as i64;
    match i.cmp(&fi) {
        Ordering::Equal if f > floor => Some(Ordering::Less),
        other => Some(other),
    }
}

/// Python `a == b` for hashable values (used to merge duplicate dictionary keys).
pub(crate) fn py_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::None, Value::None) => true,
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Tuple(x), Value::Tuple(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| py_eq(p, q))
        }
        _ => match (as_num(a), as_num(b)) {
            (Some(x), Some(y)) => num_partial_cmp(&x, &y) == Some(Ordering::Equal),
            _ => false,
        },
    }
}

/// `cmp(a, b)` as xml_marshaller's `version_independent_cmp` computes it, `None` when Python
/// raises `TypeError` (the caller then compares `repr()`s).
fn py_cmp(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Tuple(x), Value::Tuple(y)) | (Value::List(x), Value::List(y)) => {
            for (p, q) in x.iter().zip(y) {
                if !py_eq(p, q) {
                    return py_cmp(p, q);
                }
            }
            Some(x.len().cmp(&y.len()))
        }
        _ => match (as_num(a), as_num(b)) {
            // (x > y) - (x < y) is 0 when a NaN is involved.
            (Some(x), Some(y)) => Some(num_partial_cmp(&x, &y).unwrap_or(Ordering::Equal)),
            _ => None,
        },
    }
}

/// The comparator of `sorted(d.items(), key=version_independent_cmp)`.
fn key_cmp(a: &Value, b: &Value) -> Ordering {
    py_cmp(a, b).unwrap_or_else(|| pyrepr::py_repr(a).cmp(&pyrepr::py_repr(b)))
}

/// Dictionary entries in the order xml_marshaller writes them.
///
/// String keys (the SLAP case) sort by code point. Mixed key types use Python's fallback of
/// comparing `repr()`s; that comparator is not always a total order in Python either, so a
/// plain stable merge sort is used (never panics), which matches CPython whenever the
/// comparisons are consistent.
pub(crate) fn sorted_entries(entries: &[(Value, Value)]) -> Vec<&(Value, Value)> {
    let mut refs: Vec<&(Value, Value)> = entries.iter().collect();
    if refs.iter().all(|(k, _)| matches!(k, Value::String(_))) {
        refs.sort_by(|(a, _), (b, _)| a.as_str().cmp(&b.as_str()));
        return refs;
    }
    merge_sort(refs, &|x: &&(Value, Value), y: &&(Value, Value)| {
        key_cmp(&x.0, &y.0)
    })
}

fn merge_sort<T: Copy>(v: Vec<T>, cmp: &dyn Fn(&T, &T) -> Ordering) -> Vec<T> {
    if v.len() <= 1 {
        return v;
    }
    let right = v[v.len() / 2..].to_vec();
    let mut left = v;
    left.truncate(left.len() / 2);
    let (left, right) = (merge_sort(left, cmp), merge_sort(right, cmp));
    let mut out = Vec::with_capacity(left.len() + right.len());
    let (mut i, mut j) = (0, 0);
    while i < left.len() && j < right.len() {
        // Stable: take from the left unless the right one is strictly smaller.
        if cmp(&right[j], &left[i]) == Ordering::Less {
            out.push(right[j]);
            j += 1;
        } else {
            out.push(left[i]);
            i += 1;
        }
    }
    out.extend_from_slice(&left[i..]);
    out.extend_from_slice(&right[j..]);
    out
}

/// A hashable stand-in for a dictionary key with Python's equality (`1 == 1.0 == True`).
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) enum KeyId {
    None,
    Str(String),
    Int(i64),
    Long(String),
    /// Bits of a non-integral float (NaN never equals itself: such keys get no `KeyId`).
    Float(u64),
    Tuple(Vec<KeyId>),
}

/// `Err` with the type name when Python cannot hash the value (list, dict, set, object, or a
/// tuple holding one).
pub(crate) fn check_hashable(v: &Value) -> Result<(), &'static str> {
    match v {
        Value::None
        | Value::String(_)
        | Value::Bool(_)
        | Value::Int(_)
        | Value::Long(_)
        | Value::Float(_) => Ok(()),
        Value::Tuple(items) => items.iter().try_for_each(check_hashable),
        other => Err(other.type_name()),
    }
}

/// The [`KeyId`] of a key, `Err` with the type name when Python could not hash it, `Ok(None)`
/// for a NaN (Python keeps separately decoded NaN keys apart).
pub(crate) fn key_id(v: &Value) -> Result<Option<KeyId>, &'static str> {
    Ok(Some(match v {
        Value::None => KeyId::None,
        Value::String(s) => KeyId::Str(s.clone()),
        Value::Bool(b) => KeyId::Int(i64::from(*b)),
        Value::Int(i) => KeyId::Int(*i),
        Value::Long(l) => KeyId::Long(l.as_str().to_owned()),
        Value::Float(f) => {
            if f.is_nan() {
                return Ok(None);
            }
            let integral = f.fract() == 0.0 && f.abs() < 9.2e18;
            if integral {
                // In range and integral: the cast is exact.
                KeyId::Int(*f as i64)
            } else {
                KeyId::Float(f.to_bits())
            }
        }
        Value::Tuple(items) => {
            let mut ids = Vec::with_capacity(items.len());
            for item in items {
                match key_id(item)? {
                    Some(id) => ids.push(id),
                    None => return Ok(None),
                }
            }
            KeyId::Tuple(ids)
        }
        other => return Err(other.type_name()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_int_parsing() {
        assert_eq!(PyLong::parse_python(" 42 "), Some(PyIntText::Small(42)));
        assert_eq!(PyLong::parse_python("-0"), Some(PyIntText::Small(0)));
        assert_eq!(PyLong::parse_python("1_000"), Some(PyIntText::Small(1000)));
        assert_eq!(PyLong::parse_python("1__0"), None);
        assert_eq!(PyLong::parse_python("_1"), None);
        assert_eq!(PyLong::parse_python("1.0"), None);
        assert_eq!(PyLong::parse_python(""), None);
        let big = PyLong::parse_python("-000009223372036854775809").unwrap();
        assert_eq!(big, PyIntText::Big(PyLong("-9223372036854775809".into())));
    }

    #[test]
    fn long_threshold_is_the_float_1e24() {
        let long = |s: &str| match PyLong::parse_python(s).unwrap() {
            PyIntText::Big(b) => b.is_marshalled_as_long(),
            PyIntText::Small(_) => false,
        };
        assert!(!long("999999999999999983222783"));
        assert!(long("999999999999999983222784"));
        assert!(long("-1000000000000000000000000"));
        assert!(!long("100000000000000000000000"));
    }

    #[test]
    fn mixed_keys_sort_like_python() {
        // Observed: dumps({1: 'x', 'a': 2, None: 3, (1, 2): 4}) writes 'a', (1, 2), 1, None.
        let entries = vec![
            (Value::Int(1), Value::str("x")),
            (Value::str("a"), Value::Int(2)),
            (Value::None, Value::Int(3)),
            (
                Value::Tuple(vec![Value::Int(1), Value::Int(2)]),
                Value::Int(4),
            ),
        ];
        let keys: Vec<String> = sorted_entries(&entries)
            .iter()
            .map(|(k, _)| k.py_repr())
            .collect();
        assert_eq!(keys, ["'a'", "(1, 2)", "1", "None"]);
    }

    #[test]
    fn numeric_keys_compare_across_types() {
        assert!(py_eq(&Value::Int(1), &Value::Float(1.0)));
        assert!(py_eq(&Value::Bool(true), &Value::Int(1)));
        assert!(!py_eq(&Value::Float(f64::NAN), &Value::Float(f64::NAN)));
        assert_eq!(int_float_cmp(2, 2.5), Some(Ordering::Less));
        assert_eq!(int_float_cmp(-3, -3.5), Some(Ordering::Greater));
        assert_eq!(int_float_cmp(i64::MAX, 9.3e18), Some(Ordering::Less));
        assert_eq!(key_id(&Value::Float(3.0)), key_id(&Value::Int(3)));
        assert!(key_id(&Value::List(vec![])).is_err());
    }
}
