//! Validated identifiers.
//!
//! Several ids become file names, directory names, cgroup names or unix user names on a node
//! (a partition id is a directory under the instance root; a software URL's hash is a directory
//! under the software root). They are therefore validated **once**, when they enter the system
//! (deserialisation or `parse`), and carried as newtypes afterwards, in the manner of
//! Bottlerocket's datastore `Key`. Nothing downstream needs to re-check them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Why an identifier was refused. The message names the kind of id, the value and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {rule}")]
pub struct IdError {
    /// Which kind of identifier (`computer id`, `partition id`, …).
    pub kind: &'static str,
    /// The refused value, truncated to 80 characters.
    pub value: String,
    /// The rule it broke.
    pub rule: &'static str,
}

impl IdError {
    fn new(kind: &'static str, value: &str, rule: &'static str) -> Self {
        let value = value.chars().take(80).collect();
        Self { kind, value, rule }
    }
}

/// A "name" id: `[A-Za-z0-9_.-]{1,64}`, not starting with `.` or `-`.
///
/// Safe as a single path component, a cgroup name and part of a unix user name.
fn check_name(kind: &'static str, s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::new(kind, s, "must not be empty"));
    }
    if s.len() > 64 {
        return Err(IdError::new(kind, s, "must be at most 64 bytes"));
    }
    if s.starts_with('.') || s.starts_with('-') {
        return Err(IdError::new(kind, s, "must not start with '.' or '-'"));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(IdError::new(
            kind,
            s,
            "allowed characters are A-Z a-z 0-9 _ . -",
        ));
    }
    Ok(())
}

/// Free text that is never used as a path: 1..=`max` bytes, no control characters,
/// no leading or trailing white space.
fn check_text(kind: &'static str, s: &str, max: usize) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::new(kind, s, "must not be empty"));
    }
    if s.len() > max {
        return Err(IdError::new(kind, s, "is too long"));
    }
    if s.chars().any(char::is_control) {
        return Err(IdError::new(kind, s, "must not contain control characters"));
    }
    if s.trim() != s {
        return Err(IdError::new(
            kind,
            s,
            "must not start or end with white space",
        ));
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Kind name used in error messages.
            pub const KIND: &'static str = $kind;

            /// Validate and wrap.
            pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                let check: fn(&str) -> Result<(), IdError> = $check;
                check(&s)?;
                Ok(Self(s))
            }

            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id!(
    /// A computer (node) reference, e.g. `COMP-1234` or `local_computer`.
    ComputerId,
    "computer id",
    |s| check_name("computer id", s)
);

string_id!(
    /// A computer partition reference, e.g. `slappart0`. Becomes a directory name on the node.
    PartitionId,
    "partition id",
    |s| check_name("partition id", s)
);

string_id!(
    /// A software type, e.g. `default`, `kvm`, `enb`.
    SoftwareType,
    "software type",
    |s| check_name("software type", s)
);

string_id!(
    /// An instance title as the user gives it (`My Service 1`). Free text, but never path-like:
    /// no `/`, no `\`, and not `.` or `..`, so it can never be mistaken for a path anywhere.
    InstanceTitle,
    "instance title",
    |s| {
        check_text("instance title", s, 255)?;
        if s.contains('/') || s.contains('\\') {
            return Err(IdError::new("instance title", s, "must not contain '/' or '\\'"));
        }
        if s == "." || s == ".." {
            return Err(IdError::new("instance title", s, "must not be '.' or '..'"));
        }
        Ok(())
    }
);

string_id!(
    /// A software release URL. To the master it is an identifier: any free text (1 to 2048
    /// bytes, no control characters, no leading or trailing white space), as a SlapOS master
    /// takes any URL string. Only a node fetches it, and only in the forms
    /// [`SoftwareUrl::is_fetchable`] accepts; it never becomes a path as written (a node
    /// installs a release under [`SoftwareUrl::hash`]).
    SoftwareUrl,
    "software url",
    |s| check_text("software url", s, 2048)
);

string_id!(
    /// A label key on a computer (`arch`, `cpu_count`, `rt_cpus`, `region`).
    LabelKey,
    "label key",
    |s| check_name("label key", s)
);

impl SoftwareType {
    /// The software type used when a request names none.
    pub fn default_type() -> Self {
        Self("default".to_owned())
    }
}

impl Default for SoftwareType {
    fn default() -> Self {
        Self::default_type()
    }
}

/// The forms of software URL a node fetches, for messages.
pub const FETCHABLE_URL_FORMS: &str = "http://, https://, file:// or an absolute path";

/// Whether a node can fetch `url` as written: `http://`, `https://`, `file://` or an absolute
/// path ([`FETCHABLE_URL_FORMS`]). Anything else is not fetched, and never taken as a path
/// relative to anything.
pub fn is_fetchable_url(url: &str) -> bool {
    url.starts_with("http://")
        || url.starts_with("https://")
        || url.starts_with("file://")
        || url.starts_with('/')
}

