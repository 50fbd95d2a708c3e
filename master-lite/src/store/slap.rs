//! Store operations of the classic SLAP routes (`crate::slap`), over the same tables as the
//! native API: one model, two protocols.
//!
//! The mapping (see `docs/slap.md`): slapproxy's `(partition_reference, requested_by)` is our
//! `(title, root)`; its `timestamp` is our `revision` read as milliseconds; parameters and
//! connection parameters are stored as JSON objects (the strings slapproxy's `xml2dict` would
//! give back). What the format payload carries beyond a native registration (interface names,
//! netmasks, the computer's address) lives in the `slap_*` tables of migration 2.
//!
//! Shared ("slave") instances live in `slap_shared` (migration 3) for both protocols: the
//! native `POST /v1/instances` with `shared: true` ([`Store::request_shared`]) and the SLAP
//! shared requests go through the same host search, attach, detach and publish functions
//! (`find_host`, `attach_shared`, `detach_shared`, `publish_shared_in`); the native desired
//! state lists a host's entries (`hosted_shared`) as the SLAP `slave_instance_list` does.

use std::collections::HashMap;

use super::sql::{OptionalExtension, params};
use slapos_proto::slap::{self as wire, ComputerConfiguration};
use slapos_proto::{
    ComputerId, InstanceInfo, InstanceRequest, InstanceState, InstanceTitle, Params, PartitionId,
    PartitionRef, PartitionReport, PartitionSpec, RegisterComputer, SoftwareInfo, SupplyRequest,
};

use super::error::{DbContext, StoreError};
use super::{
    InstanceRow, RequestRules, Result, Store, Tx, allocated_instance, decode, from_json,
    instance_on, labels, ms, register_in, rows, storable, titles, to_json, touch_seen, tree_suffix,
};

/// An instance as the SLAP routes show it.
#[derive(Debug, Clone, PartialEq)]
pub struct SlapInstance {
    /// Title (slapproxy's `partition_reference`).
    pub title: String,
    /// `''` for a root, else the title of the tree root (slapproxy's `requested_by`).
    pub root: String,
    /// Software release URL.
    pub software_url: String,
    /// Software type.
    pub software_type: String,
    /// Instance parameters.
    pub parameters: Params,
    /// Requested state.
    pub state: String,
    /// Published connection parameters.
    pub connection: Params,
    /// Revision (slapproxy's timestamp, in ms).
    pub revision: i64,
    /// Shared instances it hosts, in request order.
    pub shared: Vec<SharedEntry>,
}

/// One shared instance in its host's `slave_instance_list`.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedEntry {
    /// `slave_reference`: `<root>_<title>`.
    pub reference: String,
    /// `slap_software_type`.
    pub software_type: String,
    /// The requested parameters as an xml_marshaller dictionary (types kept).
    pub parameters: String,
}

/// A shared instance with its host, as read back for `/hateoas` and JSON-RPC.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedRow {
    /// Root title of the requester's tree (`''` from a user).
    pub root: String,
    /// Title.
    pub title: String,
    /// Host computer.
    pub computer: String,
    /// Host partition.
    pub partition: String,
    /// Host's software release.
    pub software_url: String,
    /// Host's software type.
    pub host_software_type: String,
    /// The entry's `slap_software_type`.
    pub software_type: String,
    /// xml_marshaller dictionary of the requested parameters.
    pub parameters: String,
    /// What the host published for it.
    pub connection: Params,
    /// Host instance revision.
    pub host_revision: i64,
}

/// A shared-instance request (`requestComputerPartition` with `shared_xml` true).
#[derive(Debug, Clone)]
pub struct SharedRequest {
    /// `partition_reference`.
    pub title: String,
    /// `software_release`: the host must run it.
    pub software_url: String,
    /// `software_type`: when not empty, the host must have it.
    pub software_type: String,
    /// `filter_kw['computer_guid']` (default: the configured computer).
    pub computer: String,
    /// `filter_kw['instance_guid']` with `<computer>-` stripped: the host partition.
    pub host_partition: Option<String>,
    /// `partition_parameter_xml` as sent (xml_marshaller dictionary).
    pub parameters: String,
    /// `state == 'destroyed'`: remove it from its host.
    pub destroyed: bool,
}

/// Where a shared instance lives after a request.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedPlacement {
    /// Root title of the requester's tree (`''` from a user).
    pub root: String,
    /// Host computer.
    pub computer: String,
    /// Host partition.
    pub partition: String,
    /// The host's software release and type.
    pub software_url: String,
    /// The host's software type.
    pub software_type: String,
    /// Connection parameters the host published for it.
    pub connection: Params,
    /// The host partition's `ip_list`.
    pub ip_list: Vec<(String, String)>,
}

/// A partition as the SLAP routes show it.
#[derive(Debug, Clone, PartialEq)]
pub struct SlapPartition {
    /// Partition id.
    pub id: String,
    /// `(interface, address)` pairs: from the last SLAP format, else the native addresses with
    /// the partition id as interface (what slapproxy does without a tap name).
    pub ip_list: Vec<(String, String)>,
    /// The instance holding it, if any.
    pub instance: Option<SlapInstance>,
}

/// A computer as `getFullComputerInformation` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct SlapComputer {
    /// `(url, requested state)` of each supplied release, in supply order.
    pub software: Vec<(String, String)>,
    /// Partitions in registration order.
    pub partitions: Vec<SlapPartition>,
}

/// A computer as slapproxy's `computer` table has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlapComputerRow {
    /// Reference.
    pub id: String,
    /// `address` of the format payload.
    pub address: Option<String>,
    /// `netmask` of the format payload.
    pub netmask: Option<String>,
}

