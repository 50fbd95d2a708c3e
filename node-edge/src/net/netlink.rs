//! rtnetlink messages: encoding of the node's requests and decoding of the kernel's
//! acknowledgement, pure (no socket). The socket side is `Netlink` in `net/mod.rs`: it sends
//! [`Request::encode`]'s bytes and reads answer datagrams until [`ack`] finds the answer.
//!
//! Integers are in host byte order, as netlink wants; every attribute is padded to 4 bytes.

use std::io;
use std::net::IpAddr;

/// Size of `struct nlmsghdr` (length, type, flags, sequence, port id).
pub const NLMSG_HDR: usize = 16;

/// A request the node sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Add a host address (`/32`, `/128`) on interface `index`, without duplicate address
    /// detection (usable at once); replaces an address already there.
    AddAddress {
        /// Interface index.
        index: u32,
        /// The address.
        ip: IpAddr,
    },
    /// Remove a host address from interface `index`.
    DelAddress {
        /// Interface index.
        index: u32,
        /// The address.
        ip: IpAddr,
    },
    /// Bring interface `index` up.
    LinkUp {
        /// Interface index.
        index: u32,
    },
    /// Delete interface `index` (a TAP).
    DelLink {
        /// Interface index.
        index: u32,
    },
}

impl Request {
    /// The whole message: header (`NLM_F_REQUEST | NLM_F_ACK`, sequence `seq`, port id 0: the
    /// kernel fills it) and body.
    pub fn encode(&self, seq: u32) -> Vec<u8> {
        let (ty, flags, body) = match *self {
            Self::AddAddress { index, ip } => (
                libc::RTM_NEWADDR,
                (libc::NLM_F_CREATE | libc::NLM_F_REPLACE) as u16,
                ifaddr(index, ip, true),
            ),
            Self::DelAddress { index, ip } => (libc::RTM_DELADDR, 0, ifaddr(index, ip, false)),
            Self::LinkUp { index } => {
                let up = libc::IFF_UP as u32;
                (libc::RTM_NEWLINK, 0, ifinfo(index, up, up))
            }
            Self::DelLink { index } => (libc::RTM_DELLINK, 0, ifinfo(index, 0, 0)),
        };
        let len = NLMSG_HDR + body.len();
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&ty.to_ne_bytes());
        msg.extend_from_slice(
            &(flags | (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16).to_ne_bytes(),
        );
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&body);
        msg
    }

    /// The kernel's error that means the request is already done (removing an address or a
    /// link that is gone): requests are idempotent.
    pub fn already_done(&self) -> Option<i32> {
        match self {
            Self::DelAddress { .. } => Some(libc::EADDRNOTAVAIL),
            Self::DelLink { .. } => Some(libc::ENODEV),
            Self::AddAddress { .. } | Self::LinkUp { .. } => None,
        }
    }
}

fn push_attr(buf: &mut Vec<u8>, ty: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(data);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

/// struct ifaddrmsg (family, prefixlen, flags, scope, index) and the address attributes.
fn ifaddr(index: u32, ip: IpAddr, add: bool) -> Vec<u8> {
    let (family, plen, bytes): (u8, u8, Vec<u8>) = match ip {
        IpAddr::V4(a) => (libc::AF_INET as u8, 32, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, 128, a.octets().to_vec()),
    };
    let mut body = vec![family, plen, 0, 0];
    body.extend_from_slice(&index.to_ne_bytes());
    push_attr(&mut body, libc::IFA_LOCAL, &bytes);
    push_attr(&mut body, libc::IFA_ADDRESS, &bytes);
    if add {
        push_attr(&mut body, libc::IFA_FLAGS, &libc::IFA_F_NODAD.to_ne_bytes());
    }
    body
}

/// struct ifinfomsg: family, pad, type, index, flags, change.
fn ifinfo(index: u32, flags: u32, change: u32) -> Vec<u8> {
    let mut b = vec![libc::AF_UNSPEC as u8, 0, 0, 0];
    b.extend_from_slice(&index.to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&change.to_ne_bytes());
    b
}

/// The acknowledgement in one answer datagram: `Some(Ok)` for success, `Some(Err)` for the
/// kernel's error (or a truncated datagram), `None` when the datagram holds none (read the
/// next one).
pub fn ack(buf: &[u8]) -> Option<io::Result<()>> {
    let field = |at: usize| -> [u8; 4] {
        let mut b = [0u8; 4];
        b.copy_from_slice(&buf[at..at + 4]);
        b
    };
    let mut off = 0;
    while off + NLMSG_HDR <= buf.len() {
        let mlen = u32::from_ne_bytes(field(off)) as usize;
        let mty = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
        if mlen < NLMSG_HDR || off + mlen > buf.len() {
            return Some(Err(io::Error::other("truncated netlink answer")));
        }
        if mty == libc::NLMSG_ERROR as u16 && mlen >= NLMSG_HDR + 4 {
            let code = i32::from_ne_bytes(field(off + NLMSG_HDR));
            return Some(if code == 0 {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(-code))
            });
        }
        off += mlen.next_multiple_of(4);
    }
    None
}

