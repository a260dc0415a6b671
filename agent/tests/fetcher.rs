//! The fetcher against a real HTTP server on 127.0.0.1: archives extracted, executables made
//! executable, failures reported with the URI and the status, the cache used, destinations kept
//! inside the sandbox.

mod support;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use stride_proto::v1::TaskState;
use support::*;

/// A gzipped tar with `app/hello.sh` (0755).
fn hello_tgz() -> anyhow::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let script = b"#!/bin/sh\necho hello from the archive\n";
    let mut header = tar::Header::new_gnu();
    header.set_size(script.len() as u64);
    header.set_mode(0o755);
    header.set_cksum();
    tar.append_data(&mut header, "app/hello.sh", &script[..])?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar.into_inner()?)?;
    Ok(gz.finish()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archives_are_extracted_and_executables_run() -> anyhow::Result<()> {
    let server = FileServer::start(vec![
        ("/dl/app.tgz", hello_tgz()?),
        ("/dl/tool.sh", b"#!/bin/sh\necho the tool ran\n".to_vec()),
        ("/dl/notes.txt", b"plain\n".to_vec()),
    ])
    .await?;
    let mut c = connected().await?;
    let id = "fetch-extract";
    let mut task = shell_task(
        id,
        "./app/hello.sh && ./tool.sh && cat conf/notes.txt && test -f app.tgz",
    );
    let mut notes = fetch(&server.url("/dl/notes.txt"), false, false, false);
    notes.dest_path = "conf/notes.txt".into();
    task.fetch = vec![
        fetch(&server.url("/dl/app.tgz"), true, false, false),
        fetch(&server.url("/dl/tool.sh"), false, true, false),
        notes,
    ];
    c.session.command(launch(vec![task]));
    c.session.status(id, TaskState::TaskStarting).await;
    let finished = c.session.status(id, TaskState::TaskFinished).await;
    assert_eq!(finished.exit_code, Some(0));
    let sandbox = c.work.sandbox(id);
    assert_eq!(
        std::fs::read_to_string(sandbox.join("stdout"))?,
        "hello from the archive\nthe tool ran\nplain\n"
    );
    let mode = std::fs::metadata(sandbox.join("tool.sh"))?
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755, "executable: true makes the file 0755");
    c.agent.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fetch_fails_the_task_with_the_uri_and_the_status() -> anyhow::Result<()> {
    let server = FileServer::start(vec![]).await?;
    let mut c = connected().await?;
    let missing = server.url("/dl/missing.tgz");
    let mut task = shell_task("fetch-404", "touch ran");
    task.fetch = vec![fetch(&missing, true, false, false)];
    let mut escape = shell_task("fetch-escape", "touch ran");
    let mut outside = fetch(&server.url("/dl/missing.tgz"), false, false, false);
    outside.dest_path = "../../escaped".into();
    escape.fetch = vec![outside];
    c.session.command(launch(vec![task, escape]));

    let failed = c.session.status("fetch-404", TaskState::TaskFailed).await;
    assert!(
        failed.message.contains(&missing) && failed.message.contains("404"),
        "the message names the URI and the status: {}",
        failed.message
    );
    assert_eq!(failed.reason, "REASON_CONTAINER_LAUNCH_FAILED");
    assert!(
        !c.work.sandbox("fetch-404").join("ran").exists(),
        "the command ran"
    );
    let failed = c
        .session
        .status("fetch-escape", TaskState::TaskFailed)
        .await;
    assert!(
        failed
            .message
            .contains("not a relative path inside the sandbox"),
        "{}",
        failed.message
    );
    assert!(!c.work.path().join("escaped").exists());
    c.agent.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_uris_are_downloaded_once() -> anyhow::Result<()> {
    let server = FileServer::start(vec![("/dl/data.txt", b"cached content\n".to_vec())]).await?;
    let mut c = connected().await?;
    let uri = server.url("/dl/data.txt");
    for id in ["cache-1", "cache-2"] {
        let mut task = shell_task(id, "cat data.txt");
        task.fetch = vec![fetch(&uri, false, false, true)];
        c.session.command(launch(vec![task]));
        c.session.status(id, TaskState::TaskFinished).await;
        assert_eq!(
            std::fs::read_to_string(c.work.sandbox(id).join("stdout"))?,
            "cached content\n"
        );
    }
    assert_eq!(
        server.hits("/dl/data.txt"),
        1,
        "the second task used the cached copy"
    );
    let cached = std::fs::read_dir(c.work.path().join("cache"))?.count();
    assert_eq!(cached, 1, "one file in <work_dir>/cache");

    // Without `cache`, every task downloads.
    let mut task = shell_task("no-cache", "cat data.txt");
    task.fetch = vec![fetch(&uri, false, false, false)];
    c.session.command(launch(vec![task]));
    c.session.status("no-cache", TaskState::TaskFinished).await;
    assert_eq!(server.hits("/dl/data.txt"), 2);
    c.agent.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_killed_while_fetching_is_killed() -> anyhow::Result<()> {
    // A server that accepts and never answers: the fetch hangs until the kill.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let mut c = connected().await?;
    let id = "fetch-killed";
    let mut task = shell_task(id, "touch ran");
    task.fetch = vec![fetch(&format!("http://{addr}/slow"), false, false, false)];
    c.session.command(launch(vec![task]));
    c.session.status(id, TaskState::TaskStarting).await;
    c.session.command(kill(id, 1000));
    c.session.status(id, TaskState::TaskKilling).await;
    let killed = c.session.status(id, TaskState::TaskKilled).await;
    assert_eq!(killed.message, "task killed before it started");
    assert!(!c.work.sandbox(id).join("ran").exists());
    c.agent.stop().await
}
