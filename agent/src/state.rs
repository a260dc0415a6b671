//! What the agent keeps on disk so that a restart loses nothing:
//!
//! ```text
//! <work_dir>/agent-id              the node's identity, generated once
//! <work_dir>/epoch                 the highest leader epoch seen (fencing)
//! <work_dir>/tasks/<task_id>.json  one TaskRecord per task not yet acknowledged
//! <work_dir>/sandboxes/<task_id>/  the task's working directory, stdout and stderr
//! <work_dir>/volumes/<app>#<path>#<instance>/  persistent volumes (see `volumes`)
//! <work_dir>/cache/<sha256 of URI>  the fetcher's cache
//! ```
//!
//! Every file is written atomically (a temporary file, fsync, rename), so a crash leaves either
//! the old or the new content, never half of one.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tracing::warn;

use crate::task::{LaunchSpec, Status};

/// A failure to read or write the agent's state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {message}")]
    Corrupt { path: PathBuf, message: String },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Everything the agent remembers about one task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct TaskRecord {
    pub spec: LaunchSpec,
    /// The main process, also the id of the task's process group; `None` if it never started.
    pub pid: Option<u32>,
    /// Field 22 of `/proc/<pid>/stat`: tells the task's process from a later one with the same pid.
    pub start_time: Option<u64>,
    /// The Docker container's id, for Docker tasks once it is started.
    #[serde(default)]
    pub container: Option<String>,
    /// The task's cgroups (one per hierarchy), when it is confined.
    #[serde(default)]
    pub cgroups: Vec<PathBuf>,
    /// The last status reported; its state is the task's state.
    pub status: Status,
}

/// The agent's directory.
#[derive(Clone, Debug)]
pub(crate) struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Opens (creating as needed) the state directory under `root`.
    pub async fn open(root: &Path) -> Result<Self, StateError> {
        let dir = Self {
            root: root.to_path_buf(),
        };
        for d in [
            dir.root.clone(),
            dir.tasks_dir(),
            dir.sandboxes_dir(),
            dir.volumes_dir(),
        ] {
            tokio::fs::create_dir_all(&d).await.map_err(io_error(&d))?;
        }
        Ok(dir)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn tasks_dir(&self) -> PathBuf {
        self.root.join("tasks")
    }

    pub fn sandboxes_dir(&self) -> PathBuf {
        self.root.join("sandboxes")
    }

    pub fn volumes_dir(&self) -> PathBuf {
        self.root.join(crate::volumes::VOLUMES_DIR)
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.root.join("cache")
    }

    /// The sandbox of a task (the id must have passed `valid_task_id`).
    pub fn sandbox(&self, task_id: &str) -> PathBuf {
        self.sandboxes_dir().join(task_id)
    }

    fn task_file(&self, task_id: &str) -> PathBuf {
        self.tasks_dir().join(format!("{task_id}.json"))
    }

    /// The node's id: read from `agent-id`, or generated and stored there on first start.
    pub async fn agent_id(&self) -> Result<String, StateError> {
        let path = self.root.join("agent-id");
        match tokio::fs::read_to_string(&path).await {
            Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_string()),
            Ok(_) => Err(StateError::Corrupt {
                path,
                message: "empty agent id".into(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let id = uuid::Uuid::new_v4().to_string();
                write_atomic(&path, format!("{id}\n").as_bytes()).await?;
                Ok(id)
            }
            Err(e) => Err(StateError::Io { path, source: e }),
        }
    }

    /// The highest epoch seen; 0 when none was stored yet.
    pub async fn load_epoch(&self) -> Result<u64, StateError> {
        let path = self.root.join("epoch");
        match tokio::fs::read_to_string(&path).await {
            Ok(text) => text.trim().parse().map_err(|e| StateError::Corrupt {
                path,
                message: format!("not an epoch: {e}"),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(StateError::Io { path, source: e }),
        }
    }

    pub async fn save_epoch(&self, epoch: u64) -> Result<(), StateError> {
        write_atomic(&self.root.join("epoch"), format!("{epoch}\n").as_bytes()).await
    }

    /// Every task record on disk. A record that cannot be read is logged and skipped: one bad
    /// file must not keep the agent from looking after its other tasks.
    pub async fn load_tasks(&self) -> Result<Vec<TaskRecord>, StateError> {
        let dir = self.tasks_dir();
        let mut entries = tokio::fs::read_dir(&dir).await.map_err(io_error(&dir))?;
        let mut records = Vec::new();
        while let Some(entry) = entries.next_entry().await.map_err(io_error(&dir))? {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let parsed = match tokio::fs::read(&path).await {
                Ok(bytes) => {
                    serde_json::from_slice::<TaskRecord>(&bytes).map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            };
            match parsed {
                Ok(record) => records.push(record),
                Err(error) => {
                    warn!(path = %path.display(), %error, "skipping unreadable task record")
                }
            }
        }
        records.sort_by(|a, b| a.spec.task_id.cmp(&b.spec.task_id));
        Ok(records)
    }

    pub async fn save_task(&self, record: &TaskRecord) -> Result<(), StateError> {
        let path = self.task_file(&record.spec.task_id);
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        write_atomic(&path, &bytes).await
    }

    pub async fn remove_task(&self, task_id: &str) -> Result<(), StateError> {
        let path = self.task_file(task_id);
        match tokio::fs::remove_file(&path).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(StateError::Io { path, source: e })
            }
            _ => Ok(()),
        }
    }
}

/// Replaces `path` with `bytes` atomically: write a sibling temporary file, fsync it, rename.
pub(crate) async fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let mut tmp_name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut file = tokio::fs::File::create(&tmp)
        .await
        .map_err(io_error(&tmp))?;
    file.write_all(bytes).await.map_err(io_error(&tmp))?;
    file.sync_all().await.map_err(io_error(&tmp))?;
    drop(file);
    tokio::fs::rename(&tmp, path).await.map_err(io_error(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::TaskState;

    #[tokio::test]
    async fn records_survive_a_reopen() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let state = StateDir::open(dir.path()).await?;
        let id = state.agent_id().await?;
        assert_eq!(state.agent_id().await?, id, "the agent id is stable");
        assert_eq!(state.load_epoch().await?, 0);
        state.save_epoch(7).await?;
        let record = TaskRecord {
            spec: LaunchSpec {
                task_id: "t1".into(),
                cmd: "true".into(),
                ..LaunchSpec::default()
            },
            pid: Some(42),
            start_time: Some(1234),
            container: None,
            cgroups: Vec::new(),
            status: Status::now("t1", TaskState::Running, ""),
        };
        state.save_task(&record).await?;
        std::fs::write(dir.path().join("tasks/broken.json"), b"{")?;

        let state = StateDir::open(dir.path()).await?;
        assert_eq!(state.load_epoch().await?, 7);
        assert_eq!(state.load_tasks().await?, vec![record]);
        state.remove_task("t1").await?;
        state.remove_task("t1").await?;
        assert!(state.load_tasks().await?.is_empty());
        Ok(())
    }
}
