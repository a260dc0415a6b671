//! Docker tasks on this machine's Docker Engine, with a busybox image built here (no registry is
//! needed): bridge networking with a host port, output in the sandbox, exits, the memory limit,
//! kills, agent restarts, persistent volumes, command checks, and the launches refused with a
//! reason. Every test skips (saying so) when `docker info` fails.

mod support;

use std::time::Duration;

use stride_proto::v1::{CommandCheckRequest, TaskState};
use support::*;

/// A connected agent, the test image, and a sweeper for the agent's containers.
async fn docker_agent() -> anyhow::Result<(Connected, ContainerSweeper)> {
    ensure_test_image()?;
    let c = connected().await?;
    let sweeper = ContainerSweeper {
        agent_id: c.register.agent_id.clone(),
    };
    Ok((c, sweeper))
}

/// GET `url` with a plain TCP request; the body of a 200 answer.
async fn http_get(url_host: &str, port: u16) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect((url_host, port)),
    )
    .await
    .ok()?
    .ok()?;
    let request = format!("GET / HTTP/1.0\r\nHost: {url_host}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut response))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then_some(())?;
    head.contains(" 200 ").then(|| body.to_string())
}

async fn eventually_async<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {PATIENCE:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_container_serves_on_its_host_port_and_outlives_an_agent_restart(
) -> anyhow::Result<()> {
    if !docker_available("a_bridge_container_serves_on_its_host_port") {
        return Ok(());
    }
    let (mut c, _sweeper) = docker_agent().await?;
    let id = "test_docker.instance-bridge._app.1";
    let port = free_port()?;
    let mut task = docker_task(
        id,
        "echo starting; mkdir -p /www && echo hello-stride > /www/index.html && exec httpd -f -p 8080 -h /www",
        serde_json::json!({
            "portMappings": [{"containerPort": 8080, "hostPort": 0, "protocol": "tcp", "name": "http"}],
        }),
    );
    task.network_mode = "container/bridge".into();
    task.host_ports = vec![u32::from(port)];
    task.port_names = vec!["http".into()];
    c.session.command(launch(vec![task]));
    c.session.status(id, TaskState::TaskStarting).await;
    let running = c.session.status(id, TaskState::TaskRunning).await;
    assert_eq!(running.ports, vec![u32::from(port)]);

    eventually_async("httpd answers on the host port", || async {
        http_get("127.0.0.1", port).await.as_deref() == Some("hello-stride\n")
    })
    .await;
    let containers = running_containers(id)?;
    assert_eq!(containers.len(), 1, "docker ps shows the task's container");
    let inspected = docker(&[
        "inspect",
        "--format",
        "{{.Name}} {{index .Config.Labels \"stride.app_id\"}} {{.HostConfig.NetworkMode}}",
        &containers[0],
    ])?;
    assert_eq!(inspected, format!("/stride-{id} /test/docker bridge"));
    let stdout = c.work.sandbox(id).join("stdout");
    eventually("the container's output is in the sandbox", || {
        std::fs::read_to_string(&stdout).is_ok_and(|s| s == "starting\n")
    })
    .await;

    // The agent goes away; the container stays.
    c.agent.stop().await?;
    assert_eq!(
        running_containers(id)?,
        containers,
        "stopping the agent stopped the container"
    );
    let agent = RunningAgent::start(c.work.config(vec![c.scheduler.url()]));
    let mut session = c.scheduler.session().await;
    let register = session.register().await;
    let task = register
        .tasks
        .iter()
        .find(|t| t.task_id == id)
        .ok_or_else(|| anyhow::anyhow!("the task is not in the Register"))?;
    assert_eq!(task.state(), TaskState::TaskRunning);
    assert_eq!(running_containers(id)?, containers, "the same container");
    assert_eq!(
        http_get("127.0.0.1", port).await.as_deref(),
        Some("hello-stride\n")
    );
    session.registered(&register.agent_id, 1, 1000);
    // Re-attaching does not copy the output again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(std::fs::read_to_string(&stdout)?, "starting\n");

    session.command(kill(id, 2000));
    session.status(id, TaskState::TaskKilling).await;
    let killed = session.status(id, TaskState::TaskKilled).await;
    assert!(
        killed.message.starts_with("Container exited"),
        "{}",
        killed.message
    );
    eventually("docker ps shows no container of the task", || {
        running_containers(id).is_ok_and(|c| c.is_empty())
    })
    .await;
    agent.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_exits_map_like_processes() -> anyhow::Result<()> {
    if !docker_available("container_exits_map_like_processes") {
        return Ok(());
    }
    let (mut c, _sweeper) = docker_agent().await?;
    let no_extra = serde_json::json!({});
    let mut args = docker_task("docker-args", "", no_extra.clone());
    args.args = vec!["/bin/echo".into(), "from".into(), "args".into()];
    let mut user = docker_task("docker-user", "id -u", no_extra.clone());
    user.user = "nobody".into();
    c.session.command(launch(vec![
        docker_task(
            "docker-fail",
            "echo out; echo err >&2; exit 3",
            no_extra.clone(),
        ),
        docker_task(
            "docker-env",
            "echo $MESOS_TASK_ID $MARATHON_APP_ID $MESOS_SANDBOX $HOST; touch $MESOS_SANDBOX/made-inside",
            serde_json::json!({"docker": {"parameters": [
                {"key": "env", "value": "EXTRA=yes"},
                {"key": "label", "value": "team=core"},
                {"key": "workdir", "value": "/tmp"},
                {"key": "hostname", "value": "stride-box"},
            ]}}),
        ),
        args,
        user,
    ]));

    let failed = c.session.status("docker-fail", TaskState::TaskFailed).await;
    assert_eq!(failed.exit_code, Some(3));
    assert_eq!(failed.message, "Container exited with status 3");
    assert_eq!(failed.reason, "REASON_COMMAND_EXECUTOR_FAILED");
    let sandbox = c.work.sandbox("docker-fail");
    assert_eq!(std::fs::read_to_string(sandbox.join("stdout"))?, "out\n");
    assert_eq!(std::fs::read_to_string(sandbox.join("stderr"))?, "err\n");

    let finished = c
        .session
        .status("docker-env", TaskState::TaskFinished)
        .await;
    assert_eq!(finished.exit_code, Some(0));
    let sandbox = c.work.sandbox("docker-env");
    assert_eq!(
        std::fs::read_to_string(sandbox.join("stdout"))?,
        "docker-env /test/docker /mnt/mesos/sandbox 127.0.0.1\n"
    );
    assert!(
        sandbox.join("made-inside").exists(),
        "the sandbox is mounted at $MESOS_SANDBOX"
    );

    c.session
        .status("docker-args", TaskState::TaskFinished)
        .await;
    assert_eq!(
        std::fs::read_to_string(c.work.sandbox("docker-args").join("stdout"))?,
        "from args\n"
    );
    c.session
        .status("docker-user", TaskState::TaskFinished)
        .await;
    assert_eq!(
        std::fs::read_to_string(c.work.sandbox("docker-user").join("stdout"))?,
        "65534\n"
    );
    eventually("finished containers are removed", || {
        docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=stride.agent_id={}", c.register.agent_id),
        ])
        .is_ok_and(|s| s.is_empty())
    })
    .await;
    c.agent.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_over_its_memory_is_reported_with_the_memory_reason() -> anyhow::Result<()> {
    if !docker_available("a_container_over_its_memory") {
        return Ok(());
    }
    let (mut c, _sweeper) = docker_agent().await?;
    let mut task = docker_task(
        "docker-oom",
        "dd if=/dev/zero of=/dev/null bs=100M count=1",
        serde_json::json!({}),
    );
    task.resources = Some(stride_proto::v1::Resources {
        cpus: 0.5,
        mem: 32.0,
        disk: 0.0,
        gpus: 0,
        ports: Vec::new(),
    });
    c.session.command(launch(vec![task]));
    let failed = c.session.status("docker-oom", TaskState::TaskFailed).await;
    assert_eq!(
        failed.reason, "REASON_CONTAINER_LIMITATION_MEMORY",
        "{failed:?}"
    );
    assert!(
        failed.message.contains("Memory limit exceeded"),
        "{}",
        failed.message
    );
    c.agent.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_that_died_while_the_agent_was_down_is_reported_failed() -> anyhow::Result<()> {
    if !docker_available("a_container_that_died_while_the_agent_was_down") {
        return Ok(());
    }
    let (mut c, _sweeper) = docker_agent().await?;
    let id = "docker-casualty";
    c.session.command(launch(vec![docker_task(
        id,
        "exec sleep 1000",
        serde_json::json!({}),
    )]));
    c.session.status(id, TaskState::TaskRunning).await;
    let containers = running_containers(id)?;
    assert_eq!(containers.len(), 1);
    c.agent.stop().await?;
    docker(&["kill", &containers[0]])?;

    let agent = RunningAgent::start(c.work.config(vec![c.scheduler.url()]));
    let register = c.scheduler.session().await.register().await;
    let task = register
        .tasks
        .iter()
        .find(|t| t.task_id == id)
        .ok_or_else(|| anyhow::anyhow!("the task is not in the Register"))?;
    assert_eq!(task.state(), TaskState::TaskFailed);
    assert!(
        task.message
            .starts_with("task died while the agent was down"),
        "{}",
        task.message
    );
    assert_eq!(task.exit_code, Some(137));
    agent.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resident_docker_volume_survives_a_relaunch() -> anyhow::Result<()> {
    if !docker_available("a_resident_docker_volume_survives_a_relaunch") {
        return Ok(());
    }
    let (mut c, _sweeper) = docker_agent().await?;
    let instance = "test_docker.instance-7e4d2b63-0000-11ef-8000-000000000001";
    let volume = serde_json::json!({
        "volumes": [{"containerPath": "data", "persistent": {"size": 10}, "mode": "RW"}],
    });
    let first = format!("{instance}._app.1");
    let second = format!("{instance}._app.2");
    c.session.command(launch(vec![docker_task(
        &first,
        "echo kept > /data/file",
        volume.clone(),
    )]));
    c.session.status(&first, TaskState::TaskFinished).await;
    c.session.command(launch(vec![docker_task(
        &second,
        "cat /data/file $MESOS_SANDBOX/data/file",
        volume,
    )]));
    c.session.status(&second, TaskState::TaskFinished).await;
    assert_eq!(
        std::fs::read_to_string(c.work.sandbox(&second).join("stdout"))?,
        "kept\nkept\n"
    );
    c.agent.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_checks_run_inside_the_container() -> anyhow::Result<()> {
    if !docker_available("command_checks_run_inside_the_container") {
        return Ok(());
    }
    let (mut c, _sweeper) = docker_agent().await?;
    let mut api = agent_api(&c.register).await?;
    let id = "docker-checked";
    c.session.command(launch(vec![docker_task(
        id,
        "echo inside > /tmp/state; exec sleep 1000",
        serde_json::json!({}),
    )]));
    c.session.status(id, TaskState::TaskRunning).await;
    let check = |command: &str| CommandCheckRequest {
        task_id: id.into(),
        command: command.into(),
        timeout_ms: 5000,
    };
    eventually_async("the check sees the container's file", || {
        let mut api = api.clone();
        let request = check("cat /tmp/state");
        async move {
            api.run_command_check(request)
                .await
                .is_ok_and(|r| r.get_ref().healthy && r.get_ref().output == "inside\n")
        }
    })
    .await;
    let bad = api.run_command_check(check("exit 4")).await?.into_inner();
    assert_eq!((bad.healthy, bad.exit_code), (false, 4));
    c.session.command(kill(id, 0));
    c.session.status(id, TaskState::TaskKilled).await;
    c.agent.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_docker_launches_say_why() -> anyhow::Result<()> {
    if !docker_available("refused_docker_launches_say_why") {
        return Ok(());
    }
    let (mut c, _sweeper) = docker_agent().await?;
    let mut mesos_image = shell_task("refused-mesos-image", "true");
    mesos_image.container_json =
        serde_json::json!({"type": "MESOS", "docker": {"image": TEST_IMAGE}}).to_string();
    c.session.command(launch(vec![
        docker_task(
            "refused-parameter",
            "true",
            serde_json::json!({"docker": {"parameters": [{"key": "volume", "value": "/:/host"}]}}),
        ),
        docker_task(
            "refused-privileged",
            "true",
            serde_json::json!({"docker": {"privileged": true}}),
        ),
        docker_task(
            "refused-host-volume",
            "true",
            serde_json::json!({"volumes": [{"containerPath": "/host", "hostPath": "/etc", "mode": "RO"}]}),
        ),
        docker_task(
            "refused-pull",
            "true",
            serde_json::json!({"docker": {"forcePullImage": true}}),
        ),
        mesos_image,
    ]));
    let message = |s: stride_proto::v1::TaskStatus| s.message;
    let m = message(
        c.session
            .status("refused-parameter", TaskState::TaskFailed)
            .await,
    );
    assert!(
        m.contains("docker parameter 'volume' is not supported"),
        "{m}"
    );
    let m = message(
        c.session
            .status("refused-privileged", TaskState::TaskFailed)
            .await,
    );
    assert!(m.contains("privileged containers are not allowed"), "{m}");
    let m = message(
        c.session
            .status("refused-host-volume", TaskState::TaskFailed)
            .await,
    );
    assert!(m.contains("host path volumes are not allowed"), "{m}");
    let m = message(
        c.session
            .status("refused-pull", TaskState::TaskFailed)
            .await,
    );
    assert!(
        m.contains("cannot pull image") && m.contains(TEST_IMAGE),
        "{m}"
    );
    // This machine reaches no registry: the message must say so (elsewhere the pull may fail
    // for another reason, the image being local only).
    if m.contains("dial tcp") || m.contains("no such host") {
        assert!(m.contains("could not be reached"), "{m}");
    }
    let m = message(
        c.session
            .status("refused-mesos-image", TaskState::TaskFailed)
            .await,
    );
    assert_eq!(
        m,
        "MESOS containers with an image are not supported; use DOCKER"
    );
    c.agent.stop().await
}

#[test]
fn an_unknown_container_type_is_refused_by_validation() {
    let refused = stride_core::parse::parse_app(
        br#"{"id": "/foo", "cmd": "true", "container": {"type": "FOO"}}"#,
        &stride_core::PathId::root(),
    );
    let error = refused
        .err()
        .map(|e| (e.code.http_status(), e.body.to_string()));
    assert!(
        error
            .as_ref()
            .is_some_and(|(status, body)| *status == 422 && body.contains("/container/type")),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_written_while_the_agent_is_down_is_copied_once() -> anyhow::Result<()> {
    if !docker_available("output_written_while_the_agent_is_down_is_copied_once") {
        return Ok(());
    }
    let (mut c, _sweeper) = docker_agent().await?;
    let id = "docker-chatty";
    c.session.command(launch(vec![docker_task(
        id,
        "echo one; echo err-one >&2; while test ! -e $MESOS_SANDBOX/go; do sleep 0.1; done; echo two; echo err-two >&2; exec sleep 1000",
        serde_json::json!({}),
    )]));
    c.session.status(id, TaskState::TaskRunning).await;
    let sandbox = c.work.sandbox(id);
    let read = |name: &str| std::fs::read_to_string(sandbox.join(name)).unwrap_or_default();
    eventually("the first lines are copied", || {
        read("stdout") == "one\n" && read("stderr") == "err-one\n"
    })
    .await;
    c.agent.stop().await?;

    std::fs::write(sandbox.join("go"), b"")?;
    let container = running_containers(id)?
        .pop()
        .ok_or_else(|| anyhow::anyhow!("no container"))?;
    eventually("the container wrote its second line", || {
        docker(&["logs", &container]).is_ok_and(|out| out.contains("two"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        read("stdout"),
        "one\n",
        "nothing copies while the agent is down"
    );

    let agent = RunningAgent::start(c.work.config(vec![c.scheduler.url()]));
    let mut session = c.scheduler.session().await;
    let register = session.register().await;
    session.registered(&register.agent_id, 1, 1000);
    eventually("the rest is copied after the restart", || {
        read("stdout") == "one\ntwo\n" && read("stderr") == "err-one\nerr-two\n"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(read("stdout"), "one\ntwo\n", "and only once");
    session.command(kill(id, 0));
    session.status(id, TaskState::TaskKilled).await;
    agent.stop().await
}

#[test]
fn the_image_is_built_from_a_static_busybox_only() -> anyhow::Result<()> {
    assert!(
        has_interpreter(&std::fs::read("/bin/sh")?),
        "/bin/sh is dynamic"
    );
    if let Ok(busybox) = std::fs::read("/bin/busybox") {
        assert!(
            !has_interpreter(&busybox),
            "Debian's busybox-static is static"
        );
    }
    Ok(())
}
