//! The call log's `SortedTable` back-ends against real DynamoDB Local
//! (WEBCHAT_TEST_DYNAMODB_URL) and Redis (WEBCHAT_TEST_REDIS_URL), each run kept apart by a
//! unique table name / partition prefix.

use std::time::{Duration, Instant};

use serde_json::Value;
use webchat::{
    storage::{
        dynamo::{self, DynamoTable},
        redis_table::RedisTable,
        table::{contract, Order, Row, SkRange, SortedTable},
    },
    storage::{redis::RedisHandles, StoreError},
};

use crate::helpers::{dynamodb_url, redis_cluster_url, redis_url, unique};

async fn dynamo_table() -> DynamoTable {
    dynamo::connect(&dynamodb_url(), &unique("calllog"))
        .await
        .expect("connect to DynamoDB Local")
}

async fn redis_table() -> RedisTable {
    let handles = RedisHandles::connect(&redis_url())
        .await
        .expect("connect to Redis");
    RedisTable::new(handles.pool)
}

#[tokio::test]
async fn the_dynamodb_table_keeps_the_contract() {
    contract::check(&dynamo_table().await, "").await;
}

#[tokio::test]
async fn the_redis_table_keeps_the_contract() {
    contract::check(&redis_table().await, &unique("ct")).await;
}

/// On a cluster one script call may touch one hash slot only: the batched writes split per
/// slot (a call spanning two would fail with CROSSSLOT).
#[tokio::test]
async fn the_redis_table_keeps_the_contract_on_redis_cluster() {
    let handles = RedisHandles::connect(&redis_cluster_url())
        .await
        .expect("connect to Redis Cluster");
    contract::check(&RedisTable::new(handles.pool), &unique("ct")).await;
}

/// 61 rows: keys 0..9 twice in a row (inside the first 25-item chunk), 20..59 once, and key 0
/// a third time at the very end (another chunk). The last write of each key wins.
fn rows_with_duplicates(pk: &str) -> Vec<Row> {
    (0..60)
        .map(|i| {
            let key = if i < 20 { i / 2 } else { i };
            Row::new(pk, format!("k{key:02}")).with("n", i)
        })
        .chain([Row::new(pk, "k00").with("n", 999)])
        .collect()
}

async fn check_duplicates_last_wins(table: &dyn SortedTable, pk: &str) {
    table
        .put_rows(rows_with_duplicates(pk))
        .await
        .expect("a batch with duplicate keys is written");
    let rows = table
        // An unbounded limit must not overflow anything.
        .query(pk, SkRange::default(), Order::Ascending, usize::MAX)
        .await
        .expect("query");
    assert_eq!(rows.len(), 50, "one row per distinct key");
    assert_eq!(
        rows[0].int("n"),
        Some(999),
        "the last duplicate wins across chunks"
    );
    for (key, row) in rows.iter().enumerate().take(10).skip(1) {
        let expected = i64::try_from(2 * key + 1).expect("small");
        assert_eq!(
            row.int("n"),
            Some(expected),
            "the last duplicate wins in a chunk"
        );
    }
    let head = table
        .query(
            pk,
            SkRange {
                after: Some(String::new()),
                before: Some("k05".into()),
            },
            Order::Descending,
            10,
        )
        .await
        .expect("query after the empty string");
    let sks: Vec<&str> = head.iter().map(|r| r.sk.as_str()).collect();
    assert_eq!(
        sks,
        ["k04", "k03", "k02", "k01", "k00"],
        "an empty lower bound is no bound"
    );
}

#[tokio::test]
async fn dynamodb_batches_with_duplicate_keys_keep_the_last_row() {
    check_duplicates_last_wins(&dynamo_table().await, "dups").await;
}

#[tokio::test]
async fn redis_batches_with_duplicate_keys_keep_the_last_row() {
    check_duplicates_last_wins(&redis_table().await, &unique("dups")).await;
}

