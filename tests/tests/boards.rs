//! Board tests: the board files are consistent, and the QEMU boards boot the static node, which
//! registers with a master-lite on the host, installs a release and starts an instance.
//!
//! The QEMU tests are gated by `SLAPOS_REQUIRE_QEMU`: without QEMU, the board kernel or the cross
//! toolchain they print a reason and skip; with `SLAPOS_REQUIRE_QEMU=1` that is a failure.
//! Set-up (`scripts/deps/cross.sh` as root does all of it): `qemu-system-arm`, the cross gcc for
//! armv7, the rustup targets, and the kernels (`boards/fetch-kernels.sh`, cached under
//! `<target dir>/boards-cache`; the test runs the script itself when the cache is empty).
//!
//! What a board run does (one board at a time, so the figures are not skewed by a parallel boot):
//! 1. `cross/build.sh --no-report <target>`: the minsize node binaries and `edge-init` (a no-op when
//!    `cross/build.sh` already built them; the artefacts are shared with scripts/checks/cross.sh);
//! 2. starts `slapos-master serve` on 127.0.0.1, port 0 (the guest reaches it as 10.0.2.2);
//! 3. packs an initramfs: `edge-init` as `/init`, the node, its config, the virtio modules (order
//!    from the modules' `depends=`), a release under `/srv/release` whose service and promise are
//!    `edge-init tcp-echo` / `check-tcp` (the guest has no shell or interpreter), and for glibc
//!    targets the loader and C runtime from the Debian cross sysroot;
//! 4. boots it (`qemu-system-* -M virt`, user-mode network), waits through the master's API for
//!    the computer to register, supplies the release, requests an instance on that computer, and
//!    waits until the master shows it `started` at the current revision with its promise passing
//!    and its connection parameter published;
//! 5. types `poweroff` on the console and expects the board to power off cleanly (status 0).
//!
//! Times (since QEMU was spawned) are printed and appended to `<target dir>/boards-report.txt`;
//! they are measurements, never assertions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use slapos_proto::{
    ComputerId, InstanceRequest, InstanceState, InstanceTitle, LabelKey, SoftwareUrl,
    SupplyRequest, SupplyState,
};
use slapos_tests::boards::cpio::Cpio;
use slapos_tests::boards::init_conf::{InitConf, NetConf};
use slapos_tests::boards::{self, Board, kmod, qemu};
use slapos_tests::{Master, bin_dir};

static ONE_BOARD_AT_A_TIME: Mutex<()> = Mutex::new(());

const RELEASE_DIR: &str = "/srv/release";
const GUEST_NODE: &str = "/bin/slapos-node";
const GUEST_NODE_CONFIG: &str = "/etc/slapos/node.toml";
/// The node's profile of cross/build.sh.
const PROFILE: &str = "minsize";

#[test]
fn board_files_are_valid_and_consistent_with_the_toolchain_and_kernel_fetcher() {
    let repo = boards::repo_root();
    let all = boards::load_all(&boards::boards_dir()).expect("board files");
    let names: Vec<&str> = all.iter().map(|b| b.name.as_str()).collect();
    for required in [
        "qemu-virt-aarch64",
        "qemu-virt-armv7",
        "raspberry-pi-4",
        "x86-gateway",
    ] {
        assert!(
            names.contains(&required),
            "boards/{required}/board.toml missing: {names:?}"
        );
    }
    let targets = boards::toolchain_targets(&repo).expect("rust-toolchain.toml");
    let fetcher =
        std::fs::read_to_string(repo.join("boards/fetch-kernels.sh")).expect("fetch-kernels.sh");
    for b in &all {
        assert!(
            targets.contains(&b.target),
            "board {}: target {} is not in rust-toolchain.toml {targets:?}",
            b.name,
            b.target
        );
        assert!(
            b.node_labels().get("board").is_some_and(|v| v == &b.name),
            "board {}: label `board` must name the board",
            b.name
        );
        if b.bootable().is_some() {
            let k = format!("{}:{}", b.kernel.package, b.kernel.debian_arch);
            assert!(
                fetcher.contains(&k),
                "board {}: fetch-kernels.sh does not fetch {k}",
                b.name
            );
        }
    }
    assert!(
        all.iter().filter(|b| b.bootable().is_some()).count() >= 2,
        "the aarch64 and armv7 virt boards must be bootable"
    );
}

