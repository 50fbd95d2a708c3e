//! One board run: prepare the host side, pack the initramfs, boot, converge through the master's
//! API, power off, and the times each step took. Shared by the board test
//! (`tests/tests/boards.rs`) and the boot benchmark (`src/bin/boards-bench.rs`).
//!
//! Failures after [`prepare`] panic with the guest console attached: this is test support code,
//! and a panic is what both callers want.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use slapos_proto::{
    ComputerId, InstallState, InstanceInfo, InstanceRequest, InstanceState, InstanceTitle,
    LabelKey, Params, SoftwareUrl, SupplyRequest, SupplyState,
};

use super::cpio::Cpio;
use super::init_conf::{InitConf, NetConf};
use super::qemu::Boot;
use super::{Board, kmod, qemu};
use crate::Master;

mod rt_v2;
pub use rt_v2::{RtV2, rt_v2};

const RELEASE_DIR: &str = "/srv/release";
const GUEST_NODE: &str = "/bin/slapos-node";
const GUEST_NODE_CONFIG: &str = "/etc/slapos/node.toml";
/// The profile cross/build.sh builds by default.
pub const PROFILE: &str = "minsize";
/// Modules of the persistent disk ([`initramfs_with`]): ext4 mounts the ext2 image the host
/// makes; `crc32c_generic` is the `softdep` of ext4 and jbd2 (no modprobe in the guest to
/// follow it).
const DISK_MODULES: [&str; 3] = ["virtio_blk", "crc32c_generic", "ext4"];
/// Deadline of each wait (slow TCG, loaded CI host): figures are reported, never asserted.
const LIMIT: Duration = Duration::from_secs(180);

/// What a board run needs from the host.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// `<cache>/kernels/<package>_<arch>`: `vmlinuz`, `modules/`, `dtbs/`, `version`.
    pub kernel_dir: PathBuf,
    /// `<target dir>/<triple>/minsize`: `slapos-node`, `edge-init`.
    pub artefacts: PathBuf,
}

/// Times of one run, since QEMU was spawned (host clock).
#[derive(Debug, Clone, Default)]
pub struct Timings {
    /// PID 1 printed its first line.
    pub init: Duration,
    /// CLOCK_BOOTTIME the guest printed at that moment (kernel start → init).
    pub init_guest: Option<f64>,
    /// The master lists the computer (the node registered).
    pub registered: Option<Duration>,
    /// The node reported the release available.
    pub installed: Option<Duration>,
    /// The master shows the instance started at its revision, promise passing.
    pub started: Option<Duration>,
    /// PID 1 printed `powering off`.
    pub powered_off: Duration,
}

fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// First line of `program --version`.
pub fn version_line(program: &str) -> String {
    Command::new(program)
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .unwrap_or_default()
}

fn has_std(target: &str) -> bool {
    let Ok(out) = Command::new("rustc")
        .args(["--print", "target-libdir", "--target", target])
        .current_dir(super::repo_root())
        .output()
    else {
        return false;
    };
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("libstd-"))
        })
        .unwrap_or(false)
}

