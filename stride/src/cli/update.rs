//! `stride app update <id> key=value...`: turns assignments into the body of a partial update.
//!
//! A partial update replaces whole top-level fields, so `env.FOO=bar` must send the app's whole
//! `env` with `FOO` changed, not `{"env":{"FOO":"bar"}}`, which would drop every other variable.
//! The current definition is therefore the starting point, and also tells each value's type:
//! `instances=3` stays a number, `cmd=3` a string.

use serde_json::{Map, Value};

/// Top-level fields whose value is a string whatever it looks like.
const STRING_FIELDS: &[&str] = &[
    "cmd",
    "user",
    "role",
    "executor",
    "version",
    "killSelection",
];

/// Objects whose values are strings (`env.PORT=80` is `"80"`).
const STRING_MAPS: &[&str] = &["env", "labels"];

/// Whether the arguments of `app update` are assignments rather than a file.
pub fn are_assignments(args: &[String]) -> bool {
    !(args.len() == 1 && (args[0] == "-" || !args[0].contains('=')))
}

/// Builds the partial update from `current` (the app as `GET /v2/apps/{id}` shows it) and
/// `key=value` assignments; `a.b=v` changes one key inside the object `a`.
pub fn patch(current: &Value, assignments: &[String]) -> Result<Value, String> {
    let mut out = Map::new();
    for a in assignments {
        let (key, raw) = a
            .split_once('=')
            .ok_or_else(|| format!("{a:?}: expected key=value (or one file, or -)"))?;
        let path: Vec<&str> = key.split('.').collect();
        if path.iter().any(|p| p.is_empty()) {
            return Err(format!("{a:?}: the key is empty"));
        }
        let top = path[0];
        if path.len() == 1 {
            let value = typed(top, &current[top], raw, STRING_FIELDS.contains(&top))?;
            out.insert(top.to_string(), value);
            continue;
        }
        let base = out
            .get(top)
            .cloned()
            .unwrap_or_else(|| current.get(top).cloned().unwrap_or(Value::Null));
        let mut root = if base.is_object() {
            base
        } else if base.is_null() {
            Value::Object(Map::new())
        } else {
            return Err(format!("{a:?}: {top} is not an object"));
        };
        let mut node = &mut root;
        for (depth, part) in path[1..path.len() - 1].iter().enumerate() {
            let map = node
                .as_object_mut()
                .ok_or_else(|| format!("{a:?}: {} is not an object", path[..=depth].join(".")))?;
            let next = map
                .entry(part.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if next.is_null() {
                *next = Value::Object(Map::new());
            }
            node = next;
        }
        let leaf = path[path.len() - 1];
        let map = node.as_object_mut().ok_or_else(|| {
            format!(
                "{a:?}: {} is not an object",
                path[..path.len() - 1].join(".")
            )
        })?;
        let existing = map.get(leaf).cloned().unwrap_or(Value::Null);
        let value = typed(key, &existing, raw, STRING_MAPS.contains(&top))?;
        map.insert(leaf.to_string(), value);
        out.insert(top.to_string(), root);
    }
    Ok(Value::Object(out))
}

/// `raw` as a JSON value of the same kind as `existing`; with no existing value, JSON if it
/// parses as JSON, a string otherwise.
fn typed(key: &str, existing: &Value, raw: &str, string: bool) -> Result<Value, String> {
    if string || existing.is_string() {
        return Ok(Value::String(raw.to_string()));
    }
    let parsed = serde_json::from_str::<Value>(raw).ok();
    match existing {
        Value::Number(_) => parsed
            .filter(Value::is_number)
            .ok_or_else(|| format!("{key}={raw}: {key} is a number")),
        Value::Bool(_) => parsed
            .filter(Value::is_boolean)
            .ok_or_else(|| format!("{key}={raw}: {key} is true or false")),
        _ => Ok(parsed.unwrap_or_else(|| Value::String(raw.to_string()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn current() -> Value {
        json!({
            "id": "/web",
            "cmd": "sleep 100",
            "instances": 1,
            "cpus": 0.1,
            "mem": 32,
            "env": {"A": "1", "B": "2"},
            "upgradeStrategy": {"minimumHealthCapacity": 1, "maximumOverCapacity": 1},
            "requirePorts": false,
        })
    }

    #[test]
    fn simple_fields_keep_their_type() {
        let p = patch(
            &current(),
            &args(&[
                "instances=3",
                "cmd=sleep 5",
                "cpus=0.5",
                "mem=64",
                "requirePorts=true",
            ]),
        );
        assert_eq!(
            p,
            Ok(
                json!({"instances": 3, "cmd": "sleep 5", "cpus": 0.5, "mem": 64, "requirePorts": true})
            )
        );
    }

    #[test]
    fn strings_stay_strings() {
        assert_eq!(
            patch(&current(), &args(&["cmd=100"])),
            Ok(json!({"cmd": "100"}))
        );
        assert_eq!(
            patch(&json!({"id": "/x", "args": ["a"]}), &args(&["cmd=42"])),
            Ok(json!({"cmd": "42"})),
            "cmd is a string even when the app has none"
        );
    }

    #[test]
    fn env_changes_keep_the_other_variables() {
        assert_eq!(
            patch(&current(), &args(&["env.FOO=bar", "env.A=9"])),
            Ok(json!({"env": {"A": "9", "B": "2", "FOO": "bar"}}))
        );
        assert_eq!(
            patch(&json!({"id": "/x"}), &args(&["labels.tier=1"])),
            Ok(json!({"labels": {"tier": "1"}}))
        );
    }

    #[test]
    fn nested_numbers() {
        assert_eq!(
            patch(
                &current(),
                &args(&["upgradeStrategy.minimumHealthCapacity=0.5"])
            ),
            Ok(
                json!({"upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 1}})
            )
        );
    }

    #[test]
    fn new_fields_take_json_or_a_string() {
        assert_eq!(
            patch(
                &current(),
                &args(&[
                    "constraints=[[\"hostname\",\"UNIQUE\"]]",
                    "acceptedResourceRoles=*"
                ])
            ),
            Ok(json!({"constraints": [["hostname", "UNIQUE"]], "acceptedResourceRoles": "*"}))
        );
    }

    #[test]
    fn mistakes_are_usage_errors() {
        assert!(patch(&current(), &args(&["instances=three"])).is_err());
        assert!(patch(&current(), &args(&["instances"])).is_err());
        assert!(patch(&current(), &args(&["=3"])).is_err());
        assert!(patch(&current(), &args(&["env.=3"])).is_err());
        assert!(patch(&current(), &args(&["cmd.x=3"])).is_err());
    }

    #[test]
    fn files_and_assignments_are_told_apart() {
        assert!(!are_assignments(&args(&["app.json"])));
        assert!(!are_assignments(&args(&["-"])));
        assert!(are_assignments(&args(&["instances=2"])));
        assert!(are_assignments(&args(&["instances=2", "cpus=1"])));
    }
}
