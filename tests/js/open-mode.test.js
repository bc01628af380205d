'use strict';
// --auth open: no token; a socket emits `join` with a bare uid string to log in.

const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const {
  startServer,
  uniqueUid,
  connect,
  closeSocket,
  disconnectAll,
  emitAck,
  nextChat,
  msgId,
} = require('./helpers/server');

describe('open auth mode', () => {
  let server;
  let url;

  before(async () => {
    server = await startServer({ auth: 'open' });
    url = server.url;
  });
  after(async () => {
    disconnectAll();
    if (server) await server.stop();
  });
  afterEach(() => disconnectAll());

  it('connect without a token, join with a bare uid, chat both ways', async () => {
    const alice = uniqueUid('alice');
    const bob = uniqueUid('bob');
    const a = await connect(url, null);
    const b = await connect(url, null);
    a.emit('join', alice);
    b.emit('join', bob);

    const id = msgId();
    const ack = await emitAck(a, 'chat', { EvtType: 'message', From: 'mallory', To: bob, MsgID: id, Body: 'open hi' });
    assert.equal(ack && ack.ok, true, `ack: ${JSON.stringify(ack)}`);
    assert.equal(ack.MsgID, id);
    assert.equal(typeof ack.SentAt, 'number');

    const m = await nextChat(b, (d) => d.MsgID === id, undefined, 'bob receives');
    assert.equal(m.EvtType, 'message');
    assert.equal(m.From, alice, 'From must be the joined uid');
    assert.equal(m.To, bob);
    assert.equal(m.Body, 'open hi');
    assert.equal(typeof m.Seq, 'number');

    const id2 = msgId();
    const ack2 = await emitAck(b, 'chat', { EvtType: 'message', To: alice, MsgID: id2, Body: 'open hey' });
    assert.equal(ack2 && ack2.ok, true, `ack: ${JSON.stringify(ack2)}`);
    const back = await nextChat(a, (d) => d.MsgID === id2, undefined, 'alice receives');
    assert.equal(back.From, bob);
  });

  it('messages for a uid that has never joined are stored and replayed when it joins', async () => {
    const alice = uniqueUid('alice');
    const carol = uniqueUid('carol');
    const a = await connect(url, null);
    a.emit('join', alice);
    const ids = [msgId('o0'), msgId('o1')];
    for (const id of ids) {
      const ack = await emitAck(a, 'chat', { EvtType: 'message', To: carol, MsgID: id, Body: id });
      assert.equal(ack && ack.ok, true, `ack: ${JSON.stringify(ack)}`);
    }
    const c = await connect(url, null);
    c.emit('join', carol);
    const first = await nextChat(c, (d) => d.From === alice, undefined, 'replay #1');
    const second = await nextChat(c, (d) => d.From === alice, undefined, 'replay #2');
    assert.deepEqual([first.MsgID, second.MsgID], ids);
    assert.ok(second.Seq > first.Seq, `Seq not increasing: ${first.Seq}, ${second.Seq}`);
    await closeSocket(c);
  });
});
