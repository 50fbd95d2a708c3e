//! Installing releases into a temp software root: the examples, http sources, bad hashes and
//! failing build steps (never half-installed).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use node_edge::fetch::{Fetcher, sha256_hex};
use node_edge::install::{COMPLETED, Installer, load_manifest};
use slapos_proto::{SoftwareType, SoftwareUrl};

fn installer(root: &Path) -> Installer {
    Installer::new(
        root,
        Fetcher::new(
            Duration::from_secs(30),
            std::path::Path::new("/nonexistent/ca.pem"),
        ),
    )
}

/// Names in `root`, sorted.
fn entries(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root)
        .map(|r| {
            r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Copy an example release into `dir` so a test can break it.
fn copy_example(name: &str, dir: &Path) -> PathBuf {
    let src = Path::new(&common::example(name))
        .parent()
        .unwrap()
        .to_path_buf();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    dir.join("software.toml")
}

#[tokio::test]
async fn installs_hello_web_example() {
    if !common::have_python() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let url = SoftwareUrl::parse(common::example("hello-web")).unwrap();
    let inst = installer(root.path());
    assert!(inst.installed(&url).is_none());
    let dir = inst.install(&url).await.unwrap();
    assert_eq!(dir, root.path().join(url.hash()));
    assert!(dir.join(COMPLETED).is_file());
    // The launcher baked in the final directory, not the build directory.
    let launcher = std::fs::read_to_string(dir.join("bin/hello-web")).unwrap();
    assert!(
        launcher.contains(&format!("{}/server.py", dir.display())),
        "{launcher}"
    );
    let mode = std::fs::metadata(dir.join("bin/hello-web"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111);
    assert!(dir.join("__pycache__").is_dir());
    let m = load_manifest(&dir).unwrap();
    assert!(m.profile(&SoftwareType::default()).is_ok());
    let log = std::fs::read_to_string(dir.join(".slapos-build.log")).unwrap();
    assert!(
        log.contains("sha256 verified") && log.contains("build step `launcher` done"),
        "{log}"
    );
    // Only the release directory is left in the root.
    assert_eq!(entries(root.path()), [url.hash()]);
    // Installing again is a no-op.
    assert_eq!(inst.install(&url).await.unwrap(), dir);
    inst.remove(&url).unwrap();
    assert!(entries(root.path()).is_empty());
    inst.remove(&url).unwrap();
}

#[tokio::test]
async fn an_install_tells_each_step_as_it_starts() {
    let root = tempfile::tempdir().unwrap();
    let url = SoftwareUrl::parse(common::example("hello-web")).unwrap();
    let steps = std::sync::Mutex::new(Vec::new());
    installer(root.path())
        .install_with(&url, &|line: &str| {
            steps.lock().unwrap().push(line.to_owned())
        })
        .await
        .unwrap();
    let steps = steps.into_inner().unwrap();
    assert!(steps[0].starts_with("fetching manifest "), "{steps:?}");
    assert!(
        steps.iter().any(|s| s.starts_with("fetching artifact ")),
        "{steps:?}"
    );
    assert!(
        steps.iter().any(|s| s == "build step `launcher` done"),
        "{steps:?}"
    );
    assert_eq!(steps.last().map(String::as_str), Some("installed"));
}

#[tokio::test]
async fn installs_flaky_example_through_file_url() {
    let root = tempfile::tempdir().unwrap();
    let url = SoftwareUrl::parse(format!("file://{}", common::example("flaky"))).unwrap();
    let dir = installer(root.path()).install(&url).await.unwrap();
    let mode = std::fs::metadata(dir.join("flaky.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    let log = std::fs::read_to_string(dir.join(".slapos-build.log")).unwrap();
    assert!(log.contains("scripts ok"), "{log}");
}

/// A static file server for `dir` on 127.0.0.1:0 (one thread per connection).
fn serve_dir(dir: PathBuf) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let dir = dir.clone();
            std::thread::spawn(move || {
                let mut line = String::new();
                let mut r = BufReader::new(s.try_clone().unwrap());
                r.read_line(&mut line).unwrap();
                loop {
                    let mut h = String::new();
                    r.read_line(&mut h).unwrap();
                    if h.trim().is_empty() {
                        break;
                    }
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let name = path.trim_start_matches("/sr/");
                match std::fs::read(dir.join(name)) {
                    Ok(b) => {
                        write!(
                            s,
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            b.len()
                        )
                        .unwrap();
                        s.write_all(&b).unwrap();
                    }
                    Err(_) => {
                        write!(s, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
                    }
                }
            });
        }
    });
    base
}

#[tokio::test]
async fn installs_over_http_with_relative_artifacts() {
    let src = tempfile::tempdir().unwrap();
    copy_example("flaky", src.path());
    let base = serve_dir(src.path().to_path_buf());
    let root = tempfile::tempdir().unwrap();
    let url = SoftwareUrl::parse(format!("{base}/sr/software.toml")).unwrap();
    let dir = installer(root.path()).install(&url).await.unwrap();
    assert_eq!(
        std::fs::read(dir.join("check.sh")).unwrap(),
        std::fs::read(src.path().join("check.sh")).unwrap()
    );
}

#[tokio::test]
async fn bad_hash_reports_an_error_and_leaves_nothing_half_installed() {
    let src = tempfile::tempdir().unwrap();
    let manifest = copy_example("flaky", src.path());
    let good = sha256_hex(&std::fs::read(src.path().join("check.sh")).unwrap());
    let text = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace(&good, &"0".repeat(64));
    std::fs::write(&manifest, text).unwrap();

    let root = tempfile::tempdir().unwrap();
    let url = SoftwareUrl::parse(manifest.display().to_string()).unwrap();
    let inst = installer(root.path());
    let err = inst.install(&url).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("sha256 mismatch") && msg.contains(&good),
        "{msg}"
    );
    assert!(
        err.log_tail.contains("fetching artifact"),
        "{}",
        err.log_tail
    );
    assert!(inst.installed(&url).is_none());
    // Only the failure log remains: no release dir, no build dir.
    assert_eq!(
        entries(root.path()),
        [format!(".failed-{}.log", url.hash())]
    );
}

#[tokio::test]
async fn failing_build_step_reports_its_log_tail() {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("a.txt"), "data").unwrap();
    std::fs::write(src.path().join("instance.toml.in"), "").unwrap();
    let manifest = src.path().join("software.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"
[[artifact]]
url = "a.txt"
sha256 = "{}"
[[artifact]]
url = "instance.toml.in"
sha256 = "{}"
[[build]]
name = "ok-step"
command = ["sh", "-c", "echo first step fine"]
[[build]]
name = "bad-step"
command = ["sh", "-c", "echo compiling; echo 'fatal: out of cheese' >&2; exit 7"]
[instance]
default = "instance.toml.in"
"#,
            sha256_hex(b"data"),
            sha256_hex(b"")
        ),
    )
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    let url = SoftwareUrl::parse(manifest.display().to_string()).unwrap();
    let inst = installer(root.path());
    let err = inst.install(&url).await.unwrap_err();
    assert!(
        err.reason.contains("build step `bad-step` failed") && err.reason.contains('7'),
        "{err}"
    );
    assert!(
        err.log_tail.contains("fatal: out of cheese"),
        "{}",
        err.log_tail
    );
    assert!(err.to_string().contains("build log tail"), "{err}");
    assert!(inst.installed(&url).is_none());
    assert!(!root.path().join(url.hash()).exists());
    assert!(
        !entries(root.path())
            .iter()
            .any(|e| e.starts_with(".build-"))
    );

    // A missing instance profile after the build is an error too.
    std::fs::write(
        &manifest,
        format!(
            "[[artifact]]\nurl = \"a.txt\"\nsha256 = \"{}\"\n[instance]\ndefault = \"nope.toml.in\"\n",
            sha256_hex(b"data")
        ),
    )
    .unwrap();
    let err = inst.install(&url).await.unwrap_err();
    assert!(err.reason.contains("nope.toml.in"), "{err}");
}

