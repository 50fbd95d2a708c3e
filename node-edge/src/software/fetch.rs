//! Fetching release files: URL resolution (pure), download or copy, SHA-256 verification.
//!
//! Sources are `http://`, `https://` (rustls with ring; the trusted roots are the node's
//! `ca_bundle`, the system CA bundle by default, read at the first https download), `file://` URLs and
//! absolute paths. A relative artifact URL is resolved against the manifest's URL: its directory
//! for a path or `file://`, the last `/` of the path for `http(s)://` (query and fragment cut).
//! `file://` takes the path as written (no percent-decoding); `file://localhost/…` is accepted.
//!
//! Local files are opened with the filesystem identity of the user builds run as (the software
//! user, [`Fetcher::reading_as`]): the node installs only what that unprivileged user may read,
//! so `file:///etc/shadow` fails with "permission denied" instead of installing (or hashing)
//! root's secret. They are opened `O_NONBLOCK` and must be regular files: a FIFO, a device or a
//! socket is refused at once instead of blocking the install slot. `fetch_timeout` bounds a file
//! copy as it bounds a download.
//!
//! A large artifact (at least [`PROGRESS_MIN_BYTES`], or of unknown size past it) logs its
//! progress at `info`: bytes so far, the total when the server or the file gives it (`0`: not
//! known), the mean rate; at each tenth of a known total and at least every [`PROGRESS_EVERY`]
//! ([`Progress`]).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::host::isolation::{Identity, as_fs_identity};

/// Largest manifest accepted (bytes).
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// Downloads at least this large (or of unknown size, once past it) log their progress.
pub const PROGRESS_MIN_BYTES: u64 = 4 << 20;
/// Longest quiet time between two progress lines of a large download.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// When a download logs its progress (pure: the caller gives the bytes so far and the time
/// since the start): a line at each tenth of a known total crossed, and whenever
/// [`PROGRESS_EVERY`] passed since the last line; never for a download below
/// [`PROGRESS_MIN_BYTES`].
#[derive(Debug)]
pub struct Progress {
    total: Option<u64>,
    next_tenth: u64,
    last: Duration,
}

impl Progress {
    /// Progress of a download of `total` bytes (`None`: unknown).
    pub fn new(total: Option<u64>) -> Self {
        Self {
            total,
            next_tenth: 1,
            last: Duration::ZERO,
        }
    }

    /// Whether a line is due with `done` bytes fetched, `elapsed` after the start.
    pub fn due(&mut self, done: u64, elapsed: Duration) -> bool {
        let total = self.total.unwrap_or(0);
        if done.max(total) < PROGRESS_MIN_BYTES {
            return false;
        }
        let tenth = done.saturating_mul(10).checked_div(total).unwrap_or(0);
        let due = tenth >= self.next_tenth || elapsed.saturating_sub(self.last) >= PROGRESS_EVERY;
        if due {
            self.next_tenth = self.next_tenth.max(tenth + 1);
            self.last = elapsed;
        }
        due
    }
}

/// A fetch failure: the URL and what went wrong.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Transport, HTTP status or file error.
    #[error("failed to fetch `{url}`: {reason}")]
    Fetch {
        /// Source.
        url: String,
        /// Why.
        reason: String,
    },
    /// The content does not have the expected hash.
    #[error("sha256 mismatch for `{url}`: expected {expected}, got {actual}")]
    Mismatch {
        /// Source.
        url: String,
        /// From the manifest.
        expected: String,
        /// Of what was fetched.
        actual: String,
    },
    /// Writing the destination failed.
    #[error("failed to write `{path}`: {source}")]
    Write {
        /// Destination.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Where bytes come from, once resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A local file.
    File(PathBuf),
    /// An `http://` or `https://` URL.
    Http(String),
}

/// Resolve `rel` against the manifest URL `base`; an absolute `rel` (one of the fetchable
/// forms, [`slapos_proto::is_fetchable_url`]) is returned as is.
pub fn resolve(base: &str, rel: &str) -> String {
    if slapos_proto::is_fetchable_url(rel) {
        return rel.to_owned();
    }
    let base = base.split(['?', '#']).next().unwrap_or(base);
    match base.rfind('/') {
        Some(i) => format!("{}{rel}", &base[..=i]),
        None => rel.to_owned(),
    }
}

