//! Instance profiles: render (minijinja) and parse the instance manifest (pure).
//!
//! A release's instance profile is a Jinja template (`[instance]` of the software manifest) that
//! renders, from the instance's parameters and the partition's context, into an *instance
//! manifest* (TOML) describing what the partition runs. The format is specified in
//! `docs/software-release.md`:
//!
//! ```toml
//! [[service]]                 # supervised processes
//! name = "web"
//! command = ["python3", "server.py", "--port", "20000"]
//! env = { GREETING = "hi" }
//! [[promise]]                 # health checks (exit 0 = ok)
//! name = "web-answers"
//! command = ["python3", "check.py", "http://127.0.0.1:20000/"]
//! period = 30                 # seconds (default: node's promise_interval)
//! timeout = 5                 # seconds (default: node's promise_timeout)
//! [connection]                # published to the master
//! url = "http://127.0.0.1:20000/"
//! [[file]]                    # written into the partition before services start
//! path = "srv/www/index.html"
//! content = "<h1>hi</h1>"
//! mode = "0644"
//! [[request]]                 # child instances requested as this partition
//! title = "db"
//! software_url = "/srv/sr/db/software.toml"
//! [resources]                 # opaque here; handed to the resource seam (rt)
//! ```
//!
//! Undefined variables are errors when printed or iterated (minijinja `SemiStrict`), so a typo in
//! a profile fails the pass with the template name and line instead of rendering an empty string.
//! The `toml` filter encodes any value as a TOML value (`{{ parameters.title | toml }}`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use minijinja::{Environment, ErrorKind, UndefinedBehavior, Value};
use serde::{Deserialize, Serialize};
use slapos_proto::{InstanceRequest, Params};

use crate::util::{parse_mode, safe_relative};

/// Largest instance profile read (at install, to lint it, and at each render).
pub const MAX_PROFILE_BYTES: u64 = 1 << 20;

/// Rendering or validating an instance profile failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// Template error (names the template and line).
    #[error("failed to render instance profile `{template}`: {message}")]
    Render {
        /// Template name.
        template: String,
        /// minijinja's message.
        message: String,
    },
    /// The template prints a value where it could change the manifest's structure.
    #[error("instance profile `{template}` line {line}: {message}")]
    Lint {
        /// Template name.
        template: String,
        /// 1-based line of the offending `{{`.
        line: usize,
        /// What is wrong and how to write it.
        message: String,
    },
    /// The rendered text is not a valid instance manifest.
    #[error("invalid instance manifest rendered from `{template}`: {message}")]
    Manifest {
        /// Template name.
        template: String,
        /// What is wrong.
        message: String,
    },
}

/// The partition's part of the render context.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionContext {
    /// Partition id (`slappart0`).
    pub id: String,
    /// Absolute path of the partition directory.
    pub path: String,
    /// The IPv4 address services bind to (`127.0.0.1` in unprivileged mode, the partition's
    /// address with `[network] ipv4_prefix`).
    pub ipv4: String,
    /// The partition's IPv6 address (`[network] ipv6_prefix`), `""` without one.
    pub ipv6: String,
    /// Every address of the partition.
    pub addresses: Vec<String>,
    /// Its block of TCP ports.
    pub ports: Vec<u16>,
    /// Absolute path of the partition's certificate (`partition:<computer>/<partition>`, PEM)
    /// when the node talks mTLS to its master, else `""`.
    pub cert: String,
    /// Absolute path of that certificate's private key (mode 0600), else `""`.
    pub key: String,
    /// Absolute path of the master's CA certificate, else `""`.
    pub ca: String,
}

/// Everything a profile can use. Field names are the template's variable names.
#[derive(Debug, Clone, Serialize)]
pub struct RenderContext {
    /// Instance parameters.
    pub parameters: Params,
    /// The partition.
    pub partition: PartitionContext,
    /// Shortcut for `partition.ports`.
    pub ports: Vec<u16>,
    /// Installed release directory.
    pub software_dir: String,
    /// Release URL.
    pub software_url: String,
    /// Software type.
    pub software_type: String,
    /// Instance title.
    pub title: String,
    /// Title of the tree's root.
    pub root_title: String,
    /// Computer id.
    pub computer_id: String,
    /// Master URL.
    pub master_url: String,
    /// Requested state (`started` / `stopped`).
    pub state: String,
    /// Directory of the node's companion programs (`rt-probe`, `enb-sim`, `slapos-radio`).
    pub tools_dir: String,
    /// Connection parameters of the children this instance requested, by title.
    pub children: BTreeMap<String, Params>,
    /// The shared instances this one hosts, as SlapOS profiles read them: each its
    /// parameters with `slave_reference`, `slave_title` and `slap_software_type`.
    pub slave_instance_list: Vec<Params>,
}

/// A supervised service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Name (`[A-Za-z0-9_.-]`, unique in the partition); its log is `var/log/<name>.log`.
    pub name: String,
    /// argv; no shell.
    pub command: Vec<String>,
    /// Extra environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory, relative to the partition (default: the partition).
    #[serde(default)]
    pub cwd: Option<String>,
}

