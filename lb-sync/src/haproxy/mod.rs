//! HAProxy, driven marathon-lb style but without marathon-lb's reload storms.
//!
//! ```text
//!  snapshot ─► services (labels, blue/green) ─► render (pure) ─► Rendered { text, backends, structure }
//!                                                                   │
//!      ┌──────────────────────────────┬─────────────────────────────┘
//!      ▼                              ▼
//!  runtime::plan vs `show servers    haproxy.cfg: `haproxy -c`, temp + rename
//!  state` ─► set server … (no reload) │ structure changed? ─► reload via the master CLI
//!                                     │   (at most every min_reload_interval), confirmed by `show proc`
//! ```
//!
//! Membership changes (a task up, down, draining) go through the runtime API at once; the file
//! is rewritten too, so a later reload starts from the same servers (no state file to go
//! stale). Only structural changes (a new app, port, vhost, label) reload. A configuration
//! HAProxy refuses is never installed: the apps that break it are found by bisection and left
//! out until their definition changes, and the others keep being updated.

pub mod files;
pub mod process;
pub mod render;
pub mod runtime;
pub mod services;

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::config::HaproxyConfig;
use crate::snapshot::Snapshot;
use files::WriteError;
use process::{Process, ProcessError};
use render::{render, render_services, BackendPlan, RenderOptions};
use runtime::AdminSocket;

/// The HAProxy side's state between snapshots.
pub struct Controller {
    cfg: HaproxyConfig,
    opts: RenderOptions,
    process: Process,
    admin: AdminSocket,
    /// The file's text as last written (and so what a reload would load).
    written: Option<String>,
    /// Structure of the last file that passed `haproxy -c`: files differing only in server
    /// lines from it need no new check.
    validated_structure: Option<u64>,
    /// Structure of the written file and of the configuration HAProxy runs.
    written_structure: Option<u64>,
    running_structure: Option<u64>,
    /// A structure whose reload failed: not retried until the structure changes.
    failed_structure: Option<u64>,
    capacities: HashMap<String, usize>,
    desired: Vec<BackendPlan>,
    last_reload: Option<Instant>,
    reload_due: bool,
    running: bool,
    /// Apps left out because HAProxy refused them, with a fingerprint of their definition.
    excluded: HashMap<String, u64>,
    reloads: u64,
    runtime_updates: u64,
}

/// What the controller exposes to tests and the debug log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    pub reloads: u64,
    pub runtime_updates: u64,
    pub excluded_apps: Vec<String>,
    pub backends: usize,
    pub servers: usize,
}

impl Controller {
    pub fn new(cfg: HaproxyConfig) -> Self {
        Self {
            opts: RenderOptions::from_config(&cfg),
            process: Process::new(&cfg),
            admin: AdminSocket {
                path: cfg.admin_socket.clone(),
                timeout: Duration::from_secs(5),
            },
            cfg,
            written: None,
            validated_structure: None,
            written_structure: None,
            running_structure: None,
            failed_structure: None,
            capacities: HashMap::new(),
            desired: Vec::new(),
            last_reload: None,
            reload_due: false,
            running: false,
            excluded: HashMap::new(),
            reloads: 0,
            runtime_updates: 0,
        }
    }

    /// At start: if a valid configuration is already on disk, serve it while the store is
    /// read (HAProxy up even when the store is not).
    pub async fn start_from_disk(&mut self) {
        let Ok(text) = std::fs::read_to_string(&self.cfg.config_file) else {
            return;
        };
        if files::validate(&self.cfg.binary, &self.cfg.config_file)
            .await
            .is_err()
        {
            return;
        }
        self.written = Some(text);
        if self.ensure_running().await {
            // Unknown structure: the first snapshot reloads if the file differs.
            tracing::info!(file = %self.cfg.config_file.display(), "serving the last configuration while the store is read");
        }
    }