#[cfg(all(test, target_endian = "little"))]
mod tests {
    use super::*;

    #[test]
    fn add_ipv4_address_bytes() {
        let m = Request::AddAddress {
            index: 2,
            ip: "10.0.44.10".parse().unwrap(),
        }
        .encode(1);
        #[rustfmt::skip]
        let want: &[u8] = &[
            48, 0, 0, 0,  20, 0,  0x05, 0x05,  1, 0, 0, 0,  0, 0, 0, 0, // RTM_NEWADDR, CREATE|REPLACE|REQUEST|ACK
            2, 32, 0, 0,  2, 0, 0, 0,                                   // AF_INET /32, index 2
            8, 0, 2, 0,  10, 0, 44, 10,                                 // IFA_LOCAL
            8, 0, 1, 0,  10, 0, 44, 10,                                 // IFA_ADDRESS
            8, 0, 8, 0,  2, 0, 0, 0,                                    // IFA_FLAGS: IFA_F_NODAD
        ];
        assert_eq!(m, want);
    }

    #[test]
    fn del_ipv6_address_bytes() {
        let m = Request::DelAddress {
            index: 3,
            ip: "fd00:5a:1::100".parse().unwrap(),
        }
        .encode(1);
        let addr = [0xfd, 0, 0, 0x5a, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        let mut want: Vec<u8> = vec![
            64, 0, 0, 0, 21, 0, 0x05, 0, 1, 0, 0, 0, 0, 0, 0, 0, // RTM_DELADDR, REQUEST|ACK
            10, 128, 0, 0, 3, 0, 0, 0, // AF_INET6 /128, index 3
            20, 0, 2, 0, // IFA_LOCAL
        ];
        want.extend_from_slice(&addr);
        want.extend_from_slice(&[20, 0, 1, 0]); // IFA_ADDRESS
        want.extend_from_slice(&addr);
        assert_eq!(m, want);
    }

    #[test]
    fn link_requests_bytes() {
        #[rustfmt::skip]
        let up: &[u8] = &[
            32, 0, 0, 0,  16, 0,  0x05, 0,  1, 0, 0, 0,  0, 0, 0, 0, // RTM_NEWLINK
            0, 0, 0, 0,  7, 0, 0, 0,  1, 0, 0, 0,  1, 0, 0, 0,       // index 7, IFF_UP / IFF_UP
        ];
        assert_eq!(Request::LinkUp { index: 7 }.encode(1), up);
        #[rustfmt::skip]
        let del: &[u8] = &[
            32, 0, 0, 0,  17, 0,  0x05, 0,  9, 0, 0, 0,  0, 0, 0, 0, // RTM_DELLINK, seq 9
            0, 0, 0, 0,  7, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,
        ];
        assert_eq!(Request::DelLink { index: 7 }.encode(9), del);
    }

    /// An NLMSG_ERROR answer carrying `code` (and the request's header, as the kernel does).
    fn error(code: i32) -> Vec<u8> {
        let mut m = vec![36, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&code.to_le_bytes());
        m.extend_from_slice(&[0; 16]);
        m
    }

    #[test]
    fn acknowledgements_are_read() {
        assert!(matches!(ack(&error(0)), Some(Ok(()))));
        let e = ack(&error(-libc::EEXIST)).unwrap().unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        // Another message first (NLMSG_NOOP), then the ack in the same datagram.
        let mut two = vec![16, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        two.extend_from_slice(&error(0));
        assert!(matches!(ack(&two), Some(Ok(()))));
        // No ack yet; a truncated datagram.
        assert!(ack(&two[..16]).is_none());
        assert!(ack(&[]).is_none());
        assert!(ack(&error(0)[..20]).unwrap().is_err());
    }

    #[test]
    fn removals_of_what_is_gone_are_done() {
        let ip = "10.0.0.1".parse().unwrap();
        assert_eq!(
            Request::DelAddress { index: 1, ip }.already_done(),
            Some(libc::EADDRNOTAVAIL)
        );
        assert_eq!(
            Request::DelLink { index: 1 }.already_done(),
            Some(libc::ENODEV)
        );
        assert_eq!(Request::AddAddress { index: 1, ip }.already_done(), None);
    }
}
