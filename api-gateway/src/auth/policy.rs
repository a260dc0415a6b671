//! Who may do what, as plain data: actions, the grants a principal holds (compiled once from its
//! roles when the configuration loads), and the view scope that list endpoints filter by.
//!
//! A grant names an action and a path prefix: `update` on `/team-a` lets its holder update
//! `/team-a` and everything below it (`/team-a/web`, `/team-a/db/primary`), never `/team-ab`.
//! Prefixes are compared segment by segment on [`PathId`]s, after `..` and `.` are resolved the
//! way the leader resolves them, so an id cannot climb out of its prefix.
//!
//! ```text
//!  roles (config) ──compile──► Grants: per action, the minimal list of prefixes
//!                                 │ allows(action, id): is id within one of them?
//!                                 └ scope(view) ──► Scope: filters lists in bulk
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use stride_core::PathId;

/// What may be done to apps and groups below a prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Read definitions, tasks, versions, deployments, queue entries, events, sandboxes.
    View,
    /// Create apps and groups.
    Create,
    /// Change, scale, restart, roll back apps and groups; cancel their deployments.
    Update,
    /// Remove apps and groups.
    Delete,
    /// Kill tasks.
    Kill,
}

impl Action {
    pub const ALL: [Action; 5] = [
        Action::View,
        Action::Create,
        Action::Update,
        Action::Delete,
        Action::Kill,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Action::View => "view",
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Kill => "kill",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What may be done to the cluster itself (`/v2/info`, `/metrics`, `/logging`, `/config`,
/// `/v2/leader`, `/v2/eventSubscriptions`, `/v2/plugins`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SystemAction {
    /// Read the system endpoints; also see events that concern no app (leader changes,
    /// subscriptions).
    View,
    /// Change log levels, add and remove event subscriptions.
    Update,
    /// Make the scheduler leader step down (`DELETE /v2/leader`).
    Abdicate,
}

impl SystemAction {
    pub const ALL: [SystemAction; 3] = [
        SystemAction::View,
        SystemAction::Update,
        SystemAction::Abdicate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SystemAction::View => "view",
            SystemAction::Update => "update",
            SystemAction::Abdicate => "abdicate",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The part of the system a system action concerns; what an external authoriser is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SystemResource {
    /// `/v2/info`, `/config`, `/v2/plugins`.
    Config,
    /// `/metrics`, `/metrics/prometheus`.
    Metrics,
    /// `/logging`.
    Logging,
    /// `/v2/leader`.
    Leader,
    /// `/v2/eventSubscriptions`.
    Subscriptions,
}

impl SystemResource {
    /// The resource string sent to an external authoriser.
    pub fn name(self) -> &'static str {
        match self {
            SystemResource::Config => "system:config",
            SystemResource::Metrics => "system:metrics",
            SystemResource::Logging => "system:logging",
            SystemResource::Leader => "system:leader",
            SystemResource::Subscriptions => "system:subscriptions",
        }
    }
}

/// Everything one principal may do, compiled from its roles.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grants {
    /// For each [`Action`] (by index), the prefixes granting it: minimal (none lies within
    /// another) and sorted.
    paths: [Vec<PathId>; 5],
    system: [bool; 3],
}

impl Grants {
    /// Everything, everywhere: the open (`--insecure-no-auth`) mode.
    pub fn everything() -> Self {
        let mut g = Self::default();
        for a in Action::ALL {
            g.grant(a, PathId::root());
        }
        g.system = [true; 3];
        g
    }

    /// Adds `action` on `prefix`, keeping the list minimal.
    pub fn grant(&mut self, action: Action, prefix: PathId) {
        let list = &mut self.paths[action.index()];
        if list.iter().any(|p| prefix.is_within(p)) {
            return;
        }
        list.retain(|p| !p.is_within(&prefix));
        list.push(prefix);
        list.sort();
    }

    pub fn grant_system(&mut self, action: SystemAction) {
        self.system[action.index()] = true;
    }

    /// Merges another principal's or role's grants into these.
    pub fn merge(&mut self, other: &Grants) {
        for a in Action::ALL {
            for p in &other.paths[a.index()] {
                self.grant(a, p.clone());
            }
        }
        for s in SystemAction::ALL {
            self.system[s.index()] |= other.system[s.index()];
        }
    }

    pub fn allows(&self, action: Action, id: &PathId) -> bool {
        self.paths[action.index()].iter().any(|p| id.is_within(p))
    }

    pub fn allows_system(&self, action: SystemAction) -> bool {
        self.system[action.index()]
    }

    /// The system actions granted, in [`SystemAction::ALL`] order.
    pub fn system_actions(&self) -> Vec<SystemAction> {
        SystemAction::ALL
            .into_iter()
            .filter(|a| self.allows_system(*a))
            .collect()
    }

    /// The grants as a table for clients (`GET /v2/whoami`): every prefix some action is granted
    /// on, sorted, with every action allowed there (granted on it or on a prefix above it). A
    /// client may do `action` on `id` exactly when some row's prefix covers `id` and names
    /// `action`.
    pub fn by_prefix(&self) -> Vec<(PathId, Vec<Action>)> {
        let mut prefixes: Vec<PathId> = self.paths.iter().flatten().cloned().collect();
        prefixes.sort();
        prefixes.dedup();
        prefixes
            .into_iter()
            .map(|p| {
                let actions = Action::ALL
                    .into_iter()
                    .filter(|a| self.allows(*a, &p))
                    .collect();
                (p, actions)
            })
            .collect()
    }

    /// What list endpoints may show.
    pub fn view_scope(&self) -> Scope {
        Scope::of(
            self.paths[Action::View.index()].clone(),
            self.allows_system(SystemAction::View),
        )
    }
}

/// The part of the tree a caller may see, for filtering lists in bulk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    /// Minimal prefixes; `[/]` sees everything.
    prefixes: Vec<PathId>,
    /// Whether events that concern no app or group (leader changes, subscriptions) are shown.
    system: bool,
}

impl Scope {
    pub fn of(mut prefixes: Vec<PathId>, system: bool) -> Self {
        prefixes.sort();
        prefixes.dedup();
        let minimal: Vec<PathId> = prefixes
            .iter()
            .filter(|p| !prefixes.iter().any(|q| q != *p && p.is_within(q)))
            .cloned()
            .collect();
        Self {
            prefixes: minimal,
            system,
        }
    }

