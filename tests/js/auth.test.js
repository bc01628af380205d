'use strict';
// REST accounts (signup / login / logout) and socket authentication in token mode.

const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const {
  startServer,
  api,
  signup,
  login,
  logout,
  uniqueUid,
  connect,
  connectError,
  disconnectAll,
  PASSWORD,
} = require('./helpers/server');

function assertAuthShape(body, uid) {
  assert.ok(body && typeof body === 'object', `expected a JSON object, got ${JSON.stringify(body)}`);
  assert.equal(body.uid, uid);
  assert.equal(typeof body.token, 'string');
  assert.ok(body.token.length > 0, 'token must not be empty');
  assert.ok(body.expiresAt !== undefined && body.expiresAt !== null, 'expiresAt missing');
  // expiresAt: epoch ms/s number or an RFC 3339 string — either way in the future.
  let ms;
  if (typeof body.expiresAt === 'number') {
    ms = body.expiresAt < 1e12 ? body.expiresAt * 1000 : body.expiresAt;
  } else {
    ms = Date.parse(body.expiresAt);
  }
  assert.ok(Number.isFinite(ms), `expiresAt not a time: ${JSON.stringify(body.expiresAt)}`);
  assert.ok(ms > Date.now(), `expiresAt ${JSON.stringify(body.expiresAt)} is not in the future`);
}

function assertBadRequest(res, what) {
  assert.equal(res.status, 400, `${what}: expected 400, got ${res.status} ${res.text}`);
  assert.ok(res.json && res.json.error, `${what}: expected {"error":{..}}, got ${res.text}`);
  assert.equal(res.json.error.code, 'bad_request', `${what}: ${res.text}`);
  assert.equal(typeof res.json.error.message, 'string', `${what}: error.message must be a string`);
}

