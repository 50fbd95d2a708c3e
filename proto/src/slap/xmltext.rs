//! XML text helpers shared by the xml_marshaller and instance-XML codecs: escaping exactly as
//! lxml (libxml2) serialises, and a thin event reader over quick-xml that resolves references,
//! normalises line ends and refuses what expat refuses (DOCTYPE here, invalid characters).

use std::borrow::Cow;
use std::fmt::Write;

use quick_xml::Reader;
use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};

use super::error::{EncodeError, truncate};

/// The XML 1.0 `Char` production: what lxml accepts in text and attributes.
pub(crate) fn is_xml_char(c: char) -> bool {
    matches!(u32::from(c), 0x9 | 0xA | 0xD | 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10FFFF)
}

fn invalid(what: &'static str, s: &str, c: char) -> EncodeError {
    EncodeError::InvalidChar {
        what,
        text: truncate(s),
        code: u32::from(c),
    }
}

/// Content of a marshal `<string>`: `saxutils.escape` (`& < >`), then libxml2's ASCII text
/// serialisation (`& < >` again, `\r` as `&#13;`, everything above ASCII as `&#N;`).
pub(crate) fn push_marshal_string(out: &mut String, s: &str) -> Result<(), EncodeError> {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;amp;"),
            '<' => out.push_str("&amp;lt;"),
            '>' => out.push_str("&amp;gt;"),
            '\r' => out.push_str("&#13;"),
            c if !is_xml_char(c) => return Err(invalid("string", s, c)),
            c if c.is_ascii() => out.push(c),
            c => {
                let _ = write!(out, "&#{};", u32::from(c));
            }
        }
    }
    Ok(())
}

/// Element text as libxml2 writes it with `encoding='utf-8'` (instance XML).
pub(crate) fn push_text_utf8(
    out: &mut String,
    s: &str,
    what: &'static str,
) -> Result<(), EncodeError> {
    push_utf8(out, s, what, false)
}

/// A double-quoted attribute value as libxml2 writes it with `encoding='utf-8'`.
pub(crate) fn push_attr_utf8(
    out: &mut String,
    s: &str,
    what: &'static str,
) -> Result<(), EncodeError> {
    push_utf8(out, s, what, true)
}

/// libxml2's UTF-8 escaping: `& < >` and `\r` always; `"`, tab and newline in attributes.
fn push_utf8(
    out: &mut String,
    s: &str,
    what: &'static str,
    attribute: bool,
) -> Result<(), EncodeError> {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#13;"),
            '"' if attribute => out.push_str("&quot;"),
            '\t' if attribute => out.push_str("&#9;"),
            '\n' if attribute => out.push_str("&#10;"),
            c if !is_xml_char(c) => return Err(invalid(what, s, c)),
            c => out.push(c),
        }
    }
    Ok(())
}

/// A reading error: syntax (with position) or a refused DOCTYPE.
#[derive(Debug)]
pub(crate) enum ReadError {
    Syntax { position: u64, message: String },
    Doctype,
}

