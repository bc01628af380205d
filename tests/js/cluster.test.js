'use strict';
// Two webchat processes sharing one Redis (WEBCHAT_TEST_REDIS_URL):
// the sender is connected to node A, the receiver to node B.

const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const {
  REDIS_URL,
  startServer,
  signup,
  login,
  connect,
  closeSocket,
  disconnectAll,
  emitAck,
  nextChat,
  msgId,
} = require('./helpers/server');

describe('two nodes on one Redis', { skip: REDIS_URL ? false : 'WEBCHAT_TEST_REDIS_URL not set' }, () => {
  let nodeA;
  let nodeB;

  before(async () => {
    [nodeA, nodeB] = await Promise.all([
      startServer({ redisUrl: REDIS_URL }),
      startServer({ redisUrl: REDIS_URL }),
    ]);
  });
  after(async () => {
    disconnectAll();
    await Promise.all([nodeA && nodeA.stop(), nodeB && nodeB.stop()]);
  });
  afterEach(() => disconnectAll());

  it('alice on A → bob on B, and bob\'s receipt back to alice on A', async () => {
    const alice = await signup(nodeA.url, 'alice');
    const bob = await signup(nodeB.url, 'bob');
    const a = await connect(nodeA.url, alice.token);
    const b = await connect(nodeB.url, bob.token);

    const id = msgId('x');
    const ack = await emitAck(a, 'chat', { EvtType: 'message', From: 'mallory', To: bob.uid, MsgID: id, Body: 'across nodes' });
    assert.equal(ack && ack.ok, true, `ack: ${JSON.stringify(ack)}`);
    assert.equal(ack.MsgID, id);

    const m = await nextChat(b, (d) => d.MsgID === id, undefined, 'bob on node B');
    assert.equal(m.EvtType, 'message');
    assert.equal(m.From, alice.uid);
    assert.equal(m.To, bob.uid);
    assert.equal(m.Body, 'across nodes');
    assert.equal(typeof m.Seq, 'number');
    assert.equal(m.SentAt, ack.SentAt);

    b.emit('chat', { EvtType: 'delivery', To: alice.uid, MsgID: id });
    const r = await nextChat(a, (d) => d.EvtType === 'delivery' && d.MsgID === id, undefined, 'receipt on node A');
    assert.equal(r.From, bob.uid);
  });

  it("the sender's socket on B gets the live copy of what she sent on A", async () => {
    const alice = await signup(nodeA.url, 'alice');
    const bob = await signup(nodeA.url, 'bob');
    const a1 = await connect(nodeA.url, alice.token);
    const aliceOnB = await login(nodeB.url, alice.uid);
    const a2 = await connect(nodeB.url, aliceOnB.token);
    const id = msgId('copy');
    const ack = await emitAck(a1, 'chat', { EvtType: 'message', To: bob.uid, MsgID: id, Body: 'copy' });
    assert.equal(ack && ack.ok, true, `ack: ${JSON.stringify(ack)}`);
    const copy = await nextChat(a2, (d) => d.MsgID === id, undefined, "alice's socket on node B");
    assert.equal(copy.From, alice.uid);
    assert.equal(copy.Seq, undefined);
  });

  it('a user who signed up on A can log in on B; a token from A is accepted on B', async () => {
    const carol = await signup(nodeA.url, 'carol');
    const viaB = await login(nodeB.url, carol.uid);
    const s1 = await connect(nodeB.url, viaB.token);
    const s2 = await connect(nodeB.url, carol.token);
    assert.ok(s1.connected && s2.connected);
  });

  it('messages stored while the receiver is offline (sent on A) are replayed when she connects to B', async () => {
    const alice = await signup(nodeA.url, 'alice');
    const bob = await signup(nodeA.url, 'bob');
    let b = await connect(nodeB.url, bob.token);
    await closeSocket(b);
    const a = await connect(nodeA.url, alice.token);
    const ids = [msgId('c0'), msgId('c1'), msgId('c2')];
    for (const id of ids) {
      const ack = await emitAck(a, 'chat', { EvtType: 'message', To: bob.uid, MsgID: id, Body: id });
      assert.equal(ack && ack.ok, true, `ack: ${JSON.stringify(ack)}`);
    }
    b = await connect(nodeB.url, bob.token);
    const got = [];
    for (let i = 0; i < ids.length; i++) got.push(await nextChat(b, (d) => d.From === alice.uid, undefined, `replay #${i}`));
    assert.deepEqual(got.map((m) => m.MsgID), ids);
    for (let i = 1; i < got.length; i++) assert.ok(got[i].Seq > got[i - 1].Seq);
  });
});
