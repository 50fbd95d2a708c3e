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