/// Check QEMU, the rustup target, the cross linker and the kernel (fetching it when the cache is
/// empty), then build the node and edge-init with `cross/build.sh --no-report --bins slapos-node
/// <target>` (the same cargo commands as the full cross/build.sh, so a no-op when
/// they are up to date). `Err` is a reason to skip; a failing build panics (that is a bug).
pub fn prepare(board: &Board, target_dir: &Path) -> Result<Prepared, String> {
    let q = board.bootable().ok_or("board is not bootable under QEMU")?;
    if !runs(&q.system, &["--version"]) {
        return Err(format!(
            "{} is not installed (scripts/deps/cross.sh)",
            q.system
        ));
    }
    if !has_std(&board.target) {
        return Err(format!("rustup target {} is not installed", board.target));
    }
    if board.is_glibc() {
        let gcc = match board.arch() {
            "aarch64" => "aarch64-linux-gnu-gcc",
            _ => "arm-linux-gnueabihf-gcc",
        };
        if !runs(gcc, &["--version"]) {
            return Err(format!("{gcc} is not installed"));
        }
    }
    let cache = super::cache_dir(target_dir);
    let kernel_dir = super::kernel_dir(&cache, board);
    if !kernel_dir.join("vmlinuz").exists() {
        let fetched = Command::new(super::repo_root().join("boards/fetch-kernels.sh"))
            .arg(&cache)
            .env(
                "SLAPOS_BOARD_KERNELS",
                format!("{}:{}", board.kernel.package, board.kernel.debian_arch),
            )
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !fetched || !kernel_dir.join("vmlinuz").exists() {
            return Err(format!(
                "kernel {}:{} is not in {} and boards/fetch-kernels.sh could not fetch it",
                board.kernel.package,
                board.kernel.debian_arch,
                cache.display()
            ));
        }
    }
    let mut build = Command::new(super::repo_root().join("cross/build.sh"));
    build
        .args(["--no-report", "--bins", "slapos-node", &board.target])
        .env("CARGO_TARGET_DIR", target_dir)
        .env("SLAPOS_CROSS_NO_INSTALL", "1");
    // cargo runs tests with CARGO_PKG_*, CARGO_MANIFEST_DIR, … set; build scripts that declare
    // `rerun-if-env-changed` on them (ring does) would make this build differ from a top-level
    // cross/build.sh and rebuild everything above ring. Run it with the caller's environment.
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        let set_by_cargo_test = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|p| k.starts_with(p))
            || ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"].contains(&k.as_ref());
        if set_by_cargo_test {
            build.env_remove(&key);
        }
    }
    let status = build.status().expect("run cross/build.sh");
    assert!(status.success(), "cross/build.sh {} failed", board.target);
    Ok(Prepared {
        kernel_dir,
        artefacts: target_dir.join(&board.target).join(PROFILE),
    })
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The release the guest installs. The guest has no shell or interpreter, so its service and
/// promise are `edge-init tcp-echo` / `check-tcp` (the artifact `edge-service`).
fn add_release(img: &mut Cpio, service_bin: &[u8]) {
    // Parameters `rt_policy` + `rt_priority` (and `rt_cpus`, a count of exclusive CPUs) put
    // the echo server in an rt partition, checked by the `rt` promise (run::rt_v2).
    let instance = r#"{%- set p = parameters %}
{%- if p.rt_policy is defined %}
[resources]
policy = {{ p.rt_policy | toml }}
priority = {{ p.rt_priority | int | toml }}
{%- if p.rt_cpus is defined %}
cpus = {{ p.rt_cpus | int | toml }}
{%- endif %}

[[promise]]
name = "rt"
command = ["{{ software_dir }}/edge-service", "check-rt", "{{ partition.ipv4 }}:{{ ports[0] }}",
  "{{ p.rt_policy }}", "{{ p.rt_priority }}"{% if p.rt_expect_cpus is defined %}, "{{ p.rt_expect_cpus }}"{% endif %}]
period = 2
timeout = 5
{%- endif %}

[[service]]
name = "echo"
command = ["{{ software_dir }}/edge-service", "tcp-echo", "{{ partition.ipv4 }}:{{ ports[0] }}"]

[[promise]]
name = "echo-answers"
command = ["{{ software_dir }}/edge-service", "check-tcp", "{{ partition.ipv4 }}:{{ ports[0] }}"]
period = 2
timeout = 5

[connection]
echo = "{{ partition.ipv4 }}:{{ ports[0] }}"
"#;
    let software = format!(
        r#"[release]
name = "edge-echo"
description = "line echo server on the partition's first port (board test)"

[[artifact]]
url = "edge-service"
sha256 = "{}"
mode = "0755"

[[artifact]]
url = "instance.toml.in"
sha256 = "{}"

[instance]
default = "instance.toml.in"
"#,
        sha256_hex(service_bin),
        sha256_hex(instance.as_bytes()),
    );
    img.file(
        &format!("{RELEASE_DIR}/software.toml"),
        software.as_bytes(),
        0o644,
    );
    img.file(
        &format!("{RELEASE_DIR}/instance.toml.in"),
        instance.as_bytes(),
        0o644,
    );
    img.file(&format!("{RELEASE_DIR}/edge-service"), service_bin, 0o755);
}