/// A promise: a command whose exit status 0 means "the instance is healthy".
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromiseSpec {
    /// Name (`[A-Za-z0-9_.-]`, unique in the partition).
    pub name: String,
    /// argv; no shell.
    pub command: Vec<String>,
    /// Run period.
    #[serde(default, deserialize_with = "opt_secs")]
    pub period: Option<Duration>,
    /// Time limit of one run.
    #[serde(default, deserialize_with = "opt_secs")]
    pub timeout: Option<Duration>,
}

fn opt_secs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    crate::config::de_secs(d).map(Some)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    path: String,
    content: String,
    #[serde(default)]
    mode: Option<String>,
}

/// A file written into the partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// Path relative to the partition.
    pub path: PathBuf,
    /// Content.
    pub content: String,
    /// Mode.
    pub mode: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    #[serde(default)]
    service: Vec<ServiceSpec>,
    #[serde(default)]
    promise: Vec<PromiseSpec>,
    #[serde(default)]
    connection: Params,
    #[serde(default)]
    file: Vec<RawFile>,
    #[serde(default)]
    request: Vec<InstanceRequest>,
    #[serde(default)]
    resources: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    prepare: Vec<PromiseSpec>,
    #[serde(default)]
    resources_file: Option<String>,
    #[serde(default)]
    connection_file: Option<String>,
    #[serde(default)]
    shared_connection: BTreeMap<String, Params>,
}

/// A validated instance manifest.
#[derive(Debug, Clone)]
pub struct InstanceManifest {
    /// Services.
    pub services: Vec<ServiceSpec>,
    /// Promises.
    pub promises: Vec<PromiseSpec>,
    /// Connection parameters to publish.
    pub connection: Params,
    /// Files to write.
    pub files: Vec<FileSpec>,
    /// Child instances to request.
    pub requests: Vec<InstanceRequest>,
    /// The `[resources]` table, opaque (see `docs/software-release.md` and the rt crate).
    pub resources: serde_json::Map<String, serde_json::Value>,
    /// Commands run on each `started` pass after the files are written and before resources
    /// are applied; one failing fails the pass with its output (request-time validation).
    pub prepare: Vec<PromiseSpec>,
    /// A TOML file (relative to the partition, written by a prepare command) whose
    /// `[resources]` table is the base of the profile; the inline table's keys override it.
    pub resources_file: Option<PathBuf>,
    /// A JSON object file (relative to the partition) merged over `[connection]` after every
    /// promise round and published when it changed (live figures written by a service/promise).
    pub connection_file: Option<PathBuf>,
    /// Connection parameters published for each hosted shared instance, by `slave_reference`.
    pub shared_connection: BTreeMap<String, Params>,
}

fn check_name(kind: &str, name: &str, seen: &mut BTreeSet<String>) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !ok {
        return Err(format!(
            "{kind} name {name:?} must be 1-64 characters of A-Z a-z 0-9 _ . - (not starting with . or -)"
        ));
    }
    if !seen.insert(name.to_owned()) {
        return Err(format!("{kind} name {name:?} is used twice"));
    }
    Ok(())
}

fn check_command(kind: &str, name: &str, cmd: &[String]) -> Result<(), String> {
    if cmd.first().is_none_or(String::is_empty) {
        return Err(format!("{kind} `{name}`: command is empty"));
    }
    Ok(())
}

impl InstanceManifest {
    /// Parse and validate a rendered manifest.
    pub fn parse(text: &str) -> Result<Self, String> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut seen = BTreeSet::new();
        for s in &raw.service {
            check_name("service", &s.name, &mut seen)?;
            check_command("service", &s.name, &s.command)?;
            if let Some(c) = &s.cwd {
                safe_relative(c).map_err(|e| format!("service `{}`: cwd: {e}", s.name))?;
            }
        }
        let mut seen = BTreeSet::new();
        for p in &raw.promise {
            check_name("promise", &p.name, &mut seen)?;
            check_command("promise", &p.name, &p.command)?;
            if p.period.is_some_and(|d| d.is_zero()) || p.timeout.is_some_and(|d| d.is_zero()) {
                return Err(format!(
                    "promise `{}`: period and timeout must be > 0",
                    p.name
                ));
            }
        }
        let mut seen = BTreeSet::new();
        for p in &raw.prepare {
            check_name("prepare", &p.name, &mut seen)?;
            check_command("prepare", &p.name, &p.command)?;
            if p.period.is_some() || p.timeout.is_some_and(|d| d.is_zero()) {
                return Err(format!(
                    "prepare `{}`: no period; timeout must be > 0",
                    p.name
                ));
            }
        }
        let rel = |key: &str, v: &Option<String>| -> Result<Option<PathBuf>, String> {
            v.as_deref()
                .map(|p| safe_relative(p).map_err(|e| format!("{key}: {e}")))
                .transpose()
        };
        let resources_file = rel("resources_file", &raw.resources_file)?;
        let connection_file = rel("connection_file", &raw.connection_file)?;
        let mut files = Vec::with_capacity(raw.file.len());
        let mut seen = BTreeSet::new();
        for f in raw.file {
            let path = safe_relative(&f.path).map_err(|e| format!("file: {e}"))?;
            if !seen.insert(path.clone()) {
                return Err(format!("file `{}` is written twice", path.display()));
            }
            let mode = match f.mode.as_deref() {
                Some(m) => parse_mode(m).map_err(|e| format!("file `{}`: {e}", f.path))?,
                None => 0o644,
            };
            files.push(FileSpec {
                path,
                content: f.content,
                mode,
            });
        }
        let mut titles = BTreeSet::new();
        for r in &raw.request {
            if !titles.insert(r.title.as_str().to_owned()) {
                return Err(format!(
                    "request title {:?} is used twice",
                    r.title.as_str()
                ));
            }
        }
        Ok(Self {
            services: raw.service,
            promises: raw.promise,
            connection: raw.connection,
            files,
            requests: raw.request,
            resources: raw.resources,
            prepare: raw.prepare,
            resources_file,
            connection_file,
            shared_connection: raw.shared_connection,
        })
    }
}

