//! rt on the board's real cgroup2 (issue 20): the node (rt enabled: PID 1 mounts cgroup2 and
//! runs it as root) places FIFO partitions on the board's kernel, the guest checks them from
//! `/proc` and `/sys/fs/cgroup` (`edge-init check-rt`, the `rt` promise), and destroy removes
//! every group (PID 1 prints the cgroup tree at power-off).
//!
//! 1. exclusive CPUs (`cpus = 1`, FIFO 80): on a kernel with `cpuset.cpus.exclusive` (Linux ≥ 6.7,
//!    the bookworm-backports kernel) the echo server must run on the reserved CPU in a cpuset
//!    partition root, the CPU gone from the root's effective CPUs; on an older kernel the node
//!    must refuse with the typed error naming `cpuset.cpus.exclusive`, nothing started;
//! 2. FIFO 80 without exclusive CPUs: started, the promise reads SCHED_FIFO 80 and the cgroup
//!    under the node's subtree;
//! 3. both destroyed, the board powered off: no cgroup of the node's subtree is left.

use serde_json::json;
use slapos_proto::{InstanceState, InstanceTitle, Params, StateChange};

use super::*;

/// What the run saw.
#[derive(Debug, Clone, Default)]
pub struct RtV2 {
    /// The guest kernel release (`Linux version …` on the console).
    pub kernel: String,
    /// Whether the kernel has remote cpuset partitions (`cpuset.cpus.exclusive`, ≥ 6.7).
    pub remote_partitions: bool,
    /// PID 1's measurement of the kernel's cgroup2 cpuset (`init: cpuset v2: …`).
    pub cpuset_v2: String,
    /// Step 1: the `rt` promise's message (≥ 6.7) or the node's refusal (older kernels).
    pub exclusive: String,
    /// Step 2: the `rt` promise's message.
    pub fifo: String,
    /// The cgroup tree PID 1 printed at power-off.
    pub cgroups_left: String,
    /// Boot and convergence times.
    pub t: Timings,
}

/// `major.minor` of a kernel release (`6.1.0-50-arm64` → (6, 1)).
fn version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(['.', '-']);
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

fn title(board: &Board, what: &str) -> InstanceTitle {
    InstanceTitle::parse(format!("rt-{what}-{}", board.name)).expect("title")
}

/// Until the `rt` promise of `title` passes with every other promise; its message.
fn until_rt_ok(boot: &mut Boot, client: &slapos_client::Client, title: &InstanceTitle) -> String {
    until(boot, &format!("{title}: `rt` promise passing"), || {
        let info = client.instance(title, None).ok()?;
        let r = info.reported.as_ref()?;
        if let Some(e) = &r.report.error {
            panic!("{title}: the node reported an error: {e}");
        }
        let rt = r.report.promises.iter().find(|p| p.name == "rt")?;
        let all = r.report.state == InstanceState::Started
            && r.report.revision == info.revision
            && r.report.promises.iter().all(|p| p.ok);
        all.then(|| rt.message.clone())
    })
    .0
}

fn destroy(boot: &mut Boot, client: &slapos_client::Client, title: &InstanceTitle) {
    client
        .set_state(
            title,
            &StateChange {
                state: InstanceState::Destroyed,
            },
        )
        .expect("destroy");
    until(boot, &format!("{title} destroyed"), || {
        let Ok(info) = client.instance(title, None) else {
            return Some(());
        };
        let r = info.reported.as_ref()?;
        (r.report.state == InstanceState::Destroyed).then_some(())
    });
}

/// The scenario of the module doc on `board` (it must have ≥ 2 CPUs and `rt_cpus`).
pub fn rt_v2(board: &Board, prep: &Prepared, master: &Master, scratch: &Path, echo: bool) -> RtV2 {
    let rt_cpus = board.rt_cpu_list().expect("a board with rt_cpus");
    let initrd = scratch.join("initrd-rt.cpio");
    std::fs::write(&initrd, initramfs(board, prep, Some(master_port(master))))
        .expect("write initramfs");
    let mut boot = spawn(board, prep, &initrd, echo);
    let mut out = RtV2::default();
    wait_init(&mut boot, &mut out.t);
    let (_, line) = boot
        .wait_line("Linux version", LIMIT)
        .unwrap_or_else(|e| panic!("{e}"));
    out.kernel = line
        .split("Linux version ")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or_default()
        .to_owned();
    let v = version(&out.kernel).unwrap_or_else(|| panic!("kernel release in {line:?}"));
    out.remote_partitions = v >= (6, 7);
    let (_, line) = boot
        .wait_line("cpuset v2: ", LIMIT)
        .unwrap_or_else(|e| panic!("{e}"));
    out.cpuset_v2 = line
        .split_once("cpuset v2: ")
        .map(|(_, r)| r.trim().to_owned())
        .unwrap_or_default();
    assert_eq!(
        out.cpuset_v2.contains("cpuset.cpus.exclusive present"),
        out.remote_partitions,
        "kernel {} and its files disagree: {}",
        out.kernel,
        out.cpuset_v2
    );
    let url = converge_on(&mut boot, board, master, &mut out.t);
    let client = master.client();
    let request = |t: &InstanceTitle, p: Params| {
        let mut r = echo_request(board, &url, p);
        r.title = t.clone();
        client.request(&r).expect("request")
    };

    // 1. Exclusive CPUs.
    let excl = title(board, "exclusive");
    let p = json!({"rt_policy": "fifo", "rt_priority": "80", "rt_cpus": "1",
                   "rt_expect_cpus": rt_cpus});
    request(&excl, p.as_object().cloned().unwrap_or_default());
    if out.remote_partitions {
        out.exclusive = until_rt_ok(&mut boot, &client, &excl);
    } else {
        out.exclusive = until(&mut boot, "the node to refuse exclusive CPUs", || {
            let info = client.instance(&excl, None).ok()?;
            info.reported?.report.error
        })
        .0;
    }
    destroy(&mut boot, &client, &excl);

    // 2. FIFO without exclusive CPUs.
    let fifo = title(board, "fifo");
    let p = json!({"rt_policy": "fifo", "rt_priority": "80"});
    request(&fifo, p.as_object().cloned().unwrap_or_default());
    out.fifo = until_rt_ok(&mut boot, &client, &fifo);
    destroy(&mut boot, &client, &fifo);

    // 3. Power off; PID 1 prints the cgroup tree first.
    power_off(&mut boot, &mut out.t);
    out.cgroups_left = boot
        .log()
        .lines()
        .rev()
        .find_map(|l| {
            l.split_once("init: ")
                .and_then(|(_, r)| r.split_once("cgroups: "))
        })
        .map(|(_, tree)| tree.trim().trim_matches(['[', ']']).to_owned())
        .unwrap_or_else(|| panic!("no `cgroups:` line at power-off:\n{}", boot.log()));
    out
}

#[cfg(test)]
mod tests {
    use super::version;

    #[test]
    fn kernel_versions() {
        assert_eq!(version("6.1.0-50-arm64"), Some((6, 1)));
        assert_eq!(version("6.18.44"), Some((6, 18)));
        assert!(version("6.1.0-50-arm64").unwrap() < (6, 7));
        assert_eq!(version("linux"), None);
    }
}
