//! Typed errors of the SLAP codec. Each message names the element, field or attribute at fault.

use super::value::{SlapClass, Value};

/// Why an xml_marshaller document was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MarshalError {
    /// Not well-formed XML (the XML parser's message and byte offset).
    #[error("xml_marshaller: malformed XML near byte {position}: {message}")]
    Xml {
        /// Byte offset where the parser stopped.
        position: u64,
        /// The parser's message.
        message: String,
    },
    /// A `<!DOCTYPE>`: entity declarations are never accepted.
    #[error("xml_marshaller: a DOCTYPE declaration is not accepted")]
    Doctype,
    /// The document has no element, or the root element is not `<marshal>`.
    #[error("xml_marshaller: the root element must be <marshal>, found {found}")]
    NotMarshal {
        /// What was found instead (`<name>` or `nothing`).
        found: String,
    },
    /// `<marshal>` must hold exactly one value.
    #[error("xml_marshaller: <marshal> must hold exactly one value, found {count}")]
    RootCount {
        /// Number of values found.
        count: usize,
    },
    /// An element name xml_marshaller does not know.
    #[error("xml_marshaller: unknown element <{name}>")]
    UnknownElement {
        /// The element name.
        name: String,
    },
    /// `<complex>` or `<code>`: known to xml_marshaller, never used by SLAP, refused.
    #[error("xml_marshaller: element <{name}> is not supported")]
    Unsupported {
        /// The element name.
        name: String,
    },
    /// An element where none may be (inside a scalar, a second `<marshal>`…).
    #[error("xml_marshaller: element <{child}> is not allowed inside <{parent}>")]
    UnexpectedElement {
        /// The enclosing element.
        parent: String,
        /// The misplaced element.
        child: String,
    },
    /// Non-blank text between container elements.
    #[error("xml_marshaller: text {text:?} is not allowed inside <{parent}>")]
    UnexpectedText {
        /// The enclosing element.
        parent: String,
        /// The text (truncated).
        text: String,
    },
    /// The text of `<int>`, `<long>`, `<float>` or `<bool>` does not parse.
    #[error("xml_marshaller: <{element}> holds {text:?}, which is not a valid {expected}")]
    BadScalar {
        /// The element.
        element: &'static str,
        /// Its text (truncated).
        text: String,
        /// What it should be.
        expected: &'static str,
    },
    /// A class outside the four slapos classes (`slapos.util.loads` raises `RuntimeError`).
    #[error("xml_marshaller: refusing to unmarshall {module}.{class}")]
    RefusedClass {
        /// The `module` attribute.
        module: String,
        /// The `class` attribute.
        class: String,
    },
    /// A required attribute is missing (`module`/`class` of `<object>`, `id` of `<reference>`).
    #[error("xml_marshaller: <{element}> has no {attribute:?} attribute")]
    MissingAttribute {
        /// The element.
        element: &'static str,
        /// The attribute.
        attribute: &'static str,
    },
    /// An `<object>` whose content is not `<tuple>initargs</tuple><dictionary>state</dictionary>`
    /// with the number of initargs the class accepts and `str` attribute names.
    #[error("xml_marshaller: {class} object: {problem}")]
    ObjectShape {
        /// The class.
        class: SlapClass,
        /// What is wrong.
        problem: String,
    },
    /// A `<dictionary>` with an odd number of items.
    #[error("xml_marshaller: <dictionary> holds an odd number ({count}) of items")]
    OddDictionary {
        /// Number of items.
        count: usize,
    },
    /// A dictionary key Python cannot hash (list, dict, set, object).
    #[error("xml_marshaller: a {type_name} cannot be a dictionary key")]
    UnhashableKey {
        /// Python type of the key.
        type_name: &'static str,
    },
    /// `<reference id=…/>` naming no earlier container.
    #[error(
        "xml_marshaller: <reference id={id:?}/> names no earlier list, dictionary, set or object"
    )]
    UnknownReference {
        /// The id.
        id: String,
    },
    /// `<reference id=…/>` naming an enclosing container: a cycle, which a tree cannot hold.
    #[error("xml_marshaller: <reference id={id:?}/> names an enclosing container (a cycle)")]
    CyclicReference {
        /// The id.
        id: String,
    },
    /// Containers nested deeper than the limit.
    #[error("xml_marshaller: containers nested deeper than {limit}")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// More values than the limit (counting the copies references expand to).
    #[error("xml_marshaller: more than {limit} values (references expanded)")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The decoded value would take more than the limit in expanded bytes (strings, keys and
    /// numbers' text plus a cell per value, counting the copies references expand to; see
    /// `DecodeLimits::max_bytes`).
    #[error(
        "xml_marshaller: the decoded value exceeds max_bytes = {limit} bytes (references expanded)"
    )]
    TooManyBytes {
        /// The limit (`DecodeLimits::max_bytes`).
        limit: usize,
    },
}