/// The node's config inside the guest (keys: docs/node.md).
pub fn node_config(board: &Board, master_port: u16) -> String {
    let mut labels = String::new();
    for (k, v) in board.node_labels() {
        labels.push_str(&format!("{k} = {}\n", toml_str(&v)));
    }
    let rt_cpus = board
        .rt_cpu_list()
        .map(|l| format!("rt_cpus = {}\n", toml_str(&l)))
        .unwrap_or_default();
    format!(
        r#"master_url = "http://10.0.2.2:{master_port}"
computer_id = {id}
partitions = {count}
software_root = "/srv/slapos/software"
instance_root = "/srv/slapos/instance"
poll_interval = 1
{rt_cpus}
[labels]
{labels}"#,
        id = toml_str(&board.name),
        count = board.partitions.count,
    )
}

/// The initramfs: `edge-init` as `/init`, the kernel modules, and with `master_port` the node, its
/// config and the release (without: PID 1 only, the boot-time anchor). glibc targets also get
/// the loader and C runtime from the Debian cross sysroot.
pub fn initramfs(board: &Board, prep: &Prepared, master_port: Option<u16>) -> Vec<u8> {
    initramfs_with(board, prep, master_port, false)
}

/// [`initramfs`]; with `disk`, PID 1 also loads [`DISK_MODULES`] and mounts the board's
/// disk `/dev/vda` on `/srv/slapos` (software, instances and the node's desired-state cache
/// then survive a reboot: [`reboot_offline`]).
pub fn initramfs_with(
    board: &Board,
    prep: &Prepared,
    master_port: Option<u16>,
    disk: bool,
) -> Vec<u8> {
    let init = read(&prep.artefacts.join("edge-init"));
    let mut img = Cpio::new();
    for d in ["proc", "sys", "dev", "tmp", "run", "root", "srv/slapos"] {
        img.dir(d);
    }
    img.file("init", &init, 0o755);
    img.file("etc/passwd", b"root:x:0:0:root:/root:/bin/false\n", 0o644);
    img.file("etc/group", b"root:x:0:\n", 0o644);
    let mut exec = Vec::new();
    if let Some(port) = master_port {
        // `SLAPOS_BOARD_NODE`: boot another build of the node, e.g. the one a package ships
        // (scripts/checks/packages.sh boots the arm64 .deb's), instead of the cross artefact.
        let node = match std::env::var_os("SLAPOS_BOARD_NODE") {
            Some(path) => read(Path::new(&path)),
            None => read(&prep.artefacts.join("slapos-node")),
        };
        img.file(GUEST_NODE, &node, 0o755);
        img.file(
            GUEST_NODE_CONFIG,
            node_config(board, port).as_bytes(),
            0o644,
        );
        add_release(&mut img, &init);
        exec = vec![
            GUEST_NODE.into(),
            "run".into(),
            "--config".into(),
            GUEST_NODE_CONFIG.into(),
        ];
    }
    let mut wanted = board.kernel.modules.clone();
    if disk {
        wanted.extend(DISK_MODULES.map(String::from));
    }
    let modules = kmod::load_order(&prep.kernel_dir.join("modules"), &wanted)
        .unwrap_or_else(|e| panic!("board {}: {e}", board.name));
    let mut guest_modules = Vec::new();
    for m in &modules {
        let name = m.file_name().expect("module file name").to_string_lossy();
        let guest = format!("/lib/modules/{name}");
        img.file(&guest, &read(m), 0o644);
        guest_modules.push(PathBuf::from(guest));
    }
    if board.is_glibc() {
        let sysroot = super::glibc_sysroot(&board.target).expect("sysroot of a glibc target");
        let mut copied = 0;
        for entry in std::fs::read_dir(sysroot.join("lib"))
            .expect("cross sysroot lib dir")
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let wanted = name.starts_with("ld-linux")
                || ["libc.so.6", "libm.so.6", "libgcc_s.so.1"].contains(&name.as_str());
            if wanted {
                // fs::read follows the sysroot's symlinks to the real file.
                img.file(&format!("lib/{name}"), &read(&entry.path()), 0o755);
                copied += 1;
            }
        }
        assert!(
            copied >= 3,
            "C runtime not found under {}",
            sysroot.display()
        );
    }
    let conf = InitConf {
        clock: Some(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock after 1970")
                .as_secs(),
        ),
        modules: guest_modules,
        nets: vec![NetConf {
            iface: board.kernel.interface.clone(),
            addr: "10.0.2.15".parse().expect("address"),
            prefix: 24,
        }],
        mounts: if disk {
            vec![("/dev/vda".into(), "/srv/slapos".into(), "ext4".into())]
        } else {
            vec![]
        },
        env: vec![
            ("PATH".into(), "/bin".into()),
            ("HOME".into(), "/root".into()),
            ("SLAPOS_LOG".into(), "info".into()),
            ("NO_COLOR".into(), "1".into()),
        ],
        exec,
    };
    img.file("etc/edge-init.conf", conf.render().as_bytes(), 0o644);
    img.finish()
}

