//! The four slapos classes as typed documents: what the master builds for
//! `getFullComputerInformation`, `registerComputerPartition` and `requestComputerPartition`,
//! and what a node reads back from a master.
//!
//! Attribute names keep their leading underscores: the Python client copies `__dict__` as is.
//! The builders reproduce slapproxy's documents (`proxy/slap_tool.partitiondict2partition`,
//! `proxy/db.requestNotSlave` / `requestSlave`) key for key; the golden tests compare their
//! output with the captured exchanges byte for byte.

use std::collections::BTreeMap;

use super::error::{EncodeError, ShapeError};
use super::instance_xml::ParamDict;
use super::marshal::dumps;
use super::value::{Object, SlapClass, Value};

/// Value of `slap_server_url` in request responses: slapproxy sends this literal placeholder.
pub const SLAP_SERVER_URL_PLACEHOLDER: &str = "slap_server_url";

/// `(network interface, address)` pairs, marshalled as a list of 2-tuples (`ip_list`).
pub fn ip_list_value(ip_list: &[(String, String)]) -> Value {
    Value::List(
        ip_list
            .iter()
            .map(|(iface, addr)| Value::Tuple(vec![Value::str(iface), Value::str(addr)]))
            .collect(),
    )
}

fn params_value(params: &ParamDict) -> Value {
    Value::from_str_dict(params)
}

fn map_value(map: &BTreeMap<String, Value>) -> Value {
    Value::Dict(
        map.iter()
            .map(|(k, v)| (Value::str(k), v.clone()))
            .collect(),
    )
}

// ---------------------------------------------------------------------------------------------
// SoftwareRelease

/// `SoftwareRelease(url, computer_guid)`.
#[derive(Debug, Clone, PartialEq)]
pub struct SoftwareReleaseDoc {
    /// `_software_release`: the software release URL.
    pub url: String,
    /// `_computer_guid`.
    pub computer_guid: String,
    /// `_requested_state` (`available`/`destroyed`): present in the computer's software list,
    /// absent in a partition's `_software_release_document`.
    pub requested_state: Option<String>,
    /// Any other attribute (written after the known ones; kept when reading).
    pub extra: BTreeMap<String, Value>,
}

impl SoftwareReleaseDoc {
    /// A release as listed in `_software_release_list` (with its requested state).
    pub fn supplied(url: &str, computer_guid: &str, requested_state: &str) -> Self {
        SoftwareReleaseDoc {
            url: url.to_owned(),
            computer_guid: computer_guid.to_owned(),
            requested_state: Some(requested_state.to_owned()),
            extra: BTreeMap::new(),
        }
    }

    /// A partition's `_software_release_document` (no requested state).
    pub fn document(url: &str, computer_guid: &str) -> Self {
        SoftwareReleaseDoc {
            url: url.to_owned(),
            computer_guid: computer_guid.to_owned(),
            requested_state: None,
            extra: BTreeMap::new(),
        }
    }

    /// The marshal object.
    pub fn to_object(&self) -> Object {
        let mut o = Object::new(
            SlapClass::SoftwareRelease,
            vec![Value::str(&self.url), Value::str(&self.computer_guid)],
        )
        .with("_computer_guid", &self.computer_guid)
        .with("_software_instance_list", Value::List(vec![]))
        .with("_software_release", &self.url);
        if let Some(state) = &self.requested_state {
            o = o.with("_requested_state", state);
        }
        o.state.extend(self.extra.clone());
        o
    }

