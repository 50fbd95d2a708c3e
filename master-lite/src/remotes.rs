//! The remote masters a master delegates requests to (federation, `crate::federation`), as
//! configured by `[multimaster/URL]` sections of `serve --cfg` (`crate::proxy_config`) and
//! `serve --federate`, and the routing decision. Depends on no other module but the store's
//! constants, so the configuration readers and the shared state can hold it.

use std::collections::BTreeSet;
use std::path::PathBuf;

use slapos_proto::{InstanceRequest, PartitionRef};

use crate::store::federation::MASTER_KEYS;

/// An SLA master key names a master that is not configured (a 400, like slapproxy's
/// `ConfigurationError`).
#[derive(Debug, thiserror::Error)]
#[error(
    "SLA {key}={url:?} names a master that is not configured on this one (configured: {configured})"
)]
pub struct UnknownMaster {
    /// The SLA key (`master` or `master_url`).
    pub key: &'static str,
    /// The URL it names.
    pub url: String,
    /// The configured remotes, comma-separated.
    pub configured: String,
}

/// How a remote master is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// The SLAP wire (a SlapOS master, slapproxy, master-lite's classic routes).
    Slap,
    /// master-lite's native `/v1` API.
    Native,
}

/// One remote master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// Its URL (`http://…` or `https://…`, no trailing `/`).
    pub url: String,
    /// How to speak to it.
    pub api: Api,
    /// The software releases whose requests go there.
    pub releases: BTreeSet<String>,
    /// Client certificate (PEM file) of the identity requests are made as.
    pub cert: Option<PathBuf>,
    /// Its key (PEM file).
    pub key: Option<PathBuf>,
    /// The remote's CA (PEM file) for `https://`; the system bundle when absent (SLAP only).
    pub ca: Option<PathBuf>,
    /// slapproxy's `computer` + `partition`: requests are made there as this partition of the
    /// remote (children of its instance) instead of as open orders.
    pub as_partition: Option<PartitionRef>,
    /// `computer`, until `partition` comes with it.
    computer: Option<String>,
    /// `partition`, until `computer` comes with it.
    partition: Option<String>,
}

/// The remotes of a master (empty: no federation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Federation {
    /// In configuration order (the first whose list has the release wins).
    pub remotes: Vec<Remote>,
}

/// A federation setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    /// A remote's description is invalid.
    #[error("remote master {what:?}: {reason}")]
    Remote {
        /// The setting (the URL or the `--federate` value).
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// Two settings name the same remote.
    #[error("remote master {url:?} is configured twice")]
    Duplicate {
        /// The URL.
        url: String,
    },
}

fn normalize(url: &str) -> &str {
    url.trim().trim_end_matches('/')
}

impl Remote {
    /// A remote at `url` spoken to over `api`, with no release list and no identity yet.
    pub fn new(url: &str, api: Api) -> Result<Self, FederationError> {
        let url = normalize(url);
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(FederationError::Remote {
                what: url.to_owned(),
                reason: "the URL must start with http:// or https://".into(),
            });
        }
        Ok(Self {
            url: url.to_owned(),
            api,
            releases: BTreeSet::new(),
            cert: None,
            key: None,
            ca: None,
            as_partition: None,
            computer: None,
            partition: None,
        })
    }

    /// Set one option: `release` (repeatable; `software_release_list` holds one per line),
    /// `cert`, `key`, `ca` (paths), `api` (`slap` or `native`), `computer` and `partition`
    /// (request as that partition of the remote, like slapproxy).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), FederationError> {
        let bad = |reason: String| FederationError::Remote {
            what: self.url.clone(),
            reason,
        };
        match key {
            "release" | "software_release_list" => self.releases.extend(
                value
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned),
            ),
            "cert" => self.cert = Some(PathBuf::from(value)),
            "key" => self.key = Some(PathBuf::from(value)),
            "ca" => self.ca = Some(PathBuf::from(value)),
            "api" => {
                self.api = match value {
                    "slap" => Api::Slap,
                    "native" => Api::Native,
                    other => return Err(bad(format!("api {other:?} is not `slap` or `native`"))),
                }
            }
            "computer" => self.computer = Some(value.to_owned()),
            "partition" => self.partition = Some(value.to_owned()),
            other => return Err(bad(format!("unknown option {other:?}"))),
        }
        Ok(())
    }

    /// Check that the identity is complete (a certificate goes with its key, a computer with
    /// its partition) and usable over the URL's scheme, like slapproxy.
    pub fn check(&mut self) -> Result<(), FederationError> {
        let bad = |reason: &str| FederationError::Remote {
            what: self.url.clone(),
            reason: reason.to_owned(),
        };
        if self.cert.is_some() != self.key.is_some() {
            return Err(bad("`cert` and `key` go together"));
        }
        self.as_partition = match (&self.computer, &self.partition) {
            (None, None) => None,
            (Some(c), Some(p)) => Some(
                PartitionRef::parse(&format!("{c}/{p}"))
                    .map_err(|e| bad(&format!("`computer`/`partition`: {e}")))?,
            ),
            _ => return Err(bad("`computer` and `partition` go together")),
        };
        if self.url.starts_with("http://") && (self.cert.is_some() || self.ca.is_some()) {
            return Err(bad("a certificate is given but the URL is plain http://"));
        }
        if self.api == Api::Native && self.url.starts_with("https://") && self.ca.is_none() {
            return Err(bad(
                "a native remote over https:// needs `ca` (its CA certificate)",
            ));
        }
        Ok(())
    }

    /// Parse `serve --federate URL[,release=R]…[,cert=P,key=P][,ca=P][,api=slap|native]
    /// [,computer=C,partition=P]` (the native API by default).
    pub fn parse_flag(spec: &str) -> Result<Self, FederationError> {
        let mut parts = spec.split(',');
        let mut r = Self::new(parts.next().unwrap_or(""), Api::Native)?;
        for part in parts {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| FederationError::Remote {
                    what: spec.to_owned(),
                    reason: format!("{part:?} is not KEY=VALUE"),
                })?;
            r.set(k.trim(), v.trim())?;
        }
        r.check()?;
        Ok(r)
    }
}

