//! The forms, query strings and header the slap client sends, parsed into typed values (master
//! side) and written back (node side, talking to a real master).
//!
//! Field names and defaults follow `proxy/slap_tool.py` and `slap/slap.py` of slapos.core
//! 1.26.1. A missing required field is [`FormError::MissingField`] (slapproxy: 400); a field
//! that does not decode names the field.

use std::collections::{BTreeMap, HashMap};

use super::error::{EncodeError, FormError, ShapeError, truncate};
use super::instance_xml::dict2xml_value;
use super::marshal::{dumps, loads};
use super::objects::str_keyed;
use super::value::Value;

/// `dumps({})`: the default slapproxy uses for absent `partition_parameter_xml`, `filter_xml`
/// and `shared_xml`.
pub const EMPTY_DICT_XML: &str = "<marshal><dictionary id=\"i2\"/></marshal>";

/// Read access to decoded form fields or query parameters.
pub trait FormFields {
    /// The value of a field, if present.
    fn field(&self, name: &str) -> Option<&str>;
}

impl<S: std::hash::BuildHasher> FormFields for HashMap<String, String, S> {
    fn field(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl FormFields for BTreeMap<String, String> {
    fn field(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl FormFields for [(String, String)] {
    fn field(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl FormFields for Vec<(String, String)> {
    fn field(&self, name: &str) -> Option<&str> {
        self.as_slice().field(name)
    }
}

impl FormFields for [(&str, &str)] {
    fn field(&self, name: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }
}

/// A required field.
pub fn required<'f, F: FormFields + ?Sized>(
    form: &'f F,
    field: &'static str,
) -> Result<&'f str, FormError> {
    form.field(field).ok_or(FormError::MissingField { field })
}

/// An optional field where the client's `None` placeholder counts as absent: the client sends
/// a Python `None` as the text `None` (e.g. `slave_reference=None`), and an empty value means
/// absent too (`if not slave_reference or slave_reference == 'None'`).
pub fn optional_reference<F: FormFields + ?Sized>(form: &F, field: &'static str) -> Option<String> {
    form.field(field)
        .filter(|v| !v.is_empty() && *v != "None")
        .map(str::to_owned)
}

/// A field holding xml_marshaller XML, decoded; `default` is used when the field is absent
/// (`None`: the field is required).
pub fn marshal_field<F: FormFields + ?Sized>(
    form: &F,
    field: &'static str,
    default: Option<&str>,
) -> Result<Value, FormError> {
    let xml = match (form.field(field), default) {
        (Some(xml), _) => xml,
        (None, Some(d)) => d,
        (None, None) => return Err(FormError::MissingField { field }),
    };
    loads(xml).map_err(|source| FormError::BadMarshal { field, source })
}

fn dict_field<F: FormFields + ?Sized>(
    form: &F,
    field: &'static str,
    default: Option<&str>,
) -> Result<BTreeMap<String, Value>, FormError> {
    let v = marshal_field(form, field, default)?;
    str_keyed(&v, field).map_err(|source| FormError::BadShape { field, source })
}

fn map_to_value(map: &BTreeMap<String, Value>) -> Value {
    Value::Dict(
        map.iter()
            .map(|(k, v)| (Value::str(k), v.clone()))
            .collect(),
    )
}

// ---------------------------------------------------------------------------------------------

/// A computer partition named by `computer_id` + `computer_partition_id` (form or query), or
/// `computer_reference` + `computer_partition_reference` (`registerComputerPartition`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRef {
    /// The computer.
    pub computer_id: String,
    /// The partition.
    pub partition_id: String,
}

impl PartitionRef {
    /// From `computer_id` and `computer_partition_id`.
    pub fn from_form<F: FormFields + ?Sized>(form: &F) -> Result<Self, FormError> {
        Ok(PartitionRef {
            computer_id: required(form, "computer_id")?.to_owned(),
            partition_id: required(form, "computer_partition_id")?.to_owned(),
        })
    }

    /// From the `registerComputerPartition` query: `computer_reference`,
    /// `computer_partition_reference`.
    pub fn from_register_query<F: FormFields + ?Sized>(query: &F) -> Result<Self, FormError> {
        Ok(PartitionRef {
            computer_id: required(query, "computer_reference")?.to_owned(),
            partition_id: required(query, "computer_partition_reference")?.to_owned(),
        })
    }
}

/// The `Authorization: X-SlapPartition computer_id=…, computer_partition_id=…` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlapPartitionAuth {
    /// `computer_id`.
    pub computer_id: String,
    /// `computer_partition_id` (slapproxy tolerates its absence).
    pub partition_id: Option<String>,
}

impl SlapPartitionAuth {
    /// Parses the header value like `proxy/views._parseSlapPartitionAuthorization`: scheme
    /// compared case-insensitively, items split on `,`, keys and values stripped. `None` when
    /// the scheme differs or no `computer_id` is given.
    pub fn parse(header: &str) -> Option<Self> {
        let header = header.trim_start();
        let split = header.find(char::is_whitespace)?;
        let (scheme, info) = header.split_at(split);
        if !scheme.eq_ignore_ascii_case("x-slappartition") {
            return None;
        }
        let mut items: HashMap<&str, &str> = HashMap::new();
        for item in info.trim_start().split(',') {
            let (k, v) = item.split_once('=').unwrap_or((item, ""));
            items.insert(k.trim(), v.trim());
        }
        Some(SlapPartitionAuth {
            computer_id: (*items.get("computer_id")?).to_owned(),
            partition_id: items.get("computer_partition_id").map(|s| (*s).to_owned()),
        })
    }

    /// The header value the client sends (`BasicSlapPartitionAuth`).
    pub fn header_value(computer_id: &str, partition_id: &str) -> String {
        format!("X-SlapPartition computer_id={computer_id}, computer_partition_id={partition_id}")
    }
}

// ---------------------------------------------------------------------------------------------

/// `state` of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestedState {
    /// `started`.
    Started,
    /// `stopped`.
    Stopped,
    /// `destroyed`.
    Destroyed,
}

impl RequestedState {
    /// The wire text.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestedState::Started => "started",
            RequestedState::Stopped => "stopped",
            RequestedState::Destroyed => "destroyed",
        }
    }

    /// From the wire text.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "started" => Some(RequestedState::Started),
            "stopped" => Some(RequestedState::Stopped),
            "destroyed" => Some(RequestedState::Destroyed),
            _ => None,
        }
    }
}