    /// Reads a `SoftwareRelease` object (attributes win over initargs, as in Python).
    pub fn from_value(v: &Value, path: &str) -> Result<Self, ShapeError> {
        let o = object_of(v, SlapClass::SoftwareRelease, path)?;
        let url = id_attr(o, "_software_release", 0, path)?;
        let computer_guid = id_attr(o, "_computer_guid", 1, path)?;
        let requested_state = str_attr(o, "_requested_state", path)?;
        Ok(SoftwareReleaseDoc {
            url,
            computer_guid,
            requested_state,
            extra: extra_attrs(
                o,
                &[
                    "_software_release",
                    "_computer_guid",
                    "_requested_state",
                    "_software_instance_list",
                ],
            ),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// ComputerPartition

/// The `_parameter_dict` of an allocated partition, as `partitiondict2partition` builds it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PartitionParameters {
    /// The requested parameters as stored (`xml2dict` of the instance XML: strings or `None`).
    pub instance: ParamDict,
    /// `ip_list`: `(interface, address)` of the partition on its computer.
    pub ip_list: Vec<(String, String)>,
    /// `slap_software_type`.
    pub software_type: String,
    /// `instance_title`: the instance's title (`partition_reference` in slapproxy).
    pub instance_title: String,
    /// `root_instance_title`: the tree root's title (`requested_by or partition_reference`).
    pub root_instance_title: String,
    /// `slap_software_release_url`.
    pub software_release_url: String,
    /// `slave_instance_list`: dictionaries built with [`slave_instance_entry`].
    pub slave_instance_list: Vec<Value>,
    /// `timestamp`: `str(timestamp)`, omitted when `None` (slapproxy omits a NULL or 0 one).
    pub timestamp: Option<String>,
    /// Keys added after the standard ones, e.g. the real master's `full_ip_list` (list of
    /// 5-tuples) and `root_instance_short_title`. They override a key of the same name.
    pub extra: BTreeMap<String, Value>,
}

impl PartitionParameters {
    /// The dictionary, in slapproxy's precedence: requested parameters first, then `ip_list`,
    /// `full_address_list` (always `[]`), `slap_software_type`, `instance_title`,
    /// `root_instance_title`, `slap_computer_id`, `slap_computer_partition_id`,
    /// `slap_software_release_url`, `slave_instance_list`, `timestamp`, then [`Self::extra`].
    pub fn to_dict(&self, computer_id: &str, partition_id: &str) -> BTreeMap<String, Value> {
        let mut d: BTreeMap<String, Value> = self
            .instance
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.clone())))
            .collect();
        let mut set = |k: &str, v: Value| {
            d.insert(k.to_owned(), v);
        };
        set("ip_list", ip_list_value(&self.ip_list));
        set("full_address_list", Value::List(vec![]));
        set("slap_software_type", Value::str(&self.software_type));
        set("instance_title", Value::str(&self.instance_title));
        set("root_instance_title", Value::str(&self.root_instance_title));
        set("slap_computer_id", Value::str(computer_id));
        set("slap_computer_partition_id", Value::str(partition_id));
        set(
            "slap_software_release_url",
            Value::str(&self.software_release_url),
        );
        set(
            "slave_instance_list",
            Value::List(self.slave_instance_list.clone()),
        );
        if let Some(ts) = &self.timestamp {
            set("timestamp", Value::str(ts));
        }
        d.extend(self.extra.clone());
        d
    }
}

/// One entry of a host's `slave_instance_list`: `slave_title`, `slave_reference` and
/// `slap_software_type`, then the shared instance's own parameters (with their marshalled
/// types; a parameter of the same name overrides, as in `db.requestSlave`).
pub fn slave_instance_entry(
    slave_reference: &str,
    software_type: &str,
    parameters: &BTreeMap<String, Value>,
) -> Value {
    let mut d: BTreeMap<String, Value> = BTreeMap::new();
    d.insert("slave_title".into(), Value::str(slave_reference));
    d.insert("slap_software_type".into(), Value::str(software_type));
    d.insert("slave_reference".into(), Value::str(slave_reference));
    d.extend(parameters.clone());
    map_value(&d)
}

/// What an allocated partition carries beyond a free one.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BusyPartition {
    /// `_requested_state` (`started`, `stopped`, `destroyed`).
    pub requested_state: String,
    /// `_parameter_dict`.
    pub parameters: PartitionParameters,
    /// `_connection_dict`: the published connection parameters as stored.
    pub connection: ParamDict,
}

/// `ComputerPartition(computer_id, partition_id, None)` with its attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct ComputerPartitionDoc {
    /// `_computer_id`.
    pub computer_id: String,
    /// `_partition_id`.
    pub partition_id: String,
    /// `_instance_guid` (slapproxy: `<computer>-<partition>`).
    pub instance_guid: Option<String>,
    /// `_requested_state`; `destroyed` for a free partition.
    pub requested_state: Option<String>,
    /// `_need_modification`: 1 when allocated, 0 when free (marshalled as `<int>`).
    pub need_modification: Option<i64>,
    /// `_software_release_document`: `None` (written as `<none/>`) for a free partition.
    pub software_release: Option<SoftwareReleaseDoc>,
    /// `_parameter_dict`, absent for a free partition.
    pub parameters: Option<BTreeMap<String, Value>>,
    /// `_connection_dict`, absent for a free partition.
    pub connection: Option<BTreeMap<String, Value>>,
    /// Any other attribute (e.g. a real master's `_access_status`, `_filter_dict`).
    pub extra: BTreeMap<String, Value>,
}

