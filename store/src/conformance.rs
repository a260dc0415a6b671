//! The behaviour every [`StateStore`] must have, as one suite that each implementation's tests
//! run against a fresh store.

use std::time::Duration;

use bytes::Bytes;

use crate::{Batch, Candidate, Changed, StateStore, StoreError, CHANGE_FEED_MAX_LEN};

fn candidate(id: &str) -> Candidate {
    Candidate {
        scheduler_id: id.to_string(),
        grpc_address: format!("127.0.0.1:{}", id.len()),
        http_address: String::new(),
    }
}

/// Runs every check against `store`, which must be empty. Panics on the first failure.
pub async fn run_all<S: StateStore>(store: &S) {
    collections(store).await;
    later_writes_of_a_batch_win(store).await;
    lease_is_exclusive_and_epochs_grow(store).await;
    fenced_writes_change_nothing(store).await;
    events_are_ordered_and_resumable(store).await;
    the_revision_changes_with_every_commit(store).await;
    the_change_feed_names_what_each_commit_changed(store).await;
    the_change_feed_is_bounded(store).await;
}

fn key(collection: &str, key: &str) -> Changed {
    Changed::Key {
        collection: collection.to_string(),
        key: key.to_string(),
    }
}

async fn revision<S: StateStore>(store: &S) -> String {
    store
        .revision()
        .await
        .expect("revision")
        .expect("the store keeps a revision")
}

async fn the_change_feed_names_what_each_commit_changed<S: StateStore>(store: &S) {
    let lease = store
        .try_acquire(&candidate("feed"), Duration::from_secs(5))
        .await
        .expect("store reachable")
        .expect("free lease");
    let start = revision(store).await;
    let none = store
        .changes_since(&start)
        .await
        .expect("changes")
        .expect("the feed reaches the current revision");
    assert_eq!(none.revision, start);
    assert!(none.changed.is_empty(), "{:?}", none.changed);

    let mut b = Batch::new();
    b.put("feed-a", "k1", Bytes::from_static(b"1"))
        .event(Bytes::from_static(b"{}"))
        .put("feed-b", "/odd:key 7", Bytes::from_static(b"2"))
        .put("feed-b", "", Bytes::from_static(b"3"));
    store.commit(&lease, b).await.expect("commit");
    let middle = revision(store).await;
    let mut b = Batch::new();
    b.delete("feed-a", "k1")
        .delete("feed-a", "never-there")
        .drop_collection("feed-b");
    store.commit(&lease, b).await.expect("commit");
    let end = revision(store).await;

    let all = store
        .changes_since(&start)
        .await
        .expect("changes")
        .expect("the feed reaches two commits back");
    assert_eq!(all.revision, end);
    assert_eq!(
        all.changed,
        vec![
            key("feed-a", "k1"),
            key("feed-b", "/odd:key 7"),
            key("feed-b", ""),
            key("feed-a", "k1"),
            key("feed-a", "never-there"),
            Changed::Collection {
                collection: "feed-b".into()
            },
        ],
        "every key written or deleted and every collection dropped, oldest first"
    );
    let later = store
        .changes_since(&middle)
        .await
        .expect("changes")
        .expect("the feed reaches one commit back");
    assert_eq!(later.revision, end);
    assert_eq!(later.changed.len(), 3);

    let mut unfenced = Batch::new();
    unfenced.put("feed-a", "k2", Bytes::from_static(b"x"));
    store.release(&lease).await.expect("release");
    assert!(store.commit(&lease, unfenced).await.is_err());
    store
        .put_unfenced("feed-a", "k3", Bytes::from_static(b"y"))
        .await
        .expect("put");
    let after = store
        .changes_since(&end)
        .await
        .expect("changes")
        .expect("the feed reaches the current revision");
    assert_eq!(
        after.revision, end,
        "neither a fenced commit nor an unfenced write"
    );
    assert!(after.changed.is_empty());
    store.delete_unfenced("feed-a", "k3").await.expect("delete");

    assert_eq!(
        store
            .changes_since("not a revision of this store")
            .await
            .expect("changes"),
        None,
        "a revision the feed never held: read everything again"
    );
}

async fn the_change_feed_is_bounded<S: StateStore>(store: &S) {
    let lease = store
        .try_acquire(&candidate("bound"), Duration::from_secs(60))
        .await
        .expect("store reachable")
        .expect("free lease");
    let first = revision(store).await;
    let mut recent = first.clone();
    // Past the bound by more than a Redis stream node, which approximate trimming keeps whole.
    for n in 0..CHANGE_FEED_MAX_LEN + CHANGE_FEED_MAX_LEN / 2 {
        let mut b = Batch::new();
        b.put("bound", format!("k{n}"), Bytes::from_static(b"v"));
        store.commit(&lease, b).await.expect("commit");
        if n == CHANGE_FEED_MAX_LEN {
            recent = revision(store).await;
        }
    }
    assert_eq!(
        store.changes_since(&first).await.expect("changes"),
        None,
        "a revision older than the feed's bound"
    );
    let since = store
        .changes_since(&recent)
        .await
        .expect("changes")
        .expect("a recent revision is kept");
    assert_eq!(since.changed.len(), CHANGE_FEED_MAX_LEN / 2 - 1);
    assert_eq!(
        since.changed[0],
        key("bound", &format!("k{}", CHANGE_FEED_MAX_LEN + 1))
    );
    let mut b = Batch::new();
    b.drop_collection("bound");
    store.commit(&lease, b).await.expect("commit");
    store.release(&lease).await.expect("release");
}