describe('auth (token mode)', () => {
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

  it('GET /health answers 200 JSON', async () => {
    const res = await api(url, 'GET', '/health');
    assert.equal(res.status, 200, res.text);
    assert.match(res.headers.get('content-type') || '', /application\/json/);
    assert.ok(res.json !== null, `health body is not JSON: ${res.text}`);
  });

  it('signup → 201 {uid, token, expiresAt}; the token opens a socket', async () => {
    const uid = uniqueUid('alice');
    const res = await api(url, 'POST', '/api/v1/signup', { uid, password: PASSWORD, name: 'Alice' });
    assert.equal(res.status, 201, res.text);
    assertAuthShape(res.json, uid);
    const socket = await connect(url, res.json.token);
    assert.ok(socket.connected);
  });

  it('signup of a taken uid → 409', async () => {
    const u = await signup(url, 'dup');
    const res = await api(url, 'POST', '/api/v1/signup', { uid: u.uid, password: 'another-password', name: 'X' });
    assert.equal(res.status, 409, res.text);
  });

  it('signup with an invalid uid → 400 bad_request', async () => {
    const bad = [
      ['empty', ''],
      ['65 chars', 'a'.repeat(65)],
      ['space', 'has space'],
      ['slash', 'a/b'],
      ['non-ascii', 'jos\u00e9'],
      ['group_ prefix', `group_${uniqueUid('x')}`],
    ];
    for (const [what, uid] of bad) {
      const res = await api(url, 'POST', '/api/v1/signup', { uid, password: PASSWORD, name: 'Bad' });
      assertBadRequest(res, `uid ${what} (${JSON.stringify(uid)})`);
    }
  });

  it('signup accepts uids at the edge of the rules (64 chars, all allowed punctuation)', async () => {
    const long = `e${Date.now().toString(36)}`.padEnd(64, 'x');
    assert.equal(long.length, 64);
    const punct = `${uniqueUid('P')}_.@+-Z9`;
    for (const uid of [long, punct]) {
      const res = await api(url, 'POST', '/api/v1/signup', { uid, password: PASSWORD, name: 'Edge' });
      assert.equal(res.status, 201, `uid ${uid}: ${res.text}`);
      assertAuthShape(res.json, uid);
    }
  });

  it('signup with a password outside 8–256 chars → 400 bad_request; 8 and 256 are fine', async () => {
    assertBadRequest(
      await api(url, 'POST', '/api/v1/signup', { uid: uniqueUid('pw'), password: '1234567', name: 'P' }),
      'password of 7 chars',
    );
    assertBadRequest(
      await api(url, 'POST', '/api/v1/signup', { uid: uniqueUid('pw'), password: 'p'.repeat(257), name: 'P' }),
      'password of 257 chars',
    );
    for (const password of ['12345678', 'p'.repeat(256)]) {
      const uid = uniqueUid('pw');
      const res = await api(url, 'POST', '/api/v1/signup', { uid, password, name: 'P' });
      assert.equal(res.status, 201, `password of ${password.length} chars: ${res.text}`);
      const again = await api(url, 'POST', '/api/v1/login', { uid, password });
      assert.equal(again.status, 200, again.text);
    }
  });

  it('signup with a malformed body → 400', async () => {
    const res = await api(url, 'POST', '/api/v1/signup', '{"uid": ');
    assert.equal(res.status, 400, res.text);
  });

  it('login → 200 same shape; wrong password or unknown uid → 401', async () => {
    const u = await signup(url, 'login');
    const ok = await api(url, 'POST', '/api/v1/login', { uid: u.uid, password: u.password });
    assert.equal(ok.status, 200, ok.text);
    assertAuthShape(ok.json, u.uid);

    const wrong = await api(url, 'POST', '/api/v1/login', { uid: u.uid, password: 'wrong-password' });
    assert.equal(wrong.status, 401, wrong.text);

    const unknown = await api(url, 'POST', '/api/v1/login', { uid: uniqueUid('nobody'), password: PASSWORD });
    assert.equal(unknown.status, 401, unknown.text);
  });

  it('logout → 204; the token is then refused by REST (401) and socket.io (unauthorized)', async () => {
    const u = await signup(url, 'logout');
    // The token works before logout.
    const before = await connect(url, u.token);
    assert.ok(before.connected);
    before.disconnect();

    const res = await logout(url, u.token);
    assert.equal(res.status, 204, res.text);

    const again = await logout(url, u.token);
    assert.equal(again.status, 401, `revoked token on REST: ${again.text}`);

    const msg = await connectError(() => connect(url, u.token));
    assert.equal(msg, 'unauthorized');
  });

  it('logout revokes only that token: another login token of the same user still works', async () => {
    const u = await signup(url, 'logout2');
    const second = await login(url, u.uid);
    assert.notEqual(second.token, u.token, 'each login should mint a distinct token');
    assert.equal((await logout(url, u.token)).status, 204);
    const socket = await connect(url, second.token);
    assert.ok(socket.connected);
  });

  it('logout without or with a garbage Authorization → 401', async () => {
    assert.equal((await api(url, 'POST', '/api/v1/logout')).status, 401);
    assert.equal((await logout(url, 'not-a-token')).status, 401);
  });

  it('socket without a token → connect_error "unauthorized"', async () => {
    assert.equal(await connectError(() => connect(url, null)), 'unauthorized');
  });

  it('socket with a garbage or forged token → connect_error "unauthorized"', async () => {
    assert.equal(await connectError(() => connect(url, 'garbage')), 'unauthorized');
    const u = await signup(url, 'forge');
    // Flip one character in the middle of a real token.
    const i = Math.floor(u.token.length / 2);
    const flipped = u.token.slice(0, i) + (u.token[i] === 'A' ? 'B' : 'A') + u.token.slice(i + 1);
    assert.equal(await connectError(() => connect(url, flipped)), 'unauthorized');
  });

  it('socket over HTTP long-polling authenticates too', async () => {
    const u = await signup(url, 'poll');
    const socket = await connect(url, u.token, { transports: ['polling'] });
    assert.ok(socket.connected);
    assert.equal(await connectError(() => connect(url, null, { transports: ['polling'] })), 'unauthorized');
  });
});
