//! Boot a board under QEMU and follow its serial console.
//!
//! [`command`] turns a [`Board`] into the `qemu-system-*` command line: no display, serial on
//! stdio (no monitor multiplexed on it), user-mode networking (the guest reaches the host's
//! loopback as 10.0.2.2), `-no-reboot` so a guest power-off or panic ends the process.
//! [`Boot`] keeps every console line with the time it arrived (since the spawn), lets the test
//! type a line on the console, and kills QEMU when dropped.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Board;

/// The QEMU command that boots `board` with this kernel and initramfs.
pub fn command(
    board: &Board,
    kernel: &Path,
    initrd: &Path,
    dtb: Option<&Path>,
) -> Result<Command, String> {
    let q = board
        .qemu
        .as_ref()
        .filter(|q| q.boots)
        .ok_or_else(|| format!("board {} is not bootable under QEMU", board.name))?;
    let mut cmd = Command::new(&q.system);
    cmd.args(["-M", &q.machine, "-cpu", &q.cpu])
        .args([
            "-smp",
            &board.cpus.to_string(),
            "-m",
            &board.memory_mib.to_string(),
        ])
        .args([
            "-display",
            "none",
            "-serial",
            "stdio",
            "-monitor",
            "none",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args([
            "-append",
            &format!("console={} {}", q.console, board.kernel.cmdline),
        ]);
    if let Some(dtb) = dtb {
        cmd.arg("-dtb").arg(dtb);
    }
    if q.nic != "none" {
        cmd.args([
            "-netdev",
            "user,id=n0",
            "-device",
            &format!("{},netdev=n0", q.nic),
        ]);
    }
    Ok(cmd)
}

/// Attach the raw disk image `img` as the board's first virtio block device (`/dev/vda` in the
/// guest; `virtio-blk-device`, the MMIO transport of `-M virt`, as the NIC uses).
pub fn attach_disk(cmd: &mut Command, img: &Path) {
    cmd.arg("-drive")
        .arg(format!("file={},format=raw,if=none,id=d0", img.display()))
        .args(["-device", "virtio-blk-device,drive=d0"]);
}

type Lines = Arc<Mutex<Vec<(Duration, String)>>>;

/// A running QEMU.
pub struct Boot {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines,
    readers: Vec<std::thread::JoinHandle<()>>,
    started: Instant,
}

impl Boot {
    /// Spawn `cmd` with the console on pipes. `echo`: copy console lines to stderr as they come.
    pub fn spawn(mut cmd: Command, echo: bool) -> Result<Boot, String> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("failed to spawn {cmd:?}: {e}"))?;
        let lines: Lines = Arc::default();
        let mut readers = Vec::new();
        let streams: [Option<Box<dyn std::io::Read + Send>>; 2] = [
            child.stdout.take().map(|s| Box::new(s) as _),
            child.stderr.take().map(|s| Box::new(s) as _),
        ];
        for stream in streams.into_iter().flatten() {
            let lines = lines.clone();
            readers.push(std::thread::spawn(move || {
                let mut r = BufReader::new(stream);
                let mut buf = Vec::new();
                while r
                    .read_until(b'\n', &mut buf)
                    .map(|n| n > 0)
                    .unwrap_or(false)
                {
                    let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
                    buf.clear();
                    if echo {
                        eprintln!("[guest {:6.2}s] {line}", started.elapsed().as_secs_f64());
                    }
                    lines
                        .lock()
                        .expect("lines lock")
                        .push((started.elapsed(), line));
                }
            }));
        }
        let stdin = child.stdin.take();
        Ok(Boot {
            child,
            stdin,
            lines,
            readers,
            started,
        })
    }

    /// Time since the spawn.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The console so far, one line per line.
    pub fn log(&self) -> String {
        let lines = self.lines.lock().expect("lines lock");
        lines
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// First line containing `needle` and when it arrived; an error (with the console) when
    /// QEMU exits first or `timeout` passes.
    pub fn wait_line(
        &mut self,
        needle: &str,
        timeout: Duration,
    ) -> Result<(Duration, String), String> {
        self.wait_until(&format!("{needle:?}"), timeout, |l| l.contains(needle))
    }

    /// First line for which `f` holds (`what` names it in the error) and when it arrived; an
    /// error (with the console) when QEMU exits first or `timeout` passes.
    pub fn wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        f: impl Fn(&str) -> bool,
    ) -> Result<(Duration, String), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(hit) = self.find_by(&f) {
                return Ok(hit);
            }
            let exited = matches!(self.child.try_wait(), Ok(Some(_)));
            if exited || Instant::now() > deadline {
                if exited {
                    // The last lines may still be in the pipes: read them to the end.
                    self.drain();
                    if let Some(hit) = self.find_by(&f) {
                        return Ok(hit);
                    }
                }
                let why = if exited { "QEMU exited" } else { "timed out" };
                return Err(format!(
                    "{why} waiting for {what} on the console:\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// After exit: wait until the readers reached the end of the pipes.
    fn drain(&mut self) {
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }

    fn find_by(&self, f: impl Fn(&str) -> bool) -> Option<(Duration, String)> {
        let lines = self.lines.lock().expect("lines lock");
        lines.iter().find(|(_, l)| f(l)).cloned()
    }

    /// Type `line` (and a newline) on the serial console.
    pub fn send(&mut self, line: &str) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("console input closed")?;
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("failed to write {line:?} to the QEMU console: {e}"))
    }

    /// Wait for QEMU to exit; `None` after `timeout` (it is then still running).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.drain();
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Boot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
