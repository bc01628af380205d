//! Blocking (contract §16) across two `webchat` processes sharing Redis: a blocked user's
//! messages, typing, receipts and group adds naming the blocker are refused `forbidden` on
//! either node with nothing stored, the blocked user gets none of the blocker's presence,
//! and presence goes only to mutual contacts and group co-members.

use serde_json::{json, Value};

use crate::helpers::*;

/// Two real nodes on the Redis at `url` (plain or cluster).
async fn two_nodes(url: &str) -> [NodeProcess; 2] {
    let args = ["--redis-url", url];
    [
        NodeProcess::start_with(&args).await,
        NodeProcess::start_with(&args).await,
    ]
}

fn assert_refused(ack: &Value, code: &str, what: &str) {
    assert_eq!(ack["error"]["code"], code, "{what}: {ack}");
}

/// The next non-presence event, acked; panics if it is not `evt_type` with `msg_id`. The
/// marker that proves nothing else came first.
async fn expect_next(client: &mut TestClient, evt_type: &str, msg_id: &str) -> Value {
    let event = client.next_chat_acked().await;
    assert_eq!(
        (event.data["EvtType"].as_str(), event.data["MsgID"].as_str()),
        (Some(evt_type), Some(msg_id)),
        "{}: expected {evt_type} {msg_id} next, got {}",
        client.uid,
        event.data
    );
    event.data
}

async fn history(node: &str, user: &User, with: &str) -> Vec<String> {
    let res = http()
        .get(format!("{node}/api/v1/conversations/{with}/messages"))
        .bearer_auth(&user.token)
        .send()
        .await
        .expect("history");
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["MsgID"].as_str().map(str::to_owned))
        .collect()
}

async fn blocks_request(method: reqwest::Method, node: &str, user: &User, uid: &str) -> u16 {
    http()
        .request(method, format!("{node}/api/v1/blocks/{uid}"))
        .bearer_auth(&user.token)
        .send()
        .await
        .expect("blocks request")
        .status()
        .as_u16()
}

async fn block_list(node: &str, user: &User) -> Value {
    let res = http()
        .get(format!("{node}/api/v1/blocks"))
        .bearer_auth(&user.token)
        .send()
        .await
        .expect("block list");
    assert_eq!(res.status(), 200);
    res.json().await.expect("json")
}

