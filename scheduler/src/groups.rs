//! Group changes (reference §1.3) turned into app changes on a [`Draft`], and the manifests
//! that record every group's versions.
//!
//! A structural update replaces a group's children: listed apps are full definitions, unlisted
//! apps and subgroups are removed, absent fields keep what is there. `scaleBy` multiplies every
//! app's instances (rounding up); deleting a group removes everything in it.

use serde_json::Value;
use stride_core::error::{ApiError, ErrorCode, Violation};
use stride_core::group::{GroupMeta, GroupUpdate, Manifest};
use stride_core::parse::app_from_value;
use stride_core::{PathId, Timestamp};
use stride_store::collections;

use crate::state::{Draft, Effects, LeaderState, MAX_VERSIONS};

/// Puts `prefix` in front of the paths of a 422's details (an app's errors inside a group body
/// are reported at `/apps(0)/...`).
fn prefixed(mut e: ApiError, prefix: &str) -> ApiError {
    if let Some(details) = e.body.get_mut("details").and_then(Value::as_array_mut) {
        for d in details {
            if let Some(p) = d.get("path").and_then(Value::as_str) {
                let path = if p == "/" {
                    prefix.to_string()
                } else {
                    format!("{prefix}{p}")
                };
                d["path"] = Value::from(path);
            }
        }
    }
    e
}

fn invalid(path: &str, error: String) -> ApiError {
    ApiError::invalid(vec![Violation {
        path: path.to_string(),
        errors: vec![error],
    }])
}

impl LeaderState {
    /// True when `path` is a group of the tree as the draft leaves it.
    fn group_exists(&self, draft: &Draft, path: &PathId) -> bool {
        path.is_root()
            || draft.group(self, path).is_some()
            || draft.apps_within(self, path).iter().any(|a| a != path)
    }

