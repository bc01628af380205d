'use strict';
// Presence (docs/protocol.md, "Presence"): a user is online while any socket of
// theirs is connected on any node. Going from no socket to one, or from one to
// none, sends a live-only `chat` event {EvtType:"presence", From:<uid>,
// To:<recipient>, Body:"online"|"offline"} to everyone who shares a 1:1
// conversation with them (messages sent in both directions: a message one way is
// not enough) or a group; no Seq, no ack request. Blocking is in blocks.test.js.
// Runs once against a standalone server ("local") and, when
// WEBCHAT_TEST_REDIS_URL is set, once more with --redis-url ("redis"); with
// Redis there are also two-node suites, one of them on a dedicated throwaway
// redis-server (a killed node is only declared dead after a short timeout, which
// must not apply to other suites' nodes on the shared Redis).

const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const net = require('node:net');
const readline = require('node:readline');
const {
  REDIS_URL,
  modes,
  startServer,
  signup,
  login,
  connect,
  closeSocket,
  disconnectAll,
  emitAck,
  nextChat,
  nextChatEvent,
  msgId,
} = require('./helpers/server');

// ---------------------------------------------------------------------------
// assertions and shorthands

function assertRecentMs(v, what) {
  assert.equal(typeof v, 'number', `${what} must be a number (epoch ms), got ${JSON.stringify(v)}`);
  assert.ok(Number.isInteger(v), `${what} must be an integer, got ${v}`);
  assert.ok(Math.abs(v - Date.now()) < 60_000, `${what}=${v} is not epoch milliseconds close to now (${Date.now()})`);
}

/** A presence predicate: presence events about `uid` (optionally with this Body). */
const presenceOf = (uid, body) => (d) => d.EvtType === 'presence' && d.From === uid && (body === undefined || d.Body === body);

/**
 * Check a presence event received by `recipient` about `subject`: live-only
 * (no Seq, no ack callback), From = subject, To = recipient, Body = state.
 */
function assertPresence(ev, { subject, recipient, state }, what) {
  const d = ev.data;
  const ctx = `${what}: ${JSON.stringify(d)}`;
  assert.equal(d.EvtType, 'presence', ctx);
  assert.equal(d.From, subject, `${ctx} (From must be the user whose state changed)`);
  assert.equal(d.To, recipient, `${ctx} (To must be the recipient)`);
  assert.equal(d.Body, state, `${ctx} (Body)`);
  assert.equal(d.Seq, undefined, `${ctx} (a live-only event must not carry a Seq)`);
  assert.ok(!ev.ackRequested, `${ctx} (a live-only event must not request an ack)`);
  assert.equal(typeof d.Timestamp, 'number', `${ctx} (Timestamp must be a number)`);
  assert.ok(Math.abs(d.Timestamp - Date.now() / 1000) < 60, `${ctx} (Timestamp must be unix seconds close to now)`);
  assertRecentMs(d.SentAt, `${what}.SentAt`);
}

/** Wait for `recipient`'s socket to get `subject`'s presence `state`; returns the checked event. */
async function expectPresence(socket, { subject, recipient, state }, what, timeoutMs) {
  const ev = await nextChatEvent(socket, presenceOf(subject, state), timeoutMs, what);
  assertPresence(ev, { subject, recipient, state }, what);
  return ev;
}

/** Send a 1:1 message; returns the ack (asserted ok). */
async function send1to1(socket, to, id = msgId('m'), body = 'hi') {
  const ack = await emitAck(socket, 'chat', { EvtType: 'message', To: to, MsgID: id, Body: body });
  assert.ok(ack && ack.ok === true, `1:1 message to ${to} was not acked ok: ${JSON.stringify(ack)}`);
  assert.equal(ack.MsgID, id);
  return ack;
}

/**
 * Prove that `socket` got no presence about `subject` beyond `expected` (in order):
 * `sender` sends it a marker message; once it arrives, everything sent to the
 * socket before it has arrived too.
 */
async function assertPresenceSoFar(socket, sender, recipientUid, subject, expected, what) {
  const marker = msgId('marker');
  await send1to1(sender, recipientUid, marker, 'marker');
  await nextChat(socket, (d) => d.MsgID === marker, undefined, `${what}: marker`);
  assert.deepEqual(
    socket.inbox.seen(presenceOf(subject)).map((d) => d.Body),
    expected,
    `${what}: presence events about ${subject}`,
  );
}

