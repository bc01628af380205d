'use strict';
// 1:1 chat, store-and-forward, idempotency, receipts, typing.
// Runs once against a standalone server ("local") and, when
// WEBCHAT_TEST_REDIS_URL is set, once more with --redis-url ("redis").

const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const {
  modes,
  startServer,
  signup,
  connect,
  closeSocket,
  untilConnections,
  disconnectAll,
  emitAck,
  nextChat,
  nextChatEvent,
  collectChats,
  msgId,
} = require('./helpers/server');

/** The ack of a stored message: {ok:true, MsgID, SentAt:<ms>}. */
function assertOkAck(ack, id) {
  assert.ok(ack && typeof ack === 'object', `ack is not an object: ${JSON.stringify(ack)}`);
  assert.equal(ack.error, undefined, `unexpected error ack: ${JSON.stringify(ack)}`);
  assert.equal(ack.ok, true, `ack.ok: ${JSON.stringify(ack)}`);
  assert.equal(ack.MsgID, id, `ack.MsgID: ${JSON.stringify(ack)}`);
  assertRecentMs(ack.SentAt, 'ack.SentAt');
}

function assertRecentMs(v, what) {
  assert.equal(typeof v, 'number', `${what} must be a number (epoch ms), got ${JSON.stringify(v)}`);
  assert.ok(Number.isInteger(v), `${what} must be an integer, got ${v}`);
  assert.ok(Math.abs(v - Date.now()) < 60_000, `${what}=${v} is not epoch milliseconds close to now (${Date.now()})`);
}

function assertSeq(v, what = 'Seq') {
  assert.equal(typeof v, 'number', `${what} must be a number, got ${JSON.stringify(v)}`);
  assert.ok(Number.isInteger(v) && v >= 0, `${what} must be a non-negative integer, got ${v}`);
}

const fromTo = (from, mid) => (d) => d.From === from && d.MsgID === mid;

