//! Confining process tasks with cgroups: each task gets a group of its own with a memory limit
//! (its `mem`) and a CPU quota (its `cpus`), and the kernel's OOM kills in that group tell a
//! task that ran out of memory from one that crashed.
//!
//! ```text
//! cgroup v2 (unified):  <agent cgroup>/tasks/<task_id>          memory.max, cpu.max
//!                       <agent cgroup>/stride-agent             the processes of the agent's
//!                                                               group, if they had to move out
//!                                                               (v2 allows no internal processes)
//! cgroup v1 (legacy):   <memory hierarchy>/<agent cgroup>/stride-tasks/<task_id>
//!                       <cpu hierarchy>/<agent cgroup>/stride-tasks/<task_id>
//! ```
//!
//! v2 is preferred; v1 is used where the node has no usable v2 memory controller (hybrid
//! set-ups, older distributions). In v1 every cgroup directory already holds a file named
//! `tasks`, hence `stride-tasks` there. Where neither works, [`Cgroups::detect`] says why, the
//! agent logs it once and runs tasks unconfined.
//!
//! A task's process is in its groups before it runs anything of the task, so no child escapes
//! the limits by being forked first: in v1 it is started inside them by the agent's spawner
//! thread ([`crate::spawner`]); in v2 it is started behind a gate (a shell waiting on its stdin)
//! that the agent opens only after writing the pid into the group. The CPU quota is set once the
//! process is inside.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// CFS period for CPU quotas, in microseconds (the kernel's default).
const CPU_PERIOD_US: u64 = 100_000;
/// The smallest quota the kernel accepts.
const MIN_CPU_QUOTA_US: u64 = 1_000;
/// Name of the directory holding the tasks' groups (v2), and the agent's own leaf group.
const V2_TASKS: &str = "tasks";
const V2_AGENT_LEAF: &str = "stride-agent";
/// Name of the directory holding the tasks' groups in each v1 hierarchy.
const V1_TASKS: &str = "stride-tasks";

/// Where the agent may create task groups.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Cgroups {
    V2 {
        /// `<agent cgroup>/tasks`, with the memory and cpu controllers enabled for its children.
        tasks: PathBuf,
    },
    V1 {
        /// `<memory hierarchy>/<agent cgroup>/stride-tasks`.
        memory: PathBuf,
        /// The same in the cpu hierarchy, when it is mounted and writable.
        cpu: Option<PathBuf>,
    },
}

/// The groups of one task, as recorded with it (so that a restarted agent, whatever its
/// configuration, still finds them).
pub(crate) type TaskGroups = Vec<PathBuf>;

impl Cgroups {
    /// Finds a usable hierarchy and proves it by creating (and removing) a probe group with a
    /// memory limit. `Err` says why tasks will run unconfined.
    pub fn detect() -> Result<Self, String> {
        let own = fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
        let v2 = detect_v2(&own, &mountinfo);
        let found = match v2 {
            Ok(found) => found,
            Err(v2_error) => detect_v1(&own, &mountinfo)
                .map_err(|v1_error| format!("cgroup v2: {v2_error}; cgroup v1: {v1_error}"))?,
        };
        // Unique: several agents may probe at once in one process (tests, `stride dev`).
        let probe = format!(".probe-{}", uuid::Uuid::new_v4().simple());
        let groups = found
            .create(&probe, 64.0, 0.5)
            .map_err(|e| format!("cannot create a task cgroup: {e}"))?;
        let limited = found
            .limit_cpu(&probe, 0.5)
            .map_err(|e| format!("cannot set a task cgroup's CPU quota: {e}"));
        remove_now(&groups);
        limited?;
        Ok(found)
    }

    pub fn version(&self) -> u8 {
        match self {
            Cgroups::V2 { .. } => 2,
            Cgroups::V1 { .. } => 1,
        }
    }

