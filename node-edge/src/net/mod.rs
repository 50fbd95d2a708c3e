//! Partition addresses (root mode): an IPv6 and/or a private IPv4 address per partition on a
//! configured interface, and optionally a TAP interface owned by the partition's user.
//!
//! ## Scheme (`[network]`, see `docs/node.md`)
//!
//! * `ipv6_prefix = "fd00:5a:1::/64"`: partition `N` gets `<prefix> + 0x100 + N` as a `/128`
//!   (`fd00:5a:1::100`, `::101`, …), added with `IFA_F_NODAD` so a service can bind it at once.
//! * `ipv4_prefix = "10.0.44.0/24"`: partition `N` gets `<prefix> + 10 + N` as a `/32`.
//! * Host addresses (`/128`, `/32`) add no route: the interface's own address and route make
//!   the link reachable, and the kernel answers neighbour solicitations for every address of
//!   the interface.
//! * `tap = true`: a persistent TAP `<tap_prefix>N` per partition, owned by the partition's
//!   uid/gid (`TUNSETOWNER`/`TUNSETGROUP`), brought up.
//!
//! Every address and TAP the node added is recorded in `<state_dir>/network.json`; at each
//! format those no longer wanted (fewer `partitions`, another prefix or interface, no
//! `[network]`) are removed, so format is idempotent and removing a partition removes its
//! addresses.
//!
//! ## Kernel interface
//!
//! Plain rtnetlink messages (encoded and decoded in `net/netlink.rs`, pure and tested against
//! fixed bytes) over a `NETLINK_ROUTE` socket (RTM_NEWADDR, RTM_DELADDR,
//! RTM_NEWLINK for "up", RTM_DELLINK for a TAP), each acknowledged; TAPs come from the
//! `TUNSETIFF` + `TUNSETPERSIST` ioctls on `/dev/net/tun`, as the kernel refuses tun creation
//! over rtnetlink. The `rtnetlink` crate does the same with an async stack and ~0.5–1.5 MB of
//! code; the node's 3 MB budget does not have room for it (see docs/node.md).

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
#[cfg(feature = "net")]
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::sys::Identity;

#[cfg(feature = "net")]
mod netlink;
#[cfg(feature = "net")]
use crate::sys::{self, TunSet};
#[cfg(feature = "net")]
use netlink::Request;

/// `[network]` of the node's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Interface the addresses are added to.
    pub interface: String,
    /// IPv6 prefix of partition addresses (`fd00:5a:1::/64`).
    #[serde(default)]
    pub ipv6_prefix: Option<String>,
    /// IPv4 prefix of partition addresses (`10.0.44.0/24`).
    #[serde(default)]
    pub ipv4_prefix: Option<String>,
    /// One TAP interface per partition, owned by the partition's user.
    #[serde(default)]
    pub tap: bool,
    /// TAP names are `<tap_prefix><index>`.
    #[serde(default = "d_tap_prefix")]
    pub tap_prefix: String,
}

fn d_tap_prefix() -> String {
    "slaptap".into()
}

