'use strict';
// Group chats (docs/protocol.md, "Event types (groups)"): create, group
// messages, refer, depart, rejoin, group typing and their errors.
// Runs once against a standalone server ("local") and, when
// WEBCHAT_TEST_REDIS_URL is set, once more with --redis-url ("redis"); with
// Redis there is also a two-node suite (one member on a second process).

const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const {
  REDIS_URL,
  modes,
  startServer,
  signup,
  login,
  uniqueUid,
  connect,
  closeSocket,
  disconnectAll,
  emitAck,
  nextChat,
  nextChatEvent,
  collectChats,
  msgId,
} = require('./helpers/server');

// ---------------------------------------------------------------------------
// assertions

function assertRecentMs(v, what) {
  assert.equal(typeof v, 'number', `${what} must be a number (epoch ms), got ${JSON.stringify(v)}`);
  assert.ok(Number.isInteger(v), `${what} must be an integer, got ${v}`);
  assert.ok(Math.abs(v - Date.now()) < 60_000, `${what}=${v} is not epoch milliseconds close to now (${Date.now()})`);
}

function assertSeq(v, what = 'Seq') {
  assert.equal(typeof v, 'number', `${what} must be a number, got ${JSON.stringify(v)}`);
  assert.ok(Number.isInteger(v) && v >= 0, `${what} must be a non-negative integer, got ${v}`);
}

/** {ok:true, MsgID, SentAt} (MsgID checked when `id` is given). */
function assertOkAck(ack, id, what = 'ack') {
  assert.ok(ack && typeof ack === 'object', `${what}: ack is not an object: ${JSON.stringify(ack)}`);
  assert.equal(ack.error, undefined, `${what}: unexpected error ack: ${JSON.stringify(ack)}`);
  assert.equal(ack.ok, true, `${what}: ack.ok: ${JSON.stringify(ack)}`);
  if (id !== undefined) assert.equal(ack.MsgID, id, `${what}: ack.MsgID: ${JSON.stringify(ack)}`);
  assertRecentMs(ack.SentAt, `${what}: ack.SentAt`);
}

function assertErrorAck(ack, code, what) {
  assert.ok(ack && typeof ack === 'object', `${what}: ack is not an object: ${JSON.stringify(ack)}`);
  assert.ok(ack.error && typeof ack.error === 'object', `${what}: expected {"error":{..}}, got ${JSON.stringify(ack)}`);
  assert.equal(ack.error.code, code, `${what}: ${JSON.stringify(ack)}`);
  assert.equal(typeof ack.error.message, 'string', `${what}: error.message must be a string`);
  assert.notEqual(ack.ok, true, `${what}: an error ack must not say ok`);
}

const GID_RE = /^group_[A-Za-z0-9_.@+-]{1,58}$/;
const sorted = (uids) => [...uids].sort();

/** A fresh, valid, unused gid. */
function newGid() {
  return `group_${uniqueUid('g')}`;
}

/** Parse a membership Body (a JSON-encoded array of uids). */
function parseUids(body, what) {
  assert.equal(typeof body, 'string', `${what}: Body must be a JSON-encoded string, got ${JSON.stringify(body)}`);
  let list;
  assert.doesNotThrow(() => {
    list = JSON.parse(body);
  }, `${what}: Body is not JSON: ${body}`);
  assert.ok(Array.isArray(list), `${what}: Body is not a JSON array: ${body}`);
  return list;
}

/**
 * Check a membership event (notify / join / depart) received by `recipient`:
 * From = gid, To = recipient, Originated = actor, Body = `expectBody` (exactly,
 * order included), stored (Seq) and ack-requested.
 */
function assertMembershipEvent(ev, { type, gid, recipient, actor, body }, what) {
  const d = ev.data;
  const ctx = `${what}: ${JSON.stringify(d)}`;
  assert.equal(d.EvtType, type, ctx);
  assert.equal(d.From, gid, `${ctx} (From must be the gid)`);
  assert.equal(d.To, recipient, `${ctx} (To must be the recipient)`);
  assert.equal(d.Originated, actor, `${ctx} (Originated must be the acting uid)`);
  assert.deepEqual(parseUids(d.Body, what), body, `${ctx} (Body)`);
  assertSeq(d.Seq, `${what}.Seq`);
  assertRecentMs(d.SentAt, `${what}.SentAt`);
  assert.ok(ev.ackRequested, `${what}: a stored group event must request an ack`);
}

/** Check a group message received by a member. */
function assertGroupMessage(d, { gid, sender, id, body, sentAt }, what) {
  const ctx = `${what}: ${JSON.stringify(d)}`;
  assert.equal(d.EvtType, 'message', ctx);
  assert.equal(d.From, gid, `${ctx} (From must be the gid)`);
  assert.equal(d.Originated, sender, `${ctx} (Originated must be the sender)`);
  assert.equal(d.To, gid, `${ctx} (To must be the gid)`);
  assert.equal(d.MsgID, id, ctx);
  assert.equal(d.Body, body, ctx);
  assertSeq(d.Seq, `${what}.Seq`);
  if (sentAt !== undefined) assert.equal(d.SentAt, sentAt, `${ctx} (SentAt must equal the sender's ack SentAt)`);
}

