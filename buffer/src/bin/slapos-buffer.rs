//! `slapos-buffer --config FILE` — the store-and-forward service of a partition.
//! `slapos-buffer status --config FILE` — prints the running instance's status (or, if it does
//! not answer, the on-disk state).
//!
//! On start it prints one line `READY {json}` on stdout with the bound addresses (ports given as
//! 0 in the config are chosen by the kernel), the epoch and the node id. SIGTERM/SIGINT stop it
//! cleanly: inputs stop, the open batch is written and synced, the cursor synced.
//! Exit codes: 0 clean stop (or `--help`/`--version`, on stdout), 1 startup error (config, lock
//! held, directory not writable), 2 bad arguments (an unknown one gets a "did you mean").

use anyhow::{Context, Result};
use buffer::config::{Config, InputCfg, OutputCfg, line_format, load_tls, read_password};
use buffer::input::{self, MqttIn, SerialIn, TcpIn};
use buffer::output::{self, HttpOut, MqttOut};
use buffer::service::Writer;
use buffer::{Log, server};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch;

const USAGE: &str = "\
usage: slapos-buffer [status] --config FILE

The store-and-forward service of a partition (docs/buffer.md).

Commands:
  (none)             run the service until SIGTERM/SIGINT
  status             print the running instance's status, or the on-disk state

Options:
  -c, --config FILE  the buffer's configuration
  -h, --help         print this help
  -V, --version      print the version
";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Invocation {
    Run { config: PathBuf, status: bool },
    Help,
    Version,
}

/// The known words, for "did you mean".
const KNOWN: &[&str] = &["status", "--config", "--help", "--version"];

fn parse_args(argv: &[String]) -> Result<Invocation, String> {
    let mut config: Option<PathBuf> = None;
    let mut status = false;
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (a.as_str(), None),
        };
        match flag {
            "-h" | "--help" => return Ok(Invocation::Help),
            "-V" | "--version" => return Ok(Invocation::Version),
            "-c" | "--config" => {
                let v = inline
                    .or_else(|| it.next().cloned())
                    .ok_or_else(|| format!("{flag} needs a value (FILE)"))?;
                config = Some(PathBuf::from(v));
            }
            "status" if !status => status = true,
            other => {
                let hint = closest(other, KNOWN)
                    .map(|k| format!("; did you mean `{k}`?"))
                    .unwrap_or_default();
                return Err(format!("unexpected argument `{other}`{hint}"));
            }
        }
    }
    let config = config.ok_or("--config FILE is required")?;
    Ok(Invocation::Run { config, status })
}

/// The known word nearest to `given` (edit distance at most a third of its length, at least 1),
/// if any.
fn closest<'a>(given: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim::levenshtein(given, k), *k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn main() -> Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let (path, status) = match parse_args(&argv) {
        Ok(Invocation::Run { config, status }) => (config, status),
        Ok(Invocation::Help) => {
            print!("{USAGE}");
            return Ok(());
        }
        Ok(Invocation::Version) => {
            println!("slapos-buffer {}", env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
        Err(e) => {
            eprintln!("slapos-buffer: {e}\n\n{USAGE}");
            std::process::exit(2)
        }
    };
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(match std::env::var("SLAPOS_BUFFER_LOG").as_deref() {
            Ok("debug") => tracing::Level::DEBUG,
            Ok("warn") => tracing::Level::WARN,
            _ => tracing::Level::INFO,
        });
    // SLAPOS_LOG_FORMAT=json: one JSON object per line, for log shippers.
    match std::env::var("SLAPOS_LOG_FORMAT").as_deref() {
        Ok("json") => logs.json().init(),
        Ok("text") | Err(_) => logs.init(),
        Ok(other) => {
            eprintln!(
                "slapos-buffer: SLAPOS_LOG_FORMAT={other:?}: expected `text` (the default) or `json`"
            );
            std::process::exit(2)
        }
    }
    let cfg = Config::load(&path)?;
    if status {
        return print_status(&cfg);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the tokio runtime")?;
    let handle = rt.handle().clone();
    let r = rt.block_on(run(cfg, handle));
    // An HTTPS request still on its blocking thread ends with its timeout; do not wait for it.
    rt.shutdown_timeout(Duration::from_secs(1));
    r
}

fn print_status(cfg: &Config) -> Result<()> {
    if let Some(addr) = &cfg.metrics.listen
        && let Ok((200, body)) = server::get(addr, "/status")
    {
        let v: serde_json::Value = serde_json::from_str(&body).context("status is not JSON")?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    // Not running (or no fixed metrics port): inspect the directory.
    let lc = cfg.log_config()?;
    let dir = lc.stream_dir();
    let cursor = std::fs::read(dir.join("CURSOR")).unwrap_or_default();
    let slot = buffer::segment::CursorSlot::pick(&cursor).unwrap_or_default();
    let mut segs = 0;
    let mut bytes = 0;
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd.flatten() {
            if let Some(n) = e.file_name().to_str()
                && buffer::segment::parse_seg_name(n).is_some()
            {
                segs += 1;
                bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    let dropped: serde_json::Map<String, serde_json::Value> = buffer::codec::GapReason::ALL
        .iter()
        .map(|r| {
            let n = slot.book.dropped(*r).0;
            (r.label().to_string(), n.into())
        })
        .collect();
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "running": false,
            "dir": dir,
            "epoch": slot.epoch,
            "acked_seq": slot.acked,
            "dropped": dropped,
            "gaps_waiting": slot.book.gaps().len(),
            "segments": segs,
            "segment_bytes": bytes,
        }))?
    );
    Ok(())
}