/// A network operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// `[network]` is inconsistent.
    #[error("[network] `{key}`: {reason}")]
    Config {
        /// Key.
        key: &'static str,
        /// Rule.
        reason: String,
    },
    /// A kernel call failed.
    #[error("failed to {op} `{object}`: {source}")]
    Os {
        /// Operation.
        op: &'static str,
        /// Address, interface or file.
        object: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

#[cfg(feature = "net")]
fn os(op: &'static str, object: impl std::fmt::Display, source: io::Error) -> NetError {
    NetError::Os {
        op,
        object: object.to_string(),
        source,
    }
}

fn parse_prefix<T: std::str::FromStr>(
    key: &'static str,
    s: &str,
    max: u8,
) -> Result<(T, u8), NetError> {
    let bad = |reason: String| NetError::Config { key, reason };
    let (a, l) = s
        .split_once('/')
        .ok_or_else(|| bad(format!("{s:?} must be address/length")))?;
    let addr = a
        .parse::<T>()
        .map_err(|_| bad(format!("{a:?} is not an address")))?;
    let len = l
        .parse::<u8>()
        .ok()
        .filter(|l| *l <= max)
        .ok_or_else(|| bad(format!("{l:?} is not a prefix length ≤ {max}")))?;
    Ok((addr, len))
}

/// First host offsets of the scheme.
const V6_OFFSET: u128 = 0x100;
const V4_OFFSET: u32 = 10;

impl NetworkConfig {
    /// Check the keys against `partitions` (every address must fit in its prefix).
    pub fn validate(&self, partitions: u32) -> Result<(), NetError> {
        if self.interface.is_empty() || self.interface.len() > 15 || self.interface.contains('/') {
            return Err(NetError::Config {
                key: "interface",
                reason: format!("{:?} is not an interface name", self.interface),
            });
        }
        if let Some(p) = &self.ipv6_prefix {
            let (_, len) = parse_prefix::<Ipv6Addr>("ipv6_prefix", p, 128)?;
            let room = 128 - u32::from(len);
            if room < 128 && u128::from(partitions) + V6_OFFSET >= 1u128 << room {
                return Err(NetError::Config {
                    key: "ipv6_prefix",
                    reason: format!("{p} has no room for {partitions} partitions from ::100"),
                });
            }
        }
        if let Some(p) = &self.ipv4_prefix {
            let (_, len) = parse_prefix::<Ipv4Addr>("ipv4_prefix", p, 32)?;
            let room = 32 - u32::from(len);
            if u64::from(partitions) + u64::from(V4_OFFSET) >= 1u64 << room {
                return Err(NetError::Config {
                    key: "ipv4_prefix",
                    reason: format!("{p} has no room for {partitions} partitions from .10"),
                });
            }
        }
        let name_len = self.tap_prefix.len() + partitions.to_string().len();
        if self.tap
            && (self.tap_prefix.is_empty() || name_len > 15 || self.tap_prefix.contains('/'))
        {
            return Err(NetError::Config {
                key: "tap_prefix",
                reason: format!(
                    "{:?} + index must be an interface name of at most 15 bytes",
                    self.tap_prefix
                ),
            });
        }
        Ok(())
    }

    /// The IPv6 address of partition `index` (pure; `None` without `ipv6_prefix`).
    pub fn ipv6(&self, index: u32) -> Option<Ipv6Addr> {
        let (base, len) = parse_prefix::<Ipv6Addr>("", self.ipv6_prefix.as_deref()?, 128).ok()?;
        let mask = if len == 0 {
            0
        } else {
            u128::MAX << (128 - len)
        };
        Some(Ipv6Addr::from(
            (u128::from(base) & mask) + V6_OFFSET + u128::from(index),
        ))
    }

    /// The IPv4 address of partition `index` (pure; `None` without `ipv4_prefix`).
    pub fn ipv4(&self, index: u32) -> Option<Ipv4Addr> {
        let (base, len) = parse_prefix::<Ipv4Addr>("", self.ipv4_prefix.as_deref()?, 32).ok()?;
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        Some(Ipv4Addr::from(
            (u32::from(base) & mask)
                .wrapping_add(V4_OFFSET)
                .wrapping_add(index),
        ))
    }

    /// The TAP of partition `index` (`None` without `tap`).
    pub fn tap_name(&self, index: u32) -> Option<String> {
        self.tap.then(|| format!("{}{index}", self.tap_prefix))
    }
}

/// What the node added, recorded in `<state_dir>/network.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// `(interface, address)` pairs, host addresses.
    pub addresses: BTreeSet<(String, IpAddr)>,
    /// TAP interfaces.
    pub taps: BTreeSet<String>,
}

/// Name of the record in the state directory.
pub const RECORD: &str = "network.json";

/// The addresses and TAPs `cfg` wants for partitions `0..partitions`.
pub fn wanted(cfg: Option<&NetworkConfig>, partitions: u32) -> Applied {
    let mut a = Applied::default();
    let Some(n) = cfg else { return a };
    for i in 0..partitions {
        for ip in [n.ipv6(i).map(IpAddr::V6), n.ipv4(i).map(IpAddr::V4)]
            .into_iter()
            .flatten()
        {
            a.addresses.insert((n.interface.clone(), ip));
        }
        if let Some(t) = n.tap_name(i) {
            a.taps.insert(t);
        }
    }
    a
}

