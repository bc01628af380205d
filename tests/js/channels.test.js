'use strict';
// Channels (§9) and guests with real socket.io clients, 4.x and 2.x: guests get a server-made
// uid, read guest channels only, and are refused everything else; users subscribe, publish
// and recover by offset after a reconnect.

const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { io } = require('socket.io-client');
const ioV2 = require('socket.io-client-v2');
const {
  startServer,
  signup,
  connect,
  connectV2,
  connectError,
  disconnectAll,
  emitAck,
  waitFor,
  closeSocket,
  msgId,
} = require('./helpers/server');

const ADMIN = 'js-admin-token';
const SERVICE = 'js-service-secret';
const TIMEOUT = Number(process.env.WEBCHAT_TEST_TIMEOUT_MS || 5000);
const opened = new Set();

/** A guest socket whose first events are recorded from before it connects. */
function guest(url, version) {
  const socket =
    version === 2
      ? ioV2(url, { reconnection: false, forceNew: true, query: { guest: '1' }, timeout: TIMEOUT })
      : io(url, { reconnection: false, forceNew: true, transports: ['websocket'], auth: { guest: true }, timeout: TIMEOUT });
  opened.add(socket);
  socket.events = [];
  if (typeof socket.onAny === 'function') {
    socket.onAny((name, ...args) => socket.events.push({ name, data: args[0] }));
  } else {
    // socket.io-client 2.x has no onAny: every event passes through onevent.
    const onevent = socket.onevent;
    socket.onevent = function record(packet) {
      const args = packet.data || [];
      socket.events.push({ name: args[0], data: args[1] });
      onevent.call(this, packet);
    };
  }
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('guest: no connect')), TIMEOUT);
    const fail = (err) => {
      clearTimeout(timer);
      socket.disconnect();
      reject(new Error(err && err.message ? err.message : String(err)));
    };
    socket.on('connect_error', fail);
    socket.on('error', fail);
    socket.on('connect', () => {
      clearTimeout(timer);
      resolve(socket);
    });
  });
}

/** The first event named `name` (already received or still to come). */
async function first(socket, name) {
  const seen = socket.events.find((e) => e.name === name);
  if (seen) return seen.data;
  return waitFor(socket, name, TIMEOUT);
}

async function admin(url, method, path, body) {
  const res = await fetch(`${url}${path}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return res;
}

async function publishRest(url, channel, data, token = SERVICE) {
  const res = await fetch(`${url}/api/v1/channels/${channel}/publish`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ data }),
  });
  return { status: res.status, body: await res.json() };
}

function uniqueChannel(prefix) {
  return `${prefix}-${Date.now().toString(36)}-${Math.floor(Math.random() * 1e6)}`;
}

function closeAll() {
  for (const s of opened) s.disconnect();
  opened.clear();
  disconnectAll();
}

describe('guests and channels', () => {
  let server;
  let url;
  const lobby = uniqueChannel('lobby');

  before(async () => {
    server = await startServer({
      args: ['--guests', 'true', '--admin-token', ADMIN, '--service-keys', `shop:${SERVICE}`],
    });
    url = server.url;
    const res = await admin(url, 'PUT', `/api/v1/admin/channels/${lobby}`, { guests: true, publish: 'server' });
    assert.equal(res.status, 200);
  });
  after(async () => {
    closeAll();
    if (server) await server.stop();
  });
  afterEach(() => closeAll());

  for (const version of [4, 2]) {
    it(`a socket.io-client ${version}.x guest gets a uid, reads a guest channel live, and nothing else`, async () => {
      const g = await guest(url, version);
      const session = await first(g, 'session');
      assert.match(session.uid, /^guest-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$/);
      assert.equal(session.guest, true);
      assert.equal(g.events[0].name, 'session', 'session is the first server event');

      const before = await publishRest(url, lobby, 'in stock');
      assert.equal(before.status, 201);
      const ack = await emitAck(g, 'subscribe', { channel: lobby });
      assert.equal(ack.ok, true, JSON.stringify(ack));
      assert.equal(ack.publications.at(-1).data, 'in stock');
      const live = waitFor(g, 'publication');
      const sent = await publishRest(url, lobby, 'sold out');
      const got = await live;
      assert.equal(got.offset, sent.body.offset);
      assert.equal(got.data, 'sold out');
      assert.equal(got.from, null);

      assert.equal((await emitAck(g, 'subscribe', { channel: 'general' })).error.code, 'forbidden');
      assert.equal((await emitAck(g, 'publish', { channel: lobby, data: 'x' })).error.code, 'forbidden');
      const chat = await emitAck(g, 'chat', { EvtType: 'message', To: 'someone', MsgID: msgId('g'), Body: 'hi' });
      assert.equal(chat.error.code, 'forbidden');
    });
  }

  it('guests read a guest channel history over REST without a token, and only that', async () => {
    const ok = await fetch(`${url}/api/v1/channels/${lobby}/publications`);
    assert.equal(ok.status, 200);
    const refused = await fetch(`${url}/api/v1/channels/general/publications`);
    assert.equal(refused.status, 403);
    const list = await fetch(`${url}/api/v1/channels`);
    assert.equal(list.status, 401, 'the channel list is for users');
  });

  for (const version of [4, 2]) {
    it(`a socket.io-client ${version}.x user subscribes, publishes and recovers exactly after a reconnect`, async () => {
      const user = await signup(url, 'reader');
      const open = () => (version === 2 ? connectV2(url, user.token) : connect(url, user.token));
      const a = await open();
      const ack = await emitAck(a, 'subscribe', { channel: 'general' });
      assert.equal(ack.ok, true, JSON.stringify(ack));
      const live = waitFor(a, 'publication');
      const mine = await emitAck(a, 'publish', { channel: 'general', data: `hello from ${version}.x` });
      assert.equal(mine.ok, true, JSON.stringify(mine));
      assert.equal((await live).offset, mine.offset);
      await closeSocket(a);

      await publishRest(url, 'general', 'missed one', ADMIN);
      await publishRest(url, 'general', 'missed two', ADMIN);
      const b = await open();
      const back = await emitAck(b, 'subscribe', { channel: 'general', since: { offset: mine.offset, epoch: ack.epoch } });
      assert.equal(back.recovered, true, JSON.stringify(back));
      assert.deepEqual(back.publications.map((p) => p.data), ['missed one', 'missed two']);
    });
  }
});

describe('guests off, and the per-address connect limit', () => {
  it('a guest connect is unauthorized when guests are off, with 4.x and 2.x', async (t) => {
    const server = await startServer();
    t.after(async () => {
      closeAll();
      await server.stop();
    });
    assert.equal(await connectError(() => guest(server.url, 4)), 'unauthorized');
    assert.equal(await connectError(() => guest(server.url, 2)), 'unauthorized');
  });

  it('guests count against the connect limit of their address', async (t) => {
    const server = await startServer({ args: ['--guests', 'true', '--connect-rate', '0.001', '--connect-burst', '2'] });
    t.after(async () => {
      closeAll();
      await server.stop();
    });
    await guest(server.url, 4);
    await guest(server.url, 4);
    assert.equal(await connectError(() => guest(server.url, 4)), 'rate_limited');
  });
});
