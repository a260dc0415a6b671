//! Persistent local volumes (Marathon's resident apps), on the agent's side.
//!
//! A container volume with `persistent: {size}` and a single-segment `containerPath` is a
//! directory that outlives the task:
//!
//! ```text
//! <work_dir>/volumes/<app-safe-path>#<containerPath>#<instance-id>
//! ```
//!
//! The instance id is the task id without its `._app.<n>` suffix, so a relaunch of the same
//! instance (the scheduler bumps `n`) finds the data the last incarnation left. A process task
//! sees the directory as `<sandbox>/<containerPath>` (a symlink); a Docker task has it mounted
//! at `/<containerPath>` and `$MESOS_SANDBOX/<containerPath>`. Nothing here deletes a volume
//! when its task ends: only `DestroyVolumes` from the leader does.

use std::io;
use std::path::{Path, PathBuf};

/// The directory holding every volume, under the work directory.
pub(crate) const VOLUMES_DIR: &str = "volumes";

/// The name of a volume's directory. `container_path` must have passed
/// [`single_segment`]; the app id is turned into its safe form (`/prod/db` → `prod_db`).
pub(crate) fn volume_name(app_id: &str, container_path: &str, instance_id: &str) -> String {
    let safe_app: Vec<&str> = app_id.split('/').filter(|s| !s.is_empty()).collect();
    format!("{}#{container_path}#{instance_id}", safe_app.join("_"))
}

/// A persistent volume's `containerPath` as Marathon allows it: one relative path segment.
pub(crate) fn single_segment(container_path: &str) -> Result<&str, String> {
    let p = container_path.trim_end_matches('/');
    if p.is_empty() || p == "." || p == ".." || p.contains('/') || p.contains('#') {
        return Err(format!(
            "persistent volume containerPath {container_path:?} must be a single relative path segment"
        ));
    }
    Ok(p)
}

/// Whether a volume directory name belongs to `instance_id`.
pub(crate) fn belongs_to(name: &str, instance_id: &str) -> bool {
    name.rsplit_once('#')
        .is_some_and(|(_, id)| id == instance_id)
}

/// Creates the volume if it is new; returns its directory.
pub(crate) fn ensure(volumes: &Path, name: &str) -> io::Result<PathBuf> {
    let dir = volumes.join(name);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Deletes every volume of `instance_id`; returns the directories removed.
pub(crate) fn destroy(volumes: &Path, instance_id: &str) -> io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(volumes) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if belongs_to(&name, instance_id) {
            std::fs::remove_dir_all(entry.path())?;
            removed.push(entry.path());
        }
    }
    Ok(removed)
}

/// The volume directories of `instance_id` (canonical paths), which the sandbox API lets a
/// task's sandbox links lead into.
pub(crate) fn of_instance(volumes: &Path, instance_id: &str) -> Vec<PathBuf> {
    std::fs::read_dir(volumes)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| belongs_to(&e.file_name().to_string_lossy(), instance_id))
                .filter_map(|e| e.path().canonicalize().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ownership() {
        let name = volume_name("/prod/db", "data", "prod_db.instance-1");
        assert_eq!(name, "prod_db#data#prod_db.instance-1");
        assert!(belongs_to(&name, "prod_db.instance-1"));
        assert!(!belongs_to(&name, "prod_db.instance-12"));
        assert_eq!(single_segment("data/"), Ok("data"));
        for bad in ["", "a/b", "/data", "..", "a#b"] {
            assert!(single_segment(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn destroy_removes_only_the_instance() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let a = ensure(dir.path(), &volume_name("/app", "data", "app.instance-a"))?;
        let b = ensure(dir.path(), &volume_name("/app", "data", "app.instance-b"))?;
        std::fs::write(a.join("f"), "x")?;
        assert_eq!(of_instance(dir.path(), "app.instance-a").len(), 1);
        assert_eq!(destroy(dir.path(), "app.instance-a")?, vec![a.clone()]);
        assert!(!a.exists());
        assert!(b.exists());
        assert!(destroy(&dir.path().join("none"), "x")?.is_empty());
        Ok(())
    }
}