/// ~2 KB of attributes: 1,200 rows are ~2.4 MB, more than one 1 MB DynamoDB Query page.
fn big_rows(pk: &str, n: usize) -> Vec<Row> {
    let filler = "x".repeat(2_000);
    (0..n)
        .map(|i| {
            Row::new(pk, format!("r#{i:05}"))
                .with("i", i64::try_from(i).expect("small"))
                .with("f", filler.as_str())
        })
        .collect()
}

async fn check_long_range(table: &dyn SortedTable, pk: &str, name: &str) {
    let rows = big_rows(pk, 1_200);
    let started = Instant::now();
    table.put_rows(rows).await.expect("put 1,200 rows");
    let elapsed = started.elapsed();
    println!(
        "{name}: put_rows of 1,200 rows of ~2 KB took {elapsed:?} ({:.0} rows/s)",
        1_200.0 / elapsed.as_secs_f64()
    );

    let started = Instant::now();
    let up = table
        .query(
            pk,
            SkRange {
                after: Some("r#00010".into()),
                before: Some("r#01199".into()),
            },
            Order::Ascending,
            1_100,
        )
        .await
        .expect("query ascending");
    println!("{name}: query of 1,100 rows took {:?}", started.elapsed());
    assert_eq!(up.len(), 1_100, "the query pages until it has `limit` rows");
    assert_eq!(up[0].sk, "r#00011", "the lower bound is exclusive");
    assert_eq!(up[1_099].sk, "r#01110");
    assert!(up.windows(2).all(|w| w[0].sk < w[1].sk), "ascending order");
    assert_eq!(
        up[5].attrs.get("f").and_then(Value::as_str).map(str::len),
        Some(2_000)
    );

    let down = table
        .query(
            pk,
            SkRange {
                after: Some("r#00010".into()),
                before: Some("r#01199".into()),
            },
            Order::Descending,
            1_500,
        )
        .await
        .expect("query descending");
    assert_eq!(
        down.len(),
        1_188,
        "the query stops when the range is exhausted"
    );
    assert_eq!(down[0].sk, "r#01198", "the upper bound is exclusive");
    assert_eq!(down[1_187].sk, "r#00011");
    assert!(
        down.windows(2).all(|w| w[0].sk > w[1].sk),
        "descending order"
    );

    let keys: Vec<(String, String)> = (0..250)
        .map(|i| (pk.to_owned(), format!("r#{:05}", i * 4)))
        .collect();
    let got = table.get_rows(keys).await.expect("get 250 rows");
    assert_eq!(got.len(), 250, "get_rows spans several batches");
}

#[tokio::test]
async fn dynamodb_queries_span_several_pages() {
    check_long_range(&dynamo_table().await, "big", "DynamoDB Local").await;
}

#[tokio::test]
async fn redis_queries_long_ranges() {
    check_long_range(&redis_table().await, &unique("big"), "Redis").await;
}

#[tokio::test]
async fn two_nodes_creating_the_dynamodb_table_at_once_both_succeed() {
    let (url, name) = (dynamodb_url(), unique("race"));
    let (a, b) = tokio::join!(dynamo::connect(&url, &name), dynamo::connect(&url, &name));
    let (a, b) = (a.expect("first connect"), b.expect("second connect"));
    a.put_rows(vec![Row::new("p", "s").with("n", 1)])
        .await
        .expect("write through one");
    let got = b
        .get_rows(vec![("p".into(), "s".into())])
        .await
        .expect("read through the other");
    assert_eq!(got.len(), 1, "both handles use the same table");
}

#[tokio::test]
async fn an_unreachable_dynamodb_fails_fast_as_unavailable() {
    // A port that was free a moment ago: nothing listens on it.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let started = Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        dynamo::connect(&format!("http://127.0.0.1:{port}"), "unreachable"),
    )
    .await
    .expect("connect gives up on its own");
    let elapsed = started.elapsed();
    println!("unreachable DynamoDB: connect failed after {elapsed:?}");
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "an unreachable DynamoDB is Unavailable, got {result:?}"
    );
    assert!(
        elapsed < Duration::from_secs(10),
        "fails within 10 s, took {elapsed:?}"
    );
}