    pub(crate) fn apply_group_update(
        &self,
        draft: &mut Draft,
        path: &PathId,
        update: GroupUpdate,
        create_only: bool,
        t: Timestamp,
    ) -> Result<(), ApiError> {
        if create_only {
            if draft.app(self, path).is_some() {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    format!("An app with the path {path} already exists."),
                ));
            }
            if self.group_exists(draft, path) {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    format!("Group {path} is already created. Use PUT to change this group."),
                ));
            }
        }
        if draft.app(self, path).is_some() {
            return Err(invalid(
                "/id",
                "Groups and Applications may not have the same identifier.".into(),
            ));
        }
        if update
            .pods
            .as_ref()
            .is_some_and(|p| p.as_array().is_some_and(|a| !a.is_empty()))
        {
            return Err(invalid(
                "/pods",
                "Pods are not supported by Stride yet; use apps".into(),
            ));
        }
        let mut meta = draft
            .group(self, path)
            .unwrap_or_else(|| GroupMeta::new(path.clone(), t));
        let mut meta_changed = draft.group(self, path).is_none() && !path.is_root();
        if let Some(deps) = &update.dependencies {
            let base = path.parent();
            let resolved: Vec<PathId> = deps.iter().map(|d| PathId::resolve(d, &base)).collect();
            for (i, d) in deps.iter().enumerate() {
                if !PathId::segment_errors(d).is_empty() {
                    return Err(invalid(
                        &format!("/dependencies({i})"),
                        format!("'{d}' is not a valid path"),
                    ));
                }
            }
            if resolved != meta.dependencies {
                meta.dependencies = resolved;
                meta_changed = true;
            }
        }
        if let Some(enforce) = update.enforce_role {
            if enforce && path.segments().len() != 1 {
                return Err(invalid(
                    "/enforceRole",
                    "enforceRole can only be set for top-level groups".into(),
                ));
            }
            if enforce != meta.enforce_role {
                meta.enforce_role = enforce;
                meta_changed = true;
            }
        }
        if meta_changed && !path.is_root() {
            meta.version = t;
            draft.groups.insert(path.clone(), Some(meta));
        }
        if let Some(apps) = update.apps {
            let mut listed = Vec::new();
            for (i, raw) in apps.into_iter().enumerate() {
                let app = app_from_value(raw, path, None)
                    .map_err(|e| prefixed(e, &format!("/apps({i})")))?;
                if app.id.parent() != *path {
                    return Err(invalid(
                        &format!("/apps({i})/id"),
                        format!("Identifier is not child of '{path}'"),
                    ));
                }
                listed.push(app.id.clone());
                draft.apps.insert(app.id.clone(), Some(app));
            }
            for id in draft.apps_within(self, path) {
                if id.parent() == *path && !listed.contains(&id) {
                    draft.apps.insert(id, None);
                }
            }
        }
        if let Some(groups) = update.groups {
            let mut listed = Vec::new();
            for (i, g) in groups.into_iter().enumerate() {
                let Some(raw) = g.id.clone() else {
                    return Err(invalid(
                        &format!("/groups({i})/id"),
                        "error.path.missing".into(),
                    ));
                };
                let child = PathId::resolve(&raw, path);
                if !child.is_within(path) || child == *path {
                    return Err(invalid(
                        &format!("/groups({i})/id"),
                        format!("Identifier is not child of '{path}'"),
                    ));
                }
                if !PathId::segment_errors(&raw).is_empty() {
                    return Err(invalid(
                        &format!("/groups({i})/id"),
                        format!(
                            "must fully match regular expression '{}'",
                            stride_core::path::SEGMENT_PATTERN
                        ),
                    ));
                }
                listed.push(child.clone());
                self.apply_group_update(draft, &child, g, false, t)
                    .map_err(|e| prefixed(e, &format!("/groups({i})")))?;
            }
            // Unlisted direct subgroups go, with everything in them.
            let mut existing: Vec<PathId> = draft
                .groups_within(self, path)
                .into_iter()
                .chain(
                    draft
                        .apps_within(self, path)
                        .iter()
                        .flat_map(|a| a.ancestors()),
                )
                .filter(|g| g.is_within(path) && g != path && g.parent() == *path)
                .collect();
            existing.sort();
            existing.dedup();
            for g in existing {
                if !listed.iter().any(|l| l.is_within(&g)) {
                    self.apply_group_remove(draft, &g)?;
                }
            }
        }
        Ok(())
    }

    pub(crate) fn apply_group_remove(
        &self,
        draft: &mut Draft,
        path: &PathId,
    ) -> Result<(), ApiError> {
        if !self.group_exists(draft, path) {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("Group '{path}' does not exist"),
            ));
        }
        for id in draft.apps_within(self, path) {
            draft.apps.insert(id, None);
        }
        for g in draft.groups_within(self, path) {
            draft.groups.insert(g, None);
        }
        Ok(())
    }

    pub(crate) fn apply_group_scale(
        &self,
        draft: &mut Draft,
        path: &PathId,
        factor: f64,
    ) -> Result<(), ApiError> {
        if !self.group_exists(draft, path) {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("Group '{path}' does not exist"),
            ));
        }
        if !factor.is_finite() || factor < 0.0 {
            return Err(invalid(
                "/scaleBy",
                format!("got {factor}, expected 0.0 or more"),
            ));
        }
        for id in draft.apps_within(self, path) {
            if let Some(mut app) = draft.app(self, &id) {
                app.instances = (app.instances as f64 * factor).ceil() as i64;
                draft.apps.insert(id, Some(app));
            }
        }
        Ok(())
    }

    pub(crate) fn apply_group_attributes(
        &self,
        draft: &mut Draft,
        path: &PathId,
        enforce_role: bool,
        t: Timestamp,
    ) -> Result<(), ApiError> {
        if !self.group_exists(draft, path) {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("Group '{path}' does not exist"),
            ));
        }
        if path.segments().len() != 1 {
            return Err(invalid(
                "/enforceRole",
                "enforceRole can only be set for top-level groups".into(),
            ));
        }
        let mut meta = draft
            .group(self, path)
            .unwrap_or_else(|| GroupMeta::new(path.clone(), t));
        meta.enforce_role = enforce_role;
        meta.version = t;
        draft.groups.insert(path.clone(), Some(meta));
        Ok(())
    }

    /// Writes a manifest at `t` for every group above a changed path, deepest first, so each
    /// parent records its children's newest versions.
    pub(crate) fn write_manifests(&mut self, changed: &[PathId], t: Timestamp, fx: &mut Effects) {
        let mut touched: Vec<PathId> = changed
            .iter()
            .flat_map(|p| p.ancestors())
            .filter(|g| g.is_root() || self.groups.contains_key(g))
            .collect();
        touched.sort();
        touched.dedup();
        touched.sort_by_key(|g| std::cmp::Reverse(g.segments().len()));
        // Every app's ancestors are its parent and the parent's ancestors.
        let mut tree = stride_core::group::all_groups(self.children.keys(), &self.groups);
        tree.extend(self.children.keys().cloned());
        for g in touched {
            let meta = self.groups.get(&g);
            let manifest = Manifest {
                id: g.clone(),
                version: t,
                dependencies: meta.map(|m| m.dependencies.clone()).unwrap_or_default(),
                enforce_role: meta.is_some_and(|m| m.enforce_role),
                apps: self
                    .children
                    .get(&g)
                    .into_iter()
                    .flatten()
                    .map(|(id, version)| (id.clone(), version.unwrap_or(t)))
                    .collect(),
                groups: stride_core::group::child_groups(&g, &tree)
                    .filter_map(|c| {
                        self.group_versions
                            .get(c)
                            .and_then(|v| v.last().copied())
                            .map(|v| (c.to_string(), v))
                    })
                    .collect(),
            };
            let key = collections::group_versions(&g.to_string());
            fx.batch.put(
                key.clone(),
                t.to_string(),
                serde_json::to_vec(&manifest).unwrap_or_default(),
            );
            let versions = self.group_versions.entry(g.clone()).or_default();
            if versions.last() != Some(&t) {
                versions.push(t);
            }
            while versions.len() > MAX_VERSIONS {
                let old = versions.remove(0);
                fx.batch.delete(key.clone(), old.to_string());
            }
        }
    }

    pub fn load_group(&mut self, meta: GroupMeta, versions: Vec<Timestamp>) {
        self.group_versions.insert(meta.id.clone(), versions);
        self.groups.insert(meta.id.clone(), meta);
        self.groups_loaded();
    }

    pub fn load_root_versions(&mut self, versions: Vec<Timestamp>) {
        self.group_versions.insert(PathId::root(), versions);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;
    use stride_core::deployment::ActionKind;
    use stride_core::group::GroupUpdate;
    use stride_core::{PathId, Timestamp};

    use crate::state::{Change, LeaderState, Origin, Tuning};

    fn update(v: serde_json::Value) -> GroupUpdate {
        serde_json::from_value(v).expect("a group update")
    }

    fn deploy(
        s: &mut LeaderState,
        changes: Vec<Change>,
    ) -> Result<crate::state::Deployed, stride_core::ApiError> {
        s.deploy(
            changes,
            false,
            &Origin::default(),
            BTreeMap::new(),
            Timestamp::now(),
        )
        .map(|(d, _)| d)
    }

    #[test]
    fn a_group_with_dependencies_deploys_in_order() {
        let mut s = LeaderState::new(Tuning::default(), Timestamp(1));
        let body = json!({"id": "/shop", "groups": [
            {"id": "db", "apps": [{"id": "postgres", "cmd": "sleep 100"}]},
            {"id": "web", "dependencies": ["/shop/db"], "apps": [{"id": "frontend", "cmd": "sleep 100", "dependencies": ["api"]},
                                                                 {"id": "api", "cmd": "sleep 100"}]}
        ]});
        deploy(
            &mut s,
            vec![Change::GroupUpdate {
                path: PathId::parse("/shop"),
                update: update(body),
                create_only: true,
            }],
        )
        .expect("deploys");
        let plan = s.deployments.values().next().expect("a plan");
        let order: Vec<Vec<String>> = plan
            .steps
            .iter()
            .filter(|st| st.iter().all(|a| a.kind == ActionKind::ScaleApplication))
            .map(|st| st.iter().map(|a| a.app.to_string()).collect())
            .collect();
        assert_eq!(
            order,
            vec![
                vec!["/shop/db/postgres".to_string()],
                vec!["/shop/web/api".to_string()],
                vec!["/shop/web/frontend".to_string()]
            ]
        );
        assert!(s.groups.contains_key(&PathId::parse("/shop/web")));
        // Creating it again conflicts.
        let e = deploy(
            &mut s,
            vec![Change::GroupUpdate {
                path: PathId::parse("/shop"),
                update: update(json!({})),
                create_only: true,
            }],
        )
        .expect_err("exists");
        assert_eq!(e.code, stride_core::ErrorCode::Conflict);
    }

    #[test]
    fn cycles_and_misplaced_apps_are_refused() {
        let mut s = LeaderState::new(Tuning::default(), Timestamp(1));
        let body = json!({"id": "/c", "apps": [
            {"id": "a", "cmd": "sleep 1", "dependencies": ["b"]},
            {"id": "b", "cmd": "sleep 1", "dependencies": ["a"]}]});
        let e = deploy(
            &mut s,
            vec![Change::GroupUpdate {
                path: PathId::parse("/c"),
                update: update(body),
                create_only: false,
            }],
        )
        .expect_err("cycle");
        assert_eq!(
            e.body["details"][0]["errors"][0],
            "Dependency graph has cyclic dependencies."
        );
        let body = json!({"apps": [{"id": "/elsewhere/x", "cmd": "sleep 1"}]});
        let e = deploy(
            &mut s,
            vec![Change::GroupUpdate {
                path: PathId::parse("/c"),
                update: update(body),
                create_only: false,
            }],
        )
        .expect_err("not a child");
        assert_eq!(e.body["details"][0]["path"], "/apps(0)/id");
        assert!(s.apps.is_empty(), "nothing was applied");
    }

    #[test]
    fn put_replaces_children_and_scale_by_rounds_up() {
        let mut s = LeaderState::new(Tuning::default(), Timestamp(1));
        let body = json!({"apps": [{"id": "a", "cmd": "sleep 1", "instances": 3}, {"id": "b", "cmd": "sleep 1"}]});
        deploy(
            &mut s,
            vec![Change::GroupUpdate {
                path: PathId::parse("/g"),
                update: update(body),
                create_only: false,
            }],
        )
        .expect("ok");
        s.deployments.clear();
        deploy(
            &mut s,
            vec![Change::GroupScale {
                path: PathId::parse("/g"),
                factor: 1.5,
            }],
        )
        .expect("scales");
        assert_eq!(s.apps[&PathId::parse("/g/a")].instances, 5);
        assert_eq!(s.apps[&PathId::parse("/g/b")].instances, 2);
        s.deployments.clear();
        let body = json!({"apps": [{"id": "a", "cmd": "sleep 1", "instances": 5}]});
        deploy(
            &mut s,
            vec![Change::GroupUpdate {
                path: PathId::parse("/g"),
                update: update(body),
                create_only: false,
            }],
        )
        .expect("ok");
        assert!(
            !s.apps.contains_key(&PathId::parse("/g/b")),
            "an app left out is removed"
        );
        s.deployments.clear();
        deploy(&mut s, vec![Change::GroupRemove(PathId::parse("/g"))]).expect("removes");
        assert!(s.apps.is_empty());
        assert!(!s.groups.contains_key(&PathId::parse("/g")));
    }
}

#[cfg(test)]
mod dry_run_tests {
    use std::collections::BTreeMap;

    use serde_json::json;
    use stride_core::{PathId, Timestamp};

    use crate::state::{Change, LeaderState, Origin, Tuning};

    #[test]
    fn a_dry_run_returns_the_plan_and_changes_nothing() {
        let mut s = LeaderState::new(Tuning::default(), Timestamp(1));
        let update = serde_json::from_value(json!({"apps": [{"id": "a", "cmd": "sleep 1"}]}))
            .expect("update");
        let (d, fx) = s
            .deploy_with(
                vec![Change::GroupUpdate {
                    path: PathId::parse("/g"),
                    update,
                    create_only: false,
                }],
                false,
                true,
                &Origin::default(),
                BTreeMap::new(),
                Timestamp::now(),
            )
            .expect("plans");
        assert!(fx.batch.is_empty());
        assert!(s.apps.is_empty() && s.deployments.is_empty());
        assert_eq!(d.plan.expect("a plan").steps.len(), 2);
    }
}