function assertIncreasingSeq(events, what) {
  for (let i = 1; i < events.length; i++) {
    assert.ok(
      events[i].Seq > events[i - 1].Seq,
      `${what}: Seq not strictly increasing: ${events.map((e) => `${e.EvtType}@${e.Seq}`).join(' ')}`,
    );
  }
}

// ---------------------------------------------------------------------------
// protocol shorthands

/** create; returns the ack (asserted ok, with a valid Group). */
async function createGroup(socket, members, { gid = '', id = msgId('create'), bodyAsArray = false } = {}) {
  const ack = await emitAck(socket, 'chat', {
    EvtType: 'create',
    To: gid,
    MsgID: id,
    Body: bodyAsArray ? members : JSON.stringify(members),
  });
  assertOkAck(ack, id, 'create ack');
  assert.equal(typeof ack.Group, 'string', `create ack must carry Group: ${JSON.stringify(ack)}`);
  assert.match(ack.Group, GID_RE, `create ack Group is not a gid: ${JSON.stringify(ack)}`);
  if (gid) assert.equal(ack.Group, gid, 'create ack Group must be the requested gid');
  return ack;
}

/** Send a group message; returns the ack (asserted ok). */
async function sendGroup(socket, gid, id, body, what = 'group message ack') {
  const ack = await emitAck(socket, 'chat', { EvtType: 'message', To: gid, MsgID: id, Body: body });
  assertOkAck(ack, id, what);
  return ack;
}

/** Send a 1:1 message; returns the ack (asserted ok). */
async function send1to1(socket, to, id, body) {
  const ack = await emitAck(socket, 'chat', { EvtType: 'message', To: to, MsgID: id, Body: body });
  assertOkAck(ack, id, '1:1 ack');
  return ack;
}

const ofGroup = (gid, extra = {}) => (d) => d.From === gid && Object.entries(extra).every(([k, v]) => d[k] === v);

// ---------------------------------------------------------------------------

