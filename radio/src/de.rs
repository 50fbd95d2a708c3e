//! Lenient deserialisers for SlapOS parameters.
//!
//! `slapos request` sends instance parameters either as XML strings (every value a string) or,
//! for simpleran, as one JSON document under the key `_` in which identifiers are still often
//! strings (`"enb_id": "0x17"`, `"tac": "0x101"`, `"bandwidth": "20 MHz"`). These functions
//! accept a JSON number or a string holding one, so the typed model reads what simpleran reads.
//!
//! Integers: a JSON integer, a decimal string (`"204"`) or a hexadecimal string (`"0x1A"`).
//! Floats: a JSON number or a decimal string, optionally followed by a unit (`"1.4 MHz"`,
//! `"30 kHz"`): the unit is checked against the expected one and dropped.
//! Booleans: `true`/`false` or the strings `"true"`/`"false"` (simpleran's own schema has
//! `"default": "true"`).

use serde::de::{self, Deserializer, Visitor};
use std::fmt;
use std::marker::PhantomData;

/// Parses an integer written as decimal or `0x` hexadecimal, with surrounding spaces.
pub fn parse_int(s: &str) -> Option<i128> {
    let t = s.trim();
    let (neg, t) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    let v = if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        if hex.is_empty() || hex.len() > 30 {
            return None;
        }
        i128::from_str_radix(hex, 16).ok()?
    } else {
        if t.is_empty() || t.len() > 30 || !t.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        t.parse::<i128>().ok()?
    };
    Some(if neg { -v } else { v })
}

/// Parses a decimal number with an optional unit suffix; `unit` is compared case-insensitively.
pub fn parse_float_with_unit(s: &str, unit: Option<&str>) -> Option<f64> {
    let t = s.trim();
    let end = t
        .find(|c: char| {
            !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+' || c == 'e' || c == 'E')
        })
        .unwrap_or(t.len());
    let (num, rest) = t.split_at(end);
    let rest = rest.trim();
    if !rest.is_empty() {
        match unit {
            Some(u) if rest.eq_ignore_ascii_case(u) => {}
            _ => return None,
        }
    }
    let v: f64 = num.parse().ok()?;
    v.is_finite().then_some(v)
}

struct IntVisitor<T>(PhantomData<T>);

impl<'de, T: IntTarget> Visitor<'de> for IntVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "an integer in range {} (a JSON integer, a decimal string or a 0x-hex string)",
            range_of::<T>()
        )
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        T::try_from(i128::from(v))
            .map_err(|_| E::custom(format!("{v} is out of range {}", range_of::<T>())))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        T::try_from(i128::from(v))
            .map_err(|_| E::custom(format!("{v} is out of range {}", range_of::<T>())))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        if v.fract() == 0.0 && v.abs() < 1e30 {
            // The check above makes the cast exact.
            self.visit_i128_exact(v as i128)
        } else {
            Err(E::custom(format!("expected an integer, got {v}")))
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        match parse_int(v) {
            Some(n) => self.visit_i128_exact(n),
            None => Err(E::custom(format!(
                "expected an integer (decimal or 0x-hex), got the string {v:?}"
            ))),
        }
    }
}

impl<T: IntTarget> IntVisitor<T> {
    fn visit_i128_exact<E: de::Error>(self, v: i128) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::custom(format!("{v} is out of range {}", range_of::<T>())))
    }
}

/// Integer types a lenient field can hold, with their range for messages.
pub trait IntTarget: TryFrom<i128> {
    /// Smallest value.
    const MIN: i128;
    /// Largest value.
    const MAX: i128;
}

macro_rules! int_target {
    ($($t:ty),*) => {$(
        impl IntTarget for $t {
            const MIN: i128 = <$t>::MIN as i128;
            const MAX: i128 = <$t>::MAX as i128;
        }
    )*};
}
int_target!(u8, u16, u32, u64, i32, i64);

fn range_of<T: IntTarget>() -> String {
    format!("{}..={}", T::MIN, T::MAX)
}

/// An integer given as a number or a (hex) string.
pub fn int<'de, D: Deserializer<'de>, T: IntTarget>(d: D) -> Result<T, D::Error> {
    d.deserialize_any(IntVisitor(PhantomData))
}

/// Like [`int`], `null` reads as `None`.
pub fn opt_int<'de, D: Deserializer<'de>, T: IntTarget>(d: D) -> Result<Option<T>, D::Error> {
    d.deserialize_option(OptVisitor(IntVisitor(PhantomData)))
}

struct OptVisitor<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for OptVisitor<V> {
    type Value = Option<V::Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.expecting(f)?;
        f.write_str(" or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self.0).map(Some)
    }
}

struct FloatVisitor {
    unit: Option<&'static str>,
}

impl<'de> Visitor<'de> for FloatVisitor {
    type Value = f64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.unit {
            Some(u) => write!(
                f,
                "a number or a numeric string (optionally followed by {u:?})"
            ),
            None => f.write_str("a number or a numeric string"),
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        Ok(v as f64)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        Ok(v as f64)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        Ok(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
        parse_float_with_unit(v, self.unit).ok_or_else(|| {
            E::custom(match self.unit {
                Some(u) => format!("expected a number (optionally in {u}), got the string {v:?}"),
                None => format!("expected a number, got the string {v:?}"),
            })
        })
    }
}

/// A number or numeric string, `null` reads as `None`.
pub fn opt_float<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    d.deserialize_option(OptVisitor(FloatVisitor { unit: None }))
}

