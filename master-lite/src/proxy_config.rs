//! slapproxy's configuration file (`slapos proxy start --cfg F`), so that
//! `slapos-master serve --cfg F` can replace it.
//!
//! A small reader of the INI dialect Python's `configparser` accepts in these files: `[section]`
//! headers, `key = value` or `key: value`, whole-line comments (`#`, `;`), indented
//! continuation lines appended with a newline, keys lower-cased. Like `ProxyConfig.mergeConfig`,
//! the `[slapos]` and `[slapproxy]` sections are merged and the first non-empty value of a key
//! wins, in file order. Each `[multimaster/URL]` section names a remote master requests are
//! delegated to (`crate::federation`): `software_release_list` (one URL per line), `key` and
//! `cert` (the identity requests are made as, over https), `computer` and `partition` (requests
//! made as that partition of the remote), and our additions `ca` (the
//! remote's CA) and `api` (`slap`, the default, or `native` for a master-lite). Other sections
//! (`[slapformat]`, …) are read and ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What the SLAP routes need from the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlapConfig {
    /// `[slapos] computer_id`: the default `computer_guid` of requests, and the computer that
    /// `getFullComputerInformation` answers (empty) before it is formatted.
    pub computer_id: Option<String>,
    /// `software_product_list`: product name → release URL, one `name url` per line.
    pub software_products: BTreeMap<String, String>,
}

/// slapproxy's configuration, merged from `[slapos]` and `[slapproxy]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// `host` (default `127.0.0.1`).
    pub host: String,
    /// `port` (default 8080).
    pub port: u16,
    /// `database_uri`: the database file (required).
    pub database: PathBuf,
    /// What the SLAP routes use.
    pub slap: SlapConfig,
    /// The `[multimaster/URL]` sections.
    pub federation: crate::remotes::Federation,
}

