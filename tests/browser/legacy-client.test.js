'use strict';
// The 2020 web client, as it runs: a page on its own origin that loads socket.io-client
// 1.7.3 (Engine.IO 3, long-polling first, XHRs with credentials) and jQuery, talks to the
// chat server in open mode on another origin, emits `join` with a bare uid, registers its
// name with the profile service's `POST /add` through a bare synchronous XHR (JSON sent as
// text/plain), and exchanges messages and delivery receipts with a socket.io-client 4.x user.
//
// Waits are on page conditions and events only; timeouts are failure bounds.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');

const { io } = require('socket.io-client');
const { launchBrowser, spawnOpenModeServers } = require('./helpers');

const WAIT_MS = Number(process.env.WEBCHAT_TEST_TIMEOUT_MS || 10000);
const LEGACY_IO = require.resolve('socket.io-client-legacy/dist/socket.io.js');
const JQUERY = require.resolve('jquery/dist/jquery.min.js');

/** The page of the 2020 client, reduced to what it does on the wire. */
function legacyPage(chatUrl, profileUrl) {
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>webchat 2020</title>
<script src="/jquery.min.js"></script>
<script src="/socket.io.js"></script>
</head><body>
<ul id="log"></ul>
<script>
  window.CHAT_URL = ${JSON.stringify(chatUrl)};
  window.PROFILE_URL = ${JSON.stringify(profileUrl)};
  window.received = [];
  window.transports = [];
  window.start = function (uid, name) {
    // What the original client did at start: register the name, then connect and join.
    var xhr = new XMLHttpRequest();
    xhr.open('POST', PROFILE_URL + '/add', false); // synchronous, no Content-Type set
    xhr.send(JSON.stringify({ UID: uid, Name: name }));
    window.addStatus = xhr.status;
    window.addBody = xhr.responseText;
    var socket = io(CHAT_URL); // default transports: polling first, then websocket
    window.socket = socket;
    socket.io.engine.on('open', function () { transports.push(socket.io.engine.transport.name); });
    socket.io.engine.on('upgrade', function (t) { transports.push(t.name); });
    socket.on('connect', function () {
      socket.emit('join', uid);
      window.joined = true;
    });
    socket.on('chat', function (evt, ack) {
      // The server asks for an ack of every stored event; 1.x clients answer it.
      if (typeof ack === 'function') ack({ ok: true });
      var e = typeof evt === 'string' ? JSON.parse(evt) : evt;
      received.push(e);
      $('#log').append($('<li>').text(e.EvtType + ' ' + e.From + ': ' + e.Body));
      if (e.EvtType === 'message') {
        socket.emit('chat', JSON.stringify({
          EvtType: 'delivery', To: e.From, MsgID: e.MsgID, From: uid, Timestamp: Math.floor(Date.now() / 1000)
        }));
      }
    });
  };
  window.send = function (to, msgId, body) {
    socket.emit('chat', JSON.stringify({
      EvtType: 'message', To: to, MsgID: msgId, Body: body, From: 'spoofed', Timestamp: Math.floor(Date.now() / 1000)
    }));
  };
</script></body></html>`;
}

/**
 * The page's own web server, on its own origin, listening before the chat servers start (their
 * WEBCHAT_CORS_ORIGINS names its port); `setPage` gives it the page once their URLs are known.
 */
async function servePage() {
  const page = { html: '' };
  const files = {
    '/socket.io.js': ['text/javascript', fs.readFileSync(LEGACY_IO)],
    '/jquery.min.js': ['text/javascript', fs.readFileSync(JQUERY)],
  };
  const server = http.createServer((req, res) => {
    const file = req.url === '/' ? ['text/html; charset=utf-8', Buffer.from(page.html)] : files[req.url];
    if (!file) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': file[0] }).end(file[1]);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    origin: `http://127.0.0.1:${server.address().port}`,
    setPage: (html) => {
      page.html = html;
    },
    close: () => new Promise((r) => server.close(r)),
  };
}

/** Resolves with the first `chat` event on `socket` that `match` accepts. */
function nextChat(socket, match) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no matching chat event')), WAIT_MS);
    const onChat = (evt, ack) => {
      if (typeof ack === 'function') ack({ ok: true });
      if (match(evt)) {
        clearTimeout(timer);
        socket.off('chat', onChat);
        resolve(evt);
      }
    };
    socket.on('chat', onChat);
  });
}

