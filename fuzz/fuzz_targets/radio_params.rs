//! Radio parameters (`radio::validate::validate_json`, `radio::params`): the JSON a requester
//! sends to a base-station partition, read and checked against the 3GPP tables.
//!
//! Properties, for every input:
//! * reading and validating never panic (any JSON, any text);
//! * validation is a function of the document: the same text validates to the same result,
//!   and the parsed parameters validate (`validate`) as the text did;
//! * a resolved plan survives JSON (`decode(encode(plan)) == plan`) and renders the srsRAN
//!   configuration without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use radio::plan::Plan;
use radio::srsran::{SrsranOptions, render};
use radio::validate::{RequestError, validate, validate_json};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let result = validate_json(text);
    assert_eq!(result, validate_json(text), "not deterministic");
    let parsed = radio::params::parse(text);
    match (&result, &parsed) {
        (Err(RequestError::Params(_)), _) => {}
        (_, Err(e)) => panic!("validate_json read it, params::parse did not: {e}"),
        (Ok(v), Ok(p)) => {
            let again = validate(p).expect("the same parameters validate");
            assert_eq!(again.plan, v.plan);
        }
        (Err(RequestError::Invalid(_)), Ok(p)) => {
            assert!(validate(p).is_err(), "valid once parsed, invalid as text");
        }
    }
    if let Ok(v) = result {
        let json = serde_json::to_string(&v.plan).expect("a plan serialises");
        let back: Plan = serde_json::from_str(&json).expect("a plan deserialises");
        assert_eq!(back, v.plan, "decode(encode(plan)) != plan");
        let _ = render(&v.plan, &SrsranOptions::default());
    }
});
