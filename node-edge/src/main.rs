//! `slapos-node`: the edge node binary.
//!
//! ```text
//! slapos-node run --config node.toml [--metrics-file F]   # follow the master, converge partitions
//! slapos-node format --config node.toml   # create partitions, register (exit 2: master offline)
//! slapos-node enroll --config node.toml --token-file F [--ca ca.pem]   # get the computer's identity
//! slapos-node bang --config node.toml [--partition slappart0] -m MESSAGE   # have it processed again
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
       slapos-node run --config <FILE> [--metrics-file <FILE>]
       slapos-node enroll --config <FILE> (--token-file <FILE> | --token <TOKEN>) [--ca <FILE>]
       slapos-node bang --config <FILE> [--partition <ID>] -m <MESSAGE>

Commands:
  run     Run the node until SIGTERM/SIGINT
  format  Create the partitions (idempotent) and register them with the master
  enroll  Redeem a one-time token (slapos-master token create) for this computer's
          certificate; stores key, certificate and master CA (https:// master_url)
  bang    Tell the master something is wrong: the partition's instance tree (or,
          without --partition, the computer's instances) is processed again

Options:
  -c, --config <FILE>  Config file (TOML)
      --token-file <FILE>
                       Read the enrollment token from FILE, `-` for stdin (enroll)
      --token <TOKEN>  Enrollment token on the command line (enroll; other users see
                       it in `ps`: prefer --token-file)
      --ca <FILE>      The master's CA certificate (enroll; default: master_ca)
  -m, --message <TEXT> Why (bang)
      --partition <ID> The partition that bangs, e.g. slappart0 (bang; default: the
                       whole computer)
      --metrics-file <FILE>
                       Write partition usage as a node_exporter textfile there on each
                       sample (run; overrides usage_metrics_file)
  -h, --help           Print help
  -V, --version        Print version
";

#[derive(Debug, PartialEq)]
enum Cmd {
    Run(PathBuf, Option<PathBuf>),
    Format(PathBuf),
    Enroll {
        config: PathBuf,
        token: Token,
        ca: Option<PathBuf>,
    },
    Bang {
        config: PathBuf,
        partition: Option<String>,
        message: String,
    },
    Help,
    Version,
}

/// Where `enroll` takes its one-time token from.
#[derive(Debug, PartialEq)]
enum Token {
    Inline(String),
    /// A file, or standard input for `-`: the token stays out of the process list.
    File(PathBuf),
}

impl Token {
    /// The token, surrounding white space (a file's final newline) removed.
    fn read(&self) -> anyhow::Result<String> {
        let (text, from) = match self {
            Token::Inline(t) => return Ok(t.trim().to_owned()),
            Token::File(p) if p.as_os_str() == "-" => {
                let mut t = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut t)
                    .context("read the enrollment token from standard input")?;
                (t, "standard input".to_owned())
            }
            Token::File(p) => (
                std::fs::read_to_string(p)
                    .with_context(|| format!("read the enrollment token from {}", p.display()))?,
                p.display().to_string(),
            ),
        };
        let t = text.trim();
        anyhow::ensure!(
            !t.is_empty(),
            "no enrollment token in {from}: put the token `slapos-master token create` printed there"
        );
        Ok(t.to_owned())
    }
}