test('the 2020 client on another origin connects over polling, registers its name and chats with a 4.x client', async (t) => {
  // The page's origin must be known before the servers start (WEBCHAT_CORS_ORIGINS).
  const pageServer = await servePage();
  t.after(() => pageServer.close());
  const pageOrigin = pageServer.origin;
  const servers = await spawnOpenModeServers({ corsOrigins: pageOrigin });
  t.after(() => servers.stop());
  pageServer.setPage(legacyPage(servers.chatUrl, servers.profileUrl));

  const browser = await launchBrowser();
  t.after(() => browser.close());
  const context = await browser.newContext();
  const page = await context.newPage();
  const corsBlocked = [];
  page.on('console', (msg) => {
    if (/CORS|Access-Control/i.test(msg.text())) corsBlocked.push(msg.text());
  });
  const pollingResponses = [];
  page.on('response', (resp) => {
    if (resp.url().includes('/socket.io/') && resp.url().includes('transport=polling')) {
      pollingResponses.push(resp);
    }
  });

  // Bob on socket.io-client 4.x, open mode.
  const bob = io(servers.chatUrl, { transports: ['websocket'], forceNew: true, reconnection: false });
  t.after(() => bob.close());
  await new Promise((resolve, reject) => {
    bob.once('connect', resolve);
    bob.once('connect_error', reject);
  });
  bob.emit('join', 'bob');

  await page.goto(`${pageOrigin}/`);
  await page.evaluate(() => window.start('alice', 'Alice'));
  assert.equal(await page.evaluate(() => window.addStatus), 200, await page.evaluate(() => window.addBody));
  await page.waitForFunction(() => window.joined === true, null, { timeout: WAIT_MS });
  assert.deepEqual(corsBlocked, []);

  // The handshake came over long-polling, with the CORS answer a credentialed XHR needs.
  assert.equal(await page.evaluate(() => window.transports[0]), 'polling');
  assert.ok(pollingResponses.length > 0, 'no polling request seen');
  const headers = await pollingResponses[0].allHeaders();
  assert.equal(headers['access-control-allow-origin'], pageOrigin);
  assert.equal(headers['access-control-allow-credentials'], 'true');
  assert.match(pollingResponses[0].url(), /EIO=3/);

  // The profile service stored the name from the text/plain body.
  const found = await (await fetch(`${servers.profileUrl}/search/alice`)).json();
  assert.equal(found.Name, 'Alice');

  // 2020 client → Bob, then Bob's delivery receipt back to the page.
  const bobGets = nextChat(bob, (e) => e.EvtType === 'message' && e.MsgID === 'legacy-1');
  await page.evaluate(() => window.send('bob', 'legacy-1', 'hello from 2020'));
  const msg = await bobGets;
  assert.equal(msg.From, 'alice', 'the sender comes from the session, not the payload');
  assert.equal(msg.Body, 'hello from 2020');
  assert.ok(msg.Seq > 0);
  bob.emit('chat', { EvtType: 'delivery', To: 'alice', MsgID: 'legacy-1' });
  await page.waitForFunction(
    () => window.received.some((e) => e.EvtType === 'delivery' && e.MsgID === 'legacy-1' && e.From === 'bob'),
    null,
    { timeout: WAIT_MS },
  );

  // Bob → 2020 client; the page's receipt reaches Bob.
  const receipt = nextChat(bob, (e) => e.EvtType === 'delivery' && e.MsgID === 'modern-1');
  bob.emit('chat', { EvtType: 'message', To: 'alice', MsgID: 'modern-1', Body: 'hi from 4.x' });
  await page.waitForFunction(
    () => window.received.some((e) => e.EvtType === 'message' && e.MsgID === 'modern-1' && e.Body === 'hi from 4.x'),
    null,
    { timeout: WAIT_MS },
  );
  assert.equal((await receipt).From, 'alice');
  await page.waitForFunction(() => document.querySelectorAll('#log li').length >= 2, null, { timeout: WAIT_MS });
  assert.deepEqual(corsBlocked, []);
});
