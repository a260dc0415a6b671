//! Reading task sandboxes for the `AgentApi` (Mesos' `files/browse` and `files/read`), without
//! ever reading outside them.
//!
//! A requested path is relative to the sandbox. `..` and absolute paths are refused outright
//! (invalid argument); what is left is resolved with symlinks followed and must still be inside
//! the sandbox, or inside one of the task's persistent volumes (which are linked into the
//! sandbox), else it is refused as forbidden: a task can plant `ln -s /etc x` in its sandbox, and
//! `x/passwd` must not be served.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// `ReadFile` without a length reads this much …
pub(crate) const DEFAULT_READ: u64 = 64 * 1024;
/// … and never more than this.
pub(crate) const MAX_READ: u64 = 1024 * 1024;

#[derive(Debug, PartialEq, thiserror::Error)]
pub(crate) enum FileError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Io(String),
}

/// One directory entry, relative to the sandbox.
#[derive(Debug, PartialEq)]
pub(crate) struct Entry {
    pub path: String,
    pub is_dir: bool,
    pub size: u64,
    pub mtime: i64,
    pub mode: u32,
}

/// A task's sandbox and the places its links may lead.
pub(crate) struct Sandbox {
    /// Canonical path of the sandbox.
    root: PathBuf,
    /// Canonical paths of the task's persistent volumes.
    allowed: Vec<PathBuf>,
}

impl Sandbox {
    /// `root` must exist (a task without a sandbox on this agent is not found).
    pub fn open(root: &Path, allowed: Vec<PathBuf>) -> Result<Self, FileError> {
        let root = root.canonicalize().map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => {
                FileError::NotFound("the task has no sandbox on this agent".into())
            }
            _ => FileError::Io(e.to_string()),
        })?;
        Ok(Self { root, allowed })
    }

    /// Resolves `path` (relative to the sandbox; empty for the sandbox itself) to a real path
    /// that may be read.
    pub fn resolve(&self, path: &str) -> Result<PathBuf, FileError> {
        if path.contains('\0') {
            return Err(FileError::Invalid("the path contains a NUL byte".into()));
        }
        let mut relative = PathBuf::new();
        for component in Path::new(path).components() {
            match component {
                Component::Normal(part) => relative.push(part),
                Component::CurDir => {}
                Component::ParentDir => {
                    return Err(FileError::Invalid(format!(
                        "{path:?}: paths may not contain '..'"
                    )))
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(FileError::Invalid(format!(
                        "{path:?}: paths are relative to the sandbox, not absolute"
                    )))
                }
            }
        }
        let real = self
            .root
            .join(&relative)
            .canonicalize()
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => FileError::NotFound(format!("{path:?} does not exist")),
                _ => FileError::Io(format!("{path:?}: {e}")),
            })?;
        if real.starts_with(&self.root) || self.allowed.iter().any(|a| real.starts_with(a)) {
            Ok(real)
        } else {
            Err(FileError::Forbidden(format!(
                "{path:?} leads outside the sandbox"
            )))
        }
    }

    /// The entries of a directory (or the file itself), sorted by path. Symlinks are described
    /// by what they point to only when that may be read, else as links.
    pub fn list(&self, path: &str) -> Result<Vec<Entry>, FileError> {
        let real = self.resolve(path)?;
        let prefix = clean(path);
        let meta = fs::metadata(&real).map_err(|e| FileError::Io(e.to_string()))?;
        if !meta.is_dir() {
            return Ok(vec![entry(prefix, &meta)]);
        }
        let mut entries = Vec::new();
        for dirent in fs::read_dir(&real).map_err(|e| FileError::Io(e.to_string()))? {
            let dirent = dirent.map_err(|e| FileError::Io(e.to_string()))?;
            let name = dirent.file_name().to_string_lossy().into_owned();
            let relative = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let Ok(lmeta) = dirent.path().symlink_metadata() else {
                continue;
            };
            let meta = if lmeta.file_type().is_symlink() && self.resolve(&relative).is_ok() {
                fs::metadata(dirent.path()).unwrap_or(lmeta)
            } else {
                lmeta
            };
            entries.push(entry(relative, &meta));
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(entries)
    }

    /// Up to `length` bytes (0: [`DEFAULT_READ`]; capped at [`MAX_READ`]) from `offset`
    /// (-1: the end), with the offset actually read from and the file's size.
    pub fn read(
        &self,
        path: &str,
        offset: i64,
        length: u64,
    ) -> Result<(Vec<u8>, i64, u64), FileError> {
        let real = self.resolve(path)?;
        let mut file = File::open(&real).map_err(|e| FileError::Io(format!("{path:?}: {e}")))?;
        let meta = file
            .metadata()
            .map_err(|e| FileError::Io(format!("{path:?}: {e}")))?;
        if meta.is_dir() {
            return Err(FileError::Invalid(format!("{path:?} is a directory")));
        }
        let size = meta.len();
        let start = match offset {
            -1 => size,
            o if o < 0 => {
                return Err(FileError::Invalid(format!(
                    "offset {o} is neither -1 nor a position"
                )))
            }
            o => (o as u64).min(size),
        };
        let length = match length {
            0 => DEFAULT_READ,
            n => n.min(MAX_READ),
        };
        file.seek(SeekFrom::Start(start))
            .map_err(|e| FileError::Io(e.to_string()))?;
        let mut data = Vec::new();
        file.take(length)
            .read_to_end(&mut data)
            .map_err(|e| FileError::Io(e.to_string()))?;
        Ok((data, i64::try_from(start).unwrap_or(i64::MAX), size))
    }
}

