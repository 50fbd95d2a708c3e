//! `/etc/edge-init.conf`: what the board PID 1 (`edge-init`) does at boot.
//!
//! One directive per line, words separated by white space, `#` starts a comment line:
//!
//! ```text
//! clock 1763790000                 # set CLOCK_REALTIME (unix seconds) if the guest's is earlier
//! module /lib/modules/failover.ko  # finit_module(), in file order (dependencies first)
//! net eth0 10.0.2.15/24            # address + prefix, interface up (lo is always brought up)
//! mount /dev/vda /srv/slapos ext4  # after the modules: a persistent disk (the reboot test)
//! env PATH=/bin                    # environment of the service
//! exec /bin/slapos-node run --config /etc/slapos/node.toml
//! ```
//!
//! `exec` (at most one) is the service PID 1 supervises: when it exits, the board powers off with
//! its status. Arguments cannot contain white space (none of ours do). Pure: parsed and rendered
//! here, so the test that writes the file and the init that reads it share one definition.

use std::net::Ipv4Addr;
use std::path::PathBuf;

/// One interface to configure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConf {
    /// Interface name (`eth0`).
    pub iface: String,
    /// Address.
    pub addr: Ipv4Addr,
    /// Prefix length (0..=32).
    pub prefix: u8,
}

impl NetConf {
    /// The netmask of the prefix.
    pub fn netmask(&self) -> Ipv4Addr {
        let bits = if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        };
        Ipv4Addr::from(bits)
    }
}

/// The parsed file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitConf {
    /// Lower bound of the wall clock, unix seconds.
    pub clock: Option<u64>,
    /// Kernel modules to load, in order.
    pub modules: Vec<PathBuf>,
    /// Interfaces to configure.
    pub nets: Vec<NetConf>,
    /// Filesystems to mount after the modules are loaded: (source, directory, type).
    pub mounts: Vec<(String, String, String)>,
    /// Service environment, in order.
    pub env: Vec<(String, String)>,
    /// The service argv (empty: none, PID 1 only waits for `poweroff`).
    pub exec: Vec<String>,
}