/// Why a value could not be written (xml_marshaller or instance XML). lxml refuses the same
/// values (`ValueError: All strings must be XML compatible`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A character XML 1.0 cannot carry (NUL, most C0 controls, U+FFFE, U+FFFF).
    #[error("cannot write {what} {text:?}: character U+{code:04X} is not allowed in XML")]
    InvalidChar {
        /// What was being written (`string`, `parameter value`, `parameter id`).
        what: &'static str,
        /// The text (truncated).
        text: String,
        /// The offending code point.
        code: u32,
    },
    /// `dict2xml` needs `str` keys (lxml rejects others).
    #[error("cannot write instance XML: parameter key {key} is a {type_name}, not a str")]
    NonStringKey {
        /// `repr()` of the key.
        key: String,
        /// Its Python type.
        type_name: &'static str,
    },
    /// `dict2xml` was given something that is not a dictionary.
    #[error("cannot write instance XML from a {type_name}: a dict is needed")]
    NotADict {
        /// Python type of the value.
        type_name: &'static str,
    },
}

/// Why instance XML (`<instance><parameter id=…>`) was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InstanceXmlError {
    /// Not well-formed XML.
    #[error("instance XML: malformed XML near byte {position}: {message}")]
    Xml {
        /// Byte offset where the parser stopped.
        position: u64,
        /// The parser's message.
        message: String,
    },
    /// A `<!DOCTYPE>`.
    #[error("instance XML: a DOCTYPE declaration is not accepted")]
    Doctype,
    /// No root element.
    #[error("instance XML: no root element")]
    NoRoot,
    /// A `<parameter>` without `id` (Python would key it `None`).
    #[error("instance XML: <parameter> number {index} has no id attribute")]
    MissingId {
        /// 1-based position among the `<parameter>` elements.
        index: usize,
    },
    /// A repeated id whose later element is empty: `xml2dict` raises `TypeError` there.
    #[error("instance XML: parameter {id:?} is repeated with an empty value")]
    EmptyDuplicate {
        /// The repeated id.
        id: String,
    },
}

/// Why a SLAP form (or query string, or header) was refused. Each variant names the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FormError {
    /// A required field is absent (slapproxy answers 400, Flask's `BadRequestKeyError`).
    #[error("form field {field:?} is missing")]
    MissingField {
        /// The field.
        field: &'static str,
    },
    /// A field holding xml_marshaller XML that does not decode.
    #[error("form field {field:?}: {source}")]
    BadMarshal {
        /// The field.
        field: &'static str,
        /// The decoding error.
        source: MarshalError,
    },
    /// A decoded value of the wrong shape.
    #[error("form field {field:?}: {source}")]
    BadShape {
        /// The field.
        field: &'static str,
        /// The shape error.
        source: ShapeError,
    },
    /// A plain field whose value is not one of the allowed ones.
    #[error("form field {field:?}: {value:?} is not {expected}")]
    BadValue {
        /// The field.
        field: &'static str,
        /// The value (truncated).
        value: String,
        /// What was expected.
        expected: &'static str,
    },
}

/// A decoded value does not have the shape a SLAP document needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: expected {expected}, found {found}")]
pub struct ShapeError {
    /// Where in the document (`_parameter_dict`, `partition_list[2].reference`…).
    pub path: String,
    /// What was expected.
    pub expected: &'static str,
    /// What was found: a Python type name, or `nothing`.
    pub found: String,
}

impl ShapeError {
    /// A shape error at `path` for the value found there.
    pub fn new(path: impl Into<String>, expected: &'static str, found: &Value) -> Self {
        ShapeError {
            path: path.into(),
            expected,
            found: found.type_name().to_owned(),
        }
    }

    /// A shape error for a missing key or attribute.
    pub fn missing(path: impl Into<String>, expected: &'static str) -> Self {
        ShapeError {
            path: path.into(),
            expected,
            found: "nothing".to_owned(),
        }
    }
}

/// At most 80 characters of `s`, for error messages.
pub(crate) fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}
