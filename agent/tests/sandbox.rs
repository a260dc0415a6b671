//! The agent's own API against real tasks: sandbox files listed and read (and never outside the
//! sandbox), COMMAND checks in the task's context; persistent volumes across relaunches of an
//! instance; the memory limit of cgroups.

mod support;

use std::time::Duration;

use stride_proto::v1::scheduler_message::Msg;
use stride_proto::v1::{
    CommandCheckRequest, DestroyVolumes, KeyValue, ListFilesRequest, ReadFileRequest, Resources,
    TaskState,
};
use support::*;
use tonic::Code;

fn read(task_id: &str, path: &str, offset: i64, length: u64) -> ReadFileRequest {
    ReadFileRequest {
        task_id: task_id.into(),
        path: path.into(),
        offset,
        length,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_files_are_listed_and_read_but_never_outside() -> anyhow::Result<()> {
    let mut c = connected().await?;
    let mut api = agent_api(&c.register).await?;
    let id = "files";
    c.session.command(launch(vec![shell_task(
        id,
        "printf 0123456789 > digits; mkdir -p logs && echo line > logs/app.log; \
         ln -s /etc out; ln -s /etc/passwd passwd-link; echo done",
    )]));
    c.session.status(id, TaskState::TaskFinished).await;

    let listed = api
        .list_files(ListFilesRequest {
            task_id: id.into(),
            path: String::new(),
        })
        .await?
        .into_inner()
        .files;
    let names: Vec<(&str, bool)> = listed.iter().map(|f| (f.path.as_str(), f.is_dir)).collect();
    for wanted in [
        ("digits", false),
        ("logs", true),
        ("stdout", false),
        ("stderr", false),
        ("out", false),
    ] {
        assert!(names.contains(&wanted), "{wanted:?} in {names:?}");
    }
    let digits = listed
        .iter()
        .find(|f| f.path == "digits")
        .ok_or_else(|| anyhow::anyhow!("no digits"))?;
    assert_eq!(digits.size, 10);
    assert_eq!(digits.mode & 0o170000, 0o100000, "a regular file");
    assert!(digits.mtime > 1_600_000_000);
    let logs = api
        .list_files(ListFilesRequest {
            task_id: id.into(),
            path: "logs".into(),
        })
        .await?
        .into_inner()
        .files;
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].path, "logs/app.log");

    let part = api.read_file(read(id, "digits", 2, 5)).await?.into_inner();
    assert_eq!(
        (part.data.as_slice(), part.offset, part.size),
        (&b"23456"[..], 2, 10)
    );
    let end = api.read_file(read(id, "digits", -1, 0)).await?.into_inner();
    assert_eq!((end.data.len(), end.offset), (0, 10));
    let stdout = api.read_file(read(id, "stdout", 0, 0)).await?.into_inner();
    assert_eq!(stdout.data, b"done\n");

    for (path, code) in [
        ("../../etc/passwd", Code::InvalidArgument),
        ("logs/../../../etc/passwd", Code::InvalidArgument),
        ("/etc/passwd", Code::InvalidArgument),
        ("out/passwd", Code::PermissionDenied),
        ("passwd-link", Code::PermissionDenied),
        ("missing", Code::NotFound),
    ] {
        let refused = api.read_file(read(id, path, 0, 0)).await;
        assert_eq!(
            refused.as_ref().err().map(|s| s.code()),
            Some(code),
            "{path}: {refused:?}"
        );
    }
    let refused = api
        .list_files(ListFilesRequest {
            task_id: id.into(),
            path: "out".into(),
        })
        .await;
    assert_eq!(
        refused.err().map(|s| s.code()),
        Some(Code::PermissionDenied)
    );
    let unknown = api.read_file(read("no-such-task", "stdout", 0, 0)).await;
    assert_eq!(unknown.err().map(|s| s.code()), Some(Code::NotFound));
    let bad_id = api.read_file(read("../tasks", "x", 0, 0)).await;
    assert_eq!(bad_id.err().map(|s| s.code()), Some(Code::InvalidArgument));
    c.agent.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_checks_run_in_the_task_context() -> anyhow::Result<()> {
    let mut c = connected().await?;
    let mut api = agent_api(&c.register).await?;
    let id = "checked";
    let mut task = shell_task(id, "echo ready > state; sleep 1000");
    task.env = vec![KeyValue {
        key: "FOO".into(),
        value: "bar".into(),
    }];
    c.session.command(launch(vec![task]));
    c.session.status(id, TaskState::TaskRunning).await;
    eventually("the task wrote its state", || {
        c.work.sandbox(id).join("state").exists()
    })
    .await;

    let check = |command: &str, timeout_ms: u32| CommandCheckRequest {
        task_id: id.into(),
        command: command.into(),
        timeout_ms,
    };
    let ok = api
        .run_command_check(check(
            r#"test "$FOO" = bar && test "$MESOS_TASK_ID" = checked && cat state"#,
            5000,
        ))
        .await?
        .into_inner();
    assert!(ok.healthy, "{ok:?}");
    assert_eq!((ok.exit_code, ok.output.as_str()), (0, "ready\n"));
    let bad = api
        .run_command_check(check("echo broken >&2; exit 2", 5000))
        .await?
        .into_inner();
    assert!(!bad.healthy);
    assert_eq!((bad.exit_code, bad.output.as_str()), (2, "broken\n"));
    let slow = api
        .run_command_check(check("sleep 30", 300))
        .await?
        .into_inner();
    assert!(!slow.healthy);
    assert!(slow.output.contains("timed out"), "{}", slow.output);
    let unknown = api
        .run_command_check(CommandCheckRequest {
            task_id: "nobody".into(),
            command: "true".into(),
            timeout_ms: 1000,
        })
        .await;
    assert_eq!(unknown.err().map(|s| s.code()), Some(Code::NotFound));

    c.session.command(kill(id, 500));
    c.session.status(id, TaskState::TaskKilled).await;
    let stopped = api.run_command_check(check("true", 1000)).await;
    assert_eq!(
        stopped.err().map(|s| s.code()),
        Some(Code::FailedPrecondition)
    );
    c.agent.stop().await
}

/// A process task with a persistent volume `data` (a MESOS container without an image).
fn resident_task(task_id: &str, cmd: &str) -> stride_proto::v1::TaskSpec {
    let mut task = shell_task(task_id, cmd);
    task.app_id = "/test/resident".into();
    task.container_json = serde_json::json!({
        "type": "MESOS",
        "volumes": [{"containerPath": "data", "persistent": {"size": 10}, "mode": "RW"}],
    })
    .to_string();
    task
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resident_volume_survives_a_relaunch_of_the_instance() -> anyhow::Result<()> {
    let mut c = connected().await?;
    let mut api = agent_api(&c.register).await?;
    let instance = "test_resident.instance-6d3c1a52-0000-11ef-8000-000000000001";
    let first = format!("{instance}._app.1");
    c.session.command(launch(vec![resident_task(
        &first,
        "echo kept > data/file; echo written",
    )]));
    c.session.status(&first, TaskState::TaskFinished).await;
    let volume = c
        .work
        .path()
        .join("volumes")
        .join(format!("test_resident#data#{instance}"));
    assert_eq!(std::fs::read_to_string(volume.join("file"))?, "kept\n");

    // The relaunch (the scheduler bumps the incarnation) finds the data.
    let second = format!("{instance}._app.2");
    c.session
        .command(launch(vec![resident_task(&second, "cat data/file")]));
    c.session.status(&second, TaskState::TaskFinished).await;
    assert_eq!(
        std::fs::read_to_string(c.work.sandbox(&second).join("stdout"))?,
        "kept\n"
    );
    // The sandbox API follows the volume's link (the task's own volume, not "outside").
    let through_link = api
        .read_file(ReadFileRequest {
            task_id: second.clone(),
            path: "data/file".into(),
            offset: 0,
            length: 0,
        })
        .await?
        .into_inner();
    assert_eq!(through_link.data, b"kept\n");

    // Another instance of the same app has a volume of its own.
    let other = "test_resident.instance-6d3c1a52-0000-11ef-8000-000000000002._app.1";
    c.session.command(launch(vec![resident_task(
        other,
        "test ! -e data/file && echo empty",
    )]));
    c.session.status(other, TaskState::TaskFinished).await;

    // Destroyed only when the leader says so.
    c.session.command(Msg::DestroyVolumes(DestroyVolumes {
        instance_id: instance.into(),
    }));
    eventually("the instance's volume is deleted", || !volume.exists()).await;
    assert!(c
        .work
        .path()
        .join("volumes")
        .join("test_resident#data#test_resident.instance-6d3c1a52-0000-11ef-8000-000000000002")
        .exists());
    c.agent.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_instance_keeps_its_volumes() -> anyhow::Result<()> {
    let mut c = connected().await?;
    let instance = "test_resident.instance-6d3c1a52-0000-11ef-8000-000000000003";
    let id = format!("{instance}._app.1");
    c.session.command(launch(vec![resident_task(
        &id,
        "echo x > data/f; sleep 1000",
    )]));
    c.session.status(&id, TaskState::TaskRunning).await;
    let volume = c
        .work
        .path()
        .join("volumes")
        .join(format!("test_resident#data#{instance}"));
    eventually("the task wrote into its volume", || {
        volume.join("f").exists()
    })
    .await;
    c.session.command(Msg::DestroyVolumes(DestroyVolumes {
        instance_id: instance.into(),
    }));
    // The stream is ordered: once this kill is answered, the destroy was dealt with.
    c.session.command(kill(&id, 200));
    c.session.status(&id, TaskState::TaskKilled).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(volume.join("f").exists(), "a volume in use was destroyed");
    c.agent.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_limit_kills_a_task_that_allocates_past_it() -> anyhow::Result<()> {
    if let Err(reason) = stride_agent::probe_cgroups() {
        eprintln!("SKIPPED the_memory_limit_kills_a_task_that_allocates_past_it: cgroups cannot be delegated to the agent on this machine: {reason}");
        return Ok(());
    }
    let mut c = connected().await?;
    let id = "memory-hog";
    let mut task = shell_task(
        id,
        r#"python3 -c "b=bytearray(200*1024*1024); import time; time.sleep(5)""#,
    );
    task.resources = Some(Resources {
        cpus: 0.5,
        mem: 64.0,
        disk: 0.0,
        gpus: 0,
        ports: Vec::new(),
    });
    let modest = shell_task("memory-modest", "python3 -c \"b=bytearray(8*1024*1024)\"");
    c.session.command(launch(vec![task, modest]));
    c.session
        .status("memory-modest", TaskState::TaskFinished)
        .await;
    let failed = c.session.status(id, TaskState::TaskFailed).await;
    assert_eq!(failed.reason, "REASON_CONTAINER_LIMITATION_MEMORY");
    assert!(
        failed.message.contains("Memory limit exceeded"),
        "{}",
        failed.message
    );
    let record = c
        .work
        .record(id)
        .ok_or_else(|| anyhow::anyhow!("no record of {id}"))?;
    let groups = record["cgroups"].as_array().cloned().unwrap_or_default();
    assert!(!groups.is_empty(), "the task was confined: {record}");
    eventually("the task's cgroups are removed", || {
        groups
            .iter()
            .filter_map(|g| g.as_str())
            .all(|g| !std::path::Path::new(g).exists())
    })
    .await;
    c.agent.stop().await
}

/// The lines of a `/proc/<pid>/cgroup` that name one of a task's groups.
fn lines_naming(groups: &str, task_id: &str) -> usize {
    groups
        .lines()
        .filter(|l| l.ends_with(&format!("/{task_id}")))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_is_in_its_cgroups_from_its_first_fork_and_the_agent_stays_out() -> anyhow::Result<()>
{
    if let Err(reason) = stride_agent::probe_cgroups() {
        eprintln!("SKIPPED a_task_is_in_its_cgroups_from_its_first_fork_and_the_agent_stays_out: cgroups cannot be delegated to the agent on this machine: {reason}");
        return Ok(());
    }
    let mut c = connected().await?;
    let resources = Some(Resources {
        cpus: 0.5,
        mem: 64.0,
        disk: 0.0,
        gpus: 0,
        ports: Vec::new(),
    });
    // The first thing the shell does is fork `cat`, which reads its own groups.
    let mut forks = shell_task("forks", "cat /proc/self/cgroup; sleep 1000");
    forks.resources = resources.clone();
    let mut plain = shell_task("plain", "sleep 1000");
    plain.resources = resources;
    c.session.command(launch(vec![forks, plain]));
    c.session.status("forks", TaskState::TaskRunning).await;
    c.session.status("plain", TaskState::TaskRunning).await;

    for id in ["forks", "plain"] {
        let record = c
            .work
            .record(id)
            .ok_or_else(|| anyhow::anyhow!("no record of {id}"))?;
        let groups = record["cgroups"].as_array().map_or(0, Vec::len);
        assert!(groups > 0, "the task was confined: {record}");
        let pid = c.work.pid(id)?;
        let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
        assert_eq!(
            lines_naming(&own, id),
            groups,
            "{id} is in its groups: {own}"
        );
        if id == "forks" {
            let stdout = c.work.sandbox(id).join("stdout");
            eventually("cat wrote its groups", || {
                std::fs::read_to_string(&stdout).is_ok_and(|t| !t.is_empty())
            })
            .await;
            let first = std::fs::read_to_string(&stdout)?;
            assert_eq!(
                lines_naming(&first, id),
                groups,
                "the first fork was inside: {first}"
            );
        }
    }
    // The agent runs in this process: none of its threads stayed in a task's group.
    for thread in std::fs::read_dir("/proc/self/task")? {
        let groups = std::fs::read_to_string(thread?.path().join("cgroup")).unwrap_or_default();
        assert!(
            lines_naming(&groups, "forks") + lines_naming(&groups, "plain") == 0,
            "a thread of the agent is in a task's group: {groups}"
        );
    }
    for id in ["forks", "plain"] {
        c.session.command(kill(id, 200));
        c.session.status(id, TaskState::TaskKilled).await;
    }
    c.agent.stop().await
}
