//! Configuration in layers: defaults, then files, then the environment, each merged over the
//! last as JSON before the result is deserialized once.

use std::collections::HashMap;

use serde_json::{Map, Value};

/// Deep-merges `layer` into `base`: objects field by field, anything else replaced.
pub fn merge(base: &mut Value, layer: Value) {
    match (base, layer) {
        (Value::Object(b), Value::Object(l)) => {
            for (k, v) in l {
                match b.get_mut(&k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, l) => *b = l,
    }
}

/// The variables of `env` that start with `prefix`, as a layer:
/// `<PREFIX>DNS__TTL=10` becomes `{"dns": {"ttl": 10}}`. Values that parse as JSON other than a
/// string (numbers, booleans, arrays, objects, null) are taken as such, anything else as text.
pub fn env_layer(env: &HashMap<String, String>, prefix: &str) -> Value {
    let mut root = Map::new();
    for (key, raw) in env {
        let Some(rest) = key.strip_prefix(prefix) else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        let value = match serde_json::from_str::<Value>(raw) {
            Ok(Value::String(_)) | Err(_) => Value::String(raw.clone()),
            Ok(v) => v,
        };
        let (last, parents) = path.split_last().expect("split yields one part at least");
        let mut node = &mut root;
        for seg in parents {
            let entry = node
                .entry(seg.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            let Value::Object(m) = entry else {
                unreachable!("made an object just above")
            };
            node = m;
        }
        node.insert(last.clone(), value);
    }
    Value::Object(root)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_environment_nests_and_types_values() {
        let env: HashMap<String, String> = [
            ("X_DNS__TTL", "9"),
            ("X_DNS__LISTEN", r#"["127.0.0.1:5353"]"#),
            ("X_NAME", "web"),
            ("X_QUOTED", r#""kept as written""#),
            ("OTHER", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            env_layer(&env, "X_"),
            json!({"dns": {"ttl": 9, "listen": ["127.0.0.1:5353"]}, "name": "web",
                   "quoted": "\"kept as written\""})
        );
    }

    #[test]
    fn merge_goes_field_by_field_into_objects() {
        let mut base = json!({"a": {"b": 1, "c": 2}, "d": [1]});
        merge(&mut base, json!({"a": {"c": 3}, "d": [2, 3]}));
        assert_eq!(base, json!({"a": {"b": 1, "c": 3}, "d": [2, 3]}));
    }
}
