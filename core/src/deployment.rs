//! Deployment plans (reference §5.2): which actions a change to the root group needs, in which
//! order, and how a plan is shown on `/v2/deployments` and in events.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::app::App;
use crate::instance::InstanceId;
use crate::path::PathId;
use crate::time::Timestamp;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionKind {
    StartApplication,
    StopApplication,
    ScaleApplication,
    RestartApplication,
}

impl ActionKind {
    pub fn name(self) -> &'static str {
        match self {
            ActionKind::StartApplication => "StartApplication",
            ActionKind::StopApplication => "StopApplication",
            ActionKind::ScaleApplication => "ScaleApplication",
            ActionKind::RestartApplication => "RestartApplication",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Action {
    pub kind: ActionKind,
    pub app: PathId,
    /// Instances a kill-and-scale named to go first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sentenced: Vec<InstanceId>,
}

impl Action {
    pub fn new(kind: ActionKind, app: &PathId) -> Self {
        Self {
            kind,
            app: app.clone(),
            sentenced: Vec::new(),
        }
    }

    pub fn to_json(&self) -> Value {
        json!({ "action": self.kind.name(), "app": self.app.to_string() })
    }
}

/// Store collection of the readiness-check results of instances of apps under deployment:
/// instance id → `{"appId", "appVersion", "result"}`, `result` being one entry of a current
/// action's `readinessCheckResults` (reference §5.6). The scheduler leader writes it; the gateway
/// shows it in `GET /v2/deployments`.
pub const READINESS_RESULTS: &str = "readiness-results";

/// A plan with where it has got to. Stored while it runs, removed when done.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeploymentPlan {
    pub id: String,
    pub version: Timestamp,
    pub steps: Vec<Vec<Action>>,
    /// The affected apps before the change (absent = did not exist), for rollback.
    pub original: BTreeMap<PathId, App>,
    /// The affected apps after the change (absent = removed).
    pub target: BTreeMap<PathId, App>,
    /// Index of the step being executed; `steps.len()` once every step is done. `None` until
    /// the plan has started.
    pub current_step: Option<usize>,
}

impl DeploymentPlan {
    pub fn affected_apps(&self) -> BTreeSet<PathId> {
        self.original
            .keys()
            .chain(self.target.keys())
            .cloned()
            .collect()
    }

    pub fn touches(&self, app: &PathId) -> bool {
        self.original.contains_key(app) || self.target.contains_key(app)
    }

    pub fn is_finished(&self) -> bool {
        self.current_step.is_some_and(|s| s >= self.steps.len())
    }

    pub fn current_actions(&self) -> &[Action] {
        self.current_step
            .and_then(|s| self.steps.get(s))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    fn steps_json(&self) -> Value {
        Value::Array(
            self.steps
                .iter()
                .map(|s| json!({ "actions": s.iter().map(Action::to_json).collect::<Vec<_>>() }))
                .collect(),
        )
    }

    /// The light plan carried by deployment events.
    pub fn light_json(&self) -> Value {
        json!({ "id": self.id, "steps": self.steps_json(), "version": self.version })
    }

    /// `GET /v2/deployments` entry. `readiness` gives each current action's readiness results.
    pub fn step_info_json(&self, readiness: &dyn Fn(&PathId) -> Vec<Value>) -> Value {
        let current_actions: Vec<Value> = self
            .current_actions()
            .iter()
            .map(|a| {
                let mut v = a.to_json();
                v["readinessCheckResults"] = Value::Array(readiness(&a.app));
                v
            })
            .collect();
        json!({
            "id": self.id,
            "version": self.version,
            "affectedApps": self.affected_apps().iter().map(ToString::to_string).collect::<Vec<_>>(),
            "affectedPods": [],
            "steps": self.steps_json(),
            "currentActions": current_actions,
            "currentStep": self.current_step.map_or(0, |s| (s + 1).min(self.steps.len())),
            "totalSteps": self.steps.len(),
        })
    }
}

/// Apps a dependency names: the app itself, or every app below a group.
fn dependency_targets<'a>(dep: &PathId, apps: &'a BTreeMap<PathId, App>) -> Vec<&'a PathId> {
    if apps.contains_key(dep) {
        return apps.keys().filter(|k| *k == dep).collect();
    }
    apps.keys()
        .filter(|k| k.is_within(dep) && *k != dep)
        .collect()
}

