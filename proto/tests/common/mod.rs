//! Test helpers: reading the captured SLAP exchanges and re-rendering codec output the way the
//! capture tool rendered it (lxml re-parse + `pretty_print=True`).
#![allow(dead_code)]

use std::path::PathBuf;

pub mod strategies;

/// Marker the capture tool put at the end of a body it cut.
pub const TRUNCATED: &str = "...[truncated]";

/// A fixture file from `tests/fixtures/slap-wire/`.
pub fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/slap-wire")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// One captured HTTP exchange.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// `GET`, `POST`.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// HTTP status.
    pub status: u16,
    /// `Authorization` request header.
    pub authorization: Option<String>,
    /// Decoded form fields, in capture order.
    pub form: Vec<(String, String)>,
    /// Response body.
    pub response: Option<String>,
}

impl Exchange {
    /// Route name (`requestComputerPartition`), without query.
    pub fn route(&self) -> &str {
        let p = self.path.trim_start_matches('/');
        p.split('?').next().unwrap_or(p)
    }

    /// A form field.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

enum Target {
    Form(String),
    Body,
    Response,
}

/// Parses a capture file into exchanges.
pub fn exchanges(file: &str) -> Vec<Exchange> {
    let text = fixture(file);
    let mut out = Vec::new();
    for block in text.split(&"=".repeat(100)) {
        let mut lines = block.lines().peekable();
        // Skip the empty remainder of the separator line.
        while lines.peek().is_some_and(|l| l.is_empty()) {
            lines.next();
        }
        let Some(header) = lines.next() else { continue };
        let (request, rest) = header.split_once(" -> ").expect("exchange header");
        let (method, path) = request.split_once(' ').expect("method and path");
        let status: u16 = rest[..3].parse().expect("status");
        let mut ex = Exchange {
            method: method.to_owned(),
            path: path.to_owned(),
            status,
            authorization: None,
            form: Vec::new(),
            response: None,
        };
        // The field being collected: target, continuation prefix, lines.
        let mut current: Option<(Target, &str, Vec<String>)> = None;
        let finish = |ex: &mut Exchange, cur: Option<(Target, &str, Vec<String>)>| {
            if let Some((target, _, lines)) = cur {
                let body = lines.join("\n");
                match target {
                    Target::Form(name) => ex.form.push((name, body)),
                    Target::Response => ex.response = Some(body),
                    Target::Body => {}
                }
            }
        };
        for line in lines {
            if let Some((_, prefix, collected)) = current.as_mut() {
                let continues = match *prefix {
                    // JSON request bodies are not indented: they run until RESPONSE.
                    "" => !line.starts_with("  RESPONSE: "),
                    p => line.starts_with(p),
                };
                if continues {
                    collected.push(line[prefix.len()..].to_owned());
                    continue;
                }
            }
            finish(&mut ex, current.take());
            if let Some(rest) = line.strip_prefix("  form[") {
                let (name, value) = rest.split_once("] = ").expect("form line");
                current = Some((
                    Target::Form(name.to_owned()),
                    "      ",
                    vec![value.to_owned()],
                ));
            } else if let Some(value) = line.strip_prefix("  RESPONSE: ") {
                current = Some((Target::Response, "    ", vec![value.to_owned()]));
            } else if let Some(value) = line.strip_prefix("  body: ") {
                current = Some((Target::Body, "", vec![value.to_owned()]));
            } else if let Some(value) = line.strip_prefix("  Authorization: ") {
                ex.authorization = Some(value.to_owned());
            } else if line.starts_with("  Content-") || line.trim().is_empty() {
            } else {
                panic!("{file}: unexpected capture line {line:?}");
            }
        }
        finish(&mut ex, current.take());
        out.push(ex);
    }
    out
}

/// Renders one-line xml_marshaller output as the capture tool did: lxml re-parse (an element
/// with empty text becomes `<x/>`) and `pretty_print=True` (2-space indent, leaf text inline,
/// final newline). Panics on text between elements, which the encoder never writes.
pub fn lxml_pretty(wire: &str) -> String {
    let mut tokens: Vec<&str> = Vec::new();
    let mut rest = wire;
    while !rest.is_empty() {
        let end = if rest.starts_with('<') {
            rest.find('>').expect("unclosed tag") + 1
        } else {
            rest.find('<').unwrap_or(rest.len())
        };
        tokens.push(&rest[..end]);
        rest = &rest[end..];
    }
    let mut out = String::new();
    let mut depth = 0usize;
    let mut i = 0;
    let indent = |out: &mut String, depth: usize| out.push_str(&"  ".repeat(depth));
    while i < tokens.len() {
        let t = tokens[i];
        if t.starts_with("</") {
            depth -= 1;
            indent(&mut out, depth);
            out.push_str(t);
            out.push('\n');
            i += 1;
        } else if t.ends_with("/>") {
            indent(&mut out, depth);
            out.push_str(t);
            out.push('\n');
            i += 1;
        } else if t.starts_with('<') {
            indent(&mut out, depth);
            match (tokens.get(i + 1), tokens.get(i + 2)) {
                (Some(close), _) if close.starts_with("</") => {
                    out.push_str(&t[..t.len() - 1]);
                    out.push_str("/>\n");
                    i += 2;
                }
                (Some(text), Some(close)) if !text.starts_with('<') && close.starts_with("</") => {
                    out.push_str(t);
                    out.push_str(text);
                    out.push_str(close);
                    out.push('\n');
                    i += 3;
                }
                _ => {
                    out.push_str(t);
                    out.push('\n');
                    depth += 1;
                    i += 1;
                }
            }
        } else {
            panic!("text {t:?} between elements in encoder output");
        }
    }
    out
}

/// Every xml_marshaller body of a capture file: `(label, body)` with the truncated ones apart.
pub fn marshal_bodies(file: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (n, ex) in exchanges(file).iter().enumerate() {
        for (name, value) in &ex.form {
            if value.starts_with("<marshal>") {
                out.push((
                    format!("{file} #{n} {} form[{name}]", ex.route()),
                    value.clone(),
                ));
            }
        }
        if let Some(r) = &ex.response
            && r.starts_with("<marshal>")
        {
            out.push((format!("{file} #{n} {} response", ex.route()), r.clone()));
        }
    }
    out
}