/// Append `s` to `out` as the inside of a TOML basic string: `"` and `\` escaped, every control
/// character and each of `'` `[` `]` `{` `}` `=` `,` `#` written `\uXXXX`. The result can close
/// neither a `"…"` nor a `"""…"""` string, and, printed outside quotes, is one bare token that
/// cannot open a table, an array, a key or a comment.
pub fn toml_escape(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\'' | '[' | ']' | '{' | '}' | '=' | ',' | '#' => {
                out.push_str(&format!("\\u{:04X}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
}

fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    toml_escape(&mut out, s);
    out.push('"');
    out
}

/// Encode a JSON value as a TOML value (inline form).
fn toml_value(v: &serde_json::Value) -> Result<String, String> {
    use serde_json::Value as J;
    Ok(match v {
        J::Null => return Err("null has no TOML form".into()),
        J::Bool(b) => b.to_string(),
        J::Number(n) => n.to_string(),
        J::String(s) => toml_string(s),
        J::Array(a) => {
            let items: Result<Vec<_>, _> = a.iter().map(toml_value).collect();
            format!("[{}]", items?.join(", "))
        }
        J::Object(o) => {
            let mut items = Vec::with_capacity(o.len());
            for (k, v) in o {
                items.push(format!("{} = {}", toml_string(k), toml_value(v)?));
            }
            format!("{{ {} }}", items.join(", "))
        }
    })
}

/// What the `toml` filter returns: an encoded TOML value, the only kind of value the
/// formatter prints as it is.
#[derive(Debug)]
struct TomlEncoded(String);

impl minijinja::value::Object for TomlEncoded {
    fn repr(self: &std::sync::Arc<Self>) -> minijinja::value::ObjectRepr {
        minijinja::value::ObjectRepr::Plain
    }

    fn render(self: &std::sync::Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn toml_filter(v: Value) -> Result<Value, minijinja::Error> {
    let j = match v.downcast_object_ref::<TomlEncoded>() {
        // Encoding twice makes a string of the encoded text.
        Some(t) => serde_json::Value::String(t.0.clone()),
        None => serde_json::to_value(&v)
            .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))?,
    };
    let text = toml_value(&j).map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e))?;
    Ok(Value::from_object(TomlEncoded(text)))
}

/// HTML escaping (`e`, `escape`): `& < > " ' /` as entities, as minijinja's. The result is a plain string: in
/// the manifest it is TOML-escaped like any other (minijinja's own `escape` marks it safe).
fn html_filter(v: Value) -> String {
    let s = v.to_string();
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            '/' => out.push_str("&#x2f;"),
            c => out.push(c),
        }
    }
    out
}

/// How every `{{ … }}` is printed: a `toml` filter result as it is; a number or a boolean as
/// itself (`true`/`false`); anything else (strings, lists, maps, none, minijinja's "safe" strings included) as
/// its text [`toml_escape`]d. So no parameter, whatever it holds and whichever filters it went
/// through, can add a key, a table or an array element to the manifest.
fn toml_formatter(
    out: &mut minijinja::Output,
    _: &mut minijinja::State,
    v: &Value,
) -> Result<(), minijinja::Error> {
    use minijinja::value::ValueKind;
    let text = if let Some(t) = v.downcast_object_ref::<TomlEncoded>() {
        t.0.clone()
    } else {
        match v.kind() {
            ValueKind::Number => v.to_string(),
            // minijinja prints `True`/`False`; TOML wants lowercase.
            ValueKind::Bool => v.is_true().to_string(),
            ValueKind::Undefined => String::new(),
            _ => {
                let mut e = String::new();
                match v.as_str() {
                    Some(s) => toml_escape(&mut e, s),
                    None => toml_escape(&mut e, &v.to_string()),
                }
                e
            }
        }
    };
    out.write_str(&text).map_err(minijinja::Error::from)
}

/// Where a `{{ … }}` sits in the TOML text around it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Bare,
    Basic,
    MultiBasic,
    Literal,
    MultiLiteral,
    Comment,
}

/// The end of the tag opened at `start` (the index after its closer), skipping the string
/// literals of the expression; `None` when it is not closed.
fn tag_end(src: &[u8], start: usize, close: &[u8]) -> Option<usize> {
    let mut i = start + 2;
    let mut quote = None;
    while i < src.len() {
        let c = src[i];
        match quote {
            Some(_) if c == b'\\' => i += 1,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == b'"' || c == b'\'' => quote = Some(c),
            None if src[i..].starts_with(close) => return Some(i + close.len()),
            None => {}
        }
        i += 1;
    }
    None
}

