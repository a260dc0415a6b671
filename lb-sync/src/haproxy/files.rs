//! Writing the configuration: validated with `haproxy -c` before it is used, and replaced
//! atomically (temp file in the same directory, fsync, rename, fsync of the directory), so that
//! HAProxy and any reader see either the old file or the new one, never half of one.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("HAProxy refuses the configuration: {0}")]
    Invalid(String),
    #[error("cannot run {binary}: {source} (scripts/test installs haproxy)")]
    Binary {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn temp_path(target: &Path) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "haproxy.cfg".into());
    target.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

fn write_synced(path: &Path, text: &str) -> Result<(), WriteError> {
    let io = |source| WriteError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::create(path).map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(())
}

/// `haproxy -c -q -f <path>`: Ok when HAProxy accepts the file.
pub async fn validate(binary: &Path, path: &Path) -> Result<(), WriteError> {
    let out = Command::new(binary)
        .arg("-c")
        .arg("-f")
        .arg(path)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|source| WriteError::Binary {
            binary: binary.to_path_buf(),
            source,
        })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let alerts: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("ALERT"))
        .take(5)
        .collect();
    Err(WriteError::Invalid(if alerts.is_empty() {
        stderr.trim().chars().take(500).collect()
    } else {
        alerts.join(" | ")
    }))
}

/// Validates `text` without installing it (a temp file beside `target`, removed afterwards).
pub async fn check_text(binary: &Path, target: &Path, text: &str) -> Result<(), WriteError> {
    let tmp = temp_path(target);
    let result = async {
        write_synced(&tmp, text)?;
        validate(binary, &tmp).await
    }
    .await;
    let _ = std::fs::remove_file(&tmp);
    result
}

/// Puts `text` at `target` atomically without asking HAProxy: for files that differ from a
/// validated one only in machine-written server lines.
pub fn write_unchecked(target: &Path, text: &str) -> Result<(), WriteError> {
    let tmp = temp_path(target);
    let result = write_synced(&tmp, text).and_then(|()| {
        std::fs::rename(&tmp, target).map_err(|source| WriteError::Io {
            path: target.to_path_buf(),
            source,
        })
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Validates `text` and puts it at `target` atomically. On any failure `target` is untouched.
pub async fn write_validated(binary: &Path, target: &Path, text: &str) -> Result<(), WriteError> {
    if let Some(dir) = target.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(|source| WriteError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
    }
    let tmp = temp_path(target);
    let result = async {
        write_synced(&tmp, text)?;
        validate(binary, &tmp).await?;
        std::fs::rename(&tmp, target).map_err(|source| WriteError::Io {
            path: target.to_path_buf(),
            source,
        })?;
        if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
