//! # SLAP wire codec (slapos.core 1.26.1 compatibility)
//!
//! What: the pure encoding layer of the classic SLAP protocol, so that master-lite can serve
//! the real `slapos` client and slapgrid, and node-edge can talk to a real SlapOS master.
//! No I/O: strings in, typed values out, and back.
//!
//! * [`marshal`] — xml_marshaller (`slapos.util.dumps`/`loads`): [`Value`], [`dumps`],
//!   [`loads`]. Output is byte-identical to Python's (ids, sorted dictionaries, double-escaped
//!   strings, non-ASCII as `&#N;`, `<int>`/`<long>`, Python float `repr`).
//! * [`instance_xml`] — `dict2xml`/`xml2dict`, the `<instance><parameter id=…>` storage
//!   format, with Python `str()` of values ([`pyrepr`]) and the `_` json-in-xml key.
//! * [`objects`] — the four classes (`Computer`, `ComputerPartition`, `SoftwareRelease`,
//!   `SoftwareInstance`) as typed documents with builders matching slapproxy's responses.
//! * [`forms`] — the client's form fields, query strings and `X-SlapPartition` header parsed
//!   into typed requests (and written back for a node acting as client).
//!
//! Design: the XML is read with quick-xml's event API; the decoder is iterative (no recursion
//! on input depth), and refuses DOCTYPEs, undefined entities, invalid XML characters, classes
//! other than the four allowed ones, and documents beyond [`marshal::DecodeLimits`].
//!
//! Invariants (locked by `proto/tests/slap_*.rs`):
//! * every captured xml_marshaller and instance-XML body in `../shared/reference/slap-wire/`
//!   decodes and re-encodes to the same bytes;
//! * `loads(dumps(v)) == v.canonical()` for any value (property test), and the real Python
//!   library reads what [`dumps`] writes as the same value (cross-check test);
//! * no input makes the decoder panic; errors are typed and name the element or field.
//!
//! Limits: see `docs/slap-codec.md` — references are expanded into copies (bounded in expanded
//! bytes, [`marshal::DecodeLimits::max_bytes`]), set order is kept
//! as given, non-ASCII `repr()` follows a fixed table rather than Python's Unicode database.
//!
//! ## Use from the master's classic routes
//!
//! ```
//! use std::collections::BTreeMap;
//! use slapos_proto::slap::*;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // POST /requestComputerPartition (form fields as decoded by the HTTP layer).
//! let form: Vec<(String, String)> = [
//!     ("software_release", "https://sr/software.cfg"), ("partition_reference", "myinstance"),
//!     ("software_type", "default"), ("state", "<marshal><none/></marshal>"),
//!     ("partition_parameter_xml", "<marshal><dictionary id=\"i2\"><string>n</string><int>3</int></dictionary></marshal>"),
//! ].map(|(k, v)| (k.to_owned(), v.to_owned())).into();
//! let req = RequestForm::from_form(&form)?;            // typed; errors name the field (→ 400)
//! let auth = SlapPartitionAuth::parse("X-SlapPartition computer_id=COMP, computer_partition_id=slappart9");
//! let stored = req.parameters_instance_xml()?;         // what slapproxy stores: dict2xml(kw)
//! let body = SoftwareInstanceDoc::for_partition(&RequestedPartition {
//!     computer_id: "COMP".into(), partition_id: "slappart0".into(),
//!     software_release_url: req.software_release.clone(), software_type: req.software_type.clone(),
//!     parameters: xml2dict(&stored)?, timestamp: "1795312642.4379225".into(),
//!     connection: ParamDict::new(), connection_xml: None,
//!     requested_state: req.state.map_or("started", RequestedState::as_str).into(),
//!     ip_list: vec![("slaptap0".into(), "10.0.0.10".into())],
//! }).encode()?;
//! assert!(body.contains("<string>n</string><string>3</string>") && auth.is_some());
//!
//! // GET /getFullComputerInformation?computer_id=COMP
//! let busy = BusyPartition {
//!     requested_state: "started".into(),
//!     parameters: PartitionParameters {
//!         instance: xml2dict(&stored)?, ip_list: vec![("slaptap0".into(), "10.0.0.10".into())],
//!         software_type: "default".into(), instance_title: "myinstance".into(),
//!         root_instance_title: "myinstance".into(), software_release_url: req.software_release.clone(),
//!         timestamp: Some("1795312642.4379225".into()), ..Default::default()
//!     },
//!     connection: ParamDict::new(),
//! };
//! let body = ComputerDoc {
//!     computer_id: "COMP".into(),
//!     software_release_list: vec![SoftwareReleaseDoc::supplied(&req.software_release, "COMP", "available")],
//!     partition_list: vec![ComputerPartitionDoc::busy("COMP", "slappart0", &busy),
//!                          ComputerPartitionDoc::free("COMP", "slappart1")],
//!     extra: BTreeMap::new(),
//! }.encode()?;
//! assert_eq!(ComputerDoc::from_value(&loads(&body)?)?.partition_list.len(), 2);
//! # Ok(()) }
//! ```

pub mod error;
pub mod forms;
pub mod instance_xml;
pub mod journal;
pub mod marshal;
pub mod objects;
pub mod pyrepr;
pub mod value;
mod xmltext;

pub use error::{EncodeError, FormError, InstanceXmlError, MarshalError, ShapeError};
pub use forms::{
    ComputerConfiguration, ConnectionForm, FormFields, PartitionRef, RequestForm, RequestedState,
    SlapPartitionAuth, SoftwareReleaseForm, SupplyForm, SupplyState,
};
pub use instance_xml::{
    ParamDict, dict2xml, dict2xml_json, dict2xml_params, dict2xml_value, xml2dict,
};
pub use journal::{
    Journal, JournalError, JournalWriter, Movement, Transaction, civil_from_days, journal_date,
    journal_date_ms, journal_partition, journal_user, parse_journal,
};
pub use marshal::{DecodeLimits, dumps, loads, loads_with_limits};
pub use objects::{
    BusyPartition, ComputerDoc, ComputerPartitionDoc, PartitionParameters, RequestedPartition,
    RequestedShared, SoftwareInstanceDoc, SoftwareReleaseDoc, slave_instance_entry,
};
pub use value::{Object, PyLong, SLAP_MODULE, SlapClass, Value};
