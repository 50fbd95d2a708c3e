//! Installing and removing software releases.
//!
//! Layout under `software_root`:
//!
//! ```text
//! <hash>/                      an installed release (hash = SoftwareUrl::hash())
//!   .slapos-completed          JSON {url, manifest_sha256, at_ms}: present ⇔ fully installed
//!   .slapos-software.toml      the manifest as fetched
//!   .slapos-build.log          fetch and build output
//!   …artifacts and build outputs…
//! .build-<hash>/               an install in progress (removed on failure and at node start)
//! .failed-<hash>.log           the build log of the last failed install
//! ```
//!
//! Builds run as the **software user** ([`Installer::with_builder`]; `software_user`, `slapsoft`
//! by default on a node isolating partitions, as SlapOS builds as `slapsoft`): the build
//! directory is that user's, artifacts are fetched into it with its filesystem identity (local
//! `file://` sources are opened as that user: only what it may read can be installed), build
//! steps run as that user (never root), with `no_new_privs`, in their own jail cgroup killed when
//! the step ends ([`crate::host::jail`]). After the build an fd-based walk ([`seal`]: `openat` with
//! `O_NOFOLLOW` from directory fds, `fchown`/`fchmod` on the opened fds, never a path) hands the
//! tree to the node's user, clears group/other write and the setuid, setgid and sticky bits, and
//! fails the install on an entry owned by anyone but the builder, or that is neither a regular
//! file, a directory nor a symlink (a FIFO, a device, a socket). Partition users may then read
//! and run a release, never change it. Artifact modes are masked to `0o777`.
//!
//! Instance profiles must be regular files of the release (not links) and pass the profile lint
//! ([`crate::software::profile::lint`]) at install: a release with an unfiltered `{{ … }}` does not install.
//! Files of an installed release the node reads (manifest copy, profiles) are read through
//! [`PartitionFs`] (no link followed).
//!
//! A failed install reports its reason and the last 2 KiB of the build log, read through the
//! node's own fd of the log; the whole message is capped at 4 KiB. A release whose URL is not
//! one of the forms the node fetches ([`SoftwareUrl::is_fetchable`]: the master takes any URL
//! string) fails at once, before any directory is made, with a message naming the URL and the
//! accepted forms.
//!
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::{Gid, Uid};
use serde::{Deserialize, Serialize};
use slapos_proto::SoftwareUrl;

use crate::host::isolation::Identity;
use crate::host::jail::Jails;
use crate::host::partition_fs::{PartitionFs, names_in, tail_of};
use crate::process::procs::GroupGuard;
use crate::process::supervisor::Launch;
use crate::software::fetch::{self, Fetcher};
use crate::software::release::SoftwareManifest;
use crate::util::{atomic_write, now_ms};

/// Name of the completion marker.
pub const COMPLETED: &str = ".slapos-completed";
/// Name of the manifest copy.
pub const MANIFEST: &str = ".slapos-software.toml";
/// Name of the build log.
pub const BUILD_LOG: &str = ".slapos-build.log";
/// Bytes of build log carried in an error report.
pub const LOG_TAIL_BYTES: usize = 2048;
/// Bytes of the reason carried in an error report (with the tail: ≤ 4 KiB in all).
pub const REASON_BYTES: usize = 1536;
/// Bytes of build log kept in `.failed-<hash>.log`.
const FAILED_LOG_BYTES: u64 = 1 << 20;

/// An install that failed: what failed and the tail of its log.
#[derive(Debug, Clone, thiserror::Error)]
#[error("install of `{url}` failed: {reason}{}", if log_tail.is_empty() { String::new() } else { format!("\n--- build log tail ---\n{log_tail}") })]
pub struct InstallError {
    /// The release.
    pub url: String,
    /// What failed (step, artifact, …).
    pub reason: String,
    /// Last bytes of the build log.
    pub log_tail: String,
}

/// What the completion marker holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Completed {
    /// Release URL.
    pub url: String,
    /// SHA-256 of the manifest text installed.
    pub manifest_sha256: String,
    /// When it was installed (unix ms).
    pub at_ms: u64,
}

