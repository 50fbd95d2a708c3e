//! Parameter models: request-time checks a software release opts into.
//!
//! A release names a model in its manifest (`[release] parameter_model = "radio-enb"`); the node
//! reports the name with the release's `available` install state and the store keeps it on the
//! release row. From then on every request of the release (native `/v1`, classic SLAP, JSON-RPC:
//! all go through [`super::Store::request_with`]) is checked against the model before anything
//! is allocated or changed, so a bad cell is refused to the requester with the field named
//! instead of surfacing later as a partition error on the node.
//!
//! The master only maps a *name* to code it was built with: it never fetches nor runs release
//! material (trust boundary in ARCHITECTURE.md). A model name it does not know is skipped with a
//! warning (an older master than the release); the node's own checks still run.

use slapos_proto::Params;

use super::error::StoreError;

/// The models this master knows.
pub const KNOWN: &[&str] = &["radio-enb"];

/// Checks `params` of a request of `url` against `model`.
pub fn check(model: &str, url: &str, params: &Params) -> Result<(), StoreError> {
    match model {
        "radio-enb" => {
            let doc = serde_json::Value::Object(params.clone()).to_string();
            radio::validate::validate_json(&doc).map(drop).map_err(|e| {
                StoreError::Invalid(format!(
                    "parameters refused by the `{model}` model of release {url}: {e}"
                ))
            })
        }
        other => {
            tracing::warn!(
                model = other,
                software = url,
                "unknown parameter model (known: {}): request not checked",
                KNOWN.join(", ")
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(v: serde_json::Value) -> Params {
        match v {
            serde_json::Value::Object(m) => m,
            _ => unreachable!("test input is an object"),
        }
    }

    const CELL: &str = r#"{"enb_id": "0x1A2D0", "plmn_list": {"p1": {"plmn": "00101"}},
        "mme_list": {"m1": {"mme_addr": "127.0.1.100"}},
        "cell_list": {"cell1": {"cell_type": "lte", "rf_mode": "fdd", "dl_earfcn": 3350,
        "bandwidth": "20 MHz", "pci": 1, "tac": "0x0001", "cell_id": "0x01",
        "ru": {"ru_type": "sdr", "ru_link_type": "sdr", "sdr_dev_list": [0], "n_antenna_dl": 2,
        "n_antenna_ul": 2, "tx_gain": 80, "rx_gain": 40}}}}"#;

    #[test]
    fn radio_model_refuses_a_bad_earfcn_naming_the_field() {
        let good: serde_json::Value = serde_json::from_str(CELL).unwrap();
        check("radio-enb", "u", &params(good.clone())).unwrap();
        // simpleran's serialised form `{"_": "<json>"}` is read the same way.
        let wrapped = serde_json::json!({ "_": good.to_string() });
        check("radio-enb", "u", &params(wrapped)).unwrap();

        let mut bad = good;
        bad["cell_list"]["cell1"]["dl_earfcn"] = 99999.into();
        let e = check("radio-enb", "http://sr/enb", &params(bad)).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, StoreError::Invalid(_)), "{e:?}");
        assert!(msg.contains("cell_list.cell1.dl_earfcn"), "{msg}");
        assert!(
            msg.contains("radio-enb") && msg.contains("http://sr/enb"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_models_do_not_block_requests() {
        check("no-such-model", "u", &Params::new()).unwrap();
    }
}