    async fn ensure_running(&mut self) -> bool {
        match self.process.ensure_running().await {
            Ok(_) => {
                if !self.running {
                    self.running = true;
                    self.running_structure = None;
                    // A fresh master loaded the file as written.
                    if self.written.is_some() {
                        self.running_structure = self.written_structure;
                    }
                }
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "HAProxy is not running");
                self.running = false;
                false
            }
        }
    }

    /// Brings HAProxy to `snapshot`.
    pub async fn apply(&mut self, snapshot: &Snapshot) {
        let started = Instant::now();
        let exclude = self.current_exclusions(snapshot);
        let mut rendered = render(snapshot, &self.opts, &self.capacities, &exclude);
        metrics::histogram!(crate::metrics::RENDER_SECONDS).record(started.elapsed().as_secs_f64());
        self.desired = rendered.backends.clone();

        // Membership first: it needs no file and no reload.
        if self.running {
            self.sync_runtime().await;
        }

        if self.written.as_deref() != Some(rendered.text.as_str()) {
            let needs_check = self.validated_structure != Some(rendered.structure);
            match self.write(&rendered.text, needs_check).await {
                Ok(()) => {}
                Err(WriteError::Invalid(msg)) => {
                    tracing::error!(error = %msg, "HAProxy refuses the new configuration; looking for the apps that break it");
                    let bad = self.find_bad_apps(snapshot, &exclude).await;
                    if bad.is_empty() {
                        tracing::error!(
                            "the configuration is refused without any app; keeping the current one"
                        );
                        return;
                    }
                    for app in &bad {
                        tracing::error!(app_id = %app, "app left out of HAProxy: its labels make the configuration invalid");
                        let fp = fingerprint(snapshot, app);
                        self.excluded.insert(app.clone(), fp);
                    }
                    let exclude = self.current_exclusions(snapshot);
                    rendered = render(snapshot, &self.opts, &self.capacities, &exclude);
                    self.desired = rendered.backends.clone();
                    if let Err(e) = self.write(&rendered.text, true).await {
                        tracing::error!(error = %e, "HAProxy still refuses the configuration; keeping the current one");
                        return;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot write the HAProxy configuration");
                    return;
                }
            }
            self.validated_structure = Some(rendered.structure);
            self.written = Some(rendered.text.clone());
            metrics::counter!(crate::metrics::CONFIG_WRITES).increment(1);
        }
        self.written_structure = Some(rendered.structure);
        self.capacities = rendered.capacities();
        metrics::gauge!(crate::metrics::BACKENDS).set(rendered.backends.len() as f64);
        metrics::gauge!(crate::metrics::SERVERS).set(rendered.server_count() as f64);
        metrics::gauge!(crate::metrics::EXCLUDED_APPS).set(self.excluded.len() as f64);

        if !self.running {
            if self.ensure_running().await {
                self.sync_runtime().await;
            }
            return;
        }
        if self.running_structure != self.written_structure
            && self.failed_structure != self.written_structure
        {
            self.reload_due = true;
        }
        self.maybe_reload().await;
    }

    async fn write(&self, text: &str, check: bool) -> Result<(), WriteError> {
        if check {
            files::write_validated(&self.cfg.binary, &self.cfg.config_file, text).await
        } else {
            // Only server lines differ from a validated file: machine-written addresses.
            files::write_unchecked(&self.cfg.config_file, text)
        }
    }

    fn current_exclusions(&mut self, snapshot: &Snapshot) -> HashSet<String> {
        // An excluded app whose definition changed gets another chance.
        let fps: Vec<(String, u64)> = self
            .excluded
            .keys()
            .map(|k| (k.clone(), fingerprint(snapshot, k)))
            .collect();
        for (app, fp) in fps {
            if self.excluded.get(&app) != Some(&fp) {
                tracing::info!(app_id = %app, "an excluded app changed; trying it again");
                self.excluded.remove(&app);
            }
        }
        self.excluded.keys().cloned().collect()
    }

    /// Bisects the apps for those HAProxy refuses. Empty when even no app is refused (the
    /// problem is global: a certificate, an extra line).
    async fn find_bad_apps(&self, snapshot: &Snapshot, exclude: &HashSet<String>) -> Vec<String> {
        let mut list = services::services(snapshot, &self.opts.services);
        list.retain(|s| !exclude.contains(&s.app_id));
        let check = |ids: Vec<String>| {
            let subset: Vec<services::Service> = list
                .iter()
                .filter(|s| ids.contains(&s.app_id))
                .cloned()
                .collect();
            let text = render_services(&subset, &self.opts, &self.capacities).text;
            async move {
                files::check_text(&self.cfg.binary, &self.cfg.config_file, &text)
                    .await
                    .is_ok()
            }
        };
        if !check(Vec::new()).await {
            return Vec::new();
        }
        let mut ids: Vec<String> = list.iter().map(|s| s.app_id.clone()).collect();
        ids.dedup();
        let mut bad = Vec::new();
        let mut stack = vec![ids];
        while let Some(group) = stack.pop() {
            if group.is_empty() || check(group.clone()).await {
                continue;
            }
            if group.len() == 1 {
                bad.extend(group);
                continue;
            }
            let right = group[group.len() / 2..].to_vec();
            let left = group[..group.len() / 2].to_vec();
            stack.push(right);
            stack.push(left);
        }
        bad
    }

    /// Reloads if one is due and allowed; returns when the next attempt may run otherwise.
    async fn maybe_reload(&mut self) {
        if !self.reload_due || !self.running {
            return;
        }
        if let Some(last) = self.last_reload {
            if last.elapsed() < self.cfg.min_reload_interval {
                return; // `next_wakeup` brings us back
            }
        }
        self.reload_now().await;
    }

    async fn reload_now(&mut self) {
        let started = Instant::now();
        let structure = self.written_structure;
        self.last_reload = Some(started);
        match self.process.reload().await {
            Ok(info) => {
                self.reload_due = false;
                self.reloads += 1;
                self.running_structure = structure;
                metrics::counter!(crate::metrics::RELOADS, "result" => "ok").increment(1);
                metrics::histogram!(crate::metrics::RELOAD_SECONDS)
                    .record(started.elapsed().as_secs_f64());
                tracing::info!(
                    reloads = info.reloads,
                    old_workers = info.old_workers,
                    took_ms = started.elapsed().as_millis() as u64,
                    "HAProxy reloaded"
                );
                self.sync_runtime().await;
            }
            Err(ProcessError::ReloadFailed(info)) => {
                self.reload_due = false;
                self.failed_structure = structure;
                metrics::counter!(crate::metrics::RELOADS, "result" => "failed").increment(1);
                tracing::error!(
                    failed = info.failed,
                    "HAProxy could not load the new configuration; the previous one keeps serving"
                );
            }
            Err(e) => {
                metrics::counter!(crate::metrics::RELOADS, "result" => "error").increment(1);
                tracing::warn!(error = %e, "reload did not complete; retrying");
                self.running = false;
            }
        }
    }

    /// Applies the runtime diff; falls back to a reload when HAProxy does not take it.
    async fn sync_runtime(&mut self) {
        let live = match self.admin.servers_state().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read HAProxy's servers");
                return;
            }
        };
        let plan = runtime::plan(&self.desired, &live);
        if !plan.short_of_slots.is_empty() {
            self.reload_due = true;
        }
        if plan.commands.is_empty() {
            return;
        }
        match self.admin.run(&plan.commands).await {
            Ok(errors) => {
                for e in errors.iter().take(5) {
                    tracing::warn!(answer = %e, "HAProxy runtime command answered an error");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "runtime update failed");
                return;
            }
        }
        self.runtime_updates += 1;
        metrics::counter!(crate::metrics::RUNTIME_UPDATES).increment(1);
        tracing::debug!(
            commands = plan.commands.len(),
            "applied through the runtime API"
        );
        match self.admin.servers_state().await {
            Ok(live) => {
                let again = runtime::plan(&self.desired, &live);
                if !again.commands.is_empty() {
                    tracing::warn!(
                        left = again.commands.len(),
                        "HAProxy did not take every runtime change; reloading"
                    );
                    self.reload_due = true;
                    self.running_structure = None;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read HAProxy's servers back"),
        }
    }

    /// Periodic work: restart a crashed HAProxy, run a postponed reload, heal runtime drift.
    pub async fn tick(&mut self) {
        if self.process.child_exited() {
            self.running = false;
        }
        if !self.running && self.written.is_some() {
            if self.ensure_running().await {
                self.sync_runtime().await;
            }
            return;
        }
        self.maybe_reload().await;
    }

    /// Runtime drift check (someone disabled a server by hand; a reload lost state).
    pub async fn verify(&mut self) {
        if self.running && self.written.is_some() {
            self.sync_runtime().await;
        }
    }

    /// When [`Controller::tick`] should run next for a postponed reload.
    pub fn next_reload_at(&self) -> Option<Instant> {
        if !self.reload_due {
            return None;
        }
        Some(
            self.last_reload
                .map_or_else(Instant::now, |l| l + self.cfg.min_reload_interval),
        )
    }

    pub async fn shutdown(&mut self) {
        self.process.stop().await;
    }

    pub fn status(&self) -> Status {
        Status {
            reloads: self.reloads,
            runtime_updates: self.runtime_updates,
            excluded_apps: self.excluded.keys().cloned().collect(),
            backends: self.desired.len(),
            servers: self.desired.iter().map(|b| b.servers.len()).sum(),
        }
    }
}