impl From<InstanceRow> for SlapInstance {
    fn from(r: InstanceRow) -> Self {
        let json = |s: &str| serde_json::from_str::<Params>(s).unwrap_or_default();
        Self {
            parameters: json(&r.parameters),
            connection: json(&r.connection),
            title: r.title,
            root: r.root,
            software_url: r.software_url,
            software_type: r.software_type,
            state: r.state,
            revision: r.revision,
            shared: Vec::new(),
        }
    }
}

/// A format payload as the store records it: the classic `loadComputerConfigurationFromXML`
/// dictionary ([`SlapFormat::from`]) or a JSON-RPC `compute_node_format` body.
#[derive(Debug, Clone, PartialEq)]
pub struct SlapFormat {
    /// The computer id.
    pub computer: String,
    /// The computer's `address` (classic payload only).
    pub address: Option<String>,
    /// The computer's `netmask` (classic payload only).
    pub netmask: Option<String>,
    /// Partition ids with their addresses, in payload order.
    pub partitions: Vec<(String, Vec<SlapAddress>)>,
}

/// One address of a partition in a format payload, recorded as given (slapproxy's
/// `partition_network` row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlapAddress {
    /// The interface: `tap['name'] or reference` for every address of a classic payload, the
    /// address's own `network-interface` in JSON-RPC.
    pub interface: String,
    /// The address text: usually an IP literal, but any text slapproxy takes
    /// (`MyFirstIpAddress`); only IP literals reach the native tables.
    pub address: String,
    /// The netmask text (may be empty).
    pub netmask: String,
}

impl From<&ComputerConfiguration> for SlapFormat {
    fn from(cfg: &ComputerConfiguration) -> Self {
        Self {
            computer: cfg.reference.clone(),
            address: cfg.address.clone(),
            netmask: cfg.netmask.clone(),
            partitions: cfg
                .partitions
                .iter()
                .map(|p| {
                    let interface = p.network_interface();
                    let addresses = p
                        .addresses
                        .iter()
                        .map(|a| SlapAddress {
                            interface: interface.to_owned(),
                            address: a.addr.clone(),
                            netmask: a.netmask.clone(),
                        })
                        .collect();
                    (p.reference.clone(), addresses)
                })
                .collect(),
        }
    }
}

/// Longest address, netmask or interface text of a format payload (bytes).
pub const MAX_ADDRESS_TEXT: usize = 255;

/// The texts of a format payload's addresses: what slapproxy stores (any string) bounded to
/// what the SLAP answers can carry back: 1 to [`MAX_ADDRESS_TEXT`] bytes (a netmask may be
/// empty), no control characters.
fn check_address_texts(partition: &str, a: &SlapAddress) -> Result<()> {
    for (what, v, may_be_empty) in [
        ("address", &a.address, false),
        ("interface", &a.interface, false),
        ("netmask", &a.netmask, true),
    ] {
        if (v.is_empty() && !may_be_empty)
            || v.len() > MAX_ADDRESS_TEXT
            || v.chars().any(char::is_control)
        {
            return Err(StoreError::Invalid(format!(
                "{what} {:?} of partition {partition:?} must be 1 to {MAX_ADDRESS_TEXT} bytes \
                 without control characters",
                slapos_proto::text::terminal_safe(&super::cut(v, 80))
            )));
        }
    }
    Ok(())
}

/// The addresses of a partition the native tables keep: its IP literals. Any other text is
/// kept for the SLAP answers only (`slap_address`), skipped here with a warning naming it, so
/// the native API and the nodes see IP literals only.
fn native_addresses(computer: &str, partition: &str, addresses: &[SlapAddress]) -> Vec<String> {
    addresses
        .iter()
        .filter(|a| {
            let ip = a.address.parse::<std::net::IpAddr>().is_ok();
            if !ip {
                tracing::warn!(
                    computer,
                    partition,
                    address = %a.address,
                    "format: address is not an IP literal; kept for the SLAP answers only"
                );
            }
            ip
        })
        .map(|a| a.address.clone())
        .collect()
}

/// One `slap_address` row of a computer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct AddressRow {
    partition: String,
    seq: i64,
    interface: String,
    address: String,
    netmask: String,
}

fn bad<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Invalid(e.to_string())
}