/// `POST /requestComputerPartition`.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestForm {
    /// `software_release`.
    pub software_release: String,
    /// `software_type` (the client sends `default` for `None`).
    pub software_type: String,
    /// `partition_reference`: the instance title.
    pub partition_reference: String,
    /// `partition_parameter_xml`: the parameters with their marshalled types
    /// (absent field: `{}`).
    pub parameters: BTreeMap<String, Value>,
    /// `filter_xml` (`computer_guid`, `instance_guid`, `master_url`, …; absent field: `{}`).
    pub filter: BTreeMap<String, Value>,
    /// `state`: `None` means keep the current state (or `started` for a new instance).
    pub state: Option<RequestedState>,
    /// `shared_xml` (Python truthiness of the decoded value; absent field: `{}`, false).
    pub shared: bool,
    /// `computer_id` + `computer_partition_id` form fields, sent when an instance requests a
    /// child (`ComputerPartition.request`), together with the X-SlapPartition header.
    pub requester: Option<PartitionRef>,
}

impl RequestForm {
    /// Parses the form.
    pub fn from_form<F: FormFields + ?Sized>(form: &F) -> Result<Self, FormError> {
        let state = match marshal_field(form, "state", None)? {
            Value::None => None,
            Value::String(s) => {
                Some(
                    RequestedState::parse(&s).ok_or_else(|| FormError::BadValue {
                        field: "state",
                        value: truncate(&s),
                        expected: "one of started, stopped, destroyed",
                    })?,
                )
            }
            other => {
                return Err(FormError::BadShape {
                    field: "state",
                    source: ShapeError::new("state", "a str or None", &other),
                });
            }
        };
        let requester = match (
            form.field("computer_id"),
            form.field("computer_partition_id"),
        ) {
            (Some(c), Some(p)) => Some(PartitionRef {
                computer_id: c.to_owned(),
                partition_id: p.to_owned(),
            }),
            _ => None,
        };
        Ok(RequestForm {
            software_release: required(form, "software_release")?.to_owned(),
            software_type: required(form, "software_type")?.to_owned(),
            partition_reference: required(form, "partition_reference")?.to_owned(),
            parameters: dict_field(form, "partition_parameter_xml", Some(EMPTY_DICT_XML))?,
            filter: dict_field(form, "filter_xml", Some(EMPTY_DICT_XML))?,
            state,
            shared: marshal_field(form, "shared_xml", Some(EMPTY_DICT_XML))?.is_truthy(),
            requester,
        })
    }

