//! Property tests (encode → decode is the identity, up to Python's dictionary order) and bad
//! input: malformed XML, wrong classes, hostile nesting — typed errors, never a panic.

mod common;

use common::strategies::{Kinds, arb_string, arb_value};
use proptest::prelude::*;
use slapos_proto::slap::*;

const ALL: Kinds = Kinds {
    sets: true,
    int_keys: true,
    objects: true,
};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn journal_dates_roundtrip_to_the_millisecond(ms in 0u64..253_402_300_800_000) {
        // Up to 9999-12-31 23:59:59.999, the last date the reader takes.
        let text = journal_date(ms);
        prop_assert_eq!(journal_date_ms(&text), Some(ms), "{}", text);
    }

    #[test]
    fn journal_writer_roundtrip(
        movements in prop::collection::vec(
            (arb_string(), arb_string(), any::<f64>().prop_filter("finite", |q| q.is_finite())),
            0..6,
        ),
    ) {
        let mut w = JournalWriter::new();
        w.transaction("t", "2026-01-01 00:00:00", "2026-01-01 00:00:01.5", "r").unwrap();
        for (resource, reference, q) in &movements {
            w.movement(resource, "m", reference, *q).unwrap();
        }
        let j = parse_journal(&w.finish()).unwrap();
        let got: Vec<(String, String, f64)> = j.transactions[0]
            .movements
            .iter()
            .map(|m| (m.resource.clone(), m.reference.clone(), m.quantity))
            .collect();
        // The reader trims text, as SlapOS's readers do.
        let want: Vec<(String, String, f64)> = movements
            .iter()
            .map(|(a, b, q)| (a.trim().to_owned(), b.trim().to_owned(), *q))
            .collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn marshal_roundtrip_is_identity(v in arb_value(ALL)) {
        let xml = dumps(&v).unwrap();
        let back = loads(&xml).unwrap();
        prop_assert_eq!(&back, &v.canonical());
        prop_assert_eq!(&dumps(&back).unwrap(), &xml);
        // What the encoder writes (no references) expands to at most its length plus a cell
        // per value: the byte bound of docs/slap-codec.md.
        let tight = DecodeLimits {
            max_bytes: xml.len() + marshal::VALUE_BYTES * back.node_count(),
            ..DecodeLimits::default()
        };
        prop_assert_eq!(loads_with_limits(&xml, tight), Ok(back));
    }

    #[test]
    fn instance_xml_roundtrip_is_identity(
        d in prop::collection::btree_map(
            arb_string(),
            prop::option::of(arb_string().prop_filter("non-empty", |s| !s.is_empty())),
            0..8,
        )
    ) {
        let xml = dict2xml_params(&d).unwrap();
        prop_assert_eq!(xml2dict(&xml).unwrap(), d);
    }

    #[test]
    fn arbitrary_text_never_panics(s in ".{0,200}") {
        let _ = loads(&s);
        let _ = xml2dict(&s);
    }

    #[test]
    fn mutated_documents_never_panic(
        v in arb_value(ALL),
        cut in any::<prop::sample::Index>(),
        len in 0usize..12,
        insert in "[<>/&;#a-z\"= ]{0,6}",
    ) {
        let xml = dumps(&v).unwrap();
        let start = cut.index(xml.len() + 1);
        let mut chars: Vec<char> = xml.chars().collect();
        let start = start.min(chars.len());
        let end = (start + len).min(chars.len());
        chars.splice(start..end, insert.chars());
        let mutated: String = chars.into_iter().collect();
        if let Ok(decoded) = loads(&mutated) {
            // Whatever decodes can be written again.
            prop_assert!(dumps(&decoded).is_ok());
        }
        let form = vec![
            ("software_release".to_owned(), "u".to_owned()),
            ("software_type".to_owned(), "t".to_owned()),
            ("partition_reference".to_owned(), "r".to_owned()),
            ("state".to_owned(), mutated.clone()),
            ("partition_parameter_xml".to_owned(), mutated.clone()),
            ("xml".to_owned(), mutated),
        ];
        let _ = RequestForm::from_form(&form);
        let _ = ComputerConfiguration::from_form(&form);
    }
}