#[tokio::test]
async fn leftover_build_dirs_are_cleaned() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join(".build-abc/x")).unwrap();
    installer(root.path()).clean_leftovers();
    assert!(entries(root.path()).is_empty());
}

/// A release in `dir`: `files` as artifacts (name, content, mode), `steps` as `sh -c` build
/// steps, `profile` as its default instance profile.
fn release_with(
    dir: &Path,
    files: &[(&str, &str, &str)],
    steps: &[&str],
    profile: &str,
) -> SoftwareUrl {
    let mut m = String::new();
    for (name, content, mode) in
        files
            .iter()
            .copied()
            .chain([("instance.toml.in", profile, "0644")])
    {
        std::fs::write(dir.join(name), content).unwrap();
        m.push_str(&format!(
            "[[artifact]]\nurl = \"{name}\"\nsha256 = \"{}\"\nmode = \"{mode}\"\n",
            sha256_hex(content.as_bytes())
        ));
    }
    for (i, s) in steps.iter().enumerate() {
        m.push_str(&format!(
            "[[build]]\nname = \"s{i}\"\ncommand = [\"sh\", \"-c\", {s:?}]\n"
        ));
    }
    m.push_str("[instance]\ndefault = \"instance.toml.in\"\n");
    std::fs::write(dir.join("software.toml"), m).unwrap();
    SoftwareUrl::parse(dir.join("software.toml").display().to_string()).unwrap()
}

