'use strict';
// The production-like stack of docker-compose.yml without Docker: Redis and DynamoDB Local
// (the test's, WEBCHAT_TEST_REDIS_URL / WEBCHAT_TEST_DYNAMODB_URL), two `webchat` nodes and
// `webchat-profile` with the compose environment, and nginx running deploy/nginx.conf
// (helpers/topology.js renders it with loopback addresses). Every client request below goes
// through nginx; the nodes are only asked directly how many sockets they hold.
//
// nginx's ip_hash keys on the first three octets of an IPv4 client address, so all clients
// on 127.0.0.1 would be one client on one node. Sockets here connect from 127.0.k.1 (Linux
// routes all of 127/8 to lo), which lets two users land on different nodes.

const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const {
  REDIS_URL,
  api,
  signup,
  login,
  connect,
  closeSocket,
  disconnectAll,
  emitAck,
  nextChat,
  msgId,
  untilConnections,
} = require('./helpers/server');
const { startTopology, clientAddress } = require('./helpers/topology');

const DYNAMODB_URL = process.env.WEBCHAT_TEST_DYNAMODB_URL || '';
const skip = !REDIS_URL
  ? 'WEBCHAT_TEST_REDIS_URL not set (the compose stack needs Redis)'
  : !DYNAMODB_URL
    ? 'WEBCHAT_TEST_DYNAMODB_URL not set (the compose stack needs DynamoDB Local)'
    : false;
const BOUND_MS = 10000;

