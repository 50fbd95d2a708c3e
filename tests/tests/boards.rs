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
//! 1. `cross/build.sh --no-report --bins slapos-node <target>`: the minsize node and `edge-init` (a no-op when
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
//! `qemu_virt_aarch64_node_comes_back_from_its_cache_after_an_offline_reboot` does the same with
//! `/srv/slapos` on a virtio disk (an ext2 image made by `mke2fs`), then stops the master,
//! reboots the board (power off, boot the same disk), checks that the node starts from its cached
//! desired state and brings the service back (its echo promise passing) with no master, starts
//! the master again on the same port and checks that the node's offline report arrives and that a
//! parameter change is converged (`run::reboot_offline`).
//!
//! `qemu_virt_aarch64_rt_partitions_on_cgroup_v2` boots the aarch64 board (2 vCPUs, cgroup2
//! mounted by PID 1, node with rt enabled) and runs `run::rt_v2`: exclusive CPUs (the typed
//! refusal naming `cpuset.cpus.exclusive` on the board's 6.1 kernel), FIFO 80 checked from the
//! guest's `/proc` and `/sys/fs/cgroup`, destroy leaving no cgroup behind.
//! `qemu_virt_aarch64_rt_isolated_partition_on_cgroup_v2_backports_kernel` runs it on the
//! bookworm-backports 6.12 kernel: exclusive CPUs are an isolated cpuset partition taken out of
//! the shared pool's effective CPUs, and given back at destroy.
//!
//! Times (since QEMU was spawned) are printed and appended to `<target dir>/boards-report.txt`;
//! they are measurements, never assertions.

use slapos_tests::boards::{self, Board, run};
use slapos_tests::{Master, bin_dir};
use std::sync::Mutex;

static ONE_BOARD_AT_A_TIME: Mutex<()> = Mutex::new(());

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
        fetcher.contains(&format!("{BACKPORTS_KERNEL}:arm64")),
        "fetch-kernels.sh does not fetch {BACKPORTS_KERNEL}:arm64"
    );
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

