//! The recorded SLAP HTTP exchanges (`proto/tests/fixtures/slap-wire/*.txt`, the copy of
//! `../shared/reference/slap-wire/`): blocks separated by a line of 100 `=`, each a header line
//! (`POST /route …`), then indented `Authorization: …`, `form[key] = value` and `RESPONSE: …`
//! lines, whose continuation lines are indented further (6 spaces for a form value, 4 for a
//! response).

/// One captured exchange: header line, `Authorization`, form fields, response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// The block's first line (`POST /loadComputerConfigurationFromXML …`).
    pub header: String,
    /// The `Authorization` header, when recorded.
    pub authorization: Option<String>,
    /// Form fields, in order.
    pub form: Vec<(String, String)>,
    /// The response body.
    pub response: String,
}

/// The exchanges of `text` whose header line starts with `header_prefix`. Panics on a
/// malformed `form[…]` line (the fixtures are the repository's own).
pub fn parse(text: &str, header_prefix: &str) -> Vec<Captured> {
    let mut out = Vec::new();
    for block in text.split(&"=".repeat(100)) {
        let mut lines = block.lines().skip_while(|l| l.is_empty());
        let Some(header) = lines.next() else { continue };
        if !header.starts_with(header_prefix) {
            continue;
        }
        let mut ex = Captured {
            header: header.to_owned(),
            authorization: None,
            form: Vec::new(),
            response: String::new(),
        };
        // (is the response, continuation indent)
        let mut cur: Option<(bool, usize)> = None;
        for line in lines {
            if let Some(rest) = line.strip_prefix("  form[") {
                let (k, v) = rest
                    .split_once("] = ")
                    .unwrap_or_else(|| panic!("malformed form line: {line:?}"));
                ex.form.push((k.to_owned(), v.to_owned()));
                cur = Some((false, 6));
            } else if let Some(v) = line.strip_prefix("  RESPONSE: ") {
                ex.response = v.to_owned();
                cur = Some((true, 4));
            } else if let Some(v) = line.strip_prefix("  Authorization: ") {
                ex.authorization = Some(v.to_owned());
                cur = None;
            } else if let Some((resp, indent)) = cur
                && line.len() >= indent
                && line[..indent].trim().is_empty()
            {
                let target = match (resp, ex.form.last_mut()) {
                    (true, _) => &mut ex.response,
                    (false, Some(f)) => &mut f.1,
                    (false, None) => continue,
                };
                target.push('\n');
                target.push_str(&line[indent..]);
            }
        }
        out.push(ex);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_forms_continuations_and_responses() {
        let sep = "=".repeat(100);
        let text = format!(
            "{sep}\nPOST /a\n  Authorization: x\n  form[k] = one\n      two\n  RESPONSE: r1\n    r2\n\
             {sep}\nGET /b\n  RESPONSE: ok\n"
        );
        let all = parse(&text, "");
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].header, "POST /a");
        assert_eq!(all[0].authorization.as_deref(), Some("x"));
        assert_eq!(all[0].form, [("k".to_owned(), "one\ntwo".to_owned())]);
        assert_eq!(all[0].response, "r1\nr2");
        assert_eq!(parse(&text, "GET")[0].response, "ok");
    }
}
