//! Who is calling from this host: the unix user owning the client end of a TCP connection.
//!
//! Plain HTTP on loopback used to mean "the local operator" for every caller, so any local
//! user (or a partition's processes) could supply a release and have its build step run as
//! root (issue 19). A connection's client socket lives in the kernel's socket table of this
//! network namespace exactly when the client runs on this host; the kernel records the uid that
//! created it. [`client_uid`] asks for that socket by its four-tuple over `NETLINK_SOCK_DIAG`
//! (`inet_diag`, the interface `ss -e` uses; one request, no table scan), so the master knows
//! the local caller's uid without any cooperation from the client — the real `slapos` client
//! included. A client in another network namespace or on another host is not found (`None`).
//!
//! [`LocalTrust`] turns that uid into an identity: the operator (root and the master's own
//! user, plus any uid named with `--local-operator`), a partition (the uid its node registered
//! for it over a local connection), or nobody (only `/v1/health`).

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto,
    setsockopt, socket, sockopt,
};

/// `SOCK_DIAG_BY_FAMILY` (linux/sock_diag.h).
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `NLM_F_REQUEST`.
const NLM_F_REQUEST: u16 = 1;
/// `NLMSG_ERROR`.
const NLMSG_ERROR: u16 = 2;
/// `INET_DIAG_NOCOOKIE`: match any socket cookie.
const NOCOOKIE: u32 = u32::MAX;
/// nlmsghdr (16) + inet_diag_req_v2 (8 + inet_diag_sockid 48).
const REQUEST_LEN: usize = 72;
/// Offset of `idiag_uid` in an answer: nlmsghdr (16) + family/state/timer/retrans (4) +
/// sockid (48) + expires/rqueue/wqueue (12).
const UID_OFFSET: usize = 80;

