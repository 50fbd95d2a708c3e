//! The software release manifest (`software.toml`): parse and validate (pure).
//!
//! The format is specified in `docs/software-release.md`. In short:
//!
//! ```toml
//! [release]
//! name = "hello-web"
//! parameter_model = "radio-enb"  # optional: the master checks requests against this model
//!
//! [[artifact]]
//! url = "server.py"          # relative to the manifest's URL, or absolute
//! sha256 = "…"               # required, 64 hex digits
//! path = "server.py"         # destination in the software dir (default: last URL segment)
//! mode = "0755"              # default "0644"
//!
//! [[build]]
//! name = "compile"
//! command = ["python3", "-m", "compileall", "-q", "."]
//!
//! [instance]
//! default = "instance.toml.in"   # software type → instance profile (a file of the software dir)
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::Deserialize;
use slapos_proto::SoftwareType;

use crate::util::{parse_mode, safe_relative};

/// A manifest that cannot be used. The message names the entry and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid software manifest: {0}")]
pub struct ManifestError(pub String);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    #[serde(default)]
    release: RawRelease,
    #[serde(default)]
    artifact: Vec<RawArtifact>,
    #[serde(default)]
    build: Vec<RawBuild>,
    #[serde(default)]
    instance: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelease {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameter_model: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArtifact {
    url: String,
    sha256: String,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    mode: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBuild {
    #[serde(default)]
    name: Option<String>,
    command: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

/// A validated software release manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoftwareManifest {
    /// Informative name.
    pub name: Option<String>,
    /// Informative description.
    pub description: Option<String>,
    /// Name of a parameter model the master knows (`radio-enb`): reported with the install
    /// state so requests of this release are checked at request time.
    pub parameter_model: Option<String>,
    /// Files to fetch and verify.
    pub artifacts: Vec<Artifact>,
    /// Commands run once, in order, in the build directory.
    pub build: Vec<BuildStep>,
    /// Software type → instance profile path (relative to the software dir).
    pub instance: BTreeMap<SoftwareType, PathBuf>,
}

/// One file to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// Source, as written (resolved against the manifest URL at fetch time).
    pub url: String,
    /// Expected SHA-256, lowercase hex.
    pub sha256: String,
    /// Destination inside the software dir.
    pub path: PathBuf,
    /// File mode.
    pub mode: u32,
}

/// One build command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildStep {
    /// Name for logs.
    pub name: String,
    /// argv (no shell; use `["sh", "-c", "…"]` for one).
    pub command: Vec<String>,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
}

/// Default destination of an artifact: the URL's last path segment (query and fragment cut).
fn default_dest(url: &str) -> &str {
    let no_query = url.split(['?', '#']).next().unwrap_or(url);
    no_query.rsplit('/').next().unwrap_or(no_query)
}