/// The node comes back from its offline cache: `/srv/slapos` on a disk, converge, master
/// stopped, board rebooted: the service runs again with no master; master back: a parameter
/// change is converged (`run::reboot_offline`). One board (aarch64, the Raspberry Pi stand-in):
/// the reboot path is the node's, not the board's.
#[test]
fn qemu_virt_aarch64_node_comes_back_from_its_cache_after_an_offline_reboot() {
    let test = "qemu_virt_aarch64_node_comes_back_from_its_cache_after_an_offline_reboot";
    let _one = ONE_BOARD_AT_A_TIME
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let board = Board::load(&boards::boards_dir().join("qemu-virt-aarch64/board.toml"))
        .expect("board file");
    if !run::can_make_disk() {
        return boards::qemu_skip(test, "mke2fs (e2fsprogs) is not installed");
    }
    let target_dir = bin_dir().parent().expect("target dir").to_path_buf();
    let prep = match run::prepare(&board, &target_dir) {
        Ok(p) => p,
        Err(reason) => return boards::qemu_skip(test, &reason),
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let echo = std::env::var_os("SLAPOS_TEST_ECHO").is_some();
    let t = run::reboot_offline(
        &board,
        &prep,
        &tmp.path().join("master.db"),
        tmp.path(),
        echo,
    );
    let line = run::reboot_report_line(&board, &t);
    eprintln!("BOARD {line}");
    run::append_report(&target_dir, &line);
}

/// rt on the board kernel's real cgroup2 (issue 20; `run::rt_v2`), Debian 12's 6.1 kernel: no
/// remote partitions, so exclusive CPUs are refused with the typed error.
#[test]
fn qemu_virt_aarch64_rt_partitions_on_cgroup_v2() {
    rt_partitions_on_cgroup_v2("qemu_virt_aarch64_rt_partitions_on_cgroup_v2", None, false);
}

/// The same on bookworm-backports' 6.12 kernel (remote partitions): the FIFO partition runs on
/// the reserved CPU in an isolated cpuset partition, which destroy gives back.
#[test]
fn qemu_virt_aarch64_rt_isolated_partition_on_cgroup_v2_backports_kernel() {
    rt_partitions_on_cgroup_v2(
        "qemu_virt_aarch64_rt_isolated_partition_on_cgroup_v2_backports_kernel",
        Some(BACKPORTS_KERNEL),
        true,
    );
}

/// The bookworm-backports arm64 kernel (boards/fetch-kernels.sh).
const BACKPORTS_KERNEL: &str = "linux-image-arm64@bookworm-backports";

/// `run::rt_v2` on the aarch64 board booting `kernel` (a fetch-kernels.sh meta package, else the
/// board's own); `remote`: whether that kernel must have remote partitions.
fn rt_partitions_on_cgroup_v2(test: &str, kernel: Option<&str>, remote: bool) {
    on_board_with(test, "qemu-virt-aarch64", kernel, |b| {
        assert!(b.board.cpus >= 2, "one CPU must stay for housekeeping");
        let r = run::rt_v2(&b.board, &b.prep, &b.master, b.tmp.path(), b.echo);
        eprintln!(
            "BOARD {} rt cgroup v2: kernel {} (remote partitions: {}; {})\n  exclusive CPUs: {}\n  fifo: {}\n  cgroups at power-off: [{}]\n  times: {:?}",
            b.board.name,
            r.kernel,
            r.remote_partitions,
            r.cpuset_v2,
            r.exclusive,
            r.fifo,
            r.cgroups_left,
            r.t
        );
        assert_eq!(r.remote_partitions, remote, "kernel {}", r.kernel);
        if r.remote_partitions {
            let cpus = b.board.rt_cpu_list().expect("rt_cpus");
            // Checked in the guest by `edge-init check-rt` (the `rt` promise); read back here.
            for want in [
                "policy fifo priority 80".to_owned(),
                format!("affinity {cpus} "),
                format!("cpuset.cpus.effective {cpus} cpuset.cpus.partition isolated "),
                format!("cpuset.cpus.exclusive {cpus} "),
            ] {
                assert!(
                    r.exclusive.contains(&want),
                    "`{want}` not in: {}",
                    r.exclusive
                );
            }
            // The shared pool (the node's subtree, the cgroup2 root) lost the reserved CPU, which
            // the root lists as isolated.
            let rt = boards::cpu_set(&cpus);
            let all: Vec<u32> = (0..b.board.cpus).collect();
            let shared: Vec<u32> = all.iter().copied().filter(|c| !rt.contains(c)).collect();
            for key in [
                "parent /slapos-edge cpuset.cpus.effective",
                "root cpuset.cpus.effective",
            ] {
                let got = boards::cpu_set(after(&r.exclusive, key));
                assert_eq!(got, shared, "{key} in: {}", r.exclusive);
            }
            let isolated = boards::cpu_set(after(&r.exclusive, "root cpuset.cpus.isolated"));
            assert_eq!(isolated, rt, "{}", r.exclusive);
            // Destroyed: the reserved CPU is back in the shared pool, no longer isolated.
            let back = boards::cpu_set(after(&r.fifo, "root cpuset.cpus.effective"));
            assert_eq!(back, all, "{}", r.fifo);
            let isolated = boards::cpu_set(after(&r.fifo, "root cpuset.cpus.isolated"));
            assert!(isolated.is_empty(), "{}", r.fifo);
        } else {
            // The node's typed refusal, naming the missing knob and the kernel
            // (rt::ProfileError::V2PartitionUnsupported).
            assert!(
                r.exclusive.contains("cpuset.cpus.exclusive")
                    && r.exclusive.contains(&format!("kernel {} ", r.kernel)),
                "refusal does not name the knob and the kernel: {}",
                r.exclusive
            );
        }
        for want in ["policy fifo priority 80", "cgroup /slapos-edge/"] {
            assert!(r.fifo.contains(want), "`{want}` not in: {}", r.fifo);
        }
        assert!(
            !r.cgroups_left.contains("slapos-edge"),
            "the node left cgroups behind: [{}]",
            r.cgroups_left
        );
    });
}

/// The word after `key ` in an `edge-init check-rt` message (empty when there is none).
fn after<'a>(message: &'a str, key: &str) -> &'a str {
    message
        .split_once(&format!("{key} "))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .filter(|w| *w != "kernel")
        .unwrap_or("")
}

/// What a board test runs with.
struct OnBoard {
    board: Board,
    prep: run::Prepared,
    master: Master,
    tmp: tempfile::TempDir,
    echo: bool,
    target_dir: std::path::PathBuf,
}

/// One board at a time: loads board `name`, prepares its artefacts (or skips `test` with the
/// reason), starts a master and runs `f`.
fn on_board(test: &str, name: &str, f: impl FnOnce(&OnBoard)) {
    on_board_with(test, name, None, f)
}

/// [`on_board`] booting `kernel` (a `boards/fetch-kernels.sh` meta package of the board's
/// architecture) instead of the board's `kernel.package`, when given.
fn on_board_with(test: &str, name: &str, kernel: Option<&str>, f: impl FnOnce(&OnBoard)) {
    let _one = ONE_BOARD_AT_A_TIME
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let mut board =
        Board::load(&boards::boards_dir().join(name).join("board.toml")).expect("board file");
    if let Some(k) = kernel {
        board.kernel.package = k.to_owned();
    }
    let target_dir = bin_dir().parent().expect("target dir").to_path_buf();
    let prep = match run::prepare(&board, &target_dir) {
        Ok(p) => p,
        Err(reason) => return boards::qemu_skip(test, &reason),
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let master = Master::start(&tmp.path().join("master.db"));
    let echo = std::env::var_os("SLAPOS_TEST_ECHO").is_some();
    f(&OnBoard {
        board,
        prep,
        master,
        tmp,
        echo,
        target_dir,
    });
}

fn boot_and_converge(test: &str, name: &str) {
    on_board(test, name, |b| {
        let t = run::converge(&b.board, &b.prep, &b.master, b.tmp.path(), b.echo);
        let line = run::report_line(&b.board, &b.prep, "board test", &t);
        eprintln!("BOARD {line}");
        run::append_report(&b.target_dir, &line);
    });
}