/// The `inet_diag` request for the socket `src → dst` (pure: tested against fixed bytes).
pub fn diag_request(src: SocketAddr, dst: SocketAddr, seq: u32) -> Option<[u8; REQUEST_LEN]> {
    let (src_ip, dst_ip) = (src.ip().to_canonical(), dst.ip().to_canonical());
    let family = match (src_ip, dst_ip) {
        (IpAddr::V4(_), IpAddr::V4(_)) => libc::AF_INET,
        (IpAddr::V6(_), IpAddr::V6(_)) => libc::AF_INET6,
        _ => return None,
    };
    let mut m = [0u8; REQUEST_LEN];
    m[0..4].copy_from_slice(&(REQUEST_LEN as u32).to_ne_bytes());
    m[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    // inet_diag_req_v2
    m[16] = family as u8;
    m[17] = libc::IPPROTO_TCP as u8;
    m[20..24].copy_from_slice(&u32::MAX.to_ne_bytes()); // every TCP state
    // inet_diag_sockid: ports and addresses in network order.
    m[24..26].copy_from_slice(&src.port().to_be_bytes());
    m[26..28].copy_from_slice(&dst.port().to_be_bytes());
    let put = |m: &mut [u8; REQUEST_LEN], at: usize, ip: IpAddr| match ip {
        IpAddr::V4(a) => m[at..at + 4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => m[at..at + 16].copy_from_slice(&a.octets()),
    };
    put(&mut m, 28, src_ip);
    put(&mut m, 44, dst_ip);
    // idiag_if = 0; cookie: any.
    m[64..68].copy_from_slice(&NOCOOKIE.to_ne_bytes());
    m[68..72].copy_from_slice(&NOCOOKIE.to_ne_bytes());
    Some(m)
}

/// The uid in an `inet_diag` answer; `Ok(None)` when the kernel has no such socket.
pub fn parse_answer(buf: &[u8]) -> std::io::Result<Option<u32>> {
    let short = || std::io::Error::other(format!("short sock_diag answer ({} bytes)", buf.len()));
    let ty = u16::from_ne_bytes(
        buf.get(4..6)
            .ok_or_else(short)?
            .try_into()
            .map_err(|_| short())?,
    );
    if ty == NLMSG_ERROR {
        let code = i32::from_ne_bytes(
            buf.get(16..20)
                .ok_or_else(short)?
                .try_into()
                .map_err(|_| short())?,
        );
        return match -code {
            0 | libc::ENOENT => Ok(None),
            errno => Err(std::io::Error::from_raw_os_error(errno)),
        };
    }
    if ty != SOCK_DIAG_BY_FAMILY {
        return Err(std::io::Error::other(format!(
            "unexpected sock_diag answer type {ty}"
        )));
    }
    let uid = buf.get(UID_OFFSET..UID_OFFSET + 4).ok_or_else(short)?;
    Ok(Some(u32::from_ne_bytes(
        uid.try_into().map_err(|_| short())?,
    )))
}

/// A `NETLINK_SOCK_DIAG` socket kept open for the server's lifetime, so that looking up a
/// caller costs no new file descriptor: a master at its descriptor limit (thousands of idle
/// clients) still recognises its local operator. One lookup at a time (each is one kernel round
/// trip of tens of microseconds); answers carry the request's sequence number, so an answer
/// left over from a lookup that timed out is never taken for another's.
#[derive(Debug)]
pub struct SockDiag {
    /// The socket (`None` until opened, and again after an I/O error) and the last sequence.
    inner: std::sync::Mutex<(Option<std::os::fd::OwnedFd>, u32)>,
}

impl Default for SockDiag {
    fn default() -> Self {
        Self::new()
    }
}

impl SockDiag {
    /// Opens the socket now (a failure is retried at the first lookup).
    pub fn new() -> Self {
        Self {
            inner: std::sync::Mutex::new((open_diag().ok(), 0)),
        }
    }

    /// The uid owning the client socket of the TCP connection whose client end is `peer` and
    /// whose server end is `local`; `None` when the client is not on this host (not in this
    /// network namespace). Blocking, one netlink round trip.
    pub fn client_uid(&self, peer: SocketAddr, local: SocketAddr) -> std::io::Result<Option<u32>> {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (fd, seq) = &mut *guard;
        *seq = seq.wrapping_add(1);
        let Some(req) = diag_request(peer, local, *seq) else {
            return Ok(None);
        };
        let sock = match fd.take() {
            Some(sock) => sock,
            None => open_diag()?,
        };
        let answer = ask(&sock, &req, *seq);
        // Kept only while it works: after an error the next lookup opens a fresh socket.
        if answer.is_ok() {
            *fd = Some(sock);
        }
        answer
    }
}

fn open_diag() -> std::io::Result<std::os::fd::OwnedFd> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )?;
    // The kernel answers at once; the bound only guards against a kernel that never does.
    let timeout = nix::sys::time::TimeVal::from(libc::timeval {
        tv_sec: 1,
        tv_usec: 0,
    });
    setsockopt(&fd, sockopt::ReceiveTimeout, &timeout)?;
    Ok(fd)
}

/// One request on `sock`, and its answer (answers to other sequence numbers are skipped).
fn ask(
    sock: &std::os::fd::OwnedFd,
    req: &[u8; REQUEST_LEN],
    seq: u32,
) -> std::io::Result<Option<u32>> {
    sendto(
        sock.as_raw_fd(),
        req,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )?;
    let mut buf = [0u8; 512];
    loop {
        let n = recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty())?;
        let answer = &buf[..n];
        if answer.get(8..12) == Some(&seq.to_ne_bytes()[..]) {
            return parse_answer(answer);
        }
    }
}

/// [`SockDiag::client_uid`] on a socket of its own (one lookup; tools and tests).
pub fn client_uid(peer: SocketAddr, local: SocketAddr) -> std::io::Result<Option<u32>> {
    SockDiag::new().client_uid(peer, local)
}

/// How long a lookup may take before the connection is treated as remote.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(1);

/// Who local callers are (see the module doc).
#[derive(Debug, Clone)]
pub struct LocalTrust {
    operators: Vec<u32>,
}

