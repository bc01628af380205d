'use strict';
// Message lifecycle (contract §11) with real socket.io clients: replies, edits, deletes and
// reactions live (socket.io-client 4 and 2.x), replayed in Seq order to a client on
// cumulative acks (§15), refused with the contract's codes (as acks and as `error` events),
// and shown in history and versions. Runs on the embedded store and, with
// WEBCHAT_TEST_REDIS_URL, on Redis and across two nodes.

const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const {
  REDIS_URL,
  modes,
  startServer,
  signup,
  api,
  connect,
  connectV2,
  closeSocket,
  untilConnections,
  disconnectAll,
  emitAck,
  nextChat,
  collectChats,
  msgId,
} = require('./helpers/server');

function event(EvtType, To, MsgID, Ref, Body = '') {
  return { EvtType, To, MsgID, Ref, Body };
}

async function ok(socket, payload) {
  const ack = await emitAck(socket, 'chat', payload);
  assert.equal(ack.ok, true, `${payload.EvtType} ${payload.MsgID}: ${JSON.stringify(ack)}`);
  return ack;
}

/** Polls the history (written behind) until `done(items by MsgID)` holds. */
async function historyWhen(url, token, peer, done, what) {
  const deadline = Date.now() + 20000;
  for (;;) {
    const res = await api(url, 'GET', `/api/v1/conversations/${peer}/messages`, undefined, token);
    assert.equal(res.status, 200, res.text);
    const byId = Object.fromEntries(res.json.items.map((i) => [i.MsgID, i]));
    if (done(byId)) return { items: res.json.items, byId };
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${res.text.slice(0, 2000)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

for (const mode of modes()) {
  describe(`message lifecycle [${mode.name}]`, () => {
    let server;
    let url;

    before(async () => {
      server = await startServer({ redisUrl: mode.redisUrl });
      url = server.url;
    });
    after(async () => {
      disconnectAll();
      if (server) await server.stop();
    });
    afterEach(() => disconnectAll());

    it('replays reply, edit, react, unreact and delete in Seq order to a cumulative-ack client, once', async () => {
      const alice = await signup(url, 'alice');
      const bob = await signup(url, 'bob');
      const a = await connect(url, alice.token);
      const m1 = msgId('m1');
      const m2 = msgId('m2');
      await ok(a, { EvtType: 'message', To: bob.uid, MsgID: m1, Body: 'helo' });
      const sent = [
        { EvtType: 'message', To: bob.uid, MsgID: m2, Ref: m1, Body: 'about that' },
        event('edit', bob.uid, msgId('e'), m1, 'hello'),
        event('react', bob.uid, msgId('x'), m1, '🎉'),
        event('unreact', bob.uid, msgId('y'), m1, '🎉'),
        event('delete', bob.uid, msgId('d'), m2),
      ];
      for (const e of sent) await ok(a, e);

      let b = await connect(url, null, { auth: { token: bob.token, acks: 'cumulative' } });
      const got = await collectChats(b, { From: alice.uid }, 6, undefined, 'replay');
      assert.deepEqual(
        got.map((e) => [e.EvtType, e.MsgID, e.Ref]),
        [['message', m1, undefined], ...sent.map((e) => [e.EvtType, e.MsgID, e.Ref])],
      );
      const seqs = got.map((e) => e.Seq);
      assert.ok(seqs.every((s, i) => i === 0 || s > seqs[i - 1]), `Seq order: ${seqs}`);
      assert.equal(got[3].Body, '🎉');
      b.emit('ack', { Seq: seqs[seqs.length - 1] });
      await closeSocket(b);
      await untilConnections(url, 1);

      // Confirmed: nothing comes again; the next event is a new one.
      b = await connect(url, null, { auth: { token: bob.token, acks: 'cumulative' } });
      const marker = msgId('marker');
      await ok(a, { EvtType: 'message', To: bob.uid, MsgID: marker, Body: 'marker' });
      assert.equal((await nextChat(b, { From: alice.uid })).MsgID, marker);

      const { byId } = await historyWhen(
        url,
        bob.token,
        alice.uid,
        (h) => h[marker] && h[m1] && h[m1].Body === 'hello' && h[m2] && h[m2].Deleted === true,
        'the lifecycle in history',
      );
      assert.deepEqual(byId[m1].Reactions, {});
      assert.equal(typeof byId[m1].EditedAt, 'number');
      assert.equal(byId[m2].Body, '');
      assert.equal(byId[m2].Ref, m1);
      const versions = await api(url, 'GET', `/api/v1/conversations/${alice.uid}/messages/${m1}/versions`, undefined, bob.token);
      assert.equal(versions.status, 200, versions.text);
      assert.deepEqual(versions.json.items.map((v) => v.Body), ['helo']);
    });

    it('delivers live to socket.io-client 2.x and refuses bad lifecycle events as acks and as error events', async () => {
      const alice = await signup(url, 'alice');
      const bob = await signup(url, 'bob');
      const a = await connect(url, alice.token);
      const b = await connectV2(url, bob.token);
      const m1 = msgId('m1');
      await ok(a, { EvtType: 'message', To: bob.uid, MsgID: m1, Body: 'hi' });
      await nextChat(b, { MsgID: m1 });
      const x = msgId('x');
      // The original client sends the envelope as a JSON string.
      const ack = await emitAck(b, 'chat', JSON.stringify(event('react', alice.uid, x, m1, '👍🏽')));
      assert.equal(ack.ok, true, JSON.stringify(ack));
      const react = await nextChat(a, { MsgID: x });
      assert.deepEqual([react.EvtType, react.Ref, react.Body, react.From], ['react', m1, '👍🏽', bob.uid]);

      const refusals = [
        [event('edit', alice.uid, msgId('f'), m1, 'mine'), 'forbidden'],
        [event('delete', alice.uid, msgId('f'), m1), 'forbidden'],
        [event('react', alice.uid, msgId('f'), 'no-such-message', '👍'), 'not_found'],
        [event('react', alice.uid, msgId('f'), m1, 'ok'), 'bad_request'],
        [event('react', alice.uid, msgId('f'), m1, '👍👎'), 'bad_request'],
      ];
      for (const [payload, code] of refusals) {
        const refused = await emitAck(b, 'chat', payload);
        assert.equal(refused.error && refused.error.code, code, `${JSON.stringify(payload)}: ${JSON.stringify(refused)}`);
      }
      // Without a callback, the refusal is an `error` event naming the MsgID.
      const bad = msgId('noack');
      b.emit('chat', event('edit', alice.uid, bad, m1, 'mine'));
      const error = await nextChat(b, { EvtType: 'error', MsgID: bad });
      assert.equal(JSON.parse(error.Body).code, 'forbidden');
      // Nothing refused reached alice: her next event is the marker.
      const marker = msgId('marker');
      await ok(b, { EvtType: 'message', To: alice.uid, MsgID: marker, Body: 'marker' });
      assert.equal((await nextChat(a, { From: bob.uid })).MsgID, marker);
    });
  });
}

describe('message lifecycle across two nodes', { skip: REDIS_URL ? false : 'WEBCHAT_TEST_REDIS_URL not set' }, () => {
  let nodeA;
  let nodeB;
  before(async () => {
    [nodeA, nodeB] = await Promise.all([startServer({ redisUrl: REDIS_URL }), startServer({ redisUrl: REDIS_URL })]);
  });
  after(async () => {
    disconnectAll();
    await Promise.all([nodeA && nodeA.stop(), nodeB && nodeB.stop()]);
  });

  it('an edit and a reaction made on one node reach the peer and the actor\'s other tab on the other', async () => {
    const alice = await signup(nodeA.url, 'alice');
    const bob = await signup(nodeB.url, 'bob');
    const a = await connect(nodeA.url, alice.token);
    const a2 = await connect(nodeB.url, alice.token);
    const b = await connect(nodeB.url, bob.token);
    const m1 = msgId('m1');
    await ok(a, { EvtType: 'message', To: bob.uid, MsgID: m1, Body: 'tpyo' });
    await nextChat(b, { MsgID: m1 });
    const e = msgId('e');
    await ok(a, event('edit', bob.uid, e, m1, 'typo'));
    const edit = await nextChat(b, { MsgID: e });
    assert.deepEqual([edit.EvtType, edit.Ref, edit.Body, typeof edit.Seq], ['edit', m1, 'typo', 'number']);
    const copy = await nextChat(a2, { MsgID: e });
    assert.equal(copy.Ref, m1);
    const x = msgId('x');
    await ok(b, event('react', alice.uid, x, m1, '❤️'));
    for (const tab of [a, a2]) assert.equal((await nextChat(tab, { MsgID: x })).Ref, m1);
  });
});
