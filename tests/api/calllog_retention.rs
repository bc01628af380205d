//! The call log's retention bound when Redis is its table: rows written with SentAt past the
//! bound (through the table, as the drain writes them) and recent rows; a trim deletes the
//! old rows with every row pointing at them, keeps the recent ones, and the history, admin
//! and conversation-list APIs then show only the recent ones. On a Redis of the test's own
//! (exact counts: no other node trims there), on the shared Redis Cluster, and through the
//! node's own background task.

use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde_json::Value;
use webchat::{
    calllog::{drain, retention, Conversation, LogRecord},
    storage::{
        redis::RedisHandles,
        redis_table::{RedisTable, Trimmed},
    },
    telemetry::Metrics,
};

use crate::helpers::*;

const ADMIN: &str = "admin-secret-for-tests";
const DAY_MS: i64 = 24 * 3600 * 1000;

fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(since.as_millis()).expect("ms fit")
}

async fn node(redis_url: String, retention_days: u32) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = settings(Backend::Redis, dir.keep());
    s.redis_url = Some(redis_url);
    s.admin_token = Some(ADMIN.into());
    // A call-log queue of this test's own: the node drains nothing of other tests'.
    s.table_prefix = format!("t{}_", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    s.call_log_retention_days = retention_days;
    spawn_with(s).await
}

async fn table(redis_url: &str) -> RedisTable {
    let handles = RedisHandles::connect(redis_url)
        .await
        .expect("connect to Redis");
    RedisTable::new(handles.pool)
}

fn message(from: &str, to: &str, msg_id: &str, sent_at: i64) -> LogRecord {
    LogRecord::Event {
        evt_type: "message".into(),
        actor: from.into(),
        conversation: Conversation::Direct { peer: to.into() },
        msg_id: msg_id.into(),
        body: format!("body of {msg_id}"),
        sent_at,
        seq: Some(1),
    }
}

fn group_message(from: &str, gid: &str, msg_id: &str, sent_at: i64) -> LogRecord {
    LogRecord::Event {
        evt_type: "message".into(),
        actor: from.into(),
        conversation: Conversation::Group { gid: gid.into() },
        msg_id: msg_id.into(),
        body: format!("body of {msg_id}"),
        sent_at,
        seq: None,
    }
}

fn receipt(kind: &str, reader: &str, sender: &str, msg_id: &str, at: i64) -> LogRecord {
    LogRecord::Receipt {
        receipt: kind.into(),
        reader: reader.into(),
        sender: sender.into(),
        group: None,
        msg_id: msg_id.into(),
        at,
        unread: Some(0),
    }
}

async fn get(url: &str, token: &str) -> Value {
    let res = http()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK, "{url}");
    res.json().await.expect("json")
}

/// The MsgIDs of a page of events, sorted (order is the history API's own business).
fn msg_ids(page: &Value) -> Vec<String> {
    let mut ids: Vec<String> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| e["MsgID"].as_str().unwrap_or("").to_owned())
        .collect();
    ids.sort();
    ids
}

/// The users, group and times of one run.
struct Scene {
    alice: User,
    bob: User,
    carol: User,
    gid: String,
    old: i64,
    recent: i64,
}

impl Scene {
    async fn new(app: &TestApp) -> Self {
        let now = now_ms();
        Self {
            alice: app.signup("alice").await,
            bob: app.signup("bob").await,
            carol: app.signup("carol").await,
            gid: unique("group_ret"),
            // Past a 30-day bound (and its slack), and well inside it.
            old: now - 40 * DAY_MS,
            recent: now - DAY_MS,
        }
    }

    /// Old and recent traffic: alice–bob both (receipts on one of each), alice–carol only
    /// old, and alice's group both.
    fn records(&self) -> Vec<LogRecord> {
        let (a, b, c) = (
            self.alice.uid.as_str(),
            self.bob.uid.as_str(),
            self.carol.uid.as_str(),
        );
        let (old, recent) = (self.old, self.recent);
        vec![
            message(a, b, "old-1", old),
            receipt("delivery", b, a, "old-1", old + 1_000),
            receipt("display", b, a, "old-1", old + 2_000),
            message(b, a, "old-2", old + 5_000),
            message(a, c, "old-c", old),
            group_message(a, &self.gid, "old-g", old),
            message(a, b, "new-1", recent),
            receipt("delivery", b, a, "new-1", recent + 1_000),
            receipt("display", b, a, "new-1", recent + 2_000),
            group_message(a, &self.gid, "new-g", recent),
        ]
    }

