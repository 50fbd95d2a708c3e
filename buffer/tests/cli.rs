//! The real `slapos-buffer` follows docs/cli.md: `--help` and `--version` on stdout with exit 0,
//! an unknown argument on stderr with exit 2 and a suggestion.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_slapos-buffer");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_version_and_unknown_arguments() {
    let o = run(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        text(&o.stdout).starts_with("usage: slapos-buffer"),
        "{}",
        text(&o.stdout)
    );
    assert!(o.stderr.is_empty(), "{}", text(&o.stderr));
    let o = run(&["-V"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        text(&o.stdout),
        format!("slapos-buffer {}\n", env!("CARGO_PKG_VERSION"))
    );
    let o = run(&["--confg", "b.toml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty());
    assert!(
        text(&o.stderr).contains("did you mean `--config`?"),
        "{}",
        text(&o.stderr)
    );
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("--config FILE is required"),
        "{}",
        text(&o.stderr)
    );
}
