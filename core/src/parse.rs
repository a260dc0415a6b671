//! Turning request bodies into app definitions with Marathon's errors: 400 for JSON that does
//! not parse, 422 `Invalid JSON` with a path for the wrong types, 422 `Object is not valid` for
//! definitions that break the rules.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::app::App;
use crate::error::ApiError;
use crate::path::PathId;
use crate::validation::validate_app;

/// Deepest nesting of JSON a request may carry.
pub const MAX_JSON_DEPTH: usize = 64;

/// Parses bytes as JSON, with Marathon's 400 for syntax errors.
pub fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    if json_depth_exceeds(body, MAX_JSON_DEPTH) {
        return Err(ApiError::malformed_json(format!(
            "JSON nesting is deeper than {MAX_JSON_DEPTH} levels"
        )));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::malformed_json(e.to_string()))
}

/// A cheap scan for nesting depth, so a hostile body cannot exhaust the parser's stack.
fn json_depth_exceeds(body: &[u8], max: usize) -> bool {
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    for &b in body {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Converts a JSON value to `T`, reporting type errors as Marathon's 422 `Invalid JSON` with the
/// path of the offending field.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let mut path = String::new();
        for seg in e.path().iter() {
            match seg {
                serde_path_to_error::Segment::Seq { index } => path.push_str(&format!("({index})")),
                serde_path_to_error::Segment::Map { key } => {
                    path.push('/');
                    path.push_str(key);
                }
                _ => {}
            }
        }
        let message = e.inner().to_string();
        let (path, error) = play_error(path, &message);
        ApiError::json_type(path, error)
    })
}

/// Play-json's wording for a serde error, so clients that match on it keep working.
fn play_error(mut path: String, message: &str) -> (String, String) {
    if let Some(rest) = message.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or("");
        path.push('/');
        path.push_str(field);
        return (path, "error.path.missing".into());
    }
    if path.is_empty() {
        path.push('/');
    }
    let expected = message.split("expected ").nth(1).unwrap_or("");
    let kind = if expected.starts_with("a string") || expected.starts_with("a borrowed string") {
        "error.expected.jsstring"
    } else if expected.starts_with("i64")
        || expected.starts_with("u64")
        || expected.starts_with("f64")
        || expected.starts_with("u16")
        || expected.starts_with("u32")
        || expected.starts_with("i32")
    {
        "error.expected.jsnumber"
    } else if expected.starts_with("a sequence") {
        "error.expected.jsarray"
    } else if expected.starts_with("a map") || expected.starts_with("struct") {
        "error.expected.jsobject"
    } else if expected.starts_with("a boolean") {
        "error.expected.jsboolean"
    } else if message.starts_with("unknown variant") {
        "error.expected.validenumvalue"
    } else {
        return (path, message.to_string());
    };
    (path, kind.to_string())
}

/// Parses, normalizes and validates an app definition. `base` resolves relative ids; an id in
/// the URL (`id_override`) replaces the body's.
pub fn app_from_value(
    mut value: Value,
    base: &PathId,
    id_override: Option<&PathId>,
) -> Result<App, ApiError> {
    let Some(obj) = value.as_object_mut() else {
        return Err(ApiError::json_type(
            "/".into(),
            "error.expected.jsobject".into(),
        ));
    };
    let raw_id = match id_override {
        Some(id) => Some(id.to_string()),
        None => obj.get("id").and_then(Value::as_str).map(str::to_string),
    };
    obj.remove("id");
    let mut app: App = from_value(value)?;
    app.raw_id = raw_id.clone();
    app.id = match (id_override, raw_id.as_deref()) {
        (Some(id), _) => id.clone(),
        (None, Some(raw)) => PathId::resolve(raw, base),
        (None, None) => PathId::root(),
    };
    let dependency_base = app.id.parent();
    app.dependencies = app
        .dependencies
        .iter()
        .map(|d| {
            if PathId::segment_errors(d).is_empty() {
                PathId::resolve(d, &dependency_base).to_string()
            } else {
                d.clone()
            }
        })
        .collect();
    app.normalize();
    validate_app(&app).into_result()?;
    app.raw_id = None;
    Ok(app)
}

/// Parses a whole request body as one app.
pub fn parse_app(body: &[u8], base: &PathId) -> Result<App, ApiError> {
    app_from_value(parse_json(body)?, base, None)
}

/// Marathon's partial update: the fields present in `patch` replace the stored ones; the rest
/// is kept. Deprecated fields in the patch displace their canonical forms.
pub fn merge_patch(current: &App, patch: &Map<String, Value>) -> Value {
    let mut base = current.to_json();
    if let Some(obj) = base.as_object_mut() {
        obj.remove("version");
        for (deprecated, canonical) in [("uris", "fetch"), ("ports", "portDefinitions")] {
            if patch.contains_key(deprecated) {
                obj.remove(canonical);
            }
        }
        if patch.contains_key("networks") || patch.contains_key("container") {
            // Networking is re-derived from the new combination.
            if !patch.contains_key("portDefinitions") {
                obj.remove("portDefinitions");
            }
        }
        for (k, v) in patch {
            if k == "id" || k == "version" {
                continue;
            }
            obj.insert(k.clone(), v.clone());
        }
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use serde_json::json;

    #[test]
    fn malformed_json_is_400_with_a_string_detail() {
        let e = parse_app(b"{\"id\": ", &PathId::root()).expect_err("malformed");
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert_eq!(e.body["message"], "Invalid JSON");
        assert!(e.body["details"].is_string());
    }

    #[test]
    fn wrong_types_are_422_with_a_path() {
        let e = parse_app(br#"{"id": 5, "cmd": "sleep 1"}"#, &PathId::root());
        assert!(
            e.is_ok()
                || e.as_ref()
                    .is_err_and(|e| e.code == ErrorCode::Unprocessable)
        );
        let e = parse_app(
            br#"{"id": "/a", "cmd": "sleep 1", "instances": "three"}"#,
            &PathId::root(),
        )
        .expect_err("bad type");
        assert_eq!(e.code, ErrorCode::Unprocessable);
        assert_eq!(e.body["details"][0]["path"], "/instances");
        assert_eq!(e.body["details"][0]["errors"][0], "error.expected.jsnumber");
        let e = parse_app(
            br#"{"id": "/a", "cmd": "sleep 1", "healthChecks": [{"portIndex": "x"}]}"#,
            &PathId::root(),
        )
        .expect_err("bad type");
        assert_eq!(e.body["details"][0]["path"], "/healthChecks(0)/portIndex");
    }

    #[test]
    fn deep_json_is_refused() {
        let body = "[".repeat(100) + &"]".repeat(100);
        assert!(parse_json(body.as_bytes()).is_err());
    }

    #[test]
    fn patch_keeps_what_it_does_not_name() {
        let app = parse_app(
            br#"{"id": "/a", "cmd": "sleep 100", "instances": 2, "mem": 64}"#,
            &PathId::root(),
        )
        .expect("valid");
        let merged = merge_patch(&app, json!({"instances": 5}).as_object().expect("object"));
        let next = app_from_value(merged, &PathId::root(), Some(&app.id)).expect("valid");
        assert_eq!(next.instances, 5);
        assert_eq!(next.mem, 64.0);
        assert_eq!(next.cmd.as_deref(), Some("sleep 100"));
    }
}
