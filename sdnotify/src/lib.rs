//! systemd's service notification protocol (`sd_notify(3)`), the few lines every long-running
//! binary of the workspace needs for `Type=notify` units (dist/systemd/, docs/install.md):
//! `READY=1` once serving, `WATCHDOG=1` at half of `WatchdogSec=`, `STOPPING=1` on the way out.
//!
//! Design: std only and no dependency, so that leaf crates (`buffer`) and the size-capped node
//! binary can use it; it is itself a leaf of the crate graph. The protocol is one datagram per
//! message to the `AF_UNIX` socket named by `$NOTIFY_SOCKET`: a path, or an abstract socket
//! when it starts with `@`. Nothing is sent when the variable is unset (not run by systemd).
//! `WATCHDOG_USEC` is honoured only when `WATCHDOG_PID` is unset or names this process, as
//! `sd_watchdog_enabled(3)` does, so a child that inherits the environment stays quiet.
//!
//! Limits: Linux only for abstract sockets (elsewhere `@` names are refused with
//! `Unsupported`); no file-descriptor passing (`FDSTORE`), which nothing here uses.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

/// The notification socket of the service manager.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    target: Target,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

impl Notifier {
    /// The notifier named by `$NOTIFY_SOCKET`, or `None` when it is unset or empty.
    pub fn from_env() -> io::Result<Option<Notifier>> {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(v) if !v.is_empty() => Notifier::at(&v.to_string_lossy()).map(Some),
            _ => Ok(None),
        }
    }

    /// A notifier sending to `addr`: an absolute path, or `@name` for an abstract socket.
    pub fn at(addr: &str) -> io::Result<Notifier> {
        let target = if let Some(name) = addr.strip_prefix('@') {
            Target::Abstract(name.as_bytes().to_vec())
        } else if addr.starts_with('/') {
            Target::Path(PathBuf::from(addr))
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("NOTIFY_SOCKET {addr:?}: neither an absolute path nor an @abstract name"),
            ));
        };
        let socket = UnixDatagram::unbound()?;
        Ok(Notifier { socket, target })
    }

    /// Sends `state` (newline-separated `KEY=VALUE` assignments) as one datagram.
    pub fn notify(&self, state: &str) -> io::Result<()> {
        let sent = match &self.target {
            Target::Path(p) => self.socket.send_to(state.as_bytes(), p),
            Target::Abstract(name) => send_abstract(&self.socket, name, state.as_bytes()),
        };
        sent.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("send {:?} to NOTIFY_SOCKET {}: {e}", state, self.describe()),
            )
        })
        .map(drop)
    }

    /// `READY=1`: start-up is finished, the service is serving.
    pub fn ready(&self) -> io::Result<()> {
        self.notify("READY=1")
    }

    /// `WATCHDOG=1`: the service is alive (send it every [`watchdog_interval`]).
    pub fn watchdog(&self) -> io::Result<()> {
        self.notify("WATCHDOG=1")
    }

    /// `STOPPING=1`: the service is shutting down.
    pub fn stopping(&self) -> io::Result<()> {
        self.notify("STOPPING=1")
    }

    /// `STATUS=…`: one line shown by `systemctl status` (newlines are replaced by spaces).
    pub fn status(&self, text: &str) -> io::Result<()> {
        self.notify(&format!("STATUS={}", text.replace('\n', " ")))
    }

    fn describe(&self) -> String {
        match &self.target {
            Target::Path(p) => p.display().to_string(),
            Target::Abstract(n) => format!("@{}", String::from_utf8_lossy(n)),
        }
    }
}

/// A service's watchdog: the notifier and how often to ping it.
#[derive(Debug)]
pub struct Watchdog {
    notifier: Notifier,
    every: Duration,
}

impl Watchdog {
    /// The period of [`Watchdog::ping`]: half of `WatchdogSec=`.
    pub fn every(&self) -> Duration {
        self.every
    }

    /// `WATCHDOG=1`.
    pub fn ping(&self) -> io::Result<()> {
        self.notifier.watchdog()
    }
}

/// A service's start-up is done: sends `READY=1` when run by systemd with `Type=notify`, and
/// returns the watchdog to feed from the service's own loop (so that a stuck loop stops the
/// pings) when `WatchdogSec=` is set for this process. `Ok(None)` outside systemd.
pub fn ready_from_env() -> io::Result<Option<Watchdog>> {
    let Some(notifier) = Notifier::from_env()? else {
        return Ok(None);
    };
    notifier.ready()?;
    Ok(watchdog_interval().map(|every| Watchdog { notifier, every }))
}

#[cfg(target_os = "linux")]
fn send_abstract(socket: &UnixDatagram, name: &[u8], msg: &[u8]) -> io::Result<usize> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    socket.send_to_addr(msg, &addr)
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_: &UnixDatagram, _: &[u8], _: &[u8]) -> io::Result<usize> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract unix sockets exist on Linux only",
    ))
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC` when the watchdog is meant for
/// this process, else `None`.
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_interval_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

/// [`watchdog_interval`] from the variables' values and this process's id: `None` when
/// `usec` is missing, not a positive number, or `pid` is set and names another process.
pub fn watchdog_interval_from(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(me)
    {
        return None;
    }
    Some(Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(s: &UnixDatagram) -> String {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 256];
        let n = s.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn ready_watchdog_and_status_reach_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::at(path.to_str().unwrap()).unwrap();
        n.ready().unwrap();
        assert_eq!(recv(&listener), "READY=1");
        n.watchdog().unwrap();
        assert_eq!(recv(&listener), "WATCHDOG=1");
        n.status("two\nlines").unwrap();
        assert_eq!(recv(&listener), "STATUS=two lines");
        n.stopping().unwrap();
        assert_eq!(recv(&listener), "STOPPING=1");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_at_name_is_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("slapos-sdnotify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        Notifier::at(&format!("@{name}")).unwrap().ready().unwrap();
        assert_eq!(recv(&listener), "READY=1");
    }

    #[test]
    fn bad_addresses_and_dead_sockets_are_errors_naming_the_socket() {
        assert!(Notifier::at("relative/path").is_err());
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("nobody");
        let e = Notifier::at(gone.to_str().unwrap())
            .unwrap()
            .ready()
            .unwrap_err()
            .to_string();
        assert!(e.contains("READY=1") && e.contains("nobody"), "{e}");
    }

    #[test]
    fn watchdog_interval_is_half_and_only_for_this_process() {
        let half = Some(Duration::from_secs(5));
        assert_eq!(watchdog_interval_from(Some("10000000"), None, 42), half);
        assert_eq!(
            watchdog_interval_from(Some("10000000"), Some("42"), 42),
            half
        );
        assert_eq!(
            watchdog_interval_from(Some("10000000"), Some("43"), 42),
            None
        );
        assert_eq!(watchdog_interval_from(Some("0"), None, 42), None);
        assert_eq!(watchdog_interval_from(Some("x"), None, 42), None);
        assert_eq!(watchdog_interval_from(None, Some("42"), 42), None);
    }
}