/// Classify an absolute URL.
pub fn source(url: &str) -> Result<Source, FetchError> {
    if url.starts_with("http://") || url.starts_with("https://") {
        return Ok(Source::Http(url.to_owned()));
    }
    let path = if let Some(rest) = url.strip_prefix("file://") {
        rest.strip_prefix("localhost").unwrap_or(rest)
    } else {
        url
    };
    if path.starts_with('/') {
        Ok(Source::File(PathBuf::from(path)))
    } else {
        Err(FetchError::Fetch {
            url: url.to_owned(),
            reason: format!(
                "the node fetches only {} (file:// with no host but localhost)",
                slapos_proto::FETCHABLE_URL_FORMS
            ),
        })
    }
}

/// Fetches release files. Cheap to clone (the agents are shared).
#[derive(Clone)]
pub struct Fetcher {
    agent: ureq::Agent,
    timeout: Duration,
    ca_bundle: Arc<PathBuf>,
    /// The https agent, built from `ca_bundle` at the first https download (or its error).
    tls: Arc<OnceLock<Result<ureq::Agent, String>>>,
    /// Local files are opened with this filesystem identity (`None`: the node's).
    reader: Option<Identity>,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fetcher")
    }
}

impl Fetcher {
    /// A fetcher whose downloads each take at most `timeout`; `https://` sources are verified
    /// against the PEM bundle `ca_bundle`.
    pub fn new(timeout: Duration, ca_bundle: &Path) -> Self {
        Self {
            agent: Self::agent(timeout, None),
            timeout,
            ca_bundle: Arc::new(ca_bundle.to_path_buf()),
            tls: Arc::default(),
            reader: None,
        }
    }

    /// The same fetcher, opening local files as `reader` (the software user).
    pub fn reading_as(mut self, reader: Option<Identity>) -> Self {
        self.reader = reader;
        self
    }

