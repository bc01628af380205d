'use strict';
// The support desk (§10) with real socket.io clients, 4.x and 2.x: a guest opens a ticket,
// staff see it, claim it and answer; the customer answers back and closes it.

const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { startServer, signup, connect, connectV2, disconnectAll, emitAck, nextChat, msgId } = require('./helpers/server');

const ADMIN = 'js-support-admin';

async function makeStaff(url, user) {
  const res = await fetch(`${url}/api/v1/admin/users/${user.uid}/roles`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ roles: ['staff'] }),
  });
  assert.equal(res.status, 200);
}

const ticketEvent = (gid, state) => (e) =>
  e.EvtType === 'ticket' && e.From === gid && JSON.parse(e.Body).state === state;

describe('the support desk with socket.io clients', () => {
  let server;
  let url;

  before(async () => {
    server = await startServer({ args: ['--guests', 'true', '--admin-token', ADMIN] });
    url = server.url;
  });
  after(async () => {
    disconnectAll();
    if (server) await server.stop();
  });
  afterEach(() => disconnectAll());

  for (const version of [4, 2]) {
    it(`a socket.io-client ${version}.x guest asks, staff claim and answer, the guest closes`, async () => {
      const staff = await signup(url, 'staff');
      await makeStaff(url, staff);
      const desk = await connect(url, staff.token);
      const customer =
        version === 2 ? await connectV2(url, null, { query: { guest: '1' } }) : await connect(url, null, { auth: { guest: true } });
      const opened = await emitAck(customer, 'chat', { EvtType: 'support', MsgID: msgId('q'), Body: 'Is the kettle back?', Topic: 'kettle' });
      assert.equal(opened.ok, true, JSON.stringify(opened));
      const gid = opened.Ticket;
      assert.match(gid, /^group_ticket-/);

      const open = JSON.parse((await nextChat(desk, ticketEvent(gid, 'open'))).Body);
      assert.equal(open.topic, 'kettle');
      assert.match(open.customer, /^guest-/);

      const claimed = await emitAck(desk, 'chat', { EvtType: 'claim', To: gid });
      assert.equal(claimed.ok, true, JSON.stringify(claimed));
      const join = await nextChat(customer, (e) => e.EvtType === 'join' && e.From === gid);
      assert.equal(join.Originated, staff.uid);

      await emitAck(desk, 'chat', { EvtType: 'message', To: gid, MsgID: msgId('a'), Body: 'Tuesday.' });
      assert.equal((await nextChat(customer, (e) => e.EvtType === 'message' && e.From === gid)).Body, 'Tuesday.');
      await emitAck(customer, 'chat', { EvtType: 'message', To: gid, MsgID: msgId('t'), Body: 'Thanks!' });
      assert.equal((await nextChat(desk, (e) => e.EvtType === 'message' && e.From === gid)).Body, 'Thanks!');

      const closed = await emitAck(customer, 'chat', { EvtType: 'close', To: gid });
      assert.equal(closed.ok, true, JSON.stringify(closed));
      await nextChat(desk, ticketEvent(gid, 'closed'));
      const late = await emitAck(customer, 'chat', { EvtType: 'message', To: gid, MsgID: msgId('l'), Body: 'one more' });
      assert.equal(late.error.code, 'forbidden');
    });
  }
});
