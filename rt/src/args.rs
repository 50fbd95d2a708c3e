//! The argument conventions of rt's node-side binaries (`rt-probe`, `rt-report`), without clap
//! (docs/cli.md): `--help` prints the usage on stdout and exits 0, `--version` prints `NAME
//! VERSION` and exits 0, a bad argument is a usage error on stderr with exit 2, and an unknown
//! flag gets the nearest known one as a suggestion. rt-probe runs on the node as a promise;
//! clap (with suggestions) adds 41 % to it (402,200 → 567,144 bytes, static aarch64 musl,
//! `minsize`, measured with cross/build.sh), so these few lines do the same.

use std::process::ExitCode;

/// What a command line asks for.
#[derive(Debug, PartialEq)]
pub enum Parsed<T> {
    /// Run with these arguments.
    Run(T),
    /// `-h` / `--help`.
    Help,
    /// `-V` / `--version`.
    Version,
}

/// Turns a parse into the arguments, or prints help, version or the error and gives the exit
/// code to return (0 for help and version, 2 for a usage error).
pub fn handle<T>(
    tool: &str,
    usage: &str,
    parsed: Result<Parsed<T>, String>,
) -> Result<T, ExitCode> {
    match parsed {
        Ok(Parsed::Run(t)) => Ok(t),
        Ok(Parsed::Help) => {
            println!("{}", usage.trim_end());
            Err(ExitCode::SUCCESS)
        }
        Ok(Parsed::Version) => {
            println!("{tool} {}", env!("CARGO_PKG_VERSION"));
            Err(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{tool}: {e}\n\n{}", usage.trim_end());
            Err(ExitCode::from(2))
        }
    }
}

/// The message for an argument that is not in `known`, with the nearest one if it is close.
pub fn unknown(arg: &str, known: &[&str]) -> String {
    match closest(arg, known) {
        Some(k) => format!("unknown argument `{arg}`; did you mean `{k}`?"),
        None => format!("unknown argument `{arg}`"),
    }
}

/// The known word nearest to `given`: an edit distance of at most a third of its length (at
/// least 1), or `given` is a prefix of it of at least 4 characters.
pub fn closest<'a>(given: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| {
            let d = if given.len() >= 4 && k.starts_with(given) {
                0
            } else {
                strsim::levenshtein(given, k)
            };
            (d, *k)
        })
        .filter(|(d, k)| *d <= (k.len() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: &[&str] = &["--interval-us", "--loops", "--cpu", "--histogram", "--help"];

    #[test]
    fn suggestions_are_close_or_none() {
        assert_eq!(closest("--intervl-us", KNOWN), Some("--interval-us"));
        assert_eq!(closest("--loop", KNOWN), Some("--loops"));
        assert_eq!(closest("--hist", KNOWN), Some("--histogram"));
        assert_eq!(closest("--cpus", KNOWN), Some("--cpu"));
        assert_eq!(closest("--zzz", KNOWN), None);
        assert_eq!(closest("x", KNOWN), None);
        assert!(unknown("--lops", KNOWN).ends_with("did you mean `--loops`?"));
        assert_eq!(unknown("--zzz", KNOWN), "unknown argument `--zzz`");
    }

    #[test]
    fn help_and_version_exit_0_and_errors_2() {
        assert!(
            handle::<u8>("t", "usage: t", Ok(Parsed::Help)).is_err_and(|c| c == ExitCode::SUCCESS)
        );
        assert!(
            handle::<u8>("t", "usage: t", Ok(Parsed::Version))
                .is_err_and(|c| c == ExitCode::SUCCESS)
        );
        assert!(
            handle::<u8>("t", "usage: t", Err("bad".into())).is_err_and(|c| c == ExitCode::from(2))
        );
        assert_eq!(handle("t", "usage: t", Ok(Parsed::Run(7))), Ok(7));
    }
}
