'use strict';
// Legacy clients: socket.io-client 2.x (Engine.IO 3) with the token in the query
// string, chatting with a socket.io-client 4.x user.

const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const {
  startServer,
  signup,
  connect,
  connectV2,
  connectError,
  disconnectAll,
  emitAck,
  nextChat,
  msgId,
} = require('./helpers/server');

const transportsCases = [
  ['default transports (polling, then websocket upgrade)', undefined],
  ['websocket only', ['websocket']],
  ['polling only', ['polling']],
];

describe('socket.io-client 2.x', () => {
  let server;
  let url;

  before(async () => {
    server = await startServer();
    url = server.url;
  });
  after(async () => {
    disconnectAll();
    if (server) await server.stop();
  });
  afterEach(() => disconnectAll());

  for (const [label, transports] of transportsCases) {
    it(`1:1 chat between a 2.x client and a 4.x client — ${label}`, async () => {
      const alice = await signup(url, 'alice');
      const bob = await signup(url, 'bob');
      const a = await connectV2(url, alice.token, transports ? { transports } : {});
      const b = await connect(url, bob.token);

      // 2.x → 4.x
      const id = msgId('v2');
      const ack = await emitAck(a, 'chat', { EvtType: 'message', To: bob.uid, MsgID: id, Body: 'from v2' });
      assert.equal(ack && ack.ok, true, `ack: ${JSON.stringify(ack)}`);
      assert.equal(ack.MsgID, id);
      assert.equal(typeof ack.SentAt, 'number');
      const m = await nextChat(b, (d) => d.MsgID === id, undefined, '4.x receives');
      assert.equal(m.From, alice.uid);
      assert.equal(m.Body, 'from v2');
      assert.equal(typeof m.Seq, 'number');

      // 4.x → 2.x, and the 2.x client confirms (ack callback) and sends a receipt.
      const id2 = msgId('v4');
      const ack2 = await emitAck(b, 'chat', { EvtType: 'message', To: alice.uid, MsgID: id2, Body: 'from v4 \u00e9\u{1F600}' });
      assert.equal(ack2 && ack2.ok, true, `ack: ${JSON.stringify(ack2)}`);
      const ev = await nextChat(a, (d) => d.MsgID === id2, undefined, '2.x receives');
      assert.equal(typeof ev, 'object', `2.x client got a ${typeof ev}: ${JSON.stringify(ev)}`);
      assert.equal(ev.From, bob.uid);
      assert.equal(ev.Body, 'from v4 \u00e9\u{1F600}');
      assert.equal(typeof ev.Seq, 'number');
      assert.ok(a.inbox.all.find((e) => e.data.MsgID === id2).ackRequested, 'ack not requested from the 2.x client');

      a.emit('chat', { EvtType: 'delivery', To: bob.uid, MsgID: id2 });
      const r = await nextChat(b, (d) => d.EvtType === 'delivery' && d.MsgID === id2, undefined, 'receipt from 2.x');
      assert.equal(r.From, alice.uid);

      // A message sent as a JSON string from the 2.x client.
      const id3 = msgId('v2s');
      const ack3 = await emitAck(a, 'chat', JSON.stringify({ EvtType: 'message', To: bob.uid, MsgID: id3, Body: 's' }));
      assert.equal(ack3 && ack3.ok, true, `ack: ${JSON.stringify(ack3)}`);
      await nextChat(b, (d) => d.MsgID === id3);
    });
  }

  it('2.x client: stored messages are replayed on connect', async () => {
    const alice = await signup(url, 'alice');
    const bob = await signup(url, 'bob');
    const b = await connect(url, bob.token);
    const ids = [msgId('r0'), msgId('r1')];
    for (const id of ids) {
      const ack = await emitAck(b, 'chat', { EvtType: 'message', To: alice.uid, MsgID: id, Body: id });
      assert.equal(ack && ack.ok, true, `ack: ${JSON.stringify(ack)}`);
    }
    const a = await connectV2(url, alice.token, { transports: ['websocket'] });
    const first = await nextChat(a, (d) => d.From === bob.uid);
    const second = await nextChat(a, (d) => d.From === bob.uid);
    assert.deepEqual([first.MsgID, second.MsgID], ids);
  });

  it('2.x client without or with a bad token is refused with "unauthorized"', async () => {
    assert.equal(await connectError(() => connectV2(url, null, { transports: ['websocket'] })), 'unauthorized');
    assert.equal(await connectError(() => connectV2(url, 'garbage', { transports: ['websocket'] })), 'unauthorized');
    assert.equal(await connectError(() => connectV2(url, 'garbage')), 'unauthorized');
  });
});