/// Converge the host to `cfg` for `partitions` partitions: remove what the record holds and is
/// no longer wanted, add what is wanted (idempotent), record the result. `owner(i)` is the
/// identity owning partition `i`'s TAP.
pub fn apply(
    cfg: Option<&NetworkConfig>,
    partitions: u32,
    state_dir: &Path,
    owner: &dyn Fn(u32) -> Option<Identity>,
) -> Result<Applied, NetError> {
    let record = state_dir.join(RECORD);
    let old: Applied = std::fs::read(&record)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let want = wanted(cfg, partitions);
    if old == Applied::default() && want == Applied::default() {
        return Ok(want);
    }
    #[cfg(not(feature = "net"))]
    {
        let _ = (owner, record);
        Err(NetError::Config {
            key: "interface",
            reason: "this slapos-node was built without the `net` feature".into(),
        })
    }
    #[cfg(feature = "net")]
    apply_kernel(cfg, &old, &want, partitions, &record, owner)
}

#[cfg(feature = "net")]
fn apply_kernel(
    cfg: Option<&NetworkConfig>,
    old: &Applied,
    want: &Applied,
    partitions: u32,
    record: &Path,
    owner: &dyn Fn(u32) -> Option<Identity>,
) -> Result<Applied, NetError> {
    let nl = Netlink::open()?;
    let mut now = old.clone();
    for (ifname, ip) in old.addresses.difference(&want.addresses) {
        // A vanished interface took its addresses with it.
        if let Some(idx) = ifindex(ifname) {
            nl.address(false, idx, *ip)
                .map_err(|e| os("remove address", format!("{ip} on {ifname}"), e))?;
        }
        now.addresses.remove(&(ifname.clone(), *ip));
        tracing::info!(interface = %ifname, address = %ip, "partition address removed");
    }
    for tap in old.taps.difference(&want.taps) {
        if let Some(idx) = ifindex(tap) {
            nl.del_link(idx).map_err(|e| os("remove tap", tap, e))?;
        }
        now.taps.remove(tap);
        tracing::info!(tap = %tap, "partition tap removed");
    }
    save(record, &now)?;
    if let Some(n) = cfg {
        let idx = ifindex(&n.interface).ok_or_else(|| {
            os(
                "find interface",
                &n.interface,
                io::Error::from(io::ErrorKind::NotFound),
            )
        })?;
        for (_, ip) in &want.addresses {
            nl.address(true, idx, *ip)
                .map_err(|e| os("add address", format!("{ip} on {}", n.interface), e))?;
            now.addresses.insert((n.interface.clone(), *ip));
        }
        for i in 0..partitions {
            if let Some(tap) = n.tap_name(i) {
                create_tap(&tap, owner(i)).map_err(|e| os("create tap", &tap, e))?;
                now.taps.insert(tap.clone());
                let idx = ifindex(&tap).ok_or_else(|| {
                    os("find tap", &tap, io::Error::from(io::ErrorKind::NotFound))
                })?;
                nl.link_up(idx).map_err(|e| os("bring up", &tap, e))?;
            }
        }
        save(record, &now)?;
    }
    Ok(now)
}

#[cfg(feature = "net")]
fn save(record: &Path, a: &Applied) -> Result<(), NetError> {
    let body = serde_json::to_vec_pretty(a)
        .map_err(|e| os("encode", record.display(), io::Error::other(e)))?;
    crate::util::atomic_write(record, &body).map_err(|e| os("write", record.display(), e))
}

#[cfg(feature = "net")]
/// Index of interface `name`, `None` when it does not exist.
pub fn ifindex(name: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(name).ok().filter(|i| *i != 0)
}

#[cfg(feature = "net")]
/// A `NETLINK_ROUTE` socket sending one request at a time and waiting for its acknowledgement.
struct Netlink {
    fd: OwnedFd,
}

#[cfg(feature = "net")]
impl Netlink {
    fn open() -> Result<Self, NetError> {
        use nix::sys::socket::{AddressFamily, SockFlag, SockProtocol, SockType, socket};
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )
        .map_err(|e| os("open", "netlink socket", io::Error::from(e)))?;
        Ok(Self { fd })
    }

    /// Send one request and wait for its acknowledgement; a request already done (see
    /// [`Request::already_done`]) is fine.
    fn request(&self, req: Request) -> io::Result<()> {
        use nix::sys::socket::{MsgFlags, NetlinkAddr, recv, sendto};
        let msg = req.encode(1);
        // Port id 0: the kernel.
        sendto(
            self.fd.as_raw_fd(),
            &msg,
            &NetlinkAddr::new(0, 0),
            MsgFlags::empty(),
        )?;
        let mut buf = vec![0u8; 8192];
        loop {
            let n = recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
            match netlink::ack(&buf[..n]) {
                None => continue,
                Some(Err(e))
                    if e.raw_os_error().is_some() && e.raw_os_error() == req.already_done() =>
                {
                    return Ok(());
                }
                Some(r) => return r,
            }
        }
    }

    /// Add (`add`) or remove a host address (`/128`, `/32`) on interface `index`. Idempotent:
    /// an address already there (add) or already gone (remove) is fine.
    fn address(&self, add: bool, index: u32, ip: IpAddr) -> io::Result<()> {
        self.request(if add {
            Request::AddAddress { index, ip }
        } else {
            Request::DelAddress { index, ip }
        })
    }

    fn link_up(&self, index: u32) -> io::Result<()> {
        self.request(Request::LinkUp { index })
    }

    fn del_link(&self, index: u32) -> io::Result<()> {
        self.request(Request::DelLink { index })
    }
}

