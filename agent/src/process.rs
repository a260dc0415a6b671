//! The process side of a task: spawning it in a process group of its own with its output going
//! straight to files in the sandbox, signalling the group, recognising the process again after an
//! agent restart, and describing how it ended.
//!
//! Tasks must outlive the agent, so a task is never tied to the agent: it has its own process
//! group (a signal to the agent's group does not reach it), its stdout and stderr are files (no
//! pipe to break when the agent goes away), and the `Child` is not killed when dropped.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::{Gid, Pid, Uid, User};

use crate::cgroups::TaskGroups;
use crate::shellcmd;
use crate::spawner::Spawner;
use crate::task::{LaunchSpec, TaskState};

/// Who a task runs as, when not as the agent's own user.
#[derive(Clone, Debug)]
pub(crate) struct RunAs {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
    pub home: PathBuf,
}

/// Decides who runs the task. `Ok(None)` means as the agent's own user.
pub(crate) fn resolve_user(name: &str) -> Result<Option<RunAs>, String> {
    if name.is_empty() {
        return Ok(None);
    }
    let user = match User::from_name(name) {
        Ok(Some(u)) => u,
        Ok(None) => return Err(format!("user {name} does not exist")),
        Err(e) => return Err(format!("cannot look up user {name}: {e}")),
    };
    let me = Uid::effective();
    if user.uid == me {
        return Ok(None);
    }
    if !me.is_root() {
        return Err(format!(
            "cannot run the task as user {name}: the agent runs as uid {me}, not as root, and can only run tasks as itself"
        ));
    }
    Ok(Some(RunAs {
        name: user.name,
        uid: user.uid,
        gid: user.gid,
        home: user.dir,
    }))
}

/// The agent's own user, for `USER` and `HOME` of tasks that run as it.
pub(crate) fn current_user() -> Option<RunAs> {
    let user = User::from_uid(Uid::effective()).ok().flatten()?;
    Some(RunAs {
        name: user.name,
        uid: user.uid,
        gid: user.gid,
        home: user.dir,
    })
}

/// A started task process.
pub(crate) struct Spawned {
    pub child: tokio::process::Child,
    pub pid: u32,
    pub start_time: Option<u64>,
    /// The gate a gated process waits behind (see [`spawn`]); `None` when it runs already.
    pub gate: Option<Gate>,
}

/// The write end of a gated process' stdin.
pub(crate) struct Gate(std::fs::File);

impl Gate {
    /// Lets the task run; its stdin is at end-of-file afterwards.
    pub fn open(self) -> Result<(), String> {
        let mut file = self.0;
        std::io::Write::write_all(&mut file, b"\n")
            .map_err(|e| format!("cannot start the task behind its gate: {e}"))
    }
}

/// The shell a gated task starts as: it waits for a line on stdin, then becomes the task.
const GATE_SCRIPT: &str = r#"read -r _ || :; exec "$0" "$@""#;

/// What a task's process becomes once it runs.
#[derive(Debug, PartialEq)]
enum Program<'a> {
    /// `cmd`, run by `/bin/sh -c`.
    Shell(&'a str),
    /// `cmd` made of [`shellcmd::plain_words`] naming a program found on the task's `PATH`:
    /// the program is started as the task's process, as a shell that `exec`s it would.
    Plain {
        words: Vec<&'a str>,
        /// Where the program was found.
        executable: PathBuf,
    },
    /// Marathon's `args` without `cmd`: the argument vector itself.
    Argv(&'a [String]),
}

impl<'a> Program<'a> {
    /// How `spec` runs in `sandbox` with `PATH` set to `path`.
    fn of(spec: &'a LaunchSpec, sandbox: &Path, path: Option<&str>) -> Result<Self, String> {
        if let Some(words) = shellcmd::plain_words(&spec.cmd) {
            // A program the agent does not find is left to the shell, which reports it as it
            // always did.
            if let Ok(executable) = find_program(words[0], sandbox, path) {
                return Ok(Program::Plain { words, executable });
            }
        }
        if !spec.cmd.is_empty() {
            Ok(Program::Shell(&spec.cmd))
        } else if !spec.args.is_empty() {
            Ok(Program::Argv(&spec.args))
        } else {
            Err("the task has neither cmd nor args".into())
        }
    }

    /// The program to execute and its arguments.
    fn argv(&self) -> (&'a str, Vec<&'a str>) {
        match self {
            Program::Shell(cmd) => ("/bin/sh", vec!["-c", cmd]),
            Program::Plain { words, .. } => (words[0], words[1..].to_vec()),
            Program::Argv(args) => (
                args[0].as_str(),
                args[1..].iter().map(String::as_str).collect(),
            ),
        }
    }
}

/// How a task's process comes to be inside its cgroups, if it has any.
pub(crate) enum Entry<'a> {
    /// It has none: it is started as it is.
    Unconfined,
    /// The spawner starts it inside them (cgroup v1).
    Inside(&'a Spawner, &'a TaskGroups),
    /// It starts behind a gate (see [`Gate`]) that the caller opens once it has moved the
    /// process into its groups (cgroup v2).
    Gated,
}