impl InitConf {
    /// Parse the file text. Errors name the line number and the problem.
    pub fn parse(text: &str) -> Result<InitConf, String> {
        let mut conf = InitConf::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |m: &str| format!("edge-init.conf line {}: {m}: `{line}`", n + 1);
            let mut words = line.split_whitespace();
            let key = words.next().unwrap_or_default();
            let rest: Vec<&str> = words.collect();
            match (key, rest.as_slice()) {
                ("clock", [secs]) => {
                    conf.clock = Some(secs.parse().map_err(|_| at("bad unix seconds"))?);
                }
                ("module", [path]) => conf.modules.push(PathBuf::from(path)),
                ("net", [iface, cidr]) => {
                    let (addr, prefix) = cidr
                        .split_once('/')
                        .ok_or_else(|| at("expected A.B.C.D/N"))?;
                    let addr = addr.parse().map_err(|_| at("bad IPv4 address"))?;
                    let prefix = prefix
                        .parse()
                        .ok()
                        .filter(|p| *p <= 32)
                        .ok_or_else(|| at("bad prefix length"))?;
                    if iface.is_empty() || iface.len() > 15 {
                        return Err(at("interface name must be 1..=15 bytes"));
                    }
                    conf.nets.push(NetConf {
                        iface: (*iface).to_owned(),
                        addr,
                        prefix,
                    });
                }
                ("mount", [src, dir, fstype]) => {
                    if !dir.starts_with('/') {
                        return Err(at("the mount point must be an absolute path"));
                    }
                    conf.mounts
                        .push(((*src).to_owned(), (*dir).to_owned(), (*fstype).to_owned()));
                }
                ("env", [kv]) => {
                    let (k, v) = kv.split_once('=').ok_or_else(|| at("expected KEY=VALUE"))?;
                    conf.env.push((k.to_owned(), v.to_owned()));
                }
                ("exec", [_, ..]) => {
                    if !conf.exec.is_empty() {
                        return Err(at("a second exec"));
                    }
                    conf.exec = rest.iter().map(|s| (*s).to_owned()).collect();
                }
                _ => return Err(at("unknown directive or wrong number of words")),
            }
        }
        Ok(conf)
    }

    /// The file text; `parse(render())` gives the same value back.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Some(c) = self.clock {
            out.push_str(&format!("clock {c}\n"));
        }
        for m in &self.modules {
            out.push_str(&format!("module {}\n", m.display()));
        }
        for n in &self.nets {
            out.push_str(&format!("net {} {}/{}\n", n.iface, n.addr, n.prefix));
        }
        for (src, dir, fstype) in &self.mounts {
            out.push_str(&format!("mount {src} {dir} {fstype}\n"));
        }
        for (k, v) in &self.env {
            out.push_str(&format!("env {k}={v}\n"));
        }
        if !self.exec.is_empty() {
            out.push_str(&format!("exec {}\n", self.exec.join(" ")));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> InitConf {
        InitConf {
            clock: Some(1_763_790_000),
            modules: vec![
                "/lib/modules/failover.ko".into(),
                "/lib/modules/virtio_net.ko".into(),
            ],
            nets: vec![NetConf {
                iface: "eth0".into(),
                addr: Ipv4Addr::new(10, 0, 2, 15),
                prefix: 24,
            }],
            mounts: vec![("/dev/vda".into(), "/srv/slapos".into(), "ext4".into())],
            env: vec![
                ("PATH".into(), "/bin".into()),
                ("RUST_LOG".into(), "info".into()),
            ],
            exec: vec![
                "/bin/slapos-node".into(),
                "run".into(),
                "--config".into(),
                "/etc/n.toml".into(),
            ],
        }
    }

    #[test]
    fn render_then_parse_round_trips() {
        let c = sample();
        let text = c.render();
        assert!(text.contains("net eth0 10.0.2.15/24\n"), "{text}");
        assert_eq!(InitConf::parse(&text).unwrap(), c);
    }

    #[test]
    fn comments_blank_lines_and_spacing_are_ignored() {
        let c = InitConf::parse("# x\n\n  net   eth0\t10.0.2.15/8  \nexec /init sleep\n").unwrap();
        assert_eq!(c.nets[0].prefix, 8);
        assert_eq!(c.exec, ["/init", "sleep"]);
        assert!(c.modules.is_empty() && c.clock.is_none());
    }

    #[test]
    fn netmask_from_prefix() {
        let mut n = sample().nets.remove(0);
        assert_eq!(n.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        n.prefix = 0;
        assert_eq!(n.netmask(), Ipv4Addr::UNSPECIFIED);
        n.prefix = 32;
        assert_eq!(n.netmask(), Ipv4Addr::BROADCAST);
        n.prefix = 20;
        assert_eq!(n.netmask(), Ipv4Addr::new(255, 255, 240, 0));
    }

    #[test]
    fn errors_name_the_line() {
        for (text, what) in [
            ("net eth0 10.0.2.15", "expected A.B.C.D/N"),
            ("net eth0 10.0.2.300/24", "bad IPv4 address"),
            ("net eth0 10.0.2.1/33", "bad prefix length"),
            ("net averyveryverylongname 10.0.2.1/24", "1..=15"),
            ("clock soon", "bad unix seconds"),
            ("env PATH", "KEY=VALUE"),
            ("exec a\nexec b", "second exec"),
            ("mount /proc", "unknown directive"),
            ("mount /dev/vda srv ext4", "absolute path"),
            ("module", "unknown directive"),
        ] {
            let e = InitConf::parse(text).unwrap_err();
            assert!(e.contains(what) && e.contains("line "), "{text:?}: {e}");
        }
        let e = InitConf::parse("clock 1\n\nenv X").unwrap_err();
        assert!(e.contains("line 3"), "{e}");
    }
}