#[cfg(feature = "net")]
/// Create (or re-own) the persistent TAP `name`, owned by `owner` when given.
fn create_tap(name: &str, owner: Option<Identity>) -> io::Result<()> {
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    // struct ifreq: 16-byte name, then the flags (short) of the union; 40 bytes in all.
    let mut ifr = [0u8; 40];
    let n = name.as_bytes();
    if n.len() > 15 {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    ifr[..n.len()].copy_from_slice(n);
    let flags = (libc::IFF_TAP | libc::IFF_NO_PI) as i16;
    ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
    sys::tun_set_iff(&tun, &mut ifr)?;
    if let Some(id) = owner {
        sys::tun_set(&tun, TunSet::Owner, libc::c_ulong::from(id.uid))?;
        sys::tun_set(&tun, TunSet::Group, libc::c_ulong::from(id.gid))?;
    }
    sys::tun_set(&tun, TunSet::Persist, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(v6: Option<&str>, v4: Option<&str>) -> NetworkConfig {
        NetworkConfig {
            interface: "eth0".into(),
            ipv6_prefix: v6.map(str::to_owned),
            ipv4_prefix: v4.map(str::to_owned),
            tap: false,
            tap_prefix: d_tap_prefix(),
        }
    }

    #[test]
    fn addresses_follow_the_scheme() {
        let n = net(Some("fd00:5a:1::/64"), Some("10.0.44.0/24"));
        n.validate(10).unwrap();
        assert_eq!(n.ipv6(0).unwrap().to_string(), "fd00:5a:1::100");
        assert_eq!(n.ipv6(3).unwrap().to_string(), "fd00:5a:1::103");
        assert_eq!(n.ipv4(0).unwrap().to_string(), "10.0.44.10");
        assert_eq!(n.ipv4(5).unwrap().to_string(), "10.0.44.15");
        // Host bits of the prefix are ignored.
        let n = net(Some("fd00:5a:1::7/64"), Some("10.0.44.99/24"));
        assert_eq!(n.ipv6(1).unwrap().to_string(), "fd00:5a:1::101");
        assert_eq!(n.ipv4(1).unwrap().to_string(), "10.0.44.11");
        let w = wanted(Some(&n), 2);
        assert_eq!(w.addresses.len(), 4);
        assert!(wanted(None, 2).addresses.is_empty());
    }

    #[test]
    fn bad_prefixes_are_refused_with_the_key() {
        for (n, key) in [
            (net(Some("fd00::"), None), "ipv6_prefix"),
            (net(Some("fd00::/129"), None), "ipv6_prefix"),
            (net(Some("fd00::/120"), None), "ipv6_prefix"),
            (net(None, Some("10.0.0.0/28")), "ipv4_prefix"),
            (net(None, Some("10.0.0/24")), "ipv4_prefix"),
        ] {
            let e = n.validate(300).unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
        let mut n = net(None, None);
        n.tap = true;
        n.tap_prefix = "a-very-long-tap".into();
        assert!(
            n.validate(2)
                .unwrap_err()
                .to_string()
                .contains("tap_prefix")
        );
        n.interface = "x/y".into();
        assert!(n.validate(2).unwrap_err().to_string().contains("interface"));
    }

    #[test]
    fn nothing_to_do_touches_nothing() {
        let d = tempfile::tempdir().unwrap();
        let a = apply(None, 3, d.path(), &|_| None).unwrap();
        assert_eq!(a, Applied::default());
        assert!(!d.path().join(RECORD).exists());
    }
}
