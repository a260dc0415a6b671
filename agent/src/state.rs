//! What the agent keeps on disk so that a restart loses nothing:
//!
//! ```text
//! <work_dir>/agent-id              the node's identity, generated once
//! <work_dir>/epoch                 the highest leader epoch seen (fencing)
//! <work_dir>/tasks.journal         the task table as a log (see `TaskJournal`)
//! <work_dir>/tasks/<task_id>.json  one TaskRecord per task, from agents before the journal
//! <work_dir>/sandboxes/<task_id>/  the task's working directory, stdout and stderr
//! <work_dir>/volumes/<app>#<path>#<instance>/  persistent volumes (see `volumes`)
//! <work_dir>/cache/<sha256 of URI>  the fetcher's cache
//! ```
//!
//! Every file is written atomically (a temporary file, fsync, rename), so a crash leaves either
//! the old or the new content, never half of one. The journal is the exception: it is appended
//! to, one JSON line per change, and a batch of changes is made durable with one `fdatasync`, so
//! a thousand launches cost a few disk flushes rather than two each. A line cut short by a crash
//! belongs to a batch that was never reported; it is dropped when the journal is next opened.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tracing::warn;

use crate::task::{LaunchSpec, Status};

/// The journal is rewritten (holding only the live records) once it has this many entries and
/// four times as many as there are live records.
const REWRITE_AFTER: usize = 4096;
const JOURNAL: &str = "tasks.journal";

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

