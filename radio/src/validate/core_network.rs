//! Core-network rules (TS 23.003, simpleran): MME and AMF addresses, the LTE and NR PLMN lists
//! with the NR tracking area codes, and the PLMN and address parsers.

use super::Validator;
use crate::params::{self, EnbParams};
use crate::plan::{CoreAddr, CoreNode, Plmn};
use std::net::{IpAddr, SocketAddr};

impl Validator {
    pub(super) fn core_list<T>(
        &mut self,
        list: &params::NamedList<T>,
        name: &str,
        addr_field: &str,
        get: impl Fn(&T) -> (&Option<String>, &Option<String>),
        bind_field: &str,
    ) -> Vec<CoreNode> {
        let mut out = Vec::new();
        for (key, item) in list.iter() {
            let path = key.path(name);
            let (addr, bind) = get(item);
            let addr = match addr.as_deref() {
                None => {
                    self.err(
                        &format!("{path}.{addr_field}"),
                        "required: IP address with optional port",
                    );
                    continue;
                }
                Some(a) => match parse_addr(a) {
                    Ok(a) => a,
                    Err(e) => {
                        self.err(&format!("{path}.{addr_field}"), e);
                        continue;
                    }
                },
            };
            let bind_addr = match bind.as_deref().map(parse_addr) {
                None => None,
                Some(Ok(b)) => Some(b),
                Some(Err(e)) => {
                    self.err(&format!("{path}.{bind_field}"), e);
                    continue;
                }
            };
            out.push(CoreNode { addr, bind_addr });
        }
        out
    }

    pub(super) fn plmns(&mut self, p: &EnbParams, has_lte: bool) -> Vec<Plmn> {
        if has_lte && p.plmn_list.is_empty() {
            self.err(
                "plmn_list",
                "at least one PLMN is required when there are LTE cells",
            );
        }
        if p.plmn_list.len() > 6 {
            self.err(
                "plmn_list",
                format!(
                    "{} PLMNs, at most 6 are broadcast in SIB1",
                    p.plmn_list.len()
                ),
            );
        }
        let mut out = Vec::new();
        for (key, item) in p.plmn_list.iter() {
            let path = format!("{}.plmn", key.path("plmn_list"));
            match item.plmn.as_deref().map(split_plmn) {
                None => self.err(&path, "required: MCC+MNC, 5 or 6 digits"),
                Some(Err(e)) => self.err(&path, e),
                Some(Ok((mcc, mnc))) => out.push(Plmn {
                    plmn: format!("{mcc}{mnc}"),
                    mcc,
                    mnc,
                    tac: None,
                    reserved: item.reserved.unwrap_or(false),
                    attach_without_pdn: item.attach_without_pdn.unwrap_or(false),
                }),
            }
        }
        out
    }

    pub(super) fn plmns_5g(&mut self, p: &EnbParams, has_nr: bool) -> Vec<Plmn> {
        if has_nr && p.plmn_list_5g.is_empty() {
            self.err(
                "plmn_list_5g",
                "at least one PLMN is required when there are NR cells",
            );
        }
        if p.plmn_list_5g.len() > 12 {
            self.err(
                "plmn_list_5g",
                format!("{} PLMNs, at most 12 are allowed", p.plmn_list_5g.len()),
            );
        }
        let mut out = Vec::new();
        for (key, item) in p.plmn_list_5g.iter() {
            let base = key.path("plmn_list_5g");
            let tac = match item.tac {
                None => {
                    self.err(
                        &format!("{base}.tac"),
                        "required: 24-bit NR tracking area code",
                    );
                    None
                }
                Some(t) if !(1..=0xFF_FFFF).contains(&t) || t == 0xFF_FFFE => {
                    self.err(
                        &format!("{base}.tac"),
                        format!("{t:#x} is outside 0x000001..=0xffffff (0xfffffe is reserved)"),
                    );
                    None
                }
                Some(t) => Some(t),
            };
            match item.plmn.as_deref().map(split_plmn) {
                None => self.err(&format!("{base}.plmn"), "required: MCC+MNC, 5 or 6 digits"),
                Some(Err(e)) => self.err(&format!("{base}.plmn"), e),
                Some(Ok((mcc, mnc))) => out.push(Plmn {
                    plmn: format!("{mcc}{mnc}"),
                    mcc,
                    mnc,
                    tac,
                    reserved: item.reserved.unwrap_or(false),
                    attach_without_pdn: false,
                }),
            }
        }
        out
    }
}

/// Splits a PLMN into MCC and MNC.
pub fn split_plmn(s: &str) -> Result<(String, String), String> {
    let t = s.trim();
    if !(t.len() == 5 || t.len() == 6) || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{s:?} is not a PLMN: 3-digit MCC + 2- or 3-digit MNC (TS 23.003 §2.2)"
        ));
    }
    Ok((t[..3].to_string(), t[3..].to_string()))
}

/// Parses `IP`, `IP:port`, `[IPv6]:port` or a bare IPv6 address.
pub fn parse_addr(s: &str) -> Result<CoreAddr, String> {
    let t = s.trim();
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Ok(CoreAddr { ip, port: None });
    }
    if let Ok(sa) = t.parse::<SocketAddr>() {
        if sa.port() == 0 {
            return Err(format!("{s:?}: port 0 is not a peer port"));
        }
        return Ok(CoreAddr {
            ip: sa.ip(),
            port: Some(sa.port()),
        });
    }
    if let Some(inner) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']'))
        && let Ok(ip) = inner.parse::<IpAddr>()
    {
        return Ok(CoreAddr { ip, port: None });
    }
    Err(format!(
        "{s:?} is not an IP address with an optional port (1.2.3.4, 1.2.3.4:36412, [2001:db8::1]:36412)"
    ))
}