/// Every app each app depends on, following group dependencies too.
fn dependency_edges(
    apps: &BTreeMap<PathId, App>,
    group_deps: &BTreeMap<PathId, Vec<PathId>>,
) -> HashMap<PathId, Vec<PathId>> {
    let mut edges = HashMap::new();
    for (id, app) in apps {
        let mut deps: Vec<PathId> = app.dependencies.iter().map(|d| PathId::parse(d)).collect();
        for g in id.ancestors() {
            if let Some(gd) = group_deps.get(&g) {
                deps.extend(gd.iter().cloned());
            }
        }
        let mut targets = Vec::new();
        for d in &deps {
            for t in dependency_targets(d, apps) {
                if t != id {
                    targets.push(t.clone());
                }
            }
        }
        targets.sort();
        targets.dedup();
        edges.insert(id.clone(), targets);
    }
    edges
}

/// True when the dependency graph of `apps` has a cycle.
pub fn has_dependency_cycle(
    apps: &BTreeMap<PathId, App>,
    group_deps: &BTreeMap<PathId, Vec<PathId>>,
) -> bool {
    let edges = dependency_edges(apps, group_deps);
    // 0 = unvisited, 1 = on the stack, 2 = done.
    let mut state: HashMap<&PathId, u8> = HashMap::new();
    fn visit<'a>(
        n: &'a PathId,
        edges: &'a HashMap<PathId, Vec<PathId>>,
        state: &mut HashMap<&'a PathId, u8>,
    ) -> bool {
        match state.get(n) {
            Some(1) => return true,
            Some(2) => return false,
            _ => {}
        }
        state.insert(n, 1);
        for m in edges.get(n).into_iter().flatten() {
            if visit(m, edges, state) {
                return true;
            }
        }
        state.insert(n, 2);
        false
    }
    edges.keys().any(|n| visit(n, &edges, &mut state))
}

/// Length of the longest dependency path starting at each app (1 for an app with none).
fn longest_paths(
    apps: &BTreeMap<PathId, App>,
    group_deps: &BTreeMap<PathId, Vec<PathId>>,
) -> HashMap<PathId, usize> {
    let edges = dependency_edges(apps, group_deps);
    let mut memo: HashMap<PathId, usize> = HashMap::new();
    fn depth(
        n: &PathId,
        edges: &HashMap<PathId, Vec<PathId>>,
        memo: &mut HashMap<PathId, usize>,
        guard: usize,
    ) -> usize {
        if let Some(d) = memo.get(n) {
            return *d;
        }
        if guard == 0 {
            return 1;
        }
        let d = 1 + edges
            .get(n)
            .into_iter()
            .flatten()
            .map(|m| depth(m, edges, memo, guard - 1))
            .max()
            .unwrap_or(0);
        memo.insert(n.clone(), d);
        d
    }
    for id in apps.keys() {
        depth(id, &edges, &mut memo, apps.len() + 1);
    }
    memo
}

/// Computes the plan that moves `original` to `target` (reference §5.2). `original` and
/// `target` may hold only the apps a change touches; `graph` is the whole target root, whose
/// dependencies (with the group-level `group_deps`) order the steps.
pub fn compute_plan(
    id: String,
    version: Timestamp,
    original: &BTreeMap<PathId, App>,
    target: &BTreeMap<PathId, App>,
    graph: &BTreeMap<PathId, App>,
    group_deps: &BTreeMap<PathId, Vec<PathId>>,
) -> DeploymentPlan {
    let depths = longest_paths(graph, group_deps);
    compute_plan_by_depth(id, version, original, target, |app| {
        depths.get(app).copied().unwrap_or(1)
    })
}

