//! `slapos-node`: the edge node binary.
//!
//! ```text
//! slapos-node run --config node.toml      # follow the master, converge partitions
//! slapos-node format --config node.toml   # create partitions, register (exit 2: master offline)
//! ```
//!
//! Logs go to stderr (`SLAPOS_LOG=debug|info|warn|error`, default `info`). SIGTERM and SIGINT
//! stop every service cleanly before exiting.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

const USAGE: &str = "\
SlapOS edge node

Usage: slapos-node <COMMAND> --config <FILE>

Commands:
  run     Run the node until SIGTERM/SIGINT
  format  Create the partitions (idempotent) and register them with the master

Options:
  -c, --config <FILE>  Config file (TOML)
  -h, --help           Print help
  -V, --version        Print version
";

#[derive(Debug, PartialEq)]
enum Cmd {
    Run(PathBuf),
    Format(PathBuf),
    Help,
    Version,
}

/// Parses the command line. A hand-written parser rather than clap: two subcommands with one
/// option do not pay for clap's ~130 KB in the static node binary (docs/cross.md, size goal).
fn parse(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Cmd, String> {
    let mut sub = None;
    let mut config = None;
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        let a = a
            .into_string()
            .map_err(|a| format!("argument {a:?} is not valid UTF-8"))?;
        match a.as_str() {
            "-h" | "--help" | "help" => return Ok(Cmd::Help),
            "-V" | "--version" => return Ok(Cmd::Version),
            "-c" | "--config" => {
                let v = args
                    .next()
                    .ok_or_else(|| format!("{a} needs a value: {a} <FILE>"))?;
                config = Some(PathBuf::from(v));
            }
            _ if a.starts_with("--config=") => {
                config = Some(PathBuf::from(&a["--config=".len()..]))
            }
            "run" | "format" if sub.is_none() => sub = Some(a),
            _ => return Err(format!("unexpected argument '{a}'")),
        }
    }
    let sub = sub.ok_or("a command is required: run or format")?;
    let config = config.ok_or_else(|| format!("'{sub}' needs --config <FILE>"))?;
    Ok(if sub == "run" {
        Cmd::Run(config)
    } else {
        Cmd::Format(config)
    })
}

fn init_logs() {
    let level = match std::env::var("SLAPOS_LOG").as_deref() {
        Ok("trace") => tracing::Level::TRACE,
        Ok("debug") => tracing::Level::DEBUG,
        Ok("warn") => tracing::Level::WARN,
        Ok("error") => tracing::Level::ERROR,
        _ => tracing::Level::INFO,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .init();
}

async fn signalled() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => tracing::info!("SIGTERM"),
                _ = i.recv() => tracing::info!("SIGINT"),
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!("cannot install signal handlers ({e}); stop with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
}

fn main() -> anyhow::Result<ExitCode> {
    let cmd = match parse(std::env::args_os().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}\n\n{USAGE}");
            return Ok(ExitCode::from(2));
        }
    };
    init_logs();
    match cmd {
        Cmd::Help => {
            print!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Version => {
            println!("slapos-node {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Format(config) => {
            let cfg = node_edge::Config::from_file(&config)?;
            let online = node_edge::format(&cfg)?;
            println!(
                "{} partitions formatted under {}{}",
                cfg.partitions,
                cfg.instance_root.display(),
                if online {
                    "; registered"
                } else {
                    "; master offline, not registered"
                }
            );
            Ok(if online {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        Cmd::Run(config) => {
            let cfg = node_edge::Config::from_file(&config)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("failed to build the tokio runtime")?;
            let res = rt.block_on(node_edge::run(cfg, signalled()));
            // Link calls in flight run on detached threads; nothing else is left to wait for.
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
            res?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Cmd, String> {
        parse(args.iter().map(std::ffi::OsString::from))
    }

    #[test]
    fn command_line() {
        let c = PathBuf::from("n.toml");
        assert_eq!(p(&["run", "--config", "n.toml"]), Ok(Cmd::Run(c.clone())));
        assert_eq!(p(&["-c", "n.toml", "format"]), Ok(Cmd::Format(c.clone())));
        assert_eq!(p(&["run", "--config=n.toml"]), Ok(Cmd::Run(c)));
        assert_eq!(p(&["--help"]), Ok(Cmd::Help));
        assert_eq!(p(&["run", "-V"]), Ok(Cmd::Version));
        assert!(p(&[]).unwrap_err().contains("run or format"));
        assert!(p(&["run"]).unwrap_err().contains("--config"));
        assert!(
            p(&["run", "--config"])
                .unwrap_err()
                .contains("needs a value")
        );
        assert!(p(&["run", "run", "-c", "x"]).unwrap_err().contains("'run'"));
        assert!(p(&["start", "-c", "x"]).unwrap_err().contains("'start'"));
    }
}
