//! The `ProfileStore` implementations on real back-ends, below the HTTP layer: versions and
//! `updatedAt` grow with every write, `None` fields are kept, scans page through everything.

mod helpers;

use helpers::*;
use webchat_core::ids::UserId;
use webchat_profile::{
    profile::Change,
    store::{dynamodb::DynamoStore, redis::RedisStore, ProfileStore},
};

fn change(name: &str, status: Option<&str>) -> Change {
    Change {
        name: name.into(),
        status: status.map(str::to_owned),
        avatar_url: None,
    }
}

async fn versions_and_times_grow(store: &dyn ProfileStore) {
    let uid = UserId::parse(&unique("s")).expect("uid");
    let first = store
        .put(&uid, &change("A", Some("busy")), 1_000)
        .await
        .expect("put");
    assert_eq!((first.version, first.profile.updated_at), (1, 1_000));
    assert_eq!(first.profile.avatar_url, "", "absent fields start empty");
    // Another instance with a clock behind: still later than the stored profile.
    let second = store.put(&uid, &change("B", None), 500).await.expect("put");
    assert_eq!((second.version, second.profile.updated_at), (2, 1_001));
    assert_eq!(
        second.profile.status, "busy",
        "None keeps the stored status"
    );
    let third = store
        .put(&uid, &change("C", Some("")), 2_000)
        .await
        .expect("put");
    assert_eq!((third.version, third.profile.updated_at), (3, 2_000));
    assert_eq!(store.get(&uid).await.expect("get"), Some(third.clone()));
    let unknown = UserId::parse(&unique("none")).expect("uid");
    let many = store
        .get_many(&[unknown.clone(), uid.clone()])
        .await
        .expect("get_many");
    assert_eq!(many, vec![third]);
    assert_eq!(store.get(&unknown).await.expect("get"), None);
}

#[tokio::test]
async fn dynamodb_store_versions_times_and_scan_pages() {
    let table = unique("t_") + "_profiles";
    let store = DynamoStore::connect(&dynamodb_url(), table.clone())
        .await
        .expect("connect");
    // Creating the table again is fine (another instance starting at the same time).
    DynamoStore::connect(&dynamodb_url(), table)
        .await
        .expect("second start-up on the same table");
    versions_and_times_grow(&store).await;

    // get_many of more than one BatchGetItem's worth of keys.
    let mut uids = Vec::new();
    for i in 0..120 {
        let uid = UserId::parse(&format!("m{i}")).expect("uid");
        store.put(&uid, &change("n", None), 1).await.expect("put");
        uids.push(uid);
    }
    assert_eq!(store.get_many(&uids).await.expect("get_many").len(), 120);
    let mut seen = 0;
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = store.scan_page(cursor, 50).await.expect("scan");
        seen += page.items.len();
        pages += 1;
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, 121);
    assert!(pages >= 3, "{pages} pages");
}

#[tokio::test]
async fn redis_store_versions_and_times() {
    let store = RedisStore::new(redis_pool().await);
    versions_and_times_grow(&store).await;
}