impl ComputerPartitionDoc {
    /// A free partition, as slapproxy reports it: requested state `destroyed`,
    /// `_need_modification` 0, no software release, no parameters.
    pub fn free(computer_id: &str, partition_id: &str) -> Self {
        ComputerPartitionDoc {
            computer_id: computer_id.to_owned(),
            partition_id: partition_id.to_owned(),
            instance_guid: Some(format!("{computer_id}-{partition_id}")),
            requested_state: Some("destroyed".to_owned()),
            need_modification: Some(0),
            software_release: None,
            parameters: None,
            connection: None,
            extra: BTreeMap::new(),
        }
    }

    /// An allocated partition, as `partitiondict2partition` builds it.
    pub fn busy(computer_id: &str, partition_id: &str, busy: &BusyPartition) -> Self {
        ComputerPartitionDoc {
            requested_state: Some(busy.requested_state.clone()),
            need_modification: Some(1),
            software_release: Some(SoftwareReleaseDoc::document(
                &busy.parameters.software_release_url,
                computer_id,
            )),
            parameters: Some(busy.parameters.to_dict(computer_id, partition_id)),
            connection: Some(
                busy.connection
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::from(v.clone())))
                    .collect(),
            ),
            ..ComputerPartitionDoc::free(computer_id, partition_id)
        }
    }

    /// The marshal object.
    pub fn to_object(&self) -> Object {
        let mut o = Object::new(
            SlapClass::ComputerPartition,
            vec![
                Value::str(&self.computer_id),
                Value::str(&self.partition_id),
                Value::None,
            ],
        )
        .with("_computer_id", &self.computer_id)
        .with("_partition_id", &self.partition_id)
        .with("_request_dict", Value::None)
        .with(
            "_software_release_document",
            self.software_release
                .as_ref()
                .map(SoftwareReleaseDoc::to_object),
        );
        if let Some(g) = &self.instance_guid {
            o = o.with("_instance_guid", g);
        }
        if let Some(s) = &self.requested_state {
            o = o.with("_requested_state", s);
        }
        if let Some(n) = self.need_modification {
            o = o.with("_need_modification", n);
        }
        if let Some(p) = &self.parameters {
            o = o.with("_parameter_dict", map_value(p));
        }
        if let Some(c) = &self.connection {
            o = o.with("_connection_dict", map_value(c));
        }
        o.state.extend(self.extra.clone());
        o
    }

    /// The `registerComputerPartition` response body.
    pub fn encode(&self) -> Result<String, EncodeError> {
        dumps(&Value::Object(self.to_object()))
    }

    /// Reads a `ComputerPartition` object.
    pub fn from_value(v: &Value, path: &str) -> Result<Self, ShapeError> {
        let o = object_of(v, SlapClass::ComputerPartition, path)?;
        let computer_id = id_attr(o, "_computer_id", 0, path)?;
        let partition_id = id_attr(o, "_partition_id", 1, path)?;
        let need_modification = match o.get("_need_modification") {
            None | Some(Value::None) => None,
            Some(Value::Int(i)) => Some(*i),
            Some(Value::Bool(b)) => Some(i64::from(*b)),
            Some(other) => {
                return Err(ShapeError::new(
                    format!("{path}._need_modification"),
                    "an int",
                    other,
                ));
            }
        };
        let software_release = match o.get("_software_release_document") {
            None | Some(Value::None) => None,
            Some(sr) => Some(SoftwareReleaseDoc::from_value(
                sr,
                &format!("{path}._software_release_document"),
            )?),
        };
        Ok(ComputerPartitionDoc {
            instance_guid: str_attr(o, "_instance_guid", path)?,
            requested_state: str_attr(o, "_requested_state", path)?,
            need_modification,
            software_release,
            parameters: dict_attr(o, "_parameter_dict", path)?,
            connection: dict_attr(o, "_connection_dict", path)?,
            extra: extra_attrs(
                o,
                &[
                    "_computer_id",
                    "_partition_id",
                    "_request_dict",
                    "_instance_guid",
                    "_requested_state",
                    "_need_modification",
                    "_software_release_document",
                    "_parameter_dict",
                    "_connection_dict",
                ],
            ),
            computer_id,
            partition_id,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Computer

/// `Computer(computer_id)` with its software releases and partitions: the
/// `getFullComputerInformation` (and `getComputerInformation`) response.
#[derive(Debug, Clone, PartialEq)]
pub struct ComputerDoc {
    /// `_computer_id`.
    pub computer_id: String,
    /// `_software_release_list`.
    pub software_release_list: Vec<SoftwareReleaseDoc>,
    /// `_computer_partition_list`, in registration order.
    pub partition_list: Vec<ComputerPartitionDoc>,
    /// Any other attribute.
    pub extra: BTreeMap<String, Value>,
}

impl ComputerDoc {
    /// A computer with no software and no partition (slapproxy's answer for its own,
    /// unregistered computer id).
    pub fn empty(computer_id: &str) -> Self {
        ComputerDoc {
            computer_id: computer_id.to_owned(),
            software_release_list: Vec::new(),
            partition_list: Vec::new(),
            extra: BTreeMap::new(),
        }
    }

    /// The marshal object.
    pub fn to_object(&self) -> Object {
        Self::object(
            &self.computer_id,
            self.partition_list
                .iter()
                .map(ComputerPartitionDoc::to_object),
            self.software_release_list
                .iter()
                .map(SoftwareReleaseDoc::to_object),
            self.extra.clone(),
        )
    }

    /// The `Computer` object of `computer_id` with these partitions and releases: each is
    /// turned into its marshal object as the list is built.
    fn object(
        computer_id: &str,
        partitions: impl Iterator<Item = Object>,
        software: impl Iterator<Item = Object>,
        extra: BTreeMap<String, Value>,
    ) -> Object {
        let mut o = Object::new(SlapClass::Computer, vec![Value::str(computer_id)])
            .with("_computer_id", computer_id)
            .with(
                "_computer_partition_list",
                Value::List(partitions.map(Value::Object).collect()),
            )
            .with(
                "_software_release_list",
                Value::List(software.map(Value::Object).collect()),
            );
        o.state.extend(extra);
        o
    }

    /// The response body.
    pub fn encode(&self) -> Result<String, EncodeError> {
        dumps(&Value::Object(self.to_object()))
    }

    /// The response body of a computer whose partitions are made one at a time (a
    /// `getFullComputerInformation` answer of 1,000 partitions): no list of partition
    /// documents is held beside their marshal objects.
    pub fn encode_from(
        computer_id: &str,
        software: impl Iterator<Item = SoftwareReleaseDoc>,
        partitions: impl Iterator<Item = ComputerPartitionDoc>,
    ) -> Result<String, EncodeError> {
        let object = Self::object(
            computer_id,
            partitions.map(|p| p.to_object()),
            software.map(|s| s.to_object()),
            BTreeMap::new(),
        );
        dumps(&Value::Object(object))
    }

    /// Reads a `Computer` object (missing lists read as empty).
    pub fn from_value(v: &Value) -> Result<Self, ShapeError> {
        let path = "Computer";
        let o = object_of(v, SlapClass::Computer, path)?;
        let computer_id = id_attr(o, "_computer_id", 0, path)?;
        let list = |name: &str| -> Result<Vec<Value>, ShapeError> {
            match o.get(name) {
                None | Some(Value::None) => Ok(Vec::new()),
                Some(Value::List(items)) | Some(Value::Tuple(items)) => Ok(items.clone()),
                Some(other) => Err(ShapeError::new(format!("{path}.{name}"), "a list", other)),
            }
        };
        let software_release_list = list("_software_release_list")?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                SoftwareReleaseDoc::from_value(v, &format!("{path}._software_release_list[{i}]"))
            })
            .collect::<Result<_, _>>()?;
        let partition_list = list("_computer_partition_list")?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                ComputerPartitionDoc::from_value(
                    v,
                    &format!("{path}._computer_partition_list[{i}]"),
                )
            })
            .collect::<Result<_, _>>()?;
        Ok(ComputerDoc {
            computer_id,
            software_release_list,
            partition_list,
            extra: extra_attrs(
                o,
                &[
                    "_computer_id",
                    "_software_release_list",
                    "_computer_partition_list",
                ],
            ),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// SoftwareInstance

/// A non-shared instance's `requestComputerPartition` response (`db.requestNotSlave`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RequestedPartition {
    /// `slap_computer_id`.
    pub computer_id: String,
    /// `slap_computer_partition_id`.
    pub partition_id: String,
    /// `slap_software_release_url`.
    pub software_release_url: String,
    /// `slap_software_type`.
    pub software_type: String,
    /// The stored parameters (`xml2dict`); `timestamp` is added to them in `_parameter_dict`.
    pub parameters: ParamDict,
    /// `str(timestamp)` (slapproxy writes `'None'` for a NULL timestamp).
    pub timestamp: String,
    /// `_connection_dict`.
    pub connection: ParamDict,
    /// `connection_xml`: the raw stored connection instance XML, or `None` (legacy attribute
    /// for slapproxy ≤ 1.0 clients).
    pub connection_xml: Option<String>,
    /// `_requested_state`.
    pub requested_state: String,
    /// `ip_list`.
    pub ip_list: Vec<(String, String)>,
}

/// A shared ("slave") instance's `requestComputerPartition` response (`db.requestSlave`): no
/// `_instance_guid`, `_requested_state` or `connection_xml`, no `timestamp` parameter.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RequestedShared {
    /// `slap_computer_id`: the host's computer.
    pub computer_id: String,
    /// `slap_computer_partition_id`: the host partition.
    pub host_partition_id: String,
    /// `slap_software_release_url`: the host's software release.
    pub software_release_url: String,
    /// `slap_software_type`: the host's software type.
    pub software_type: String,
    /// `_parameter_dict`: the requested parameters as stored (strings).
    pub parameters: ParamDict,
    /// `_connection_dict`: what the host published for this shared instance.
    pub connection: ParamDict,
    /// `ip_list` of the host partition.
    pub ip_list: Vec<(String, String)>,
}

/// `SoftwareInstance()`: no initargs, a free-form attribute dictionary that the client copies
/// onto a `ComputerPartition`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SoftwareInstanceDoc {
    /// The attributes.
    pub attributes: BTreeMap<String, Value>,
}