/// Marks `dir` as the top of directory hierarchies for ext2/3/4 (`chattr +T`), so that the
/// filesystem spreads its subdirectories over its block groups as it does the subdirectories of
/// `/`, instead of packing them next to `dir`. Best effort: without `chattr`, or on a filesystem
/// without the flag, nothing changes.
///
/// Each sandbox brings three new inodes (itself, `stdout`, `stderr`). ext4 without a journal
/// skips every inode of a block group freed in the last 30 s before it reuses one, rescanning
/// them for each new file; where sandboxes of finished tasks (or anything else) were deleted
/// nearby, every new file then costs milliseconds of system time. Spread out, a sandbox finds a
/// group with few of those.
async fn spread_subdirectories(dir: &Path) {
    let flagged = tokio::process::Command::new("chattr")
        .arg("+T")
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await;
    if !flagged.is_ok_and(|s| s.success()) {
        tracing::debug!(dir = %dir.display(), "cannot mark the sandboxes directory with chattr +T");
    }
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
        spread_subdirectories(&dir.sandboxes_dir()).await;
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

    /// Removes the per-task files of an older agent, once the journal holds their records.
    async fn remove_task_files(&self) -> Result<(), StateError> {
        let dir = self.tasks_dir();
        let mut entries = tokio::fs::read_dir(&dir).await.map_err(io_error(&dir))?;
        while let Some(entry) = entries.next_entry().await.map_err(io_error(&dir))? {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") {
                match tokio::fs::remove_file(&path).await {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(StateError::Io { path, source: e })
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    #[cfg(test)]
    fn task_file(&self, task_id: &str) -> PathBuf {
        self.tasks_dir().join(format!("{task_id}.json"))
    }
}

/// One line of the journal, as written.
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Change<'a> {
    /// The task's record is now this.
    Put(&'a TaskRecord),
    /// The task is forgotten.
    Forget(&'a str),
}

/// One line of the journal, as read back.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Entry {
    Put(Box<TaskRecord>),
    Forget(String),
}

/// The task table on disk: `tasks.journal`, replayed in order when the agent starts (the last
/// `put` of a task wins, a `forget` drops it), appended to in batches while it runs, and
/// rewritten with only the live records when it has grown well past them.
pub(crate) struct TaskJournal {
    path: PathBuf,
    /// Open for appending; shared with the blocking thread that writes a batch.
    file: Arc<std::fs::File>,
    /// Lines in the file, live or not.
    entries: usize,
    /// A write failed and may have left part of a line: the next commit rewrites the journal
    /// rather than append after it.
    damaged: bool,
}

impl TaskJournal {
    /// Reads every task record (those of per-task files an older agent left first, then the
    /// journal's) and opens the journal for appending. A journal with an unreadable line, or
    /// older files beside it, is rewritten at once, so that appends always start on a fresh line
    /// and the older files can go.
    pub async fn open(state: &StateDir) -> Result<(Self, Vec<TaskRecord>), StateError> {
        let mut table: std::collections::BTreeMap<String, TaskRecord> = state
            .load_tasks()
            .await?
            .into_iter()
            .map(|r| (r.spec.task_id.clone(), r))
            .collect();
        let legacy = !table.is_empty();
        let path = state.root.join(JOURNAL);
        let (entries, damaged) = match tokio::fs::read(&path).await {
            Ok(bytes) => replay(&path, &bytes, &mut table),
            Err(e) if e.kind() == io::ErrorKind::NotFound => (0, false),
            Err(e) => return Err(StateError::Io { path, source: e }),
        };
        let records: Vec<TaskRecord> = table.into_values().collect();
        let mut journal = Self {
            file: Arc::new(open_append(&path)?),
            path,
            entries,
            damaged: false,
        };
        if legacy || damaged {
            journal.rewrite(records.iter()).await?;
            state.remove_task_files().await?;
        }
        Ok((journal, records))
    }

    /// Whether the journal should be rewritten rather than appended to.
    pub fn wants_rewrite(&self, live: usize) -> bool {
        self.damaged || (self.entries >= REWRITE_AFTER && self.entries >= live.saturating_mul(4))
    }

    /// Appends `changes` and waits until they are on disk (one `fdatasync` for all of them).
    pub async fn append(&mut self, changes: &[Change<'_>]) -> Result<(), StateError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(changes.len() * 512);
        for change in changes {
            serde_json::to_writer(&mut buf, change).map_err(|e| StateError::Corrupt {
                path: self.path.clone(),
                message: e.to_string(),
            })?;
            buf.push(b'\n');
        }
        let file = self.file.clone();
        let written = tokio::task::spawn_blocking(move || {
            (&*file).write_all(&buf)?;
            file.sync_data()
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)));
        if let Err(e) = written {
            self.damaged = true;
            return Err(StateError::Io {
                path: self.path.clone(),
                source: e,
            });
        }
        self.entries += changes.len();
        Ok(())
    }

    /// Replaces the journal with one holding just `records`, atomically.
    pub async fn rewrite<'a>(
        &mut self,
        records: impl Iterator<Item = &'a TaskRecord>,
    ) -> Result<(), StateError> {
        let mut buf = Vec::new();
        let mut entries = 0;
        for record in records {
            serde_json::to_writer(&mut buf, &Change::Put(record)).map_err(|e| {
                StateError::Corrupt {
                    path: self.path.clone(),
                    message: e.to_string(),
                }
            })?;
            buf.push(b'\n');
            entries += 1;
        }
        write_atomic(&self.path, &buf).await?;
        sync_dir(self.path.parent().unwrap_or(Path::new("."))).await?;
        self.file = Arc::new(open_append(&self.path)?);
        self.entries = entries;
        self.damaged = false;
        Ok(())
    }
}

/// Applies the journal's lines to `table`: how many there were, and whether any was unreadable.
fn replay(
    path: &Path,
    bytes: &[u8],
    table: &mut std::collections::BTreeMap<String, TaskRecord>,
) -> (usize, bool) {
    let (mut entries, mut damaged) = (0, false);
    for (n, line) in bytes.split_inclusive(|b| *b == b'\n').enumerate() {
        let complete = line.ends_with(b"\n");
        match serde_json::from_slice::<Entry>(line.trim_ascii_end()) {
            Ok(_) if !complete => damaged = true,
            Ok(Entry::Put(record)) => {
                table.insert(record.spec.task_id.clone(), *record);
            }
            Ok(Entry::Forget(task_id)) => {
                table.remove(&task_id);
            }
            Err(error) if !complete => {
                // The last batch before a crash, never reported: nothing is lost.
                warn!(path = %path.display(), %error, "dropping an incomplete journal line");
                damaged = true;
            }
            Err(error) => {
                warn!(path = %path.display(), line = n + 1, %error, "skipping an unreadable journal line");
                damaged = true;
            }
        }
        entries += 1;
    }
    (entries, damaged)
}

fn open_append(path: &Path) -> Result<std::fs::File, StateError> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_error(path))
}