/// Installs releases under one software root.
#[derive(Debug, Clone)]
pub struct Installer {
    root: PathBuf,
    fetcher: Fetcher,
    /// Builds run as this user (`None`: as the node).
    builder: Option<Identity>,
    /// Build steps' jails.
    jails: Option<Arc<Jails>>,
}

impl Installer {
    /// An installer for `root` using `fetcher`; builds run as the node.
    pub fn new(root: impl Into<PathBuf>, fetcher: Fetcher) -> Self {
        Self {
            root: root.into(),
            fetcher,
            builder: None,
            jails: None,
        }
    }

    /// Builds run as `builder` (the software user), local sources are read as it.
    pub fn with_builder(mut self, builder: Option<Identity>) -> Self {
        self.fetcher = self.fetcher.reading_as(builder);
        self.builder = builder;
        self
    }

    /// Build steps join a jail of `jails` (killed when the step ends).
    pub fn with_jails(mut self, jails: Option<Arc<Jails>>) -> Self {
        self.jails = jails;
        self
    }

    /// Final directory of a release.
    pub fn dir(&self, url: &SoftwareUrl) -> PathBuf {
        self.root.join(url.hash())
    }

    /// The release's directory if it is completely installed.
    pub fn installed(&self, url: &SoftwareUrl) -> Option<PathBuf> {
        let d = self.dir(url);
        d.join(COMPLETED).is_file().then_some(d)
    }