    /// `p:<uid>:<uid>` of two users.
    fn conv(x: &User, y: &User) -> String {
        let (lo, hi) = if x.uid <= y.uid { (x, y) } else { (y, x) };
        format!("p:{}:{}", lo.uid, hi.uid)
    }

    async fn history(&self, app: &TestApp, who: &User, with: &str) -> Value {
        get(
            &format!("{}/api/v1/conversations/{with}/messages?limit=100", app.url),
            &who.token,
        )
        .await
    }

    async fn admin(&self, app: &TestApp, subject: &str) -> Vec<String> {
        msg_ids(
            &get(
                &format!("{}/api/v1/admin/calllogs?{subject}&limit=100", app.url),
                ADMIN,
            )
            .await,
        )
    }

    async fn conversation_ids(&self, app: &TestApp, who: &User) -> Vec<String> {
        let page = get(&format!("{}/api/v1/conversations", app.url), &who.token).await;
        let mut ids: Vec<String> = page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|c| c["id"].as_str().unwrap_or("").to_owned())
            .collect();
        ids.sort();
        ids
    }

    /// Everything written is served.
    async fn assert_all_served(&self, app: &TestApp) {
        let page = self.history(app, &self.alice, &self.bob.uid).await;
        assert_eq!(msg_ids(&page), ["new-1", "old-1", "old-2"]);
        let page = self.history(app, &self.alice, &self.carol.uid).await;
        assert_eq!(msg_ids(&page), ["old-c"]);
        assert_eq!(
            self.admin(app, &format!("uid={}", self.alice.uid)).await,
            ["new-1", "new-g", "old-1", "old-2", "old-c", "old-g"]
        );
        let mut both = vec![self.bob.uid.clone(), self.carol.uid.clone()];
        both.sort();
        assert_eq!(self.conversation_ids(app, &self.alice).await, both);
    }

    /// Only the recent traffic is served, and no old row or index entry is left in Redis.
    async fn assert_only_recent(&self, app: &TestApp, cli: &[String]) {
        let page = self.history(app, &self.alice, &self.bob.uid).await;
        assert_eq!(msg_ids(&page), ["new-1"], "{page}");
        let kept = &page["items"][0];
        assert_eq!(kept["DeliveredAt"], self.recent + 1_000, "receipts kept");
        assert_eq!(kept["DisplayedAt"], self.recent + 2_000, "receipts kept");
        let page = self.history(app, &self.bob, &self.alice.uid).await;
        assert_eq!(msg_ids(&page), ["new-1"]);
        let page = self.history(app, &self.alice, &self.carol.uid).await;
        assert_eq!(msg_ids(&page), Vec::<String>::new());
        assert_eq!(
            self.admin(app, &format!("uid={}", self.alice.uid)).await,
            ["new-1", "new-g"]
        );
        assert_eq!(
            self.admin(app, &format!("uid={}", self.bob.uid)).await,
            ["new-1"]
        );
        assert_eq!(
            self.admin(app, &format!("uid={}", self.carol.uid)).await,
            Vec::<String>::new()
        );
        assert_eq!(
            self.admin(app, &format!("gid={}", self.gid)).await,
            ["new-g"]
        );
        // carol's conversation had nothing recent: its summaries went with it.
        assert_eq!(
            self.conversation_ids(app, &self.alice).await,
            [self.bob.uid.as_str()]
        );
        assert_eq!(
            self.conversation_ids(app, &self.carol).await,
            Vec::<String>::new()
        );

        // The rows of the old message are gone from the hash and from the index alike.
        let ab = Self::conv(&self.alice, &self.bob);
        let rows = format!("wc:{{log:c#{ab}}}:rows");
        let idx = format!("wc:{{log:c#{ab}}}:idx");
        let a = &self.alice.uid;
        for (sk, present) in [
            (format!("r#{a}#old-1#delivery"), "0"),
            (format!("r#{a}#old-1#display"), "0"),
            (format!("r#{a}#new-1#delivery"), "1"),
            (format!("r#{a}#new-1#display"), "1"),
        ] {
            assert_eq!(
                run_redis_cli(cli, &["HEXISTS", &rows, &sk]).await,
                present,
                "{sk}"
            );
            let in_index = run_redis_cli(cli, &["ZSCORE", &idx, &sk]).await;
            assert_eq!(in_index.is_empty(), present == "0", "{sk} in the index");
        }
        // new-1's row, its two receipts and the row that finds it by MsgID (§11); old-1's
        // went along with it.
        assert_eq!(
            run_redis_cli(cli, &["HEXISTS", &rows, "k#old-1"]).await,
            "0"
        );
        assert_eq!(run_redis_cli(cli, &["HLEN", &rows]).await, "4");
        assert_eq!(run_redis_cli(cli, &["ZCARD", &idx]).await, "4");
        // The index of partitions: this one now scored by its oldest row left; the emptied
        // ones gone, with their keys.
        let ages = "wc:{log-retention}:ages";
        let score = run_redis_cli(cli, &["ZSCORE", ages, &format!("c#{ab}")]).await;
        assert_eq!(score, self.recent.to_string(), "rescored to its oldest row");
        let ac = Self::conv(&self.alice, &self.carol);
        for pk in [format!("c#{ac}"), format!("u#{}", self.carol.uid)] {
            assert_eq!(run_redis_cli(cli, &["ZSCORE", ages, &pk]).await, "", "{pk}");
            let key = format!("wc:{{log:{pk}}}:idx");
            assert_eq!(run_redis_cli(cli, &["EXISTS", &key]).await, "0", "{key}");
        }
        let carol_summaries = format!("wc:{{log:v#{}}}:rows", self.carol.uid);
        assert_eq!(run_redis_cli(cli, &["EXISTS", &carol_summaries]).await, "0");
    }
}

