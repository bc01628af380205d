'use strict';
// Blocking (docs/protocol.md, "Blocking"): the `chat` events `block` / `unblock`
// (To = uid) are acked like any event; while alice blocks bob, bob's message,
// typing and receipts to alice are refused `forbidden` and reach her neither
// live nor later, bob gets none of alice's presence, and nothing else changes
// (alice may still write to bob). Runs against a standalone server ("local")
// and, when WEBCHAT_TEST_REDIS_URL is set, across two nodes on that Redis.

const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const {
  REDIS_URL,
  startServer,
  api,
  signup,
  login,
  connect,
  closeSocket,
  disconnectAll,
  emitAck,
  nextChat,
  msgId,
} = require('./helpers/server');

function assertOk(ack, id, what) {
  assert.ok(ack && ack.ok === true, `${what}: expected ok, got ${JSON.stringify(ack)}`);
  if (id !== undefined) assert.equal(ack.MsgID, id, `${what}: MsgID`);
  assert.equal(typeof ack.SentAt, 'number', `${what}: SentAt`);
}

function assertRefused(ack, code, what) {
  assert.ok(ack && ack.error, `${what}: expected an error ack, got ${JSON.stringify(ack)}`);
  assert.equal(ack.error.code, code, `${what}: ${JSON.stringify(ack)}`);
}

const message = (to, id, body = 'hi') => ({ EvtType: 'message', To: to, MsgID: id, Body: body });

const topologies = [{ name: 'one node', redisUrl: null, nodes: 1 }];
if (REDIS_URL) topologies.push({ name: 'two nodes on Redis', redisUrl: REDIS_URL, nodes: 2 });

for (const topo of topologies) {
  describe(`blocking [${topo.name}]`, () => {
    let servers = [];
    // alice's node and bob's node (the same one when there is one).
    const urlA = () => servers[0].url;
    const urlB = () => servers[servers.length - 1].url;

    before(async () => {
      servers = await Promise.all(Array.from({ length: topo.nodes }, () => startServer({ redisUrl: topo.redisUrl })));
    });
    after(async () => {
      disconnectAll();
      await Promise.all(servers.map((s) => s.stop()));
    });
    afterEach(() => disconnectAll());

    it('block/unblock acks; a blocked user\'s message, typing and receipt are refused and never arrive', async () => {
      const alice = await signup(urlA(), 'alice');
      const bob = await signup(urlA(), 'bob');
      const bobToken = topo.nodes > 1 ? (await login(urlB(), bob.uid)).token : bob.token;
      const a = await connect(urlA(), alice.token);
      const b = await connect(urlB(), bobToken);

      const first = msgId('a');
      assertOk(await emitAck(a, 'chat', message(bob.uid, first)), first, 'alice → bob');
      const got = await nextChat(b, (d) => d.MsgID === first, undefined, 'bob gets alice\'s message');

      const blockId = msgId('block');
      assertOk(await emitAck(a, 'chat', { EvtType: 'block', To: bob.uid, MsgID: blockId }), blockId, 'block');
      const res = await api(urlB(), 'GET', '/api/v1/blocks', undefined, alice.token);
      assert.equal(res.status, 200);
      assert.deepEqual(res.json, { items: [bob.uid], next: null });

      const refused = msgId('refused');
      const ack = await emitAck(b, 'chat', message(alice.uid, refused, 'let me in'));
      assertRefused(ack, 'forbidden', 'message to a blocker');
      assertRefused(await emitAck(b, 'chat', { EvtType: 'typing', To: alice.uid, Body: '1' }), 'forbidden', 'typing');
      const receipt = { EvtType: 'display', To: alice.uid, MsgID: first, Seq: got.Seq };
      assertRefused(await emitAck(b, 'chat', receipt), 'forbidden', 'display receipt');
      // Blocking oneself is a bad request.
      assertRefused(await emitAck(a, 'chat', { EvtType: 'block', To: alice.uid }), 'bad_request', 'self block');

      // Nothing else changes: alice may still write to bob.
      const still = msgId('still');
      assertOk(await emitAck(a, 'chat', message(bob.uid, still)), still, 'alice → bob while blocking');
      await nextChat(b, (d) => d.MsgID === still, undefined, 'bob still gets alice\'s messages');

      const unblockId = msgId('unblock');
      assertOk(await emitAck(a, 'chat', { EvtType: 'unblock', To: bob.uid, MsgID: unblockId }), unblockId, 'unblock');
      const after = msgId('after');
      assertOk(await emitAck(b, 'chat', message(alice.uid, after, 'again')), after, 'bob → alice after unblock');
      await nextChat(a, (d) => d.MsgID === after, undefined, 'alice gets bob\'s message after unblocking');
      // The marker arrived; nothing bob sent while blocked came before it (or at all).
      const fromBob = a.inbox.seen((d) => d.From === bob.uid).map((d) => `${d.EvtType}:${d.MsgID}`);
      assert.deepEqual(fromBob, [`message:${after}`], 'alice got nothing of what was refused');

      // A fresh socket of alice replays nothing refused either.
      await closeSocket(a);
      const a2 = await connect(urlA(), alice.token);
      const marker = msgId('marker');
      assertOk(await emitAck(b, 'chat', message(alice.uid, marker, 'marker')), marker, 'marker');
      await nextChat(a2, (d) => d.MsgID === marker, undefined, 'marker on a fresh socket');
      assert.deepEqual(a2.inbox.seen((d) => d.MsgID === refused), [], 'the refused message was never stored');
    });

    it('a blocked user gets no presence of the blocker; a one-way message shares none', async () => {
      const alice = await signup(urlA(), 'alice');
      const bob = await signup(urlA(), 'bob');
      const carol = await signup(urlA(), 'carol'); // wrote to alice, never answered
      const bobToken = topo.nodes > 1 ? (await login(urlB(), bob.uid)).token : bob.token;
      const a = await connect(urlA(), alice.token);
      const b = await connect(urlB(), bobToken);
      const c = await connect(urlB(), carol.token);
      // alice and bob write to each other; carol only writes to alice.
      for (const [from, to, id] of [[b, alice, msgId('b')], [a, bob, msgId('a')], [c, alice, msgId('c')]]) {
        assertOk(await emitAck(from, 'chat', message(to.uid, id)), id, 'setup message');
      }
      const blocked = await api(urlB(), 'PUT', `/api/v1/blocks/${bob.uid}`, undefined, alice.token);
      assert.equal(blocked.status, 204);

      // alice leaves and comes back: neither bob (blocked) nor carol (one way) hears of it.
      await closeSocket(a);
      const a2 = await connect(urlB(), alice.token);
      for (const [socket, uid] of [[b, bob.uid], [c, carol.uid]]) {
        const marker = msgId('marker');
        assertOk(await emitAck(a2, 'chat', message(uid, marker, 'marker')), marker, 'marker');
        await nextChat(socket, (d) => d.MsgID === marker, undefined, `${uid} gets the marker`);
      }
      const q = await api(urlA(), 'GET', `/api/v1/presence?ids=${alice.uid}`, undefined, bob.token);
      assert.equal(q.status, 200);
      assert.deepEqual(q.json.items, [], 'bob asks for alice\'s presence: left out like a stranger');
      assert.deepEqual(b.inbox.seen((d) => d.EvtType === 'presence' && d.From === alice.uid), [], 'bob got alice\'s presence');
      assert.deepEqual(c.inbox.seen((d) => d.EvtType === 'presence' && d.From === alice.uid), [], 'carol got alice\'s presence');
    });
  });
}
