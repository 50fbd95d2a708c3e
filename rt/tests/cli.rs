//! The real `rt-probe` and `rt-report` follow docs/cli.md: `--help` and `--version` on stdout
//! with exit 0, an unknown flag on stderr with exit 2 and a suggestion.

use std::process::{Command, Output};

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin).args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_version_and_unknown_flags() {
    for (bin, name, typo, meant) in [
        (
            env!("CARGO_BIN_EXE_rt-probe"),
            "rt-probe",
            "--interval",
            "--interval-us",
        ),
        (
            env!("CARGO_BIN_EXE_rt-report"),
            "rt-report",
            "--roots",
            "--root",
        ),
    ] {
        let o = run(bin, &["--help"]);
        assert_eq!(o.status.code(), Some(0), "{name} --help");
        assert!(
            text(&o.stdout).starts_with(&format!("usage: {name}")),
            "{}",
            text(&o.stdout)
        );
        assert!(o.stderr.is_empty(), "{}", text(&o.stderr));
        let o = run(bin, &["--version"]);
        assert_eq!(o.status.code(), Some(0), "{name} --version");
        assert_eq!(
            text(&o.stdout),
            format!("{name} {}\n", env!("CARGO_PKG_VERSION"))
        );
        let o = run(bin, &[typo, "1"]);
        assert_eq!(o.status.code(), Some(2), "{name} {typo}");
        assert!(o.stdout.is_empty());
        let err = text(&o.stderr);
        assert!(err.contains(&format!("did you mean `{meant}`?")), "{err}");
    }
}