async fn a_blocked_users_traffic_is_refused_on_every_node_and_nothing_is_stored_on(url: &str) {
    let [n0, n1] = two_nodes(url).await;
    let alice = signup_at(&n0.url, "alice").await;
    let bob = signup_at(&n0.url, "bob").await;
    let carol = signup_at(&n0.url, "carol").await;
    let mut a = TestClient::connect(&n0.url, &alice).await;
    let mut b = TestClient::connect(&n1.url, &bob).await;
    let c = TestClient::connect(&n1.url, &carol).await;

    // Before the block, everything flows.
    assert_eq!(b.send(&alice.uid, "before", "hi").await["ok"], true);
    expect_next(&mut a, "message", "before").await;
    assert_eq!(a.send(&bob.uid, "from-alice", "hello").await["ok"], true);
    let seen = expect_next(&mut b, "message", "from-alice").await;

    // Alice blocks bob with the socket event, on node 0.
    let ack = a
        .chat(json!({"EvtType":"block","To":bob.uid,"MsgID":"blk-1"}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(ack["MsgID"], "blk-1");
    assert!(ack["SentAt"].as_i64().is_some_and(|t| t > 0), "{ack}");

    // Bob, on node 1, is refused everything addressed to alice, and told no more than that.
    let ack = b.send(&alice.uid, "blocked-msg", "let me in").await;
    assert_refused(&ack, "forbidden", "message");
    assert_eq!(ack["error"]["message"], "not allowed", "names no block");
    assert_refused(
        &b.chat(json!({"EvtType":"typing","To":alice.uid,"Body":"1"}))
            .await,
        "forbidden",
        "typing",
    );
    for kind in ["delivery", "display"] {
        let receipt = json!({"EvtType":kind,"To":alice.uid,"MsgID":"from-alice","Seq":seen["Seq"]});
        assert_refused(&b.chat(receipt).await, "forbidden", kind);
    }
    let gid = format!("group_{}", unique("blk").replace('-', ""));
    let create =
        json!({"EvtType":"create","To":gid,"Body":json!([alice.uid, carol.uid]).to_string()});
    assert_refused(&b.chat(create).await, "forbidden", "create naming alice");
    // Nothing was stored: the gid bob chose is still free, and a group without alice works.
    let create = json!({"EvtType":"create","To":gid,"Body":json!([carol.uid]).to_string()});
    let ack = b.chat(create).await;
    assert_eq!(ack["ok"], true, "{ack}");
    let refer = json!({"EvtType":"refer","To":gid,"Body":json!([alice.uid]).to_string()});
    assert_refused(&b.chat(refer).await, "forbidden", "refer naming alice");
    // Bob's own inbox gets the group's notify; alice's gets nothing of the group.
    expect_next(&mut b, "notify", ack["MsgID"].as_str().unwrap_or("")).await;

    // The blocker may still write to the blocked user.
    assert_eq!(a.send(&bob.uid, "still-from-alice", "x").await["ok"], true);
    expect_next(&mut b, "message", "still-from-alice").await;

    // Unblocked over REST, on the other node: bob's next message is the first thing alice
    // gets after the block, so nothing refused reached her inbox meanwhile.
    assert_eq!(
        blocks_request(reqwest::Method::DELETE, &n1.url, &alice, &bob.uid).await,
        204
    );
    assert_eq!(b.send(&alice.uid, "after", "again").await["ok"], true);
    expect_next(&mut a, "message", "after").await;
    let typing = json!({"EvtType":"typing","To":alice.uid,"Body":"1"});
    assert_eq!(b.chat(typing).await["ok"], true);

    // Alice's history has every accepted message and none refused. Waited for as a whole:
    // both nodes drain the call log's queue, so its rows land in no particular order (the
    // last message written can appear before an earlier one).
    let accepted = ["before", "from-alice", "still-from-alice", "after"];
    eventually("every accepted message in alice's history", || async {
        let ids = history(&n0.url, &alice, &bob.uid).await;
        accepted.iter().all(|id| ids.contains(&(*id).to_owned()))
    })
    .await;
    let ids = history(&n0.url, &alice, &bob.uid).await;
    assert!(!ids.contains(&"blocked-msg".to_owned()), "{ids:?}");
    c.close().await;
}

#[tokio::test]
async fn a_blocked_users_traffic_is_refused_on_every_node_and_nothing_is_stored() {
    a_blocked_users_traffic_is_refused_on_every_node_and_nothing_is_stored_on(&redis_url()).await;
}

#[tokio::test]
async fn a_blocked_users_traffic_is_refused_on_redis_cluster() {
    a_blocked_users_traffic_is_refused_on_every_node_and_nothing_is_stored_on(&redis_cluster_url())
        .await;
}

#[tokio::test]
async fn blocks_are_listed_set_and_cleared_over_rest_and_socket_alike() {
    let [n0, n1] = two_nodes(&redis_url()).await;
    let alice = signup_at(&n0.url, "alice").await;
    let bob = signup_at(&n0.url, "bob").await;
    let carol = signup_at(&n0.url, "carol").await;
    use reqwest::Method;

    assert_eq!(
        block_list(&n0.url, &alice).await,
        json!({"items": [], "next": null})
    );
    assert_eq!(
        blocks_request(Method::PUT, &n0.url, &alice, &bob.uid).await,
        204
    );
    assert_eq!(
        blocks_request(Method::PUT, &n0.url, &alice, &bob.uid).await,
        204,
        "idempotent"
    );
    // Set on node 0, seen on node 1; a socket `block` shows in the same list.
    let a = TestClient::connect(&n1.url, &alice).await;
    let ack = a.chat(json!({"EvtType":"block","To":carol.uid})).await;
    assert_eq!(ack["ok"], true, "{ack}");
    let mut expected = vec![bob.uid.clone(), carol.uid.clone()];
    expected.sort();
    assert_eq!(
        block_list(&n1.url, &alice).await,
        json!({"items": expected, "next": null})
    );
    assert_eq!(
        block_list(&n1.url, &bob).await["items"],
        json!([]),
        "one way"
    );

    // Refusals: oneself, unknown users, invalid uids, no token.
    assert_eq!(
        blocks_request(Method::PUT, &n0.url, &alice, &alice.uid).await,
        400
    );
    let ack = a.chat(json!({"EvtType":"block","To":alice.uid})).await;
    assert_refused(&ack, "bad_request", "self block");
    let ghost = unique("ghost");
    assert_eq!(
        blocks_request(Method::PUT, &n0.url, &alice, &ghost).await,
        404
    );
    assert_refused(
        &a.chat(json!({"EvtType":"block","To":ghost})).await,
        "not_found",
        "unknown user",
    );
    assert_refused(
        &a.chat(json!({"EvtType":"block","To":"group_x"})).await,
        "bad_request",
        "a gid",
    );
    assert_eq!(
        blocks_request(Method::PUT, &n0.url, &alice, "bad%20uid").await,
        400
    );
    let res = http()
        .get(format!("{}/api/v1/blocks", n0.url))
        .send()
        .await
        .expect("no token");
    assert_eq!(res.status(), 401);

    // Unblock: socket and REST, both idempotent.
    let ack = a
        .chat(json!({"EvtType":"unblock","To":carol.uid,"MsgID":"ub"}))
        .await;
    assert_eq!(
        (ack["ok"].as_bool(), ack["MsgID"].as_str()),
        (Some(true), Some("ub"))
    );
    assert_eq!(
        blocks_request(Method::DELETE, &n0.url, &alice, &bob.uid).await,
        204
    );
    assert_eq!(
        blocks_request(Method::DELETE, &n0.url, &alice, &bob.uid).await,
        204
    );
    assert_eq!(
        block_list(&n0.url, &alice).await,
        json!({"items": [], "next": null})
    );
    a.close().await;
}

/// The next `presence` event about `uid`, acking stored events met on the way.
async fn next_presence(client: &mut TestClient, uid: &str) -> String {
    loop {
        let e = client.next_chat_any().await;
        if e.data["EvtType"] == "presence" && e.data["From"] == uid {
            return e.data["Body"].as_str().unwrap_or("").to_owned();
        }
        if let Some(id) = e.ack_id {
            client.client.ack(id).await.expect("ack");
        }
    }
}

/// Receives until the message `marker` arrives; panics on any presence about `uid` first.
async fn no_presence_before(client: &mut TestClient, uid: &str, marker: &str) {
    loop {
        let e = client.next_chat_any().await;
        assert!(
            !(e.data["EvtType"] == "presence" && e.data["From"] == uid),
            "{} got presence of {uid}: {}",
            client.uid,
            e.data
        );
        if let Some(id) = e.ack_id {
            client.client.ack(id).await.expect("ack");
        }
        if e.data["MsgID"] == marker {
            return;
        }
    }
}

async fn snapshot(node: &str, viewer: &User, uid: &str) -> Value {
    let res = http()
        .get(format!("{node}/api/v1/presence?ids={uid}"))
        .bearer_auth(&viewer.token)
        .send()
        .await
        .expect("presence");
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    body["items"].clone()
}

#[tokio::test]
async fn presence_goes_to_mutual_contacts_and_co_members_never_to_strangers_or_the_blocked() {
    let [n0, n1] = two_nodes(&redis_url()).await;
    let alice = signup_at(&n0.url, "alice").await;
    let bob = signup_at(&n0.url, "bob").await; // mutual contact, later blocked
    let carol = signup_at(&n0.url, "carol").await; // shares a group with alice
    let stranger = signup_at(&n0.url, "stranger").await; // wrote to alice, never answered
    let a = TestClient::connect(&n0.url, &alice).await;
    let mut b = TestClient::connect(&n1.url, &bob).await;
    let mut c = TestClient::connect(&n1.url, &carol).await;
    let mut s = TestClient::connect(&n0.url, &stranger).await;
    b.send(&alice.uid, "b1", "hi").await;
    a.send(&bob.uid, "a1", "hi back").await;
    s.send(&alice.uid, "s1", "hello?").await;
    let ack = c
        .chat(json!({"EvtType":"create","To":"","Body":json!([alice.uid]).to_string()}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");

    // Snapshots: contacts see alice online, the stranger does not see her at all.
    let online = json!([{"uid": alice.uid, "online": true}]);
    assert_eq!(snapshot(&n1.url, &bob, &alice.uid).await, online);
    assert_eq!(snapshot(&n1.url, &carol, &alice.uid).await, online);
    assert_eq!(snapshot(&n1.url, &stranger, &alice.uid).await, json!([]));

    // Alice leaves: bob and carol are told, the stranger is not.
    a.close().await;
    assert_eq!(next_presence(&mut b, &alice.uid).await, "offline");
    assert_eq!(next_presence(&mut c, &alice.uid).await, "offline");
    c.send(&stranger.uid, "marker-1", "x").await;
    no_presence_before(&mut s, &alice.uid, "marker-1").await;

    // Alice blocks bob, then comes back on the other node: carol is told, bob is not.
    assert_eq!(
        blocks_request(reqwest::Method::PUT, &n0.url, &alice, &bob.uid).await,
        204
    );
    let a = TestClient::connect(&n1.url, &alice).await;
    assert_eq!(next_presence(&mut c, &alice.uid).await, "online");
    a.send(&bob.uid, "marker-2", "still writing to you").await;
    no_presence_before(&mut b, &alice.uid, "marker-2").await;
    c.send(&stranger.uid, "marker-3", "x").await;
    no_presence_before(&mut s, &alice.uid, "marker-3").await;
    // Asked, alice is left out for bob exactly as for a stranger; carol still sees her.
    assert_eq!(snapshot(&n0.url, &bob, &alice.uid).await, json!([]));
    assert_eq!(snapshot(&n0.url, &carol, &alice.uid).await, online);
    // The block is one way: alice still sees bob.
    assert_eq!(
        snapshot(&n0.url, &alice, &bob.uid).await,
        json!([{"uid": bob.uid, "online": true}])
    );

    // Unblocked, bob hears of alice again.
    assert_eq!(
        blocks_request(reqwest::Method::DELETE, &n0.url, &alice, &bob.uid).await,
        204
    );
    assert_eq!(snapshot(&n0.url, &bob, &alice.uid).await, online);
    a.close().await;
    assert_eq!(next_presence(&mut b, &alice.uid).await, "offline");
}