/// Why the configuration could not be used; names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("failed to read `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not INI.
    #[error("`{path}` line {line}: {reason}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A value is missing or invalid.
    #[error("`{path}`: {reason}")]
    Value {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Sections in file order, each with its keys (lower-cased) in file order.
pub type Ini = Vec<(String, Vec<(String, String)>)>;

/// Parse INI text like `configparser` (see the module doc). `path` only names errors.
pub fn parse_ini(text: &str, path: &Path) -> Result<Ini, ConfigError> {
    let mut out: Ini = Vec::new();
    let syntax = |line: usize, reason: &str| ConfigError::Syntax {
        path: path.to_owned(),
        line,
        reason: reason.to_owned(),
    };
    for (n, raw) in text.lines().enumerate() {
        let line_no = n + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if raw.starts_with([' ', '\t']) {
            // Continuation of the previous value.
            let last = out
                .last_mut()
                .and_then(|(_, keys)| keys.last_mut())
                .ok_or_else(|| syntax(line_no, "continuation line without a key"))?;
            if !last.1.is_empty() {
                last.1.push('\n');
            }
            last.1.push_str(trimmed);
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix('[') {
            let name = rest
                .strip_suffix(']')
                .ok_or_else(|| syntax(line_no, "section header without `]`"))?;
            out.push((name.to_owned(), Vec::new()));
            continue;
        }
        let at = trimmed
            .find(['=', ':'])
            .ok_or_else(|| syntax(line_no, "expected `key = value`"))?;
        let (key, value) = (trimmed[..at].trim(), trimmed[at + 1..].trim());
        if key.is_empty() {
            return Err(syntax(line_no, "empty key"));
        }
        let (_, keys) = out
            .last_mut()
            .ok_or_else(|| syntax(line_no, "key before any [section]"))?;
        let key = key.to_lowercase();
        match keys.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value.to_owned(),
            None => keys.push((key, value.to_owned())),
        }
    }
    Ok(out)
}

impl ProxyConfig {
    /// Read and interpret the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_ini(&parse_ini(&text, path)?, path)
    }

    /// Interpret parsed sections (`path` only names errors).
    pub fn from_ini(ini: &Ini, path: &Path) -> Result<Self, ConfigError> {
        let mut merged: BTreeMap<&str, &str> = BTreeMap::new();
        for (section, keys) in ini {
            if section == "slapos" || section == "slapproxy" {
                for (k, v) in keys {
                    let slot = merged.entry(k.as_str()).or_insert("");
                    if slot.is_empty() {
                        *slot = v.as_str();
                    }
                }
            }
        }
        let get = |k: &str| merged.get(k).copied().filter(|v| !v.is_empty());
        let value_err = |reason: String| ConfigError::Value {
            path: path.to_owned(),
            reason,
        };
        let database = get("database_uri")
            .ok_or_else(|| value_err("database_uri is required (section [slapproxy])".into()))?;
        let port = match get("port") {
            None => 8080,
            Some(p) => p
                .parse()
                .map_err(|_| value_err(format!("port {p:?} is not a TCP port number")))?,
        };
        let mut software_products = BTreeMap::new();
        for line in get("software_product_list").unwrap_or("").lines() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (name, url) = line.split_once(' ').ok_or_else(|| {
                value_err(format!(
                    "software_product_list line {line:?} is not `name url`"
                ))
            })?;
            software_products.insert(name.to_owned(), url.trim().to_owned());
        }
        let mut federation = crate::remotes::Federation::default();
        for (section, keys) in ini {
            let Some(url) = section.strip_prefix("multimaster/") else {
                continue;
            };
            let remote = (|| {
                let mut r = crate::remotes::Remote::new(url, crate::remotes::Api::Slap)?;
                for (k, v) in keys {
                    r.set(k, v)?;
                }
                r.check()?;
                federation.add(r)
            })();
            remote.map_err(|e| value_err(format!("[{section}]: {e}")))?;
        }
        Ok(ProxyConfig {
            host: get("host").unwrap_or("127.0.0.1").to_owned(),
            port,
            database: PathBuf::from(database),
            slap: SlapConfig {
                computer_id: get("computer_id").map(str::to_owned),
                software_products,
            },
            federation,
        })
    }

    /// `host:port` to bind (IPv6 literals bracketed).
    pub fn listen(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = "\
[slapos]
computer_id = local_computer
master_url = http://127.0.0.1:52601
; a comment
# another

[slapproxy]
host = 127.0.0.1
port: 52600
database_uri = /srv/demo/lib/proxy.db
computer_id = ignored_because_slapos_came_first
software_product_list =
  kvm https://example.com/kvm/software.cfg
  web /srv/web/software.cfg

[slapformat]
partition_amount = 3

[multimaster/https://master.example.com/]
key = /srv/demo/master.key
cert = /srv/demo/master.crt
software_release_list =
  https://example.com/kvm/software.cfg
  https://example.com/web/software.cfg

[multimaster/http://127.0.0.1:52700]
api = native
";

    #[test]
    fn reads_slapproxy_configuration() {
        let c = ProxyConfig::from_ini(&parse_ini(CFG, Path::new("x.cfg")).unwrap(), Path::new("x"))
            .unwrap();
        assert_eq!(c.host, "127.0.0.1");
        assert_eq!(c.port, 52600);
        assert_eq!(c.listen(), "127.0.0.1:52600");
        assert_eq!(c.database, PathBuf::from("/srv/demo/lib/proxy.db"));
        assert_eq!(c.slap.computer_id.as_deref(), Some("local_computer"));
        assert_eq!(
            c.slap.software_products.get("kvm").map(String::as_str),
            Some("https://example.com/kvm/software.cfg")
        );
        assert_eq!(c.slap.software_products.len(), 2);
        let remotes = &c.federation.remotes;
        assert_eq!(remotes.len(), 2);
        assert_eq!(remotes[0].url, "https://master.example.com");
        assert_eq!(remotes[0].api, crate::remotes::Api::Slap);
        assert_eq!(remotes[0].key, Some(PathBuf::from("/srv/demo/master.key")));
        assert!(
            remotes[0]
                .releases
                .contains("https://example.com/web/software.cfg")
        );
        assert_eq!(remotes[0].releases.len(), 2);
        assert_eq!(remotes[1].api, crate::remotes::Api::Native);
        assert!(remotes[1].releases.is_empty());
    }

    #[test]
    fn refuses_bad_multimaster_sections() {
        for (section, part) in [
            ("[multimaster/http://b]\ncert = /c\n", "together"),
            (
                "[multimaster/http://b]\nkey = /k\ncert = /c\n",
                "plain http",
            ),
            ("[multimaster/b]\n", "http://"),
            ("[multimaster/http://b]\ncomputer = c\n", "go together"),
            ("[multimaster/http://b]\ncolour = red\n", "unknown option"),
        ] {
            let text = format!("[slapproxy]\ndatabase_uri = x\n{section}");
            let e = ProxyConfig::from_ini(
                &parse_ini(&text, Path::new("m.cfg")).unwrap(),
                Path::new("m.cfg"),
            )
            .unwrap_err()
            .to_string();
            assert!(
                e.contains("m.cfg") && e.contains("multimaster") && e.contains(part),
                "{e}"
            );
        }
    }

    #[test]
    fn refuses_bad_files_naming_them() {
        let no_db = "[slapos]\ncomputer_id = a\n";
        let e = ProxyConfig::from_ini(
            &parse_ini(no_db, Path::new("a.cfg")).unwrap(),
            Path::new("a.cfg"),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("a.cfg") && e.to_string().contains("database_uri"),
            "{e}"
        );
        let e = parse_ini("key = before section\n", Path::new("b.cfg")).unwrap_err();
        assert!(e.to_string().contains("b.cfg` line 1"), "{e}");
        let e = parse_ini("[s]\njust words\n", Path::new("c.cfg")).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        let bad_port = "[slapproxy]\ndatabase_uri = x\nport = http\n";
        let e = ProxyConfig::from_ini(
            &parse_ini(bad_port, Path::new("d")).unwrap(),
            Path::new("d"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("port"), "{e}");
        let e = ProxyConfig::load(Path::new("/nonexistent/slapos-proxy.cfg")).unwrap_err();
        assert!(
            e.to_string().contains("/nonexistent/slapos-proxy.cfg"),
            "{e}"
        );
    }
}