async fn the_revision_changes_with_every_commit<S: StateStore>(store: &S) {
    let lease = store
        .try_acquire(&candidate("rev"), Duration::from_secs(5))
        .await
        .expect("store reachable")
        .expect("free lease");
    let before = store.revision().await.expect("revision");
    assert!(before.is_some(), "the store keeps a revision");
    assert_eq!(store.revision().await.expect("revision"), before, "stable");
    let mut seen = vec![before];
    for n in 0..3 {
        let mut b = Batch::new();
        b.put("rev", "k", Bytes::from(format!("{n}")));
        store.commit(&lease, b).await.expect("commit");
        let now = store.revision().await.expect("revision");
        assert!(
            !seen.contains(&now),
            "commit {n} left the revision at {now:?}"
        );
        seen.push(now);
    }
    let last = seen.last().cloned().flatten();
    let mut fenced = Batch::new();
    fenced.put("rev", "k", Bytes::from_static(b"x"));
    store.release(&lease).await.expect("release");
    assert!(store.commit(&lease, fenced).await.is_err());
    assert_eq!(
        store.revision().await.expect("revision"),
        last,
        "a fenced commit changes nothing"
    );
}

async fn collections<S: StateStore>(store: &S) {
    let lease = store
        .try_acquire(&candidate("c"), Duration::from_secs(5))
        .await
        .expect("store reachable")
        .expect("free lease");
    let mut b = Batch::new();
    b.put("things", "a", Bytes::from_static(b"1"))
        .put("things", "b", Bytes::from_static(b"2"))
        .put("other", "x", Bytes::from_static(b"9"));
    store.commit(&lease, b).await.expect("commit");
    assert_eq!(
        store.get("things", "a").await.expect("get"),
        Some(Bytes::from_static(b"1"))
    );
    let mut all = store.get_all("things").await.expect("get_all");
    all.sort();
    assert_eq!(all.len(), 2);
    assert_eq!(
        store
            .get_many("things", &["b".into(), "missing".into(), "a".into()])
            .await
            .expect("get_many"),
        vec![
            Some(Bytes::from_static(b"2")),
            None,
            Some(Bytes::from_static(b"1"))
        ]
    );
    assert!(store
        .get_many("things", &[])
        .await
        .expect("get_many")
        .is_empty());
    let mut b = Batch::new();
    b.delete("things", "a").drop_collection("other");
    store.commit(&lease, b).await.expect("commit");
    assert_eq!(store.get("things", "a").await.expect("get"), None);
    assert!(store.get_all("other").await.expect("get_all").is_empty());
    assert_eq!(
        store.keys("things").await.expect("keys"),
        vec!["b".to_string()]
    );
    store
        .put_unfenced("members", "m1", Bytes::from_static(b"up"))
        .await
        .expect("put");
    assert!(store.get("members", "m1").await.expect("get").is_some());
    store
        .delete_unfenced("members", "m1")
        .await
        .expect("delete");
    assert!(store.get("members", "m1").await.expect("get").is_none());
    store.release(&lease).await.expect("release");
}

/// Writes of one key in one batch apply in order: the last one stands, and the feed names the
/// key.
async fn later_writes_of_a_batch_win<S: StateStore>(store: &S) {
    let lease = store
        .try_acquire(&candidate("later"), Duration::from_secs(5))
        .await
        .expect("store reachable")
        .expect("free lease");
    let mut b = Batch::new();
    b.put("later", "kept", Bytes::from_static(b"old")).put(
        "later",
        "gone",
        Bytes::from_static(b"x"),
    );
    store.commit(&lease, b).await.expect("commit");
    let start = revision(store).await;
    let mut b = Batch::new();
    b.put("later", "a", Bytes::from_static(b"1"))
        .put("later", "kept", Bytes::from_static(b"2"))
        .put("later", "a", Bytes::from_static(b"3"))
        .delete("later", "kept")
        .put("later", "kept", Bytes::from_static(b"4"))
        .put("later", "gone", Bytes::from_static(b"5"))
        .delete("later", "gone")
        .put("later-dropped", "d", Bytes::from_static(b"6"))
        .drop_collection("later-dropped")
        .put("later-dropped", "e", Bytes::from_static(b"7"));
    store.commit(&lease, b).await.expect("commit");
    let mut all = store.get_all("later").await.expect("get_all");
    all.sort();
    assert_eq!(
        all,
        vec![
            ("a".to_string(), Bytes::from_static(b"3")),
            ("kept".to_string(), Bytes::from_static(b"4")),
        ]
    );
    assert_eq!(
        store.get_all("later-dropped").await.expect("get_all"),
        vec![("e".to_string(), Bytes::from_static(b"7"))]
    );
    let named: std::collections::HashSet<Changed> = store
        .changes_since(&start)
        .await
        .expect("changes")
        .expect("the feed reaches one commit back")
        .changed
        .into_iter()
        .collect();
    for k in ["a", "kept", "gone"] {
        assert!(named.contains(&key("later", k)), "{k}: {named:?}");
    }
    assert!(named.contains(&Changed::Collection {
        collection: "later-dropped".into()
    }));
    store.release(&lease).await.expect("release");
}