    /// Remove leftovers of interrupted installs (`.build-*`). Called once at node start.
    pub fn clean_leftovers(&self) {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(".build-") {
                tracing::info!(dir = %e.path().display(), "removing an interrupted install");
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }

    /// Remove an installed release. The marker goes first, so a crash midway leaves a directory
    /// that is not considered installed (and is replaced by the next install).
    pub fn remove(&self, url: &SoftwareUrl) -> std::io::Result<()> {
        let d = self.dir(url);
        match std::fs::remove_file(d.join(COMPLETED)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        match std::fs::remove_dir_all(&d) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Install `url` (no-op when already installed). Returns the release directory.
    ///
    /// Cancel-safe: dropping the future kills a running build step's group; the build
    /// directory (and the step's jail) is then removed at the next start
    /// ([`Installer::clean_leftovers`], `Jails::remove_others`).
    pub async fn install(&self, url: &SoftwareUrl) -> Result<PathBuf, InstallError> {
        self.install_with(url, &|_| {}).await
    }

    /// [`Installer::install`], telling `step` each step as it starts (fetching the manifest, an
    /// artifact, a build step: the lines of the build log's `[node]` notes), so the master can
    /// show what an install is doing.
    pub async fn install_with(
        &self,
        url: &SoftwareUrl,
        step: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<PathBuf, InstallError> {
        if let Some(d) = self.installed(url) {
            return Ok(d);
        }
        let hash = url.hash();
        let build = self.root.join(format!(".build-{hash}"));
        let fail = |reason: String, log_tail: String| InstallError {
            url: url.to_string(),
            reason: crate::util::tail(&reason, REASON_BYTES),
            log_tail,
        };
        // The master takes any URL string (a SLAP client may supply `bar`); only these forms
        // are fetched, and nothing else is ever read as a path. Refused before any directory
        // is made: the release's own install error, not the desired state's.
        if !url.is_fetchable() {
            return Err(fail(
                format!(
                    "the node cannot fetch this software URL: it must be {}",
                    slapos_proto::FETCHABLE_URL_FORMS
                ),
                String::new(),
            ));
        }
        if let Err(e) = std::fs::remove_dir_all(&build)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(fail(
                format!("failed to remove `{}`: {e}", build.display()),
                String::new(),
            ));
        }
        if let Err(e) = make_build_dir(&build, self.builder) {
            return Err(fail(e, String::new()));
        }
        let bfs = PartitionFs::new(&build, self.builder);
        let log = match bfs.open_append(BUILD_LOG) {
            Ok(l) => l,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&build);
                return Err(fail(e.to_string(), String::new()));
            }
        };
        let res = self.install_into(url, &build, &bfs, &log, step).await;
        match res {
            Ok(()) => {
                let final_dir = self.dir(url);
                let _ = std::fs::remove_dir_all(&final_dir);
                std::fs::rename(&build, &final_dir).map_err(|e| {
                    fail(
                        format!(
                            "failed to rename `{}` to `{}`: {e}",
                            build.display(),
                            final_dir.display()
                        ),
                        tail_of(&log, LOG_TAIL_BYTES as u64),
                    )
                })?;
                let _ = std::fs::remove_file(self.root.join(format!(".failed-{hash}.log")));
                Ok(final_dir)
            }
            Err(reason) => {
                // Read through the node's own fd: the builder may have replaced the path.
                let tail = tail_of(&log, LOG_TAIL_BYTES as u64);
                let kept = tail_of(&log, FAILED_LOG_BYTES);
                let _ = atomic_write(
                    &self.root.join(format!(".failed-{hash}.log")),
                    kept.as_bytes(),
                );
                let _ = std::fs::remove_dir_all(&build);
                Err(fail(reason, tail))
            }
        }
    }

    async fn install_into(
        &self,
        url: &SoftwareUrl,
        build: &Path,
        bfs: &PartitionFs,
        log: &File,
        step: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<(), String> {
        let note = |line: String| {
            tracing::info!(software = %url, "{line}");
            let _ = writeln!(&*log, "[node] {line}");
            step(&line);
        };

        note(format!("fetching manifest {url}"));
        let fetcher = self.fetcher.clone();
        let u = url.to_string();
        let text = blocking(move || fetcher.fetch_text(&u))
            .await?
            .map_err(|e| e.to_string())?;
        let manifest = SoftwareManifest::parse(&text).map_err(|e| e.to_string())?;
        bfs.write_atomic(MANIFEST, text.as_bytes(), None)
            .map_err(|e| format!("failed to write the manifest copy: {e}"))?;

        for a in &manifest.artifacts {
            let src = fetch::resolve(url.as_str(), &a.url);
            note(format!("fetching artifact {src} -> {}", a.path.display()));
            let mut out = bfs.create_fresh(&a.path).map_err(|e| e.to_string())?;
            let fetcher = self.fetcher.clone();
            let (s, sha, dest) = (src.clone(), a.sha256.clone(), bfs.path(&a.path));
            let fetched = blocking(move || {
                fetcher
                    .fetch_verified_into(&s, &sha, &mut out, &dest)
                    .map(|n| (n, out))
            })
            .await?;
            let (n, out) = match fetched {
                Ok(r) => r,
                Err(e) => {
                    let _ = bfs.remove_file(&a.path);
                    return Err(e.to_string());
                }
            };
            // No setuid, setgid or sticky bit from a manifest.
            nix::sys::stat::fchmod(&out, Mode::from_bits_truncate(a.mode & 0o777))
                .map_err(|e| format!("failed to chmod `{}`: {e}", bfs.path(&a.path).display()))?;
            note(format!(
                "artifact {} ok ({n} bytes, sha256 verified)",
                a.path.display()
            ));
        }

        let final_dir = self.dir(url);
        let jail_name = format!(".build-{}", url.hash());
        for step in &manifest.build {
            note(format!("build step `{}`: {:?}", step.name, step.command));
            let dup = || {
                log.try_clone()
                    .map_err(|e| format!("failed to reopen the build log: {e}"))
            };
            let (out, err) = (dup()?, dup()?);
            let mut env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
            for (k, v) in [
                ("SOFTWARE_DIR", final_dir.display().to_string()),
                ("BUILD_DIR", build.display().to_string()),
                ("SOFTWARE_URL", url.to_string()),
                ("HOME", build.display().to_string()),
            ] {
                env.insert(k.to_owned(), v);
            }
            env.extend(step.env.iter().map(|(k, v)| (k.clone(), v.clone())));
            let jail = self
                .jails
                .as_ref()
                .map(|j| j.prepare(&jail_name))
                .transpose()
                .map_err(|e| format!("build step `{}`: {e}", step.name))?;
            let launch = Launch {
                identity: self.builder,
                jail,
                ..Launch::new(step.command.clone(), env, build.to_path_buf())
            };
            let mut cmd = launch.command();
            cmd.stdout(Stdio::from(out)).stderr(Stdio::from(err));
            let mut child = cmd.spawn().map_err(|e| {
                format!(
                    "build step `{}`: failed to start `{}`: {e}",
                    step.name, step.command[0]
                )
            })?;
            let guard = GroupGuard(child.id().and_then(|p| i32::try_from(p).ok()));
            let status = child
                .wait()
                .await
                .map_err(|e| format!("build step `{}`: wait failed: {e}", step.name));
            drop(guard); // also reaps whatever the step left running in its group
            // Nothing of a step outlives it, whatever it did with sessions and groups.
            if let Some(j) = self.jails.clone() {
                let name = jail_name.clone();
                blocking(move || j.remove(&name))
                    .await?
                    .map_err(|e| format!("build step `{}`: {e}", step.name))?;
            }
            let status = status?;
            if !status.success() {
                return Err(format!("build step `{}` failed: {status}", step.name));
            }
            note(format!("build step `{}` done", step.name));
        }

        for (ty, p) in &manifest.instance {
            let source = bfs.read(p, crate::software::profile::MAX_PROFILE_BYTES).map_err(|e| {
                format!(
                    "instance profile `{}` of software type `{ty}` is missing after the build: {e}",
                    p.display()
                )
            })?;
            let source = String::from_utf8(source)
                .map_err(|_| format!("instance profile `{}` is not UTF-8", p.display()))?;
            crate::software::profile::lint(&p.display().to_string(), &source)
                .map_err(|e| e.to_string())?;
        }
        // Partitions (other users in root mode) may read and run a release, never change it.
        let builder = self
            .builder
            .map_or_else(|| nix::unistd::geteuid().as_raw(), |b| b.uid);
        seal(build, builder).map_err(|e| format!("the build left {e}"))?;
        let done = Completed {
            url: url.to_string(),
            manifest_sha256: fetch::sha256_hex(text.as_bytes()),
            at_ms: now_ms(),
        };
        let body = serde_json::to_vec_pretty(&done).map_err(|e| e.to_string())?;
        // The tree is the node's now: nothing can be planted under it any more.
        atomic_write(&build.join(COMPLETED), &body)
            .map_err(|e| format!("failed to write the completion marker: {e}"))?;
        note("installed".into());
        Ok(())
    }
}

/// Create the build directory (0755), owned by `builder` when given.
fn make_build_dir(build: &Path, builder: Option<Identity>) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("failed to create `{}`: {e}", build.display());
    std::fs::create_dir_all(build).map_err(|e| err(&e))?;
    if let Some(b) = builder {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::open(build, flags, Mode::empty()).map_err(|e| err(&e))?;
        nix::unistd::fchown(&fd, Some(Uid::from_raw(b.uid)), Some(Gid::from_raw(b.gid)))
            .map_err(|e| err(&e))?;
    }
    Ok(())
}

/// Deepest directory nesting [`seal`] walks.
const SEAL_DEPTH: usize = 256;

/// Hand the build tree `build` to the node's user: every directory, regular file and symlink
/// must belong to `builder` (anything else, or another kind of file, is refused with its path);
/// each is `fchown`ed to the node's uid/gid and its mode masked with `0o755` (no group/other
/// write, no setuid/setgid/sticky). Race-free: a directory is locked (chowned, chmodded) before
/// its entries are listed; entries are opened with `O_NOFOLLOW` from the directory's fd and
/// changed through their own fd (symlinks with `fchownat(AT_SYMLINK_NOFOLLOW)`).
pub fn seal(build: &Path, builder: u32) -> Result<(), String> {
    let owner = (nix::unistd::geteuid(), nix::unistd::getegid());
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = nix::fcntl::open(build, flags, Mode::empty())
        .map_err(|e| format!("`{}`: {e}", build.display()))?;
    seal_dir(fd, build, builder, owner, 0)
}

fn kind(mode: u32) -> &'static str {
    match SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        SFlag::S_IFSOCK => "a socket",
        _ => "an unknown kind of file",
    }
}