/// Output backoff: base 1 s, cap 2 min unless configured.
fn backoff(base_ms: Option<u64>, max_ms: Option<u64>) -> (Duration, Duration) {
    (
        Duration::from_millis(base_ms.unwrap_or(1000)),
        Duration::from_millis(max_ms.unwrap_or(120_000)),
    )
}

async fn run(cfg: Config, handle: tokio::runtime::Handle) -> Result<()> {
    let lc = cfg.log_config()?;
    let (log, rec) = Log::open(lc.clone()).with_context(|| {
        format!(
            "failed to open the buffer in `{}`",
            lc.stream_dir().display()
        )
    })?;
    tracing::info!(
        epoch = rec.epoch,
        acked = rec.acked,
        next_seq = rec.next_seq,
        truncated = rec.truncated_bytes,
        corrupt_records = rec.corrupt_records,
        damaged_headers = rec.damaged_headers,
        gaps_waiting = rec.pending_gaps,
        "buffer opened"
    );
    let sh = log.shared().clone();
    let (ingest, writer) = Writer::spawn(log, cfg.channel_bytes(), Some(handle))
        .context("failed to spawn the writer thread")?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut threads = Vec::new();

    let mut ready = serde_json::json!({
        "node_id": sh.node_id, "stream": sh.stream, "epoch": sh.epoch, "inputs": [],
    });
    if let Some(listen) = &cfg.metrics.listen {
        let l = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("failed to bind the metrics endpoint `{listen}`"))?;
        ready["metrics"] = l.local_addr()?.to_string().into();
        tasks.push(tokio::spawn(server::serve(
            l,
            sh.clone(),
            cfg.metrics.limits(),
            stop_rx.clone(),
        )));
    }
    for (i, inp) in cfg.inputs.iter().enumerate() {
        let source = i as u16;
        let mut desc = serde_json::json!({ "index": i });
        match inp.clone() {
            InputCfg::Tcp {
                listen,
                format,
                ack,
                idempotent,
                max_line,
            } => {
                let l = tokio::net::TcpListener::bind(&listen)
                    .await
                    .with_context(|| format!("failed to bind tcp input `{listen}`"))?;
                desc["type"] = "tcp".into();
                desc["listen"] = l.local_addr()?.to_string().into();
                let c = TcpIn {
                    format: line_format(format.as_deref())?,
                    ack,
                    idempotent,
                    source,
                    max_line: max_line.unwrap_or(64 << 10),
                };
                tasks.push(tokio::spawn(input::run_tcp(
                    ingest.clone(),
                    sh.clone(),
                    l,
                    c,
                    stop_rx.clone(),
                )));
            }
            InputCfg::Mqtt {
                host,
                port,
                client_id,
                topics,
                username,
                password: _,
                password_file,
                keep_alive_s,
                tls,
            } => {
                desc["type"] = "mqtt".into();
                let what = format!("input {i} (mqtt {host}:{port})");
                let password = read_password(&what, &password_file)?;
                let tls = load_tls(&what, &tls)?.map(|t| t.rustls()).transpose()?;
                let c = MqttIn {
                    host,
                    port,
                    client_id: client_id
                        .unwrap_or_else(|| format!("slapos-buffer-{}-in{i}", sh.stream)),
                    topics,
                    source,
                    keep_alive: Duration::from_secs(keep_alive_s.unwrap_or(30)),
                    username,
                    password,
                    tls,
                };
                tasks.push(tokio::spawn(input::run_mqtt(
                    ingest.clone(),
                    sh.clone(),
                    c,
                    stop_rx.clone(),
                )));
            }
            InputCfg::Serial {
                path,
                baud,
                format,
                max_line,
                ack,
            } => {
                desc["type"] = "serial".into();
                let c = SerialIn {
                    path,
                    baud: baud.unwrap_or(115_200),
                    format: line_format(format.as_deref())?,
                    source,
                    max_line: max_line.unwrap_or(64 << 10),
                    ack,
                };
                let (ing, sh2, stop) = (ingest.clone(), sh.clone(), stop_rx.clone());
                threads.push(
                    std::thread::Builder::new()
                        .name(format!("serial-{i}"))
                        .spawn(move || input::run_serial(ing, sh2, c, stop))
                        .context("failed to spawn the serial input thread")?,
                );
            }
            InputCfg::Opcua { .. } => {
                desc["type"] = "opcua".into();
                #[cfg(feature = "opcua")]
                {
                    let c = buffer::opcua::OpcuaIn::from_config(
                        inp,
                        source,
                        &lc.stream_dir().join(format!("opcua-{i}")),
                    )?;
                    tasks.push(tokio::spawn(buffer::opcua::run(
                        ingest.clone(),
                        sh.clone(),
                        c,
                        stop_rx.clone(),
                    )));
                }
                #[cfg(not(feature = "opcua"))]
                {
                    anyhow::bail!(
                        "an opcua input needs slapos-buffer built with the `opcua` feature"
                    );
                }
            }
        }
        if let Some(a) = ready["inputs"].as_array_mut() {
            a.push(desc);
        }
    }
    match cfg.output.clone() {
        Some(OutputCfg::Mqtt {
            host,
            port,
            client_id,
            topic,
            window,
            keep_alive_s,
            username,
            password: _,
            password_file,
            backoff_base_ms,
            backoff_max_ms,
            tls,
        }) => {
            let what = format!("output (mqtt {host}:{port})");
            let password = read_password(&what, &password_file)?;
            let tls = load_tls(&what, &tls)?.map(|t| t.rustls()).transpose()?;
            let c = MqttOut {
                host,
                port,
                client_id: client_id
                    .unwrap_or_else(|| format!("slapos-buffer-{}-{}", sh.node_id, sh.stream)),
                topic: topic.unwrap_or_else(|| "buffer/{stream}".into()),
                window: window.unwrap_or(64),
                keep_alive: Duration::from_secs(keep_alive_s.unwrap_or(30)),
                username,
                password,
                backoff: backoff(backoff_base_ms, backoff_max_ms),
                tls,
            };
            tasks.push(tokio::spawn(output::run_mqtt(
                sh.clone(),
                c,
                stop_rx.clone(),
            )));
        }
        Some(OutputCfg::Http {
            url,
            batch_records,
            batch_bytes,
            timeout_ms,
            backoff_base_ms,
            backoff_max_ms,
            tls,
        }) => {
            // https:// without a [output.tls] table: the system bundle, no client certificate.
            let tls = match (url.starts_with("https://"), tls) {
                (true, t) => load_tls(&format!("output ({url})"), &Some(t.unwrap_or_default()))?
                    .map(|t| t.ureq())
                    .transpose()?,
                (false, _) => None,
            };
            let c = HttpOut {
                url,
                batch_records: batch_records.unwrap_or(1000),
                batch_bytes: batch_bytes.unwrap_or(1 << 20),
                timeout: Duration::from_millis(timeout_ms.unwrap_or(30_000)),
                backoff: backoff(backoff_base_ms, backoff_max_ms),
                tls,
            };
            tasks.push(tokio::spawn(output::run_http(
                sh.clone(),
                c,
                stop_rx.clone(),
            )));
        }
        None => {}
    }
    println!("READY {ready}");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    // systemd Type=notify (dist/systemd/slapos-buffer.service): the watchdog is fed from this
    // current-thread runtime, so a stuck runtime stops the pings.
    match slapos_sdnotify::ready_from_env() {
        Ok(Some(dog)) => drop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(dog.every()).await;
                if let Err(e) = dog.ping() {
                    tracing::warn!("systemd watchdog: {e}");
                }
            }
        })),
        Ok(None) => {}
        Err(e) => tracing::warn!("systemd notification: {e}"),
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("failed to install the SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("stopping");
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    drop(ingest);
    let r = tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
        writer.join()
    })
    .await
    .context("writer thread")?;
    r.context("failed to close the buffer")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Invocation, String> {
        parse_args(&s.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
    }

    #[test]
    fn arguments_help_version_and_suggestions() {
        let run = |c: &str, status| {
            Ok(Invocation::Run {
                config: PathBuf::from(c),
                status,
            })
        };
        assert_eq!(parse("--config b.toml"), run("b.toml", false));
        assert_eq!(parse("status -c b.toml"), run("b.toml", true));
        assert_eq!(parse("--config=b.toml status"), run("b.toml", true));
        assert_eq!(parse("--help"), Ok(Invocation::Help));
        assert_eq!(parse("--config x -V"), Ok(Invocation::Version));
        assert!(parse("").unwrap_err().contains("--config FILE is required"));
        assert!(parse("--config").unwrap_err().contains("needs a value"));
        let e = parse("--confg b.toml").unwrap_err();
        assert!(e.contains("did you mean `--config`"), "{e}");
        let e = parse("stauts --config b.toml").unwrap_err();
        assert!(e.contains("did you mean `status`"), "{e}");
        let e = parse("--config b.toml --zzzzzz").unwrap_err();
        assert!(!e.contains("did you mean"), "{e}");
    }
}
