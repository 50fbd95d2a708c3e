//! `rt-report`: prints the host's real-time readiness report as JSON (`rt` readiness).
//!
//! Usage: `rt-report [--root DIR]` (`--root` reads a fake `/proc`+`/sys` tree, for tests).
//! Exit codes: 0 report printed (or `--help`/`--version`, on stdout); 1 detection failed; 2 bad
//! arguments (an unknown flag gets a "did you mean").

use std::process::ExitCode;

use rt::args::Parsed;

const USAGE: &str = "usage: rt-report [--root DIR] [--help] [--version]

Prints the host's real-time readiness report as JSON. --root DIR reads a /proc and /sys tree
under DIR instead of the host's. Exit 0: printed; 1: detection failed; 2: bad arguments.";

fn parse_args(argv: &[String]) -> Result<Parsed<Option<String>>, String> {
    let mut root = None;
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "-V" | "--version" => return Ok(Parsed::Version),
            "--root" => {
                root = Some(it.next().cloned().ok_or("--root needs a value (DIR)")?);
            }
            other => return Err(rt::args::unknown(other, &["--root", "--help", "--version"])),
        }
    }
    Ok(Parsed::Run(root))
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let paths = match rt::args::handle("rt-report", USAGE, parse_args(&argv)) {
        Ok(None) => rt::HostPaths::real(),
        Ok(Some(dir)) => rt::HostPaths::under(dir),
        Err(code) => return code,
    };
    match rt::HostReport::detect_with(&paths) {
        Ok(report) => match serde_json::to_string_pretty(&report) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("rt-report: cannot encode the report: {e}");
                ExitCode::from(1)
            }
        },
        Err(e) => {
            eprintln!("rt-report: {e}");
            ExitCode::from(1)
        }
    }
}
