//! SLAP form parsing (`slapos_proto::slap::forms`), fed the way master-lite feeds it: the body
//! of a classic SLAP POST, `application/x-www-form-urlencoded`, parsed with `form_urlencoded`.
//!
//! Properties, for every input:
//! * no parser panics (every form type, `related_instance_list`, the `X-SlapPartition` header);
//! * a form that parses writes back (`to_form`) to a form that parses to the same thing, and
//!   writing that again gives the same fields (the client's encoding is a fixed point);
//! * the instance XML the master stores for a parsed request or connection (`dict2xml`) reads
//!   back (`xml2dict`) with the same keys;
//! * a usage journal (`useComputer`'s `use_string`, `parse_journal`) never panics, and what it
//!   reads holds only finite quantities, at most `MAX_MOVEMENTS` of them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slapos_proto::slap::{
    ComputerConfiguration, ConnectionForm, PartitionRef, RequestForm, SlapPartitionAuth,
    SoftwareReleaseForm, SupplyForm, forms::related_instance_list, journal, parse_journal,
    xml2dict,
};

type Fields = Vec<(String, String)>;

fuzz_target!(|data: &[u8]| {
    let form: Fields = form_urlencoded::parse(data).into_owned().collect();
    if let Ok(r) = RequestForm::from_form(&form) {
        request(&r);
    }
    if let Ok(c) = ConnectionForm::from_form(&form) {
        connection(&c);
    }
    let _ = SupplyForm::from_form(&form);
    let _ = SoftwareReleaseForm::from_form(&form);
    let _ = ComputerConfiguration::from_form(&form);
    let _ = PartitionRef::from_form(&form);
    let _ = PartitionRef::from_register_query(&form);
    let _ = related_instance_list(&form);
    if let Some((_, xml)) = form.iter().find(|(k, _)| k == "use_string")
        && let Ok(j) = parse_journal(xml)
    {
        let movements = j.transactions.iter().flat_map(|t| &t.movements);
        assert!(movements.clone().count() <= journal::MAX_MOVEMENTS);
        assert!(movements.clone().all(|m| m.quantity.is_finite()));
        for t in &j.transactions {
            let _ = slapos_proto::slap::journal_date_ms(&t.start_date);
        }
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Some(auth) = SlapPartitionAuth::parse(text)
    {
        assert!(text.to_ascii_lowercase().contains("computer_id"));
        assert!(!auth.computer_id.contains(','));
    }
});

fn owned(fields: Vec<(&'static str, String)>) -> Fields {
    fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

fn request(r: &RequestForm) {
    let Ok(fields) = r.to_form() else {
        return; // a decoded string XML cannot carry again (refused like lxml)
    };
    let fields = owned(fields);
    let again = RequestForm::from_form(&fields)
        .unwrap_or_else(|e| panic!("the client's own form is refused: {e}\n{fields:?}"));
    assert_eq!(
        owned(again.to_form().expect("re-encode")),
        fields,
        "to_form is not a fixed point"
    );
    assert_eq!(again.partition_reference, r.partition_reference);
    assert_eq!(again.state, r.state);
    assert_eq!(again.shared, r.shared);
    assert_eq!(again.requester, r.requester);
    if let Ok(xml) = r.parameters_instance_xml() {
        let stored = xml2dict(&xml).unwrap_or_else(|e| panic!("stored XML unreadable: {e}\n{xml}"));
        assert!(stored.keys().eq(r.parameters.keys()), "{xml}");
    }
}

fn connection(c: &ConnectionForm) {
    let Ok(fields) = c.to_form() else { return };
    let fields = owned(fields);
    let again = ConnectionForm::from_form(&fields)
        .unwrap_or_else(|e| panic!("the client's own form is refused: {e}\n{fields:?}"));
    assert_eq!(owned(again.to_form().expect("re-encode")), fields);
    assert_eq!(again.partition, c.partition);
    assert_eq!(again.slave_reference, c.slave_reference);
    if let Ok(xml) = c.connection_instance_xml() {
        let stored = xml2dict(&xml).unwrap_or_else(|e| panic!("stored XML unreadable: {e}\n{xml}"));
        assert!(stored.keys().eq(c.connection.keys()), "{xml}");
    }
}