impl SoftwareManifest {
    /// Parse and validate a manifest text.
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| ManifestError(e.to_string()))?;
        let mut seen = BTreeSet::new();
        let mut artifacts = Vec::with_capacity(raw.artifact.len());
        for (i, a) in raw.artifact.into_iter().enumerate() {
            let what = format!("artifact #{} ({})", i + 1, a.url);
            let sha = a.sha256.to_ascii_lowercase();
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ManifestError(format!(
                    "{what}: sha256 {:?} is not 64 hex digits",
                    a.sha256
                )));
            }
            if a.url.is_empty() {
                return Err(ManifestError(format!("{what}: url is empty")));
            }
            let dest = a.path.as_deref().unwrap_or_else(|| default_dest(&a.url));
            let path = safe_relative(dest).map_err(|e| ManifestError(format!("{what}: {e}")))?;
            if !seen.insert(path.clone()) {
                return Err(ManifestError(format!(
                    "{what}: destination `{}` is used twice",
                    path.display()
                )));
            }
            let mode = match a.mode.as_deref() {
                Some(m) => parse_mode(m).map_err(|e| ManifestError(format!("{what}: {e}")))?,
                None => 0o644,
            };
            artifacts.push(Artifact {
                url: a.url,
                sha256: sha,
                path,
                mode,
            });
        }
        let mut build = Vec::with_capacity(raw.build.len());
        for (i, b) in raw.build.into_iter().enumerate() {
            let name = b.name.unwrap_or_else(|| format!("step {}", i + 1));
            if b.command.is_empty() || b.command[0].is_empty() {
                return Err(ManifestError(format!("build `{name}`: command is empty")));
            }
            build.push(BuildStep {
                name,
                command: b.command,
                env: b.env,
            });
        }
        if raw.instance.is_empty() {
            return Err(ManifestError(
                "[instance] names no profile: add e.g. `default = \"instance.toml.in\"`".into(),
            ));
        }
        let mut instance = BTreeMap::new();
        for (ty, path) in raw.instance {
            let t =
                SoftwareType::parse(&ty).map_err(|e| ManifestError(format!("[instance]: {e}")))?;
            let p =
                safe_relative(&path).map_err(|e| ManifestError(format!("[instance] {ty}: {e}")))?;
            instance.insert(t, p);
        }
        Ok(Self {
            name: raw.release.name,
            description: raw.release.description,
            parameter_model: match raw.release.parameter_model {
                Some(m)
                    if m.is_empty()
                        || !m
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
                {
                    return Err(ManifestError(format!(
                        "[release] parameter_model {m:?}: use lowercase letters, digits and '-' \
                         (e.g. \"radio-enb\")"
                    )));
                }
                m => m,
            },
            artifacts,
            build,
            instance,
        })
    }

    /// The profile of a software type, or an error listing the types offered.
    pub fn profile(&self, ty: &SoftwareType) -> Result<&PathBuf, String> {
        self.instance.get(ty).ok_or_else(|| {
            let offered: Vec<&str> = self.instance.keys().map(SoftwareType::as_str).collect();
            format!(
                "software type `{ty}` is not offered by this release (offers: {})",
                offered.join(", ")
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn manifest(body: &str) -> String {
        format!("{body}\n[instance]\ndefault = \"instance.toml.in\"\n")
    }

    #[test]
    fn full_manifest_parses() {
        let t = manifest(&format!(
            r#"
[release]
name = "demo"
[[artifact]]
url = "https://example.invalid/dl/server.py?x=1"
sha256 = "{}"
mode = "0755"
[[artifact]]
url = "lib/util.py"
sha256 = "{H}"
path = "lib/util.py"
[[build]]
command = ["python3", "-m", "compileall", "."]
env = {{ A = "b" }}
"#,
            H.to_uppercase()
        ));
        let m = SoftwareManifest::parse(&t).unwrap();
        assert_eq!(m.name.as_deref(), Some("demo"));
        assert_eq!(m.artifacts[0].path, PathBuf::from("server.py"));
        assert_eq!(m.artifacts[0].sha256, H);
        assert_eq!(m.artifacts[0].mode, 0o755);
        assert_eq!(m.artifacts[1].mode, 0o644);
        assert_eq!(m.build[0].name, "step 1");
        let def = SoftwareType::parse("default").unwrap();
        assert_eq!(m.profile(&def).unwrap(), &PathBuf::from("instance.toml.in"));
        let err = m.profile(&SoftwareType::parse("kvm").unwrap()).unwrap_err();
        assert!(err.contains("offers: default"), "{err}");
    }

    #[test]
    fn bad_entries_are_named() {
        let cases = [
            (
                "[[artifact]]\nurl = \"a\"\nsha256 = \"abc\"".to_owned(),
                "sha256",
            ),
            (
                format!("[[artifact]]\nurl = \"a\"\nsha256 = \"{H}\"\npath = \"../a\""),
                "..",
            ),
            (
                format!(
                    "[[artifact]]\nurl = \"x/a\"\nsha256 = \"{H}\"\n[[artifact]]\nurl = \"y/a\"\nsha256 = \"{H}\""
                ),
                "used twice",
            ),
            ("[[build]]\ncommand = []".to_owned(), "command is empty"),
            (
                format!("[[artifact]]\nurl = \"a\"\nsha256 = \"{H}\"\nmode = \"9\""),
                "octal",
            ),
            (
                "[[artifact]]\nurl = \"a\"\nsha = 1".to_owned(),
                "unknown field",
            ),
        ];
        for (body, needle) in cases {
            let err = SoftwareManifest::parse(&manifest(&body)).unwrap_err();
            assert!(err.to_string().contains(needle), "{body}: {err}");
        }
        let err = SoftwareManifest::parse("[release]\nname = \"x\"").unwrap_err();
        assert!(err.to_string().contains("[instance]"), "{err}");
        let err = SoftwareManifest::parse("[instance]\n\"../x\" = \"a\"").unwrap_err();
        assert!(err.to_string().contains("software type"), "{err}");
    }
}