#[test]
fn qemu_virt_aarch64_node_registers_and_starts_an_instance() {
    boot_and_converge(
        "qemu_virt_aarch64_node_registers_and_starts_an_instance",
        "qemu-virt-aarch64",
    );
}

#[test]
fn qemu_virt_armv7_node_registers_and_starts_an_instance() {
    boot_and_converge(
        "qemu_virt_armv7_node_registers_and_starts_an_instance",
        "qemu-virt-armv7",
    );
}

/// A program answers `--version` (or the given probe arguments).
fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn first_line(program: &str) -> String {
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

/// What a board run needs from the host, or why it cannot run here.
struct Prepared {
    kernel_dir: PathBuf,
    artefacts: PathBuf,
}

fn prepare(board: &Board, target_dir: &Path) -> Result<Prepared, String> {
    let q = board.bootable().ok_or("board is not bootable under QEMU")?;
    if !runs(&q.system, &["--version"]) {
        return Err(format!(
            "{} is not installed (scripts/deps/cross.sh)",
            q.system
        ));
    }
    let libdir = Command::new("rustc")
        .args(["--print", "target-libdir", "--target", &board.target])
        .current_dir(boards::repo_root())
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if !libdir.is_some_and(|d| has_std(&d)) {
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
    let cache = boards::cache_dir(target_dir);
    let kernel_dir = boards::kernel_dir(&cache, board);
    if !kernel_dir.join("vmlinuz").exists() {
        let ok = Command::new(boards::repo_root().join("boards/fetch-kernels.sh"))
            .arg(&cache)
            .env(
                "SLAPOS_BOARD_KERNELS",
                format!("{}:{}", board.kernel.package, board.kernel.debian_arch),
            )
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok || !kernel_dir.join("vmlinuz").exists() {
            return Err(format!(
                "kernel {} ({}) not in {} and boards/fetch-kernels.sh could not fetch it",
                board.kernel.package,
                board.kernel.debian_arch,
                cache.display()
            ));
        }
    }
    // Build (or find up to date) the node and edge-init. From here on a failure is a bug.
    let status = Command::new(boards::repo_root().join("cross/build.sh"))
        .args(["--no-report", &board.target])
        .env("CARGO_TARGET_DIR", target_dir)
        .env("SLAPOS_CROSS_NO_INSTALL", "1")
        .status()
        .expect("run cross/build.sh");
    assert!(status.success(), "cross/build.sh {} failed", board.target);
    Ok(Prepared {
        kernel_dir,
        artefacts: target_dir.join(&board.target).join(PROFILE),
    })
}

fn has_std(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("libstd-"))
        })
        .unwrap_or(false)
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// The release the guest installs: its service and promise are edge-init's tcp-echo/check-tcp.
fn add_release(img: &mut Cpio, service_bin: &[u8]) {
    let instance = r#"[[service]]
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

fn node_config(board: &Board, master_port: u16) -> String {
    let mut labels = String::new();
    for (k, v) in board.node_labels() {
        labels.push_str(&format!("{k} = {}\n", toml_str(&v)));
    }
    format!(
        r#"master_url = "http://10.0.2.2:{master_port}"
computer_id = {id}
partitions = {count}
software_root = "/srv/slapos/software"
instance_root = "/srv/slapos/instance"
poll_interval = 1

[labels]
{labels}"#,
        id = toml_str(&board.name),
        count = board.partitions.count,
    )
}

fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The initramfs: init, node, config, modules, release, and the C runtime for glibc targets.
fn initramfs(board: &Board, prep: &Prepared, master_port: u16) -> Vec<u8> {
    let init = read(&prep.artefacts.join("edge-init"));
    let node = read(&prep.artefacts.join("slapos-node"));
    let mut img = Cpio::new();
    for d in ["proc", "sys", "dev", "tmp", "run", "root", "srv/slapos"] {
        img.dir(d);
    }
    img.file("init", &init, 0o755);
    img.file(GUEST_NODE, &node, 0o755);
    img.file("etc/passwd", b"root:x:0:0:root:/root:/bin/false\n", 0o644);
    img.file("etc/group", b"root:x:0:\n", 0o644);
    img.file(
        GUEST_NODE_CONFIG,
        node_config(board, master_port).as_bytes(),
        0o644,
    );
    add_release(&mut img, &init);

    let modules = kmod::load_order(&prep.kernel_dir.join("modules"), &board.kernel.modules)
        .unwrap_or_else(|e| panic!("board {}: {e}", board.name));
    let mut guest_modules = Vec::new();
    for m in &modules {
        let name = m.file_name().expect("module file name").to_string_lossy();
        let guest = format!("/lib/modules/{name}");
        img.file(&guest, &read(m), 0o644);
        guest_modules.push(PathBuf::from(guest));
    }
    if board.is_glibc() {
        let sysroot = boards::glibc_sysroot(&board.target).expect("sysroot of a glibc target");
        let mut copied = 0;
        for entry in std::fs::read_dir(sysroot.join("lib"))
            .expect("cross sysroot lib dir")
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let wanted = name.starts_with("ld-linux")
                || ["libc.so.6", "libm.so.6", "libgcc_s.so.1"].contains(&name.as_str());
            if wanted {
                // fs::read follows the symlinks of the sysroot to the real file.
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
        env: vec![
            ("PATH".into(), "/bin".into()),
            ("HOME".into(), "/root".into()),
            ("SLAPOS_LOG".into(), "info".into()),
            ("NO_COLOR".into(), "1".into()),
        ],
        exec: vec![
            GUEST_NODE.into(),
            "run".into(),
            "--config".into(),
            GUEST_NODE_CONFIG.into(),
        ],
    };
    img.file("etc/edge-init.conf", conf.render().as_bytes(), 0o644);
    img.finish()
}

/// Poll `f` every 20 ms until it returns `Some`; fail with the console if QEMU stops first or the
/// deadline passes. Returns the value and the time since QEMU was spawned.
fn until<T>(
    boot: &mut qemu::Boot,
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> (T, Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return (v, boot.elapsed());
        }
        if boot.wait_exit(Duration::ZERO).is_some() || Instant::now() > deadline {
            panic!(
                "waiting for {what}: QEMU exited or {timeout:?} passed; console:\n{}",
                boot.log()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn boot_and_converge(test: &str, name: &str) {
    let _one = ONE_BOARD_AT_A_TIME
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let board =
        Board::load(&boards::boards_dir().join(name).join("board.toml")).expect("board file");
    let target_dir = bin_dir().parent().expect("target dir").to_path_buf();
    let prep = match prepare(&board, &target_dir) {
        Ok(p) => p,
        Err(reason) => return boards::qemu_skip(test, &reason),
    };
    let q = board.bootable().expect("bootable");

    let tmp = tempfile::tempdir().expect("tempdir");
    let master = Master::start(&tmp.path().join("master.db"));
    let port: u16 = master
        .addr()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("master port");
    let initrd = tmp.path().join("initrd.cpio");
    std::fs::write(&initrd, initramfs(&board, &prep, port)).expect("write initramfs");
    let dtb = q.dtb.as_ref().map(|d| prep.kernel_dir.join("dtbs").join(d));
    let cmd = qemu::command(
        &board,
        &prep.kernel_dir.join("vmlinuz"),
        &initrd,
        dtb.as_deref(),
    )
    .expect("qemu command");
    let echo = std::env::var_os("SLAPOS_TEST_ECHO").is_some();
    let mut boot = qemu::Boot::spawn(cmd, echo).expect("spawn QEMU");

    // Slow TCG (armv7, a loaded CI host): generous deadlines; the figures are reported, not asserted.
    let limit = Duration::from_secs(180);
    let (t_init, init_line) = boot
        .wait_line("edge-init started", limit)
        .unwrap_or_else(|e| panic!("{e}"));
    let client = master.client();
    let id = ComputerId::parse(board.name.as_str()).expect("computer id");
    let (computer, t_registered) = until(&mut boot, "the node to register", limit, || {
        client.computer(&id).ok()
    });
    let label = |k: &str| {
        computer
            .labels
            .get(&LabelKey::parse(k).expect("label key"))
            .cloned()
    };
    assert_eq!(label("board").as_ref(), Some(&board.name));
    assert_eq!(label("target").as_ref(), Some(&board.target));
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
    let title = InstanceTitle::parse(format!("echo-{}", board.name)).expect("title");
    let requested = client
        .request(&InstanceRequest {
            title: title.clone(),
            software_url: url.clone(),
            software_type: Default::default(),
            parameters: Default::default(),
            sla: BTreeMap::from([("computer_guid".to_owned(), board.name.clone())]),
            state: None,
        })
        .expect("request");
    assert_eq!(requested.computer, id);
    let (_, t_installed) = until(&mut boot, "the release to be installed", limit, || {
        let c = client.computer(&id).ok()?;
        let sw = c.software.into_iter().find(|s| s.url == url)?;
        let install = sw.install?;
        assert_ne!(
            install.state,
            slapos_proto::InstallState::Error,
            "install failed: {install:?}"
        );
        (install.state == slapos_proto::InstallState::Available).then_some(())
    });
    let (info, t_started) = until(
        &mut boot,
        "the instance to be reported started",
        limit,
        || {
            let info = client.instance(&title, None).ok()?;
            let r = info.reported.as_ref()?;
            let ok = r.report.state == InstanceState::Started
                && r.report.revision == info.revision
                && !r.report.promises.is_empty()
                && r.report.promises.iter().all(|p| p.ok)
                && info.connection.contains_key("echo");
            ok.then_some(info)
        },
    );
    assert_eq!(
        info.connection["echo"].as_str().map(|s| s.ends_with(':')),
        Some(false),
        "connection parameter names a port"
    );

    boot.send("poweroff").expect("console");
    let (t_off, off_line) = boot
        .wait_line("powering off (status", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
    let status = boot.wait_exit(Duration::from_secs(30));
    assert!(
        off_line.contains("(status 0)"),
        "unclean power-off: {off_line}\n{}",
        boot.log()
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "QEMU did not exit cleanly: {status:?}"
    );

    let guest_init = init_line
        .split(['[', ']'])
        .nth(1)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let node_size = std::fs::metadata(prep.artefacts.join("slapos-node"))
        .map(|m| m.len())
        .unwrap_or(0);
    let line = format!(
        "{name}: {qemu} ({machine}/{cpu}), kernel {kernel}, node {node_size} B: init {init:.2}s (guest {guest_init}), \
         registered {reg:.2}s, release installed {inst:.2}s, instance started {start:.2}s, powered off {off:.2}s \
         [seconds since QEMU spawn]",
        qemu = first_line(&q.system),
        machine = q.machine,
        cpu = q.cpu,
        kernel = std::fs::read_to_string(prep.kernel_dir.join("version"))
            .unwrap_or_default()
            .trim(),
        init = t_init.as_secs_f64(),
        reg = t_registered.as_secs_f64(),
        inst = t_installed.as_secs_f64(),
        start = t_started.as_secs_f64(),
        off = t_off.as_secs_f64(),
    );
    eprintln!("BOARD {line}");
    let report = target_dir.join("boards-report.txt");
    let mut old = std::fs::read_to_string(&report).unwrap_or_default();
    old.push_str(&line);
    old.push('\n');
    std::fs::write(&report, old).expect("write boards-report.txt");
}