/// A number of MHz: `20`, `"20"`, `"1.4 MHz"`.
pub fn opt_mhz<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    d.deserialize_option(OptVisitor(FloatVisitor { unit: Some("MHz") }))
}

/// A number of kHz: `30`, `"30"`, `"30 kHz"`.
pub fn opt_khz<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    d.deserialize_option(OptVisitor(FloatVisitor { unit: Some("kHz") }))
}

struct BoolVisitor;

impl<'de> Visitor<'de> for BoolVisitor {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("true, false or the string \"true\"/\"false\"")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        Ok(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        match v.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" | "" => Ok(false),
            _ => Err(E::custom(format!(
                "expected a boolean, got the string {v:?}"
            ))),
        }
    }
}

/// A boolean or boolean string, `null` reads as `None`.
pub fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    d.deserialize_option(OptVisitor(BoolVisitor))
}

struct IntListVisitor;

impl<'de> Visitor<'de> for IntListVisitor {
    type Value = Vec<u32>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of integers, one integer, or a comma-separated string")
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u32>, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element::<LenientU32>()? {
            out.push(v.0);
        }
        Ok(out)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Vec<u32>, E> {
        IntVisitor::<u32>(PhantomData).visit_u64(v).map(|v| vec![v])
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Vec<u32>, E> {
        IntVisitor::<u32>(PhantomData).visit_i64(v).map(|v| vec![v])
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u32>, E> {
        v.split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| IntVisitor::<u32>(PhantomData).visit_str(s))
            .collect()
    }
}

struct LenientU32(u32);

impl<'de> serde::Deserialize<'de> for LenientU32 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        int(d).map(LenientU32)
    }
}

/// A list of integers (`[0, 1]`, `0`, `"0,1"`); `null` reads as empty.
pub fn int_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
    d.deserialize_option(OptVisitor(IntListVisitor))
        .map(Option::unwrap_or_default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    struct T {
        #[serde(default, deserialize_with = "opt_int")]
        a: Option<u16>,
        #[serde(default, deserialize_with = "opt_mhz")]
        bw: Option<f64>,
        #[serde(default, deserialize_with = "opt_bool")]
        b: Option<bool>,
        #[serde(default, deserialize_with = "int_list")]
        l: Vec<u32>,
    }

    fn t(s: &str) -> Result<T, serde_json::Error> {
        serde_json::from_str(s)
    }

    #[test]
    fn integers_from_numbers_decimal_and_hex_strings() {
        assert_eq!(t(r#"{"a": 17}"#).unwrap().a, Some(17));
        assert_eq!(t(r#"{"a": "17"}"#).unwrap().a, Some(17));
        assert_eq!(t(r#"{"a": "0x11"}"#).unwrap().a, Some(17));
        assert_eq!(t(r#"{"a": " 0X11 "}"#).unwrap().a, Some(17));
        assert_eq!(t(r#"{"a": 17.0}"#).unwrap().a, Some(17));
        assert_eq!(t(r#"{"a": null}"#).unwrap().a, None);
        assert_eq!(t(r#"{}"#).unwrap().a, None);
    }

    #[test]
    fn integers_refuse_garbage_and_out_of_range() {
        let e = t(r#"{"a": "abc"}"#).unwrap_err().to_string();
        assert!(e.contains("\"abc\""), "{e}");
        let e = t(r#"{"a": 70000}"#).unwrap_err().to_string();
        assert!(e.contains("70000 is out of range 0..=65535"), "{e}");
        assert!(t(r#"{"a": -1}"#).is_err());
        assert!(t(r#"{"a": 1.5}"#).is_err());
        assert!(t(r#"{"a": "0x"}"#).is_err());
        assert!(t(r#"{"a": true}"#).is_err());
    }

    #[test]
    fn floats_with_units() {
        assert_eq!(t(r#"{"bw": 1.4}"#).unwrap().bw, Some(1.4));
        assert_eq!(t(r#"{"bw": "1.4 MHz"}"#).unwrap().bw, Some(1.4));
        assert_eq!(t(r#"{"bw": "20MHz"}"#).unwrap().bw, Some(20.0));
        assert_eq!(t(r#"{"bw": "20"}"#).unwrap().bw, Some(20.0));
        assert!(t(r#"{"bw": "20 kHz"}"#).is_err());
        assert!(t(r#"{"bw": "wide"}"#).is_err());
        assert!(t(r#"{"bw": "NaN"}"#).is_err());
    }

    #[test]
    fn booleans_and_lists() {
        assert_eq!(t(r#"{"b": "true"}"#).unwrap().b, Some(true));
        assert_eq!(t(r#"{"b": false}"#).unwrap().b, Some(false));
        assert!(t(r#"{"b": "maybe"}"#).is_err());
        assert_eq!(t(r#"{"l": [0, "1", "0x2"]}"#).unwrap().l, vec![0, 1, 2]);
        assert_eq!(t(r#"{"l": "0, 3"}"#).unwrap().l, vec![0, 3]);
        assert_eq!(t(r#"{"l": 4}"#).unwrap().l, vec![4]);
        assert_eq!(t(r#"{"l": null}"#).unwrap().l, Vec::<u32>::new());
    }
}
