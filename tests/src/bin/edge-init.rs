//! `edge-init`: the PID 1 of the QEMU board test's initramfs, and two tiny static services.
//!
//! As PID 1 it mounts `/proc`, `/sys`, `/dev`, `/tmp`, `/run`, cgroup2 on `/sys/fs/cgroup`, reads
//! `/etc/edge-init.conf`
//! (format: `slapos_tests::boards::init_conf`), sets the wall clock, loads kernel modules with
//! `finit_module`, mounts the configured filesystems (a persistent disk), brings up `lo` and the configured interfaces (address + netmask ioctls; the
//! guest reaches the host at 10.0.2.2 on the same /24, so no route is needed), starts the service
//! (`exec`, the node) with its output on the console, reaps every orphan, and powers the board off
//! when the service exits (with its status) or when `poweroff` is typed on the console (the service
//! gets SIGTERM, then SIGKILL after 10 s). Each step prints `init: …` with CLOCK_BOOTTIME, the
//! time since the kernel started, so the test can measure the boot.
//!
//! As a program (not PID 1), `edge-init tcp-echo ADDR` is a line echo server,
//! `edge-init check-tcp ADDR` a promise that it answers, and `edge-init check-rt ADDR POLICY PRIO
//! [CPUS]` a promise that the echo server of ADDR runs with that scheduling policy and priority
//! (and only on CPUS, in a cpuset partition root), read from `/proc` and its cgroup's files in
//! `/sys/fs/cgroup`: the release the board test installs uses them, because the guest has no
//! shell or interpreter. At power-off PID 1 prints the cgroup2 tree (`init: cgroups: …`), so a
//! test can see what a node left behind.
//!
//! Linux only; std + libc, so it links statically for musl targets. Each `unsafe` block is one
//! libc call (or the union write that prepares it) with its invariant stated.

use std::ffi::CString;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use slapos_tests::boards::cpu_set;
use slapos_tests::boards::init_conf::{InitConf, NetConf};

const CONF: &str = "/etc/edge-init.conf";
const CGROUP2: &str = "/sys/fs/cgroup";

/// What the kernel's cgroup2 cpuset offers, measured on a scratch group that is removed again
/// (and `cpuset` taken out of the root's `cgroup.subtree_control` if this added it): whether the
/// partition files exist, and the state a local `isolated` partition of the last CPU reaches.
/// One line for the console, e.g. `cpuset.cpus.partition present, cpuset.cpus.exclusive absent,
/// local isolated partition of CPU 1: isolated`.
fn cpuset_v2_probe() -> String {
    use std::fs;
    let ctl = format!("{CGROUP2}/cgroup.subtree_control");
    let enabled = fs::read_to_string(&ctl).unwrap_or_default();
    if !fs::read_to_string(format!("{CGROUP2}/cgroup.controllers"))
        .unwrap_or_default()
        .split_whitespace()
        .any(|c| c == "cpuset")
    {
        return "no cpuset controller".into();
    }
    let added = !enabled.split_whitespace().any(|c| c == "cpuset");
    if added && let Err(e) = fs::write(&ctl, "+cpuset") {
        return format!("cannot enable cpuset: {e}");
    }
    let dir = format!("{CGROUP2}/edge-init-cpuset-probe");
    let mut out = Vec::new();
    match fs::create_dir(&dir) {
        Err(e) => out.push(format!("cannot create a group: {e}")),
        Ok(()) => {
            for f in ["cpuset.cpus.partition", "cpuset.cpus.exclusive"] {
                let there = std::path::Path::new(&dir).join(f).exists();
                out.push(format!("{f} {}", if there { "present" } else { "absent" }));
            }
            let last = fs::read_to_string(format!("{CGROUP2}/cpuset.cpus.effective"))
                .unwrap_or_default()
                .trim()
                .rsplit([',', '-'])
                .next()
                .unwrap_or_default()
                .to_owned();
            let part = format!("{dir}/cpuset.cpus.partition");
            let state = fs::write(format!("{dir}/cpuset.cpus"), &last)
                .and_then(|()| fs::write(&part, "isolated"))
                .and_then(|()| fs::read_to_string(&part));
            out.push(format!(
                "local isolated partition of CPU {last}: {}",
                state.map_or_else(|e| format!("refused ({e})"), |s| s.trim().to_owned())
            ));
            let _ = fs::write(&part, "member");
            let _ = fs::remove_dir(&dir);
        }
    }
    if added {
        let _ = fs::write(&ctl, "-cpuset");
    }
    out.join(", ")
}

