'use strict';
// Cumulative acks (contract §15): a client that connects with auth.acks = "cumulative" (or
// ?acks=cumulative on Engine.IO 3) gets stored events without socket.io ack requests and
// confirms them with `ack {"Seq": N}`; per-event clients are unchanged beside it.
// Runs on the embedded store and, with WEBCHAT_TEST_REDIS_URL, on Redis.

const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const {
  modes,
  startServer,
  signup,
  connect,
  connectV2,
  connectError,
  closeSocket,
  untilConnections,
  disconnectAll,
  emitAck,
  nextChat,
  nextChatEvent,
  collectChats,
  msgId,
} = require('./helpers/server');

/** Connects `user` asking for cumulative acks (socket.io-client 4). */
function connectCumulative(url, user, opts = {}) {
  return connect(url, null, { ...opts, auth: { token: user.token, acks: 'cumulative' } });
}

async function sendAll(socket, to, ids) {
  for (const id of ids) {
    const ack = await emitAck(socket, 'chat', { EvtType: 'message', To: to, MsgID: id, Body: id });
    assert.equal(ack.ok, true, JSON.stringify(ack));
  }
}

for (const mode of modes()) {
  describe(`cumulative acks [${mode.name}]`, () => {
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

    it('stored events come without ack requests; an ack of Seq N confirms N and everything before it, nothing after', async () => {
      const alice = await signup(url, 'alice');
      const bob = await signup(url, 'bob');
      const a = await connect(url, alice.token);
      const ids = [msgId('c0'), msgId('c1'), msgId('c2'), msgId('c3')];
      await sendAll(a, bob.uid, ids);

      let b = await connectCumulative(url, bob);
      const got = await collectChats(b, { From: alice.uid, EvtType: 'message' }, 4, undefined, 'first replay');
      assert.deepEqual(got.map((m) => m.MsgID), ids);
      assert.ok(b.inbox.all.every((e) => !e.ackRequested), 'a cumulative-ack socket is never asked for a socket.io ack');
      // Processed the first two only.
      b.emit('ack', { Seq: got[1].Seq });
      await closeSocket(b);
      await untilConnections(url, 1); // its delivery task has confirmed and ended

      b = await connectCumulative(url, bob);
      const again = await collectChats(b, { From: alice.uid, EvtType: 'message' }, 2, undefined, 'second replay');
      assert.deepEqual(again.map((m) => m.MsgID), ids.slice(2), 'only what was not acked comes again');
      assert.deepEqual(again.map((m) => m.Seq), got.slice(2).map((m) => m.Seq), 'with the same Seqs');
      b.emit('ack', { Seq: again[1].Seq });
      await closeSocket(b);
      await untilConnections(url, 1);

      b = await connectCumulative(url, bob);
      const marker = msgId('marker');
      await sendAll(a, bob.uid, [marker]);
      const first = await nextChat(b, { From: alice.uid }, undefined, 'marker');
      assert.equal(first.MsgID, marker, `acked events came again: ${JSON.stringify(b.inbox.seen())}`);
      assert.equal(first.Seq, again[1].Seq + 1, 'Seqs stay consecutive');
    });

    it('an ack past what the socket was sent covers nothing sent after it', async () => {
      const alice = await signup(url, 'alice');
      const bob = await signup(url, 'bob');
      const a = await connect(url, alice.token);
      let b = await connectCumulative(url, bob);
      const m1 = msgId('m1');
      await sendAll(a, bob.uid, [m1]);
      const got = await nextChat(b, { MsgID: m1 });
      // A stray ack far ahead, before m2 exists; m2 then reaches this socket and is not acked.
      b.emit('ack', { Seq: got.Seq + 1000 });
      const m2 = msgId('m2');
      await sendAll(a, bob.uid, [m2]);
      const live = await nextChat(b, { MsgID: m2 });
      assert.equal(live.Seq, got.Seq + 1);
      await closeSocket(b);
      await untilConnections(url, 1);

      b = await connectCumulative(url, bob);
      const next = await nextChat(b, { From: alice.uid }, undefined, 'after an over-reaching ack');
      assert.equal(next.MsgID, m2, 'the message sent after the stray ack was not confirmed away unseen');
      assert.equal(next.Seq, got.Seq + 1);
    });

    it('per-event and cumulative sockets of one user side by side', async () => {
      const alice = await signup(url, 'alice');
      const bob = await signup(url, 'bob');
      const a = await connect(url, alice.token);
      const perEvent = await connect(url, bob.token, { autoAck: false });
      const cumul = await connectCumulative(url, bob);
      const id = msgId('both');
      await sendAll(a, bob.uid, [id]);
      const [p, c] = await Promise.all([
        nextChatEvent(perEvent, { MsgID: id }),
        nextChatEvent(cumul, { MsgID: id }),
      ]);
      assert.equal(p.ackRequested, true, 'the per-event socket is still asked for an ack');
      assert.equal(c.ackRequested, false);
      assert.equal(p.data.Seq, c.data.Seq);
    });

    it('bad acks and unknown modes get bad_request', async () => {
      const bob = await signup(url, 'bob');
      const cumul = await connectCumulative(url, bob);
      for (const bad of [{ Seq: 'x' }, { Seq: -1 }, { Seq: 1.5 }, {}, 'Seq', null]) {
        const answer = await emitAck(cumul, 'ack', bad);
        assert.equal(answer.error?.code, 'bad_request', `ack ${JSON.stringify(bad)}: ${JSON.stringify(answer)}`);
      }
      // Without a callback, the refusal comes as an `error` event.
      cumul.emit('ack', { Seq: 'y' });
      const err = await nextChat(cumul, { EvtType: 'error' });
      assert.equal(JSON.parse(err.Body).code, 'bad_request');
      assert.deepEqual(await emitAck(cumul, 'ack', { Seq: 0 }), { ok: true });

      const perEvent = await connect(url, bob.token);
      const refused = await emitAck(perEvent, 'ack', { Seq: 1 });
      assert.equal(refused.error?.code, 'bad_request', 'ack is only for cumulative-ack sockets');

      const message = await connectError(() =>
        connect(url, null, { auth: { token: bob.token, acks: 'sometimes' } }),
      );
      assert.match(message, /bad_request/);
    });

    it('an Engine.IO 3 client asks with ?acks=cumulative', async () => {
      const alice = await signup(url, 'alice');
      const bob = await signup(url, 'bob');
      const a = await connect(url, alice.token);
      let b = await connectV2(url, null, { query: { token: bob.token, acks: 'cumulative' }, transports: ['websocket'] });
      const ids = [msgId('v2a'), msgId('v2b')];
      await sendAll(a, bob.uid, ids);
      const got = await collectChats(b, { From: alice.uid }, 2);
      assert.ok(b.inbox.all.every((e) => !e.ackRequested));
      b.emit('ack', { Seq: got[0].Seq });
      await closeSocket(b);
      await untilConnections(url, 1);
      b = await connectV2(url, null, { query: { token: bob.token, acks: 'cumulative' }, transports: ['websocket'] });
      const again = await nextChat(b, { From: alice.uid });
      assert.equal(again.MsgID, ids[1]);
    });
  });
}
