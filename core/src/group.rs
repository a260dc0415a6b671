//! Groups (reference §1.3): the tree apps live in, with dependencies that order deployments.
//!
//! Apps are stored one by one; a group is stored as [`GroupMeta`] (its own attributes). The
//! tree is the union of the stored groups and every app's ancestors. [`GroupUpdate`] is the body
//! of `POST`/`PUT /v2/groups`, and a [`Manifest`] records a group at one version: its own
//! attributes and which version of each child it held, so any past version can be rebuilt
//! without storing whole trees.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::app::{null_default, App};
use crate::path::PathId;
use crate::time::Timestamp;

/// A group's own attributes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupMeta {
    pub id: PathId,
    /// Absolute ids of apps or groups every app of this group depends on.
    #[serde(default)]
    pub dependencies: Vec<PathId>,
    pub version: Timestamp,
    #[serde(default)]
    pub enforce_role: bool,
}

impl GroupMeta {
    pub fn new(id: PathId, version: Timestamp) -> Self {
        Self {
            id,
            dependencies: Vec::new(),
            version,
            enforce_role: false,
        }
    }
}

/// The body of `POST`/`PUT /v2/groups[/{id}]`. Apps stay raw JSON until they are parsed
/// against the group they belong to.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupUpdate {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub apps: Option<Vec<Value>>,
    #[serde(default, deserialize_with = "null_default")]
    pub groups: Option<Vec<GroupUpdate>>,
    #[serde(default, deserialize_with = "null_default")]
    pub dependencies: Option<Vec<String>>,
    #[serde(default)]
    pub scale_by: Option<f64>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub enforce_role: Option<bool>,
    #[serde(default)]
    pub pods: Option<Value>,
}

/// A group at one version: its attributes and the version of each direct child.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub id: PathId,
    pub version: Timestamp,
    #[serde(default)]
    pub dependencies: Vec<PathId>,
    #[serde(default)]
    pub enforce_role: bool,
    /// Direct child apps → their version.
    #[serde(default)]
    pub apps: BTreeMap<String, Timestamp>,
    /// Direct child groups → the version of their manifest.
    #[serde(default)]
    pub groups: BTreeMap<String, Timestamp>,
}

/// Every group of the tree: the stored ones plus every ancestor of an app, and the root.
pub fn all_groups<'a>(
    apps: impl Iterator<Item = &'a PathId>,
    metas: &BTreeMap<PathId, GroupMeta>,
) -> BTreeSet<PathId> {
    let mut groups: BTreeSet<PathId> = metas.keys().cloned().collect();
    for id in metas.keys() {
        groups.extend(id.ancestors());
    }
    for id in apps {
        groups.extend(id.ancestors());
    }
    groups.insert(PathId::root());
    groups
}

/// Direct child groups of `parent` among `groups`.
pub fn child_groups<'a>(
    parent: &'a PathId,
    groups: &'a BTreeSet<PathId>,
) -> impl Iterator<Item = &'a PathId> + 'a {
    groups
        .iter()
        .filter(move |g| !g.is_root() && g.parent() == *parent)
}

/// Which parts of a group `GET /v2/groups` embeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupEmbed {
    pub apps: bool,
    pub groups: bool,
    pub pods: bool,
}

impl GroupEmbed {
    /// Parses `embed` values; with none, apps, groups and pods are embedded.
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let values: Vec<&str> = values.into_iter().collect();
        if values.is_empty() {
            return Self {
                apps: true,
                groups: true,
                pods: true,
            };
        }
        let has = |name: &str| {
            values
                .iter()
                .any(|v| *v == name || v.starts_with(&format!("{name}.")))
        };
        Self {
            apps: has("group.apps"),
            groups: has("group.groups"),
            pods: has("group.pods"),
        }
    }
}

/// `GroupInfo` of `id`: `app_json` renders each app (with whatever app embeds were asked for).
pub fn group_json(
    id: &PathId,
    apps: &BTreeMap<PathId, App>,
    metas: &BTreeMap<PathId, GroupMeta>,
    groups: &BTreeSet<PathId>,
    embed: GroupEmbed,
    app_json: &dyn Fn(&App) -> Value,
) -> Value {
    let meta = metas.get(id);
    let mut o = Map::new();
    o.insert("id".into(), Value::from(id.to_string()));
    if embed.apps {
        let list: Vec<Value> = apps
            .values()
            .filter(|a| a.id.parent() == *id)
            .map(app_json)
            .collect();
        o.insert("apps".into(), Value::Array(list));
    }
    if embed.pods {
        o.insert("pods".into(), json!([]));
    }
    if embed.groups {
        let list: Vec<Value> = child_groups(id, groups)
            .map(|g| group_json(g, apps, metas, groups, embed, app_json))
            .collect();
        o.insert("groups".into(), Value::Array(list));
    }
    let deps: Vec<String> = meta
        .map(|m| m.dependencies.iter().map(ToString::to_string).collect())
        .unwrap_or_default();
    o.insert("dependencies".into(), json!(deps));
    // A group's version is the newest of its own and its content's.
    let newest = apps
        .values()
        .filter(|a| a.id.is_within(id))
        .filter_map(|a| a.version)
        .chain(
            metas
                .values()
                .filter(|m| m.id.is_within(id))
                .map(|m| m.version),
        )
        .max();
    if let Some(v) = newest {
        o.insert("version".into(), json!(v));
    }
    // Marathon 1.10 prints `enforceRole` on every top-level group; Stride prints it where it is
    // on, because Marathon clients from before 1.10 (the Python `marathon` package among them)
    // refuse a group with a field they do not know.
    if id.segments().len() == 1 && meta.is_some_and(|m| m.enforce_role) {
        o.insert("enforceRole".into(), Value::from(true));
    }
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_includes_ancestors_of_apps() {
        let apps = [PathId::parse("/prod/web/api"), PathId::parse("/db")];
        let mut metas = BTreeMap::new();
        metas.insert(
            PathId::parse("/empty"),
            GroupMeta::new(PathId::parse("/empty"), Timestamp(1)),
        );
        let groups = all_groups(apps.iter(), &metas);
        let names: Vec<String> = groups.iter().map(ToString::to_string).collect();
        assert_eq!(names, vec!["/", "/empty", "/prod", "/prod/web"]);
        let root = PathId::root();
        let children: Vec<String> = child_groups(&root, &groups)
            .map(ToString::to_string)
            .collect();
        assert_eq!(children, vec!["/empty", "/prod"]);
    }

    #[test]
    fn embed_defaults() {
        assert_eq!(
            GroupEmbed::parse([]),
            GroupEmbed {
                apps: true,
                groups: true,
                pods: true
            }
        );
        let e = GroupEmbed::parse(["group.apps", "group.apps.tasks"]);
        assert!(e.apps && !e.groups);
    }
}