/// Every cgroup below `dir`, as paths relative to the cgroup2 mount.
fn cgroup_dirs(dir: &std::path::Path, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            let p = e.path();
            out.push(p.strip_prefix(CGROUP2).unwrap_or(&p).display().to_string());
            cgroup_dirs(&p, out);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("tcp-echo") if args.len() == 3 => tcp_echo(&args[2]),
        Some("check-tcp") if args.len() == 3 => check_tcp(&args[2]),
        Some("check-rt") if (5..=6).contains(&args.len()) => check_rt(&args[2..]),
        _ if std::process::id() == 1 => init(),
        _ => {
            eprintln!(
                "usage: edge-init tcp-echo ADDR | edge-init check-tcp ADDR | edge-init check-rt ADDR POLICY PRIO [CPUS] (or run as PID 1)"
            );
            std::process::exit(2);
        }
    }
}

/// Seconds since the kernel started.
fn boottime() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if rc != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

macro_rules! log {
    ($($arg:tt)*) => {
        println!("init: [{:7.3}s] {}", boottime(), format_args!($($arg)*))
    };
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in a constant path")
}

fn last_err<T>(what: String) -> Result<T, String> {
    Err(format!("{what}: {}", std::io::Error::last_os_error()))
}

fn init() {
    log!("edge-init started (pid 1)");
    if let Err(e) = boot() {
        log!("boot failed: {e}");
        power_off(1);
    }
}

fn boot() -> Result<(), String> {
    for (src, dir, fstype) in [
        ("proc", "/proc", "proc"),
        ("sysfs", "/sys", "sysfs"),
        ("devtmpfs", "/dev", "devtmpfs"),
        ("tmpfs", "/tmp", "tmpfs"),
        ("tmpfs", "/run", "tmpfs"),
        // The node's rt support (cgroups for RT partitions) needs a hierarchy.
        ("cgroup2", "/sys/fs/cgroup", "cgroup2"),
    ] {
        mount(src, dir, fstype)?;
    }
    if let Ok(v) = std::fs::read_to_string("/proc/version") {
        log!("{}", v.trim());
    }
    log!("cpuset v2: {}", cpuset_v2_probe());
    let text =
        std::fs::read_to_string(CONF).map_err(|e| format!("failed to read `{CONF}`: {e}"))?;
    let conf = InitConf::parse(&text)?;
    if let Some(secs) = conf.clock {
        set_clock(secs)?;
    }
    for m in &conf.modules {
        load_module(&m.display().to_string())?;
    }
    if !conf.modules.is_empty() {
        log!("loaded {} modules", conf.modules.len());
    }
    for (src, dir, fstype) in &conf.mounts {
        mount(src, dir, fstype)?;
        log!("mounted {src} on {dir} ({fstype})");
    }
    let sock = Socket::inet_dgram()?;
    sock.up("lo")?;
    for n in &conf.nets {
        sock.configure(n)?;
        log!("{} up as {}/{}", n.iface, n.addr, n.prefix);
    }
    if conf.exec.is_empty() {
        log!("no service configured; type `poweroff` to stop");
        supervise(None);
    }
    let mut cmd = Command::new(&conf.exec[0]);
    cmd.args(&conf.exec[1..])
        .env_clear()
        .envs(conf.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir("/")
        .stdin(Stdio::null());
    let child = cmd
        .spawn()
        .map_err(|e| format!("failed to start `{}`: {e}", conf.exec.join(" ")))?;
    log!("started {} (pid {})", conf.exec[0], child.id());
    supervise(Some(child.id() as libc::pid_t));
}

fn mount(src: &str, dir: &str, fstype: &str) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("failed to create `{dir}`: {e}"))?;
    let (s, d, f) = (cstr(src), cstr(dir), cstr(fstype));
    // SAFETY: all pointers are NUL-terminated strings that outlive the call; data may be null.
    let rc = unsafe { libc::mount(s.as_ptr(), d.as_ptr(), f.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EBUSY) {
        return last_err(format!("failed to mount {fstype} on `{dir}`"));
    }
    Ok(())
}

