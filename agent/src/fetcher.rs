//! The fetcher: what Mesos' fetcher did for Marathon's `fetch` (and `uris`). Before a task
//! starts, each URI is downloaded into its sandbox; archives are unpacked when `extract` is set,
//! files made executable when `executable` is, and with `cache` a copy is kept in
//! `<work_dir>/cache/` so the next task asking for the same URI does not download it again.
//!
//! ```text
//!   http(s)://…  ─┐                       ┌─► <sandbox>/<dest_path or file name>   (0755 if executable)
//!   file://…, /… ─┼─► (cache hit? copy) ──┤
//!                 │                       └─► extracted next to it (tar.gz, tgz, tar.bz2, tbz2,
//!                 └─► download ─► cache ─►      tar.xz, txz, tar, zip)
//! ```
//!
//! Every failure is a message naming the URI, which becomes the task's TASK_FAILED message (and
//! so the app's `lastTaskFailure`). Paths from URIs, `dest_path` and archive entries never leave
//! the sandbox.

use std::fs::{self, File};
use std::io::{self, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::process::RunAs;
use crate::task::FetchSpec;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// No single download may take longer than this.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Archive suffixes Mesos' fetcher extracts, longest first.
const ARCHIVES: [&str; 8] = [
    ".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tbz2", ".txz", ".tar", ".zip",
];

#[derive(Clone, Debug)]
pub(crate) struct Fetcher {
    http: reqwest::Client,
    cache_dir: PathBuf,
}

impl Fetcher {
    pub fn new(cache_dir: PathBuf) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(DOWNLOAD_TIMEOUT)
            .user_agent(concat!("stride-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the fetcher's HTTP client: {e}"))?;
        Ok(Self { http, cache_dir })
    }

    /// Fetches every URI into `sandbox`, in order; the first failure ends it.
    pub async fn fetch_all(
        &self,
        uris: &[FetchSpec],
        sandbox: &Path,
        owner: Option<&RunAs>,
    ) -> Result<(), String> {
        for spec in uris {
            self.fetch(spec, sandbox, owner)
                .await
                .map_err(|e| format!("Failed to fetch '{}': {e}", spec.uri))?;
        }
        Ok(())
    }

    async fn fetch(
        &self,
        spec: &FetchSpec,
        sandbox: &Path,
        owner: Option<&RunAs>,
    ) -> Result<(), String> {
        let source = Source::parse(&spec.uri)?;
        let name = if spec.dest_path.is_empty() {
            source.file_name()
        } else {
            spec.dest_path.clone()
        };
        let relative = sandbox_relative(&name)?;
        let dest = sandbox.join(&relative);
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        if spec.cache {
            let cached = self.cached(&source, &spec.uri).await?;
            tokio::fs::copy(&cached, &dest)
                .await
                .map_err(|e| format!("cannot copy the cached file into the sandbox: {e}"))?;
        } else {
            self.download(&source, &dest).await?;
        }
        if spec.executable {
            tokio::fs::set_permissions(&dest, fs::Permissions::from_mode(0o755))
                .await
                .map_err(|e| format!("cannot make {} executable: {e}", dest.display()))?;
        }
        let mut created = vec![dest.clone()];
        if spec.extract {
            if let Some(kind) = archive_kind(&name) {
                let into = dest.parent().unwrap_or(sandbox).to_path_buf();
                let archive = dest.clone();
                let extracted = tokio::task::spawn_blocking(move || extract(&archive, kind, &into))
                    .await
                    .map_err(|e| format!("extraction stopped: {e}"))?
                    .map_err(|e| format!("cannot extract {name}: {e}"))?;
                created.extend(extracted);
            }
        }
        if let Some(user) = owner {
            for path in &created {
                chown_tree(path, user)
                    .map_err(|e| format!("cannot give {} to {}: {e}", path.display(), user.name))?;
            }
        }
        Ok(())
    }

    /// The cached copy of `uri`, downloaded first if there is none.
    async fn cached(&self, source: &Source, uri: &str) -> Result<PathBuf, String> {
        let key = hex(&Sha256::digest(uri.as_bytes()));
        let path = self.cache_dir.join(&key);
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            tracing::debug!(uri, "fetcher cache hit");
            return Ok(path);
        }
        tokio::fs::create_dir_all(&self.cache_dir)
            .await
            .map_err(|e| format!("cannot create {}: {e}", self.cache_dir.display()))?;
        self.download(source, &path).await?;
        Ok(path)
    }

    /// Writes the source to `dest` through a temporary sibling, so that an interrupted download
    /// never looks like a complete one (which matters for the cache).
    async fn download(&self, source: &Source, dest: &Path) -> Result<(), String> {
        let tmp = temporary_sibling(dest);
        let result = match source {
            Source::Local(path) => tokio::fs::copy(path, &tmp)
                .await
                .map(|_| ())
                .map_err(|e| format!("cannot copy {}: {e}", path.display())),
            Source::Http(url) => self.http_get(url, &tmp).await,
        };
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        tokio::fs::rename(&tmp, dest)
            .await
            .map_err(|e| format!("cannot move the download to {}: {e}", dest.display()))
    }

    async fn http_get(&self, url: &str, to: &Path) -> Result<(), String> {
        let mut response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| error_chain(&e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        let mut file = tokio::fs::File::create(to)
            .await
            .map_err(|e| format!("cannot create {}: {e}", to.display()))?;
        while let Some(chunk) = response.chunk().await.map_err(|e| error_chain(&e))? {
            file.write_all(&chunk)
                .await
                .map_err(|e| format!("cannot write {}: {e}", to.display()))?;
        }
        file.flush()
            .await
            .map_err(|e| format!("cannot write {}: {e}", to.display()))
    }
}

