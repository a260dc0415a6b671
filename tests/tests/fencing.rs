//! A leader paused past its lease and resumed cannot change anything: its writes are fenced by
//! the epoch in the lease, and it steps down.

use std::time::Duration;

use nix::sys::signal::Signal;
use stride_proto::v1::{
    app_change, control_client::ControlClient, AppChange, DeployRequest, RunSpecJson,
};
use stride_tests::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_resumes_fenced() {
    let c = Cluster::start(2, 1);
    let old = c
        .api
        .until(Duration::from_secs(20), "a leader", |_| async {
            c.leader_index().await
        })
        .await;
    let old_port = c.scheduler_ports[old];

    // Connect to the leader's control port before pausing it.
    let mut client = ControlClient::connect(format!("http://127.0.0.1:{old_port}"))
        .await
        .expect("the leader's gRPC answers");

    c.schedulers[old].signal(Signal::SIGSTOP);
    let new = c
        .api
        .until(
            Duration::from_secs(20),
            "the standby to take the expired lease",
            |_| {
                let c = &c;
                async move { c.leader_index().await.filter(|i| *i != old) }
            },
        )
        .await;

    // A change sent to the paused leader waits in its socket; it is handled after SIGCONT.
    let pending = tokio::spawn(async move {
        client
            .deploy(DeployRequest {
                dry_run: false,
                changes: vec![AppChange {
                    change: Some(app_change::Change::Create(RunSpecJson {
                        json: r#"{"id":"/fenced","cmd":"sleep 1000","cpus":0.1,"mem":16}"#.into(),
                    })),
                }],
                force: false,
                origin: None,
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.schedulers[old].signal(Signal::SIGCONT);
    let result = tokio::time::timeout(Duration::from_secs(20), pending)
        .await
        .expect("the resumed scheduler answers")
        .expect("task");
    assert!(
        result.is_err(),
        "the deposed leader must not accept the change: {result:?}"
    );
    let log = c.schedulers[old].log_text();
    assert!(
        log.contains("write fenced") || log.contains("stepping down"),
        "the resumed scheduler noticed it lost the lease:\n{log}"
    );
    eprintln!(
        "{}",
        log.lines()
            .filter(|l| l.contains("fenced")
                || l.contains("stepping down")
                || l.contains("stopped leading"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Nothing it did reached the store, and the new leader still leads.
    let r = c.api.get("/v2/apps/fenced").await;
    assert_eq!(r.status, 404, "{}", r.text);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(c.leader_index().await, Some(new));
    let r = c
        .api
        .post(
            "/v2/apps",
            r#"{"id":"/fresh","cmd":"sleep 1000","cpus":0.1,"mem":16,"instances":0}"#,
        )
        .await;
    assert_eq!(r.status, 201, "the new leader accepts writes: {}", r.text);
}