    /// A string entry of the filter (`computer_guid`, `instance_guid`, `master_url`).
    pub fn filter_str(&self, key: &str) -> Option<&str> {
        self.filter.get(key).and_then(Value::as_str)
    }

    /// The parameters as slapproxy stores them: `dict2xml(partition_parameter_kw)`.
    pub fn parameters_instance_xml(&self) -> Result<String, EncodeError> {
        dict2xml_value(&map_to_value(&self.parameters))
    }

    /// The form fields in the order the Python client sends them (`OpenOrder.request`, or
    /// `ComputerPartition.request` when [`Self::requester`] is set).
    pub fn to_form(&self) -> Result<Vec<(&'static str, String)>, EncodeError> {
        let params = dumps(&map_to_value(&self.parameters))?;
        let filter = dumps(&map_to_value(&self.filter))?;
        let state = dumps(&Value::from(self.state.map(RequestedState::as_str)))?;
        let shared = dumps(&Value::Bool(self.shared))?;
        Ok(match &self.requester {
            None => vec![
                ("software_release", self.software_release.clone()),
                ("partition_reference", self.partition_reference.clone()),
                ("partition_parameter_xml", params),
                ("filter_xml", filter),
                ("software_type", self.software_type.clone()),
                ("state", state),
                ("shared_xml", shared),
            ],
            Some(r) => vec![
                ("computer_id", r.computer_id.clone()),
                ("computer_partition_id", r.partition_id.clone()),
                ("software_release", self.software_release.clone()),
                ("software_type", self.software_type.clone()),
                ("partition_reference", self.partition_reference.clone()),
                ("shared_xml", shared),
                ("partition_parameter_xml", params),
                ("filter_xml", filter),
                ("state", state),
            ],
        })
    }
}

/// `POST /setComputerPartitionConnectionXml`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionForm {
    /// The publishing partition.
    pub partition: PartitionRef,
    /// `connection_xml`: the published parameters.
    pub connection: BTreeMap<String, Value>,
    /// `slave_reference`: the shared instance these parameters are for (`None`, `''` and the
    /// text `None` mean "the partition itself").
    pub slave_reference: Option<String>,
}

impl ConnectionForm {
    /// Parses the form.
    pub fn from_form<F: FormFields + ?Sized>(form: &F) -> Result<Self, FormError> {
        Ok(ConnectionForm {
            partition: PartitionRef::from_form(form)?,
            connection: dict_field(form, "connection_xml", None)?,
            slave_reference: optional_reference(form, "slave_reference"),
        })
    }

    /// The connection parameters as slapproxy stores them: `dict2xml(loads(connection_xml))`.
    pub fn connection_instance_xml(&self) -> Result<String, EncodeError> {
        dict2xml_value(&map_to_value(&self.connection))
    }

    /// The form the client sends (`ComputerPartition.setConnectionDict`).
    pub fn to_form(&self) -> Result<Vec<(&'static str, String)>, EncodeError> {
        Ok(vec![
            ("computer_id", self.partition.computer_id.clone()),
            ("computer_partition_id", self.partition.partition_id.clone()),
            ("connection_xml", dumps(&map_to_value(&self.connection))?),
            (
                "slave_reference",
                self.slave_reference
                    .clone()
                    .unwrap_or_else(|| "None".to_owned()),
            ),
        ])
    }
}

/// `supplySupply` state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SupplyState {
    /// `available`.
    Available,
    /// `destroyed`.
    Destroyed,
}

/// `POST /supplySupply`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupplyForm {
    /// `url`.
    pub url: String,
    /// `computer_id`.
    pub computer_id: String,
    /// `state` (slapproxy raises `ValueError`, a 500, for anything else).
    pub state: SupplyState,
}

impl SupplyForm {
    /// Parses the form.
    pub fn from_form<F: FormFields + ?Sized>(form: &F) -> Result<Self, FormError> {
        let state = required(form, "state")?;
        Ok(SupplyForm {
            url: required(form, "url")?.to_owned(),
            computer_id: required(form, "computer_id")?.to_owned(),
            state: match state {
                "available" => SupplyState::Available,
                "destroyed" => SupplyState::Destroyed,
                other => {
                    return Err(FormError::BadValue {
                        field: "state",
                        value: truncate(other),
                        expected: "available or destroyed",
                    });
                }
            },
        })
    }
}

