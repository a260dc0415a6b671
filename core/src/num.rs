//! Numbers as Marathon prints them: a double with no fractional part is written as an integer
//! (`"mem":128`, not `128.0`), as Jackson does for the values Marathon stores.

use serde::Serializer;

/// Serializes an `f64` the way Marathon's JSON shows it.
pub fn ser_f64<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        s.serialize_i64(*v as i64)
    } else {
        s.serialize_f64(*v)
    }
}

/// A JSON number for an `f64`, with the same rule.
pub fn json_f64(v: f64) -> serde_json::Value {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        serde_json::Value::from(v as i64)
    } else {
        serde_json::Value::from(v)
    }
}