impl SoftwareInstanceDoc {
    fn common(
        computer_id: &str,
        partition_id: &str,
        url: &str,
        software_type: &str,
        ip_list: &[(String, String)],
    ) -> Self {
        let mut a = BTreeMap::new();
        a.insert("slap_computer_id".into(), Value::str(computer_id));
        a.insert(
            "slap_computer_partition_id".into(),
            Value::str(partition_id),
        );
        a.insert("slap_software_release_url".into(), Value::str(url));
        a.insert(
            "slap_server_url".into(),
            Value::str(SLAP_SERVER_URL_PLACEHOLDER),
        );
        a.insert("slap_software_type".into(), Value::str(software_type));
        a.insert("ip_list".into(), ip_list_value(ip_list));
        SoftwareInstanceDoc { attributes: a }
    }

    /// The response for a non-shared instance.
    pub fn for_partition(r: &RequestedPartition) -> Self {
        let mut doc = Self::common(
            &r.computer_id,
            &r.partition_id,
            &r.software_release_url,
            &r.software_type,
            &r.ip_list,
        );
        let mut params = r.parameters.clone();
        params.insert("timestamp".into(), Some(r.timestamp.clone()));
        let a = &mut doc.attributes;
        a.insert("_connection_dict".into(), params_value(&r.connection));
        a.insert("_parameter_dict".into(), params_value(&params));
        a.insert(
            "connection_xml".into(),
            Value::from(r.connection_xml.clone()),
        );
        a.insert(
            "_instance_guid".into(),
            Value::str(format!("{}-{}", r.computer_id, r.partition_id)),
        );
        a.insert("_requested_state".into(), Value::str(&r.requested_state));
        doc
    }