/** Create a group of `socket`'s user with `uids`: co-members share presence from then on. */
async function shareGroup(socket, uids) {
  const ack = await emitAck(socket, 'chat', { EvtType: 'create', To: '', MsgID: msgId('create'), Body: JSON.stringify(uids) });
  assert.ok(ack && ack.ok === true && typeof ack.Group === 'string', `create ack: ${JSON.stringify(ack)}`);
  return ack.Group;
}

/**
 * Make sure the server has counted `socket` as online: its delivery task counts the
 * socket before it forwards anything, so once a message sent to it arrives, the
 * socket is counted.
 */
async function awaitCounted(socket, sender, uid, what) {
  const id = msgId('sync');
  await send1to1(sender, uid, id, 'sync');
  await nextChat(socket, (d) => d.MsgID === id, undefined, `${what}: sync message`);
}

// ---------------------------------------------------------------------------

for (const mode of modes()) {
  describe(`presence [${mode.name}]`, () => {
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

    it('1:1 peers: once alice and bob wrote to each other, bob\'s disconnect and reconnect reach alice as live-only presence; strangers get nothing', async () => {
      const alice = await signup(url, 'alice');
      const bob = await signup(url, 'bob');
      const eve = await signup(url, 'eve'); // no conversation with anyone
      const a = await connect(url, alice.token);
      let b = await connect(url, bob.token);
      const e = await connect(url, eve.token);

      // No conversation yet: bob's coming online (above) was announced to nobody.
      const id = msgId('first');
      await send1to1(a, bob.uid, id, 'hello bob');
      await nextChat(b, (d) => d.MsgID === id, undefined, 'bob gets the first message');
      const reply = msgId('reply');
      await send1to1(b, alice.uid, reply, 'hello alice');
      await nextChat(a, (d) => d.MsgID === reply, undefined, 'alice gets the reply');
      assert.deepEqual(a.inbox.seen(presenceOf(bob.uid)), [], 'alice got bob\'s presence before they had a conversation');

      await closeSocket(b);
      await expectPresence(a, { subject: bob.uid, recipient: alice.uid, state: 'offline' }, 'bob offline to alice');

      b = await connect(url, bob.token);
      await expectPresence(a, { subject: bob.uid, recipient: alice.uid, state: 'online' }, 'bob online to alice');
      assert.deepEqual(a.inbox.seen(presenceOf(bob.uid)).map((d) => d.Body), ['offline', 'online']);

      // Both ways: bob sees alice too.
      await closeSocket(a);
      await expectPresence(b, { subject: alice.uid, recipient: bob.uid, state: 'offline' }, 'alice offline to bob');

      // eve shares nothing with alice or bob: a marker from bob reaches her with nothing before it.
      await assertPresenceSoFar(e, b, eve.uid, bob.uid, [], 'eve (stranger), about bob');
      assert.deepEqual(e.inbox.seen((d) => d.EvtType === 'presence'), [], 'a stranger got presence events');
    });

    it('group co-members: carol creates a group with dave; dave\'s connect and disconnect reach carol', async () => {
      const carol = await signup(url, 'carol');
      const dave = await signup(url, 'dave'); // offline while the group is created
      const c = await connect(url, carol.token);
      const createId = msgId('create');
      const ack = await emitAck(c, 'chat', { EvtType: 'create', To: '', MsgID: createId, Body: JSON.stringify([dave.uid]) });
      assert.ok(ack && ack.ok === true && typeof ack.Group === 'string', `create ack: ${JSON.stringify(ack)}`);

      const d = await connect(url, dave.token);
      await expectPresence(c, { subject: dave.uid, recipient: carol.uid, state: 'online' }, 'dave online to carol');
      await closeSocket(d);
      await expectPresence(c, { subject: dave.uid, recipient: carol.uid, state: 'offline' }, 'dave offline to carol');
      assert.deepEqual(c.inbox.seen(presenceOf(dave.uid)).map((x) => x.Body), ['online', 'offline']);

      // And the other way round: carol's disconnect reaches dave (they share no 1:1 conversation).
      const d2 = await connect(url, dave.token);
      await closeSocket(c);
      await expectPresence(d2, { subject: carol.uid, recipient: dave.uid, state: 'offline' }, 'carol offline to dave');
    });

    it('a second socket: opening it or closing one of two sends nothing; closing the last sends offline', async () => {
      const alice = await signup(url, 'alice');
      const bob = await signup(url, 'bob');
      const a = await connect(url, alice.token);
      await shareGroup(a, [bob.uid]); // bob is in alice's audience from now on

      const b1 = await connect(url, bob.token);
      await expectPresence(a, { subject: bob.uid, recipient: alice.uid, state: 'online' }, 'bob online to alice');
      const b2 = await connect(url, bob.token);
      await awaitCounted(b2, a, bob.uid, "bob's second socket");

      await closeSocket(b1);
      await closeSocket(b2);
      await expectPresence(a, { subject: bob.uid, recipient: alice.uid, state: 'offline' }, 'bob offline to alice');
      // The first presence event after "online" is the "offline" from closing the last socket:
      // neither the second socket nor closing the first one announced anything.
      assert.deepEqual(a.inbox.seen(presenceOf(bob.uid)).map((d) => d.Body), ['online', 'offline']);
    });

    it('live-only: a user offline while a peer comes and goes gets no presence on connect', async () => {
      const alice = await signup(url, 'alice');
      const bob = await signup(url, 'bob');
      const carol = await signup(url, 'carol'); // a witness that bob's changes were announced
      let a = await connect(url, alice.token);
      const c = await connect(url, carol.token);
      await shareGroup(a, [bob.uid, carol.uid]);
      await closeSocket(a);

      const b = await connect(url, bob.token);
      await expectPresence(c, { subject: bob.uid, recipient: carol.uid, state: 'online' }, 'bob online to carol');
      await closeSocket(b);
      await expectPresence(c, { subject: bob.uid, recipient: carol.uid, state: 'offline' }, 'bob offline to carol');

      a = await connect(url, alice.token);
      // Replay (if anything were stored) comes before a message sent after connecting.
      await assertPresenceSoFar(a, c, alice.uid, bob.uid, [], 'alice after reconnecting');
    });
  });
}