impl SoftwareUrl {
    /// Whether a node can fetch this release ([`is_fetchable_url`]). A URL that is not is
    /// still a valid identifier to the master (a SLAP client may supply `bar`); a node reports
    /// it as that release's install error.
    pub fn is_fetchable(&self) -> bool {
        is_fetchable_url(&self.0)
    }

    /// The directory name a node installs this release into: the first 32 hex digits of the
    /// SHA-256 of the URL (SlapOS uses the MD5 of the URL; same length, stronger hash).
    pub fn hash(&self) -> String {
        let digest = Sha256::digest(self.0.as_bytes());
        hex::encode(&digest[..16])
    }
}

/// The partition a request comes from, when an instance requests a child: `computer/partition`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartitionRef {
    /// The computer holding the partition.
    pub computer: ComputerId,
    /// The partition.
    pub partition: PartitionId,
}

impl PartitionRef {
    /// Parse `computer/partition` (the value of [`crate::PARTITION_HEADER`]).
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let (c, p) = s
            .split_once('/')
            .ok_or_else(|| IdError::new("partition reference", s, "must be COMPUTER/PARTITION"))?;
        Ok(Self {
            computer: ComputerId::parse(c)?,
            partition: PartitionId::parse(p)?,
        })
    }
}

impl fmt::Display for PartitionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.computer, self.partition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_refuse_paths_and_odd_characters() {
        for bad in [
            "",
            "../x",
            "a/b",
            ".hidden",
            "-opt",
            "a b",
            "é",
            &"x".repeat(65),
        ] {
            let err = PartitionId::parse(bad).unwrap_err();
            assert_eq!(err.kind, "partition id", "{bad:?}");
        }
        for good in ["slappart0", "COMP-12", "a.b_c-d", &"x".repeat(64)] {
            assert_eq!(PartitionId::parse(good).unwrap().as_str(), good);
        }
    }

    #[test]
    fn titles_are_free_text_but_not_path_like() {
        assert!(InstanceTitle::parse("My Service #1 (été)").is_ok());
        for bad in [
            "../x", "a/b", "a\\b", ".", "..", " lead", "trail ", "nl\n", "",
        ] {
            let err = InstanceTitle::parse(bad).unwrap_err();
            assert!(err.to_string().contains("instance title"), "{err}");
        }
    }

    #[test]
    fn software_urls_are_free_text_and_fetchable_only_in_four_forms() {
        for fetchable in [
            "https://lab.example/sr/software.cfg",
            "http://h/sr.toml",
            "/srv/sr/software.toml",
            "file:///srv/sr/software.toml",
        ] {
            let u = SoftwareUrl::parse(fetchable).unwrap();
            assert!(u.is_fetchable(), "{fetchable}");
        }
        // Identifiers to the master, as slapproxy takes them; a node does not fetch them.
        for id_only in [
            "bar",
            "relative/software.toml",
            "slapos.tests.test_slapproxy.TestSoftwareInstallation.test_destroyed",
            "ftp://h/sr.cfg",
            "../../etc/passwd",
            "HTTP://h/sr.cfg",
            "é sr",
        ] {
            let u = SoftwareUrl::parse(id_only).unwrap();
            assert!(!u.is_fetchable(), "{id_only}");
            assert_eq!(u.hash().len(), 32);
        }
        for (bad, rule) in [
            ("", "must not be empty"),
            (" /srv/sr.toml", "white space"),
            ("/srv/sr.toml\n", "control characters"),
            ("bar\u{0}", "control characters"),
            ("a\tb", "control characters"),
            (&"x".repeat(2049), "too long"),
        ] {
            let err = SoftwareUrl::parse(bad).unwrap_err();
            assert_eq!(err.kind, "software url");
            assert!(err.rule.contains(rule), "{bad:?}: {err}");
        }
        assert!(SoftwareUrl::parse("x".repeat(2048)).is_ok());
    }

    #[test]
    fn software_hash_is_stable_hex() {
        let u = SoftwareUrl::parse("/srv/demo/sr/software.cfg").unwrap();
        let h = u.hash();
        assert_eq!(h.len(), 32);
        assert!(h.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            h,
            SoftwareUrl::parse("/srv/demo/sr/software.cfg")
                .unwrap()
                .hash()
        );
        assert_ne!(
            h,
            SoftwareUrl::parse("/srv/demo/sr/other.cfg").unwrap().hash()
        );
    }

    #[test]
    fn deserialisation_validates() {
        let ok: ComputerId = serde_json::from_str("\"COMP-1\"").unwrap();
        assert_eq!(ok.as_str(), "COMP-1");
        let err = serde_json::from_str::<ComputerId>("\"../etc\"").unwrap_err();
        assert!(err.to_string().contains("invalid computer id"), "{err}");
    }

    #[test]
    fn partition_ref_round_trips() {
        let r = PartitionRef::parse("COMP-1/slappart3").unwrap();
        assert_eq!(r.to_string(), "COMP-1/slappart3");
        assert!(PartitionRef::parse("COMP-1").is_err());
        assert!(PartitionRef::parse("COMP-1/../x").is_err());
    }
}