    /// The time limit of one fetch.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn agent(timeout: Duration, tls: Option<ureq::tls::TlsConfig>) -> ureq::Agent {
        let mut b = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .timeout_connect(Some(Duration::from_secs(30)));
        if let Some(t) = tls {
            b = b.tls_config(t);
        }
        b.build().into()
    }

    /// The agent for `url`: the plain one, or the https one (built once from the CA bundle).
    fn agent_for(&self, url: &str) -> Result<&ureq::Agent, String> {
        if !url.starts_with("https://") {
            return Ok(&self.agent);
        }
        self.tls
            .get_or_init(|| {
                let path = &*self.ca_bundle;
                let pem = std::fs::read_to_string(path).map_err(|e| {
                    format!(
                        "cannot read the CA bundle `{}` for https downloads ({e}): install \
                         ca-certificates or set `ca_bundle` in the node config",
                        path.display()
                    )
                })?;
                let tls = slapos_client::tls_config(&pem, None).map_err(|e| {
                    format!("CA bundle `{}` for https downloads: {e}", path.display())
                })?;
                Ok(Self::agent(self.timeout, Some(tls)))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The source opened for reading, and its size when known (file size, Content-Length).
    fn open(&self, url: &str) -> Result<(Box<dyn Read + Send>, Option<u64>), FetchError> {
        let err = |reason: String| FetchError::Fetch {
            url: url.to_owned(),
            reason,
        };
        match source(url)? {
            Source::File(p) => {
                let (f, len) = open_local(&p, self.reader).map_err(err)?;
                Ok((Box::new(f), Some(len)))
            }
            Source::Http(u) => {
                let resp = self
                    .agent_for(&u)
                    .map_err(&err)?
                    .get(&u)
                    .call()
                    .map_err(|e| err(e.to_string()))?;
                let status = resp.status();
                if !status.is_success() {
                    return Err(err(format!("HTTP {status}")));
                }
                let body = resp.into_body();
                let len = body.content_length();
                Ok((Box::new(body.into_reader()), len))
            }
        }
    }

    /// Fetch a small text (the manifest), at most [`MAX_MANIFEST_BYTES`].
    pub fn fetch_text(&self, url: &str) -> Result<String, FetchError> {
        let mut buf = Vec::new();
        self.open(url)?
            .0
            .take(MAX_MANIFEST_BYTES + 1)
            .read_to_end(&mut buf)
            .map_err(|e| FetchError::Fetch {
                url: url.to_owned(),
                reason: e.to_string(),
            })?;
        if buf.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(FetchError::Fetch {
                url: url.to_owned(),
                reason: format!("larger than {MAX_MANIFEST_BYTES} bytes"),
            });
        }
        String::from_utf8(buf).map_err(|_| FetchError::Fetch {
            url: url.to_owned(),
            reason: "not UTF-8 text".into(),
        })
    }

    /// Stream `url` into `dest` while hashing; on a hash mismatch `dest` is removed.
    /// Returns the number of bytes written.
    pub fn fetch_verified(&self, url: &str, sha256: &str, dest: &Path) -> Result<u64, FetchError> {
        let werr = |source| FetchError::Write {
            path: dest.to_path_buf(),
            source,
        };
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(werr)?;
        }
        let mut out = std::fs::File::create(dest).map_err(werr)?;
        let res = self.fetch_verified_into(url, sha256, &mut out, dest);
        if res.is_err() {
            let _ = std::fs::remove_file(dest);
        }
        res
    }

    /// Stream `url` into the open file `out` (named `dest` in errors) while hashing, within the
    /// fetch time limit; the caller removes the file on error. Returns the bytes written.
    pub fn fetch_verified_into(
        &self,
        url: &str,
        sha256: &str,
        out: &mut std::fs::File,
        dest: &Path,
    ) -> Result<u64, FetchError> {
        let started = std::time::Instant::now();
        let (mut reader, size) = self.open(url)?;
        let mut progress = Progress::new(size);
        let werr = |source| FetchError::Write {
            path: dest.to_path_buf(),
            source,
        };
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            let elapsed = started.elapsed();
            if elapsed > self.timeout {
                return Err(FetchError::Fetch {
                    url: url.to_owned(),
                    reason: format!("took longer than fetch_timeout ({:?})", self.timeout),
                });
            }
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(FetchError::Fetch {
                        url: url.to_owned(),
                        reason: e.to_string(),
                    });
                }
            };
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(werr)?;
            total += n as u64;
            if progress.due(total, elapsed) {
                let rate = total.saturating_mul(1000) / (elapsed.as_millis() as u64).max(1);
                // One formatted message: fewer bytes in the static node than structured fields.
                tracing::info!(
                    "downloading {url}: {total} of {} bytes (0: unknown), {rate} B/s",
                    size.unwrap_or(0)
                );
            }
        }
        out.sync_all().map_err(werr)?;
        let actual = hex::encode(hasher.finalize());
        if actual != sha256 {
            return Err(FetchError::Mismatch {
                url: url.to_owned(),
                expected: sha256.to_owned(),
                actual,
            });
        }
        Ok(total)
    }
}

/// Open the local file `path` for reading as `reader` (its filesystem identity: the kernel
/// checks that user's permissions), without blocking: anything but a regular file is refused.
/// Returns the file and its size.
fn open_local(path: &Path, reader: Option<Identity>) -> Result<(std::fs::File, u64), String> {
    use nix::fcntl::{FcntlArg, OFlag};
    let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let fd = as_fs_identity(reader, || {
        nix::fcntl::open(path, flags, nix::sys::stat::Mode::empty())
    })
    .map_err(|e| std::io::Error::from(e).to_string())?;
    let st = nix::sys::stat::fstat(&fd).map_err(|e| e.to_string())?;
    if !crate::host::partition_fs::is_regular(&st) {
        return Err(
            "not a regular file (a FIFO, a device, a socket or a directory): refused".into(),
        );
    }
    let fl = nix::fcntl::fcntl(&fd, FcntlArg::F_GETFL).map_err(|e| e.to_string())?;
    let fl = OFlag::from_bits_truncate(fl) & !OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&fd, FcntlArg::F_SETFL(fl)).map_err(|e| e.to_string())?;
    Ok((std::fs::File::from(fd), st.st_size.max(0) as u64))
}

