//! Core-network rules (TS 23.003, 36.413, 38.413, simpleran): the base-station ids the core sees
//! (eNB ID, gNB ID and its length), the GTP-U address, MME and AMF addresses, the LTE and NR PLMN
//! lists with the NR tracking area codes, and the PLMN and address parsers.

use super::Validator;
use crate::params::{self, EnbParams};
use crate::plan::{CoreAddr, CoreNode, Plmn};
use std::net::{IpAddr, SocketAddr};

impl Validator {
    /// `gnb_id_bits` (default 28) and its range.
    pub(super) fn gnb_id_bits(&mut self, p: &EnbParams) -> u8 {
        let gnb_id_bits = p.gnb_id_bits.unwrap_or(28);
        if !(22..=32).contains(&gnb_id_bits) {
            self.err(
                "gnb_id_bits",
                format!("{gnb_id_bits} is outside 22..=32 (TS 38.413 gNB-ID length)"),
            );
        }
        gnb_id_bits
    }

    /// `enb_id` (28 bits, required with LTE cells) and `gnb_id` (fits `gnb_id_bits`, required
    /// with NR cells).
    pub(super) fn node_ids(&mut self, p: &EnbParams, has_lte: bool, has_nr: bool, gnb_id_bits: u8) {
        if let Some(id) = p.enb_id {
            if id > 0x0FFF_FFFF {
                self.err(
                    "enb_id",
                    format!(
                        "{id:#x} exceeds 28 bits (20-bit macro or 28-bit home eNB ID, TS 36.413)"
                    ),
                );
            }
        } else if has_lte {
            self.err("enb_id", "required when there are LTE cells");
        }
        match p.gnb_id {
            Some(id) if (22..=32).contains(&gnb_id_bits) && id >> gnb_id_bits != 0 => {
                self.err(
                    "gnb_id",
                    format!("{id:#x} does not fit in gnb_id_bits = {gnb_id_bits}"),
                );
            }
            None if has_nr => self.err("gnb_id", "required when there are NR cells"),
            _ => {}
        }
    }

    /// `gtp_addr` (default 127.0.1.1).
    pub(super) fn gtp_addr(&mut self, p: &EnbParams) -> Option<CoreAddr> {
        match parse_addr(p.gtp_addr.as_deref().unwrap_or("127.0.1.1")) {
            Ok(a) => Some(a),
            Err(e) => {
                self.err("gtp_addr", e);
                None
            }
        }
    }

    /// `mme_list` and `amf_list`; at least one MME with LTE cells, one AMF with NR cells.
    pub(super) fn core_nodes(
        &mut self,
        p: &EnbParams,
        has_lte: bool,
        has_nr: bool,
    ) -> (Vec<CoreNode>, Vec<CoreNode>) {
        let mme_list = self.core_list(
            &p.mme_list,
            "mme_list",
            "mme_addr",
            |m| (&m.mme_addr, &m.s1ap_bind_addr),
            "s1ap_bind_addr",
        );
        let amf_list = self.core_list(
            &p.amf_list,
            "amf_list",
            "amf_addr",
            |a| (&a.amf_addr, &a.ngap_bind_addr),
            "ngap_bind_addr",
        );
        if has_lte && mme_list.is_empty() && p.mme_list.is_empty() {
            self.err(
                "mme_list",
                "at least one MME is required when there are LTE cells",
            );
        }
        if has_nr && amf_list.is_empty() && p.amf_list.is_empty() {
            self.err(
                "amf_list",
                "at least one AMF is required when there are NR cells",
            );
        }
        (mme_list, amf_list)
    }

    fn core_list<T>(
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