fn set_clock(secs: u64) -> Result<(), String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if now >= secs {
        return Ok(());
    }
    let ts = libc::timespec {
        tv_sec: secs as _,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the duration of the call.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        return last_err(format!("failed to set the clock to {secs}"));
    }
    Ok(())
}

fn load_module(path: &str) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| format!("failed to open `{path}`: {e}"))?;
    let params = cstr("");
    // SAFETY: finit_module reads the open fd and a NUL-terminated (empty) parameter string.
    let rc = unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), params.as_ptr(), 0) };
    if rc != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
        return last_err(format!("failed to load module `{path}`"));
    }
    Ok(())
}

/// An AF_INET datagram socket, the handle the interface ioctls need.
struct Socket(std::os::fd::OwnedFd);

impl Socket {
    fn inet_dgram() -> Result<Socket, String> {
        // SAFETY: plain socket(2); the returned fd is owned below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return last_err("failed to open an AF_INET socket".into());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        Ok(Socket(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }))
    }

    fn request(iface: &str) -> libc::ifreq {
        // SAFETY: ifreq is plain data (arrays, integers, a union of those); all-zero is valid.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in req
            .ifr_name
            .iter_mut()
            .zip(iface.bytes().take(libc::IFNAMSIZ - 1))
        {
            *d = s as libc::c_char;
        }
        req
    }

    fn ioctl(&self, op: libc::c_ulong, req: &mut libc::ifreq, what: &str) -> Result<(), String> {
        // SAFETY: `req` is a valid ifreq for the interface ioctls, alive for the call.
        let rc = unsafe { libc::ioctl(self.0.as_raw_fd(), op as _, req as *mut libc::ifreq) };
        if rc != 0 {
            return last_err(what.to_owned());
        }
        Ok(())
    }

    fn set_addr(
        &self,
        iface: &str,
        op: libc::c_ulong,
        addr: Ipv4Addr,
        what: &str,
    ) -> Result<(), String> {
        let mut req = Socket::request(iface);
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(addr).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: sockaddr_in and sockaddr have the same size; the union field is plain data.
        unsafe {
            std::ptr::write(
                (&raw mut req.ifr_ifru.ifru_addr).cast::<libc::sockaddr_in>(),
                sin,
            )
        };
        self.ioctl(
            op,
            &mut req,
            &format!("failed to set the {what} of {iface} to {addr}"),
        )
    }

    fn up(&self, iface: &str) -> Result<(), String> {
        let mut req = Socket::request(iface);
        self.ioctl(
            libc::SIOCGIFFLAGS,
            &mut req,
            &format!("failed to read the flags of {iface}"),
        )?;
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        let flags = unsafe { req.ifr_ifru.ifru_flags };
        req.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        self.ioctl(
            libc::SIOCSIFFLAGS,
            &mut req,
            &format!("failed to bring {iface} up"),
        )
    }