#[tokio::test]
async fn releases_are_sealed_without_setuid_or_shared_write_bits() {
    let src = tempfile::tempdir().unwrap();
    let url = release_with(
        src.path(),
        &[("suid", "#!/bin/sh\n", "4755"), ("plain", "x", "0666")],
        &["echo x > made && chmod 6775 made && mkdir -p d && chmod 1777 d"],
        "",
    );
    let root = tempfile::tempdir().unwrap();
    let dir = installer(root.path()).install(&url).await.unwrap();
    let mode = |p: &str| std::fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("suid"), 0o755);
    assert_eq!(mode("plain"), 0o644);
    assert_eq!(mode("made"), 0o755);
    assert_eq!(mode("d"), 0o755);
    assert_eq!(mode("."), 0o755);
}

#[tokio::test]
async fn special_files_unfiltered_profiles_and_huge_errors_fail_the_install() {
    let root = tempfile::tempdir().unwrap();
    let inst = installer(root.path());
    // A FIFO left by a build step.
    let src = tempfile::tempdir().unwrap();
    let url = release_with(src.path(), &[], &["mkfifo pipe"], "");
    let err = inst.install(&url).await.unwrap_err();
    assert!(
        err.reason.contains("pipe") && err.reason.contains("a FIFO"),
        "{err}"
    );
    // A profile printing a parameter unfiltered: refused with its name and line.
    let src = tempfile::tempdir().unwrap();
    let url = release_with(src.path(), &[], &[], "a = 1\nperiod = {{ parameters.p }}\n");
    let err = inst.install(&url).await.unwrap_err();
    assert!(
        err.reason.contains("instance.toml.in") && err.reason.contains("line 2"),
        "{err}"
    );
    // An 800 KB error: the report is at most 4 KiB, with the log's end.
    let src = tempfile::tempdir().unwrap();
    let url = release_with(
        src.path(),
        &[],
        &["head -c 800000 /dev/zero | tr '\\0' e; echo; echo the-end; exit 3"],
        "",
    );
    let err = inst.install(&url).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.len() <= 4096, "{}", msg.len());
    assert!(msg.contains("the-end"), "{msg}");
    // Only failure logs are left.
    assert!(
        entries(root.path())
            .iter()
            .all(|e| e.starts_with(".failed-"))
    );
}

#[tokio::test]
async fn builds_run_as_the_builder_and_read_only_what_it_may() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("not root: builder test skipped");
        return;
    }
    let nobody = node_edge::host::isolation::Identity {
        uid: 65534,
        gid: 65534,
    };
    let src = tempfile::tempdir().unwrap();
    std::fs::set_permissions(src.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let url = release_with(src.path(), &[], &["id -u > uid; id -g > gid"], "");
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let inst = installer(root.path()).with_builder(Some(nobody));
    let dir = inst.install(&url).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("uid")).unwrap().trim(),
        "65534"
    );
    // Handed over to the node.
    use std::os::unix::fs::MetadataExt;
    for p in [".", "uid", ".slapos-build.log", "instance.toml.in"] {
        assert_eq!(std::fs::metadata(dir.join(p)).unwrap().uid(), 0, "{p}");
    }
    // A root-only source: refused as the builder, and its hash is not disclosed.
    let secret = src.path().join("secret");
    std::fs::write(&secret, "s3cret").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let src2 = tempfile::tempdir().unwrap();
    std::fs::set_permissions(src2.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let m = format!(
        "[[artifact]]\nurl = \"file://{}\"\nsha256 = \"{}\"\n[instance]\ndefault = \"secret\"\n",
        secret.display(),
        "0".repeat(64)
    );
    std::fs::write(src2.path().join("software.toml"), m).unwrap();
    let url = SoftwareUrl::parse(src2.path().join("software.toml").display().to_string()).unwrap();
    let err = inst.install(&url).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("ermission denied"), "{msg}");
    assert!(!msg.contains(&sha256_hex(b"s3cret")), "{msg}");
}