/// `buildingSoftwareRelease`, `availableSoftwareRelease`, `softwareReleaseError`,
/// `destroyedSoftwareRelease`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoftwareReleaseForm {
    /// `url`.
    pub url: String,
    /// `computer_id`.
    pub computer_id: String,
    /// `error_log` (`softwareReleaseError` only).
    pub error_log: Option<String>,
}

impl SoftwareReleaseForm {
    /// Parses the form.
    pub fn from_form<F: FormFields + ?Sized>(form: &F) -> Result<Self, FormError> {
        Ok(SoftwareReleaseForm {
            url: required(form, "url")?.to_owned(),
            computer_id: required(form, "computer_id")?.to_owned(),
            error_log: form.field("error_log").map(str::to_owned),
        })
    }
}

/// `POST /updateComputerPartitionRelatedInstanceList`: `instance_reference_xml` is a
/// marshalled list of instance references.
pub fn related_instance_list<F: FormFields + ?Sized>(
    form: &F,
) -> Result<(PartitionRef, Vec<String>), FormError> {
    let partition = PartitionRef::from_form(form)?;
    let field = "instance_reference_xml";
    let value = marshal_field(form, field, None)?;
    let items = value.as_seq().ok_or_else(|| FormError::BadShape {
        field,
        source: ShapeError::new(field, "a list", &value),
    })?;
    let list = items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| FormError::BadShape {
                    field,
                    source: ShapeError::new(format!("{field}[{i}]"), "a str", v),
                })
        })
        .collect::<Result<_, _>>()?;
    Ok((partition, list))
}

// ---------------------------------------------------------------------------------------------

/// One address of a partition in the format payload (`address_list[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressConfiguration {
    /// `addr`.
    pub addr: String,
    /// `netmask`.
    pub netmask: String,
}

/// One partition of the format payload (`partition_list[]`).
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionConfiguration {
    /// `reference` (`slappartN`).
    pub reference: String,
    /// `address_list`.
    pub addresses: Vec<AddressConfiguration>,
    /// `tap.name` (`None` when there is no tap dictionary or no name).
    pub tap_name: Option<String>,
}

impl PartitionConfiguration {
    /// The interface slapproxy records: `tap['name'] or reference`.
    pub fn network_interface(&self) -> &str {
        match self.tap_name.as_deref() {
            Some(name) if !name.is_empty() => name,
            _ => &self.reference,
        }
    }
}

/// `POST /loadComputerConfigurationFromXML`: the dictionary `slapos node format` sends
/// (section 3.1 of the protocol notes). Only the keys slapproxy reads are typed; everything
/// else (`instance_root`, `os_type`, `user`, `tun`, `ipv6_range`, …) stays in [`Self::raw`].
#[derive(Debug, Clone, PartialEq)]
pub struct ComputerConfiguration {
    /// `reference`: the computer id.
    pub reference: String,
    /// `address` (may be `None`).
    pub address: Option<String>,
    /// `netmask` (may be `None`).
    pub netmask: Option<String>,
    /// `partition_list`.
    pub partitions: Vec<PartitionConfiguration>,
    /// The whole decoded dictionary.
    pub raw: Value,
}

impl ComputerConfiguration {
    /// Parses the `xml` field of the form (the `computer_id` field is ignored, like slapproxy).
    pub fn from_form<F: FormFields + ?Sized>(form: &F) -> Result<Self, FormError> {
        let field = "xml";
        let value = marshal_field(form, field, None)?;
        Self::from_value(value).map_err(|source| FormError::BadShape { field, source })
    }