describe('compose topology as plain processes (nginx → 2 nodes + profile, Redis, DynamoDB Local)', { skip }, () => {
  let topo;

  before(async () => {
    topo = await startTopology({ redisUrl: REDIS_URL, dynamodbUrl: DYNAMODB_URL });
  });
  after(async () => {
    disconnectAll();
    if (topo) await topo.stop();
  });
  afterEach(async () => {
    disconnectAll();
    // Every node back to zero sockets, so the next test can tell where its sockets land.
    if (topo) await Promise.all(topo.nodes.map((n) => untilConnections(n.url, 0, BOUND_MS)));
  });

  /** Sockets each node holds right now (its own /health, not through nginx). */
  async function counts() {
    return Promise.all(
      topo.nodes.map(async (n) => (await (await fetch(`${n.url}/health`)).json()).connections),
    );
  }

  /** Poll until the nodes hold `total` sockets together; resolves with the per-node counts. */
  async function untilTotal(total) {
    const deadline = Date.now() + BOUND_MS;
    for (;;) {
      const c = await counts();
      if (c[0] + c[1] === total) return c;
      if (Date.now() > deadline) throw new Error(`nodes hold ${JSON.stringify(c)} sockets, expected ${total} in all`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** socket.io-client 4 through nginx, from loopback address `addr`. */
  function connectVia(addr, token, transports) {
    return connect(topo.chatUrl, token, {
      transports,
      localAddress: addr, // websocket (ws)
      agent: new http.Agent({ localAddress: addr }), // long-polling (xmlhttprequest-ssl)
      timeoutMs: BOUND_MS,
    });
  }

  /**
   * alice and bob (signed up through nginx; bob's socket uses a token from login through
   * nginx) with one socket each through nginx, on different nodes. Returns the sockets and
   * the index of each one's node.
   */
  async function pairOnBothNodes(transports) {
    const alice = await signup(topo.chatUrl, 'alice');
    const bobAccount = await signup(topo.chatUrl, 'bob');
    const bob = await login(topo.chatUrl, bobAccount.uid);
    const a = await connectVia(clientAddress(0), alice.token, transports);
    const aliceNode = (await untilTotal(1)).indexOf(1);
    for (let k = 1; k <= 16; k++) {
      const b = await connectVia(clientAddress(k), bob.token, transports);
      const c = await untilTotal(2);
      if (c[1 - aliceNode] === 1) return { alice, bob, a, b, aliceNode, bobNode: 1 - aliceNode };
      await closeSocket(b);
      await untilTotal(1);
    }
    throw new Error(`no client address 127.0.1-16.1 landed on the other node than alice (node ${aliceNode + 1})`);
  }

  /** A message each way, each acked and answered with a delivery receipt. Returns the ids. */
  async function chatBothWays({ alice, bob, a, b }, label) {
    const ids = [];
    for (const [from, fromSock, to, toSock] of [
      [alice, a, bob, b],
      [bob, b, alice, a],
    ]) {
      const id = msgId(label);
      ids.push(id);
      const body = `${label}: ${from.uid} → ${to.uid}`;
      const ack = await emitAck(fromSock, 'chat', { EvtType: 'message', To: to.uid, MsgID: id, Body: body }, BOUND_MS);
      assert.equal(ack && ack.ok, true, `ack: ${JSON.stringify(ack)}`);
      assert.equal(ack.MsgID, id);
      const m = await nextChat(toSock, (d) => d.EvtType === 'message' && d.MsgID === id, BOUND_MS, `${label} message`);
      assert.equal(m.From, from.uid);
      assert.equal(m.To, to.uid);
      assert.equal(m.Body, body);
      assert.equal(typeof m.Seq, 'number');
      const rAck = await emitAck(toSock, 'chat', { EvtType: 'delivery', To: from.uid, MsgID: id }, BOUND_MS);
      assert.equal(rAck && rAck.ok, true, `receipt ack: ${JSON.stringify(rAck)}`);
      const r = await nextChat(fromSock, (d) => d.EvtType === 'delivery' && d.MsgID === id, BOUND_MS, `${label} receipt`);
      assert.equal(r.From, to.uid);
    }
    return ids;
  }

  it('/health answers through nginx on the chat and the profile port', async () => {
    const chat = await api(topo.chatUrl, 'GET', '/health');
    assert.equal(chat.status, 200, chat.text);
    assert.equal(chat.json.status, 'ok');
    const profiles = await api(topo.profileUrl, 'GET', '/health');
    assert.equal(profiles.status, 200, profiles.text);
  });

  it('serves the web client page / through nginx', async () => {
    const res = await fetch(`${topo.chatUrl}/`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') || '', /text\/html/);
    const html = await res.text();
    assert.match(html, /^<!doctype html>/i);
    const config = await fetch(`${topo.chatUrl}/config.js`);
    assert.equal(config.status, 200);
    assert.match(await config.text(), /profileUrl/);
  });

  it('websocket: alice and bob on different nodes chat 1:1 with acks and receipts', async () => {
    const pair = await pairOnBothNodes(['websocket']);
    assert.notEqual(pair.aliceNode, pair.bobNode);
    assert.deepEqual(await counts(), [1, 1]);
    assert.equal(pair.a.io.engine.transport.name, 'websocket');
    await chatBothWays(pair, 'ws');
  });

  it('long-polling only: both nodes, and each Engine.IO session stays on one node (ip_hash)', async () => {
    const pair = await pairOnBothNodes(['polling']);
    assert.deepEqual(await counts(), [1, 1]);
    assert.equal(pair.a.io.engine.transport.name, 'polling');
    assert.equal(pair.b.io.engine.transport.name, 'polling');
    await chatBothWays(pair, 'poll');
    // nginx's access log: every request of each session went to that session's node.
    const node = (i) => topo.nodes[i].addr;
    for (const [sock, expected] of [
      [pair.a, node(pair.aliceNode)],
      [pair.b, node(pair.bobNode)],
    ]) {
      const sid = sock.io.engine.id;
      const lines = topo.accessLog().split('\n').filter((l) => l.includes(`sid=${sid}`));
      assert.ok(lines.length >= 3, `few polling requests of ${sid} in the access log:\n${lines.join('\n')}`);
      const upstreams = new Set(lines.map((l) => l.split(' ')[1]));
      assert.deepEqual([...upstreams], [expected], lines.join('\n'));
    }
  });

  it('admin call log through nginx: the logged messages, with delivery times; refused without the token', async () => {
    const pair = await pairOnBothNodes(['websocket']);
    const ids = await chatBothWays(pair, 'log');
    const url = `/api/v1/admin/calllogs?uid=${encodeURIComponent(pair.alice.uid)}`;
    const refused = await api(topo.chatUrl, 'GET', url);
    assert.equal(refused.status, 401, refused.text);
    const wrong = await api(topo.chatUrl, 'GET', url, undefined, pair.alice.token);
    assert.equal(wrong.status, 401, wrong.text);
    // The call log drains into DynamoDB asynchronously: poll, bounded.
    const deadline = Date.now() + BOUND_MS;
    let res;
    for (;;) {
      res = await api(topo.chatUrl, 'GET', url, undefined, topo.adminToken);
      assert.equal(res.status, 200, res.text);
      const got = new Map(res.json.items.filter((e) => e.EvtType === 'message').map((e) => [e.MsgID, e]));
      if (ids.every((id) => got.has(id) && got.get(id).DeliveredAt != null)) {
        assert.equal(got.get(ids[0]).From, pair.alice.uid);
        assert.equal(got.get(ids[0]).To, pair.bob.uid);
        assert.equal(got.get(ids[1]).From, pair.bob.uid);
        assert.equal(got.get(ids[1]).To, pair.alice.uid);
        break;
      }
      if (Date.now() > deadline) throw new Error(`call log lacks ${ids} (with DeliveredAt): ${res.text.slice(0, 2000)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  });

  it('profiles through nginx: signup created the profile; an update reaches the contact on the other node', async () => {
    const pair = await pairOnBothNodes(['websocket']);
    await chatBothWays(pair, 'peers'); // a 1:1 conversation makes them contacts
    const { alice, bob, b } = pair;

    const created = await api(topo.profileUrl, 'GET', `/api/v1/profiles/${alice.uid}`);
    assert.equal(created.status, 200, created.text);
    assert.equal(created.json.name, `Test ${alice.uid}`);

    // The web client (chat origin) may call the profile port: compose's WEBCHAT_CORS_ORIGINS.
    const cors = await fetch(`${topo.profileUrl}/api/v1/profiles/${alice.uid}`, { headers: { origin: topo.chatUrl } });
    assert.equal(cors.headers.get('access-control-allow-origin'), topo.chatUrl);

    const update = { name: 'Alice Topology', status: 'behind nginx', avatarUrl: '' };
    const denied = await api(topo.profileUrl, 'PUT', `/api/v1/profiles/${alice.uid}`, update, bob.token);
    assert.equal(denied.status, 403, denied.text);
    const put = await api(topo.profileUrl, 'PUT', `/api/v1/profiles/${alice.uid}`, update, alice.token);
    assert.equal(put.status, 200, put.text);

    const ev = await nextChat(b, (d) => d.EvtType === 'profile' && d.From === alice.uid, BOUND_MS, 'profile event');
    const shared = JSON.parse(ev.Body);
    assert.equal(shared.name, 'Alice Topology');
    assert.equal(shared.status, 'behind nginx');
    const read = await api(topo.profileUrl, 'GET', `/api/v1/profiles/${alice.uid}`);
    assert.equal(read.json.name, 'Alice Topology');
  });
});