for (const mode of modes()) {
  describe(`groups [${mode.name}]`, () => {
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

    it('create with 3 users: ack {ok, MsgID, SentAt, Group}; every member incl. the creator gets notify with the sorted list', async () => {
      const alice = await signup(url, 'alice');
      const bob = await signup(url, 'bob');
      const carol = await signup(url, 'carol');
      const a = await connect(url, alice.token);
      const b = await connect(url, bob.token);
      const c = await connect(url, carol.token);

      // Server-made gid (To ""), members listed out of order, creator not listed.
      const ack = await createGroup(a, [carol.uid, bob.uid]);
      const gid = ack.Group;
      const all = sorted([alice.uid, bob.uid, carol.uid]);
      for (const [sock, user] of [[a, alice], [b, bob], [c, carol]]) {
        const ev = await nextChatEvent(sock, ofGroup(gid, { EvtType: 'notify' }), undefined, `${user.uid} notify`);
        assertMembershipEvent(
          ev,
          { type: 'notify', gid, recipient: user.uid, actor: alice.uid, body: all },
          `notify to ${user.uid}`,
        );
      }

      // A named gid with Body as a real array (also accepted), creator listed, a duplicate.
      const named = newGid();
      await createGroup(b, [bob.uid, alice.uid, alice.uid], { gid: named, bodyAsArray: true });
      for (const [sock, user] of [[a, alice], [b, bob]]) {
        const ev = await nextChatEvent(sock, ofGroup(named, { EvtType: 'notify' }), undefined, `${user.uid} notify (named)`);
        assertMembershipEvent(
          ev,
          { type: 'notify', gid: named, recipient: user.uid, actor: bob.uid, body: sorted([alice.uid, bob.uid]) },
          `named-group notify to ${user.uid}`,
        );
      }
      // A taken gid is bad_request.
      assertErrorAck(
        await emitAck(a, 'chat', { EvtType: 'create', To: named, MsgID: msgId(), Body: JSON.stringify([carol.uid]) }),
        'bad_request',
        'create with a taken gid',
      );
    });

    it('group message: stored for every other member with From = gid, Originated = sender, To = gid; the sender\'s other socket gets a live copy', async () => {
      const alice = await signup(url, 'alice');
      const bob = await signup(url, 'bob');
      const carol = await signup(url, 'carol');
      const a1 = await connect(url, alice.token);
      const a2 = await connect(url, alice.token);
      const b = await connect(url, bob.token);
      const c = await connect(url, carol.token);
      const gid = (await createGroup(a1, [bob.uid, carol.uid])).Group;

      const id = msgId('gm');
      const ack = await sendGroup(a1, gid, id, 'hello group \u{1F44B}');
      for (const [sock, user] of [[b, bob], [c, carol]]) {
        const ev = await nextChatEvent(sock, ofGroup(gid, { MsgID: id }), undefined, `${user.uid} receives`);
        assertGroupMessage(ev.data, { gid, sender: alice.uid, id, body: 'hello group \u{1F44B}', sentAt: ack.SentAt }, `to ${user.uid}`);
        assert.ok(ev.ackRequested, 'a stored group message must request an ack');
      }
      const copy = await nextChat(a2, (d) => d.MsgID === id, undefined, "alice's second socket");
      assert.equal(copy.EvtType, 'message');
      assert.equal(copy.Body, 'hello group \u{1F44B}');
      assert.equal(copy.Seq, undefined, `live copy must not carry a Seq: ${JSON.stringify(copy)}`);

      // A reply from carol reaches alice (both sockets) and bob, not carol herself.
      const id2 = msgId('gm');
      const ack2 = await sendGroup(c, gid, id2, 'reply');
      for (const [sock, who] of [[a1, 'alice#1'], [a2, 'alice#2'], [b, 'bob']]) {
        const m = await nextChat(sock, ofGroup(gid, { MsgID: id2 }), undefined, `${who} receives the reply`);
        assertGroupMessage(m, { gid, sender: carol.uid, id: id2, body: 'reply', sentAt: ack2.SentAt }, `reply to ${who}`);
      }
      // The sending sockets never get their own message: a 1:1 marker from bob arrives first.
      for (const [sock, user, own] of [[a1, alice, id], [c, carol, id2]]) {
        const marker = msgId('marker');
        await send1to1(b, user.uid, marker, 'marker');
        await nextChat(sock, (d) => d.MsgID === marker, undefined, `marker to ${user.uid}`);
        assert.deepEqual(sock.inbox.seen((d) => d.MsgID === own), [], `${user.uid}'s sending socket got its own message`);
      }
    });

    it('an offline member gets notify, then the group messages in Seq order, on connect', async () => {
      const alice = await signup(url, 'alice');
      const bob = await signup(url, 'bob');
      const carol = await signup(url, 'carol'); // never connected before
      const a = await connect(url, alice.token);
      const b = await connect(url, bob.token);
      const gid = (await createGroup(a, [bob.uid, carol.uid])).Group;
      await nextChat(b, ofGroup(gid, { EvtType: 'notify' }), undefined, 'bob notify');

      const sent = [];
      for (let i = 0; i < 4; i++) {
        const sock = i % 2 === 0 ? a : b;
        const sender = i % 2 === 0 ? alice.uid : bob.uid;
        const id = msgId(`off${i}`);
        const ack = await sendGroup(sock, gid, id, `offline ${i}`);
        sent.push({ id, sender, body: `offline ${i}`, sentAt: ack.SentAt });
      }

      const c = await connect(url, carol.token);
      const got = await collectChats(c, ofGroup(gid), 1 + sent.length, undefined, 'carol replay');
      const notifyEv = c.inbox.all.find((e) => e.data === got[0]);
      assertMembershipEvent(
        notifyEv,
        { type: 'notify', gid, recipient: carol.uid, actor: alice.uid, body: sorted([alice.uid, bob.uid, carol.uid]) },
        'replayed notify',
      );
      got.slice(1).forEach((m, i) => assertGroupMessage(m, { gid, ...sent[i] }, `replayed message #${i}`));
      assertIncreasingSeq(got, 'carol replay');
    });

    it('refer while the new member is offline: members get join, the newcomer gets notify then later messages on connect', async () => {
      const alice = await signup(url, 'alice');
      const bob = await signup(url, 'bob');
      const dave = await signup(url, 'dave'); // offline
      const a = await connect(url, alice.token);
      const b = await connect(url, bob.token);
      const gid = (await createGroup(a, [bob.uid])).Group;
      await nextChat(b, ofGroup(gid, { EvtType: 'notify' }), undefined, 'bob notify');
      await nextChat(a, ofGroup(gid, { EvtType: 'notify' }), undefined, 'alice notify');

      const before = msgId('before');
      await sendGroup(a, gid, before, 'before dave');
      await nextChat(b, ofGroup(gid, { MsgID: before }), undefined, 'bob gets the message before refer');

      const referId = msgId('refer');
      const referAck = await emitAck(a, 'chat', { EvtType: 'refer', To: gid, MsgID: referId, Body: JSON.stringify([dave.uid, bob.uid]) });
      assertOkAck(referAck, referId, 'refer ack');
      for (const [sock, user] of [[a, alice], [b, bob]]) {
        const ev = await nextChatEvent(sock, ofGroup(gid, { EvtType: 'join' }), undefined, `${user.uid} join`);
        assertMembershipEvent(
          ev,
          { type: 'join', gid, recipient: user.uid, actor: alice.uid, body: [dave.uid] },
          `join to ${user.uid}`,
        );
      }

      const after1 = msgId('after');
      const ack1 = await sendGroup(b, gid, after1, 'welcome dave');
      const after2 = msgId('after');
      const ack2 = await sendGroup(a, gid, after2, 'hi dave');

      const d = await connect(url, dave.token);
      const got = await collectChats(d, ofGroup(gid), 3, undefined, 'dave replay');
      assertMembershipEvent(
        d.inbox.all.find((e) => e.data === got[0]),
        { type: 'notify', gid, recipient: dave.uid, actor: alice.uid, body: sorted([alice.uid, bob.uid, dave.uid]) },
        'notify to dave',
      );
      assertGroupMessage(got[1], { gid, sender: bob.uid, id: after1, body: 'welcome dave', sentAt: ack1.SentAt }, 'dave #1');
      assertGroupMessage(got[2], { gid, sender: alice.uid, id: after2, body: 'hi dave', sentAt: ack2.SentAt }, 'dave #2');
      assertIncreasingSeq(got, 'dave replay');
      assert.deepEqual(d.inbox.seen((e) => e.MsgID === before), [], 'dave must not get messages from before he joined');

      // dave is now a full member: his message reaches alice and bob.
      const fromDave = msgId('dave');
      await sendGroup(d, gid, fromDave, 'thanks');
      await nextChat(a, ofGroup(gid, { MsgID: fromDave, Originated: dave.uid }), undefined, 'alice gets dave');
      await nextChat(b, ofGroup(gid, { MsgID: fromDave, Originated: dave.uid }), undefined, 'bob gets dave');
    });

    it('depart: every member incl. the leaver gets depart; the leaver gets no later group traffic; the last leaver deletes the group', async () => {
      const alice = await signup(url, 'alice');
      const bob = await signup(url, 'bob');
      const carol = await signup(url, 'carol');
      const dave = await signup(url, 'dave');
      const a = await connect(url, alice.token);
      const b = await connect(url, bob.token);
      const c = await connect(url, carol.token);
      const d = await connect(url, dave.token);
      const gid = (await createGroup(a, [bob.uid, carol.uid])).Group;
      for (const sock of [a, b, c]) await nextChat(sock, ofGroup(gid, { EvtType: 'notify' }), undefined, 'notify');

      const departId = msgId('depart');
      assertOkAck(await emitAck(b, 'chat', { EvtType: 'depart', To: gid, MsgID: departId }), departId, 'depart ack');
      let bobDepart;
      for (const [sock, user] of [[a, alice], [b, bob], [c, carol]]) {
        const ev = await nextChatEvent(sock, ofGroup(gid, { EvtType: 'depart' }), undefined, `${user.uid} depart`);
        assertMembershipEvent(
          ev,
          { type: 'depart', gid, recipient: user.uid, actor: bob.uid, body: [bob.uid] },
          `depart to ${user.uid}`,
        );
        if (sock === b) bobDepart = ev;
      }

      // Everything the group does from now on must pass bob by.
      assertErrorAck(
        await emitAck(b, 'chat', { EvtType: 'message', To: gid, MsgID: msgId(), Body: 'still here?' }),
        'forbidden',
        'group message by the leaver',
      );
      assertErrorAck(await emitAck(b, 'chat', { EvtType: 'rejoin', To: gid }), 'forbidden', 'rejoin by the leaver');
      assertOkAck(
        await emitAck(a, 'chat', { EvtType: 'refer', To: gid, MsgID: msgId('refer'), Body: JSON.stringify([dave.uid]) }),
        undefined,
        'refer dave',
      );
      await nextChat(c, ofGroup(gid, { EvtType: 'join' }), undefined, 'carol join');
      await nextChat(d, ofGroup(gid, { EvtType: 'notify' }), undefined, 'dave notify');
      const notifyForDave = d.inbox.seen(ofGroup(gid, { EvtType: 'notify' }))[0];
      assert.deepEqual(parseUids(notifyForDave.Body, 'dave notify'), sorted([alice.uid, carol.uid, dave.uid]), 'bob is no longer listed');
      const gm = msgId('gm');
      await sendGroup(a, gid, gm, 'bob is gone');
      await nextChat(c, ofGroup(gid, { MsgID: gm }), undefined, 'carol gets the message');
      await nextChat(d, ofGroup(gid, { MsgID: gm }), undefined, 'dave gets the message');
      c.emit('chat', { EvtType: 'typing', To: gid, Body: '1' });
      await nextChat(a, ofGroup(gid, { EvtType: 'typing' }), undefined, 'alice gets typing');
      await nextChat(d, ofGroup(gid, { EvtType: 'typing' }), undefined, 'dave gets typing');
      const departId2 = msgId('depart');
      assertOkAck(await emitAck(d, 'chat', { EvtType: 'depart', To: gid, MsgID: departId2 }), departId2, 'dave departs');
      await nextChat(a, ofGroup(gid, { EvtType: 'depart', Originated: dave.uid }), undefined, 'alice sees dave depart');

      // The sentinel: a 1:1 message to bob must be the next event bob sees after his depart.
      const sentinel = msgId('sentinel');
      await send1to1(a, bob.uid, sentinel, 'sentinel');
      await nextChat(b, (x) => x.MsgID === sentinel, undefined, 'bob gets the sentinel');
      const i = b.inbox.all.indexOf(bobDepart);
      assert.ok(i >= 0);
      const afterDepart = b.inbox.all.slice(i + 1).map((e) => e.data);
      assert.deepEqual(
        afterDepart.map((x) => x.MsgID),
        [sentinel],
        `after departing, the next (and only) event bob sees must be the 1:1 sentinel; saw ${JSON.stringify(afterDepart)}`,
      );
      assert.equal(afterDepart[0].From, alice.uid);

      // The last members leave; the group is gone.
      assertOkAck(await emitAck(a, 'chat', { EvtType: 'depart', To: gid, MsgID: msgId('d') }), undefined, 'alice departs');
      await nextChat(c, ofGroup(gid, { EvtType: 'depart', Originated: alice.uid }), undefined, 'carol sees alice depart');
      assertOkAck(await emitAck(c, 'chat', { EvtType: 'depart', To: gid, MsgID: msgId('d') }), undefined, 'carol departs');
      const last = await nextChatEvent(c, ofGroup(gid, { EvtType: 'depart', Originated: carol.uid }), undefined, 'carol own depart');
      assertMembershipEvent(last, { type: 'depart', gid, recipient: carol.uid, actor: carol.uid, body: [carol.uid] }, 'last depart');
      assertErrorAck(await emitAck(c, 'chat', { EvtType: 'rejoin', To: gid }), 'not_found', 'rejoin of a deleted group');
      assertErrorAck(
        await emitAck(a, 'chat', { EvtType: 'message', To: gid, MsgID: msgId(), Body: 'anyone?' }),
        'not_found',
        'message to a deleted group',
      );
      assertErrorAck(
        await emitAck(a, 'chat', { EvtType: 'refer', To: gid, MsgID: msgId(), Body: JSON.stringify([bob.uid]) }),
        'not_found',
        'refer into a deleted group',
      );
    });

    it('rejoin: a member gets notify with the current list (nobody else is told); a non-member is forbidden', async () => {
      const alice = await signup(url, 'alice');
      const bob = await signup(url, 'bob');
      const carol = await signup(url, 'carol');
      const a = await connect(url, alice.token);
      const b = await connect(url, bob.token);
      const c = await connect(url, carol.token);
      const gid = (await createGroup(a, [bob.uid])).Group;
      await nextChat(a, ofGroup(gid, { EvtType: 'notify' }), undefined, 'alice notify');
      await nextChat(b, ofGroup(gid, { EvtType: 'notify' }), undefined, 'bob notify');

      // Non-member: refused, nothing changes.
      assertErrorAck(await emitAck(c, 'chat', { EvtType: 'rejoin', To: gid }), 'forbidden', 'rejoin by a non-member');
      assertErrorAck(
        await emitAck(c, 'chat', { EvtType: 'message', To: gid, MsgID: msgId(), Body: 'let me in' }),
        'forbidden',
        'group message by a non-member after a refused rejoin',
      );
      assertErrorAck(
        await emitAck(c, 'chat', { EvtType: 'refer', To: gid, MsgID: msgId(), Body: JSON.stringify([carol.uid]) }),
        'forbidden',
        'refer by a non-member',
      );
      assertErrorAck(await emitAck(c, 'chat', { EvtType: 'depart', To: gid, MsgID: msgId() }), 'forbidden', 'depart by a non-member');
      assertErrorAck(await emitAck(c, 'chat', { EvtType: 'rejoin', To: newGid() }), 'not_found', 'rejoin of an unknown gid');

      // Member: notify with the current list, to bob only.
      const ack = await emitAck(b, 'chat', { EvtType: 'rejoin', To: gid });
      assert.equal(ack && ack.ok, true, `rejoin ack: ${JSON.stringify(ack)}`);
      const ev = await nextChatEvent(b, ofGroup(gid, { EvtType: 'notify' }), undefined, 'bob rejoin notify');
      assertMembershipEvent(
        ev,
        { type: 'notify', gid, recipient: bob.uid, actor: bob.uid, body: sorted([alice.uid, bob.uid]) },
        'rejoin notify',
      );
      // Membership unchanged: a group message still reaches exactly bob (and not carol).
      const gm = msgId('gm');
      await sendGroup(a, gid, gm, 'still two of us');
      await nextChat(b, ofGroup(gid, { MsgID: gm }), undefined, 'bob gets the message');
      const marker = msgId('marker');
      await send1to1(b, alice.uid, marker, 'marker');
      await nextChat(a, (d) => d.MsgID === marker, undefined, 'marker to alice');
      assert.deepEqual(a.inbox.seen(ofGroup(gid, { EvtType: 'notify' })).length, 1, 'alice must not be told of bob\'s rejoin');
      const carolMarker = msgId('marker');
      await send1to1(a, carol.uid, carolMarker, 'marker');
      await nextChat(c, (d) => d.MsgID === carolMarker, undefined, 'marker to carol');
      assert.deepEqual(c.inbox.seen(ofGroup(gid)), [], 'carol (non-member) must get no group event');
    });

    it('create with an empty list → bad_request; with an unknown uid → not_found; nothing is created or announced', async () => {
      const alice = await signup(url, 'alice');
      const bob = await signup(url, 'bob');
      const a = await connect(url, alice.token);
      const b = await connect(url, bob.token);

      const g1 = newGid();
      const g2 = newGid();
      const ghost = uniqueUid('ghost'); // valid uid, never signed up
      const cases = [
        ['Body "[]"', { EvtType: 'create', To: g1, MsgID: msgId('bad'), Body: '[]' }, 'bad_request'],
        ['Body [] (array)', { EvtType: 'create', To: g1, MsgID: msgId('bad'), Body: [] }, 'bad_request'],
        ['Body "[]" with To ""', { EvtType: 'create', To: '', MsgID: msgId('bad'), Body: '[]' }, 'bad_request'],
        ['Body not a JSON array', { EvtType: 'create', To: g1, MsgID: msgId('bad'), Body: 'bob' }, 'bad_request'],
        ['invalid uid in Body', { EvtType: 'create', To: g1, MsgID: msgId('bad'), Body: JSON.stringify(['no spaces']) }, 'bad_request'],
        ['To is not a gid', { EvtType: 'create', To: bob.uid, MsgID: msgId('bad'), Body: JSON.stringify([bob.uid]) }, 'bad_request'],
        ['unknown uid', { EvtType: 'create', To: g2, MsgID: msgId('bad'), Body: JSON.stringify([bob.uid, ghost]) }, 'not_found'],
        ['unknown uid, To ""', { EvtType: 'create', To: '', MsgID: msgId('bad'), Body: JSON.stringify([ghost, bob.uid]) }, 'not_found'],
      ];
      for (const [what, payload, code] of cases) {
        assertErrorAck(await emitAck(a, 'chat', payload), code, `create: ${what}`);
      }

      // Nothing was created: both gids are still free, and the first notify anyone
      // sees is the one of the successful create.
      for (const gid of [g1, g2]) {
        const id = msgId('good');
        await createGroup(a, [bob.uid], { gid, id });
        for (const [sock, who] of [[a, 'alice'], [b, 'bob']]) {
          const n = await nextChat(sock, ofGroup(gid, { EvtType: 'notify' }), undefined, `${who} notify for ${gid}`);
          assert.equal(n.MsgID, id, `${who}: the first notify for ${gid} must be the successful create's: ${JSON.stringify(n)}`);
        }
      }
      const badIds = new Set(cases.map(([, p]) => p.MsgID));
      assert.deepEqual(
        [...a.inbox.seen((d) => badIds.has(d.MsgID)), ...b.inbox.seen((d) => badIds.has(d.MsgID))],
        [],
        'a refused create must not notify anyone',
      );
      assert.deepEqual(
        [...a.inbox.seen((d) => d.EvtType === 'notify'), ...b.inbox.seen((d) => d.EvtType === 'notify')].map((d) => d.From).sort(),
        [g1, g1, g2, g2].sort(),
        'only the two successful creates notified anyone',
      );
    });

    it('group errors: unknown gid → not_found, non-member → forbidden, refer of members only → bad_request; the socket stays usable', async () => {
      const alice = await signup(url, 'alice');
      const bob = await signup(url, 'bob');
      const carol = await signup(url, 'carol');
      const a = await connect(url, alice.token);
      const b = await connect(url, bob.token);
      const c = await connect(url, carol.token);
      const gid = (await createGroup(a, [bob.uid])).Group;
      const unknown = newGid();

      assertErrorAck(
        await emitAck(a, 'chat', { EvtType: 'message', To: unknown, MsgID: msgId(), Body: 'x' }),
        'not_found',
        'message to an unknown gid',
      );
      assertErrorAck(
        await emitAck(a, 'chat', { EvtType: 'refer', To: unknown, MsgID: msgId(), Body: JSON.stringify([bob.uid]) }),
        'not_found',
        'refer into an unknown gid',
      );
      assertErrorAck(await emitAck(a, 'chat', { EvtType: 'depart', To: unknown, MsgID: msgId() }), 'not_found', 'depart from an unknown gid');
      assertErrorAck(
        await emitAck(c, 'chat', { EvtType: 'message', To: gid, MsgID: msgId(), Body: 'x' }),
        'forbidden',
        'message by a non-member',
      );
      assertErrorAck(
        await emitAck(a, 'chat', { EvtType: 'refer', To: gid, MsgID: msgId(), Body: JSON.stringify([bob.uid, alice.uid]) }),
        'bad_request',
        'refer naming only members',
      );
      assertErrorAck(
        await emitAck(a, 'chat', { EvtType: 'refer', To: gid, MsgID: msgId(), Body: JSON.stringify([uniqueUid('ghost')]) }),
        'not_found',
        'refer of an unknown uid',
      );

      // Still usable, and the refused events left no trace.
      const gm = msgId('gm');
      await sendGroup(a, gid, gm, 'after errors');
      const m = await nextChat(b, ofGroup(gid, { EvtType: 'message' }), undefined, 'bob gets the message after errors');
      assert.equal(m.MsgID, gm, `bob's first group message must be the valid one: ${JSON.stringify(m)}`);
      assert.deepEqual(b.inbox.seen(ofGroup(gid, { EvtType: 'join' })), [], 'a refused refer must not announce anything');
      const marker = msgId('marker');
      await send1to1(a, carol.uid, marker, 'marker');
      await nextChat(c, (d) => d.MsgID === marker, undefined, 'marker to carol');
      assert.deepEqual(c.inbox.seen(ofGroup(gid)), [], 'carol must get no group event');
    });

    it('re-sending the same MsgID to a group is acked again (same SentAt) and delivered once to online and offline members', async () => {
      const alice = await signup(url, 'alice');
      const bob = await signup(url, 'bob');
      const carol = await signup(url, 'carol'); // offline
      const a = await connect(url, alice.token);
      const b = await connect(url, bob.token);
      const gid = (await createGroup(a, [bob.uid, carol.uid])).Group;
      const other = (await createGroup(a, [bob.uid])).Group;

      const id = msgId('dup');
      const ack1 = await sendGroup(a, gid, id, 'once', 'first send');
      const ack2 = await sendGroup(a, gid, id, 'once', 'second send');
      assert.equal(ack2.SentAt, ack1.SentAt, 'a re-send is acked with the original SentAt');
      // Concurrent re-sends too.
      const acks = await Promise.all([0, 1, 2].map(() => emitAck(a, 'chat', { EvtType: 'message', To: gid, MsgID: id, Body: 'once' })));
      for (const ack of acks) {
        assertOkAck(ack, id, 'concurrent re-send');
        assert.equal(ack.SentAt, ack1.SentAt, 'a re-send is acked with the original SentAt');
      }
      // The same MsgID to another group is another message.
      await sendGroup(a, other, id, 'other group');

      const marker = msgId('marker');
      await sendGroup(a, gid, marker, 'marker');
      await nextChat(b, ofGroup(gid, { MsgID: marker }), undefined, 'bob marker');
      const copies = b.inbox.seen(ofGroup(gid, { MsgID: id }));
      assert.equal(copies.length, 1, `bob got it ${copies.length} times: ${JSON.stringify(copies)}`);
      assert.equal(copies[0].SentAt, ack1.SentAt);
      const inOther = await nextChat(b, ofGroup(other, { MsgID: id }), undefined, 'bob gets the same MsgID in the other group');
      assert.equal(inOther.Body, 'other group');

      const c = await connect(url, carol.token);
      const got = await collectChats(c, ofGroup(gid), 3, undefined, 'carol replay');
      assert.deepEqual(
        got.map((d) => [d.EvtType, d.MsgID === id ? 'dup' : d.MsgID === marker ? 'marker' : '?']),
        [['notify', '?'], ['message', 'dup'], ['message', 'marker']],
        `carol's replay: ${JSON.stringify(got)}`,
      );
      assertIncreasingSeq(got, 'carol replay');
    });

    it('group typing goes live to the other members (From = gid, Originated = typist) and is never stored', async () => {
      const alice = await signup(url, 'alice');
      const bob = await signup(url, 'bob');
      const carol = await signup(url, 'carol');
      const dave = await signup(url, 'dave'); // not a member
      const a = await connect(url, alice.token);
      const b = await connect(url, bob.token);
      let c = await connect(url, carol.token);
      const d = await connect(url, dave.token);
      const gid = (await createGroup(a, [bob.uid, carol.uid])).Group;
      for (const sock of [a, b, c]) await nextChat(sock, ofGroup(gid, { EvtType: 'notify' }), undefined, 'notify');

      a.emit('chat', { EvtType: 'typing', To: gid, Body: '1' });
      for (const [sock, who] of [[b, 'bob'], [c, 'carol']]) {
        const t = await nextChat(sock, ofGroup(gid, { EvtType: 'typing' }), undefined, `${who} gets typing`);
        assert.equal(t.From, gid, JSON.stringify(t));
        assert.equal(t.To, gid, JSON.stringify(t));
        assert.equal(t.Originated, alice.uid, JSON.stringify(t));
        assert.equal(t.Body, '1');
        assert.equal(t.Seq, undefined, `typing must not carry a Seq: ${JSON.stringify(t)}`);
      }
      const stop = await emitAck(b, 'chat', { EvtType: 'typing', To: gid, Body: '0' });
      assert.equal(stop && stop.error, undefined, `typing with an ack callback was refused: ${JSON.stringify(stop)}`);
      for (const [sock, who] of [[a, 'alice'], [c, 'carol']]) {
        const t = await nextChat(sock, ofGroup(gid, { EvtType: 'typing', Originated: bob.uid }), undefined, `${who} gets bob's typing`);
        assert.equal(t.Body, '0');
      }
      // A non-member may not type into the group.
      assertErrorAck(await emitAck(d, 'chat', { EvtType: 'typing', To: gid, Body: '1' }), 'forbidden', 'typing by a non-member');
      assertErrorAck(await emitAck(d, 'chat', { EvtType: 'typing', To: newGid(), Body: '1' }), 'not_found', 'typing to an unknown gid');

      // The typist and non-members do not get it: markers arrive with nothing before them.
      for (const [sock, user] of [[a, alice], [d, dave]]) {
        const marker = msgId('marker');
        await send1to1(b, user.uid, marker, 'marker');
        await nextChat(sock, (x) => x.MsgID === marker, undefined, `marker to ${user.uid}`);
      }
      assert.deepEqual(a.inbox.seen(ofGroup(gid, { EvtType: 'typing', Originated: alice.uid })), [], 'the typist got her own typing');
      assert.deepEqual(d.inbox.seen(ofGroup(gid)), [], 'a non-member got group typing');

      // Offline: typing then a message; only the message is replayed.
      await closeSocket(c);
      a.emit('chat', { EvtType: 'typing', To: gid, Body: '1' });
      await nextChat(b, (x) => x.EvtType === 'typing' && x.From === gid && x.Originated === alice.uid, undefined, 'bob gets the second typing');
      const gm = msgId('gm');
      await sendGroup(a, gid, gm, 'after typing');
      c = await connect(url, carol.token);
      // (The notify may be replayed once more: acks are applied in batches.)
      const first = await nextChat(c, (x) => x.From === gid && x.EvtType !== 'notify', undefined, 'carol replay');
      assert.equal(first.MsgID, gm, `expected only the message to be replayed, got ${JSON.stringify(first)}`);
    });
  });
}