/// Makes a rename in `dir` durable.
async fn sync_dir(dir: &Path) -> Result<(), StateError> {
    let owned = dir.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::File::open(&owned)?.sync_all())
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
        .map_err(io_error(dir))
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

    fn record(task_id: &str, state: TaskState) -> TaskRecord {
        TaskRecord {
            spec: LaunchSpec {
                task_id: task_id.into(),
                cmd: "true".into(),
                ..LaunchSpec::default()
            },
            pid: Some(42),
            start_time: Some(1234),
            container: None,
            cgroups: Vec::new(),
            status: Status::now(task_id, state, ""),
        }
    }

    /// The attributes `lsattr` shows for `dir`; `None` where it cannot (no `lsattr`, a
    /// filesystem without them).
    fn attributes(dir: &Path) -> Option<String> {
        let out = std::process::Command::new("lsattr")
            .arg("-d")
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        let attributes = text.split_whitespace().next()?;
        out.status.success().then(|| attributes.to_string())
    }

    #[tokio::test]
    async fn sandboxes_are_spread_where_the_filesystem_can() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        // Whether `chattr +T` works here at all.
        let control = dir.path().join("control");
        std::fs::create_dir(&control)?;
        let marked = std::process::Command::new("chattr")
            .arg("+T")
            .arg(&control)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !marked || !attributes(&control).is_some_and(|a| a.contains('T')) {
            eprintln!(
                "SKIPPED: chattr +T does not work in {}",
                dir.path().display()
            );
            return Ok(());
        }
        let state = StateDir::open(dir.path()).await?;
        let shown = attributes(&state.sandboxes_dir());
        assert!(shown.as_ref().is_some_and(|a| a.contains('T')), "{shown:?}");
        // Opening again leaves it so.
        StateDir::open(dir.path()).await?;
        let again = attributes(&state.sandboxes_dir());
        assert!(again.is_some_and(|a| a.contains('T')));
        Ok(())
    }

    #[tokio::test]
    async fn records_survive_a_reopen() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let state = StateDir::open(dir.path()).await?;
        let id = state.agent_id().await?;
        assert_eq!(state.agent_id().await?, id, "the agent id is stable");
        assert_eq!(state.load_epoch().await?, 0);
        state.save_epoch(7).await?;
        let (mut journal, records) = TaskJournal::open(&state).await?;
        assert!(records.is_empty());
        let (t1, t2) = (
            record("t1", TaskState::Starting),
            record("t2", TaskState::Running),
        );
        journal
            .append(&[Change::Put(&t1), Change::Put(&t2)])
            .await?;
        let t1 = record("t1", TaskState::Running);
        journal
            .append(&[Change::Put(&t1), Change::Forget("t2")])
            .await?;
        drop(journal);

        let state = StateDir::open(dir.path()).await?;
        assert_eq!(state.load_epoch().await?, 7);
        let (_, records) = TaskJournal::open(&state).await?;
        assert_eq!(records, vec![t1]);
        Ok(())
    }

    #[tokio::test]
    async fn a_torn_last_line_is_dropped_and_appends_go_on() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let state = StateDir::open(dir.path()).await?;
        let (mut journal, _) = TaskJournal::open(&state).await?;
        let t1 = record("t1", TaskState::Running);
        journal.append(&[Change::Put(&t1)]).await?;
        drop(journal);
        let path = dir.path().join(JOURNAL);
        let mut text = std::fs::read(&path)?;
        let whole = text.clone();
        text.extend_from_slice(&whole[..whole.len() / 2]);
        std::fs::write(&path, &text)?;
        std::fs::write(dir.path().join("tasks/broken.json"), b"{")?;

        let (mut journal, records) = TaskJournal::open(&state).await?;
        assert_eq!(records, vec![t1.clone()]);
        let t2 = record("t2", TaskState::Running);
        journal.append(&[Change::Put(&t2)]).await?;
        drop(journal);
        let (_, records) = TaskJournal::open(&state).await?;
        assert_eq!(records, vec![t1, t2]);
        Ok(())
    }

    #[tokio::test]
    async fn files_of_an_older_agent_move_into_the_journal() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let state = StateDir::open(dir.path()).await?;
        let old = record("old", TaskState::Running);
        write_atomic(&state.task_file("old"), &serde_json::to_vec_pretty(&old)?).await?;
        let (_, records) = TaskJournal::open(&state).await?;
        assert_eq!(records, vec![old.clone()]);
        assert!(!state.task_file("old").exists(), "the old file is gone");
        let (_, records) = TaskJournal::open(&state).await?;
        assert_eq!(records, vec![old], "and its record kept");
        Ok(())
    }

    #[tokio::test]
    async fn a_rewrite_keeps_only_the_live_records() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let state = StateDir::open(dir.path()).await?;
        let (mut journal, _) = TaskJournal::open(&state).await?;
        let live = record("live", TaskState::Running);
        let gone: Vec<TaskRecord> = (0..REWRITE_AFTER)
            .map(|n| record(&format!("gone{n}"), TaskState::Finished))
            .collect();
        let changes: Vec<Change> = gone.iter().map(Change::Put).collect();
        journal.append(&changes).await?;
        assert!(journal.wants_rewrite(1));
        journal.rewrite(std::iter::once(&live)).await?;
        assert!(!journal.wants_rewrite(1));
        let t2 = record("t2", TaskState::Running);
        journal.append(&[Change::Put(&t2)]).await?;
        let (_, records) = TaskJournal::open(&state).await?;
        assert_eq!(records, vec![live, t2]);
        Ok(())
    }
}