/// Poll `f` every 20 ms until it returns `Some`; panic with the console if QEMU stops first or
/// the deadline passes. Returns the value and the time since QEMU was spawned.
fn until<T>(boot: &mut Boot, what: &str, mut f: impl FnMut() -> Option<T>) -> (T, Duration) {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(v) = f() {
            return (v, boot.elapsed());
        }
        if boot.wait_exit(Duration::ZERO).is_some() || Instant::now() > deadline {
            panic!(
                "waiting for {what}: QEMU exited or {LIMIT:?} passed; console:\n{}",
                boot.log()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spawn(board: &Board, prep: &Prepared, initrd: &Path, echo: bool) -> Boot {
    spawn_with(board, prep, initrd, None, echo)
}

fn spawn_with(
    board: &Board,
    prep: &Prepared,
    initrd: &Path,
    disk: Option<&Path>,
    echo: bool,
) -> Boot {
    let q = board.bootable().expect("bootable board");
    let dtb = q.dtb.as_ref().map(|d| prep.kernel_dir.join("dtbs").join(d));
    let mut cmd = qemu::command(
        board,
        &prep.kernel_dir.join("vmlinuz"),
        initrd,
        dtb.as_deref(),
    )
    .expect("qemu command");
    if let Some(img) = disk {
        qemu::attach_disk(&mut cmd, img);
    }
    Boot::spawn(cmd, echo).expect("spawn QEMU")
}

fn wait_init(boot: &mut Boot, t: &mut Timings) {
    let (at, line) = boot
        .wait_line("edge-init started", LIMIT)
        .unwrap_or_else(|e| panic!("{e}"));
    t.init = at;
    t.init_guest = line
        .split(['[', ']'])
        .nth(1)
        .and_then(|s| s.trim().trim_end_matches('s').parse().ok());
}

fn power_off(boot: &mut Boot, t: &mut Timings) {
    boot.send("poweroff").expect("console");
    let (at, line) = boot
        .wait_line("powering off (status", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
    t.powered_off = at;
    let status = boot.wait_exit(Duration::from_secs(30));
    assert!(
        line.contains("(status 0)"),
        "unclean power-off: {line}\n{}",
        boot.log()
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "QEMU did not exit cleanly: {status:?}"
    );
}

/// The anchor: boot PID 1 alone (modules, network, no node) and power off.
pub fn baseline(board: &Board, prep: &Prepared, scratch: &Path, echo: bool) -> Timings {
    let initrd = scratch.join("initrd-baseline.cpio");
    std::fs::write(&initrd, initramfs(board, prep, None)).expect("write initramfs");
    let mut boot = spawn(board, prep, &initrd, echo);
    let mut t = Timings::default();
    wait_init(&mut boot, &mut t);
    boot.wait_line(&format!("{} up as", board.kernel.interface), LIMIT)
        .unwrap_or_else(|e| panic!("{e}"));
    power_off(&mut boot, &mut t);
    t
}

/// The full run against `master` (on 127.0.0.1; the guest reaches it as 10.0.2.2): the node
/// registers with the board's labels, RT CPUs and partitions, the release is supplied, an instance is
/// requested on this computer and reported started (revision current, promise ok, connection
/// parameter published), then the board powers off cleanly.
pub fn converge(
    board: &Board,
    prep: &Prepared,
    master: &Master,
    scratch: &Path,
    echo: bool,
) -> Timings {
    let initrd = scratch.join("initrd.cpio");
    std::fs::write(&initrd, initramfs(board, prep, Some(master_port(master))))
        .expect("write initramfs");
    let mut boot = spawn(board, prep, &initrd, echo);
    let mut t = Timings::default();
    wait_init(&mut boot, &mut t);
    converge_on(&mut boot, board, master, &mut t);
    power_off(&mut boot, &mut t);
    t
}

fn master_port(master: &Master) -> u16 {
    master
        .addr()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("master port")
}

/// Until the master shows `title` started at its current revision (at least `revision`), every
/// promise passing, its connection parameter `echo` published.
fn until_started(
    boot: &mut Boot,
    client: &slapos_client::Client,
    title: &InstanceTitle,
    revision: u64,
    what: &str,
) -> (InstanceInfo, Duration) {
    until(boot, what, || {
        let info = client.instance(title, None).ok()?;
        let r = info.reported.as_ref()?;
        let ok = r.report.state == InstanceState::Started
            && r.report.revision == info.revision
            && info.revision >= revision
            && !r.report.promises.is_empty()
            && r.report.promises.iter().all(|p| p.ok)
            && info.connection.contains_key("echo");
        ok.then_some(info)
    })
}

/// The instance this board's run requests.
fn echo_title(board: &Board) -> InstanceTitle {
    InstanceTitle::parse(format!("echo-{}", board.name)).expect("title")
}

fn echo_request(board: &Board, url: &SoftwareUrl, parameters: Params) -> InstanceRequest {
    InstanceRequest {
        title: echo_title(board),
        software_url: url.clone(),
        software_type: Default::default(),
        parameters,
        sla: BTreeMap::from([("computer_guid".to_owned(), board.name.clone())]),
        state: None,
        shared: false,
    }
}

/// Step 4 of a run on a booted board: registration checked, release supplied and installed,
/// instance requested and started.
fn converge_on(boot: &mut Boot, board: &Board, master: &Master, t: &mut Timings) -> SoftwareUrl {
    let client = master.client();
    let id = ComputerId::parse(board.name.as_str()).expect("computer id");
    let (computer, at) = until(boot, "the node to register", || client.computer(&id).ok());
    t.registered = Some(at);
    let label = |k: &str| {
        computer
            .labels
            .get(&LabelKey::parse(k).expect("label key"))
            .cloned()
    };
    assert_eq!(label("board").as_ref(), Some(&board.name));
    assert_eq!(label("target").as_ref(), Some(&board.target));
    // edge-init mounts cgroup2 and runs the node as root, so the node's rt support is on and
    // publishes the board's RT CPUs.
    assert_eq!(
        label("rt_cpus"),
        board.rt_cpu_list(),
        "labels: {:?}",
        computer.labels
    );
    assert_eq!(computer.partitions.len(), board.partitions.count as usize);

    let url = SoftwareUrl::parse(format!("file://{RELEASE_DIR}/software.toml")).expect("url");
    client
        .supply(
            &id,
            &SupplyRequest {
                url: url.clone(),
                state: SupplyState::Available,
            },
        )
        .expect("supply");
    let title = echo_title(board);
    let requested = client
        .request(&echo_request(board, &url, Params::new()))
        .expect("request");
    assert_eq!(requested.computer, id);
    let (_, at) = until(boot, "the release to be installed", || {
        let c = client.computer(&id).ok()?;
        let install = c.software.into_iter().find(|s| s.url == url)?.install?;
        assert_ne!(
            install.state,
            InstallState::Error,
            "install failed: {install:?}"
        );
        (install.state == InstallState::Available).then_some(())
    });
    t.installed = Some(at);
    let (info, at) = until_started(
        boot,
        &client,
        &title,
        requested.revision,
        "the instance to be reported started",
    );
    t.started = Some(at);
    let echo_addr = info.connection["echo"].as_str().unwrap_or_default();
    assert!(
        echo_addr
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok()),
        "connection parameter `echo` is not host:port: {echo_addr:?}"
    );
    url
}

/// Times of [`reboot_offline`]; those of the second boot are since its QEMU was spawned.
#[derive(Debug, Clone, Default)]
pub struct RebootTimings {
    /// The first boot, converged as [`converge`] does, powered off with the master down.
    pub first: Timings,
    /// Second boot: PID 1 printed its first line.
    pub init: Duration,
    /// The node printed `starting from the cached desired state`.
    pub from_cache: Duration,
    /// The node converged the partition to `started` again, no master.
    pub restarted: Duration,
    /// The master is back and changed the instance's parameters: the node reported the new
    /// revision started (since the master's restart).
    pub resynced: Duration,
    /// PID 1 printed `powering off`.
    pub powered_off: Duration,
    /// Wall time of the whole run (both boots, the master's restart).
    pub total: Duration,
}

/// Whether the host can make the board's disk (`mke2fs`, e2fsprogs).
pub fn can_make_disk() -> bool {
    runs("mke2fs", &["-V"])
}

/// A 64 MiB ext2 image at `img`, mounted by the guest's ext4 driver.
fn make_disk(img: &Path) {
    let out = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext2", "-L", "slapos"])
        .arg(img)
        .arg("64M")
        .output()
        .expect("run mke2fs");
    assert!(
        out.status.success(),
        "mke2fs {}: {}",
        img.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A reboot while the master is down. With `/srv/slapos` on a disk that survives the reboot
/// ([`initramfs_with`]): boot, converge as [`converge`] does; stop the master (database at `db`)
/// and power the board off; boot again with no master: the node must start from its cached
/// desired state, restart the service and find its promise (an echo through it) passing; start
/// the master again on the same port: the report the node made offline reaches it (promise
/// results newer than the reboot); change the instance's parameters: the node must converge
/// the new revision. Then power off.
pub fn reboot_offline(
    board: &Board,
    prep: &Prepared,
    db: &Path,
    scratch: &Path,
    echo: bool,
) -> RebootTimings {
    let run_started = Instant::now();
    let disk = scratch.join("disk.img");
    make_disk(&disk);
    let master = Master::start(db);
    let addr = master.addr();
    let initrd = scratch.join("initrd-disk.cpio");
    let pack = || {
        std::fs::write(
            &initrd,
            initramfs_with(board, prep, Some(master_port(&master)), true),
        )
        .expect("write initramfs")
    };
    pack();
    let mut boot = spawn_with(board, prep, &initrd, Some(&disk), echo);
    let mut first = Timings::default();
    wait_init(&mut boot, &mut first);
    boot.wait_line("mounted /dev/vda on /srv/slapos", LIMIT)
        .unwrap_or_else(|e| panic!("{e}"));
    let url = converge_on(&mut boot, board, &master, &mut first);
    let title = echo_title(board);
    let before = master.client().instance(&title, None).expect("instance");

    // The master goes away, then the board reboots (power off, boot the same disk again; a
    // fresh initramfs only for the guest's clock).
    pack();
    let Master { mut proc, .. } = master;
    proc.stop();
    power_off(&mut boot, &mut first);
    drop(boot);
    let rebooted_ms = now_ms();
    let mut boot = spawn_with(board, prep, &initrd, Some(&disk), echo);
    let mut t = RebootTimings {
        first,
        ..RebootTimings::default()
    };
    let mut second = Timings::default();
    wait_init(&mut boot, &mut second);
    t.init = second.init;
    let (at, _) = boot
        .wait_line("starting from the cached desired state", LIMIT)
        .unwrap_or_else(|e| panic!("{e}"));
    t.from_cache = at;
    let converged = format!("revision={}", before.revision);
    let (at, line) = boot
        .wait_until("the partition converged", LIMIT, |l| {
            l.contains("converged") && l.contains(&converged)
        })
        .unwrap_or_else(|e| panic!("the partition did not converge from the cache: {e}"));
    assert!(line.contains("started"), "converged, not started: {line}");
    t.restarted = at;
    // Two promise periods with no master: the echo promise must not fail.
    std::thread::sleep(Duration::from_secs(5));
    let log = boot.log();
    let failed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("promise failed"))
        .collect();
    assert!(
        failed.is_empty(),
        "after the offline reboot: {failed:?}
{log}"
    );

    // The master comes back on the same port: the offline report arrives, then a change.
    let master = Master::start_on(db, &addr);
    let back = Instant::now();
    let client = master.client();
    until(
        &mut boot,
        "the report made offline to reach the master",
        || {
            let info = client.instance(&title, None).ok()?;
            let r = info.reported.as_ref()?;
            let fresh = r.report.revision == before.revision
                && r.report.state == InstanceState::Started
                && !r.report.promises.is_empty()
                && r.report
                    .promises
                    .iter()
                    .all(|p| p.ok && p.at_ms >= rebooted_ms.saturating_sub(5_000));
            fresh.then_some(())
        },
    );
    let mut parameters = Params::new();
    parameters.insert("greeting".into(), "after-reboot".into());
    let changed = client
        .request(&echo_request(board, &url, parameters))
        .expect("parameter change");
    assert!(changed.revision > before.revision, "{changed:?}");
    until_started(
        &mut boot,
        &client,
        &title,
        changed.revision,
        "the node to converge the change after the master came back",
    );
    t.resynced = back.elapsed();
    power_off(&mut boot, &mut second);
    t.powered_off = second.powered_off;
    t.total = run_started.elapsed();
    t
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn secs(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.2}s", d.as_secs_f64()))
        .unwrap_or_else(|| "-".into())
}

/// One line describing a run, for the console and `boards-report.txt`.
pub fn report_line(board: &Board, prep: &Prepared, what: &str, t: &Timings) -> String {
    let q = board.bootable().expect("bootable board");
    let kernel = std::fs::read_to_string(prep.kernel_dir.join("version")).unwrap_or_default();
    format!(
        "{name} [{what}] {qemu} -M {machine} -cpu {cpu} -smp {smp}, {kernel}: init {init} (guest boottime {guest}), \
         registered {reg}, release installed {inst}, instance started {start}, powered off {off} \
         (seconds since QEMU spawn)",
        name = board.name,
        qemu = version_line(&q.system),
        machine = q.machine,
        cpu = q.cpu,
        smp = board.cpus,
        kernel = kernel.trim(),
        init = secs(Some(t.init)),
        guest = t
            .init_guest
            .map(|g| format!("{g:.2}s"))
            .unwrap_or_else(|| "-".into()),
        reg = secs(t.registered),
        inst = secs(t.installed),
        start = secs(t.started),
        off = secs(Some(t.powered_off)),
    )
}

/// One line describing a [`reboot_offline`] run, for the console and `boards-report.txt`.
pub fn reboot_report_line(board: &Board, t: &RebootTimings) -> String {
    format!(
        "{name} [reboot offline] first boot: registered {reg}, instance started {start}, \
         powered off {off}; second boot (no master): init {init}, from the cache {cache}, \
         instance started {restarted}; master back: change converged {resync} after its \
         restart; powered off {off2}; whole run {total}",
        name = board.name,
        reg = secs(t.first.registered),
        start = secs(t.first.started),
        off = secs(Some(t.first.powered_off)),
        init = secs(Some(t.init)),
        cache = secs(Some(t.from_cache)),
        restarted = secs(Some(t.restarted)),
        resync = secs(Some(t.resynced)),
        off2 = secs(Some(t.powered_off)),
        total = secs(Some(t.total)),
    )
}

/// Append `line` to `<target dir>/boards-report.txt`.
pub fn append_report(target_dir: &Path, line: &str) {
    let path = target_dir.join("boards-report.txt");
    let mut text = std::fs::read_to_string(&path).unwrap_or_default();
    text.push_str(line);
    text.push('\n');
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}