/// Why the expression printed outside quotes does not end with the `toml` filter, if it
/// does not: the text after its last top-level `|` must be `toml`, and a top-level `if` must be
/// parenthesised (`x if c else y | toml` filters `y` only).
fn toml_filtered(expr: &str) -> Result<(), &'static str> {
    let b = expr.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let (mut depth, mut quote, mut last_pipe) = (0i32, None, None);
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match quote {
            Some(_) if c == b'\\' => i += 1,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                b'"' | b'\'' => quote = Some(c),
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' => depth -= 1,
                b'|' if depth == 0 => last_pipe = Some(i),
                b'i' if depth == 0
                    && b[i..].starts_with(b"if")
                    && (i == 0 || !word(b[i - 1]))
                    && b.get(i + 2).is_none_or(|n| !word(*n)) =>
                {
                    return Err(
                        "a conditional must be parenthesised: `{{ (a if c else b) | toml }}`",
                    );
                }
                _ => {}
            },
        }
        i += 1;
    }
    match last_pipe {
        Some(p) if expr[p + 1..].trim() == "toml" => Ok(()),
        _ => {
            Err("a value outside a quoted string must end with the `toml` filter: `{{ x | toml }}`")
        }
    }
}

/// Refuse the template constructs that would print a value where it can change the
/// manifest's structure (checked at install and before every render; see
/// `docs/software-release.md`):
///
/// * outside a TOML string, every `{{ … }}` must end with the `toml` filter;
/// * inside a basic string (`"…"`, `"""…"""`), a `{{ … }}` must not end with it (its quotes
///   would close the string);
/// * `{{ … }}` inside a literal string (`'…'` or its multi-line form) is refused: use a basic
///   string;
/// * `{% … %}` and `{# … #}` are skipped, `{% raw %}` content is text; in a `#` comment
///   anything goes.
pub fn lint(name: &str, source: &str) -> Result<(), ProfileError> {
    let src = source.as_bytes();
    let err = |at: usize, message: String| ProfileError::Lint {
        template: name.to_owned(),
        line: source[..at].bytes().filter(|b| *b == b'\n').count() + 1,
        message,
    };
    let (mut ctx, mut i, mut raw) = (Ctx::Bare, 0usize, false);
    while i < src.len() {
        let rest = &src[i..];
        if rest.starts_with(b"{%") {
            let end = tag_end(src, i, b"%}").ok_or_else(|| err(i, "unclosed `{%`".into()))?;
            let inner = source[i + 2..end - 2]
                .trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
            match (raw, inner.split_whitespace().next().unwrap_or("")) {
                (false, "raw") => raw = true,
                (true, "endraw") => raw = false,
                _ => {}
            }
            i = end;
            continue;
        }
        if !raw && rest.starts_with(b"{#") {
            let end = source[i..]
                .find("#}")
                .ok_or_else(|| err(i, "unclosed `{#`".into()))?;
            i += end + 2;
            continue;
        }
        if !raw && rest.starts_with(b"{{") {
            let end = tag_end(src, i, b"}}").ok_or_else(|| err(i, "unclosed `{{`".into()))?;
            let expr = source[i + 2..end - 2]
                .trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
            let problem = match ctx {
                Ctx::Bare => toml_filtered(expr).err().map(str::to_owned),
                Ctx::Basic | Ctx::MultiBasic => toml_filtered(expr).is_ok().then(|| {
                    "the `toml` filter inside a quoted string makes a quoted value that closes \
                     the string: drop the quotes or the filter"
                        .to_owned()
                }),
                Ctx::Literal | Ctx::MultiLiteral => Some(
                    "`{{ … }}` inside a literal string ('…') is not escaped: use a basic \
                     string (\"…\")"
                        .to_owned(),
                ),
                Ctx::Comment => None,
            };
            if let Some(p) = problem {
                return Err(err(i, format!("`{{{{ {expr} }}}}`: {p}")));
            }
            i = end;
            continue;
        }
        let quotes = |q: u8| rest.iter().take_while(|c| **c == q).count();
        let mut step = 1;
        ctx = match (ctx, src[i]) {
            (Ctx::Bare, b'"') if quotes(b'"') >= 3 => {
                step = 3;
                Ctx::MultiBasic
            }
            (Ctx::Bare, b'"') => Ctx::Basic,
            (Ctx::Bare, b'\'') if quotes(b'\'') >= 3 => {
                step = 3;
                Ctx::MultiLiteral
            }
            (Ctx::Bare, b'\'') => Ctx::Literal,
            (Ctx::Bare, b'#') => Ctx::Comment,
            (Ctx::Basic | Ctx::MultiBasic, b'\\') => {
                step = 2;
                ctx
            }
            (Ctx::Basic, b'"') | (Ctx::Literal, b'\'') | (Ctx::Comment, b'\n') => Ctx::Bare,
            // A basic or literal string cannot span lines: the text is invalid TOML anyway.
            (Ctx::Basic | Ctx::Literal, b'\n') => Ctx::Bare,
            (Ctx::MultiBasic, b'"') if quotes(b'"') >= 3 => {
                step = quotes(b'"').min(5);
                Ctx::Bare
            }
            (Ctx::MultiLiteral, b'\'') if quotes(b'\'') >= 3 => {
                step = quotes(b'\'').min(5);
                Ctx::Bare
            }
            (ctx, _) => ctx,
        };
        i += step;
    }
    Ok(())
}

