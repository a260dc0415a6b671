//! Schedulers and the gateway on a `redis+sentinel://` URL survive losing the Redis master:
//! Sentinel promotes a replica, every process finds it by itself, the app and its tasks are
//! all there, and the cluster takes changes again.

use std::time::{Duration, Instant};

use stride_store::{RedisStore, StateStore};
use stride_testkit::RedisHa;
use stride_tests::{Cluster, Flags};
use tokio::task::block_in_place;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_follows_a_redis_failover() {
    let mut ha = block_in_place(|| RedisHa::start(2, 3));
    let url = ha.url("failover_timeout=30s");
    let c = block_in_place(|| {
        Cluster::start_with(
            2,
            1,
            Flags {
                redis_url: Some(url.clone()),
                ..Flags::default()
            },
        )
    });
    c.api
        .until(Duration::from_secs(30), "a leader", |api| async move {
            let r = api.try_get("/v2/leader").await?;
            (r.status == 200).then_some(())
        })
        .await;
    let r = c
        .api
        .post(
            "/v2/apps",
            r#"{"id":"/web","cmd":"sleep 1000","cpus":0.1,"mem":16,"instances":2}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let before = c
        .api
        .until_running("/web", 2, Duration::from_secs(30))
        .await;
    let mut ids: Vec<String> = before
        .iter()
        .filter_map(|t| t["id"].as_str().map(str::to_string))
        .collect();
    ids.sort();

    let old = ha.master_port().expect("the sentinels agree on a master");
    let killed = Instant::now();
    block_in_place(|| ha.kill(old));
    let new = block_in_place(|| ha.wait_ready(Duration::from_secs(60)));
    assert_ne!(new, old, "a replica was promoted");

    // A change goes through once the leader writes on the new master.
    c.api
        .until(
            Duration::from_secs(60),
            "the scale-up accepted after the failover",
            |api| async move {
                let r = api.put("/v2/apps/web", r#"{"instances":3}"#).await;
                (r.status == 200).then_some(())
            },
        )
        .await;
    let after = c
        .api
        .until_running("/web", 3, Duration::from_secs(60))
        .await;
    println!(
        "RECOVERY | sentinel: master SIGKILL under a cluster | scaled app running {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    for id in &ids {
        if !after.iter().any(|t| t["id"] == id.as_str()) {
            c.dump_logs();
            panic!("task {id} from before the failover must still run: {after:?}");
        }
    }

    // The state the cluster wrote is on the new master, under a leader of the store.
    let store = RedisStore::connect(&url, "stride")
        .await
        .expect("connect through the sentinels");
    let apps = store.keys("apps").await.expect("keys");
    assert!(apps.iter().any(|k| k.ends_with("web")), "{apps:?}");
    assert!(store.leader().await.expect("leader").is_some());
}