/// Starts the task's command in `sandbox` with exactly `env`.
///
/// A gated task starts as a shell that waits for the agent before it `exec`s the task, so that
/// the agent can put the process into its cgroups before the task runs anything (children
/// forked before that would escape the limits). Same pid, same process group. Otherwise the
/// program is started directly.
///
/// A plain command (see [`shellcmd`]) is started as its program rather than as
/// `/bin/sh -c <cmd>`: the agent finds the program on the task's `PATH` as the shell would, sets
/// `PWD` as the shell would, and the task's process is the program. A program the kernel
/// cannot execute itself (a script without `#!`) is left to the shell after all.
pub(crate) async fn spawn(
    spec: &LaunchSpec,
    sandbox: &Path,
    env: &BTreeMap<String, String>,
    run_as: Option<&RunAs>,
    entry: Entry<'_>,
) -> Result<Spawned, String> {
    let path = env.get("PATH").map(String::as_str);
    let mut task = Program::of(spec, sandbox, path)?;
    let stdout = output_file(&sandbox.join("stdout"), run_as)?;
    let stderr = output_file(&sandbox.join("stderr"), run_as)?;
    let gated = matches!(entry, Entry::Gated);
    let mut child = loop {
        let program = task.argv().0;
        let mut command = command(&task, sandbox, env, path, run_as, gated)?;
        let output = |file: &File| {
            file.try_clone()
                .map_err(|e| format!("cannot hand the sandbox's output files to {program}: {e}"))
        };
        command.stdout(output(&stdout)?).stderr(output(&stderr)?);
        let spawned = match entry {
            Entry::Inside(spawner, groups) => spawner.spawn(command, groups).await,
            Entry::Unconfined | Entry::Gated => command.spawn(),
        };
        match spawned {
            Ok(child) => break child,
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOEXEC) && !spec.cmd.is_empty() => {
                if matches!(task, Program::Shell(_)) {
                    return Err(format!("cannot start {program}: {e}"));
                }
                task = Program::Shell(&spec.cmd);
            }
            Err(e) => return Err(format!("cannot start {program}: {e}")),
        }
    };
    let gate = match child.stdin.take() {
        Some(stdin) => {
            Some(Gate(std::fs::File::from(stdin.into_owned_fd().map_err(
                |e| format!("cannot hold the gate of the task: {e}"),
            )?)))
        }
        None => None,
    };
    let Some(pid) = child.id() else {
        return Err("the task exited before its pid could be read".into());
    };
    Ok(Spawned {
        child,
        pid,
        start_time: start_time(pid),
        gate,
    })
}

/// The command that starts `task`, its output not yet set.
fn command(
    task: &Program<'_>,
    sandbox: &Path,
    env: &BTreeMap<String, String>,
    path: Option<&str>,
    run_as: Option<&RunAs>,
    gated: bool,
) -> Result<tokio::process::Command, String> {
    let (program, args) = task.argv();
    let mut command = if gated {
        if !matches!(task, Program::Plain { .. }) {
            // Behind the gate a missing program would only show as exit status 127.
            find_program(program, sandbox, path)
                .map_err(|e| format!("cannot start {program}: {e}"))?;
        }
        let mut c = tokio::process::Command::new("/bin/sh");
        c.arg("-c").arg(GATE_SCRIPT).arg(program).args(&args);
        c.stdin(Stdio::piped());
        c
    } else {
        // A path, so that the process is started without a fork of the agent (which a
        // program to look up on the task's `PATH` would take); the name stays its `argv[0]`.
        let executable = match task {
            Program::Shell(_) => PathBuf::from(program),
            Program::Plain { executable, .. } => executable.clone(),
            Program::Argv(_) => find_program(program, sandbox, path)
                .map_err(|e| format!("cannot start {program}: {e}"))?,
        };
        let mut c = tokio::process::Command::new(executable);
        c.arg0(program).args(&args);
        c.stdin(Stdio::null());
        c
    };
    command.current_dir(sandbox).env_clear().envs(env);
    if matches!(task, Program::Plain { .. }) && !gated {
        // What the shell that `exec`s a plain command exports.
        command.env("PWD", sandbox);
    }
    command.process_group(0).kill_on_drop(false);
    if let Some(user) = run_as {
        // std drops the supplementary groups when it changes the uid.
        command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    }
    Ok(command)
}

