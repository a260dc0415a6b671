//! Starting a task's process inside its cgroup v1 groups from its first instruction.
//!
//! In cgroup v1 every thread has groups of its own, and a new process starts in the groups of
//! the thread that creates it. A spawner thread of the agent steps into a task's groups
//! (writing `0` into a group's `tasks` file moves the writing thread alone, which the kernel
//! does without the system-wide lock it takes to move a whole process), starts the process
//! there, and steps back into the agent's groups. The task is born confined: it needs
//! no gate (see [`crate::process::spawn`]), so the program is the first thing it executes.
//!
//! A task's group is `<agent group>/stride-tasks/<task id>` in each hierarchy, so the way back
//! is two levels up. Should a step back ever fail, the thread ends rather than start anything
//! else from inside a task's groups, and the next launch starts another.
//!
//! cgroup v2 puts all the threads of a process in one group, so there tasks start behind the
//! gate.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use crate::cgroups::TaskGroups;

/// Starts processes inside cgroup v1 groups on a few threads of its own.
///
/// While a process is being started its thread waits (the child borrows the agent's memory
/// until it executes its program), so several threads start processes side by side.
pub(crate) struct Spawner {
    runtime: tokio::runtime::Handle,
    jobs: mpsc::Sender<Job>,
    queue: Arc<Mutex<mpsc::Receiver<Job>>>,
    /// Threads that still take jobs.
    alive: Arc<AtomicUsize>,
    threads: usize,
}

struct Job {
    command: Command,
    groups: TaskGroups,
    reply: oneshot::Sender<io::Result<Child>>,
}

impl Spawner {
    /// A spawner whose processes are watched by `runtime`'s child reaper.
    pub fn new(runtime: tokio::runtime::Handle) -> io::Result<Self> {
        let (jobs, queue) = mpsc::channel();
        let threads = std::thread::available_parallelism()
            .map_or(2, |n| n.get() * 2)
            .min(16);
        let spawner = Spawner {
            runtime,
            jobs,
            queue: Arc::new(Mutex::new(queue)),
            alive: Arc::new(AtomicUsize::new(0)),
            threads,
        };
        spawner.replenish()?;
        Ok(spawner)
    }

    /// Starts `command` with its process in `groups` from the start.
    pub async fn spawn(&self, command: Command, groups: &TaskGroups) -> io::Result<Child> {
        // Threads that ended are replaced from here, a thread in the agent's own groups.
        self.replenish()?;
        let (reply, answer) = oneshot::channel();
        let job = Job {
            command,
            groups: groups.clone(),
            reply,
        };
        self.jobs
            .send(job)
            .map_err(|_| io::Error::other("the spawner takes no more jobs"))?;
        answer
            .await
            .map_err(|_| io::Error::other("the spawner thread ended before starting the task"))?
    }

    fn replenish(&self) -> io::Result<()> {
        while self.alive.load(Ordering::Acquire) < self.threads {
            self.alive.fetch_add(1, Ordering::AcqRel);
            let (runtime, queue, alive) =
                (self.runtime.clone(), self.queue.clone(), self.alive.clone());
            let started = std::thread::Builder::new()
                .name("task-spawner".into())
                .spawn(move || {
                    // Counted out however the thread ends, a panic included.
                    let _alive = Alive(alive);
                    run(&runtime, &queue);
                });
            if let Err(e) = started {
                self.alive.fetch_sub(1, Ordering::AcqRel);
                return Err(e);
            }
        }
        Ok(())
    }
}

/// Counts a spawner thread out when it ends.
struct Alive(Arc<AtomicUsize>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Takes jobs until the spawner is dropped, or until a step back out of a task's groups fails.
fn run(runtime: &tokio::runtime::Handle, queue: &Mutex<mpsc::Receiver<Job>>) {
    // Children are registered with the runtime's reaper, which `Command::spawn` finds here.
    let _runtime = runtime.enter();
    loop {
        let job = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        let Ok(Job {
            mut command,
            groups,
            reply,
        }) = job
        else {
            return;
        };
        let mut entered = Vec::with_capacity(groups.len());
        let mut spawned = Err(io::Error::other("no group to start the task in"));
        for group in &groups {
            match join(group) {
                Ok(()) => entered.push(group.as_path()),
                Err(e) => {
                    spawned = Err(io::Error::new(
                        e.kind(),
                        format!("cannot enter {}: {e}", group.display()),
                    ));
                    break;
                }
            }
        }
        if entered.len() == groups.len() && !groups.is_empty() {
            spawned = command.spawn();
        }
        let back = leave(&entered);
        let _ = reply.send(spawned);
        if let Err(e) = back {
            tracing::error!(error = %e, "a task spawner thread cannot go back to the agent's cgroups; it ends");
            return;
        }
    }
}

/// Moves the calling thread (only it) into `group`.
fn join(group: &Path) -> io::Result<()> {
    std::fs::write(group.join("tasks"), "0")
}

/// Moves the calling thread back from the task groups it `entered` into the agent's.
fn leave(entered: &[&Path]) -> io::Result<()> {
    for group in entered.iter().rev() {
        let home = group.parent().and_then(Path::parent).ok_or_else(|| {
            io::Error::other(format!("{} has no agent group above it", group.display()))
        })?;
        join(home).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", home.display())))?;
    }
    Ok(())
}
