//! `rt-report`: prints the host's real-time readiness report as JSON (`rt` readiness).
//!
//! Usage: `rt-report [--root DIR]` (`--root` reads a fake `/proc`+`/sys` tree, for tests).
//! Exit codes: 0 report printed; 1 detection failed; 2 bad arguments.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let paths = match args.as_slice() {
        [] => rt::HostPaths::real(),
        [flag, dir] if flag == "--root" => rt::HostPaths::under(dir),
        _ => {
            eprintln!("usage: rt-report [--root DIR]");
            return ExitCode::from(2);
        }
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