    /// Creates (or reuses) the groups of `task_id` with its memory limit, `mem` in MiB (none if
    /// 0), and a group for a CPU quota when `cpus` asks for one. The quota itself is set by
    /// [`Cgroups::limit_cpu`] once the task's process is inside: a v1 group is entered by the
    /// agent's spawner thread (see [`crate::spawner`]), which a quota would hold up.
    pub fn create(&self, task_id: &str, mem: f64, cpus: f64) -> io::Result<TaskGroups> {
        let mem_bytes = (mem > 0.0).then_some((mem * 1024.0 * 1024.0) as u64);
        match self {
            Cgroups::V2 { tasks } => {
                let dir = tasks.join(task_id);
                make_dir(&dir)?;
                if let Some(bytes) = mem_bytes {
                    fs::write(dir.join("memory.max"), bytes.to_string())?;
                    // Best effort: without swap the limit is the limit; one OOM ends the group.
                    let _ = fs::write(dir.join("memory.swap.max"), "0");
                    let _ = fs::write(dir.join("memory.oom.group"), "1");
                }
                Ok(vec![dir])
            }
            Cgroups::V1 { memory, cpu } => {
                let dir = memory.join(task_id);
                make_dir(&dir)?;
                let mut groups = vec![dir.clone()];
                if let Some(bytes) = mem_bytes {
                    fs::write(dir.join("memory.limit_in_bytes"), bytes.to_string())?;
                    // Only exists with swap accounting; must not be below the limit above.
                    let _ = fs::write(dir.join("memory.memsw.limit_in_bytes"), bytes.to_string());
                }
                if let (Some(cpu), Some(_)) = (cpu, quota_of(cpus)) {
                    let dir = cpu.join(task_id);
                    make_dir(&dir)?;
                    groups.push(dir);
                }
                Ok(groups)
            }
        }
    }

    /// Sets the CPU quota of `task_id`'s groups for `cpus` (none if 0).
    pub fn limit_cpu(&self, task_id: &str, cpus: f64) -> io::Result<()> {
        let Some(quota) = quota_of(cpus) else {
            return Ok(());
        };
        match self {
            Cgroups::V2 { tasks } => fs::write(
                tasks.join(task_id).join("cpu.max"),
                format!("{quota} {CPU_PERIOD_US}"),
            ),
            Cgroups::V1 { cpu: None, .. } => Ok(()),
            Cgroups::V1 { cpu: Some(cpu), .. } => {
                let dir = cpu.join(task_id);
                // Each write walks every CPU group on the node (the kernel checks the
                // hierarchy's quotas), so the period is written only when it is not already
                // the kernel's default.
                let period = dir.join("cpu.cfs_period_us");
                if fs::read_to_string(&period)?.trim() != CPU_PERIOD_US.to_string() {
                    fs::write(&period, CPU_PERIOD_US.to_string())?;
                }
                fs::write(dir.join("cpu.cfs_quota_us"), quota.to_string())
            }
        }
    }
}

/// The CFS quota for `cpus`, in microseconds per [`CPU_PERIOD_US`]; none for 0.
fn quota_of(cpus: f64) -> Option<u64> {
    (cpus > 0.0).then(|| ((cpus * CPU_PERIOD_US as f64) as u64).max(MIN_CPU_QUOTA_US))
}

impl Cgroups {
    /// Removes task groups that have stayed empty for `min_age`: left behind by tasks that
    /// ended while no agent was watching (an agent killed with its tasks, say). A group with
    /// processes cannot be removed, and a fresh one is spared, so groups of other agents sharing
    /// the hierarchy are never disturbed.
    pub fn sweep_abandoned(&self, min_age: Duration) -> usize {
        let roots: Vec<&PathBuf> = match self {
            Cgroups::V2 { tasks } => vec![tasks],
            Cgroups::V1 { memory, cpu } => std::iter::once(memory).chain(cpu.iter()).collect(),
        };
        let now = std::time::SystemTime::now();
        let mut removed = 0;
        for root in roots {
            let Ok(entries) = fs::read_dir(root) else {
                continue;
            };
            for entry in entries.flatten() {
                let old = entry
                    .metadata()
                    .ok()
                    .filter(|m| m.is_dir())
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| now.duration_since(t).ok())
                    .is_some_and(|age| age >= min_age);
                if old && fs::remove_dir(entry.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        removed
    }
}

/// Moves process `pid` (all its threads) into every group of a task.
pub(crate) fn add_process(groups: &TaskGroups, pid: u32) -> io::Result<()> {
    for dir in groups {
        fs::write(dir.join("cgroup.procs"), pid.to_string())?;
    }
    Ok(())
}

/// Whether the kernel's OOM killer killed anything in the task's groups.
pub(crate) fn oom_killed(groups: &TaskGroups) -> bool {
    groups.iter().any(|dir| {
        // v2 counts in memory.events, v1 (kernel ≥ 4.13) in memory.oom_control.
        ["memory.events", "memory.oom_control"].iter().any(|file| {
            fs::read_to_string(dir.join(file))
                .ok()
                .and_then(|text| counter(&text, "oom_kill"))
                .is_some_and(|n| n > 0)
        })
    })
}

/// Reads `name <n>` from a flat-keyed cgroup file.
fn counter(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok()).flatten()
    })
}

