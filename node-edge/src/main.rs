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
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "slapos-node", version, about = "SlapOS edge node")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the node until SIGTERM/SIGINT.
    Run {
        /// Config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Create the partitions (idempotent) and register them with the master.
    Format {
        /// Config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
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
    let cli = Cli::parse();
    init_logs();
    match cli.cmd {
        Cmd::Format { config } => {
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
        Cmd::Run { config } => {
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
