//! The event bus end to end: the order of a deployment's events, HTTP callback subscriptions
//! delivered by the leader, and SSE resumption with `Last-Event-ID` across a reconnect.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use stride_tests::Cluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A tiny HTTP server that records the JSON bodies POSTed to it.
async fn callback_server() -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/events", listener.local_addr().expect("addr"));
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let store = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let store = store.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    let Ok(n) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let Some((head, body)) = text.split_once("\r\n\r\n") else {
                        continue;
                    };
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if body.len() < len {
                        continue;
                    }
                    if let Ok(v) = serde_json::from_str::<Value>(&body[..len]) {
                        if let Ok(mut s) = store.lock() {
                            s.push(v);
                        }
                    }
                    let _ = sock
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    buf.clear();
                }
            });
        }
    });
    (url, seen)
}

fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| e["eventType"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_get_every_event_in_order() {
    let c = Cluster::start(1, 1);
    c.api
        .until(Duration::from_secs(20), "a leader", |_| async {
            c.leader_index().await
        })
        .await;
    let (url, seen) = callback_server().await;
    let r = c
        .api
        .post(&format!("/v2/eventSubscriptions?callbackUrl={url}"), "")
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["eventType"], "subscribe_event");
    let r = c.api.get("/v2/eventSubscriptions").await;
    assert_eq!(r.body["callbackUrls"][0], url.as_str());
    let r = c
        .api
        .post("/v2/eventSubscriptions?callbackUrl=not%20a%20url", "")
        .await;
    assert_eq!(r.status, 422);
    // Give the leader a moment to pick the subscription up (it re-reads every second).
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let r = c
        .api
        .post(
            "/v2/apps",
            r#"{"id":"/evented","cmd":"sleep 100000","cpus":0.1,"mem":16}"#,
        )
        .await;
    assert_eq!(r.status, 201);
    let events = c
        .api
        .until(
            Duration::from_secs(30),
            "the deployment's events at the callback",
            |_| {
                let seen = seen.clone();
                async move {
                    let s = seen.lock().ok()?.clone();
                    types(&s)
                        .contains(&"deployment_success".to_string())
                        .then_some(s)
                }
            },
        )
        .await;
    let t = types(&events);
    let pos = |name: &str| {
        t.iter()
            .position(|x| x == name)
            .unwrap_or_else(|| panic!("no {name} in {t:?}"))
    };
    assert!(pos("api_post_event") < pos("deployment_info"), "{t:?}");
    assert!(
        pos("group_change_success") < pos("deployment_info"),
        "{t:?}"
    );
    assert!(pos("deployment_info") < pos("status_update_event"), "{t:?}");
    assert!(
        pos("status_update_event") < pos("deployment_success"),
        "{t:?}"
    );
    let update = &events[pos("status_update_event")];
    assert_eq!(update["appId"], "/evented");
    assert!(update["taskId"]
        .as_str()
        .is_some_and(|id| id.starts_with("evented.instance-")));

    let r = c
        .api
        .delete(&format!("/v2/eventSubscriptions?callbackUrl={url}"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["eventType"], "unsubscribe_event");
    assert_eq!(
        c.api.get("/v2/eventSubscriptions").await.body["callbackUrls"],
        serde_json::json!([])
    );
}

/// Reads SSE frames from `url` until `want` frames of the given types arrived; returns (id, type).
async fn sse(
    url: &str,
    last_event_id: Option<&str>,
    want: usize,
    filter: &[&str],
) -> Vec<(String, String)> {
    let client = reqwest::Client::new();
    let mut req = client.get(url).header("Accept", "text/event-stream");
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id);
    }
    let mut resp = req.send().await.expect("SSE connects");
    let mut buf = String::new();
    let mut frames = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while frames.len() < want {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .expect("events in time")
            .expect("stream");
        let Some(chunk) = chunk else { break };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\r\n\r\n") {
            let frame: String = buf.drain(..end + 4).collect();
            let id = frame
                .lines()
                .find_map(|l| l.strip_prefix("id: "))
                .unwrap_or("")
                .to_string();
            let kind = frame
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or("")
                .to_string();
            if filter.contains(&kind.as_str()) {
                frames.push((id, kind));
            }
        }
    }
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_sse_client_misses_nothing() {
    let c = Cluster::start(1, 1);
    c.api
        .until(Duration::from_secs(20), "a leader", |_| async {
            c.leader_index().await
        })
        .await;
    let url = format!("{}/v2/events?event_type=api_post_event", c.api.base);
    let first = {
        let url = url.clone();
        tokio::spawn(async move { sse(&url, None, 1, &["api_post_event"]).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        c.api
            .post(
                "/v2/apps",
                r#"{"id":"/a1","cmd":"sleep 1000","cpus":0.1,"mem":16,"instances":0}"#
            )
            .await
            .status,
        201
    );
    let got = first.await.expect("join");
    let last = got[0].0.clone();
    assert!(!last.is_empty(), "every event has an id");
    // While nobody listens, two more changes happen.
    assert_eq!(
        c.api
            .post(
                "/v2/apps",
                r#"{"id":"/a2","cmd":"sleep 1000","cpus":0.1,"mem":16,"instances":0}"#
            )
            .await
            .status,
        201
    );
    assert_eq!(
        c.api
            .post(
                "/v2/apps",
                r#"{"id":"/a3","cmd":"sleep 1000","cpus":0.1,"mem":16,"instances":0}"#
            )
            .await
            .status,
        201
    );
    // A client that resumes from the last id it saw gets exactly those.
    let resumed = sse(&url, Some(&last), 2, &["api_post_event"]).await;
    assert_eq!(resumed.len(), 2);
    assert!(
        resumed.iter().all(|(id, _)| id > &last),
        "{resumed:?} after {last}"
    );
}
