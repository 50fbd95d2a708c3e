//! Property tests of software URLs: the master takes any free text of the rule (as slapproxy
//! takes any URL string), a desired state naming one always decodes, and only the four
//! fetchable forms are ever fetchable; the install directory is always the hash.

use proptest::prelude::*;
use slapos_proto::{DesiredSoftware, SoftwareUrl, SupplyState, is_fetchable_url};

/// The rule, written out independently of `ids.rs`.
fn acceptable(s: &str) -> bool {
    !s.is_empty() && s.len() <= 2048 && !s.chars().any(char::is_control) && s.trim() == s
}

fn arb_url() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "(http://|https://|file://|/|ftp://|)[ -~é]{0,40}",
        "[a-z.]{1,30}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn any_text_of_the_rule_is_a_software_url_and_survives_the_wire(s in arb_url()) {
        match SoftwareUrl::parse(s.clone()) {
            Ok(u) => {
                prop_assert!(acceptable(&s), "{:?}", s);
                let h = u.hash();
                prop_assert_eq!(h.len(), 32);
                prop_assert!(h.bytes().all(|b| b.is_ascii_hexdigit()));
                let fetchable = ["http://", "https://", "file://", "/"]
                    .iter()
                    .any(|p| s.starts_with(p));
                prop_assert_eq!(u.is_fetchable(), fetchable);
                prop_assert_eq!(is_fetchable_url(&s), fetchable);
                let d = DesiredSoftware { url: u, state: SupplyState::Available };
                let wire = serde_json::to_string(&d).unwrap();
                let back: DesiredSoftware = serde_json::from_str(&wire).unwrap();
                prop_assert_eq!(back, d);
            }
            Err(e) => {
                prop_assert!(!acceptable(&s), "{:?}: {}", s, e);
                prop_assert_eq!(e.kind, "software url");
                let refused = serde_json::from_value::<SoftwareUrl>(serde_json::Value::String(s));
                prop_assert!(refused.is_err());
            }
        }
    }
}