    /// The response for a shared instance.
    pub fn for_shared(r: &RequestedShared) -> Self {
        let mut doc = Self::common(
            &r.computer_id,
            &r.host_partition_id,
            &r.software_release_url,
            &r.software_type,
            &r.ip_list,
        );
        doc.attributes
            .insert("_connection_dict".into(), params_value(&r.connection));
        doc.attributes
            .insert("_parameter_dict".into(), params_value(&r.parameters));
        doc
    }

    /// The marshal object.
    pub fn to_object(&self) -> Object {
        Object {
            class: SlapClass::SoftwareInstance,
            initargs: Vec::new(),
            state: self.attributes.clone(),
        }
    }

    /// The response body.
    pub fn encode(&self) -> Result<String, EncodeError> {
        dumps(&Value::Object(self.to_object()))
    }

    /// Reads a `SoftwareInstance` object.
    pub fn from_value(v: &Value) -> Result<Self, ShapeError> {
        let o = object_of(v, SlapClass::SoftwareInstance, "SoftwareInstance")?;
        Ok(SoftwareInstanceDoc {
            attributes: o.state.clone(),
        })
    }

    /// A string attribute (`None` when absent or `None`).
    pub fn str_attr(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).and_then(Value::as_str)
    }

    /// A dictionary attribute with string keys (`_parameter_dict`, `_connection_dict`).
    pub fn dict_attr(&self, name: &str) -> Result<Option<BTreeMap<String, Value>>, ShapeError> {
        match self.attributes.get(name) {
            None | Some(Value::None) => Ok(None),
            Some(v) => str_keyed(v, &format!("SoftwareInstance.{name}")).map(Some),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading helpers

fn object_of<'v>(v: &'v Value, class: SlapClass, path: &str) -> Result<&'v Object, ShapeError> {
    match v {
        Value::Object(o) if o.class == class => Ok(o),
        other => Err(ShapeError::new(path, class.name(), other)),
    }
}