impl Default for LocalTrust {
    /// Root and the master's own user.
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl LocalTrust {
    /// Root, the master's own user and `extra` operators.
    pub fn new(extra: Vec<u32>) -> Self {
        let mut operators = vec![0, nix::unistd::geteuid().as_raw()];
        operators.extend(extra);
        operators.sort_unstable();
        operators.dedup();
        Self { operators }
    }

    /// True when a local caller running as `uid` is the operator.
    pub fn is_operator(&self, uid: u32) -> bool {
        self.operators.binary_search(&uid).is_ok()
    }

    /// The operator uids (for messages).
    pub fn operators(&self) -> &[u32] {
        &self.operators
    }
}

/// A user given by name or uid (`--local-operator`).
pub fn parse_user(s: &str) -> Result<u32, String> {
    if let Ok(uid) = s.parse::<u32>() {
        return Ok(uid);
    }
    match nix::unistd::User::from_name(s) {
        Ok(Some(u)) => Ok(u.uid.as_raw()),
        Ok(None) => Err(format!("no user named {s:?} on this host")),
        Err(e) => Err(format!("cannot look up user {s:?}: {e}")),
    }
}

/// `uid` and its user name when known: `1000 (alice)`.
pub fn describe_uid(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => format!("{uid} ({})", u.name),
        _ => uid.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bytes_for_ipv4_and_ipv6() {
        let src: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let dst: SocketAddr = "127.0.0.1:8355".parse().unwrap();
        let m = diag_request(src, dst, 7).unwrap();
        assert_eq!(&m[0..4], &72u32.to_ne_bytes());
        assert_eq!(&m[4..6], &20u16.to_ne_bytes());
        assert_eq!(m[16], libc::AF_INET as u8);
        assert_eq!(m[17], 6, "TCP");
        assert_eq!(
            &m[24..28],
            &[0x9c, 0x40, 0x20, 0xa3],
            "ports, network order"
        );
        assert_eq!(&m[28..32], &[127, 0, 0, 1]);
        assert_eq!(&m[44..48], &[127, 0, 0, 1]);
        assert_eq!(&m[64..72], &[0xff; 8]);
        // A v4-mapped peer on a dual-stack listener is an IPv4 socket.
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:40000".parse().unwrap();
        assert_eq!(
            diag_request(mapped, dst, 7).unwrap()[16],
            libc::AF_INET as u8
        );
        let v6: SocketAddr = "[::1]:40000".parse().unwrap();
        let d6: SocketAddr = "[::1]:8355".parse().unwrap();
        let m = diag_request(v6, d6, 7).unwrap();
        assert_eq!(m[16], libc::AF_INET6 as u8);
        assert_eq!(m[43], 1, "::1 ends in 1");
        assert!(diag_request(v6, dst, 7).is_none(), "mixed families");
    }

    #[test]
    fn answers_and_errors() {
        let mut ans = vec![0u8; 96];
        ans[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        ans[UID_OFFSET..UID_OFFSET + 4].copy_from_slice(&1234u32.to_ne_bytes());
        assert_eq!(parse_answer(&ans).unwrap(), Some(1234));
        let mut err = vec![0u8; 36];
        err[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        err[16..20].copy_from_slice(&(-libc::ENOENT).to_ne_bytes());
        assert_eq!(parse_answer(&err).unwrap(), None);
        err[16..20].copy_from_slice(&(-libc::EPERM).to_ne_bytes());
        assert!(parse_answer(&err).is_err());
        assert!(parse_answer(&[0u8; 3]).is_err());
    }

    #[test]
    fn the_kernel_names_the_owner_of_a_real_loopback_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        let uid = client_uid(peer, server.local_addr().unwrap()).unwrap();
        assert_eq!(uid, Some(nix::unistd::geteuid().as_raw()));
        // A tuple no socket has.
        let gone: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(
            client_uid(gone, server.local_addr().unwrap()).unwrap(),
            None
        );
        drop(client);
    }

    #[test]
    fn a_left_over_answer_is_never_taken_for_the_next_lookup() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        let local = server.local_addr().unwrap();
        let diag = SockDiag::new();
        assert_eq!(
            diag.client_uid(peer, local).unwrap(),
            Some(nix::unistd::geteuid().as_raw())
        );
        // An answer nobody read (as after a timed-out lookup) waits in the kept socket...
        {
            let guard = diag.inner.lock().unwrap();
            let sock = guard.0.as_ref().expect("the socket is kept");
            let stale = diag_request(peer, local, 4242).unwrap();
            sendto(
                sock.as_raw_fd(),
                &stale,
                &NetlinkAddr::new(0, 0),
                MsgFlags::empty(),
            )
            .unwrap();
        }
        // ...and the next lookup, of a tuple no socket has, still answers for itself.
        let gone: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(diag.client_uid(gone, local).unwrap(), None);
        assert_eq!(
            diag.client_uid(peer, local).unwrap(),
            Some(nix::unistd::geteuid().as_raw())
        );
        drop(client);
    }
}