/// SHA-256 of bytes, lowercase hex (kept here too: the hash artifacts are checked with).
pub use crate::util::sha256_hex;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_urls_resolve_against_the_manifest() {
        assert_eq!(resolve("/srv/sr/software.toml", "a.py"), "/srv/sr/a.py");
        assert_eq!(
            resolve("file:///srv/sr/software.toml", "lib/a.py"),
            "file:///srv/sr/lib/a.py"
        );
        assert_eq!(
            resolve("https://h.example/sr/software.toml?ref=main", "a.py"),
            "https://h.example/sr/a.py"
        );
        assert_eq!(
            resolve("https://h.example/sr/software.toml", "http://o.example/b"),
            "http://o.example/b"
        );
        assert_eq!(resolve("/srv/sr/software.toml", "/opt/x"), "/opt/x");
    }

    #[test]
    fn progress_is_logged_per_tenth_and_every_few_seconds_for_large_downloads_only() {
        let s = Duration::from_secs;
        let mb = 1 << 20;
        // Small, known: never, even after a long time.
        let mut p = Progress::new(Some(PROGRESS_MIN_BYTES - 1));
        assert!(!p.due(PROGRESS_MIN_BYTES - 1, s(60)));
        // 100 MB known: one line per tenth crossed, none in between, one at the end.
        let mut p = Progress::new(Some(100 * mb));
        let lines: Vec<u64> = (1..=100)
            .map(|i| i * mb)
            .filter(|&done| p.due(done, s(1)))
            .collect();
        assert_eq!(lines, (1..=10).map(|t| t * 10 * mb).collect::<Vec<_>>());
        // A jump over several tenths logs once, then waits for the next tenth.
        let mut p = Progress::new(Some(100 * mb));
        assert!(p.due(35 * mb, s(1)));
        assert!(!p.due(39 * mb, s(2)));
        assert!(p.due(40 * mb, s(2)));
        // A slow download logs every PROGRESS_EVERY even within a tenth.
        let mut p = Progress::new(Some(100 * mb));
        assert!(!p.due(mb, s(4)));
        assert!(p.due(2 * mb, PROGRESS_EVERY));
        assert!(!p.due(3 * mb, PROGRESS_EVERY + s(4)));
        assert!(p.due(4 * mb, PROGRESS_EVERY * 2));
        // Unknown size: quiet below the threshold, then timed lines only.
        let mut p = Progress::new(None);
        assert!(!p.due(PROGRESS_MIN_BYTES - 1, s(30)));
        assert!(p.due(PROGRESS_MIN_BYTES, s(30)));
        assert!(!p.due(PROGRESS_MIN_BYTES * 10, s(31)));
        assert!(p.due(PROGRESS_MIN_BYTES * 10, s(35)));
        // An empty body of unknown size: nothing (no division by zero).
        assert!(!Progress::new(Some(0)).due(0, s(99)));
    }

    #[test]
    fn sources_are_classified() {
        assert_eq!(source("/a/b").unwrap(), Source::File("/a/b".into()));
        assert_eq!(source("file:///a/b").unwrap(), Source::File("/a/b".into()));
        assert_eq!(
            source("file://localhost/a").unwrap(),
            Source::File("/a".into())
        );
        assert!(matches!(source("https://x/y").unwrap(), Source::Http(_)));
        assert!(source("ftp://x/y").is_err());
        assert!(source("file://host/a").is_err());
    }

    #[test]
    fn https_roots_come_from_the_ca_bundle() {
        let d = tempfile::tempdir().unwrap();
        // A missing bundle: https fails with what to do; http and files are unaffected.
        let f = Fetcher::new(Duration::from_secs(5), &d.path().join("none.pem"));
        let e = f.agent_for("https://example.invalid/x").unwrap_err();
        assert!(e.contains("none.pem") && e.contains("ca_bundle"), "{e}");
        assert!(f.agent_for("http://example.invalid/x").is_ok());
        // A file without certificates is refused, naming it.
        let junk = d.path().join("junk.pem");
        std::fs::write(&junk, "not pem").unwrap();
        let e = Fetcher::new(Duration::from_secs(5), &junk)
            .agent_for("https://example.invalid/x")
            .unwrap_err();
        assert!(e.contains("junk.pem"), "{e}");
        // The system bundle (Debian's ca-certificates) builds a TLS agent, no network needed.
        let system = Path::new("/etc/ssl/certs/ca-certificates.crt");
        if system.exists() {
            let f = Fetcher::new(Duration::from_secs(5), system);
            f.agent_for("https://example.invalid/x").unwrap();
        } else {
            eprintln!("no system CA bundle: its part of the test skipped");
        }
    }

    #[test]
    fn verification_keeps_good_files_and_removes_bad_ones() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src.txt");
        std::fs::write(&src, b"hello").unwrap();
        let f = Fetcher::new(Duration::from_secs(5), Path::new("/nonexistent/ca.pem"));
        let good = sha256_hex(b"hello");
        let dest = d.path().join("out/a.txt");
        let n = f
            .fetch_verified(src.to_str().unwrap(), &good, &dest)
            .unwrap();
        assert_eq!(n, 5);
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello");

        let dest2 = d.path().join("out/b.txt");
        let err = f
            .fetch_verified(src.to_str().unwrap(), &"0".repeat(64), &dest2)
            .unwrap_err();
        assert!(matches!(err, FetchError::Mismatch { .. }), "{err}");
        assert!(err.to_string().contains(&good), "{err}");
        assert!(!dest2.exists());

        let err = f
            .fetch_verified("/nonexistent/x", &good, &dest2)
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/x"), "{err}");
    }

    #[test]
    fn fifos_and_devices_are_refused_at_once_and_files_are_read_as_the_reader() {
        let d = tempfile::tempdir().unwrap();
        let f = Fetcher::new(Duration::from_secs(5), Path::new("/nonexistent/ca.pem"));
        let fifo = d.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let dest = d.path().join("out");
        for src in [fifo.to_str().unwrap(), "/dev/zero", "file:///dev/null"] {
            let e = f.fetch_verified(src, &"0".repeat(64), &dest).unwrap_err();
            assert!(e.to_string().contains("not a regular file"), "{src}: {e}");
            assert!(!dest.exists());
        }
        if nix::unistd::geteuid().is_root() {
            // A root-only file read as an unprivileged reader: refused, no hash disclosed.
            let secret = d.path().join("secret");
            std::fs::write(&secret, "s3cret").unwrap();
            std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            let nobody = Identity {
                uid: 65534,
                gid: 65534,
            };
            let e = f
                .clone()
                .reading_as(Some(nobody))
                .fetch_verified(secret.to_str().unwrap(), &"0".repeat(64), &dest)
                .unwrap_err();
            assert!(e.to_string().contains("ermission denied"), "{e}");
            assert!(!e.to_string().contains(&sha256_hex(b"s3cret")), "{e}");
        }
    }

    #[test]
    fn http_fetch_and_status_errors() {
        // A one-shot HTTP server on port 0 answering two requests.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            for (status, body) in [("200 OK", "payload"), ("404 Not Found", "no")] {
                let (mut s, _) = l.accept().unwrap();
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).unwrap();
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(resp.as_bytes()).unwrap();
            }
        });
        let f = Fetcher::new(Duration::from_secs(5), Path::new("/nonexistent/ca.pem"));
        let d = tempfile::tempdir().unwrap();
        let url = format!("http://{addr}/sr/a");
        f.fetch_verified(&url, &sha256_hex(b"payload"), &d.path().join("a"))
            .unwrap();
        let err = f.fetch_text(&url).unwrap_err();
        assert!(err.to_string().contains("404"), "{err}");
        t.join().unwrap();
    }
}
