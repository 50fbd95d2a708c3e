//! slapproxy's frontend bypass (`db.requestInstanceFromDB`): a shared request for two known
//! frontend releases is answered at once with connection parameters pointing at the backend,
//! without a host partition, so that an instance's promises pass without a real frontend.
//!
//! * the apache frontend (software type `''`, `default` or `RootSoftwareInstance`) with a
//!   `url` parameter: `secure_access = url`, `domain = url`'s host and port;
//! * the KVM release of tag slapos-0.92 with software type `frontend` and `host`, `port`:
//!   `url = https://[host]:port/`, `domainname`, `port`, `path = /`.
//!
//! Pure: no store, nothing recorded. Difference on purpose: when slapproxy is reached over
//! https (`X-Forwarded-Proto: https`) it answers an apache frontend request with a
//! `secure_access` URL into its own `/http_proxy/` forwarder; master-lite has no such
//! forwarder, so it does not bypass that case (the request then needs a host, like any other
//! shared request).

/// The apache frontend release slapproxy bypasses.
pub const APACHE_FRONTEND: &str =
    "http://git.erp5.org/gitweb/slapos.git/blob_plain/HEAD:/software/apache-frontend/software.cfg";
/// The KVM release whose `frontend` software type slapproxy bypasses.
pub const KVM_FRONTEND: &str = "http://git.erp5.org/gitweb/slapos.git/blob_plain/refs/tags/slapos-0.92:/software/kvm/software.cfg";

/// A bypassed frontend: what slapproxy answers instead of allocating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeFrontend {
    /// The fake partition id (`Fake frontend for <url>`).
    pub partition_id: String,
    /// The connection parameters handed to the requester.
    pub connection: Vec<(String, String)>,
}

/// slapproxy's answer to a shared request for `url` / `software_type` with `param`, reached
/// over https when `https`; `None` when the request is not bypassed.
pub fn bypass(
    url: &str,
    software_type: &str,
    param: impl Fn(&str) -> Option<String>,
    https: bool,
) -> Option<FakeFrontend> {
    if url == APACHE_FRONTEND && matches!(software_type, "" | "RootSoftwareInstance" | "default") {
        let target = param("url").filter(|u| !u.is_empty())?;
        if https {
            return None;
        }
        let domain = netloc(&target).to_owned();
        return Some(FakeFrontend {
            partition_id: format!("Fake frontend for {target}"),
            connection: vec![("secure_access".into(), target), ("domain".into(), domain)],
        });
    }
    if url == KVM_FRONTEND && software_type == "frontend" {
        let host = param("host").filter(|h| !h.is_empty())?;
        let port = param("port").filter(|p| !p.is_empty())?;
        // `host` is an IPv6 address without brackets.
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host
        };
        let target = format!("https://{host}:{port}/");
        return Some(FakeFrontend {
            partition_id: format!("Fake KVM VNC frontend for {target}"),
            connection: vec![
                ("url".into(), target),
                ("domainname".into(), host),
                ("port".into(), port),
                ("path".into(), "/".into()),
            ],
        });
    }
    None
}

/// `urlparse(u).netloc`: what follows `scheme://` up to the first `/`, `?` or `#`.
fn netloc(u: &str) -> &str {
    let Some(at) = u.find("//") else { return "" };
    let rest = &u[at + 2..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    &rest[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p<'a>(kv: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| kv.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn apache_frontend_answers_the_url() {
        let url = "https://[::1]:123/my/path?my=query&string=value#myanchor";
        let f = bypass(APACHE_FRONTEND, "", p(&[("url", url)]), false).unwrap();
        assert_eq!(f.partition_id, format!("Fake frontend for {url}"));
        assert_eq!(
            f.connection,
            vec![
                ("secure_access".into(), url.into()),
                ("domain".into(), "[::1]:123".into())
            ]
        );
        assert_eq!(bypass(APACHE_FRONTEND, "", p(&[("url", url)]), true), None);
        assert_eq!(
            bypass(APACHE_FRONTEND, "other", p(&[("url", url)]), false),
            None
        );
        assert_eq!(bypass(APACHE_FRONTEND, "default", p(&[]), false), None);
        assert_eq!(
            bypass("http://x/sr.cfg", "", p(&[("url", url)]), false),
            None
        );
    }

    #[test]
    fn kvm_frontend_brackets_ipv6() {
        let f = bypass(
            KVM_FRONTEND,
            "frontend",
            p(&[("host", "::1"), ("port", "123")]),
            false,
        )
        .unwrap();
        assert_eq!(f.connection[0], ("url".into(), "https://[::1]:123/".into()));
        assert_eq!(f.connection[1], ("domainname".into(), "[::1]".into()));
        assert_eq!(
            bypass(
                KVM_FRONTEND,
                "default",
                p(&[("host", "h"), ("port", "1")]),
                false
            ),
            None
        );
        assert_eq!(
            bypass(KVM_FRONTEND, "frontend", p(&[("host", "h")]), false),
            None
        );
    }
}