/// The request's path as shown in answers: no leading `./`, no trailing `/`.
fn clean(path: &str) -> String {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn entry(path: String, meta: &fs::Metadata) -> Entry {
    Entry {
        path,
        is_dir: meta.is_dir(),
        size: meta.len(),
        mtime: meta.mtime(),
        mode: meta.permissions().mode(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_in_the_sandbox() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let sandbox = dir.path().join("sandbox");
        let volume = dir.path().join("volume");
        fs::create_dir_all(sandbox.join("sub"))?;
        fs::create_dir_all(&volume)?;
        fs::write(sandbox.join("stdout"), "0123456789")?;
        fs::write(volume.join("kept"), "data")?;
        fs::write(dir.path().join("secret"), "no")?;
        std::os::unix::fs::symlink("/etc", sandbox.join("etc"))?;
        std::os::unix::fs::symlink(dir.path().join("secret"), sandbox.join("sub/secret"))?;
        std::os::unix::fs::symlink(&volume, sandbox.join("data"))?;
        let s = Sandbox::open(&sandbox, vec![volume.canonicalize()?])?;

        assert!(matches!(s.resolve("../secret"), Err(FileError::Invalid(_))));
        assert!(matches!(
            s.resolve("sub/../../secret"),
            Err(FileError::Invalid(_))
        ));
        assert!(matches!(
            s.resolve("/etc/passwd"),
            Err(FileError::Invalid(_))
        ));
        assert!(matches!(
            s.resolve("etc/passwd"),
            Err(FileError::Forbidden(_))
        ));
        assert!(matches!(
            s.resolve("sub/secret"),
            Err(FileError::Forbidden(_))
        ));
        assert!(matches!(s.resolve("missing"), Err(FileError::NotFound(_))));
        assert_eq!(s.read("data/kept", 0, 0)?.0, b"data");

        let (data, offset, size) = s.read("stdout", 3, 4)?;
        assert_eq!((data.as_slice(), offset, size), (&b"3456"[..], 3, 10));
        let (data, offset, _) = s.read("./stdout", -1, 0)?;
        assert_eq!((data.len(), offset), (0, 10));
        let (data, offset, _) = s.read("stdout", 99, 0)?;
        assert_eq!((data.len(), offset), (0, 10));
        assert!(matches!(s.read("sub", 0, 0), Err(FileError::Invalid(_))));

        let listed: Vec<(String, bool)> = s
            .list("")?
            .into_iter()
            .map(|e| (e.path, e.is_dir))
            .collect();
        assert_eq!(
            listed,
            vec![
                ("data".to_string(), true),
                ("etc".to_string(), false),
                ("stdout".to_string(), false),
                ("sub".to_string(), true),
            ]
        );
        let file = s.list("stdout/")?;
        assert_eq!(file.len(), 1);
        assert_eq!((file[0].path.as_str(), file[0].size), ("stdout", 10));
        assert_eq!(s.list("sub")?[0].path, "sub/secret");
        assert!(matches!(
            Sandbox::open(&dir.path().join("none"), vec![]),
            Err(FileError::NotFound(_))
        ));
        Ok(())
    }
}
