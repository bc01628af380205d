//! An idle node's memory (issue 19): a node on Redis holds about what an embedded node
//! holds before any socket connects, not a hundred megabytes of pre-allocated buffers.

use crate::helpers::*;

/// How much more a node on Redis may hold than an embedded node: its Redis clients, their
/// buffers and the bus (measured: ~2 MB in a release build; deep notification channels on
/// every Redis client held ~110 MB more).
const REDIS_EXTRA_LIMIT_KIB: u64 = 32 * 1024;

/// Resident memory of a freshly started node, once `/health` answers.
async fn idle_rss_kib(node: &NodeProcess) -> u64 {
    let health = http()
        .get(format!("{}/health", node.url))
        .send()
        .await
        .expect("/health");
    assert_eq!(health.status(), 200, "the node answers /health");
    proc_status_kib(node.pid(), "VmRSS").expect("VmRSS of the node")
}

#[tokio::test]
async fn an_idle_node_on_redis_holds_about_what_an_embedded_node_holds() {
    let embedded = NodeProcess::start_with(&[]).await;
    let on_redis = NodeProcess::start(&[]).await;
    let (embedded_kib, redis_kib) = (idle_rss_kib(&embedded).await, idle_rss_kib(&on_redis).await);
    assert!(
        redis_kib <= embedded_kib + REDIS_EXTRA_LIMIT_KIB,
        "idle RSS on Redis {redis_kib} KiB, embedded {embedded_kib} KiB: more than \
         {REDIS_EXTRA_LIMIT_KIB} KiB apart"
    );
}