/// A fingerprint of an app's definition (or of a blue/green group's), to notice when an
/// excluded app changes.
fn fingerprint(snapshot: &Snapshot, app_id: &str) -> u64 {
    let mut h = DefaultHasher::new();
    for e in &snapshot.apps {
        let id = e.app.id.to_string();
        let group = e
            .app
            .labels
            .get("HAPROXY_DEPLOYMENT_GROUP")
            .map(|g| format!("/{}", g.trim_start_matches('/')));
        if id == app_id || group.as_deref() == Some(app_id) {
            serde_json::to_string(&e.app)
                .unwrap_or_default()
                .hash(&mut h);
        }
    }
    h.finish()
}

/// Runs the HAProxy side until `stop`: applies every new snapshot, runs postponed reloads,
/// restarts a crashed HAProxy, and checks for runtime drift.
pub async fn run(
    cfg: HaproxyConfig,
    mut snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    mut stop: watch::Receiver<bool>,
    status: Option<watch::Sender<Status>>,
) {
    let mut c = Controller::new(cfg);
    c.start_from_disk().await;
    let mut verify = tokio::time::interval(Duration::from_secs(10));
    verify.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut health = tokio::time::interval(Duration::from_secs(1));
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let reload_at = c.next_reload_at();
        let postponed = async {
            match reload_at {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = snapshots.changed() => {
                if r.is_err() { break; }
                let snap = snapshots.borrow_and_update().clone();
                if let Some(snap) = snap {
                    c.apply(&snap).await;
                }
            }
            _ = postponed => c.tick().await,
            _ = health.tick() => c.tick().await,
            _ = verify.tick() => c.verify().await,
            _ = stop.changed() => break,
        }
        if let Some(tx) = &status {
            tx.send_replace(c.status());
        }
    }
    c.shutdown().await;
}
