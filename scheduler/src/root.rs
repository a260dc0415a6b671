//! Every app of the root as an owned value, the shape the whole-root checks of a deployment
//! take (`assign_service_ports`, `has_dependency_cycle`, `compute_plan`), with what those checks
//! read kept counted as apps come and go, so that a change costs what it touches: the service
//! ports in use and how many apps name dependencies.

use std::collections::BTreeMap;
use std::ops::Bound;

use stride_core::{App, PathId};

#[derive(Debug, Default)]
pub(crate) struct Root {
    apps: BTreeMap<PathId, App>,
    /// Service port → apps using it (0, "pick one", is not counted).
    ports: BTreeMap<i64, usize>,
    /// Apps with dependencies of their own.
    with_dependencies: usize,
}

impl Root {
    pub fn new(apps: impl IntoIterator<Item = App>) -> Self {
        let mut root = Self::default();
        for app in apps {
            root.insert(app.id.clone(), app);
        }
        root
    }

    pub fn apps(&self) -> &BTreeMap<PathId, App> {
        &self.apps
    }

    pub fn len(&self) -> usize {
        self.apps.len()
    }

    pub fn insert(&mut self, id: PathId, app: App) {
        self.count(&app, true);
        if let Some(old) = self.apps.insert(id, app) {
            self.count(&old, false);
        }
    }

    pub fn remove(&mut self, id: &PathId) {
        if let Some(old) = self.apps.remove(id) {
            self.count(&old, false);
        }
    }

    fn count(&mut self, app: &App, add: bool) {
        for p in app.service_ports().into_iter().filter(|p| *p != 0) {
            if add {
                *self.ports.entry(p).or_default() += 1;
            } else if let Some(n) = self.ports.get_mut(&p) {
                *n -= 1;
                if *n == 0 {
                    self.ports.remove(&p);
                }
            }
        }
        if !app.dependencies.is_empty() {
            self.with_dependencies = if add {
                self.with_dependencies + 1
            } else {
                self.with_dependencies.saturating_sub(1)
            };
        }
    }

    /// Whether an app uses service port `p`.
    pub fn port_in_use(&self, p: i64) -> bool {
        self.ports.contains_key(&p)
    }

    /// Whether any app names a dependency.
    pub fn has_dependencies(&self) -> bool {
        self.with_dependencies > 0
    }

    /// Whether an app lies strictly below `id`. Paths below `id` sort right after it.
    pub fn has_app_below(&self, id: &PathId) -> bool {
        self.apps
            .range((Bound::Excluded(id), Bound::Unbounded))
            .next()
            .is_some_and(|(k, _)| k.is_within(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(id: &str, ports: &[i64], deps: &[&str]) -> App {
        let mut a = App::new(id);
        a.port_definitions = Some(
            ports
                .iter()
                .map(|p| {
                    serde_json::from_value(serde_json::json!({ "port": p }))
                        .expect("a port definition")
                })
                .collect(),
        );
        a.dependencies = deps.iter().map(|d| d.to_string()).collect();
        a
    }

    #[test]
    fn counts_follow_inserts_replacements_and_removals() {
        let mut r = Root::new([app("/a", &[10000, 0], &[]), app("/b/c", &[10000], &["/a"])]);
        assert!(r.port_in_use(10000) && !r.port_in_use(0) && r.has_dependencies());
        r.insert(PathId::parse("/b/c"), app("/b/c", &[10001], &[]));
        assert!(r.port_in_use(10000) && r.port_in_use(10001) && !r.has_dependencies());
        r.remove(&PathId::parse("/a"));
        assert!(!r.port_in_use(10000) && r.len() == 1);
        assert!(r.has_app_below(&PathId::parse("/b")));
        assert!(r.has_app_below(&PathId::root()));
        assert!(!r.has_app_below(&PathId::parse("/b/c")));
        r.insert(PathId::parse("/b0"), app("/b0", &[], &[]));
        assert!(!r.has_app_below(&PathId::parse("/a")));
    }
}