// ---------------------------------------------------------------------------
// two nodes on the shared Redis

describe('presence across two nodes on one Redis', { skip: REDIS_URL ? false : 'WEBCHAT_TEST_REDIS_URL not set' }, () => {
  let nodeA;
  let nodeB;

  before(async () => {
    [nodeA, nodeB] = await Promise.all([startServer({ redisUrl: REDIS_URL }), startServer({ redisUrl: REDIS_URL })]);
  });
  after(async () => {
    disconnectAll();
    await Promise.all([nodeA && nodeA.stop(), nodeB && nodeB.stop()]);
  });
  afterEach(() => disconnectAll());

  it('bob on node A and node B, alice on node B: online once, nothing for the second node or closing one, offline at the last', async () => {
    const alice = await signup(nodeB.url, 'alice');
    const bob = await signup(nodeA.url, 'bob');
    const bobOnB = await login(nodeB.url, bob.uid);
    const a = await connect(nodeB.url, alice.token);
    await shareGroup(a, [bob.uid]); // while bob is offline

    const bA = await connect(nodeA.url, bob.token);
    await expectPresence(a, { subject: bob.uid, recipient: alice.uid, state: 'online' }, 'bob (node A) online to alice (node B)');
    const bB = await connect(nodeB.url, bobOnB.token);
    await awaitCounted(bB, a, bob.uid, "bob's socket on node B");

    await closeSocket(bA); // bob is still online on node B
    await closeSocket(bB);
    await expectPresence(a, { subject: bob.uid, recipient: alice.uid, state: 'offline' }, 'bob offline to alice');
    assert.deepEqual(a.inbox.seen(presenceOf(bob.uid)).map((d) => d.Body), ['online', 'offline']);

    // The other order: first socket on B, second on A, the one on B closed first.
    const bB2 = await connect(nodeB.url, bobOnB.token);
    await expectPresence(a, { subject: bob.uid, recipient: alice.uid, state: 'online' }, 'bob (node B) online again');
    const bA2 = await connect(nodeA.url, bob.token);
    await awaitCounted(bA2, a, bob.uid, "bob's socket on node A");
    await closeSocket(bB2);
    await closeSocket(bA2);
    await expectPresence(a, { subject: bob.uid, recipient: alice.uid, state: 'offline' }, 'bob (node A) offline again');
    assert.deepEqual(a.inbox.seen(presenceOf(bob.uid)).map((d) => d.Body), ['online', 'offline', 'online', 'offline']);
  });

  it('a group co-member on the other node sees connect and disconnect', async () => {
    const carol = await signup(nodeA.url, 'carol');
    const dave = await signup(nodeA.url, 'dave');
    const c = await connect(nodeA.url, carol.token);
    const ack = await emitAck(c, 'chat', { EvtType: 'create', To: '', MsgID: msgId('create'), Body: JSON.stringify([dave.uid]) });
    assert.ok(ack && ack.ok === true, `create ack: ${JSON.stringify(ack)}`);
    const daveOnB = await login(nodeB.url, dave.uid);
    const d = await connect(nodeB.url, daveOnB.token);
    await expectPresence(c, { subject: dave.uid, recipient: carol.uid, state: 'online' }, 'dave (node B) online to carol (node A)');
    await closeSocket(d);
    await expectPresence(c, { subject: dave.uid, recipient: carol.uid, state: 'offline' }, 'dave (node B) offline to carol (node A)');
  });
});