fn seal_dir(
    dir: OwnedFd,
    path: &Path,
    builder: u32,
    owner: (Uid, Gid),
    depth: usize,
) -> Result<(), String> {
    let at = |e: nix::errno::Errno| format!("`{}`: {e}", path.display());
    if depth > SEAL_DEPTH {
        return Err(format!(
            "`{}`: nested deeper than {SEAL_DEPTH} directories",
            path.display()
        ));
    }
    let st = nix::sys::stat::fstat(&dir).map_err(at)?;
    if st.st_uid != builder {
        return Err(format!(
            "`{}` owned by uid {}, not by the build user (uid {builder}): refused",
            path.display(),
            st.st_uid
        ));
    }
    nix::unistd::fchown(&dir, Some(owner.0), Some(owner.1)).map_err(at)?;
    nix::sys::stat::fchmod(&dir, Mode::from_bits_truncate(st.st_mode & 0o755)).map_err(at)?;
    for name in names_in(&dir, usize::MAX).map_err(at)? {
        let p = path.join(&name);
        let at = |e: nix::errno::Errno| format!("`{}`: {e}", p.display());
        let st = nix::sys::stat::fstatat(&dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(at)?;
        if st.st_uid != builder {
            return Err(format!(
                "`{}` owned by uid {}, not by the build user (uid {builder}): refused",
                p.display(),
                st.st_uid
            ));
        }
        let ty = st.st_mode & SFlag::S_IFMT.bits();
        if ty == SFlag::S_IFLNK.bits() {
            nix::unistd::fchownat(
                &dir,
                name.as_os_str(),
                Some(owner.0),
                Some(owner.1),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(at)?;
        } else if ty == SFlag::S_IFDIR.bits() {
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let sub =
                nix::fcntl::openat(&dir, name.as_os_str(), flags, Mode::empty()).map_err(at)?;
            seal_dir(sub, &p, builder, owner, depth + 1)?;
        } else if ty == SFlag::S_IFREG.bits() {
            let flags = OFlag::O_RDONLY
                | OFlag::O_NOFOLLOW
                | OFlag::O_NONBLOCK
                | OFlag::O_NOCTTY
                | OFlag::O_CLOEXEC;
            let f = nix::fcntl::openat(&dir, name.as_os_str(), flags, Mode::empty()).map_err(at)?;
            let fst = nix::sys::stat::fstat(&f).map_err(at)?;
            if fst.st_ino != st.st_ino || fst.st_uid != builder {
                return Err(format!(
                    "`{}` changed while it was sealed: refused",
                    p.display()
                ));
            }
            nix::unistd::fchown(&f, Some(owner.0), Some(owner.1)).map_err(at)?;
            nix::sys::stat::fchmod(&f, Mode::from_bits_truncate(fst.st_mode & 0o755))
                .map_err(at)?;
        } else {
            return Err(format!(
                "`{}`, {}: a release holds regular files, directories and symlinks only",
                p.display(),
                kind(st.st_mode)
            ));
        }
    }
    Ok(())
}

/// Load the manifest of an installed release (read through [`PartitionFs`]: a regular file of
/// the release, no link followed).
pub fn load_manifest(dir: &Path) -> Result<SoftwareManifest, String> {
    let fs = PartitionFs::new(dir, None);
    let bytes = fs
        .read(MANIFEST, fetch::MAX_MANIFEST_BYTES)
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8(bytes)
        .map_err(|_| format!("`{}`: not UTF-8", fs.path(MANIFEST).display()))?;
    SoftwareManifest::parse(&text).map_err(|e| format!("`{}`: {e}", fs.path(MANIFEST).display()))
}

/// Run a blocking fetch on a detached thread (see [`crate::link::off_thread`]): a shutdown never
/// waits for a download in flight.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    crate::link::off_thread(f)
        .await
        .ok_or_else(|| "background fetch thread failed".to_owned())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_url_the_node_cannot_fetch_is_the_release_install_error() {
        let root = tempfile::tempdir().unwrap();
        let fetcher = Fetcher::new(Duration::from_secs(5), Path::new("/nonexistent/ca.pem"));
        let inst = Installer::new(root.path(), fetcher);
        for raw in ["bar", "relative/software.toml", "ftp://h/sr.cfg"] {
            let url = SoftwareUrl::parse(raw).unwrap();
            let e = inst.install(&url).await.unwrap_err();
            assert_eq!(e.url, raw);
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("install of `{raw}` failed"))
                    && msg.contains(slapos_proto::FETCHABLE_URL_FORMS),
                "{msg}"
            );
            assert!(e.log_tail.is_empty(), "{e:?}");
            assert!(inst.installed(&url).is_none());
        }
        // Nothing was made: no build directory, no failed log.
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    }
}
