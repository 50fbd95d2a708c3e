//! Text every part of the system can carry and show.
//!
//! Parameters, connection values and messages travel as JSON (native API), as XML 1.0 (the
//! SLAP wire) and end up on operators' terminals. XML 1.0 cannot carry NUL, most C0 controls or
//! U+FFFE/U+FFFF at all (not even as character references), so a value holding one that was
//! accepted over JSON would make every later SLAP read of its computer fail. Hence:
//!
//! * [`check_text`] / [`check_params`]: what a caller *sends* is refused at the door when it
//!   holds such a character (a 400 naming the field);
//! * [`xml_safe`]: what a node *reports* (promise output, errors) is kept, with such characters
//!   replaced by U+FFFD, and cut to a length;
//! * [`terminal_safe`]: what a CLI prints for humans shows control characters (ESC, CR, C1,
//!   bidirectional overrides) as escapes, so a value cannot move the cursor, rewrite a line or
//!   reorder what the operator reads.

use std::borrow::Cow;
use std::fmt::Write;

use crate::Params;

/// A character XML 1.0 can carry (its `Char` production).
pub fn is_xml_char(c: char) -> bool {
    matches!(u32::from(c), 0x9 | 0xA | 0xD | 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10FFFF)
}

/// A value holds a character the SLAP wire (XML 1.0) cannot carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} holds character U+{code:04X}, which cannot be stored (XML 1.0 cannot carry it)")]
pub struct TextError {
    /// The field (`instance parameter "x"`, `connection parameter key`, …).
    pub what: String,
    /// The offending code point.
    pub code: u32,
}

/// Refuse a text holding a character XML 1.0 cannot carry.
pub fn check_text(what: &str, s: &str) -> Result<(), TextError> {
    match s.chars().find(|c| !is_xml_char(*c)) {
        None => Ok(()),
        Some(c) => Err(TextError {
            what: what.to_owned(),
            code: u32::from(c),
        }),
    }
}

/// [`check_text`] on every key and every string (at any depth) of a parameter object; `what`
/// names the object (`instance parameters`).
pub fn check_params(what: &str, p: &Params) -> Result<(), TextError> {
    fn value(what: &str, key: &str, v: &serde_json::Value) -> Result<(), TextError> {
        match v {
            serde_json::Value::String(s) => check_text(&format!("{what} {key:?}"), s),
            serde_json::Value::Array(a) => a.iter().try_for_each(|v| value(what, key, v)),
            serde_json::Value::Object(o) => o.iter().try_for_each(|(k, v)| {
                check_text(&format!("a key of {what} {key:?}"), k)?;
                value(what, key, v)
            }),
            _ => Ok(()),
        }
    }
    p.iter().try_for_each(|(k, v)| {
        check_text(&format!("a key of {what}"), k)?;
        value(what, k, v)
    })
}

/// `s` with every character XML 1.0 cannot carry replaced by U+FFFD, cut to at most `max`
/// bytes (at a character boundary, `…` appended when cut).
pub fn xml_safe(s: &str, max: usize) -> Cow<'_, str> {
    let clean = s.chars().all(is_xml_char);
    if clean && s.len() <= max {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len().min(max) + 3);
    for c in s.chars() {
        let c = if is_xml_char(c) { c } else { '\u{FFFD}' };
        if out.len() + c.len_utf8() > max {
            out.push('…');
            break;
        }
        out.push(c);
    }
    Cow::Owned(out)
}

/// Characters a terminal acts on rather than shows: C0 controls (tab included), DEL, C1
/// controls, and the bidirectional embeddings, overrides and isolates.
fn is_terminal_control(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `s` for a human's terminal: every character a terminal would act on (ESC, CR, LF, BEL, C1,
/// bidirectional overrides, …) written as `\n`, `\r`, `\t` or `\u{1b}` instead.
pub fn terminal_safe(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_terminal_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_terminal_control(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_the_wire_cannot_carry_is_refused_with_its_field() {
        assert!(check_text("x", "tab\tnew\nline\r é 😀").is_ok());
        for bad in ["a\0b", "\u{1}", "\u{b}", "\u{fffe}", "\u{ffff}"] {
            let e = check_text("x", bad).unwrap_err();
            assert_eq!(e.what, "x");
        }
        let p: Params =
            serde_json::from_str(r#"{"ok": "v", "deep": {"list": ["a", "b\u0001"]}}"#).unwrap();
        let e = check_params("instance parameters", &p).unwrap_err();
        assert_eq!(e.code, 1);
        assert!(
            e.to_string().contains(r#"instance parameters "deep""#),
            "{e}"
        );
        let p: Params = serde_json::from_str(r#"{"k\u0000": 1}"#).unwrap();
        assert!(check_params("p", &p).is_err());
    }

    #[test]
    fn reports_are_cleaned_and_cut() {
        assert!(matches!(xml_safe("fine\n", 10), Cow::Borrowed(_)));
        assert_eq!(xml_safe("a\0b", 10), "a\u{FFFD}b");
        assert_eq!(xml_safe("héllo wörld", 6), "héllo…");
        assert!(xml_safe(&"x".repeat(5000), 4096).len() <= 4096 + 3);
    }

    #[test]
    fn terminals_see_escapes_not_controls() {
        assert!(matches!(terminal_safe("plain é"), Cow::Borrowed(_)));
        assert_eq!(
            terminal_safe("a\u{1b}[2Jb\rc\nd\u{202e}e\u{9b}"),
            "a\\u{1b}[2Jb\\rc\\nd\\u{202e}e\\u{9b}"
        );
    }
}