impl Store {
    /// `loadComputerConfigurationFromXML`, JSON-RPC `compute_node_format`: register the
    /// computer and its partitions (native rules: existing allocations are kept, labels are
    /// kept; only IP literals become native addresses), then record the interface, address and
    /// netmask triples as given, in one transaction.
    pub fn slap_format(&mut self, cfg: &SlapFormat, now_ms: u64) -> Result<()> {
        let id = ComputerId::parse(cfg.computer.as_str()).map_err(bad)?;
        let partitions = cfg
            .partitions
            .iter()
            .map(|(p, addresses)| {
                for a in addresses {
                    check_address_texts(p, a)?;
                }
                Ok(PartitionSpec {
                    id: PartitionId::parse(p.as_str()).map_err(bad)?,
                    addresses: native_addresses(id.as_str(), p, addresses),
                    interface: None,
                    uid: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut tx = self.write()?;
        let c = id.as_str();
        let kept_labels = labels(&tx, c)?;
        register_in(
            &mut tx,
            &RegisterComputer {
                id: id.clone(),
                partitions,
                labels: kept_labels,
            },
            now_ms,
        )?;
        tx.exec(
            "INSERT INTO slap_computer (id, address, netmask) VALUES (?1, ?2, ?3)
             ON CONFLICT (id) DO UPDATE SET address = excluded.address, netmask = excluded.netmask
             WHERE slap_computer.address IS DISTINCT FROM excluded.address
                OR slap_computer.netmask IS DISTINCT FROM excluded.netmask",
            params![c, cfg.address, cfg.netmask],
        )
        .op("record the computer's address")?;
        // Rewritten only when they changed: a node formats again periodically with the same
        // payload, and an unchanged format then writes (and syncs) only the computer's row.
        let wanted: Vec<AddressRow> = cfg
            .partitions
            .iter()
            .flat_map(|(p, addresses)| {
                addresses.iter().enumerate().map(|(i, a)| AddressRow {
                    partition: p.clone(),
                    seq: i as i64,
                    interface: a.interface.clone(),
                    address: a.address.clone(),
                    netmask: a.netmask.clone(),
                })
            })
            .collect();
        let mut stored = rows(
            &tx,
            "read partition addresses",
            "SELECT partition, seq, interface, address, netmask FROM slap_address
             WHERE computer = ?1",
            [c],
            |r| {
                Ok(AddressRow {
                    partition: r.get(0)?,
                    seq: r.get(1)?,
                    interface: r.get(2)?,
                    address: r.get(3)?,
                    netmask: r.get(4)?,
                })
            },
        )?;
        let mut sorted = wanted.clone();
        sorted.sort();
        stored.sort();
        if stored != sorted {
            tx.exec("DELETE FROM slap_address WHERE computer = ?1", [c])
                .op("replace partition addresses")?;
            for a in &wanted {
                tx.exec(
                    "INSERT INTO slap_address (computer, partition, seq, interface, address, netmask)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        c,
                        a.partition,
                        a.seq,
                        a.interface,
                        a.address,
                        a.netmask
                    ],
                )
                .op("record partition addresses")?;
            }
        }
        tx.commit()
    }

    /// `getFullComputerInformation`: `None` when the computer is not registered.
    pub fn slap_computer(&mut self, c: &str) -> Result<Option<SlapComputer>> {
        let tx = self.read()?;
        let known = tx
            .q_row("SELECT 1 FROM computer WHERE id = ?1", [c], |_| Ok(()))
            .optional()
            .op("look up a computer")?
            .is_some();
        if !known {
            return Ok(None);
        }
        let software = rows(
            &tx,
            "read releases",
            "SELECT url, requested FROM software WHERE computer = ?1 ORDER BY rowid",
            [c],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let partitions = slap_partitions(&tx, c, None)?;
        Ok(Some(SlapComputer {
            software,
            partitions,
        }))
    }

    /// Computers with the address and netmask of their format payload (when it came through
    /// SLAP), in id order; `reference` narrows to one.
    pub fn slap_computer_list(&mut self, reference: Option<&str>) -> Result<Vec<SlapComputerRow>> {
        let tx = self.read()?;
        rows(
            &tx,
            "list computers",
            "SELECT c.id, s.address, s.netmask FROM computer c \
             LEFT JOIN slap_computer s ON s.id = c.id \
             WHERE CAST(?1 AS TEXT) IS NULL OR c.id = ?1 ORDER BY c.id",
            [reference],
            |r| {
                Ok(SlapComputerRow {
                    id: r.get(0)?,
                    address: r.get(1)?,
                    netmask: r.get(2)?,
                })
            },
        )
    }

    /// A shared-instance request under slapproxy's rules (`db.requestSlave`): the host is the
    /// first partition (registration order) of the computer running the same release (and type,
    /// and partition when asked); adding, changing or removing the entry bumps the host.
    /// `Ok(None)` when no partition can host it.
    pub fn slap_request_shared(
        &mut self,
        req: &SharedRequest,
        from: Option<&PartitionRef>,
        now_ms: u64,
    ) -> Result<Option<SharedPlacement>> {
        let mut tx = self.write()?;
        let (root, requester) = shared_requester(&tx, from, now_ms)?;
        // slapproxy: any busy partition, even one whose instance is being destroyed.
        let Some(host) = find_host(&tx, req, false)? else {
            return Ok(None);
        };
        let connection = if req.destroyed {
            detach_shared(&mut tx, &root, &req.title)?;
            Params::new()
        } else {
            attach_shared(&mut tx, req, &host, &root, requester)?
        };
        let ip_list = slap_partitions(&tx, &host.computer, Some(&host.partition))?
            .pop()
            .map(|p| p.ip_list)
            .unwrap_or_default();
        tx.commit()?;
        Ok(Some(SharedPlacement {
            root,
            computer: host.computer,
            partition: host.partition,
            software_url: host.software_url,
            software_type: host.software_type,
            connection,
            ip_list,
        }))
    }

    /// Whether the shared instance `title`, requested by partition `from` (`None`: by a user),
    /// is hosted here: federation keeps it here (a title allocated here stays here).
    pub fn shared_hosted_here(&mut self, title: &str, from: Option<&PartitionRef>) -> Result<bool> {
        let tx = self.read()?;
        let root = match from {
            Some(r) => instance_on(&tx, r.computer.as_str(), r.partition.as_str())?
                .map(|i| i.root_title().to_owned())
                .unwrap_or_default(),
            None => String::new(),
        };
        Ok(tx
            .q_row(
                "SELECT 1 FROM slap_shared WHERE root = ?1 AND title = ?2",
                params![root, title],
                |_| Ok(()),
            )
            .optional()
            .op("look up a shared instance")?
            .is_some())
    }

    /// `POST /v1/instances` with `shared: true`: the native form of [`Store::slap_request_shared`]
    /// over the same `slap_shared` rows. The host is the first instance (registration order) of
    /// the same release and software type, narrowed by the SLA's `computer_guid` and
    /// `instance_guid` (`<computer>-<partition>` or a partition id); none is a
    /// [`StoreError::NoAllocation`] naming what is missing. `destroyed` detaches it (404 when
    /// it does not exist); `stopped` is refused (a shared instance has no processes of its own).
    pub fn request_shared(
        &mut self,
        req: &InstanceRequest,
        from: Option<&PartitionRef>,
        now_ms: u64,
    ) -> Result<InstanceInfo> {
        let title = req.title.as_str();
        if req.state == Some(InstanceState::Stopped) {
            return Err(StoreError::Invalid(format!(
                "shared instance {title:?} cannot be stopped: it runs in its host; destroy it to \
                 detach it"
            )));
        }
        if let Some(k) = req
            .sla
            .keys()
            .find(|k| !matches!(k.as_str(), "computer_guid" | "instance_guid"))
        {
            return Err(StoreError::Invalid(format!(
                "SLA key {k:?} does not apply to shared instance {title:?}: its host is chosen \
                 by computer_guid and instance_guid only"
            )));
        }
        storable(slapos_proto::text::check_params(
            "instance parameters",
            &req.parameters,
        ))?;
        let computer = req.sla.get("computer_guid").cloned().unwrap_or_default();
        let host_partition = req.sla.get("instance_guid").cloned();
        let shared = SharedRequest {
            title: title.to_owned(),
            software_url: req.software_url.to_string(),
            software_type: req.software_type.to_string(),
            computer,
            host_partition,
            parameters: wire::dumps(&wire::Value::from_json(&serde_json::Value::Object(
                req.parameters.clone(),
            )))
            .map_err(|e| StoreError::Invalid(format!("parameters of {title:?}: {e}")))?,
            destroyed: req.state == Some(InstanceState::Destroyed),
        };
        let mut tx = self.write()?;
        let (root, requester) = shared_requester(&tx, from, now_ms)?;
        if tx
            .q_row(
                "SELECT 1 FROM instance WHERE root = ?1 AND title = ?2",
                params![root, title],
                |_| Ok(()),
            )
            .optional()
            .op("look up an instance")?
            .is_some()
        {
            return Err(StoreError::Conflict(format!(
                "{title:?}{} is an instance with a partition of its own, not a shared instance: \
                 use another title",
                tree_suffix(&root)
            )));
        }
        if shared.destroyed {
            let mut info = shared_info(&tx, title, &root)?.ok_or_else(|| {
                StoreError::NotFound(format!(
                    "shared instance {title:?} does not exist{}: nothing to destroy",
                    tree_suffix(&root)
                ))
            })?;
            detach_shared(&mut tx, &root, title)?;
            tx.commit()?;
            info.state = InstanceState::Destroyed;
            return Ok(info);
        }
        let host = find_host(&tx, &shared, true)?.ok_or_else(|| no_host(&shared))?;
        attach_shared(&mut tx, &shared, &host, &root, requester)?;
        let info = shared_info(&tx, title, &root)?.ok_or_else(|| {
            StoreError::Internal(format!("shared instance {title:?} vanished while attached"))
        })?;
        tx.commit()?;
        Ok(info)
    }

    /// Shared instances in request order, narrowed by root tree and/or title, or by host
    /// `(computer, partition)`.
    pub fn slap_shared_list(
        &mut self,
        root: Option<&str>,
        title: Option<&str>,
        host: Option<(&str, &str)>,
    ) -> Result<Vec<SharedRow>> {
        let tx = self.read()?;
        let (hc, hp) = host.unzip();
        rows(
            &tx,
            "list shared instances",
            "SELECT s.root, s.title, i.computer, i.partition, i.software_url, i.software_type,
                    s.software_type, s.parameters, s.connection, i.revision
             FROM slap_shared s JOIN instance i ON i.id = s.host
             WHERE (CAST(?1 AS TEXT) IS NULL OR s.root = ?1) AND (CAST(?2 AS TEXT) IS NULL OR s.title = ?2)
               AND (CAST(?3 AS TEXT) IS NULL OR (i.computer = ?3 AND i.partition = ?4))
             ORDER BY s.rowid",
            params![root, title, hc, hp],
            |r| {
                Ok(SharedRow {
                    root: r.get(0)?,
                    title: r.get(1)?,
                    computer: r.get(2)?,
                    partition: r.get(3)?,
                    software_url: r.get(4)?,
                    host_software_type: r.get(5)?,
                    software_type: r.get(6)?,
                    parameters: r.get(7)?,
                    connection: serde_json::from_str(&r.get::<String>(8)?).unwrap_or_default(),
                    host_revision: r.get(9)?,
                })
            },
        )
    }

    /// `setComputerPartitionConnectionXml` with a `slave_reference`: store what the host
    /// publishes for one of its shared instances; a change bumps the shared instance's requester.
    /// Unknown references change nothing (slapproxy's UPDATE matches no row).
    pub fn slap_publish_shared(
        &mut self,
        c: &str,
        p: &str,
        reference: &str,
        params: &Params,
    ) -> Result<()> {
        let mut tx = self.write()?;
        publish_shared_in(&mut tx, c, p, reference, params)?;
        tx.commit()
    }

    /// `registerComputerPartition`: `None` when the partition is not registered.
    pub fn slap_partition(&mut self, c: &str, p: &str) -> Result<Option<SlapPartition>> {
        let tx = self.read()?;
        Ok(slap_partitions(&tx, c, Some(p))?.pop())
    }

    /// `requestComputerPartition` (non-shared) under slapproxy's rules; also returns the
    /// allocated partition's `ip_list`.
    pub fn slap_request(
        &mut self,
        req: &InstanceRequest,
        from: Option<&PartitionRef>,
        now_ms: u64,
    ) -> Result<(InstanceInfo, Vec<(String, String)>)> {
        let info = self.request_with(req, from, now_ms, RequestRules::SLAPPROXY)?;
        let ip = self
            .slap_ip_list(info.computer.as_str(), info.partition.as_str())?
            .unwrap_or_default();
        Ok((info, ip))
    }

    /// The `ip_list` of partition `c/p` as [`Store::slap_partition`] gives it (`None`: no
    /// such partition), without reading its instance and shared instances: what a request's
    /// answer needs.
    pub fn slap_ip_list(&mut self, c: &str, p: &str) -> Result<Option<Vec<(String, String)>>> {
        let tx = self.read()?;
        let Some((native, iface)) = tx
            .q_row(
                "SELECT addresses, interface FROM partition WHERE computer = ?1 AND id = ?2",
                [c, p],
                |r| Ok((r.get::<String>(0)?, r.get::<Option<String>>(1)?)),
            )
            .optional()
            .op("read a partition's addresses")?
        else {
            return Ok(None);
        };
        let slap: Vec<(String, String)> = rows(
            &tx,
            "read partition addresses",
            "SELECT interface, address FROM slap_address
             WHERE computer = ?1 AND partition = ?2 ORDER BY seq",
            [c, p],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(Some(if slap.is_empty() {
            native_ip_list(p, &native, iface)
        } else {
            slap
        }))
    }

    /// `supplySupply`: like slapproxy, a supply to an unknown computer creates it (without
    /// partitions) instead of failing.
    pub fn slap_supply(
        &mut self,
        c: &ComputerId,
        req: &SupplyRequest,
        now_ms: u64,
    ) -> Result<SoftwareInfo> {
        let tx = self.write()?;
        tx.exec(
            "INSERT INTO computer (id, etag, registered_ms) VALUES (?1, 0, ?2)
             ON CONFLICT (id) DO NOTHING",
            params![c.as_str(), ms(now_ms)],
        )
        .op("create a supplied computer")?;
        tx.commit()?;
        self.supply(c, req)
    }

    /// `softwareInstanceRename`: rename the instance on `c/p` (a root's children follow, as
    /// their `root` is its title). `Ok(false)` when the partition holds no instance.
    pub fn slap_rename(&mut self, c: &str, p: &str, new: &InstanceTitle) -> Result<bool> {
        let mut tx = self.write()?;
        let Some(inst) = instance_on(&tx, c, p)? else {
            return Ok(false);
        };
        let new = new.as_str();
        if new == inst.title {
            return Ok(true);
        }
        let taken = tx
            .q_row(
                "SELECT 1 FROM instance WHERE root = ?1 AND title = ?2",
                [inst.root.as_str(), new],
                |_| Ok(()),
            )
            .optional()
            .op("look up an instance")?
            .is_some();
        if taken {
            return Err(StoreError::Conflict(format!(
                "cannot rename {:?} to {new:?}: that title is taken in its tree",
                inst.title
            )));
        }
        tx.exec(
            "UPDATE instance SET title = ?2 WHERE id = ?1",
            params![inst.id, new],
        )
        .op("rename an instance")?;
        let mut bumped = vec![inst.id];
        if inst.root.is_empty() {
            bumped.extend(super::ids(
                &tx,
                "UPDATE instance SET root = ?2 WHERE root = ?1 RETURNING id",
                params![inst.title, new],
            )?);
        }
        bump_all(&mut tx, &bumped)?;
        tx.commit()?;
        Ok(true)
    }

    /// JSON-RPC `software_instance_reported_state destroyed` under slapproxy's trust model
    /// (plain HTTP on loopback): slapproxy frees the partition whatever its instance was
    /// requested, unless instances it requested still exist. Here the instance is first
    /// marked destroyed (only when it has no children, so a refusal changes nothing), then
    /// reported as [`Store::slap_destroyed`] does. Answers that call's texts.
    pub fn slap_destroyed_anyway(&mut self, c: &str, p: &str, now_ms: u64) -> Result<String> {
        let found = {
            let tx = self.read()?;
            match instance_on(&tx, c, p)? {
                Some(inst) if inst.state != "destroyed" => {
                    let kids = super::children(&tx, inst.id)?;
                    Some((inst.id, kids))
                }
                _ => None,
            }
        };
        if let Some((id, kids)) = found {
            if !kids.is_empty() {
                return Ok(format!(
                    "Not destroying yet because this partition has child partitions: {}",
                    kids.join(", ")
                ));
            }
            let mut tx = self.write()?;
            tx.exec(
                "UPDATE instance SET state = 'destroyed' WHERE id = ?1",
                params![id],
            )
            .op("mark a reported-destroyed instance destroyed")?;
            tx.bump_instance(id)?;
            tx.commit()?;
        }
        self.slap_destroyed(c, p, now_ms)
    }

    /// JSON-RPC `software_installation_reported_state destroyed` under slapproxy's trust model:
    /// slapproxy forgets the release on that computer whatever was requested. `false` when
    /// there was nothing to forget.
    pub fn slap_forget_software(&mut self, c: &str, url: &str) -> Result<bool> {
        let mut tx = self.write()?;
        let n = tx
            .exec(
                "DELETE FROM software WHERE computer = ?1 AND url = ?2",
                [c, url],
            )
            .op("forget a release reported destroyed")?;
        if n > 0 {
            tx.bump_computer(c)?;
        }
        tx.commit()?;
        Ok(n > 0)
    }

    /// `destroyedComputerPartition`: the node destroyed the partition. Answers slapproxy's
    /// texts (all with HTTP 200): `OK`, the child list that keeps the partition, or why nothing
    /// was freed.
    pub fn slap_destroyed(&mut self, c: &str, p: &str, now_ms: u64) -> Result<String> {
        let unknown = || format!("Unknown partition ('{p}', '{c}')");
        let (Ok(cid), Ok(pid)) = (ComputerId::parse(c), PartitionId::parse(p)) else {
            return Ok(unknown());
        };
        let inst = {
            let tx = self.read()?;
            let known = tx
                .q_row(
                    "SELECT 1 FROM partition WHERE computer = ?1 AND id = ?2",
                    [c, p],
                    |_| Ok(()),
                )
                .optional()
                .op("look up a partition")?
                .is_some();
            if !known {
                return Ok(unknown());
            }
            instance_on(&tx, c, p)?
        };
        let Some(inst) = inst else {
            return Ok("OK".into());
        };
        let report = PartitionReport {
            state: InstanceState::Destroyed,
            revision: inst.revision as u64,
            promises: Vec::new(),
            error: None,
        };
        let ack = self.report_partition(&cid, &pid, &report, now_ms)?;
        Ok(if ack.freed {
            "OK".into()
        } else if !ack.waiting_for.is_empty() {
            let kids: Vec<String> = ack.waiting_for.iter().map(|t| t.to_string()).collect();
            format!(
                "Not destroying yet because this partition has child partitions: {}",
                kids.join(", ")
            )
        } else {
            format!(
                "Not destroying: instance {:?} is requested {}, not destroyed",
                inst.title, inst.state
            )
        })
    }

    /// Titles of the direct children of the instance on `c/p` (diagnostics of the SLAP tests).
    pub fn slap_children(&mut self, c: &str, p: &str) -> Result<Vec<String>> {
        let tx = self.read()?;
        match instance_on(&tx, c, p)? {
            None => Ok(Vec::new()),
            Some(i) => titles(
                &tx,
                "SELECT title FROM instance WHERE requester = ?1 ORDER BY id",
                [i.id],
            ),
        }
    }
}

fn bump_all(tx: &mut Tx<'_>, ids: &[i64]) -> Result<()> {
    for id in ids {
        tx.bump_instance(*id)?;
    }
    Ok(())
}

/// The condition selecting partition `?2` by `col` when `only` names one, else every partition
/// (`?2` is then NULL). Two texts rather than one `(?2 IS NULL OR col = ?2)`, which the planner
/// cannot use an index for: a classic request read every partition of its computer for the one
/// it answers with.
fn only_partition(col: &str, only: Option<&str>) -> String {
    match only {
        Some(_) => format!("{col} = ?2"),
        None => "CAST(?2 AS TEXT) IS NULL".to_owned(),
    }
}

/// Partitions of computer `c` (only `p` when given) with their instance and `ip_list`.
fn slap_partitions(
    tx: &super::sql::Transaction<'_>,
    c: &str,
    only: Option<&str>,
) -> Result<Vec<SlapPartition>> {
    let mut addresses: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for (p, iface, addr) in rows(
        tx,
        "read partition addresses",
        &format!(
            "SELECT partition, interface, address FROM slap_address
             WHERE computer = ?1 AND {} ORDER BY partition, seq",
            only_partition("partition", only)
        ),
        params![c, only],
        |r| Ok((r.get::<String>(0)?, r.get(1)?, r.get(2)?)),
    )? {
        addresses.entry(p).or_default().push((iface, addr));
    }
    let found = rows(
        tx,
        "read partitions",
        &format!(
            "SELECT p.id, p.addresses, p.interface, {} FROM partition p LEFT JOIN instance i
             ON i.computer = p.computer AND i.partition = p.id
             WHERE p.computer = ?1 AND {} ORDER BY p.seq",
            InstanceRow::COLUMNS_I,
            only_partition("p.id", only)
        ),
        params![c, only],
        |r| {
            let inst = match r.get::<Option<i64>>(3)? {
                Some(_) => Some(InstanceRow::from_row(r, 3)?),
                None => None,
            };
            Ok((
                r.get::<String>(0)?,
                r.get::<String>(1)?,
                r.get::<Option<String>>(2)?,
                inst,
            ))
        },
    )?;
    let mut shared = hosted_shared(tx, c, only)?;
    Ok(found
        .into_iter()
        .map(|(id, native, iface, inst)| {
            let ip_list = addresses
                .remove(&id)
                .unwrap_or_else(|| native_ip_list(&id, &native, iface));
            SlapPartition {
                id,
                ip_list,
                instance: inst.map(|row| {
                    let hosted = shared.remove(&row.id).unwrap_or_default();
                    SlapInstance {
                        shared: hosted,
                        ..SlapInstance::from(row)
                    }
                }),
            }
        })
        .collect())
}

/// The `ip_list` of partition `id` that has no SLAP addresses: its native addresses (a JSON
/// list) on its interface (the partition's id when it names none).
fn native_ip_list(id: &str, native: &str, iface: Option<String>) -> Vec<(String, String)> {
    let iface = iface.unwrap_or_else(|| id.to_owned());
    serde_json::from_str::<Vec<String>>(native)
        .unwrap_or_default()
        .into_iter()
        .map(|a| (iface.clone(), a))
        .collect()
}

/// A host instance of a shared request.
struct Host {
    id: i64,
    computer: String,
    partition: String,
    software_url: String,
    software_type: String,
}

/// The requester's tree root (`''` from a user) and instance id of a shared request.
fn shared_requester(
    tx: &Tx<'_>,
    from: Option<&PartitionRef>,
    now_ms: u64,
) -> Result<(String, Option<i64>)> {
    let Some(who) = from else {
        return Ok((String::new(), None));
    };
    let inst = allocated_instance(
        tx,
        who.computer.as_str(),
        who.partition.as_str(),
        "request a shared instance",
    )?;
    touch_seen(tx, who.computer.as_str(), now_ms)?;
    Ok((inst.root_title().to_owned(), Some(inst.id)))
}

/// The first instance (registration order) that can host `req`: same release, same type when
/// one is asked, on `req.computer` (any computer when empty) and partition when named (by id
/// or as `<computer>-<partition>`); with `live`, not one being destroyed.
fn find_host(tx: &Tx<'_>, req: &SharedRequest, live: bool) -> Result<Option<Host>> {
    let skip_state = if live {
        InstanceState::Destroyed.as_str()
    } else {
        ""
    };
    tx.q_row(
        "SELECT i.id, i.computer, i.partition, i.software_url, i.software_type FROM instance i
         JOIN partition p ON p.computer = i.computer AND p.id = i.partition
         WHERE (?1 = '' OR i.computer = ?1) AND i.software_url = ?2
           AND (?3 = '' OR i.software_type = ?3)
           AND (CAST(?4 AS TEXT) IS NULL OR i.partition = ?4
                OR i.computer || '-' || i.partition = ?4)
           AND i.state <> ?5
         ORDER BY p.seq LIMIT 1",
        params![
            req.computer,
            req.software_url,
            req.software_type,
            req.host_partition,
            skip_state
        ],
        |r| {
            Ok(Host {
                id: r.get(0)?,
                computer: r.get(1)?,
                partition: r.get(2)?,
                software_url: r.get(3)?,
                software_type: r.get(4)?,
            })
        },
    )
    .optional()
    .op("find a host for a shared instance")
}

/// Why no instance can host `req`, and what to request first.
fn no_host(req: &SharedRequest) -> StoreError {
    let mut what = format!("no instance of release {}", req.software_url);
    if !req.software_type.is_empty() {
        what += &format!(" with software type {:?}", req.software_type);
    }
    if !req.computer.is_empty() {
        what += &format!(" on computer {}", req.computer);
    }
    if let Some(p) = &req.host_partition {
        what += &format!(" in partition {p}");
    }
    StoreError::NoAllocation(format!(
        "shared instance {:?} has no host: {what} is running (or all are being destroyed); \
         request the host instance first",
        req.title
    ))
}

/// Add or update the shared instance `(root, req.title)` on `host`, bumping the host(s) when
/// anything changed; returns what its host published for it so far.
fn attach_shared(
    tx: &mut Tx<'_>,
    req: &SharedRequest,
    host: &Host,
    root: &str,
    requester: Option<i64>,
) -> Result<Params> {
    let existing = tx
        .q_row(
            "SELECT host, software_type, parameters, connection FROM slap_shared
             WHERE root = ?1 AND title = ?2",
            params![root, req.title],
            |r| {
                Ok((
                    r.get::<i64>(0)?,
                    r.get::<String>(1)?,
                    r.get::<String>(2)?,
                    r.get::<String>(3)?,
                ))
            },
        )
        .optional()
        .op("look up a shared instance")?;
    let Some((old_host, old_type, old_params, old_conn)) = existing else {
        tx.exec(
            "INSERT INTO slap_shared (root, title, host, requester, software_type, parameters)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                root,
                req.title,
                host.id,
                requester,
                req.software_type,
                req.parameters
            ],
        )
        .op("add a shared instance")?;
        tx.bump_instance(host.id)?;
        return Ok(Params::new());
    };
    let changed =
        old_host != host.id || old_type != req.software_type || old_params != req.parameters;
    tx.exec(
        "UPDATE slap_shared SET host = ?3, software_type = ?4, parameters = ?5,
         requester = ?6 WHERE root = ?1 AND title = ?2",
        params![
            root,
            req.title,
            host.id,
            req.software_type,
            req.parameters,
            requester
        ],
    )
    .op("update a shared instance")?;
    if changed {
        tx.bump_instance(host.id)?;
        if old_host != host.id {
            tx.bump_instance(old_host)?;
        }
    }
    Ok(serde_json::from_str(&old_conn).unwrap_or_default())
}

/// Remove the shared instance `(root, title)` from its host (bumped); false when none.
fn detach_shared(tx: &mut Tx<'_>, root: &str, title: &str) -> Result<bool> {
    let host: Option<i64> = tx
        .q_row(
            "DELETE FROM slap_shared WHERE root = ?1 AND title = ?2 RETURNING host",
            params![root, title],
            |r| r.get(0),
        )
        .optional()
        .op("remove a shared instance")?;
    match host {
        Some(h) => tx.bump_instance(h).map(|()| true),
        None => Ok(false),
    }
}

/// Store what host `c/p` publishes for its shared instance `reference`; a change bumps the
/// shared instance's requester. Unknown references change nothing.
pub(super) fn publish_shared_in(
    tx: &mut Tx<'_>,
    c: &str,
    p: &str,
    reference: &str,
    params: &Params,
) -> Result<()> {
    let found = tx
        .q_row(
            "SELECT s.rowid, s.connection, s.requester FROM slap_shared s
             JOIN instance i ON i.id = s.host
             WHERE i.computer = ?1 AND i.partition = ?2 AND s.root || '_' || s.title = ?3",
            params![c, p, reference],
            |r| {
                Ok((
                    r.get::<i64>(0)?,
                    r.get::<String>(1)?,
                    r.get::<Option<i64>>(2)?,
                ))
            },
        )
        .optional()
        .op("look up a shared instance")?;
    let Some((rowid, old, requester)) = found else {
        return Ok(());
    };
    if serde_json::from_str::<Params>(&old).unwrap_or_default() != *params {
        let json = to_json(params)?;
        tx.exec(
            "UPDATE slap_shared SET connection = ?2 WHERE rowid = ?1",
            params![rowid, json],
        )
        .op("store shared connection parameters")?;
        if let Some(r) = requester {
            tx.bump_instance(r)?;
        }
    }
    Ok(())
}

/// The parameters of a stored shared instance (a marshalled dictionary) as JSON.
/// A value JSON cannot hold (a non-finite float, a Python object) becomes its Python `str()`.
pub(super) fn shared_params(marshalled: &str) -> Params {
    let Ok(wire::Value::Dict(entries)) = wire::loads(marshalled) else {
        return Params::new();
    };
    entries
        .iter()
        .map(|(k, v)| {
            let key = k.as_str().map_or_else(|| k.py_str(), str::to_owned);
            let v = v
                .to_json()
                .unwrap_or_else(|_| serde_json::Value::String(v.py_str()));
            (key, v)
        })
        .collect()
}

/// The shared instance `(root, title)` as the native API shows it: its host's computer,
/// partition and revision, its own parameters and connection parameters.
pub(super) fn shared_info(
    tx: &super::sql::Transaction<'_>,
    title: &str,
    root: &str,
) -> Result<Option<InstanceInfo>> {
    let row = tx
        .q_row(
            "SELECT s.software_type, s.parameters, s.connection, h.software_url, h.computer,
                    h.partition, h.revision, r.computer, r.partition
             FROM slap_shared s JOIN instance h ON h.id = s.host
             LEFT JOIN instance r ON r.id = s.requester
             WHERE s.root = ?1 AND s.title = ?2",
            params![root, title],
            |r| {
                Ok((
                    (
                        r.get::<String>(0)?,
                        r.get::<String>(1)?,
                        r.get::<String>(2)?,
                        r.get::<String>(3)?,
                    ),
                    (
                        r.get::<String>(4)?,
                        r.get::<String>(5)?,
                        r.get::<i64>(6)?,
                        r.get::<Option<String>>(7)?,
                        r.get::<Option<String>>(8)?,
                    ),
                ))
            },
        )
        .optional()
        .op("look up a shared instance")?;
    let Some(((software_type, parameters, connection, url), (hc, hp, revision, rc, rp))) = row
    else {
        return Ok(None);
    };
    let software_type = if software_type.is_empty() {
        "default"
    } else {
        &software_type
    };
    Ok(Some(InstanceInfo {
        title: decode(title)?,
        root_title: decode(if root.is_empty() { title } else { root })?,
        requester: rc.zip(rp).map(|(c, p)| format!("{c}/{p}")),
        software_url: decode(&url)?,
        software_type: decode(software_type)?,
        parameters: shared_params(&parameters),
        state: InstanceState::Started,
        computer: decode(&hc)?,
        partition: decode(&hp)?,
        connection: from_json(&connection)?,
        reported: None,
        bang: None,
        revision: revision as u64,
        children: Vec::new(),
        shared: true,
    }))
}

/// The shared instances hosted on computer `c` (partition `only`), by host instance id, in
/// request order.
pub(super) fn hosted_shared(
    tx: &super::sql::Transaction<'_>,
    c: &str,
    only: Option<&str>,
) -> Result<HashMap<i64, Vec<SharedEntry>>> {
    let mut shared: HashMap<i64, Vec<SharedEntry>> = HashMap::new();
    for (host, e) in rows(
        tx,
        "read shared instances",
        &format!(
            "SELECT s.host, s.root, s.title, s.software_type, s.parameters
             FROM slap_shared s JOIN instance i ON i.id = s.host
             WHERE i.computer = ?1 AND {} ORDER BY s.rowid",
            only_partition("i.partition", only)
        ),
        params![c, only],
        |r| {
            Ok((
                r.get::<i64>(0)?,
                SharedEntry {
                    reference: format!("{}_{}", r.get::<String>(1)?, r.get::<String>(2)?),
                    software_type: r.get(3)?,
                    parameters: r.get(4)?,
                },
            ))
        },
    )? {
        shared.entry(host).or_default().push(e);
    }
    Ok(shared)
}

#[cfg(test)]
mod tests {
    use super::super::{SlapAddress, SlapFormat, Store};
    use slapos_proto::{ComputerId, PartitionId, PartitionSpec, RegisterComputer};

    /// A request's answer reads the partition's `ip_list` alone: the same list the full
    /// partition read gives, for SLAP addresses and for native ones (on the partition's
    /// interface, else named after the partition).
    #[test]
    fn ip_list_alone_matches_the_partition_read() {
        let mut s = Store::open_in_memory(1_000).unwrap();
        let spec = |p: &str, addresses: &[&str], interface: Option<&str>| PartitionSpec {
            id: PartitionId::parse(p).unwrap(),
            addresses: addresses.iter().map(|a| (*a).to_owned()).collect(),
            interface: interface.map(str::to_owned),
            uid: None,
        };
        s.register(
            &RegisterComputer {
                id: ComputerId::parse("NATIVE").unwrap(),
                partitions: vec![
                    spec("p0", &["10.0.0.1", "fd00::1"], None),
                    spec("p1", &["10.0.0.2"], Some("tap1")),
                    spec("p2", &[], None),
                ],
                labels: Default::default(),
            },
            1,
        )
        .unwrap();
        let addr = |i: &str, a: &str| SlapAddress {
            interface: i.into(),
            address: a.into(),
            netmask: "255.255.255.0".into(),
        };
        s.slap_format(
            &SlapFormat {
                computer: "SLAP".into(),
                address: None,
                netmask: None,
                partitions: vec![
                    (
                        "slappart0".into(),
                        vec![addr("eth0", "10.1.0.1"), addr("tap0", "fd01::1")],
                    ),
                    ("slappart1".into(), vec![]),
                ],
            },
            2,
        )
        .unwrap();
        for (c, p) in [
            ("NATIVE", "p0"),
            ("NATIVE", "p1"),
            ("NATIVE", "p2"),
            ("SLAP", "slappart0"),
            ("SLAP", "slappart1"),
        ] {
            let full = s.slap_partition(c, p).unwrap().map(|part| part.ip_list);
            assert!(full.is_some(), "{c}/{p}");
            assert_eq!(s.slap_ip_list(c, p).unwrap(), full, "{c}/{p}");
        }
        assert_eq!(s.slap_ip_list("NATIVE", "p9").unwrap(), None);
        assert_eq!(
            s.slap_ip_list("NATIVE", "p1").unwrap().unwrap(),
            [("tap1".to_owned(), "10.0.0.2".to_owned())]
        );
    }
}