/// Render `source` (named `name` in errors) with `ctx`, after [`lint`]. Every printed value
/// goes through the TOML formatter (`toml_formatter`), so a parameter cannot inject into the
/// manifest even where the lint would let a construct through.
pub fn render(name: &str, source: &str, ctx: &RenderContext) -> Result<String, ProfileError> {
    lint(name, source)?;
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    env.set_formatter(toml_formatter);
    env.add_filter("toml", toml_filter);
    env.add_filter("e", html_filter);
    env.add_filter("escape", html_filter);
    // `safe` would only mislead: the formatter escapes every string anyway.
    env.remove_filter("safe");
    env.render_named_str(name, source, Value::from(minijinja::value::Serde(ctx)))
        .map_err(|e| ProfileError::Render {
            template: name.to_owned(),
            message: e.to_string(),
        })
}

/// Read the profile `path` of `software_dir`, render it and parse the result.
pub fn render_file(
    software_dir: &Path,
    path: &Path,
    ctx: &RenderContext,
) -> Result<(String, InstanceManifest), ProfileError> {
    let name = path.display().to_string();
    // A regular file of the release, never a link a build step planted.
    let fs = crate::host::partition_fs::PartitionFs::new(software_dir, None);
    let source = fs
        .read(path, MAX_PROFILE_BYTES)
        .map_err(|e| e.to_string())
        .and_then(|b| String::from_utf8(b).map_err(|_| "not UTF-8".to_owned()))
        .map_err(|message| ProfileError::Render {
            template: name.clone(),
            message,
        })?;
    let text = render(&name, &source, ctx)?;
    let manifest = InstanceManifest::parse(&text).map_err(|message| ProfileError::Manifest {
        template: name,
        message,
    })?;
    Ok((text, manifest))
}