    fn configure(&self, n: &NetConf) -> Result<(), String> {
        // The driver registers the interface while its module loads; allow it a moment.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::path::Path::new(&format!("/sys/class/net/{}", n.iface)).exists() {
            if Instant::now() > deadline {
                return Err(format!("interface {} did not appear within 10 s", n.iface));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.set_addr(&n.iface, libc::SIOCSIFADDR, n.addr, "address")?;
        self.set_addr(&n.iface, libc::SIOCSIFNETMASK, n.netmask(), "netmask")?;
        self.up(&n.iface)
    }
}

/// Reap children; power off when the service exits or `poweroff` is typed on the console.
fn supervise(service: Option<libc::pid_t>) -> ! {
    let (tx, rx) = mpsc::sync_channel::<String>(8);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.send(line.trim().to_owned()).is_err() {
                break;
            }
        }
    });
    loop {
        if let Some(status) = reap(service) {
            log!("service exited with status {status}");
            power_off(status);
        }
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(cmd) if cmd == "poweroff" => {
                log!("poweroff requested");
                let status = service.map(stop).unwrap_or(0);
                power_off(status);
            }
            Ok(cmd) if !cmd.is_empty() => log!("unknown console command {cmd:?} (only `poweroff`)"),
            _ => {}
        }
    }
}

/// Reap every exited child; the service's exit status if it was among them.
fn reap(service: Option<libc::pid_t>) -> Option<i32> {
    let mut found = None;
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into `status`, a valid int.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return found;
        }
        if Some(pid) == service {
            found = Some(if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            });
        }
    }
}