    /// Reads the decoded dictionary.
    pub fn from_value(raw: Value) -> Result<Self, ShapeError> {
        let opt_str = |v: Option<&Value>, path: &str| -> Result<Option<String>, ShapeError> {
            match v {
                None | Some(Value::None) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(ShapeError::new(path, "a str", other)),
            }
        };
        let req_str = |v: Option<&Value>, path: &str| -> Result<String, ShapeError> {
            match v {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(other) => Err(ShapeError::new(path, "a str", other)),
                None => Err(ShapeError::missing(path, "a str")),
            }
        };
        let list = |v: Option<&Value>, path: &str| -> Result<Vec<Value>, ShapeError> {
            match v {
                Some(Value::List(items)) | Some(Value::Tuple(items)) => Ok(items.clone()),
                Some(other) => Err(ShapeError::new(path, "a list", other)),
                None => Err(ShapeError::missing(path, "a list")),
            }
        };
        if raw.as_dict().is_none() {
            return Err(ShapeError::new("computer", "a dict", &raw));
        }
        let mut partitions = Vec::new();
        for (i, p) in list(raw.get("partition_list"), "partition_list")?
            .iter()
            .enumerate()
        {
            let path = format!("partition_list[{i}]");
            if p.as_dict().is_none() {
                return Err(ShapeError::new(path, "a dict", p));
            }
            let mut addresses = Vec::new();
            for (j, a) in list(p.get("address_list"), &format!("{path}.address_list"))?
                .iter()
                .enumerate()
            {
                let apath = format!("{path}.address_list[{j}]");
                if a.as_dict().is_none() {
                    return Err(ShapeError::new(apath, "a dict", a));
                }
                addresses.push(AddressConfiguration {
                    addr: req_str(a.get("addr"), &format!("{apath}.addr"))?,
                    netmask: req_str(a.get("netmask"), &format!("{apath}.netmask"))?,
                });
            }
            let tap_name = match p.get("tap") {
                None | Some(Value::None) => None,
                Some(tap @ Value::Dict(_)) => {
                    opt_str(tap.get("name"), &format!("{path}.tap.name"))?
                }
                Some(other) => return Err(ShapeError::new(format!("{path}.tap"), "a dict", other)),
            };
            partitions.push(PartitionConfiguration {
                reference: req_str(p.get("reference"), &format!("{path}.reference"))?,
                addresses,
                tap_name,
            });
        }
        Ok(ComputerConfiguration {
            reference: req_str(raw.get("reference"), "reference")?,
            address: opt_str(raw.get("address"), "address")?,
            netmask: opt_str(raw.get("netmask"), "netmask")?,
            partitions,
            raw,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slap_partition_header_like_slapproxy() {
        let want = Some(SlapPartitionAuth {
            computer_id: "c".into(),
            partition_id: Some("p".into()),
        });
        assert_eq!(
            SlapPartitionAuth::parse("X-SlapPartition computer_id=c, computer_partition_id=p"),
            want
        );
        assert_eq!(
            SlapPartitionAuth::parse("x-slappartition computer_id=c,computer_partition_id=p"),
            want
        );
        assert_eq!(
            SlapPartitionAuth::parse(&SlapPartitionAuth::header_value("c", "p")),
            want
        );
        assert_eq!(SlapPartitionAuth::parse("Basic abc"), None);
        assert_eq!(SlapPartitionAuth::parse("X-SlapPartition"), None);
        assert_eq!(
            SlapPartitionAuth::parse("X-SlapPartition computer_partition_id=p"),
            None
        );
    }

    #[test]
    fn request_form_errors_name_the_field() {
        let form: Vec<(&str, &str)> = vec![
            ("software_release", "http://sr/"),
            ("software_type", "default"),
            ("partition_reference", "x"),
        ];
        assert_eq!(
            RequestForm::from_form(form.as_slice()),
            Err(FormError::MissingField { field: "state" })
        );
        let mut with_state = form.clone();
        with_state.push(("state", "<marshal><string>running</string></marshal>"));
        assert!(matches!(
            RequestForm::from_form(with_state.as_slice()),
            Err(FormError::BadValue { field: "state", .. })
        ));
        let mut bad_params = form.clone();
        bad_params.push(("state", "<marshal><none/></marshal>"));
        bad_params.push((
            "partition_parameter_xml",
            "<marshal><list id=\"i2\"/></marshal>",
        ));
        assert!(matches!(
            RequestForm::from_form(bad_params.as_slice()),
            Err(FormError::BadShape {
                field: "partition_parameter_xml",
                ..
            })
        ));
        let mut ok = form;
        ok.push(("state", "<marshal><none/></marshal>"));
        let r = RequestForm::from_form(ok.as_slice()).unwrap();
        assert!(r.parameters.is_empty() && r.filter.is_empty() && !r.shared && r.state.is_none());
    }
}