// ---------------------------------------------------------------------------
// a killed node, on a dedicated Redis

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Spawn a throwaway redis-server (no persistence); resolves when it accepts connections. */
async function startRedis() {
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  // Last resort, as for servers: never leave this redis-server behind if the test file dies.
  const killOnExit = () => child.kill('SIGKILL');
  process.on('exit', killOnExit);
  exited.then(() => process.off('exit', killOnExit));
  let output = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => {
    output += d;
  });
  const rl = readline.createInterface({ input: child.stdout });
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`redis-server did not start within 10 s:\n${output}`)), 10_000);
    rl.on('line', (line) => {
      output += `${line}\n`;
      if (/Ready to accept connections/.test(line)) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`redis-server exited (code ${code}, signal ${signal}):\n${output}`));
    });
  });
  return {
    url: `redis://127.0.0.1:${port}`,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(t);
      }
    },
  };
}

const FAST_PRESENCE = ['--presence-heartbeat-secs', '1', '--presence-timeout-secs', '3'];
const DEAD_NODE_BOUND_MS = 8000;

describe('presence when a node is killed (dedicated Redis)', { skip: REDIS_URL ? false : 'WEBCHAT_TEST_REDIS_URL not set' }, () => {
  let redis;
  let nodeA;
  let nodeB;

  before(async () => {
    redis = await startRedis();
    [nodeA, nodeB] = await Promise.all([
      startServer({ redisUrl: redis.url, args: FAST_PRESENCE }),
      startServer({ redisUrl: redis.url, args: FAST_PRESENCE }),
    ]);
  });
  after(async () => {
    disconnectAll();
    await Promise.all([nodeA && nodeA.stop(), nodeB && nodeB.stop()]);
    if (redis) await redis.stop();
  });
  afterEach(() => disconnectAll());

  it('SIGKILL of the node bob is on: alice on the surviving node gets bob offline within the timeout; bob can come back', async (t) => {
    const alice = await signup(nodeA.url, 'alice');
    const bob = await signup(nodeA.url, 'bob');
    const bobOnB = await login(nodeB.url, bob.uid);
    const a = await connect(nodeA.url, alice.token);
    await shareGroup(a, [bob.uid]); // while bob is offline

    await connect(nodeB.url, bobOnB.token);
    await expectPresence(a, { subject: bob.uid, recipient: alice.uid, state: 'online' }, 'bob (node B) online to alice (node A)');

    const killedAt = Date.now();
    nodeB.child.kill('SIGKILL');
    const { signal } = await nodeB.exited;
    assert.equal(signal, 'SIGKILL', 'node B did not die of SIGKILL');
    await expectPresence(
      a,
      { subject: bob.uid, recipient: alice.uid, state: 'offline' },
      `bob offline after node B was killed (bound ${DEAD_NODE_BOUND_MS} ms)`,
      DEAD_NODE_BOUND_MS,
    );
    const elapsed = Date.now() - killedAt;
    t.diagnostic(`bob offline ${elapsed} ms after node B was killed`);
    assert.ok(elapsed <= DEAD_NODE_BOUND_MS, `offline took ${elapsed} ms`);
    assert.deepEqual(a.inbox.seen(presenceOf(bob.uid)).map((d) => d.Body), ['online', 'offline']);

    // The dead node's counts are gone: bob connecting to node A is "online" again.
    await connect(nodeA.url, bob.token);
    await expectPresence(a, { subject: bob.uid, recipient: alice.uid, state: 'online' }, 'bob back online on node A');
  });
});
