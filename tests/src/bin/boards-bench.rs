//! `boards-bench`: boot time of the QEMU boards, node included, against the bare boot as anchor.
//!
//! ```text
//! cargo build -p master-lite -p slapos-tests --bins
//! target/debug/boards-bench [--runs N] [BOARD...]     # default: every bootable board, 3 runs
//! ```
//!
//! Per run and board, two boots with the same kernel, modules and QEMU command:
//! * **anchor**: the initramfs holds only PID 1 (`edge-init`): modules loaded, network up, power
//!   off. It is the floor any node start-up sits on (the reference boot of docs/cross.md).
//! * **node**: the board test's full run (`slapos_tests::boards::run::converge`): node registered,
//!   release installed, instance started, power off.
//!
//! Prints every run and the medians; times are seconds since QEMU was spawned. Uses
//! `slapos-master` from the same directory as this binary, artefacts from `cross/build.sh`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use slapos_tests::boards::{self, Board, run};
use slapos_tests::{Master, Proc, url_in};

fn main() -> anyhow::Result<()> {
    let mut runs = 3usize;
    let mut names = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => {
                runs = args
                    .next()
                    .context("--runs needs a number")?
                    .parse()
                    .context("--runs needs a number")?;
            }
            "-h" | "--help" => {
                println!("usage: boards-bench [--runs N] [BOARD...]");
                return Ok(());
            }
            _ => names.push(a),
        }
    }
    let exe = std::env::current_exe().context("current exe")?;
    let bin_dir = exe.parent().context("exe dir")?.to_path_buf();
    let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        None => bin_dir.parent().context("target dir")?.to_path_buf(),
    };
    let master_bin = bin_dir.join("slapos-master");
    if !master_bin.exists() {
        bail!(
            "{} not found: cargo build -p master-lite first",
            master_bin.display()
        );
    }
    let all = boards::load_all(&boards::boards_dir())?;
    let selected: Vec<&Board> = all
        .iter()
        .filter(|b| b.bootable().is_some())
        .filter(|b| names.is_empty() || names.contains(&b.name))
        .collect();
    if selected.is_empty() {
        bail!("no bootable board matches {names:?}");
    }
    for board in selected {
        let prep = run::prepare(board, &target_dir)
            .map_err(|reason| anyhow::anyhow!("board {}: {reason}", board.name))?;
        let mut anchors = Vec::new();
        let mut nodes = Vec::new();
        for i in 1..=runs {
            let tmp = tempfile::tempdir()?;
            let a = run::baseline(board, &prep, tmp.path(), false);
            println!("run {i} {}", run::report_line(board, &prep, "anchor", &a));
            let master = start_master(&master_bin, &tmp.path().join("master.db"))?;
            let n = run::converge(board, &prep, &master, tmp.path(), false);
            println!("run {i} {}", run::report_line(board, &prep, "node", &n));
            anchors.push(a);
            nodes.push(n);
        }
        let med = |v: Vec<Duration>| {
            let mut v = v;
            v.sort();
            v[v.len() / 2].as_secs_f64()
        };
        println!(
            "{} median of {runs}: anchor init {:.2}s, anchor network-up+poweroff {:.2}s | node: init {:.2}s, \
             registered {:.2}s, release installed {:.2}s, instance started {:.2}s (seconds since QEMU spawn)",
            board.name,
            med(anchors.iter().map(|t| t.init).collect()),
            med(anchors.iter().map(|t| t.powered_off).collect()),
            med(nodes.iter().map(|t| t.init).collect()),
            med(nodes.iter().filter_map(|t| t.registered).collect()),
            med(nodes.iter().filter_map(|t| t.installed).collect()),
            med(nodes.iter().filter_map(|t| t.started).collect()),
        );
    }
    Ok(())
}

/// `slapos-master serve` on 127.0.0.1, port 0 (the test library's `Master::start` looks for the
/// binary next to a test executable, not next to this one).
fn start_master(bin: &Path, db: &Path) -> anyhow::Result<Master> {
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(db);
    let proc = Proc::spawn("master", cmd);
    let line = proc.wait_line("listening on http://", Duration::from_secs(30));
    let url = url_in(&line).context("url in the master's listening line")?;
    Ok(Master {
        proc,
        url,
        db: db.to_path_buf(),
    })
}