async fn lease_is_exclusive_and_epochs_grow<S: StateStore>(store: &S) {
    let ttl = Duration::from_millis(400);
    let a = store
        .try_acquire(&candidate("a"), ttl)
        .await
        .expect("reachable")
        .expect("free");
    assert!(store
        .try_acquire(&candidate("b"), ttl)
        .await
        .expect("reachable")
        .is_none());
    assert_eq!(
        store
            .leader()
            .await
            .expect("leader")
            .map(|l| l.scheduler_id),
        Some("a".into())
    );
    assert!(store.renew(&a, ttl).await.expect("renew"));
    let left = store
        .lease_remaining()
        .await
        .expect("reachable")
        .expect("held, with a time to live");
    assert!(left <= ttl, "{left:?} left of a {ttl:?} lease");
    store.release(&a).await.expect("release");
    assert!(store.leader().await.expect("leader").is_none());
    assert_eq!(
        store.lease_remaining().await.expect("reachable"),
        None,
        "nobody holds it"
    );
    let b = store
        .try_acquire(&candidate("b"), ttl)
        .await
        .expect("reachable")
        .expect("free after release");
    assert!(b.epoch() > a.epoch(), "epoch must grow at every election");
    assert!(
        !store.renew(&a, ttl).await.expect("renew"),
        "a released lease cannot be renewed"
    );
    // Expiry frees the lease.
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    assert!(store.leader().await.expect("leader").is_none());
    assert!(
        !store.renew(&b, ttl).await.expect("renew"),
        "an expired lease cannot be renewed"
    );
}

async fn fenced_writes_change_nothing<S: StateStore>(store: &S) {
    let ttl = Duration::from_millis(300);
    let old = store
        .try_acquire(&candidate("old"), ttl)
        .await
        .expect("reachable")
        .expect("free");
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    let new = store
        .try_acquire(&candidate("new"), Duration::from_secs(5))
        .await
        .expect("reachable")
        .expect("expired");
    let mut b = Batch::new();
    b.put("fenced", "k", Bytes::from_static(b"old"))
        .event(Bytes::from_static(b"{\"old\":true}"));
    let before = store.last_event_id().await.expect("last id");
    match store.commit(&old, b).await {
        Err(StoreError::Fenced) => {}
        other => panic!("a deposed leader's write must be fenced, got {other:?}"),
    }
    assert_eq!(store.get("fenced", "k").await.expect("get"), None);
    assert_eq!(
        store.last_event_id().await.expect("last id"),
        before,
        "no event from a fenced batch"
    );
    let mut b = Batch::new();
    b.put("fenced", "k", Bytes::from_static(b"new"));
    store
        .commit(&new, b)
        .await
        .expect("the current leader writes");
    assert_eq!(
        store.get("fenced", "k").await.expect("get"),
        Some(Bytes::from_static(b"new"))
    );
    store.release(&new).await.expect("release");
}

async fn events_are_ordered_and_resumable<S: StateStore>(store: &S) {
    let lease = store
        .try_acquire(&candidate("ev"), Duration::from_secs(5))
        .await
        .expect("reachable")
        .expect("free");
    let start = store.last_event_id().await.expect("last id");
    let mut b = Batch::new();
    for n in 0..5 {
        b.event(Bytes::from(format!("{{\"n\":{n}}}")));
    }
    store.commit(&lease, b).await.expect("commit");
    let got = store
        .read_events(Some(&start), 3, Duration::from_millis(10))
        .await
        .expect("read");
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].body, Bytes::from_static(b"{\"n\":0}"));
    let rest = store
        .read_events(Some(&got[2].id), 100, Duration::from_millis(10))
        .await
        .expect("read");
    assert_eq!(rest.len(), 2);
    assert_eq!(rest[1].body, Bytes::from_static(b"{\"n\":4}"));
    assert!(crate::event_id_cmp(&got[0].id, &rest[0].id).is_lt());
    assert_eq!(store.last_event_id().await.expect("last id"), rest[1].id);
    // Nothing new: a blocking read returns empty at its deadline.
    let none = store
        .read_events(Some(&rest[1].id), 10, Duration::from_millis(100))
        .await
        .expect("read");
    assert!(none.is_empty());
    store.release(&lease).await.expect("release");
}