#[cfg(test)]
pub(crate) fn test_context() -> RenderContext {
    let mut parameters = Params::new();
    parameters.insert("title".into(), "Hello \"edge\"".into());
    parameters.insert("healthy".into(), false.into());
    RenderContext {
        parameters,
        partition: PartitionContext {
            id: "slappart0".into(),
            path: "/srv/inst/slappart0".into(),
            ipv4: "127.0.0.1".into(),
            ipv6: String::new(),
            addresses: vec!["127.0.0.1".into()],
            ports: vec![20000, 20001],
            cert: "/srv/inst/slappart0/.slapos/partition.crt".into(),
            key: "/srv/inst/slappart0/.slapos/partition.key".into(),
            ca: "/srv/inst/slappart0/.slapos/master-ca.pem".into(),
        },
        ports: vec![20000, 20001],
        software_dir: "/srv/soft/abc".into(),
        software_url: "/srv/sr/software.toml".into(),
        software_type: "default".into(),
        title: "web".into(),
        root_title: "web".into(),
        computer_id: "COMP-1".into(),
        master_url: "http://127.0.0.1:1".into(),
        state: "started".into(),
        tools_dir: "/opt/slapos/bin".into(),
        children: BTreeMap::new(),
        slave_instance_list: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROFILE: &str = r#"
[[service]]
name = "web"
command = ["python3", "{{ software_dir }}/server.py", "--port", "{{ ports[0] }}"]
env = { TITLE = {{ parameters.title | toml }} }

[[promise]]
name = "web-answers"
command = ["true"]
period = 2.5

[connection]
url = "http://{{ partition.ipv4 }}:{{ ports[0] }}/"
healthy = {{ parameters.healthy | toml }}

[[file]]
path = "srv/www/index.html"
content = {{ ("<h1>" ~ parameters.title ~ "</h1>") | toml }}

{% if children.db is defined %}
[[request]]
title = "db-user"
software_url = "/srv/sr/x.toml"
{% endif %}

[resources]
cpus = 1
policy = "fifo"
priority = 80
"#;

    #[test]
    fn partition_certificate_paths_are_in_the_context() {
        let t =
            "[connection]\ntls = \"{{ partition.cert }} {{ partition.key }} {{ partition.ca }}\"\n";
        let m = InstanceManifest::parse(&render("p", t, &test_context()).unwrap()).unwrap();
        assert_eq!(
            m.connection["tls"],
            "/srv/inst/slappart0/.slapos/partition.crt /srv/inst/slappart0/.slapos/partition.key \
             /srv/inst/slappart0/.slapos/master-ca.pem"
        );
    }

    #[test]
    fn renders_a_full_profile() {
        let ctx = test_context();
        let text = render("instance.toml.in", PROFILE, &ctx).unwrap();
        let m = InstanceManifest::parse(&text).unwrap();
        assert_eq!(
            m.services[0].command,
            ["python3", "/srv/soft/abc/server.py", "--port", "20000"]
        );
        assert_eq!(m.services[0].env["TITLE"], "Hello \"edge\"");
        assert_eq!(m.promises[0].period, Some(Duration::from_millis(2500)));
        assert_eq!(m.connection["url"], "http://127.0.0.1:20000/");
        assert_eq!(m.connection["healthy"], false);
        assert_eq!(m.files[0].content, "<h1>Hello \"edge\"</h1>");
        assert_eq!(m.files[0].mode, 0o644);
        assert!(m.requests.is_empty());
        assert_eq!(m.resources["policy"], "fifo");

        let mut ctx = test_context();
        ctx.children.insert("db".into(), Params::new());
        let m = InstanceManifest::parse(&render("p", PROFILE, &ctx).unwrap()).unwrap();
        assert_eq!(m.requests[0].title.as_str(), "db-user");
        assert_eq!(m.requests[0].software_type.as_str(), "default");
    }

    #[test]
    fn undefined_variables_fail_with_the_line() {
        let err = render(
            "p.toml.in",
            "a = 1\nb = \"{{ parameters.nope }}\"\n",
            &test_context(),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("p.toml.in:2"), "{msg}");
        assert!(msg.contains("undefined"), "{msg}");
    }

    #[test]
    fn toml_filter_encodes_nested_values() {
        let v = serde_json::json!({"a b": [1, "x\n", true], "c": {"d": 1.5}});
        let enc = toml_value(&v).unwrap();
        let back: toml::Table = toml::from_str(&format!("v = {enc}")).unwrap();
        let back = serde_json::to_value(&back["v"]).unwrap();
        assert_eq!(back, v);
        assert!(toml_value(&serde_json::Value::Null).is_err());
    }

    #[test]
    fn lint_refuses_unfiltered_and_misplaced_values_with_the_line() {
        let bad = [
            (
                "period = {{ parameters.p }}\n",
                1,
                "must end with the `toml` filter",
            ),
            (
                "a = 1\nperiod = {{ parameters.p | int }}\n",
                2,
                "`toml` filter",
            ),
            (
                "x = {{ parameters.p | toml ~ \"a\" }}\n",
                1,
                "`toml` filter",
            ),
            ("x = {{ a if c else b | toml }}\n", 1, "parenthesised"),
            (
                "x = \"{{ parameters.p | toml }}\"\n",
                1,
                "closes the string",
            ),
            (
                "x = \"\"\"\n{{ parameters.p | toml }}\"\"\"\n",
                2,
                "closes the string",
            ),
            ("x = '{{ parameters.p }}'\n", 1, "literal string"),
            ("x = '''\n\n{{ p }}'''\n", 3, "literal string"),
            ("x = \"a\\\"{{ p }}\" {{ p }}\n", 1, "`toml` filter"),
            ("{{ p ", 1, "unclosed"),
        ];
        for (src, line, needle) in bad {
            match lint("p.toml.in", src) {
                Err(ProfileError::Lint {
                    template,
                    line: l,
                    message,
                }) => {
                    assert_eq!(
                        (template.as_str(), l),
                        ("p.toml.in", line),
                        "{src:?}: {message}"
                    );
                    assert!(message.contains(needle), "{src:?}: {message}");
                }
                other => panic!("{src:?}: {other:?}"),
            }
        }
        let good = [
            "period = {{ parameters.p | default(10) | float | toml }}\n",
            "x = {{ (a if c else b) | toml }}\n",
            "x = \"{{ parameters.p }}\" # {{ parameters.p }}\n",
            "x = \"\"\"\n{{ p }} \" '' {{ q }}\n\"\"\"\ny = {{ p | toml }}\n",
            "{% set s = \"}} {{ x\" %}{# {{ x }} #}\nx = \"{{ s }}\"\n",
            "{% raw %}x = \"{{ not a tag }}\"{% endraw %}\n",
            "{%- if a %}x = {{ a | toml }}{% endif -%}\n",
            "x = 'lit'\ny = \"{{ p }}\"\n",
        ];
        for src in good {
            lint("p", src).unwrap_or_else(|e| panic!("{src:?}: {e}"));
        }
    }

    #[test]
    fn printed_values_cannot_leave_their_string_or_add_structure() {
        let mut ctx = test_context();
        let hostile = "10\n[[service]]\nname = \"evil\"\ncommand = [\"touch\", \"/tmp/pwned\"]\n\
                       ' ] } = , # \\ \"\"\" \u{0} \u{1b}[31m \u{7f} \u{85}";
        ctx.parameters.insert("p".into(), hostile.into());
        // Inside basic strings: exactly the value comes back.
        for src in [
            "[connection]\nv = \"{{ parameters.p }}\"\n",
            "[connection]\nv = \"\"\"{{ parameters.p }}\"\"\"\n",
            "[connection]\nv = {{ parameters.p | toml }}\n",
        ] {
            let text = render("p", src, &ctx).unwrap();
            let m = InstanceManifest::parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(m.connection["v"], hostile, "{src}");
            assert!(m.services.is_empty());
        }
        // Outside quotes, without the lint (the formatter alone): one bare token, a parse
        // error, never a service.
        let mut env = Environment::new();
        env.set_formatter(toml_formatter);
        let text = env
            .render_str("period = {{ p }}\n", minijinja::context! { p => hostile })
            .unwrap();
        assert!(!text.contains("[[") && text.lines().count() == 1, "{text}");
        assert!(InstanceManifest::parse(&text).is_err(), "{text}");
        // Numbers and booleans print as themselves; a list or a map as escaped text.
        let text = env
            .render_str(
                "a = {{ n }}\nb = {{ t }}\nc = \"{{ l }}\"\n",
                minijinja::context! { n => 2.5, t => true, l => vec!["x\"", "]"] },
            )
            .unwrap();
        let v: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(v["a"].as_float(), Some(2.5));
        assert_eq!(v["b"].as_bool(), Some(true));
        assert_eq!(v["c"].as_str(), Some(r#"['x"', ']']"#));
        // "safe" is gone; `e` is HTML escaping whose result is TOML-escaped like any string.
        let mut ctx = test_context();
        ctx.parameters.insert("h".into(), "<b>\"x\"</b>".into());
        assert!(render("p", "v = \"{{ parameters.h | safe }}\"\n", &ctx).is_err());
        let text = render("p", "[connection]\nv = \"{{ parameters.h | e }}\"\n", &ctx).unwrap();
        let m = InstanceManifest::parse(&text).unwrap();
        assert_eq!(m.connection["v"], "&lt;b&gt;&quot;x&quot;&lt;&#x2f;b&gt;");
        // The toml filter twice encodes the encoded text as a string.
        let text = render("p", "[connection]\nv = {{ [1] | toml | toml }}\n", &ctx).unwrap();
        assert_eq!(
            InstanceManifest::parse(&text).unwrap().connection["v"],
            "[1]"
        );
    }

    #[test]
    fn invalid_manifests_are_refused() {
        let cases = [
            (
                "[[service]]\nname = \"a\"\ncommand = []",
                "command is empty",
            ),
            (
                "[[service]]\nname = \"a\"\ncommand = [\"x\"]\n[[service]]\nname = \"a\"\ncommand = [\"y\"]",
                "used twice",
            ),
            (
                "[[service]]\nname = \"../a\"\ncommand = [\"x\"]",
                "service name",
            ),
            (
                "[[file]]\npath = \"../../etc/passwd\"\ncontent = \"\"",
                "..",
            ),
            (
                "[[file]]\npath = \".slapos/run/x\"\ncontent = \"\"",
                "reserved",
            ),
            (
                "[[promise]]\nname = \"p\"\ncommand = [\"x\"]\ntimeout = 0",
                "must be > 0",
            ),
            (
                "[[request]]\ntitle = \"../x\"\nsoftware_url = \"/a\"",
                "instance title",
            ),
            ("[servce]\n", "unknown field"),
        ];
        for (text, needle) in cases {
            let err = InstanceManifest::parse(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}

/// Every example's instance profile, requested with hostile parameter values: rendering either
/// fails cleanly or produces a manifest with exactly the structure of a benign request (same
/// services, promises, prepare steps, files, requests, keys and argv lengths), and the values
/// that are published as they are come back exactly.
#[cfg(test)]
mod hostile_examples {
    use super::*;

    fn context(parameters: Params) -> RenderContext {
        RenderContext {
            parameters,
            ..test_context()
        }
    }

    /// What a manifest runs and publishes, to compare with the benign one.
    fn shape(m: &InstanceManifest) -> String {
        let argv = |name: &str, cmd: &[String]| format!("{name}:{}", cmd.len());
        let mut parts: Vec<String> = Vec::new();
        parts.extend(
            m.services
                .iter()
                .map(|s| format!("service {}", argv(&s.name, &s.command))),
        );
        parts.extend(
            m.services
                .iter()
                .map(|s| format!("env {:?}", s.env.keys().collect::<Vec<_>>())),
        );
        parts.extend(
            m.promises
                .iter()
                .map(|p| format!("promise {}", argv(&p.name, &p.command))),
        );
        parts.extend(
            m.prepare
                .iter()
                .map(|p| format!("prepare {}", argv(&p.name, &p.command))),
        );
        parts.extend(
            m.files
                .iter()
                .map(|f| format!("file {} {:o}", f.path.display(), f.mode)),
        );
        parts.extend(
            m.requests
                .iter()
                .map(|r| format!("request {}", r.title.as_str())),
        );
        parts.push(format!(
            "connection {:?}",
            m.connection.keys().collect::<Vec<_>>()
        ));
        parts.push(format!(
            "resources {:?}",
            m.resources.keys().collect::<Vec<_>>()
        ));
        parts.push(format!("{:?} {:?}", m.connection_file, m.resources_file));
        parts.join("\n")
    }

    const MARK: &str = "PWNED";

    fn hostile_values() -> Vec<serde_json::Value> {
        let s = |v: String| serde_json::Value::String(v);
        vec![
            s(format!(
                "10\n[[service]]\nname = \"{MARK}\"\ncommand = [\"touch\", \"/tmp/{MARK}\"]\n"
            )),
            // The whole attack: the keys that follow the value land in a promise of its own.
            s(format!(
                "10\n[[service]]\nname = \"{MARK}\"\ncommand = [\"touch\", \"/tmp/{MARK}\"]\n\
                 [[promise]]\nname = \"{MARK}-2\"\ncommand = [\"true\"]\n"
            )),
            s(format!(
                "x\"]\n[[service]]\nname = \"{MARK}\"\ncommand = [\"touch\"]\n\
                 [[promise]]\nname = \"{MARK}-2\"\ncommand = [\"x"
            )),
            s(format!(
                "\" ]\n[[promise]]\nname = \"{MARK}\"\ncommand = [\"true\"]\n"
            )),
            s(format!("'{MARK}''' ''' \"\"\"\n[[service]]")),
            s(format!("]]}} {MARK} = 1, x = [ # comment")),
            s(format!("{MARK}\u{0}nul\u{1b}[31m\u{7f}\r\n")),
            s(format!("{}{MARK}", "a".repeat(100_000))),
            s(format!("\\\" , \"{MARK}\" ]")),
            serde_json::json!({ "k": format!("{MARK}\n[[service]]"), "[x]": [1, "]"] }),
            serde_json::json!([format!("\"{MARK}\"], [\"x"), 1]),
            serde_json::json!(1e300),
            serde_json::json!(true),
        ]
    }

    /// The parameter names a profile reads (`parameters.x`, and `p.x` after `set p = parameters`).
    fn parameter_names(source: &str) -> Vec<String> {
        let mut names = Vec::new();
        for prefix in ["parameters.", "p."] {
            let mut rest = source;
            while let Some(i) = rest.find(prefix) {
                let before = rest[..i].chars().last();
                rest = &rest[i + prefix.len()..];
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.') {
                    continue;
                }
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        names
    }

    /// A host's profile: hostile `slave_reference`s and shared instance parameters change
    /// neither its shape nor the references it publishes for. Returns the renders checked.
    fn hostile_shared(name: &str, source: &str) -> usize {
        let with = |reference: &str, v: serde_json::Value| {
            let mut ctx = context(Params::new());
            ctx.slave_instance_list = vec![Params::from_iter([
                ("slave_reference".to_owned(), serde_json::json!(reference)),
                ("title".to_owned(), v.clone()),
                ("message".to_owned(), v),
            ])];
            let text = render(name, source, &ctx).ok()?;
            InstanceManifest::parse(&text).ok()
        };
        let benign = with("_a", serde_json::json!("1")).expect("renders a shared instance");
        let mut checked = 0;
        for value in hostile_values() {
            let reference = match &value {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let Some(m) = with(&reference, value.clone()) else {
                continue;
            };
            assert_eq!(
                shape(&m),
                shape(&benign),
                "{name}: shared instance {value:.80} changed the manifest"
            );
            assert_eq!(
                m.shared_connection.keys().collect::<Vec<_>>(),
                vec![&reference],
                "{name}: published for another reference"
            );
            checked += 1;
        }
        checked
    }

    #[test]
    fn every_example_survives_hostile_parameters() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut checked = 0;
        for e in std::fs::read_dir(&examples).unwrap() {
            let profile = e.unwrap().path().join("instance.toml.in");
            let Ok(source) = std::fs::read_to_string(&profile) else {
                continue;
            };
            let name = profile.display().to_string();
            lint(&name, &source).unwrap_or_else(|e| panic!("{e}"));
            let shape_with = |params: Params| {
                let text = render(&name, &source, &context(params)).ok()?;
                Some(shape(&InstanceManifest::parse(&text).ok()?))
            };
            let names = parameter_names(&source);
            let hosts = source.contains("slave_instance_list");
            if hosts {
                checked += hostile_shared(&name, &source);
            }
            assert!(!names.is_empty() || hosts, "{name}: no parameter found");
            for param in &names {
                // A benign value of the parameter (an optional one may add its key).
                let benign = [serde_json::json!("1"), serde_json::json!(1)]
                    .into_iter()
                    .find_map(|v| shape_with(Params::from_iter([(param.clone(), v)])))
                    .unwrap_or_else(|| {
                        shape_with(Params::new()).expect("renders without parameters")
                    });
                for value in hostile_values() {
                    let mut params = Params::new();
                    params.insert(param.clone(), value.clone());
                    let Ok(text) = render(&name, &source, &context(params)) else {
                        continue; // a clean failure: nothing runs
                    };
                    let Ok(m) = InstanceManifest::parse(&text) else {
                        continue;
                    };
                    assert_eq!(
                        shape(&m),
                        benign,
                        "{name}: parameter {param} = {value:.80} changed the manifest:\n{text:.2000}"
                    );
                    let names = m.services.iter().map(|s| &s.name);
                    let names = names.chain(m.promises.iter().map(|p| &p.name));
                    assert!(
                        !names.into_iter().any(|n| n.contains(MARK)),
                        "{name}: injected"
                    );
                    checked += 1;
                }
            }
            // The values published as they are come back exactly.
            if name.contains("hello-web") {
                for value in hostile_values().into_iter().filter(|v| v.is_string()) {
                    let mut params = Params::new();
                    params.insert("title".into(), value.clone());
                    let text = render(&name, &source, &context(params)).unwrap();
                    let m = InstanceManifest::parse(&text).unwrap();
                    assert_eq!(m.connection["title"], value);
                    assert!(
                        !m.files[0].content.contains(MARK)
                            || m.files[0].content.starts_with("<!doctype")
                    );
                }
            }
        }
        assert!(
            checked > 100,
            "only {checked} hostile renders produced a manifest"
        );
    }
}