/// One reading step, with text already resolved.
pub(crate) enum Ev<'a> {
    Start(BytesStart<'a>),
    Empty(BytesStart<'a>),
    End,
    /// Character data: text with references resolved and line ends normalised, or CDATA.
    Text(Cow<'a, str>),
    /// A comment or processing instruction (skipped by xml_marshaller, ends lxml's `.text`).
    Other,
    Eof,
}

/// quick-xml reader configured for untrusted input.
pub(crate) struct XmlEvents<'a> {
    reader: Reader<&'a [u8]>,
}

impl<'a> XmlEvents<'a> {
    pub(crate) fn new(xml: &'a str) -> Self {
        let mut reader = Reader::from_str(xml);
        let config = reader.config_mut();
        config.check_end_names = true;
        config.check_comments = true;
        config.expand_empty_elements = false;
        config.trim_text(false);
        XmlEvents { reader }
    }

    pub(crate) fn position(&self) -> u64 {
        self.reader.buffer_position()
    }

    fn syntax(&self, message: impl Into<String>) -> ReadError {
        ReadError::Syntax {
            position: self.reader.buffer_position(),
            message: message.into(),
        }
    }

    pub(crate) fn next(&mut self) -> Result<Ev<'a>, ReadError> {
        let event = match self.reader.read_event() {
            Ok(e) => e,
            Err(e) => {
                return Err(ReadError::Syntax {
                    position: self.reader.error_position(),
                    message: e.to_string(),
                });
            }
        };
        Ok(match event {
            Event::Start(s) => Ev::Start(s),
            Event::Empty(s) => Ev::Empty(s),
            Event::End(_) => Ev::End,
            Event::Text(t) => {
                let text = t.xml10_content();
                self.check_chars(&text)?;
                Ev::Text(text)
            }
            Event::CData(c) => {
                let text = c.xml10_content();
                self.check_chars(&text)?;
                Ev::Text(text)
            }
            Event::GeneralRef(r) => {
                let name: &str = &r;
                Ev::Text(Cow::Owned(self.resolve_ref(name)?.to_string()))
            }
            Event::Comment(_) | Event::PI(_) => Ev::Other,
            Event::Decl(_) => Ev::Other,
            Event::DocType(_) => return Err(ReadError::Doctype),
            Event::Eof => Ev::Eof,
        })
    }

    fn check_chars(&self, text: &str) -> Result<(), ReadError> {
        match text.chars().find(|c| !is_xml_char(*c)) {
            Some(c) => Err(self.syntax(format!(
                "character U+{:04X} is not allowed in XML",
                u32::from(c)
            ))),
            None => Ok(()),
        }
    }

    /// Predefined entities and character references; anything else is undefined (no DTD).
    fn resolve_ref(&self, name: &str) -> Result<char, ReadError> {
        let c = match name {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = name.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = name.strip_prefix('#') {
                    dec.parse::<u32>().ok()
                } else {
                    return Err(self.syntax(format!("undefined entity &{name};")));
                };
                match code.and_then(char::from_u32) {
                    Some(c) if is_xml_char(c) => c,
                    _ => return Err(self.syntax(format!("invalid character reference &{name};"))),
                }
            }
        };
        Ok(c)
    }
}

/// The value of the attribute whose local name is `name`, unescaped and normalised.
pub(crate) fn attribute(
    start: &BytesStart<'_>,
    name: &str,
    position: u64,
) -> Result<Option<String>, ReadError> {
    for attr in start.attributes() {
        let attr = attr.map_err(|e| ReadError::Syntax {
            position,
            message: e.to_string(),
        })?;
        if attr.key.local_name().as_ref() == name {
            let value = attr
                .normalized_value(XmlVersion::Implicit1_0)
                .map_err(|e| ReadError::Syntax {
                    position,
                    message: e.to_string(),
                })?;
            if let Some(c) = value.chars().find(|c| !is_xml_char(*c)) {
                return Err(ReadError::Syntax {
                    position,
                    message: format!("character U+{:04X} is not allowed in XML", u32::from(c)),
                });
            }
            return Ok(Some(value.into_owned()));
        }
    }
    Ok(None)
}

/// Local name of an element (namespace prefix dropped, as xml_marshaller's SAX handler does).
pub(crate) fn local_name<'s>(start: &'s BytesStart<'_>) -> &'s str {
    let name = start.name();
    let full: &str = name.0;
    match full.rfind(':') {
        Some(i) => &full[i + 1..],
        None => full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marshal_string_escaping_matches_lxml() {
        // Observed: dumps('<a&b> "q" é ☃') and dumps('x\ry\nz\tw'), dumps('😀').
        let mut out = String::new();
        push_marshal_string(&mut out, "<a&b> \"q\" é ☃").unwrap();
        assert_eq!(out, "&amp;lt;a&amp;amp;b&amp;gt; \"q\" &#233; &#9731;");
        out.clear();
        push_marshal_string(&mut out, "x\ry\nz\tw😀\u{7f}").unwrap();
        assert_eq!(out, "x&#13;y\nz\tw&#128512;\u{7f}");
        assert!(matches!(
            push_marshal_string(&mut out, "a\u{b}"),
            Err(EncodeError::InvalidChar { code: 0xb, .. })
        ));
        assert!(push_marshal_string(&mut out, "\u{fffe}").is_err());
    }

    #[test]
    fn attribute_escaping_matches_lxml() {
        let mut out = String::new();
        push_attr_utf8(&mut out, "i&<>\"\t\n\ré", "parameter id").unwrap();
        assert_eq!(out, "i&amp;&lt;&gt;&quot;&#9;&#10;&#13;é");
    }
}
