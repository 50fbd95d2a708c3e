//! The workspace binaries the end-to-end tests run. They are built before the tests
//! (`cargo build --workspace --bins`, the first step of `scripts/test.sh`): a test never runs
//! cargo itself, it fails with the command to run when a binary is missing.

use std::path::PathBuf;

/// The directory holding the workspace binaries of the profile the tests were built with
/// (`target/debug` or `target/release`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().expect("executable dir");
    // Test executables live in `target/<profile>/deps/`, bench binaries in `target/<profile>/`.
    if dir.ends_with("deps") {
        dir.parent().expect("profile dir").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// Path of the workspace binary `name`; panics with the build command when it is missing.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    let release = if bin_dir().ends_with("release") {
        " --release"
    } else {
        ""
    };
    assert!(
        path.exists(),
        "binary {} not found: run `cargo build --workspace --bins{release}` before the tests \
         (scripts/test.sh does)",
        path.display()
    );
    path
}