impl Federation {
    /// Whether no remote is configured (then nothing is routed).
    pub fn is_empty(&self) -> bool {
        self.remotes.is_empty()
    }

    /// Add `remote`, refusing a second one at the same URL.
    pub fn add(&mut self, remote: Remote) -> Result<(), FederationError> {
        if self.remotes.iter().any(|r| r.url == remote.url) {
            return Err(FederationError::Duplicate { url: remote.url });
        }
        self.remotes.push(remote);
        Ok(())
    }

    /// Where `req` goes: `None` here, else the remote it is delegated to. An SLA master key
    /// (`master`, `master_url`) naming a configured remote wins; one naming no configured
    /// remote is refused (like slapproxy, which forwards only to listed masters). Without any
    /// remote nothing is routed (the keys are then ordinary SLA filters).
    pub fn route(&self, req: &InstanceRequest) -> Result<Option<&Remote>, UnknownMaster> {
        if self.is_empty() {
            return Ok(None);
        }
        for key in MASTER_KEYS {
            if let Some(url) = req.sla.get(key) {
                return match self.remotes.iter().find(|r| r.url == normalize(url)) {
                    Some(r) => Ok(Some(r)),
                    None => Err(UnknownMaster {
                        key,
                        url: url.clone(),
                        configured: self
                            .remotes
                            .iter()
                            .map(|r| r.url.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    }),
                };
            }
        }
        Ok(self
            .remotes
            .iter()
            .find(|r| r.releases.contains(req.software_url.as_str())))
    }

    /// The remote at `url`.
    pub fn remote(&self, url: &str) -> Option<&Remote> {
        self.remotes.iter().find(|r| r.url == url)
    }
}

/// Wakes the forwarding task when a request was delegated (so it goes out at once).
#[derive(Debug, Default)]
pub struct Wake(tokio::sync::Notify);

impl Wake {
    /// A request was delegated.
    pub fn notify(&self) {
        self.0.notify_one();
    }

    /// Until [`Wake::notify`] is called (at once if it was called since the last wait).
    pub async fn notified(&self) {
        self.0.notified().await;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use slapos_proto::{InstanceTitle, SoftwareUrl};

    /// A request of `url` titled `t` with the SLA `sla`.
    pub(crate) fn req(url: &str, sla: &[(&str, &str)]) -> InstanceRequest {
        InstanceRequest {
            title: InstanceTitle::parse("t").unwrap(),
            software_url: SoftwareUrl::parse(url).unwrap(),
            software_type: Default::default(),
            parameters: Default::default(),
            sla: sla
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            state: None,
            shared: false,
        }
    }

    #[test]
    fn routes_by_release_list_and_by_sla_master() {
        let mut fed = Federation::default();
        assert!(
            fed.route(&req("http://x/sr.cfg", &[("master", "http://b")]))
                .unwrap()
                .is_none()
        );
        let b = Remote::parse_flag("http://b:1/,release=http://x/sr.cfg,release=http://y").unwrap();
        assert_eq!(b.url, "http://b:1");
        assert_eq!(b.api, Api::Native);
        fed.add(b).unwrap();
        let mut c = Remote::new("http://c:2", Api::Slap).unwrap();
        c.set("software_release_list", "\nhttp://z\n  http://x/sr.cfg\n")
            .unwrap();
        fed.add(c).unwrap();
        let to = |r: &InstanceRequest| fed.route(r).unwrap().map(|r| r.url.clone());
        assert_eq!(
            to(&req("http://x/sr.cfg", &[])).as_deref(),
            Some("http://b:1")
        );
        assert_eq!(to(&req("http://z", &[])).as_deref(), Some("http://c:2"));
        assert_eq!(to(&req("http://local", &[])), None);
        assert_eq!(
            to(&req("http://local", &[("master_url", "http://c:2/")])).as_deref(),
            Some("http://c:2")
        );
        assert_eq!(
            to(&req("http://z", &[("master", "http://b:1")])).as_deref(),
            Some("http://b:1")
        );
        let e = fed
            .route(&req("http://z", &[("master", "http://nowhere")]))
            .unwrap_err();
        assert!(e.to_string().contains("http://nowhere"), "{e}");
        assert!(matches!(
            fed.add(Remote::new("http://b:1/", Api::Slap).unwrap()),
            Err(FederationError::Duplicate { .. })
        ));
    }

    #[test]
    fn refuses_bad_remotes() {
        for (spec, part) in [
            ("ftp://b", "http://"),
            ("http://b,release", "KEY=VALUE"),
            ("http://b,colour=red", "unknown option"),
            ("http://b,computer=C", "go together"),
            ("http://b,computer=C,partition=a b", "partition id"),
            ("http://b,api=rest", "api"),
            ("http://b,cert=/c", "together"),
            ("http://b,cert=/c,key=/k", "plain http"),
            ("https://b,cert=/c,key=/k", "needs `ca`"),
        ] {
            let e = Remote::parse_flag(spec).unwrap_err().to_string();
            assert!(e.contains(part), "{spec}: {e}");
        }
        assert!(Remote::parse_flag("https://b,api=slap,cert=/c,key=/k").is_ok());
        let r = Remote::parse_flag("http://b,computer=C,partition=slappart1").unwrap();
        assert_eq!(r.as_partition.unwrap().to_string(), "C/slappart1");
    }
}