describe('groups across two nodes on one Redis', { skip: REDIS_URL ? false : 'WEBCHAT_TEST_REDIS_URL not set' }, () => {
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

  it('create with 3 users, carol on node B: everyone gets notify; messages and typing cross nodes both ways', async () => {
    const alice = await signup(nodeA.url, 'alice');
    const bob = await signup(nodeA.url, 'bob');
    const carol = await signup(nodeB.url, 'carol');
    const a = await connect(nodeA.url, alice.token);
    const b = await connect(nodeA.url, bob.token);
    const c = await connect(nodeB.url, carol.token);

    const ack = await createGroup(a, [carol.uid, bob.uid]);
    const gid = ack.Group;
    const all = sorted([alice.uid, bob.uid, carol.uid]);
    for (const [sock, user] of [[a, alice], [b, bob], [c, carol]]) {
      const ev = await nextChatEvent(sock, ofGroup(gid, { EvtType: 'notify' }), undefined, `${user.uid} notify`);
      assertMembershipEvent(ev, { type: 'notify', gid, recipient: user.uid, actor: alice.uid, body: all }, `notify to ${user.uid}`);
    }

    // A → B
    const id1 = msgId('x');
    const ack1 = await sendGroup(a, gid, id1, 'from node A');
    const m1 = await nextChat(c, ofGroup(gid, { MsgID: id1 }), undefined, 'carol on node B');
    assertGroupMessage(m1, { gid, sender: alice.uid, id: id1, body: 'from node A', sentAt: ack1.SentAt }, 'A → B');
    await nextChat(b, ofGroup(gid, { MsgID: id1 }), undefined, 'bob on node A');

    // B → A
    const id2 = msgId('x');
    const ack2 = await sendGroup(c, gid, id2, 'from node B');
    for (const [sock, who] of [[a, 'alice'], [b, 'bob']]) {
      const m = await nextChat(sock, ofGroup(gid, { MsgID: id2 }), undefined, `${who} on node A`);
      assertGroupMessage(m, { gid, sender: carol.uid, id: id2, body: 'from node B', sentAt: ack2.SentAt }, `B → A (${who})`);
    }

    // Typing B → A
    c.emit('chat', { EvtType: 'typing', To: gid, Body: '1' });
    const t = await nextChat(a, ofGroup(gid, { EvtType: 'typing' }), undefined, 'typing from node B');
    assert.equal(t.Originated, carol.uid);

    // Membership is shared: a refer on B is seen on A; a depart on A is seen on B.
    const dave = await signup(nodeA.url, 'dave');
    assertOkAck(
      await emitAck(c, 'chat', { EvtType: 'refer', To: gid, MsgID: msgId('r'), Body: JSON.stringify([dave.uid]) }),
      undefined,
      'refer on node B',
    );
    const j = await nextChat(a, ofGroup(gid, { EvtType: 'join' }), undefined, 'join on node A');
    assert.equal(j.Originated, carol.uid);
    assert.deepEqual(JSON.parse(j.Body), [dave.uid]);
    assertOkAck(await emitAck(b, 'chat', { EvtType: 'depart', To: gid, MsgID: msgId('d') }), undefined, 'bob departs on node A');
    const dep = await nextChat(c, ofGroup(gid, { EvtType: 'depart' }), undefined, 'depart on node B');
    assert.equal(dep.Originated, bob.uid);
    assertErrorAck(
      await emitAck(b, 'chat', { EvtType: 'message', To: gid, MsgID: msgId(), Body: 'x' }),
      'forbidden',
      'the leaver, checked on node A',
    );
  });

  it('an offline member replays notify and messages on node B that were sent on node A', async () => {
    const alice = await signup(nodeA.url, 'alice');
    const bob = await signup(nodeA.url, 'bob');
    const carol = await signup(nodeA.url, 'carol');
    const a = await connect(nodeA.url, alice.token);
    const gid = (await createGroup(a, [bob.uid, carol.uid])).Group;
    const ids = [msgId('c0'), msgId('c1'), msgId('c2')];
    for (const id of ids) await sendGroup(a, gid, id, id);
    const carolB = await login(nodeB.url, carol.uid);
    const c = await connect(nodeB.url, carolB.token);
    const got = await collectChats(c, ofGroup(gid), 4, undefined, 'carol replay on B');
    assert.deepEqual(got.map((d) => d.EvtType), ['notify', 'message', 'message', 'message']);
    assert.deepEqual(got.slice(1).map((d) => d.MsgID), ids);
    assertIncreasingSeq(got, 'carol replay on B');
  });
});