/// SIGTERM the service, SIGKILL after 10 s; its status (0 when it exited on SIGTERM).
fn stop(pid: libc::pid_t) -> i32 {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = reap(Some(pid)) {
            log!("service stopped with status {status}");
            return if status == 128 + libc::SIGTERM {
                0
            } else {
                status
            };
        }
        if Instant::now() > deadline {
            log!("service ignored SIGTERM for 10 s: SIGKILL");
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn power_off(status: i32) -> ! {
    let mut groups = Vec::new();
    cgroup_dirs(std::path::Path::new(CGROUP2), &mut groups);
    log!("cgroups: [{}]", groups.join(" "));
    log!("powering off (status {status})");
    let _ = std::io::stdout().flush();
    // SAFETY: sync(2) has no arguments and cannot fail.
    unsafe { libc::sync() };
    // SAFETY: reboot(2) with a valid command; as PID 1 this powers the machine off.
    unsafe { libc::reboot(libc::RB_POWER_OFF) };
    // Not reached on success; exiting PID 1 panics the kernel, which `-no-reboot` turns into exit.
    std::process::exit(status);
}

/// `tcp-echo ADDR`: answer each line with the same line, forever.
fn tcp_echo(addr: &str) {
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tcp-echo: failed to listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    println!("tcp-echo listening on {addr}");
    for conn in listener.incoming().map_while(Result::ok) {
        std::thread::spawn(move || {
            let Ok(mut w) = conn.try_clone() else { return };
            for line in BufReader::new(conn).lines().map_while(Result::ok) {
                if writeln!(w, "{line}").is_err() {
                    break;
                }
            }
        });
    }
}

/// `check-tcp ADDR`: exit 0 if a line sent to ADDR comes back.
fn check_tcp(addr: &str) {
    let result = (|| -> Result<(), String> {
        let sa = addr
            .parse()
            .map_err(|e| format!("bad address {addr}: {e}"))?;
        let mut s = TcpStream::connect_timeout(&sa, Duration::from_secs(3))
            .map_err(|e| format!("failed to connect to {addr}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))
            .map_err(|e| e.to_string())?;
        writeln!(s, "ping").map_err(|e| format!("failed to write to {addr}: {e}"))?;
        let mut line = String::new();
        BufReader::new(s)
            .read_line(&mut line)
            .map_err(|e| format!("failed to read from {addr}: {e}"))?;
        if line.trim_end() != "ping" {
            return Err(format!("{addr} answered {line:?} instead of \"ping\""));
        }
        Ok(())
    })();
    match result {
        Ok(()) => println!("{addr} echoes"),
        Err(e) => {
            println!("{e}");
            std::process::exit(1);
        }
    }
}

/// `check-rt ADDR POLICY PRIO [CPUS]`: the `tcp-echo ADDR` process runs with POLICY
/// (`other`, `fifo`, `rr`) and PRIO; with CPUS, its affinity is CPUS, its cgroup is a cpuset
/// partition root (`cpuset.cpus.partition` = `root` or `isolated`) holding exactly CPUS, and the
/// cgroup2 root's effective CPUs no longer hold them. Prints what it read (the promise message,
/// with the parent's and the root's effective CPUs and the root's isolated CPUs) and exits 1 on
/// a mismatch.
fn check_rt(args: &[String]) {
    let (addr, policy, prio, cpus) = (&args[0], &args[1], &args[2], args.get(3));
    let result = (|| -> Result<String, String> {
        let pid = std::fs::read_dir("/proc")
            .map_err(|e| format!("/proc: {e}"))?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .find(|pid| {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let argv: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
                argv.contains(&b"tcp-echo".as_slice()) && argv.contains(&addr.as_bytes())
            })
            .ok_or_else(|| format!("no `tcp-echo {addr}` process"))?;
        let read = |p: String| std::fs::read_to_string(&p).map_err(|e| format!("{p}: {e}"));
        let stat = read(format!("/proc/{pid}/stat"))?;
        // Fields after the command's closing parenthesis start at field 3 (state); rt_priority
        // is field 40 and policy field 41 (proc(5)).
        let f: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, r)| r.split_whitespace().collect())
            .unwrap_or_default();
        let (got_prio, got_policy) = (f.get(37).copied(), f.get(38).copied());
        let got_policy = match got_policy {
            Some("0") => "other",
            Some("1") => "fifo",
            Some("2") => "rr",
            other => other.unwrap_or("?"),
        };
        let status = read(format!("/proc/{pid}/status"))?;
        let affinity = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .map(str::trim)
            .unwrap_or("?");
        let cgroup = read(format!("/proc/{pid}/cgroup"))?;
        let cgroup = cgroup
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap_or("?")
            .to_owned();
        let at = |dir: &str, name: &str| {
            std::fs::read_to_string(format!("{CGROUP2}{dir}/{name}"))
                .map_or_else(|_| "absent".to_owned(), |v| v.trim().to_owned())
        };
        let knob = |name: &str| at(&cgroup, name);
        let (effective, partition) = (knob("cpuset.cpus.effective"), knob("cpuset.cpus.partition"));
        // The shared pool: the group's parent (the node's subtree) and the cgroup2 root, whose
        // effective CPUs lose the CPUs of a remote partition.
        let parent = cgroup.rsplit_once('/').map_or("", |(p, _)| p);
        let (parent_effective, root_effective) = (
            at(parent, "cpuset.cpus.effective"),
            at("", "cpuset.cpus.effective"),
        );
        let kernel = read("/proc/sys/kernel/osrelease".into())?;
        let seen = format!(
            "pid {pid} policy {got_policy} priority {} affinity {affinity} cgroup {cgroup} \
             cpuset.cpus.effective {effective} cpuset.cpus.partition {partition} \
             cpuset.cpus.exclusive {} parent {parent} cpuset.cpus.effective {parent_effective} \
             root cpuset.cpus.effective {root_effective} root cpuset.cpus.isolated {} kernel {}",
            got_prio.unwrap_or("?"),
            knob("cpuset.cpus.exclusive"),
            at("", "cpuset.cpus.isolated"),
            kernel.trim()
        );
        let mut wrong = Vec::new();
        if got_policy != policy || got_prio != Some(prio.as_str()) {
            wrong.push(format!("expected policy {policy} priority {prio}"));
        }
        if let Some(c) = cpus {
            let root = partition.starts_with("root") || partition.starts_with("isolated");
            if affinity != c || effective != *c || !root || partition.contains("invalid") {
                wrong.push(format!("expected CPUs {c} in a cpuset partition root"));
            }
            let mine = cpu_set(c);
            if cpu_set(&root_effective).iter().any(|x| mine.contains(x)) {
                wrong.push(format!(
                    "expected CPUs {c} out of the root's effective CPUs"
                ));
            }
        }
        if wrong.is_empty() {
            Ok(seen)
        } else {
            Err(format!("{}: {seen}", wrong.join(", ")))
        }
    })();
    match result {
        Ok(seen) => println!("{seen}"),
        Err(e) => {
            println!("{e}");
            std::process::exit(1);
        }
    }
}