#[test]
fn malformed_xml_is_a_typed_error() {
    for bad in [
        "<marshal><int>1</int>",
        "<marshal><int>1</long></marshal>",
        "<marshal><string>a</string></marshal><marshal/>",
        "<marshal><string>&bogus;</string></marshal>",
        "<marshal><string>&#0;</string></marshal>",
        "<marshal><string>\u{1}</string></marshal>",
        "<marshal",
    ] {
        match loads(bad) {
            Err(MarshalError::Xml { .. }) | Err(MarshalError::UnexpectedElement { .. }) => {}
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    assert_eq!(
        loads("<!DOCTYPE x [<!ENTITY a \"b\">]><marshal/>"),
        Err(MarshalError::Doctype)
    );
    assert_eq!(
        loads(""),
        Err(MarshalError::NotMarshal {
            found: "nothing".into()
        })
    );
    assert_eq!(
        loads("<int>1</int>"),
        Err(MarshalError::NotMarshal {
            found: "<int>".into()
        })
    );
    assert_eq!(
        loads("<marshal/>"),
        Err(MarshalError::RootCount { count: 0 })
    );
    assert_eq!(
        loads("<marshal><none/><none/></marshal>"),
        Err(MarshalError::RootCount { count: 2 })
    );
}

#[test]
fn wrong_classes_and_shapes_are_typed_errors() {
    let obj = |module: &str, class: &str, body: &str| {
        format!(
            "<marshal><object id=\"i2\" module=\"{module}\" class=\"{class}\">{body}</object></marshal>"
        )
    };
    assert_eq!(
        loads(&obj("os", "system", "<tuple/><dictionary id=\"i3\"/>")),
        Err(MarshalError::RefusedClass {
            module: "os".into(),
            class: "system".into()
        })
    );
    assert!(matches!(
        loads(&obj("slapos.slap.slap", "slap", "<tuple/><dictionary/>")),
        Err(MarshalError::RefusedClass { .. })
    ));
    assert_eq!(
        loads(
            "<marshal><object module=\"slapos.slap.slap\"><tuple/><dictionary/></object></marshal>"
        ),
        Err(MarshalError::MissingAttribute {
            element: "object",
            attribute: "class"
        })
    );
    for (body, class) in [
        // Computer(*()) raises TypeError in Python.
        ("<tuple/><dictionary/>", "Computer"),
        // SoftwareInstance(**kw) takes no positional initargs.
        (
            "<tuple><string>x</string></tuple><dictionary/>",
            "SoftwareInstance",
        ),
        // Python 3.11's <none/> state for an empty __dict__: its own loads fails on it too.
        ("<tuple/><none/>", "SoftwareInstance"),
        ("<list/><dictionary/>", "SoftwareInstance"),
        (
            "<tuple/><dictionary><int>1</int><int>2</int></dictionary>",
            "SoftwareInstance",
        ),
        ("<tuple/>", "SoftwareInstance"),
    ] {
        assert!(
            matches!(
                loads(&obj("slapos.slap.slap", class, body)),
                Err(MarshalError::ObjectShape { .. })
            ),
            "{class} {body}"
        );
    }
    // A decoded document of the wrong class for a typed reader.
    let si = loads(&obj(
        "slapos.slap.slap",
        "SoftwareInstance",
        "<tuple/><dictionary><string>a</string><none/></dictionary>",
    ))
    .unwrap();
    let err = ComputerDoc::from_value(&si).unwrap_err();
    assert_eq!(
        (err.expected, err.found.as_str()),
        ("Computer", "SoftwareInstance")
    );
}

#[test]
fn scalar_and_container_errors_name_the_element() {
    assert!(matches!(
        loads("<marshal><int>4x</int></marshal>"),
        Err(MarshalError::BadScalar { element: "int", .. })
    ));
    assert!(matches!(
        loads("<marshal><float>one</float></marshal>"),
        Err(MarshalError::BadScalar {
            element: "float",
            ..
        })
    ));
    assert!(matches!(
        loads("<marshal><bool>yes</bool></marshal>"),
        Err(MarshalError::BadScalar {
            element: "bool",
            ..
        })
    ));
    assert_eq!(
        loads("<marshal><dictionary><string>a</string></dictionary></marshal>"),
        Err(MarshalError::OddDictionary { count: 1 })
    );
    assert_eq!(
        loads("<marshal><dictionary><list/><int>1</int></dictionary></marshal>"),
        Err(MarshalError::UnhashableKey { type_name: "list" })
    );
    assert_eq!(
        loads("<marshal><set><dictionary/></set></marshal>"),
        Err(MarshalError::UnhashableKey { type_name: "dict" })
    );
    assert_eq!(
        loads("<marshal><bogus/></marshal>"),
        Err(MarshalError::UnknownElement {
            name: "bogus".into()
        })
    );
    assert_eq!(
        loads("<marshal><complex>1 2</complex></marshal>"),
        Err(MarshalError::Unsupported {
            name: "complex".into()
        })
    );
    assert!(matches!(
        loads("<marshal><string>a<int>1</int></string></marshal>"),
        Err(MarshalError::UnexpectedElement { .. })
    ));
    assert!(matches!(
        loads("<marshal><list>stray</list></marshal>"),
        Err(MarshalError::UnexpectedText { .. })
    ));
}

#[test]
fn hostile_nesting_is_bounded_without_stack_overflow() {
    let deep = format!(
        "<marshal>{}{}</marshal>",
        "<list>".repeat(100_000),
        "</list>".repeat(100_000)
    );
    assert_eq!(
        loads(&deep),
        Err(MarshalError::TooDeep {
            limit: marshal::MAX_DEPTH
        })
    );
    // One container over the limit is refused; a scalar leaf is not a level.
    let nest = |open: &str, close: &str, n: usize, inner: &str| {
        format!(
            "<marshal>{}{inner}{}</marshal>",
            open.repeat(n),
            close.repeat(n)
        )
    };
    let over = nest("<list>", "</list>", marshal::MAX_DEPTH + 1, "");
    assert_eq!(
        loads(&over),
        Err(MarshalError::TooDeep {
            limit: marshal::MAX_DEPTH
        })
    );
    assert!(
        loads(&nest(
            "<list>",
            "</list>",
            marshal::MAX_DEPTH,
            "<int>1</int>"
        ))
        .is_ok()
    );
    // At the limit it decodes and re-encodes.
    let ok = format!(
        "<marshal>{}{}</marshal>",
        "<tuple>".repeat(marshal::MAX_DEPTH),
        "</tuple>".repeat(marshal::MAX_DEPTH)
    );
    let v = loads(&ok).unwrap();
    let d = marshal::MAX_DEPTH - 1;
    assert_eq!(
        dumps(&v).unwrap(),
        format!(
            "<marshal>{}<tuple/>{}</marshal>",
            "<tuple>".repeat(d),
            "</tuple>".repeat(d)
        )
    );
    let limits = DecodeLimits {
        max_depth: 8,
        max_values: 10,
        ..DecodeLimits::default()
    };
    assert!(matches!(
        loads_with_limits("<marshal><list>".to_owned().add_items(11).as_str(), limits),
        Err(MarshalError::TooLarge { limit: 10 })
    ));
}

trait AddItems {
    fn add_items(self, n: usize) -> String;
}

impl AddItems for String {
    fn add_items(mut self, n: usize) -> String {
        self.push_str(&"<none/>".repeat(n));
        self.push_str("</list></marshal>");
        self
    }
}

#[test]
fn bad_instance_xml_is_a_typed_error() {
    assert!(matches!(
        xml2dict("<instance><parameter id=\"a\">"),
        Err(InstanceXmlError::Xml { .. })
    ));
    assert!(matches!(xml2dict("   "), Err(InstanceXmlError::NoRoot)));
    assert!(matches!(
        xml2dict("<a/><b/>"),
        Err(InstanceXmlError::Xml { .. })
    ));
    assert_eq!(xml2dict("<!DOCTYPE a><a/>"), Err(InstanceXmlError::Doctype));
    assert!(matches!(
        dict2xml([("k", "a\u{0}b")]),
        Err(EncodeError::InvalidChar {
            what: "parameter value",
            code: 0,
            ..
        })
    ));
    assert_eq!(
        dict2xml_value(&Value::Dict(vec![(Value::Int(1), Value::None)])),
        Err(EncodeError::NonStringKey {
            key: "1".into(),
            type_name: "int"
        })
    );
    assert_eq!(
        dict2xml_value(&Value::None),
        Err(EncodeError::NotADict { type_name: "None" })
    );
    assert!(matches!(
        dumps(&Value::str("bell\u{7}")),
        Err(EncodeError::InvalidChar {
            what: "string",
            code: 7,
            ..
        })
    ));
}

#[test]
fn missing_form_fields_are_named() {
    let empty: Vec<(String, String)> = Vec::new();
    assert_eq!(
        ConnectionForm::from_form(&empty),
        Err(FormError::MissingField {
            field: "computer_id"
        })
    );
    assert_eq!(
        ComputerConfiguration::from_form(&empty),
        Err(FormError::MissingField { field: "xml" })
    );
    assert_eq!(
        SupplyForm::from_form(&empty),
        Err(FormError::MissingField { field: "state" })
    );
    let bad_xml = vec![("xml".to_owned(), "<marshal><list/></marshal>".to_owned())];
    match ComputerConfiguration::from_form(&bad_xml) {
        Err(FormError::BadShape {
            field: "xml",
            source,
        }) => assert_eq!(source.path, "computer"),
        other => panic!("{other:?}"),
    }
    let no_addr = vec![(
        "xml".to_owned(),
        dumps(&Value::dict([
            ("reference", Value::str("c")),
            (
                "partition_list",
                Value::List(vec![Value::dict([
                    ("reference", Value::str("p")),
                    (
                        "address_list",
                        Value::List(vec![Value::dict([("netmask", "m")])]),
                    ),
                ])]),
            ),
        ]))
        .unwrap(),
    )];
    match ComputerConfiguration::from_form(&no_addr) {
        Err(FormError::BadShape { source, .. }) => {
            assert_eq!(source.path, "partition_list[0].address_list[0].addr")
        }
        other => panic!("{other:?}"),
    }
    let supply = vec![
        ("url".to_owned(), "u".to_owned()),
        ("computer_id".to_owned(), "c".to_owned()),
        ("state".to_owned(), "started".to_owned()),
    ];
    assert!(matches!(
        SupplyForm::from_form(&supply),
        Err(FormError::BadValue { field: "state", .. })
    ));
}