/// Finds `program` as `execvp` would from the sandbox: a path (relative to the sandbox) or a
/// name on `PATH`; only executable files count.
fn find_program(program: &str, sandbox: &Path, path: Option<&str>) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let found = if program.contains('/') {
        Some(sandbox.join(program)).filter(|p| executable(p))
    } else {
        path.unwrap_or_default()
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|dir| sandbox.join(dir).join(program))
            .find(|p| executable(p))
    };
    found.ok_or_else(|| "No such file or directory (os error 2)".into())
}

/// Creates a sandbox's output file, owned by the task's user so it may reopen it.
fn output_file(path: &Path, run_as: Option<&RunAs>) -> Result<File, String> {
    let file = File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    if let Some(user) = run_as {
        nix::unistd::chown(path, Some(user.uid), Some(user.gid))
            .map_err(|e| format!("cannot give {} to {}: {e}", path.display(), user.name))?;
    }
    Ok(file)
}

/// Turns a pid from the task table into the id of its process group, refusing the values for
/// which `killpg` would hit something other than a task (0 is the caller's own group, 1 is init).
fn group_of(pid: u32) -> Option<Pid> {
    i32::try_from(pid)
        .ok()
        .filter(|p| *p > 1)
        .map(Pid::from_raw)
}

/// Sends `signal` to the task's process group; a group that no longer exists is not an error.
pub(crate) fn signal_group(pid: u32, signal: Signal) -> Result<(), Errno> {
    let Some(pgid) = group_of(pid) else {
        return Err(Errno::EINVAL);
    };
    match killpg(pgid, signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(e),
    }
}

/// SIGKILLs whatever is left of a task's process group once its main process is gone, so
/// nothing the task started outlives it. The group's id is the main process' pid, which the
/// kernel does not hand out again while the group has members; if the pid already names a
/// different process (its start time differs), the group is gone and that process' group is not
/// ours to touch.
pub(crate) fn kill_leftovers(pid: u32, recorded_start: Option<u64>) {
    let reused = read_stat(pid).is_some_and(|s| recorded_start.is_some_and(|t| t != s.start_time));
    if !reused {
        if let Err(e) = signal_group(pid, Signal::SIGKILL) {
            tracing::warn!(pid, error = %e, "cannot SIGKILL what is left of the task's process group");
        }
    }
}

/// Whether any process with this pid exists (zombies included).
pub(crate) fn pid_exists(pid: u32) -> bool {
    group_of(pid).is_some_and(|p| !matches!(kill(p, None), Err(Errno::ESRCH)))
}

/// Whether the process the agent recorded is still running: the pid exists, is not a zombie
/// and started when the recorded one did (so it is not a later process that reuses the pid).
pub(crate) fn is_running(pid: u32, recorded_start: Option<u64>) -> bool {
    if !pid_exists(pid) {
        return false;
    }
    match read_stat(pid) {
        Some(stat) => stat.state != 'Z' && recorded_start.is_none_or(|t| t == stat.start_time),
        None => false,
    }
}

/// The start time (field 22 of `/proc/<pid>/stat`, clock ticks after boot).
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    read_stat(pid).map(|s| s.start_time)
}

/// The fields of `/proc/<pid>/stat` the agent needs.
#[derive(Debug, PartialEq)]
pub(crate) struct ProcStat {
    pub state: char,
    pub pgrp: i32,
    pub start_time: u64,
}