/// Parses the command line. A hand-written parser rather than clap: three subcommands with
/// three options do not pay for clap's ~130 KB in the static node binary (docs/cross.md, size
/// goal).
fn parse(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Cmd, String> {
    let mut sub = None;
    let (mut config, mut token, mut token_file, mut ca) = (None, None, None, None);
    let (mut metrics, mut message, mut partition) = (None, None, None);
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        let a = a
            .into_string()
            .map_err(|a| format!("argument {a:?} is not valid UTF-8"))?;
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_owned())),
            _ => (a.as_str(), None),
        };
        let slot = match name {
            "-h" | "--help" | "help" => return Ok(Cmd::Help),
            "-V" | "--version" => return Ok(Cmd::Version),
            "-c" | "--config" => &mut config,
            "--token" => &mut token,
            "--token-file" => &mut token_file,
            "--ca" => &mut ca,
            "--metrics-file" => &mut metrics,
            "-m" | "--message" => &mut message,
            "--partition" => &mut partition,
            "run" | "format" | "enroll" | "bang" if sub.is_none() && inline.is_none() => {
                sub = Some(a);
                continue;
            }
            _ => return Err(format!("unexpected argument '{a}'")),
        };
        let v = match inline {
            Some(v) => v,
            None => args
                .next()
                .ok_or_else(|| format!("{name} needs a value"))?
                .into_string()
                .map_err(|v| format!("{name} {v:?}: not valid UTF-8"))?,
        };
        if v.is_empty() {
            return Err(format!("{name} needs a value"));
        }
        *slot = Some(v);
    }
    let sub = sub.ok_or("a command is required: run, format, enroll or bang")?;
    let config = PathBuf::from(config.ok_or_else(|| format!("'{sub}' needs --config <FILE>"))?);
    if metrics.is_some() && sub != "run" {
        return Err(format!(
            "--metrics-file is an option of 'run', not of '{sub}'"
        ));
    }
    if (message.is_some() || partition.is_some()) && sub != "bang" {
        return Err(format!(
            "--message and --partition are options of 'bang', not of '{sub}'"
        ));
    }
    match sub.as_str() {
        "bang" => Ok(Cmd::Bang {
            config,
            partition,
            message: message.ok_or("'bang' needs -m <MESSAGE>")?,
        }),
        "enroll" => Ok(Cmd::Enroll {
            config,
            token: match (token, token_file) {
                (Some(t), None) => Token::Inline(t),
                (None, Some(f)) => Token::File(PathBuf::from(f)),
                (Some(_), Some(_)) => return Err("give --token or --token-file, not both".into()),
                (None, None) => {
                    return Err(
                        "'enroll' needs --token-file <FILE> or --token <TOKEN> (from \
                                slapos-master token create)"
                            .into(),
                    );
                }
            },
            ca: ca.map(PathBuf::from),
        }),
        _ if token.is_some() || token_file.is_some() || ca.is_some() => Err(format!(
            "--token, --token-file and --ca are options of 'enroll', not of '{sub}'"
        )),
        "run" => Ok(Cmd::Run(config, metrics.map(PathBuf::from))),
        _ => Ok(Cmd::Format(config)),
    }
}