/// Removes a task's groups once whatever was left in them is gone (the kernel refuses to remove
/// a group with members, and killed processes take a moment to leave).
pub(crate) async fn remove(groups: TaskGroups) {
    for attempt in 0..50 {
        let left: Vec<&PathBuf> = groups
            .iter()
            .filter(|dir| dir.exists() && fs::remove_dir(dir).is_err())
            .collect();
        if left.is_empty() {
            return;
        }
        if attempt == 49 {
            for dir in left {
                tracing::warn!(path = %dir.display(), "cannot remove a task's cgroup");
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn remove_now(groups: &TaskGroups) {
    for dir in groups {
        let _ = fs::remove_dir(dir);
    }
}

fn make_dir(dir: &Path) -> io::Result<()> {
    match fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

/// One mount of a cgroup filesystem, from `/proc/self/mountinfo`.
#[derive(Debug, PartialEq)]
struct CgroupMount {
    /// The hierarchy's path that is mounted (`/` unless the mount is of a sub-group).
    root: String,
    mount_point: PathBuf,
    /// `cgroup2`, or `cgroup` with its controllers in `options`.
    fs_type: String,
    options: Vec<String>,
}

fn cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            // `id parent major:minor root mount-point options [optional...] - fstype source super-options`
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            let fs_type = *right.first()?;
            if fs_type != "cgroup" && fs_type != "cgroup2" {
                return None;
            }
            Some(CgroupMount {
                root: unescape(left.get(3)?),
                mount_point: PathBuf::from(unescape(left.get(4)?)),
                fs_type: fs_type.to_string(),
                options: right
                    .get(2)
                    .map(|o| o.split(',').map(String::from).collect())
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// mountinfo escapes spaces and a few other bytes as `\ooo`.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(n) = u8::from_str_radix(digits, 8) {
                out.push(n);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The directory of the cgroup at `path` (as `/proc/self/cgroup` names it) under `mount`.
fn group_dir(mount: &CgroupMount, path: &str) -> Option<PathBuf> {
    let relative = if mount.root == "/" {
        path
    } else {
        path.strip_prefix(mount.root.as_str())?
    };
    Some(mount.mount_point.join(relative.trim_start_matches('/')))
}

fn detect_v2(own: &str, mountinfo: &str) -> Result<Cgroups, String> {
    let path = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("the agent is in no cgroup v2 group")?;
    let mount = cgroup_mounts(mountinfo)
        .into_iter()
        .find(|m| m.fs_type == "cgroup2")
        .ok_or("no cgroup2 filesystem is mounted")?;
    let mut agent = group_dir(&mount, path).ok_or("the agent's cgroup is outside the mount")?;
    // A restarted agent finds itself in the leaf an earlier run moved it to.
    if agent.file_name().is_some_and(|n| n == V2_AGENT_LEAF) {
        if let Some(parent) = agent.parent() {
            agent = parent.to_path_buf();
        }
    }
    let controllers = fs::read_to_string(agent.join("cgroup.controllers"))
        .map_err(|e| format!("{}: {e}", agent.join("cgroup.controllers").display()))?;
    for wanted in ["memory", "cpu"] {
        if !controllers.split_whitespace().any(|c| c == wanted) {
            return Err(format!(
                "the {wanted} controller is not available in {} (controllers: {})",
                agent.display(),
                controllers.trim()
            ));
        }
    }
    enable_controllers(&agent)?;
    let tasks = agent.join(V2_TASKS);
    make_dir(&tasks).map_err(|e| format!("cannot create {}: {e}", tasks.display()))?;
    fs::write(tasks.join("cgroup.subtree_control"), "+memory +cpu")
        .map_err(|e| format!("cannot enable controllers in {}: {e}", tasks.display()))?;
    Ok(Cgroups::V2 { tasks })
}

/// Enables the memory and cpu controllers for the children of `agent`. A v2 group with
/// processes cannot do that (no internal processes), so the agent first moves itself into a
/// leaf of its own.
fn enable_controllers(agent: &Path) -> Result<(), String> {
    let control = agent.join("cgroup.subtree_control");
    match fs::write(&control, "+memory +cpu") {
        Ok(()) => return Ok(()),
        Err(e) if e.raw_os_error() != Some(nix::libc::EBUSY) => {
            return Err(format!(
                "cannot enable controllers in {}: {e}",
                agent.display()
            ))
        }
        Err(_) => {}
    }
    let leaf = agent.join(V2_AGENT_LEAF);
    make_dir(&leaf).map_err(|e| format!("cannot create {}: {e}", leaf.display()))?;
    // Every process of the group must move, or the parent still has members.
    let members = fs::read_to_string(agent.join("cgroup.procs"))
        .map_err(|e| format!("cannot read {}: {e}", agent.join("cgroup.procs").display()))?;
    for pid in members.split_whitespace() {
        // A process that exits meanwhile cannot be moved; that is fine.
        let _ = fs::write(leaf.join("cgroup.procs"), pid);
    }
    fs::write(&control, "+memory +cpu").map_err(|e| {
        format!(
            "cannot enable controllers in {} even after moving the agent into {}: {e}",
            agent.display(),
            leaf.display()
        )
    })
}

fn detect_v1(own: &str, mountinfo: &str) -> Result<Cgroups, String> {
    let mounts = cgroup_mounts(mountinfo);
    // `N:controller[,controller]:/path`
    let path_of = |controller: &str| {
        own.lines().find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers
                .split(',')
                .any(|c| c == controller)
                .then(|| path.to_string())
        })
    };
    let dir_of = |controller: &str| -> Option<PathBuf> {
        let path = path_of(controller)?;
        let mount = mounts
            .iter()
            .find(|m| m.fs_type == "cgroup" && m.options.iter().any(|o| o == controller))?;
        group_dir(mount, &path)
    };
    let memory = dir_of("memory").ok_or("no memory hierarchy is mounted")?;
    if !memory.join("memory.limit_in_bytes").exists() {
        return Err(format!(
            "{} is not a memory cgroup the agent can see",
            memory.display()
        ));
    }
    let memory_tasks = memory.join(V1_TASKS);
    make_dir(&memory_tasks)
        .map_err(|e| format!("cannot create {}: {e}", memory_tasks.display()))?;
    let cpu = dir_of("cpu").and_then(|dir| {
        let tasks = dir.join(V1_TASKS);
        make_dir(&tasks).ok().map(|()| tasks)
    });
    Ok(Cgroups::V1 {
        memory: memory_tasks,
        cpu,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
24 30 0:22 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs ro,mode=755
25 24 0:23 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
26 24 0:24 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
27 24 0:25 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
28 24 0:26 /docker/abc /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
";

    #[test]
    fn mounts_are_read_from_mountinfo() {
        let mounts = cgroup_mounts(MOUNTINFO);
        assert_eq!(mounts.len(), 4);
        assert_eq!(mounts[0].fs_type, "cgroup2");
        assert_eq!(
            mounts[2].mount_point,
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
        );
        assert!(mounts[2].options.iter().any(|o| o == "cpuacct"));
        // A mount of a sub-group maps the group's path below its root.
        assert_eq!(
            group_dir(&mounts[3], "/docker/abc/x"),
            Some(PathBuf::from("/sys/fs/cgroup/pids/x"))
        );
        assert_eq!(group_dir(&mounts[3], "/elsewhere"), None);
        assert_eq!(unescape(r"/a\040b"), "/a b");
    }

    #[test]
    fn only_old_empty_groups_are_swept() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (memory, cpu) = (dir.path().join("memory"), dir.path().join("cpu"));
        for d in ["memory/ended", "memory/running", "cpu/ended"] {
            fs::create_dir_all(dir.path().join(d))?;
        }
        // A group with members cannot be removed; a non-empty directory stands in for it.
        fs::write(memory.join("running/cgroup.procs"), "42")?;
        let groups = Cgroups::V1 {
            memory: memory.clone(),
            cpu: Some(cpu.clone()),
        };
        assert_eq!(
            groups.sweep_abandoned(Duration::from_secs(3600)),
            0,
            "fresh groups stay"
        );
        assert_eq!(groups.sweep_abandoned(Duration::ZERO), 2);
        assert!(memory.join("running").exists());
        assert!(!memory.join("ended").exists() && !cpu.join("ended").exists());
        Ok(())
    }

    #[test]
    fn oom_counters_are_parsed() {
        let v2 = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(counter(v2, "oom_kill"), Some(1));
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n";
        assert_eq!(counter(v1, "oom_kill"), Some(0));
        assert_eq!(counter("", "oom_kill"), None);
    }
}