/// [`compute_plan`] with each app's dependency depth given by `depth` (the length of the
/// longest dependency path starting at the app, 1 for an app with none) rather than worked out
/// over the whole root: where no app and no group of the root has dependencies, `|_| 1`.
pub fn compute_plan_by_depth(
    id: String,
    version: Timestamp,
    original: &BTreeMap<PathId, App>,
    target: &BTreeMap<PathId, App>,
    depth: impl Fn(&PathId) -> usize,
) -> DeploymentPlan {
    let mut steps: Vec<Vec<Action>> = Vec::new();
    let removed: Vec<&PathId> = original
        .keys()
        .filter(|k| !target.contains_key(*k))
        .collect();
    let added: Vec<&PathId> = target
        .keys()
        .filter(|k| !original.contains_key(*k))
        .collect();
    steps.push(
        removed
            .iter()
            .map(|id| Action::new(ActionKind::StopApplication, id))
            .collect(),
    );
    steps.push(
        added
            .iter()
            .map(|id| Action::new(ActionKind::StartApplication, id))
            .collect(),
    );

    let changed: BTreeSet<&PathId> = target
        .iter()
        .filter(|(k, app)| original.get(*k).is_none_or(|old| old != *app))
        .map(|(k, _)| k)
        .collect();
    let mut by_depth: BTreeMap<usize, Vec<Action>> = BTreeMap::new();
    for id in &changed {
        let new = &target[*id];
        let action = match original.get(*id) {
            None => Some(ActionKind::ScaleApplication),
            Some(old) if old.is_only_scale_change(new) || new.instances == 0 => {
                Some(ActionKind::ScaleApplication)
            }
            Some(old) if old.needs_restart(new) => Some(ActionKind::RestartApplication),
            Some(_) => None,
        };
        if let Some(kind) = action {
            by_depth
                .entry(depth(id))
                .or_default()
                .push(Action::new(kind, id));
        }
    }
    steps.extend(by_depth.into_values());
    steps.retain(|s| !s.is_empty());

    let affected: BTreeSet<PathId> = changed
        .iter()
        .map(|k| (*k).clone())
        .chain(removed.iter().map(|k| (*k).clone()))
        .collect();
    DeploymentPlan {
        id,
        version,
        steps,
        original: original
            .iter()
            .filter(|(k, _)| affected.contains(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        target: target
            .iter()
            .filter(|(k, _)| affected.contains(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        current_step: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(id: &str, deps: &[&str]) -> App {
        let mut a = App::new(id);
        a.cmd = Some("sleep 100".into());
        a.dependencies = deps.iter().map(|d| d.to_string()).collect();
        a
    }

    fn map(apps: Vec<App>) -> BTreeMap<PathId, App> {
        apps.into_iter().map(|a| (a.id.clone(), a)).collect()
    }

    #[test]
    fn new_group_with_a_dependency_gives_three_steps() {
        let target = map(vec![app("/g/db", &[]), app("/g/app", &["/g/db"])]);
        let plan = compute_plan(
            "p".into(),
            Timestamp(1),
            &BTreeMap::new(),
            &target,
            &target,
            &BTreeMap::new(),
        );
        let names: Vec<Vec<(&str, String)>> = plan
            .steps
            .iter()
            .map(|s| {
                s.iter()
                    .map(|a| (a.kind.name(), a.app.to_string()))
                    .collect()
            })
            .collect();
        assert_eq!(names.len(), 3);
        assert_eq!(names[0].len(), 2);
        assert_eq!(names[1], vec![("ScaleApplication", "/g/db".to_string())]);
        assert_eq!(names[2], vec![("ScaleApplication", "/g/app".to_string())]);
    }

    #[test]
    fn removal_and_restart() {
        let original = map(vec![app("/a", &[]), app("/b", &[])]);
        let mut b2 = app("/b", &[]);
        b2.cmd = Some("sleep 200".into());
        let target = map(vec![b2]);
        let plan = compute_plan(
            "p".into(),
            Timestamp(1),
            &original,
            &target,
            &target,
            &BTreeMap::new(),
        );
        assert_eq!(plan.steps[0][0].kind, ActionKind::StopApplication);
        assert_eq!(plan.steps[1][0].kind, ActionKind::RestartApplication);
        assert_eq!(plan.affected_apps().len(), 2);
    }

    #[test]
    fn cycles_are_found() {
        let apps = map(vec![app("/a", &["/b"]), app("/b", &["/a"])]);
        assert!(has_dependency_cycle(&apps, &BTreeMap::new()));
        let apps = map(vec![app("/a", &["/b"]), app("/b", &[])]);
        assert!(!has_dependency_cycle(&apps, &BTreeMap::new()));
    }
}
