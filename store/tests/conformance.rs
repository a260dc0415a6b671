//! Both stores pass the same suite; the Redis one against a real `redis-server`.

use stride_store::{conformance, MemoryStore, RedisStore};
use stride_testkit::RedisServer;

#[tokio::test]
async fn memory_store_conforms() {
    conformance::run_all(&MemoryStore::new()).await;
}

#[tokio::test]
async fn redis_store_conforms() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url(), "stride-test")
        .await
        .expect("connect");
    conformance::run_all(&store).await;
}