/// Where a URI's bytes come from.
#[derive(Debug, PartialEq)]
enum Source {
    Http(String),
    Local(PathBuf),
}

impl Source {
    fn parse(uri: &str) -> Result<Self, String> {
        let lower = uri.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            return Ok(Source::Http(uri.to_string()));
        }
        if let Some(path) = uri.strip_prefix("file://") {
            // `file:///x` and `file://localhost/x`.
            let path = path.strip_prefix("localhost").unwrap_or(path);
            if path.starts_with('/') {
                return Ok(Source::Local(PathBuf::from(percent_decode(path))));
            }
            return Err("file URIs must name an absolute path".into());
        }
        if uri.starts_with('/') {
            return Ok(Source::Local(PathBuf::from(uri)));
        }
        match uri.split_once("://") {
            Some((scheme, _)) => Err(format!(
                "the {scheme} scheme is not supported (only http, https and file)"
            )),
            None => {
                Err("not a URI (expected http://, https://, file:// or an absolute path)".into())
            }
        }
    }

    /// The last segment of the path, without query or fragment: the file's name in the sandbox.
    fn file_name(&self) -> String {
        let name = match self {
            Source::Local(path) => path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            Source::Http(url) => {
                let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
                let path = rest.split(['?', '#']).next().unwrap_or("");
                let path = path.split_once('/').map_or("", |(_, p)| p);
                percent_decode(path.rsplit('/').next().unwrap_or(""))
            }
        };
        if name.is_empty() || name == "." || name == ".." || name.contains('/') {
            "download".to_string()
        } else {
            name
        }
    }
}

/// A relative path that stays inside the sandbox: no `..`, not absolute, not empty.
pub(crate) fn sandbox_relative(path: &str) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "{path:?} is not a relative path inside the sandbox"
                ))
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(format!("{path:?} names no file"));
    }
    Ok(out)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum ArchiveKind {
    TarGz,
    TarBz2,
    TarXz,
    Tar,
    Zip,
}

fn archive_kind(name: &str) -> Option<ArchiveKind> {
    let lower = name.to_ascii_lowercase();
    let suffix = ARCHIVES.iter().find(|s| lower.ends_with(*s))?;
    Some(match *suffix {
        ".tar.gz" | ".tgz" => ArchiveKind::TarGz,
        ".tar.bz2" | ".tbz2" => ArchiveKind::TarBz2,
        ".tar.xz" | ".txz" => ArchiveKind::TarXz,
        ".tar" => ArchiveKind::Tar,
        _ => ArchiveKind::Zip,
    })
}

/// Unpacks `archive` into `into`; returns the top-level paths it created (for `chown`).
fn extract(archive: &Path, kind: ArchiveKind, into: &Path) -> io::Result<Vec<PathBuf>> {
    let before: Vec<PathBuf> = list_dir(into);
    let file = BufReader::new(File::open(archive)?);
    match kind {
        ArchiveKind::TarGz => unpack_tar(flate2::read::MultiGzDecoder::new(file), into)?,
        ArchiveKind::TarBz2 => unpack_tar(bzip2::read::MultiBzDecoder::new(file), into)?,
        ArchiveKind::Tar => unpack_tar(file, into)?,
        ArchiveKind::TarXz => {
            // lzma-rs decompresses into a writer, not a reader: through an unnamed temporary file.
            let mut tar = tempfile::tempfile_in(into)?;
            let mut input = file;
            lzma_rs::xz_decompress(&mut input, &mut tar)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            tar.flush()?;
            io::Seek::rewind(&mut tar)?;
            unpack_tar(BufReader::new(tar), into)?
        }
        ArchiveKind::Zip => unpack_zip(file, into)?,
    }
    Ok(list_dir(into)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect())
}

fn list_dir(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// The tar crate refuses entries with `..`, strips leading `/` and will not write through
/// symlinks that point outside `into`.
fn unpack_tar(reader: impl io::Read, into: &Path) -> io::Result<()> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(false);
    archive.set_preserve_ownerships(false);
    archive.set_overwrite(true);
    archive.unpack(into)
}