for (const mode of modes()) {
  describe(`chat [${mode.name}]`, () => {
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

    it('1:1 chat: sender gets {ok, MsgID, SentAt}; receiver gets the stored event with From = authenticated sender', async () => {
      const alice = await signup(url, 'alice');
      const bob = await signup(url, 'bob');
      const a = await connect(url, alice.token);
      const b = await connect(url, bob.token);

      const id = msgId();
      const clientTs = Date.now();
      const ack = await emitAck(a, 'chat', {
        EvtType: 'message',
        From: 'mallory', // a lie: the server must use the authenticated uid
        To: bob.uid,
        MsgID: id,
        Body: 'hi bob \u{1F44B} — üñí',
        Timestamp: clientTs,
      });
      assertOkAck(ack, id);

      const ev = await nextChatEvent(b, (d) => d.MsgID === id, undefined, 'bob receives');
      const m = ev.data;
      assert.equal(typeof m, 'object', `chat payload must be a JSON object, got ${typeof m}: ${JSON.stringify(m)}`);
      assert.equal(m.EvtType, 'message');
      assert.equal(m.From, alice.uid, 'From must be the authenticated sender, not the claimed one');
      assert.equal(m.To, bob.uid);
      assert.equal(m.MsgID, id);
      assert.equal(m.Body, 'hi bob \u{1F44B} — üñí');
      assertSeq(m.Seq);
      assertRecentMs(m.SentAt, 'SentAt');
      assert.equal(m.SentAt, ack.SentAt, 'receiver SentAt must equal the SentAt in the sender ack');
      assert.notEqual(m.Timestamp, undefined, 'Timestamp missing in the receiver event');
      assert.ok(ev.ackRequested, 'the server must request an ack for a stored message event');

      // The reverse direction works too, on the same sockets.
      const id2 = msgId();
      assertOkAck(await emitAck(b, 'chat', { EvtType: 'message', To: alice.uid, MsgID: id2, Body: 'hey' }), id2);
      const back = await nextChat(a, fromTo(bob.uid, id2), undefined, 'alice receives the reply');
      assert.equal(back.Body, 'hey');
      assert.equal(back.To, alice.uid);
    });

    it('a message sent as a JSON-encoded string is accepted', async () => {
      const alice = await signup(url, 'alice');
      const bob = await signup(url, 'bob');
      const a = await connect(url, alice.token);
      const b = await connect(url, bob.token);
      const id = msgId();
      const ack = await emitAck(
        a,
        'chat',
        JSON.stringify({ EvtType: 'message', To: bob.uid, MsgID: id, Body: 'as a string' }),
      );
      assertOkAck(ack, id);
      const m = await nextChat(b, fromTo(alice.uid, id));
      assert.equal(m.Body, 'as a string');
      assert.equal(m.EvtType, 'message');
    });

    it("the sender's other connected sockets get a live copy (no Seq)", async () => {
      const alice = await signup(url, 'alice');
      const bob = await signup(url, 'bob');
      const a1 = await connect(url, alice.token);
      const a2 = await connect(url, alice.token);
      const b = await connect(url, bob.token);
      const id = msgId();
      assertOkAck(await emitAck(a1, 'chat', { EvtType: 'message', To: bob.uid, MsgID: id, Body: 'copy me' }), id);
      const copy = await nextChat(a2, (d) => d.MsgID === id, undefined, "alice's second socket");
      assert.equal(copy.EvtType, 'message');
      assert.equal(copy.From, alice.uid);
      assert.equal(copy.To, bob.uid);
      assert.equal(copy.Body, 'copy me');
      assert.equal(copy.Seq, undefined, `live copy must not carry a Seq: ${JSON.stringify(copy)}`);
      await nextChat(b, fromTo(alice.uid, id));
      // The sending socket itself does not get its own message echoed back.
      const marker = msgId('marker');
      assertOkAck(await emitAck(b, 'chat', { EvtType: 'message', To: alice.uid, MsgID: marker, Body: 'x' }), marker);
      await nextChat(a1, (d) => d.MsgID === marker);
      assert.deepEqual(
        a1.inbox.seen((d) => d.MsgID === id),
        [],
        'the sending socket must not receive its own message',
      );
    });

    it('store-and-forward: 5 messages to an offline user arrive on connect in Seq order', async () => {
      const alice = await signup(url, 'alice');
      const bob = await signup(url, 'bob');
      const a = await connect(url, alice.token);
      const ids = [];
      for (let i = 0; i < 5; i++) {
        const id = msgId(`sf${i}`);
        ids.push(id);
        assertOkAck(await emitAck(a, 'chat', { EvtType: 'message', To: bob.uid, MsgID: id, Body: `offline ${i}` }), id);
      }
      const b = await connect(url, bob.token);
      const got = await collectChats(b, (d) => d.From === alice.uid && d.EvtType === 'message', 5, undefined, 'replay');
      assert.deepEqual(
        got.map((m) => m.MsgID),
        ids,
        'replayed in send order',
      );
      assert.deepEqual(
        got.map((m) => m.Body),
        ids.map((_, i) => `offline ${i}`),
      );
      for (const m of got) {
        assertSeq(m.Seq);
        assert.equal(m.To, bob.uid);
        assertRecentMs(m.SentAt, 'SentAt');
      }
      for (let i = 1; i < got.length; i++) {
        assert.ok(got[i].Seq > got[i - 1].Seq, `Seq not strictly increasing: ${got.map((m) => m.Seq)}`);
      }
    });

    it('unconfirmed events are replayed on the next connect; confirmed ones are not', async () => {
      const alice = await signup(url, 'alice');
      const bob = await signup(url, 'bob');
      const a = await connect(url, alice.token);
      const ids = [msgId('u0'), msgId('u1'), msgId('u2')];
      for (const id of ids) {
        assertOkAck(await emitAck(a, 'chat', { EvtType: 'message', To: bob.uid, MsgID: id, Body: id }), id);
      }

      // 1st connect: receive but confirm nothing.
      let b = await connect(url, bob.token, { autoAck: false });
      const first = await collectChats(b, { From: alice.uid, EvtType: 'message' }, 3, undefined, 'first replay');
      assert.deepEqual(
        first.map((m) => m.MsgID),
        ids,
      );
      assert.ok(
        b.inbox.all.every((e) => e.ackRequested),
        'stored message events must request an ack from the receiver',
      );
      await closeSocket(b);

      // 2nd connect: the same three again, same Seqs; confirm them all this time.
      b = await connect(url, bob.token, { autoAck: false });
      const evs = [];
      for (let i = 0; i < 3; i++) evs.push(await nextChatEvent(b, { From: alice.uid }, undefined, `second replay #${i}`));
      assert.deepEqual(
        evs.map((e) => e.data.MsgID),
        ids,
      );
      assert.deepEqual(
        evs.map((e) => e.data.Seq),
        first.map((m) => m.Seq),
        'a replayed event keeps its Seq',
      );
      for (const e of evs) e.ack();
      // A round trip on the same socket after the acks: bob sends alice a message
      // and waits for its ack, so the server has read the three confirmations.
      const rt = msgId('rt');
      assertOkAck(await emitAck(b, 'chat', { EvtType: 'message', To: alice.uid, MsgID: rt, Body: 'rt' }), rt);
      await closeSocket(b);
      // Acks are written to the inbox in batches, at the latest when the socket's delivery
      // task ends (docs/protocol.md); wait for that before reconnecting (alice stays).
      await untilConnections(url, 1);

      // 3rd connect: nothing is replayed; the first event is a fresh marker.
      b = await connect(url, bob.token);
      const marker = msgId('marker');
      assertOkAck(await emitAck(a, 'chat', { EvtType: 'message', To: bob.uid, MsgID: marker, Body: 'm' }), marker);
      const firstEvent = await nextChat(b, { From: alice.uid }, undefined, 'marker after confirmed replay');
      assert.equal(
        firstEvent.MsgID,
        marker,
        `confirmed events were replayed again: ${JSON.stringify(b.inbox.seen())}`,
      );
    });

    it('re-sending the same MsgID is acked again but delivered once (receiver online)', async () => {
      const alice = await signup(url, 'alice');
      const bob = await signup(url, 'bob');
      const a = await connect(url, alice.token);
      const b = await connect(url, bob.token);
      const id = msgId('dup');
      const msg = { EvtType: 'message', To: bob.uid, MsgID: id, Body: 'once' };
      const ack1 = await emitAck(a, 'chat', msg);
      assertOkAck(ack1, id);
      const ack2 = await emitAck(a, 'chat', msg);
      assertOkAck(ack2, id);
      // Ordering marker: anything delivered for the duplicate would arrive before it.
      const marker = msgId('marker');
      assertOkAck(await emitAck(a, 'chat', { ...msg, MsgID: marker, Body: 'marker' }), marker);
      await nextChat(b, fromTo(alice.uid, marker), undefined, 'marker');
      const copies = b.inbox.seen((d) => d.MsgID === id);
      assert.equal(copies.length, 1, `delivered ${copies.length} times: ${JSON.stringify(copies)}`);
    });

    it('re-sending the same MsgID to an offline user stores it once', async () => {
      const alice = await signup(url, 'alice');
      const bob = await signup(url, 'bob');
      const a = await connect(url, alice.token);
      const id = msgId('dup');
      const msg = { EvtType: 'message', To: bob.uid, MsgID: id, Body: 'once' };
      assertOkAck(await emitAck(a, 'chat', msg), id);
      assertOkAck(await emitAck(a, 'chat', msg), id);
      const marker = msgId('marker');
      assertOkAck(await emitAck(a, 'chat', { ...msg, MsgID: marker, Body: 'marker' }), marker);
      const b = await connect(url, bob.token);
      const got = await collectChats(b, { From: alice.uid, EvtType: 'message' }, 2, undefined, 'replay');
      assert.deepEqual(
        got.map((m) => m.MsgID),
        [id, marker],
      );
    });

    it('delivery and display receipts reach the sender with From = receiver', async () => {
      const alice = await signup(url, 'alice');
      const bob = await signup(url, 'bob');
      const a = await connect(url, alice.token);
      const b = await connect(url, bob.token);
      const id = msgId();
      assertOkAck(await emitAck(a, 'chat', { EvtType: 'message', To: bob.uid, MsgID: id, Body: 'read me' }), id);
      await nextChat(b, fromTo(alice.uid, id));

      for (const kind of ['delivery', 'display']) {
        const ack = await emitAck(b, 'chat', { EvtType: kind, From: 'mallory', To: alice.uid, MsgID: id });
        assert.equal(ack && ack.error, undefined, `${kind} receipt was refused: ${JSON.stringify(ack)}`);
        const r = await nextChat(a, (d) => d.EvtType === kind && d.MsgID === id, undefined, `${kind} receipt`);
        assert.equal(r.From, bob.uid, `${kind}: From must be the receiver`);
        assert.equal(r.To, alice.uid);
        assert.equal(r.MsgID, id);
        assertSeq(r.Seq, `${kind}.Seq`);
        assertRecentMs(r.SentAt, `${kind}.SentAt`);
        assert.equal(typeof r.Unread, 'number', `${kind}.Unread must be a number: ${JSON.stringify(r)}`);
      }
    });

    it('a receipt for an offline sender is stored and replayed when she connects', async () => {
      const alice = await signup(url, 'alice');
      const bob = await signup(url, 'bob');
      let a = await connect(url, alice.token);
      const b = await connect(url, bob.token);
      const id = msgId();
      assertOkAck(await emitAck(a, 'chat', { EvtType: 'message', To: bob.uid, MsgID: id, Body: 'x' }), id);
      await nextChat(b, fromTo(alice.uid, id));
      await closeSocket(a);
      const ack = await emitAck(b, 'chat', { EvtType: 'delivery', To: alice.uid, MsgID: id });
      assert.equal(ack && ack.error, undefined, `receipt refused: ${JSON.stringify(ack)}`);
      a = await connect(url, alice.token);
      const r = await nextChat(a, (d) => d.EvtType === 'delivery' && d.MsgID === id, undefined, 'stored receipt');
      assert.equal(r.From, bob.uid);
      assertSeq(r.Seq);
    });

    it('typing is forwarded live and never stored', async () => {
      const alice = await signup(url, 'alice');
      const bob = await signup(url, 'bob');
      const a = await connect(url, alice.token);
      let b = await connect(url, bob.token);
      a.emit('chat', { EvtType: 'typing', To: bob.uid, Body: '1' });
      const t = await nextChat(b, (d) => d.EvtType === 'typing', undefined, 'live typing');
      assert.equal(t.From, alice.uid);
      assert.equal(t.To, bob.uid);
      assert.equal(t.Body, '1');
      await closeSocket(b);

      // Offline: typing then a message; only the message is replayed.
      a.emit('chat', { EvtType: 'typing', To: bob.uid, Body: '1' });
      const id = msgId();
      assertOkAck(await emitAck(a, 'chat', { EvtType: 'message', To: bob.uid, MsgID: id, Body: 'after typing' }), id);
      b = await connect(url, bob.token);
      const first = await nextChat(b, { From: alice.uid }, undefined, 'replay after offline typing');
      assert.equal(first.MsgID, id, `expected only the message to be replayed, got ${JSON.stringify(first)}`);
      assert.deepEqual(
        a.inbox.seen((d) => d.EvtType === 'error'),
        [],
        'typing produced an error event',
      );
    });

    // Races around connect and per-socket event order. Each is repeated because a
    // race only shows some of the time; a correct server passes every round.

    it('a chat event emitted right after "connect" is handled (50 fresh connections)', async () => {
      const alice = await signup(url, 'alice');
      const bob = await signup(url, 'bob');
      const b = await connect(url, bob.token);
      for (let i = 0; i < 50; i++) {
        const a = await connect(url, alice.token);
        const id = msgId(`rc${i}`);
        // No await between connect and emit: what a real client does.
        const ack = await emitAck(a, 'chat', { EvtType: 'message', To: bob.uid, MsgID: id, Body: `r${i}` });
        assertOkAck(ack, id);
        await closeSocket(a);
      }
      await collectChats(b, { From: alice.uid, EvtType: 'message' }, 50, undefined, 'all 50 delivered');
    });

    it('a socket gets live events as soon as it is connected (typing, 10 fresh connections)', async () => {
      const alice = await signup(url, 'alice');
      const bob = await signup(url, 'bob');
      const a = await connect(url, alice.token);
      // Warm-up round trip so alice's own socket is surely set up.
      const w = msgId('warm');
      assertOkAck(await emitAck(a, 'chat', { EvtType: 'message', To: bob.uid, MsgID: w, Body: 'w' }), w);
      for (let i = 0; i < 10; i++) {
        const b = await connect(url, bob.token);
        const body = i % 2 === 0 ? '1' : '0'; // typing Body is "1" (typing) or "0" (stopped)
        a.emit('chat', { EvtType: 'typing', To: bob.uid, Body: body });
        await nextChat(b, (d) => d.EvtType === 'typing' && d.Body === body, undefined, `typing round ${i}`);
        await closeSocket(b);
      }
    });

    it('messages sent back-to-back (without waiting for acks) keep their order', async () => {
      const alice = await signup(url, 'alice');
      const bob = await signup(url, 'bob');
      const a = await connect(url, alice.token);
      const b = await connect(url, bob.token);
      const w = msgId('warm');
      assertOkAck(await emitAck(a, 'chat', { EvtType: 'message', To: bob.uid, MsgID: w, Body: 'w' }), w);
      await nextChat(b, (d) => d.MsgID === w);
      for (let round = 0; round < 5; round++) {
        const ids = [];
        const acks = [];
        for (let k = 0; k < 5; k++) {
          const id = msgId(`o${round}-${k}`);
          ids.push(id);
          acks.push(emitAck(a, 'chat', { EvtType: 'message', To: bob.uid, MsgID: id, Body: String(k) }));
        }
        (await Promise.all(acks)).forEach((ack, k) => assertOkAck(ack, ids[k]));
        const got = await collectChats(b, { From: alice.uid, EvtType: 'message' }, 5, undefined, `round ${round}`);
        assert.deepEqual(
          got.map((m) => m.Body),
          ['0', '1', '2', '3', '4'],
          `round ${round}: delivered out of send order (Body@Seq: ${got.map((m) => `${m.Body}@${m.Seq}`).join(' ')})`,
        );
      }
    });

    it('a chat over HTTP long-polling works like websocket', async () => {
      const alice = await signup(url, 'alice');
      const bob = await signup(url, 'bob');
      const a = await connect(url, alice.token, { transports: ['polling'] });
      const b = await connect(url, bob.token, { transports: ['polling'] });
      const id = msgId();
      assertOkAck(await emitAck(a, 'chat', { EvtType: 'message', To: bob.uid, MsgID: id, Body: 'polled' }), id);
      const m = await nextChat(b, fromTo(alice.uid, id));
      assert.equal(m.Body, 'polled');
    });
  });
}
