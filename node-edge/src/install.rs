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
//! Releases belong to the node's user and are read-only to everyone else (write bits of group
//! and others are cleared before the rename): partition users may read and run them only.
//!
//! Invariant: `<hash>/` exists only complete. The install runs in `.build-<hash>/` and is renamed
//! into place as the last step, so a crash, a bad hash or a failing build step never leaves a
//! half-installed release visible. Build steps see `SOFTWARE_DIR` (the final path, for anything
//! that bakes in absolute paths), `BUILD_DIR` (the current directory) and `SOFTWARE_URL`.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::{Deserialize, Serialize};
use slapos_proto::SoftwareUrl;

use crate::fetch::{self, Fetcher};
use crate::procs::GroupGuard;
use crate::release::SoftwareManifest;
use crate::util::{atomic_write, file_tail, now_ms};

/// Name of the completion marker.
pub const COMPLETED: &str = ".slapos-completed";
/// Name of the manifest copy.
pub const MANIFEST: &str = ".slapos-software.toml";
/// Name of the build log.
pub const BUILD_LOG: &str = ".slapos-build.log";
/// Bytes of build log carried in an error report.
pub const LOG_TAIL_BYTES: usize = 2048;

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
}

impl Installer {
    /// An installer for `root` using `fetcher`.
    pub fn new(root: impl Into<PathBuf>, fetcher: Fetcher) -> Self {
        Self {
            root: root.into(),
            fetcher,
        }
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
    /// directory is then removed by [`Installer::clean_leftovers`] at the next start.
    pub async fn install(&self, url: &SoftwareUrl) -> Result<PathBuf, InstallError> {
        if let Some(d) = self.installed(url) {
            return Ok(d);
        }
        let hash = url.hash();
        let build = self.root.join(format!(".build-{hash}"));
        let fail = |reason: String, log: &Path| InstallError {
            url: url.to_string(),
            reason,
            log_tail: file_tail(log, LOG_TAIL_BYTES),
        };
        let log_path = build.join(BUILD_LOG);
        let _ = std::fs::remove_dir_all(&build);
        if let Err(e) = std::fs::create_dir_all(&build) {
            return Err(fail(
                format!("failed to create `{}`: {e}", build.display()),
                &log_path,
            ));
        }
        let res = self.install_into(url, &build, &log_path).await;
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
                        &log_path,
                    )
                })?;
                let _ = std::fs::remove_file(self.root.join(format!(".failed-{hash}.log")));
                Ok(final_dir)
            }
            Err(reason) => {
                let err = fail(reason, &log_path);
                let _ = std::fs::copy(&log_path, self.root.join(format!(".failed-{hash}.log")));
                let _ = std::fs::remove_dir_all(&build);
                Err(err)
            }
        }
    }

    async fn install_into(
        &self,
        url: &SoftwareUrl,
        build: &Path,
        log_path: &Path,
    ) -> Result<(), String> {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .map_err(|e| format!("failed to open `{}`: {e}", log_path.display()))?;
        let note = |log: &mut std::fs::File, line: String| {
            tracing::info!(software = %url, "{line}");
            let _ = writeln!(log, "[node] {line}");
        };

        note(&mut log, format!("fetching manifest {url}"));
        let fetcher = self.fetcher.clone();
        let u = url.to_string();
        let text = blocking(move || fetcher.fetch_text(&u))
            .await?
            .map_err(|e| e.to_string())?;
        let manifest = SoftwareManifest::parse(&text).map_err(|e| e.to_string())?;
        atomic_write(&build.join(MANIFEST), text.as_bytes())
            .map_err(|e| format!("failed to write the manifest copy: {e}"))?;

        for a in &manifest.artifacts {
            let src = fetch::resolve(url.as_str(), &a.url);
            let dest = build.join(&a.path);
            note(
                &mut log,
                format!("fetching artifact {src} -> {}", a.path.display()),
            );
            let fetcher = self.fetcher.clone();
            let (s, sha, d) = (src.clone(), a.sha256.clone(), dest.clone());
            let n = blocking(move || fetcher.fetch_verified(&s, &sha, &d))
                .await?
                .map_err(|e| e.to_string())?;
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(a.mode))
                .map_err(|e| format!("failed to chmod `{}`: {e}", dest.display()))?;
            note(
                &mut log,
                format!(
                    "artifact {} ok ({n} bytes, sha256 verified)",
                    a.path.display()
                ),
            );
        }

        let final_dir = self.dir(url);
        for step in &manifest.build {
            note(
                &mut log,
                format!("build step `{}`: {:?}", step.name, step.command),
            );
            let out = log
                .try_clone()
                .map_err(|e| format!("failed to reopen the build log: {e}"))?;
            let err = log
                .try_clone()
                .map_err(|e| format!("failed to reopen the build log: {e}"))?;
            let mut cmd = tokio::process::Command::new(&step.command[0]);
            cmd.args(&step.command[1..])
                .current_dir(build)
                .env("SOFTWARE_DIR", &final_dir)
                .env("BUILD_DIR", build)
                .env("SOFTWARE_URL", url.as_str())
                .envs(&step.env)
                .stdin(Stdio::null())
                .stdout(Stdio::from(out))
                .stderr(Stdio::from(err))
                .process_group(0)
                .kill_on_drop(true);
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
                .map_err(|e| format!("build step `{}`: wait failed: {e}", step.name))?;
            drop(guard); // also reaps whatever the step left running in its group
            if !status.success() {
                return Err(format!("build step `{}` failed: {status}", step.name));
            }
            note(&mut log, format!("build step `{}` done", step.name));
        }

        for (ty, p) in &manifest.instance {
            if !build.join(p).is_file() {
                return Err(format!(
                    "instance profile `{}` of software type `{ty}` is missing after the build",
                    p.display()
                ));
            }
        }
        // Partitions (other users in root mode) may read and run a release, never change it.
        read_only_for_others(build)
            .map_err(|e| format!("failed to make `{}` read-only: {e}", build.display()))?;
        let done = Completed {
            url: url.to_string(),
            manifest_sha256: fetch::sha256_hex(text.as_bytes()),
            at_ms: now_ms(),
        };
        let body = serde_json::to_vec_pretty(&done).map_err(|e| e.to_string())?;
        atomic_write(&build.join(COMPLETED), &body)
            .map_err(|e| format!("failed to write the completion marker: {e}"))?;
        note(&mut log, "installed".into());
        Ok(())
    }
}

/// Clear the group and other write bits of `dir` and everything under it (symlinks are not
/// followed), so the release is read-only to every user but the node's. Only write bits are
/// removed: what the build made unreadable stays so.
fn read_only_for_others(dir: &Path) -> std::io::Result<()> {
    let md = std::fs::symlink_metadata(dir)?;
    if md.file_type().is_symlink() {
        return Ok(());
    }
    let mode = md.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & !0o022))?;
    }
    if md.is_dir() {
        for e in std::fs::read_dir(dir)? {
            read_only_for_others(&e?.path())?;
        }
    }
    Ok(())
}

/// Load the manifest of an installed release.
pub fn load_manifest(dir: &Path) -> Result<SoftwareManifest, String> {
    let p = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&p)
        .map_err(|e| format!("failed to read `{}`: {e}", p.display()))?;
    SoftwareManifest::parse(&text).map_err(|e| format!("`{}`: {e}", p.display()))
}

/// Run a blocking fetch on a detached thread (see [`crate::link::off_thread`]): a shutdown never
/// waits for a download in flight.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    crate::link::off_thread(f)
        .await
        .ok_or_else(|| "background fetch thread failed".to_owned())
}