fn unpack_zip(reader: impl io::Read + io::Seek, into: &Path) -> io::Result<()> {
    let mut archive = zip::ZipArchive::new(reader)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        // `enclosed_name` is `None` for names that would leave the directory.
        let Some(name) = entry.enclosed_name() else {
            tracing::warn!(index = i, "skipping a zip entry outside the sandbox");
            continue;
        };
        let path = into.join(name);
        if entry.is_dir() {
            fs::create_dir_all(&path)?;
            continue;
        }
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        // Never write through a symlink planted by an earlier entry.
        if path
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink())
        {
            fs::remove_file(&path)?;
        }
        let mut out = File::create(&path)?;
        io::copy(&mut entry, &mut out)?;
        if let Some(mode) = entry.unix_mode() {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o777))?;
        }
    }
    Ok(())
}

/// Gives `path` (and, for a directory, everything below it) to the task's user.
fn chown_tree(path: &Path, user: &RunAs) -> io::Result<()> {
    let chown = |p: &Path| {
        nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            p,
            Some(user.uid),
            Some(user.gid),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(io::Error::from)
    };
    chown(path)?;
    let meta = path.symlink_metadata()?;
    if meta.is_dir() {
        for entry in fs::read_dir(path)? {
            chown_tree(&entry?.path(), user)?;
        }
    }
    Ok(())
}

fn temporary_sibling(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".stride-fetch-{}", uuid::Uuid::new_v4().simple()));
    path.with_file_name(name)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(digits, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// reqwest hides the cause (refused, DNS, timeout) in the source chain.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_and_names() {
        let s = Source::parse("https://example.com/dl/app-1.2.tgz?sig=x#frag").ok();
        assert_eq!(
            s.as_ref().map(Source::file_name).as_deref(),
            Some("app-1.2.tgz")
        );
        assert_eq!(
            Source::parse("file:///opt/a%20b.sh").ok(),
            Some(Source::Local(PathBuf::from("/opt/a b.sh")))
        );
        assert_eq!(
            Source::parse("/opt/x")
                .ok()
                .map(|s| s.file_name())
                .as_deref(),
            Some("x")
        );
        assert_eq!(
            Source::parse("http://example.com/")
                .ok()
                .map(|s| s.file_name())
                .as_deref(),
            Some("download")
        );
        assert!(Source::parse("hdfs://nn/x")
            .err()
            .is_some_and(|e| e.contains("hdfs")));
        assert!(Source::parse("relative/x").is_err());
        assert!(Source::parse("file://host/x").is_err());
    }

    #[test]
    fn destinations_stay_in_the_sandbox() {
        assert_eq!(sandbox_relative("a/./b").ok(), Some(PathBuf::from("a/b")));
        for bad in ["../x", "/etc/passwd", "a/../../x", "", "."] {
            assert!(sandbox_relative(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn archives_are_recognised_by_suffix() {
        assert_eq!(archive_kind("a.TAR.GZ"), Some(ArchiveKind::TarGz));
        assert_eq!(archive_kind("a.tbz2"), Some(ArchiveKind::TarBz2));
        assert_eq!(archive_kind("a.txz"), Some(ArchiveKind::TarXz));
        assert_eq!(archive_kind("a.zip"), Some(ArchiveKind::Zip));
        assert_eq!(archive_kind("a.gz"), None);
    }

    fn tar_bytes() -> anyhow::Result<Vec<u8>> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        let body = b"#!/bin/sh\necho hi\n";
        header.set_size(body.len() as u64);
        header.set_mode(0o755);
        header.set_cksum();
        builder.append_data(&mut header, "pkg/run.sh", &body[..])?;
        Ok(builder.into_inner()?)
    }

    #[test]
    fn every_archive_format_extracts() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let tar = tar_bytes()?;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar)?;
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        bz.write_all(&tar)?;
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut &tar[..], &mut xz)?;
        let mut zip = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        zip.start_file(
            "pkg/run.sh",
            zip::write::SimpleFileOptions::default().unix_permissions(0o755),
        )?;
        zip.write_all(b"#!/bin/sh\necho hi\n")?;
        zip.start_file("../escape.txt", zip::write::SimpleFileOptions::default())?;
        zip.write_all(b"no")?;
        let zip = zip.finish()?.into_inner();
        for (name, bytes) in [
            ("a.tar", tar.clone()),
            ("a.tgz", gz.finish()?),
            ("a.tar.bz2", bz.finish()?),
            ("a.txz", xz),
            ("a.zip", zip),
        ] {
            let into = dir.path().join(name.replace('.', "-"));
            fs::create_dir(&into)?;
            let archive = into.join(name);
            fs::write(&archive, bytes)?;
            let kind = archive_kind(name).ok_or_else(|| anyhow::anyhow!("kind"))?;
            let created = extract(&archive, kind, &into)?;
            let script = into.join("pkg/run.sh");
            assert_eq!(
                fs::read_to_string(&script)?,
                "#!/bin/sh\necho hi\n",
                "{name}"
            );
            assert_eq!(
                fs::metadata(&script)?.permissions().mode() & 0o111,
                0o111,
                "{name}: the mode is kept"
            );
            assert_eq!(created, vec![into.join("pkg")], "{name}");
            assert!(!dir.path().join("escape.txt").exists());
        }
        Ok(())
    }
}
