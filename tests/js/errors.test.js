'use strict';
// Error handling on the `chat` event: error acks, error events without an ack
// callback, and the socket staying usable afterwards.

const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const {
  startServer,
  signup,
  uniqueUid,
  connect,
  disconnectAll,
  emitAck,
  nextChat,
  msgId,
} = require('./helpers/server');

const DEFAULT_MAX_BODY = 16 * 1024;

function assertErrorAck(ack, code, what) {
  assert.ok(ack && typeof ack === 'object', `${what}: ack is not an object: ${JSON.stringify(ack)}`);
  assert.ok(ack.error && typeof ack.error === 'object', `${what}: expected {"error":{..}}, got ${JSON.stringify(ack)}`);
  assert.equal(ack.error.code, code, `${what}: ${JSON.stringify(ack)}`);
  assert.equal(typeof ack.error.message, 'string', `${what}: error.message must be a string`);
  assert.notEqual(ack.ok, true, `${what}: an error ack must not say ok`);
}

function assertOk(ack, id, what = 'ack') {
  assert.ok(ack && ack.ok === true, `${what}: expected ok, got ${JSON.stringify(ack)}`);
  assert.equal(ack.MsgID, id);
}

describe('chat errors (default limits)', () => {
  let server;
  let url;
  let alice;
  let bob;

  before(async () => {
    server = await startServer();
    url = server.url;
    alice = await signup(url, 'alice');
    bob = await signup(url, 'bob');
  });
  after(async () => {
    disconnectAll();
    if (server) await server.stop();
  });
  afterEach(() => disconnectAll());

  it('malformed JSON string → bad_request', async () => {
    const a = await connect(url, alice.token);
    assertErrorAck(await emitAck(a, 'chat', '{"EvtType": "message", "To": '), 'bad_request', 'malformed JSON');
    assertErrorAck(await emitAck(a, 'chat', 'not json at all'), 'bad_request', 'plain text');
  });

  it('unknown EvtType → bad_request', async () => {
    const a = await connect(url, alice.token);
    const ack = await emitAck(a, 'chat', { EvtType: 'bogus', To: bob.uid, MsgID: msgId(), Body: 'x' });
    assertErrorAck(ack, 'bad_request', 'unknown EvtType');
  });

  it('missing To, missing MsgID, MsgID over 64 chars, invalid recipient uid → bad_request', async () => {
    const a = await connect(url, alice.token);
    const cases = [
      ['missing To', { EvtType: 'message', MsgID: msgId(), Body: 'x' }],
      ['missing MsgID', { EvtType: 'message', To: bob.uid, Body: 'x' }],
      ['empty MsgID', { EvtType: 'message', To: bob.uid, MsgID: '', Body: 'x' }],
      ['65-char MsgID', { EvtType: 'message', To: bob.uid, MsgID: 'm'.repeat(65), Body: 'x' }],
      ['invalid To uid', { EvtType: 'message', To: 'no spaces allowed', MsgID: msgId(), Body: 'x' }],
    ];
    for (const [what, payload] of cases) {
      assertErrorAck(await emitAck(a, 'chat', payload), 'bad_request', what);
    }
    // A 64-char MsgID is fine.
    const id64 = 'k'.repeat(48) + Date.now().toString(16).padStart(16, '0');
    assert.equal(id64.length, 64);
    assertOk(await emitAck(a, 'chat', { EvtType: 'message', To: bob.uid, MsgID: id64, Body: 'x' }), id64, '64-char MsgID');
  });

  it('unknown recipient → not_found', async () => {
    const a = await connect(url, alice.token);
    const ack = await emitAck(a, 'chat', { EvtType: 'message', To: uniqueUid('ghost'), MsgID: msgId(), Body: 'x' });
    assertErrorAck(ack, 'not_found', 'unknown recipient');
  });

  it(`Body over the default limit (${DEFAULT_MAX_BODY} bytes) → too_large; at the limit → ok`, async () => {
    const a = await connect(url, alice.token);
    const big = await emitAck(a, 'chat', {
      EvtType: 'message',
      To: bob.uid,
      MsgID: msgId(),
      Body: 'x'.repeat(DEFAULT_MAX_BODY + 1),
    });
    assertErrorAck(big, 'too_large', 'Body of 16 KiB + 1');
    const id = msgId();
    assertOk(
      await emitAck(a, 'chat', { EvtType: 'message', To: bob.uid, MsgID: id, Body: 'x'.repeat(DEFAULT_MAX_BODY) }),
      id,
      'Body of exactly 16 KiB',
    );
  });

  it('without an ack callback the error comes back as a chat event {EvtType:"error", MsgID, Body:"{code,message}"}', async () => {
    const a = await connect(url, alice.token);
    const cases = [
      ['bad_request', { EvtType: 'bogus', To: bob.uid, MsgID: msgId('e'), Body: 'x' }],
      ['not_found', { EvtType: 'message', To: uniqueUid('ghost'), MsgID: msgId('e'), Body: 'x' }],
      ['too_large', { EvtType: 'message', To: bob.uid, MsgID: msgId('e'), Body: 'y'.repeat(DEFAULT_MAX_BODY + 1) }],
    ];
    for (const [code, payload] of cases) {
      a.emit('chat', payload); // no callback
      const ev = await nextChat(a, (d) => d.EvtType === 'error' && d.MsgID === payload.MsgID, undefined, code);
      assert.equal(typeof ev.Body, 'string', `error Body must be a JSON string: ${JSON.stringify(ev)}`);
      let body;
      assert.doesNotThrow(() => {
        body = JSON.parse(ev.Body);
      }, `error Body is not JSON: ${ev.Body}`);
      assert.equal(body.code, code, ev.Body);
      assert.equal(typeof body.message, 'string', ev.Body);
    }
  });

  it('the socket stays usable after errors', async () => {
    const a = await connect(url, alice.token);
    const b = await connect(url, bob.token);
    assertErrorAck(await emitAck(a, 'chat', '{{{'), 'bad_request', 'garbage');
    assertErrorAck(await emitAck(a, 'chat', { EvtType: 'nope', To: bob.uid, MsgID: msgId() }), 'bad_request', 'bad type');
    a.emit('chat', { EvtType: 'nope', To: bob.uid, MsgID: msgId('noack') });
    assertErrorAck(
      await emitAck(a, 'chat', { EvtType: 'message', To: bob.uid, MsgID: msgId(), Body: 'z'.repeat(DEFAULT_MAX_BODY + 10) }),
      'too_large',
      'too large',
    );
    assert.ok(a.connected, 'socket was disconnected by an error');
    const id = msgId();
    assertOk(await emitAck(a, 'chat', { EvtType: 'message', To: bob.uid, MsgID: id, Body: 'still here' }), id);
    const m = await nextChat(b, (d) => d.MsgID === id);
    assert.equal(m.Body, 'still here');
    assert.equal(m.From, alice.uid);
    assert.ok(a.connected);
  });

  it('join with a different uid in token mode → forbidden and the socket is disconnected', async () => {
    const a = await connect(url, alice.token);
    const disconnected = new Promise((resolve) => a.once('disconnect', resolve));
    let ackArg;
    a.emit('join', bob.uid, (arg) => {
      ackArg = arg;
    });
    const reason = await Promise.race([
      disconnected,
      new Promise((_, reject) => setTimeout(() => reject(new Error('socket not disconnected within 5 s')), 5000)),
    ]);
    assert.equal(reason, 'io server disconnect');
    // The refusal is reported before the disconnect: as the join ack or as a chat error event.
    const viaEvent = a.inbox.seen((d) => d.EvtType === 'error');
    const codes = [];
    if (ackArg && ackArg.error) codes.push(ackArg.error.code);
    for (const ev of viaEvent) {
      try {
        codes.push(JSON.parse(ev.Body).code);
      } catch (_) {
        codes.push(`unparseable:${ev.Body}`);
      }
    }
    assert.ok(
      codes.includes('forbidden'),
      `expected a "forbidden" error before the disconnect; ack=${JSON.stringify(ackArg)} events=${JSON.stringify(viaEvent)}`,
    );
  });

  it('join with the own uid in token mode is fine', async () => {
    const a = await connect(url, alice.token);
    const b = await connect(url, bob.token);
    a.emit('join', alice.uid);
    const id = msgId();
    assertOk(await emitAck(a, 'chat', { EvtType: 'message', To: bob.uid, MsgID: id, Body: 'after join' }), id);
    await nextChat(b, (d) => d.MsgID === id);
    assert.ok(a.connected);
    assert.deepEqual(
      a.inbox.seen((d) => d.EvtType === 'error'),
      [],
    );
  });
});

describe('chat errors (--max-body-bytes 1024)', () => {
  let server;
  let url;

  before(async () => {
    server = await startServer({ maxBodyBytes: 1024 });
    url = server.url;
  });
  after(async () => {
    disconnectAll();
    if (server) await server.stop();
  });

  it('Body over the configured limit → too_large; at the limit → ok', async () => {
    const alice = await signup(url, 'alice');
    const bob = await signup(url, 'bob');
    const a = await connect(url, alice.token);
    assertErrorAck(
      await emitAck(a, 'chat', { EvtType: 'message', To: bob.uid, MsgID: msgId(), Body: 'x'.repeat(1025) }),
      'too_large',
      'Body of 1025 bytes',
    );
    const id = msgId();
    assertOk(await emitAck(a, 'chat', { EvtType: 'message', To: bob.uid, MsgID: id, Body: 'x'.repeat(1024) }), id);
  });
});