pub(crate) fn read_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may itself hold
/// spaces and parentheses, so fields are counted from the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): field n is at index n - 3.
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// How a process ended, as Mesos' command executor words it.
pub(crate) fn describe_exit(status: ExitStatus) -> (TaskState, String, Option<i32>) {
    if let Some(code) = status.code() {
        let state = if code == 0 {
            TaskState::Finished
        } else {
            TaskState::Failed
        };
        return (
            state,
            format!("Command exited with status {code}"),
            Some(code),
        );
    }
    if let Some(signal) = status.signal() {
        let name = Signal::try_from(signal)
            .map_or_else(|_| format!("signal {signal}"), |s| s.as_str().to_string());
        // Shells report death by signal N as 128 + N; keep that convention for `exit_code`.
        return (
            TaskState::Failed,
            format!("Command terminated with signal {name}"),
            Some(128 + signal),
        );
    }
    (TaskState::Failed, format!("Command ended: {status}"), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let line = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                state: 'S',
                pgrp: 4242,
                start_time: 987654
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_process_is_recognised() {
        let me = std::process::id();
        let start = start_time(me);
        assert!(start.is_some());
        assert!(is_running(me, start));
        assert!(
            !is_running(me, start.map(|t| t + 1)),
            "another start time is another process"
        );
    }

    #[test]
    fn dangerous_groups_are_never_signalled() {
        assert_eq!(signal_group(0, Signal::SIGCONT), Err(Errno::EINVAL));
        assert_eq!(signal_group(1, Signal::SIGCONT), Err(Errno::EINVAL));
        assert_eq!(signal_group(u32::MAX, Signal::SIGCONT), Err(Errno::EINVAL));
    }

    #[test]
    fn plain_commands_found_on_the_path_skip_the_shell() -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir()?;
        let sandbox = dir.path();
        std::fs::create_dir(sandbox.join("bin"))?;
        for (name, mode) in [("bin/tool", 0o755), ("bin/data", 0o644)] {
            std::fs::write(sandbox.join(name), "#!/bin/sh\n")?;
            std::fs::set_permissions(sandbox.join(name), std::fs::Permissions::from_mode(mode))?;
        }
        let absolute = sandbox.join("bin/tool").display().to_string();
        let spec_of = |cmd: &str| LaunchSpec {
            cmd: cmd.into(),
            ..LaunchSpec::default()
        };
        let path = Some("/nonexistent:bin:/usr/bin:/bin");
        for (cmd, want) in [
            ("sleep 1000", Some(vec!["sleep", "1000"])),
            ("tool -v", Some(vec!["tool", "-v"])),
            ("bin/tool", Some(vec!["bin/tool"])),
            ("./bin/tool a", Some(vec!["./bin/tool", "a"])),
            (absolute.as_str(), Some(vec![absolute.as_str()])),
            // Missing or not executable: the shell reports it, as before.
            ("no-such-program-stride", None),
            ("data", None),
            ("bin/data", None),
            ("/nonexistent/tool", None),
            ("sleep 1000 && true", None),
            ("sleep $SECONDS", None),
            ("echo hi", None),
        ] {
            let spec = spec_of(cmd);
            let got = Program::of(&spec, sandbox, path).map_err(anyhow::Error::msg)?;
            match (want, got) {
                (Some(want), Program::Plain { words, executable }) => {
                    assert_eq!(words, want, "{cmd:?}");
                    assert!(
                        executable.is_absolute()
                            && executable
                                .ends_with(Path::new(want[0]).file_name().unwrap_or_default()),
                        "{cmd:?} found at {}",
                        executable.display()
                    );
                }
                (None, got) => assert_eq!(got, Program::Shell(cmd), "{cmd:?}"),
                (Some(_), got) => panic!("{cmd:?} is plain, not {got:?}"),
            }
        }
        let spec = spec_of("sleep 1");
        assert_eq!(
            Program::of(&spec, sandbox, None),
            Ok(Program::Shell("sleep 1")),
            "without PATH"
        );
        let args = LaunchSpec {
            args: vec!["/bin/echo".into(), "hi".into()],
            ..LaunchSpec::default()
        };
        assert_eq!(
            Program::of(&args, sandbox, path).map(|p| p.argv()),
            Ok(("/bin/echo", vec!["hi"]))
        );
        assert!(Program::of(&LaunchSpec::default(), sandbox, path).is_err());
        Ok(())
    }

    #[test]
    fn exits_are_described_like_mesos() {
        let (state, message, code) = describe_exit(ExitStatus::from_raw(3 << 8));
        assert_eq!(
            (state, message.as_str(), code),
            (TaskState::Failed, "Command exited with status 3", Some(3))
        );
        let (state, _, code) = describe_exit(ExitStatus::from_raw(0));
        assert_eq!((state, code), (TaskState::Finished, Some(0)));
        let (state, message, code) = describe_exit(ExitStatus::from_raw(9));
        assert_eq!(
            (state, message.as_str(), code),
            (
                TaskState::Failed,
                "Command terminated with signal SIGKILL",
                Some(137)
            )
        );
    }
}