/// A required identifier: the attribute, else the initarg it was constructed from (Python sets
/// the attribute in `__init__` and `setattr` may override it).
fn id_attr(o: &Object, name: &str, initarg: usize, path: &str) -> Result<String, ShapeError> {
    str_attr(o, name, path)?
        .or_else(|| {
            o.initargs
                .get(initarg)
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .ok_or_else(|| ShapeError::missing(format!("{path}.{name}"), "a str"))
}

fn str_attr(o: &Object, name: &str, path: &str) -> Result<Option<String>, ShapeError> {
    match o.get(name) {
        None | Some(Value::None) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ShapeError::new(format!("{path}.{name}"), "a str", other)),
    }
}

fn dict_attr(
    o: &Object,
    name: &str,
    path: &str,
) -> Result<Option<BTreeMap<String, Value>>, ShapeError> {
    match o.get(name) {
        None | Some(Value::None) => Ok(None),
        Some(v) => str_keyed(v, &format!("{path}.{name}")).map(Some),
    }
}

/// A `dict` with `str` keys as a map.
pub fn str_keyed(v: &Value, path: &str) -> Result<BTreeMap<String, Value>, ShapeError> {
    let Value::Dict(entries) = v else {
        return Err(ShapeError::new(path, "a dict", v));
    };
    let mut map = BTreeMap::new();
    for (k, val) in entries {
        let Value::String(k) = k else {
            return Err(ShapeError::new(format!("{path} key"), "a str", k));
        };
        map.insert(k.clone(), val.clone());
    }
    Ok(map)
}

fn extra_attrs(o: &Object, known: &[&str]) -> BTreeMap<String, Value> {
    o.state
        .iter()
        .filter(|(k, _)| !known.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slap::marshal::loads;

    #[test]
    fn free_partition_matches_slapproxy() {
        // The free partition of the captured node-flow getFullComputerInformation.
        let want = "<object id=\"i2\" module=\"slapos.slap.slap\" class=\"ComputerPartition\"><tuple><string>NODE</string><string>slappart1</string><none/></tuple><dictionary id=\"i3\"><string>_computer_id</string><string>NODE</string><string>_instance_guid</string><string>NODE-slappart1</string><string>_need_modification</string><int>0</int><string>_partition_id</string><string>slappart1</string><string>_request_dict</string><none/><string>_requested_state</string><string>destroyed</string><string>_software_release_document</string><none/></dictionary></object>";
        let xml = ComputerPartitionDoc::free("NODE", "slappart1")
            .encode()
            .unwrap();
        assert_eq!(xml, format!("<marshal>{want}</marshal>"));
        let back = ComputerPartitionDoc::from_value(&loads(&xml).unwrap(), "p").unwrap();
        assert_eq!(back, ComputerPartitionDoc::free("NODE", "slappart1"));
    }

    #[test]
    fn reading_refuses_wrong_shapes() {
        let sr = Value::Object(SoftwareReleaseDoc::document("u", "c").to_object());
        let err = ComputerPartitionDoc::from_value(&sr, "x").unwrap_err();
        assert_eq!(err.expected, "ComputerPartition");
        assert_eq!(err.found, "SoftwareRelease");
        let mut bad = ComputerPartitionDoc::free("c", "p").to_object();
        bad.state
            .insert("_parameter_dict".into(), Value::List(vec![]));
        let err = ComputerPartitionDoc::from_value(&Value::Object(bad), "p").unwrap_err();
        assert_eq!(err.path, "p._parameter_dict");
    }
}
