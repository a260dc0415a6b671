//! Past versions of groups, rebuilt from manifests.
//!
//! A group's manifest at a version names the version of each direct child app and group (see
//! `stride_core::group::Manifest`); following them down gives the whole subtree as it was,
//! with each app's definition from its own version history. Apps whose history is gone (a
//! deleted app's versions are dropped) are left out.

use serde_json::{json, Map, Value};

use crate::{collections, Result, StateStore, StoreError};

fn corrupt(what: &str, e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

/// The stored versions of a group, newest first.
pub async fn group_versions(store: &dyn StateStore, group_id: &str) -> Result<Vec<String>> {
    let mut keys = store.keys(&collections::group_versions(group_id)).await?;
    keys.sort_unstable_by(|a, b| b.cmp(a));
    Ok(keys)
}

/// The group `group_id` at `version` as `{"id","version","dependencies","enforceRole","apps":[app
/// JSON…],"groups":[…]}`, or `None` if that version is not stored.
pub async fn group_at(
    store: &dyn StateStore,
    group_id: &str,
    version: &str,
) -> Result<Option<Value>> {
    let mut stack: Vec<(String, String)> = vec![(group_id.to_string(), version.to_string())];
    // Visited groups with their JSON, children filled in afterwards (deepest last).
    let mut order: Vec<(String, Map<String, Value>, Vec<String>)> = Vec::new();
    while let Some((id, v)) = stack.pop() {
        let Some(bytes) = store.get(&collections::group_versions(&id), &v).await? else {
            if order.is_empty() {
                return Ok(None);
            }
            continue;
        };
        let manifest: Value = serde_json::from_slice(&bytes)
            .map_err(|e| corrupt(&format!("manifest {id}@{v}"), e))?;
        let mut apps = Vec::new();
        if let Some(refs) = manifest.get("apps").and_then(Value::as_object) {
            for (app_id, app_version) in refs {
                let Some(av) = app_version.as_str() else {
                    continue;
                };
                if let Some(b) = store.get(&collections::app_versions(app_id), av).await? {
                    apps.push(
                        serde_json::from_slice::<Value>(&b)
                            .map_err(|e| corrupt(&format!("app {app_id}@{av}"), e))?,
                    );
                }
            }
        }
        let mut children = Vec::new();
        if let Some(refs) = manifest.get("groups").and_then(Value::as_object) {
            for (child, child_version) in refs {
                if let Some(cv) = child_version.as_str() {
                    stack.push((child.clone(), cv.to_string()));
                    children.push(child.clone());
                }
            }
        }
        let mut o = Map::new();
        o.insert("id".into(), Value::from(id.clone()));
        o.insert("version".into(), Value::from(v.clone()));
        o.insert(
            "dependencies".into(),
            manifest.get("dependencies").cloned().unwrap_or(json!([])),
        );
        if manifest.get("enforceRole").and_then(Value::as_bool) == Some(true) {
            o.insert("enforceRole".into(), json!(true));
        }
        o.insert("apps".into(), Value::Array(apps));
        order.push((id, o, children));
    }
    // Assemble bottom-up.
    let mut built: std::collections::HashMap<String, Value> = std::collections::HashMap::new();
    for (id, mut o, children) in order.into_iter().rev() {
        let groups: Vec<Value> = children.iter().filter_map(|c| built.remove(c)).collect();
        o.insert("groups".into(), Value::Array(groups));
        built.insert(id, Value::Object(o));
    }
    Ok(built.remove(group_id))
}
