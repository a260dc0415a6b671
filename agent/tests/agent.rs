//! The agent against a fake scheduler, running real processes: registration, the task
//! environment, exits, kills, epoch fencing, leader redirects and recovery after a restart.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill as send_signal, killpg, Signal};
use nix::unistd::Pid;
use stride_proto::v1::scheduler_message::Msg;
use stride_proto::v1::{agent_message, Acknowledge, KeyValue, NotLeader, Reconcile, TaskState};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_with_configured_resources_and_heartbeats() -> anyhow::Result<()> {
    let work = WorkDir::new()?;
    let mut scheduler = FakeScheduler::start().await?;
    let mut config = work.config(vec![scheduler.url()]);
    config.region = Some("eu-west".into());
    let agent = RunningAgent::start(config);
    let mut session = scheduler.session().await;
    let register = session.register().await;

    assert_eq!(register.hostname, "127.0.0.1");
    let stored_id = std::fs::read_to_string(work.path().join("agent-id"))?;
    assert_eq!(
        register.agent_id,
        stored_id.trim(),
        "the generated agent id is persisted"
    );
    let total = register.total.clone().expect("resources");
    assert_eq!((total.cpus, total.mem, total.disk), (2.0, 1024.0, 2048.0));
    assert_eq!(
        total
            .ports
            .iter()
            .map(|r| (r.begin, r.end))
            .collect::<Vec<_>>(),
        vec![(31000, 31099)]
    );
    let attributes: Vec<(String, String)> = register
        .attributes
        .iter()
        .map(|a| (a.name.clone(), a.value.clone()))
        .collect();
    assert_eq!(
        attributes,
        vec![("rack_id".into(), "r1".into()), ("zone".into(), "a".into())]
    );
    assert_eq!(register.region, "eu-west");
    assert!(register.tasks.is_empty());
    assert_eq!(register.epoch_seen, 0);

    session.registered(&register.agent_id, 1, 100);
    let mut heartbeats = 0;
    while heartbeats < 3 {
        if let Some(agent_message::Msg::Heartbeat(_)) = session.recv().await.and_then(|m| m.msg) {
            heartbeats += 1;
        }
    }
    agent.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_get_marathons_environment_in_their_sandbox() -> anyhow::Result<()> {
    let mut c = connected().await?;
    let id = "test_app.instance-env._app.1";
    let mut spec = shell_task(id, "env");
    spec.host_ports = vec![31000, 31001];
    spec.port_names = vec!["http".into(), String::new()];
    spec.env = vec![KeyValue {
        key: "GREETING".into(),
        value: "hello world".into(),
    }];
    c.session.command(launch(vec![spec]));

    let running = c.session.status(id, TaskState::TaskRunning).await;
    assert_eq!(running.ports, vec![31000, 31001]);
    let finished = c.session.status(id, TaskState::TaskFinished).await;
    assert_eq!(finished.exit_code, Some(0));

    let sandbox = c.work.sandbox(id);
    let stdout = std::fs::read_to_string(sandbox.join("stdout"))?;
    let env: HashMap<&str, &str> = stdout.lines().filter_map(|l| l.split_once('=')).collect();
    let sandbox_text = sandbox.display().to_string();
    for (key, want) in [
        ("PORT0", "31000"),
        ("PORT1", "31001"),
        ("PORT", "31000"),
        ("PORTS", "31000,31001"),
        ("PORT_HTTP", "31000"),
        ("HOST", "127.0.0.1"),
        ("MESOS_TASK_ID", id),
        ("MESOS_SANDBOX", sandbox_text.as_str()),
        ("PWD", sandbox_text.as_str()),
        ("MARATHON_APP_ID", "/test/app"),
        ("MARATHON_APP_VERSION", "2024-05-01T10:00:00.000Z"),
        ("MARATHON_APP_RESOURCE_CPUS", "0.5"),
        ("MARATHON_APP_RESOURCE_MEM", "64.0"),
        ("GREETING", "hello world"),
    ] {
        assert_eq!(env.get(key).copied(), Some(want), "{key} in\n{stdout}");
    }
    assert!(env.contains_key("PATH"));
    let leaked: Vec<&&str> = env
        .keys()
        .filter(|k| k.starts_with("CARGO") || k.starts_with("RUST"))
        .collect();
    assert!(
        leaked.is_empty(),
        "the agent's environment leaked into the task: {leaked:?}"
    );
    c.agent.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_become_finished_or_failed() -> anyhow::Result<()> {
    let mut c = connected().await?;
    let mut argv = shell_task("argv", "");
    argv.args = vec!["/bin/echo".into(), "from".into(), "argv".into()];
    c.session.command(launch(vec![
        shell_task("fails", "echo oops >&2; exit 3"),
        shell_task("succeeds", "true"),
        argv,
    ]));

    let failed = c.session.status("fails", TaskState::TaskFailed).await;
    assert_eq!(failed.exit_code, Some(3));
    assert_eq!(failed.message, "Command exited with status 3");
    assert_eq!(
        std::fs::read_to_string(c.work.sandbox("fails").join("stderr"))?,
        "oops\n"
    );

    let finished = c.session.status("succeeds", TaskState::TaskFinished).await;
    assert_eq!(finished.exit_code, Some(0));

    c.session.status("argv", TaskState::TaskFinished).await;
    assert_eq!(
        std::fs::read_to_string(c.work.sandbox("argv").join("stdout"))?,
        "from argv\n"
    );
    c.agent.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_stops_the_whole_process_group() -> anyhow::Result<()> {
    let mut c = connected().await?;
    let id = "group";
    c.session.command(launch(vec![shell_task(
        id,
        "sleep 1000 & sleep 1000 & wait",
    )]));
    c.session.status(id, TaskState::TaskRunning).await;
    let pgid = c.work.pid(id)?;
    eventually("the shell and both sleeps run", || {
        group_members(pgid).len() == 3
    })
    .await;

    c.session.command(kill(id, 1000));
    c.session.status(id, TaskState::TaskKilling).await;
    let killed = c.session.status(id, TaskState::TaskKilled).await;
    assert!(killed.message.contains("signal"), "{}", killed.message);
    eventually("no process of the group is left", || {
        group_members(pgid).is_empty()
    })
    .await;
    // Not even a zombie: the group itself is gone.
    eventually("kill(-pgid, 0) fails with ESRCH", || {
        killpg(Pid::from_raw(pgid), None) == Err(Errno::ESRCH)
    })
    .await;

    // Killing it again repeats the terminal status.
    c.session.command(kill(id, 1000));
    c.session.status(id, TaskState::TaskKilled).await;
    c.agent.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_escalates_to_sigkill_after_the_grace_period() -> anyhow::Result<()> {
    let mut c = connected().await?;
    let id = "stubborn";
    // SIGTERM is ignored by the shell and, inherited, by its sleep.
    c.session.command(launch(vec![shell_task(
        id,
        "trap '' TERM; sleep 1000 & wait",
    )]));
    c.session.status(id, TaskState::TaskRunning).await;
    let pgid = c.work.pid(id)?;
    eventually("the sleep runs", || group_members(pgid).len() == 2).await;

    let asked = Instant::now();
    c.session.command(kill(id, 500));
    let killed = c.session.status(id, TaskState::TaskKilled).await;
    assert!(
        asked.elapsed() >= Duration::from_millis(450),
        "killed before the grace period was over"
    );
    assert_eq!(killed.message, "Command terminated with signal SIGKILL");
    eventually("no process of the group is left", || {
        group_members(pgid).is_empty()
    })
    .await;
    c.agent.stop().await
}

/// The command line of a process, word by word.
fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| {
            bytes
                .split(|b| *b == 0)
                .filter(|w| !w.is_empty())
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_command_runs_as_the_tasks_process_and_a_shell_command_under_the_shell(
) -> anyhow::Result<()> {
    plain_and_shell_commands(true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_cgroups_too_a_plain_command_runs_as_the_tasks_process() -> anyhow::Result<()> {
    plain_and_shell_commands(false).await
}

/// Plain and shell commands on an agent that confines tasks with cgroups where it can (which
/// starts every task behind its gate) or never does.
async fn plain_and_shell_commands(cgroups: bool) -> anyhow::Result<()> {
    let work = WorkDir::new()?;
    let mut scheduler = FakeScheduler::start().await?;
    let mut config = work.config(vec![scheduler.url()]);
    config.cgroups = cgroups;
    let agent = RunningAgent::start(config);
    let mut session = scheduler.session().await;
    let register = session.register().await;
    session.registered(&register.agent_id, 1, 1000);
    let mut c = Connected {
        work,
        scheduler,
        agent,
        session,
        register,
    };
    c.session.command(launch(vec![
        shell_task("plain", "sleep  1000"),
        shell_task("and", "sleep 1000 && true"),
        shell_task("variable", "echo $MESOS_TASK_ID"),
        shell_task("missing", "no-such-program-stride 1"),
    ]));

    c.session.status("plain", TaskState::TaskRunning).await;
    let plain = c.work.pid("plain")?;
    eventually("the task's process is sleep itself", || {
        cmdline(plain) == ["sleep", "1000"]
    })
    .await;
    assert_eq!(group_members(plain), vec![plain], "no shell around it");

    c.session.status("and", TaskState::TaskRunning).await;
    let and = c.work.pid("and")?;
    eventually("a shell runs the sleep", || {
        cmdline(and) == ["/bin/sh", "-c", "sleep 1000 && true"] && group_members(and).len() == 2
    })
    .await;

    c.session.status("variable", TaskState::TaskFinished).await;
    assert_eq!(
        std::fs::read_to_string(c.work.sandbox("variable").join("stdout"))?,
        "variable\n"
    );
    // As before: the shell reports a program it does not find.
    let missing = c.session.status("missing", TaskState::TaskFailed).await;
    assert_eq!(missing.exit_code, Some(127));
    let stderr = std::fs::read_to_string(c.work.sandbox("missing").join("stderr"))?;
    assert!(stderr.contains("not found"), "{stderr}");

    c.session.command(kill("plain", 1000));
    let killed = c.session.status("plain", TaskState::TaskKilled).await;
    assert_eq!(killed.message, "Command terminated with signal SIGTERM");
    c.session.command(kill("and", 1000));
    c.session.status("and", TaskState::TaskKilled).await;
    eventually("nothing of either task is left", || {
        group_members(plain).is_empty() && group_members(and).is_empty()
    })
    .await;
    c.agent.stop().await
}

/// Writes `text` to `path` and makes it executable.
fn write_executable(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_command_sees_what_a_shell_would_give_it() -> anyhow::Result<()> {
    let mut c = connected().await?;
    // A script without `#!` is not for the kernel to execute: the shell runs it, as before.
    let script = c.work.path().join("no-interpreter");
    write_executable(&script, "echo run by a shell\n")?;
    c.session.command(launch(vec![
        shell_task("script", &script.display().to_string()),
        shell_task("env", "env"),
    ]));
    c.session.status("script", TaskState::TaskFinished).await;
    assert_eq!(
        std::fs::read_to_string(c.work.sandbox("script").join("stdout"))?,
        "run by a shell\n"
    );
    c.session.status("env", TaskState::TaskFinished).await;
    let env = std::fs::read_to_string(c.work.sandbox("env").join("stdout"))?;
    let pwd = format!("PWD={}", c.work.sandbox("env").display());
    assert!(env.lines().any(|l| l == pwd), "{pwd} in {env}");
    c.agent.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_command_gets_the_grace_period_to_end_by_itself() -> anyhow::Result<()> {
    let mut c = connected().await?;
    let script = c.work.path().join("graceful");
    write_executable(
        &script,
        "#!/bin/sh\ntrap 'sleep 0.3; echo cleaned up; exit 7' TERM\nsleep 1000 & wait\n",
    )?;
    let id = "graceful";
    c.session
        .command(launch(vec![shell_task(id, &script.display().to_string())]));
    c.session.status(id, TaskState::TaskRunning).await;
    let pid = c.work.pid(id)?;
    eventually("the script and its sleep run", || {
        group_members(pid).len() == 2
    })
    .await;

    c.session.command(kill(id, 5000));
    let killed = c.session.status(id, TaskState::TaskKilled).await;
    assert_eq!(
        (killed.message.as_str(), killed.exit_code),
        ("Command exited with status 7", Some(7)),
        "the script itself got the SIGTERM and ended as it chose"
    );
    assert_eq!(
        std::fs::read_to_string(c.work.sandbox(id).join("stdout"))?,
        "cleaned up\n"
    );
    c.agent.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_from_an_older_epoch_are_refused() -> anyhow::Result<()> {
    let work = WorkDir::new()?;
    let mut scheduler = FakeScheduler::start().await?;
    let agent = RunningAgent::start(work.config(vec![scheduler.url()]));
    let mut session = scheduler.session().await;
    let register = session.register().await;
    session.registered(&register.agent_id, 5, 1000);

    // A deposed leader's launch, then the current leader's: the stream is ordered, so once the
    // second task reports, the first command has been dealt with.
    session.send(launch(vec![shell_task("stale", "true")]), 4);
    session.send(launch(vec![shell_task("current", "true")]), 5);
    session.status("current", TaskState::TaskFinished).await;
    assert!(
        !work.sandbox("stale").exists(),
        "a command of epoch 4 was obeyed after epoch 5"
    );
    assert!(work.record("stale").is_none());

    // A newer epoch raises the fence, and it is persisted.
    session.send(kill("nobody", 0), 6);
    let lost = session.status("nobody", TaskState::TaskLost).await;
    assert_eq!(lost.reason, "REASON_TASK_UNKNOWN");
    session.send(launch(vec![shell_task("stale-too", "true")]), 5);
    session.send(launch(vec![shell_task("current-too", "true")]), 6);
    session.status("current-too", TaskState::TaskFinished).await;
    assert!(!work.sandbox("stale-too").exists());
    assert_eq!(
        std::fs::read_to_string(work.path().join("epoch"))?.trim(),
        "6"
    );

    agent.stop().await?;
    let agent = RunningAgent::start(work.config(vec![scheduler.url()]));
    let register = scheduler.session().await.register().await;
    assert_eq!(
        register.epoch_seen, 6,
        "a restarted agent remembers the epoch"
    );
    agent.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_a_not_leader_redirect() -> anyhow::Result<()> {
    let work = WorkDir::new()?;
    let mut standby = FakeScheduler::start().await?;
    let mut leader = FakeScheduler::start().await?;
    let agent = RunningAgent::start(work.config(vec![standby.url()]));

    let mut at_standby = standby.session().await;
    at_standby.register().await;
    // Leaders advertise host:port, without a scheme.
    at_standby.send(
        Msg::NotLeader(NotLeader {
            leader_grpc_address: leader.addr.to_string(),
        }),
        3,
    );
    at_standby.close();

    let mut at_leader = leader.session().await;
    let register = at_leader.register().await;
    at_leader.registered(&register.agent_id, 3, 1000);
    at_leader.command(launch(vec![shell_task("after-redirect", "true")]));
    at_leader
        .status("after-redirect", TaskState::TaskFinished)
        .await;
    agent.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tries_the_next_scheduler_when_no_leader_is_known() -> anyhow::Result<()> {
    let work = WorkDir::new()?;
    let mut standby = FakeScheduler::start().await?;
    let mut leader = FakeScheduler::start().await?;
    let agent = RunningAgent::start(work.config(vec![standby.url(), leader.url()]));

    let mut at_standby = standby.session().await;
    at_standby.register().await;
    at_standby.send(
        Msg::NotLeader(NotLeader {
            leader_grpc_address: String::new(),
        }),
        0,
    );
    at_standby.close();

    let register = leader.session().await.register().await;
    assert_eq!(register.hostname, "127.0.0.1");
    agent.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_wait_for_the_next_session_until_acknowledged() -> anyhow::Result<()> {
    let mut c = connected().await?;
    let (done, waiting) = ("done", "waiting");
    c.session.command(launch(vec![
        shell_task(done, "true"),
        shell_task(waiting, "while [ ! -e go ]; do sleep 0.05; done"),
    ]));
    c.session.status(done, TaskState::TaskFinished).await;
    c.session.status(waiting, TaskState::TaskRunning).await;

    // The leader goes away; the agent comes back and reports both tasks in its Register.
    c.session.close();
    let mut session = c.scheduler.session().await;
    let register = session.register().await;
    let states: HashMap<String, TaskState> = register
        .tasks
        .iter()
        .map(|t| (t.task_id.clone(), t.state()))
        .collect();
    assert_eq!(
        states.get(done),
        Some(&TaskState::TaskFinished),
        "unacknowledged terminal status"
    );
    assert_eq!(states.get(waiting), Some(&TaskState::TaskRunning));

    // A status that arises before the leader accepts the registration is sent once it does.
    std::fs::write(c.work.sandbox(waiting).join("go"), b"")?;
    eventually("the task finished", || {
        c.work.recorded_state(waiting).as_deref() == Some("Finished")
    })
    .await;
    session.registered(&register.agent_id, 1, 1000);
    session.status(waiting, TaskState::TaskFinished).await;

    // Acknowledged statuses are forgotten; the sandboxes stay.
    session.command(Msg::Acknowledge(Acknowledge {
        task_ids: vec![done.into(), waiting.into()],
    }));
    eventually("the task records are deleted", || {
        c.work.record(done).is_none() && c.work.record(waiting).is_none()
    })
    .await;
    assert!(c.work.sandbox(done).join("stdout").exists());
    session.close();
    let register = c.scheduler.session().await.register().await;
    assert!(register.tasks.is_empty(), "{:?}", register.tasks);
    c.agent.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_kills_what_the_leader_does_not_know() -> anyhow::Result<()> {
    let mut c = connected().await?;
    let (keep, stray) = ("keep", "stray");
    c.session.command(launch(vec![
        shell_task(keep, "sleep 1000"),
        shell_task(stray, "sleep 1000"),
    ]));
    c.session.status(keep, TaskState::TaskRunning).await;
    c.session.status(stray, TaskState::TaskRunning).await;
    let stray_pid = c.work.pid(stray)?;

    c.session.command(Msg::Reconcile(Reconcile {
        known_task_ids: vec![keep.into(), "ghost".into()],
    }));
    c.session.status(stray, TaskState::TaskKilled).await;
    let ghost = c.session.status("ghost", TaskState::TaskLost).await;
    assert_eq!(ghost.reason, "REASON_TASK_UNKNOWN");
    eventually("the stray task's process is gone", || !is_alive(stray_pid)).await;
    assert!(is_alive(c.work.pid(keep)?), "a known task was killed");

    c.session.command(kill(keep, 100));
    c.session.status(keep, TaskState::TaskKilled).await;
    c.agent.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_or_impossible_launches_fail_clearly() -> anyhow::Result<()> {
    let mut c = connected().await?;
    let mut mesos_image = shell_task("mesos-image", "true");
    mesos_image.container_json = r#"{"type":"MESOS","docker":{"image":"nginx"}}"#.into();
    let mut fetch = shell_task("fetch", "true");
    fetch.fetch = vec![stride_proto::v1::FetchUri {
        uri: "hdfs://namenode/a.tgz".into(),
        ..Default::default()
    }];
    let mut no_user = shell_task("no-user", "true");
    no_user.user = "no-such-user-stride".into();
    let missing_binary = {
        let mut t = shell_task("missing-binary", "");
        t.args = vec!["/nonexistent/binary".into()];
        t
    };
    c.session
        .command(launch(vec![mesos_image, fetch, no_user, missing_binary]));

    let s = c.session.status("mesos-image", TaskState::TaskFailed).await;
    assert_eq!(
        s.message,
        "MESOS containers with an image are not supported; use DOCKER"
    );
    let s = c.session.status("fetch", TaskState::TaskFailed).await;
    assert!(
        s.message.contains("hdfs://namenode/a.tgz") && s.message.contains("not supported"),
        "{}",
        s.message
    );
    let s = c.session.status("no-user", TaskState::TaskFailed).await;
    assert_eq!(s.message, "user no-such-user-stride does not exist");
    let s = c
        .session
        .status("missing-binary", TaskState::TaskFailed)
        .await;
    assert!(s.message.contains("/nonexistent/binary"), "{}", s.message);
    c.agent.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_run_as_the_requested_user_when_the_agent_is_root() -> anyhow::Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root");
        return Ok(());
    }
    let Some(nobody) = nix::unistd::User::from_name("nobody")? else {
        eprintln!("skipped: no user nobody");
        return Ok(());
    };
    let mut c = connected().await?;
    let mut spec = shell_task("as-nobody", "id -u; echo $USER; touch mine");
    spec.user = "nobody".into();
    c.session.command(launch(vec![spec]));
    c.session.status("as-nobody", TaskState::TaskFinished).await;
    let stdout = std::fs::read_to_string(c.work.sandbox("as-nobody").join("stdout"))?;
    assert_eq!(stdout, format!("{}\nnobody\n", nobody.uid));
    c.agent.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_adopts_its_running_tasks() -> anyhow::Result<()> {
    let work = WorkDir::new()?;
    let mut scheduler = FakeScheduler::start().await?;
    let agent = RunningAgent::start(work.config(vec![scheduler.url()]));
    let mut session = scheduler.session().await;
    let first = session.register().await;
    session.registered(&first.agent_id, 1, 1000);
    let id = "survivor";
    session.command(launch(vec![shell_task(id, "sleep 1000")]));
    session.status(id, TaskState::TaskRunning).await;
    let pid = work.pid(id)?;

    agent.stop().await?;
    assert!(is_alive(pid), "stopping the agent stopped its task");

    let agent = RunningAgent::start(work.config(vec![scheduler.url()]));
    let mut session = scheduler.session().await;
    let register = session.register().await;
    assert_eq!(register.agent_id, first.agent_id);
    let task = register
        .tasks
        .iter()
        .find(|t| t.task_id == id)
        .expect("the task is in the Register");
    assert_eq!(task.state(), TaskState::TaskRunning);
    assert_eq!(work.pid(id)?, pid);
    assert!(is_alive(pid));

    session.registered(&register.agent_id, 1, 1000);
    session.command(kill(id, 1000));
    session.status(id, TaskState::TaskKilling).await;
    session.status(id, TaskState::TaskKilled).await;
    assert!(!is_alive(pid));
    agent.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_died_while_the_agent_was_down_is_reported_failed() -> anyhow::Result<()> {
    let work = WorkDir::new()?;
    let mut scheduler = FakeScheduler::start().await?;
    let agent = RunningAgent::start(work.config(vec![scheduler.url()]));
    let mut session = scheduler.session().await;
    let first = session.register().await;
    session.registered(&first.agent_id, 1, 1000);
    let id = "casualty";
    session.command(launch(vec![shell_task(id, "sleep 1000")]));
    session.status(id, TaskState::TaskRunning).await;
    let pid = work.pid(id)?;
    agent.stop().await?;

    killpg(Pid::from_raw(pid), Signal::SIGKILL)?;
    eventually("the task is dead", || !is_alive(pid)).await;

    let agent = RunningAgent::start(work.config(vec![scheduler.url()]));
    let register = scheduler.session().await.register().await;
    let task = register
        .tasks
        .iter()
        .find(|t| t.task_id == id)
        .expect("the task is in the Register");
    assert_eq!(task.state(), TaskState::TaskFailed);
    assert_eq!(task.message, "task died while the agent was down");
    agent.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adopted_task_that_exits_is_reported() -> anyhow::Result<()> {
    let work = WorkDir::new()?;
    let mut scheduler = FakeScheduler::start().await?;
    let agent = RunningAgent::start(work.config(vec![scheduler.url()]));
    let mut session = scheduler.session().await;
    let first = session.register().await;
    session.registered(&first.agent_id, 1, 1000);
    let id = "adopted";
    session.command(launch(vec![shell_task(id, "sleep 1000")]));
    session.status(id, TaskState::TaskRunning).await;
    let pid = work.pid(id)?;
    agent.stop().await?;

    let agent = RunningAgent::start(work.config(vec![scheduler.url()]));
    let mut session = scheduler.session().await;
    let register = session.register().await;
    session.registered(&register.agent_id, 1, 1000);
    // Not through the agent: the process just ends.
    send_signal(Pid::from_raw(pid), Signal::SIGKILL)?;
    let failed = session.status(id, TaskState::TaskFailed).await;
    assert_eq!(
        failed.message,
        "task exited while the agent was not watching; exit status unknown"
    );
    eventually("nothing of the task is left", || {
        group_members(pid).is_empty()
    })
    .await;
    agent.stop().await
}