    pub fn everything() -> Self {
        Self::of(vec![PathId::root()], true)
    }

    /// True when nothing is hidden.
    pub fn is_everything(&self) -> bool {
        self.system && self.prefixes.iter().any(PathId::is_root)
    }

    /// May `id` (an app, or a group with all its content) be seen?
    pub fn sees(&self, id: &PathId) -> bool {
        self.prefixes.iter().any(|p| id.is_within(p))
    }

    /// Does the group `group` hold something that may be seen (it is then shown, pruned to
    /// that)?
    pub fn sees_into(&self, group: &PathId) -> bool {
        self.prefixes.iter().any(|p| p.is_within(group))
    }

    /// May an event about `subjects` be seen? Events about no app or group are system events.
    pub fn sees_event(&self, subjects: &[PathId]) -> bool {
        if subjects.is_empty() {
            self.system
        } else {
            subjects.iter().all(|s| self.sees(s))
        }
    }

    /// Prunes a rendered group (`/v2/groups` JSON) to what may be seen: apps outside the scope
    /// go, subgroups go unless they may be seen whole or hold something that may.
    pub fn prune_group(&self, group: &mut Value) {
        let Some(obj) = group.as_object_mut() else {
            return;
        };
        let id = obj
            .get("id")
            .and_then(Value::as_str)
            .map(PathId::parse)
            .unwrap_or_default();
        if self.sees(&id) {
            return;
        }
        if let Some(Value::Array(apps)) = obj.get_mut("apps") {
            apps.retain(|a| self.sees(&value_id(a)));
        }
        if let Some(Value::Array(groups)) = obj.get_mut("groups") {
            groups.retain_mut(|g| {
                let gid = value_id(g);
                if self.sees(&gid) {
                    true
                } else if self.sees_into(&gid) {
                    self.prune_group(g);
                    true
                } else {
                    false
                }
            });
        }
    }
}

/// The `id` of a JSON object as a path (the root when missing).
fn value_id(v: &Value) -> PathId {
    v.get("id")
        .and_then(Value::as_str)
        .map(PathId::parse)
        .unwrap_or_default()
}

/// The apps and groups an event concerns: `appId`, `runSpecId`, `groupId`, the app of an
/// `api_post_event`, and every app a deployment plan's steps name. Empty for events about the
/// cluster itself.
pub fn event_subjects(event: &Value) -> Vec<PathId> {
    let mut out = Vec::new();
    for key in ["appId", "runSpecId", "groupId"] {
        if let Some(s) = event.get(key).and_then(Value::as_str) {
            out.push(PathId::parse(s));
        }
    }
    if let Some(s) = event.pointer("/appDefinition/id").and_then(Value::as_str) {
        out.push(PathId::parse(s));
    }
    // A plan's steps, or the current step's actions.
    for plan in ["plan", "currentStep"]
        .into_iter()
        .filter_map(|k| event.get(k))
    {
        let in_steps = plan
            .get("steps")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|s| s.get("actions").and_then(Value::as_array))
            .flatten();
        let direct = plan
            .get("actions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        for action in in_steps.chain(direct) {
            for key in ["app", "pod"] {
                if let Some(s) = action.get(key).and_then(Value::as_str) {
                    out.push(PathId::parse(s));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(s: &str) -> PathId {
        PathId::parse(s)
    }

    #[test]
    fn prefixes_match_whole_segments_and_stay_minimal() {
        let mut g = Grants::default();
        g.grant(Action::Update, p("/team-a/web"));
        g.grant(Action::Update, p("/team-a"));
        g.grant(Action::Update, p("/team-a/db"));
        assert_eq!(g.paths[Action::Update.index()], vec![p("/team-a")]);
        assert!(g.allows(Action::Update, &p("/team-a")));
        assert!(g.allows(Action::Update, &p("/team-a/web/x")));
        assert!(!g.allows(Action::Update, &p("/team-ab")));
        assert!(!g.allows(Action::Update, &p("/")));
        assert!(!g.allows(Action::Delete, &p("/team-a/web")));
        // `..` is resolved before the check, so it cannot climb out.
        assert!(!g.allows(Action::Update, &PathId::parse("/team-a/../team-b")));
        assert!(Grants::everything().allows(Action::Kill, &p("/any/thing")));
    }

    #[test]
    fn merged_grants_union_prefixes_and_system_actions() {
        let mut a = Grants::default();
        a.grant(Action::View, p("/a"));
        let mut b = Grants::default();
        b.grant(Action::View, p("/b"));
        b.grant_system(SystemAction::View);
        a.merge(&b);
        assert!(a.allows(Action::View, &p("/b/x")) && a.allows(Action::View, &p("/a")));
        assert!(a.allows_system(SystemAction::View));
        assert!(!a.allows_system(SystemAction::Abdicate));
    }

    #[test]
    fn the_table_by_prefix_answers_as_the_grants_do() {
        let mut g = Grants::default();
        for a in [Action::View, Action::Create, Action::Update] {
            g.grant(a, p("/team-a"));
        }
        g.grant(Action::Delete, p("/team-a/scratch"));
        g.grant(Action::View, p("/shared"));
        g.grant_system(SystemAction::View);
        let table = g.by_prefix();
        assert_eq!(
            table,
            vec![
                (p("/shared"), vec![Action::View]),
                (
                    p("/team-a"),
                    vec![Action::View, Action::Create, Action::Update]
                ),
                (
                    p("/team-a/scratch"),
                    vec![Action::View, Action::Create, Action::Update, Action::Delete]
                ),
            ]
        );
        for id in [
            "/",
            "/shared/x",
            "/team-a",
            "/team-a/web",
            "/team-a/scratch/x",
            "/team-b",
        ] {
            for a in Action::ALL {
                let id = p(id);
                let by_table = table
                    .iter()
                    .any(|(prefix, actions)| id.is_within(prefix) && actions.contains(&a));
                assert_eq!(by_table, g.allows(a, &id), "{a} on {id}");
            }
        }
        assert_eq!(g.system_actions(), vec![SystemAction::View]);
        assert_eq!(
            Grants::everything().by_prefix(),
            vec![(PathId::root(), Action::ALL.to_vec())]
        );
    }

    #[test]
    fn scopes_prune_group_trees_to_what_may_be_seen() {
        let scope = Scope::of(vec![p("/team-a"), p("/shared/docs")], false);
        let mut tree = json!({
            "id": "/",
            "apps": [{"id": "/root-app"}],
            "groups": [
                {"id": "/team-a", "apps": [{"id": "/team-a/web"}], "groups": []},
                {"id": "/team-b", "apps": [{"id": "/team-b/web"}], "groups": []},
                {"id": "/shared", "apps": [{"id": "/shared/db"}], "groups": [
                    {"id": "/shared/docs", "apps": [{"id": "/shared/docs/site"}], "groups": []},
                    {"id": "/shared/other", "apps": [], "groups": []}
                ]}
            ]
        });
        scope.prune_group(&mut tree);
        assert_eq!(
            tree,
            json!({
                "id": "/",
                "apps": [],
                "groups": [
                    {"id": "/team-a", "apps": [{"id": "/team-a/web"}], "groups": []},
                    {"id": "/shared", "apps": [], "groups": [
                        {"id": "/shared/docs", "apps": [{"id": "/shared/docs/site"}], "groups": []}
                    ]}
                ]
            })
        );
        assert!(scope.sees_into(&p("/")) && scope.sees_into(&p("/shared")));
        assert!(!scope.sees_into(&p("/team-b")));
        assert!(!Scope::everything().prefixes.is_empty() && Scope::everything().is_everything());
    }

    #[test]
    fn events_are_scoped_by_the_apps_and_groups_they_name() {
        let deployment = json!({"eventType": "deployment_success", "id": "d1", "plan": {"id": "d1",
            "steps": [{"actions": [{"action": "StartApplication", "app": "/team-a/web"}]},
                      {"actions": [{"action": "ScaleApplication", "app": "/team-b/db"}]}]}});
        assert_eq!(
            event_subjects(&deployment),
            vec![p("/team-a/web"), p("/team-b/db")]
        );
        let step = json!({"eventType": "deployment_info", "plan": {"steps": []},
            "currentStep": {"actions": [{"action": "StopApplication", "app": "/team-a/old"}]}});
        assert_eq!(event_subjects(&step), vec![p("/team-a/old")]);
        let status = json!({"eventType": "status_update_event", "appId": "/team-a/web"});
        let api_post = json!({"eventType": "api_post_event", "appDefinition": {"id": "/team-a/x"}});
        let leader = json!({"eventType": "scheduler_registered_event"});
        let team_a = Scope::of(vec![p("/team-a")], false);
        assert!(team_a.sees_event(&event_subjects(&status)));
        assert!(team_a.sees_event(&event_subjects(&api_post)));
        assert!(!team_a.sees_event(&event_subjects(&deployment)));
        assert!(!team_a.sees_event(&event_subjects(&leader)));
        assert!(Scope::everything().sees_event(&event_subjects(&leader)));
    }
}