fn init_logs() {
    let format = node_edge::log::format_from_env().unwrap_or_else(|e| {
        eprintln!("slapos-node: {e}");
        std::process::exit(2)
    });
    node_edge::log::init(node_edge::log::level_from_env(), format);
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
        Cmd::Enroll { config, token, ca } => {
            let cfg = node_edge::Config::from_file(&config)?;
            let token = token.read()?;
            match node_edge::link::identity::enroll(&cfg, &token, ca.as_deref()) {
                Ok(e) => {
                    println!(
                        "enrolled as {} (certificate serial {}){}\n  key:         {} (0600)\n  \
                         certificate: {}\n  master CA:   {}",
                        e.identity,
                        e.serial,
                        if e.replaced {
                            "; the previous identity was replaced (revoke it on the master)"
                        } else {
                            ""
                        },
                        e.key.display(),
                        e.cert.display(),
                        e.ca.display()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Cmd::Bang {
            config,
            partition,
            message,
        } => {
            let cfg = node_edge::Config::from_file(&config)?;
            let p = partition
                .map(slapos_proto::PartitionId::parse)
                .transpose()
                .context("--partition")?;
            let what = node_edge::bang(&cfg, p.as_ref(), &message)?;
            println!("banged {what}: {message}");
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
        Cmd::Run(config, metrics) => {
            let mut cfg = node_edge::Config::from_file(&config)?;
            if let Some(m) = metrics {
                cfg.usage_metrics_file = Some(m);
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("failed to build the tokio runtime")?;
            let res = rt.block_on(async {
                // systemd Type=notify: ready once the loop runs; the watchdog is fed from this
                // runtime, so a stuck loop stops the pings (dist/systemd/slapos-node.service).
                match slapos_sdnotify::ready_from_env() {
                    Ok(Some(dog)) => drop(tokio::spawn(async move {
                        loop {
                            tokio::time::sleep(dog.every()).await;
                            let _ = dog.ping();
                        }
                    })),
                    Ok(None) => {}
                    Err(e) => tracing::warn!("systemd notification: {e}"),
                }
                node_edge::run(cfg, signalled()).await
            });
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
        assert_eq!(
            p(&["run", "--config", "n.toml"]),
            Ok(Cmd::Run(c.clone(), None))
        );
        assert_eq!(p(&["-c", "n.toml", "format"]), Ok(Cmd::Format(c.clone())));
        assert_eq!(
            p(&["run", "--metrics-file=/m.prom", "--config=n.toml"]),
            Ok(Cmd::Run(c, Some("/m.prom".into())))
        );
        assert!(p(&["format", "-c", "n.toml", "--metrics-file", "m"]).is_err());
        assert_eq!(p(&["--help"]), Ok(Cmd::Help));
        assert_eq!(p(&["run", "-V"]), Ok(Cmd::Version));
        assert!(p(&[]).unwrap_err().contains("run, format, enroll or bang"));
        assert_eq!(
            p(&[
                "bang",
                "-c",
                "n.toml",
                "-m",
                "disk full",
                "--partition=slappart1"
            ]),
            Ok(Cmd::Bang {
                config: PathBuf::from("n.toml"),
                partition: Some("slappart1".into()),
                message: "disk full".into(),
            })
        );
        assert!(p(&["bang", "-c", "n.toml"]).unwrap_err().contains("-m"));
        assert!(
            p(&["run", "-c", "n.toml", "-m", "x"])
                .unwrap_err()
                .contains("of 'bang'")
        );
        assert!(p(&["run"]).unwrap_err().contains("--config"));
        assert!(
            p(&["run", "--config"])
                .unwrap_err()
                .contains("needs a value")
        );
        assert!(p(&["run", "run", "-c", "x"]).unwrap_err().contains("'run'"));
        assert!(p(&["start", "-c", "x"]).unwrap_err().contains("'start'"));
        let enroll = |ca: Option<&str>| Cmd::Enroll {
            config: PathBuf::from("n.toml"),
            token: Token::Inline("T0k".into()),
            ca: ca.map(PathBuf::from),
        };
        assert_eq!(
            p(&["enroll", "-c", "n.toml", "--token", "T0k"]),
            Ok(enroll(None))
        );
        assert_eq!(
            p(&["--token=T0k", "enroll", "--config=n.toml", "--ca", "ca.pem"]),
            Ok(enroll(Some("ca.pem")))
        );
        assert!(
            p(&["enroll", "-c", "n.toml"])
                .unwrap_err()
                .contains("--token")
        );
        assert!(
            p(&["enroll", "--token"])
                .unwrap_err()
                .contains("needs a value")
        );
        assert!(
            p(&["enroll", "--token="])
                .unwrap_err()
                .contains("needs a value")
        );
        assert!(
            p(&["run", "-c", "n.toml", "--token", "x"])
                .unwrap_err()
                .contains("of 'enroll'")
        );
        assert!(p(&["--run=x"]).unwrap_err().contains("'--run=x'"));
        assert_eq!(
            p(&["enroll", "-c", "n.toml", "--token-file", "-"]),
            Ok(Cmd::Enroll {
                config: PathBuf::from("n.toml"),
                token: Token::File(PathBuf::from("-")),
                ca: None,
            })
        );
        assert!(
            p(&[
                "enroll",
                "-c",
                "n.toml",
                "--token",
                "a",
                "--token-file",
                "f"
            ])
            .unwrap_err()
            .contains("not both")
        );
        assert!(
            p(&["format", "-c", "n.toml", "--token-file", "f"])
                .unwrap_err()
                .contains("of 'enroll'")
        );
    }

    #[test]
    fn token_sources() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "  T0k3n\n").unwrap();
        assert_eq!(Token::File(f.clone()).read().unwrap(), "T0k3n");
        assert_eq!(Token::Inline("T0k3n".into()).read().unwrap(), "T0k3n");
        std::fs::write(&f, "\n").unwrap();
        let e = Token::File(f.clone()).read().unwrap_err().to_string();
        assert!(
            e.contains("no enrollment token in") && e.contains("token"),
            "{e}"
        );
        let missing = dir.path().join("absent");
        let e = format!("{:#}", Token::File(missing).read().unwrap_err());
        assert!(e.contains("absent"), "{e}");
    }
}