/// `redis-cli` arguments for a test's own Redis.
fn own_cli(redis: &OwnRedis) -> Vec<String> {
    vec!["-u".into(), redis.url()]
}

fn bounds() -> webchat::storage::redis_table::TrimBounds {
    retention::bounds(now_ms(), 30).expect("30 days is a bound")
}

#[tokio::test]
async fn redis_trims_rows_past_the_retention_bound_and_everything_pointing_at_them() {
    let redis = OwnRedis::start().await;
    // No background trim on this node: the test's own calls are the only ones, so the
    // counts are exact.
    let app = node(redis.url(), 0).await;
    let table = table(&redis.url()).await;
    let scene = Scene::new(&app).await;
    drain::write(&table, &scene.records())
        .await
        .expect("write rows");
    scene.assert_all_served(&app).await;

    let metrics = Metrics::default();
    let trimmed = retention::trim_once(&table, bounds(), &metrics)
        .await
        .expect("trim");
    // c#a:b: old-1, its 2 receipts, old-2; c#a:c: old-c; c#g: old-g; u#alice: 4 copies;
    // u#bob: 2; u#carol: 1; the a–c summaries of alice and carol: 2; the rows that find
    // old-1, old-2, old-c and old-g by MsgID (§11): 4.
    assert_eq!(
        trimmed,
        Trimmed {
            partitions: 6,
            rows: 19
        }
    );
    assert_eq!(metrics.calllog_trimmed.get(), 19);
    scene.assert_only_recent(&app, &own_cli(&redis)).await;
    assert_eq!(
        retention::trim_once(&table, bounds(), &metrics)
            .await
            .expect("trim again"),
        Trimmed::default(),
        "nothing left to visit"
    );

    // The writer is at least once: the same records written again (a redelivered batch)
    // put the old rows back like any write, and the next trim takes them again.
    drain::write(&table, &scene.records())
        .await
        .expect("write again");
    scene.assert_all_served(&app).await;
    let again = retention::trim_once(&table, bounds(), &metrics)
        .await
        .expect("trim the rewrite");
    assert_eq!(again.rows, 19, "{again:?}");
    scene.assert_only_recent(&app, &own_cli(&redis)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_trims_rows_past_the_retention_bound() {
    let url = redis_cluster_url();
    let app = node(url.clone(), 30).await;
    let table = table(&url).await;
    let scene = Scene::new(&app).await;
    drain::write(&table, &scene.records())
        .await
        .expect("write rows");
    // Other tests' nodes share this cluster and trim it too (one of them at a time holds the
    // lease), so only the end state is exact here.
    retention::trim_once(&table, bounds(), &Metrics::default())
        .await
        .expect("trim");
    let mut cli = cli_targets(Backend::RedisCluster).remove(0);
    cli.insert(0, "-c".into());
    scene.assert_only_recent(&app, &cli).await;
}

#[tokio::test]
async fn a_node_trims_in_the_background_from_start_up() {
    let redis = OwnRedis::start().await;
    let writer = node(redis.url(), 0).await;
    let table = table(&redis.url()).await;
    let scene = Scene::new(&writer).await;
    drain::write(&table, &scene.records())
        .await
        .expect("write rows");
    scene.assert_all_served(&writer).await;

    // A node with the default retention trims once as it starts.
    let app = node(redis.url(), 30).await;
    eventually("the node's first trim", || {
        let url = app.url.clone();
        async move { metric_at(&url, "webchat_calllog_trimmed_total").await == 19 }
    })
    .await;
    scene.assert_only_recent(&app, &own_cli(&redis)).await;
}
