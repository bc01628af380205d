'use strict';
// Channels in the web client (headless Chromium, real server on Redis): the channel list,
// history on open, live publications (HTML shown as text), publishing, recovery after the
// server restarts (each publication shown once, offsets consecutive), and the read-only
// guest view of a guest channel.
//
//   cargo build -p webchat -p webchat-profile --bins && cd tests/browser && npm ci &&
//   WEBCHAT_TEST_REDIS_URL=redis://… node --test channels.test.js

const assert = require('node:assert/strict');
const { after, before, describe, it } = require('node:test');

const { launchBrowser, startServer } = require('./helpers');

const WAIT_MS = Number(process.env.WEBCHAT_TEST_TIMEOUT_MS || 10000);
const PASSWORD = 'correct-horse-battery';
const ADMIN = 'browser-admin-token';
const RUN = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
const LOBBY = `lobby-${RUN}`;
const XSS = '<img src=x onerror="alert(document.domain)">';

let server;
let browser;
const dialogs = [];
const pageErrors = [];

async function rest(method, path, body) {
  const res = await fetch(`${server.url}api/v1${path}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  assert.ok(res.ok, `${method} ${path}: ${res.status}`);
  return res.json();
}

const publish = (channel, data) => rest('POST', `/channels/${channel}/publish`, { data });

async function newPage() {
  const context = await browser.newContext();
  const p = await context.newPage();
  p.setDefaultTimeout(WAIT_MS);
  p.on('dialog', (d) => {
    dialogs.push(d.message());
    d.dismiss().catch(() => {});
  });
  p.on('pageerror', (e) => pageErrors.push(e.message));
  return p;
}

/** The offsets shown in the channel log, in order. */
function shownOffsets(p) {
  return p.$$eval('#channel-log .channel-pub', (els) => els.map((e) => Number(e.dataset.offset)));
}

/** Waits until the log shows a publication with `text`. */
function waitForText(p, text) {
  return p.waitForFunction(
    (t) => [...document.querySelectorAll('#channel-log .channel-pub-data')].some((e) => e.textContent === t),
    text,
  );
}

describe('channels in the web client', () => {
  before(async () => {
    server = await startServer({ chatEnv: { WEBCHAT_GUESTS: 'true', WEBCHAT_ADMIN_TOKEN: ADMIN } });
    browser = await launchBrowser();
    await rest('PUT', `/admin/channels/${LOBBY}`, { guests: true, publish: 'server' });
  });
  after(async () => {
    if (browser) await browser.close();
    if (server) await server.stop();
  });

  it('shows general with its history, live publications and own posts, and recovers after a restart without gaps or duplicates', async () => {
    const first = await publish('general', `before-${RUN}`);
    const p = await newPage();
    await p.goto(server.url);
    await p.waitForSelector('#auth-view:not([hidden])');
    await p.click('#tab-signup');
    await p.fill('#auth-uid', `chan-${RUN}`);
    await p.fill('#auth-name', 'Chan');
    await p.fill('#auth-password', PASSWORD);
    await p.click('#auth-submit');
    await p.waitForSelector('#app-view:not([hidden])[data-conn="online"]');

    await p.click('#channel-list button[data-channel="general"]');
    await p.waitForSelector('#channel-view:not([hidden])');
    assert.match(p.url(), /#\/ch\/general$/);
    await waitForText(p, `before-${RUN}`);

    await publish('general', XSS);
    await waitForText(p, XSS);
    assert.equal(await p.$$eval('#channel-log img', (imgs) => imgs.length), 0, 'HTML is shown as text');

    await p.fill('#channel-input', `mine-${RUN}`);
    await p.press('#channel-input', 'Enter');
    await waitForText(p, `mine-${RUN}`);
    assert.equal(await p.inputValue('#channel-input'), '', 'the composer is cleared once acked');

    // The server restarts; what is published meanwhile arrives once, in order.
    await server.stopChat();
    await p.waitForSelector('#app-view:not([data-conn="online"])');
    await server.startChat();
    await publish('general', `missed-1-${RUN}`);
    await publish('general', `missed-2-${RUN}`);
    await p.waitForSelector('#app-view[data-conn="online"]');
    await waitForText(p, `missed-2-${RUN}`);
    const last = await publish('general', `live-${RUN}`);
    await waitForText(p, `live-${RUN}`);
    const offsets = await shownOffsets(p);
    const fromFirst = offsets.slice(offsets.indexOf(first.offset));
    assert.deepEqual(
      fromFirst,
      Array.from({ length: last.offset - first.offset + 1 }, (_, i) => first.offset + i),
      `each publication once, none missing: ${offsets}`,
    );

    // Back to the conversations and again to the channel: the page is kept.
    await p.goBack();
    await p.waitForSelector('#channel-view', { state: 'hidden' });
    await p.goForward();
    await p.waitForSelector('#channel-view:not([hidden])');
    await waitForText(p, `live-${RUN}`);
    assert.deepEqual(dialogs, []);
    assert.deepEqual(pageErrors, []);
  });

  it('a visitor reads a guest channel live and read-only, and is told when a channel is not for guests', async () => {
    await publish(LOBBY, `stock-${RUN}`);
    const p = await newPage();
    await p.goto(`${server.url}#/guest/${LOBBY}`);
    await p.waitForSelector('#guest-view');
    await waitForText(p, `stock-${RUN}`);
    assert.match(await p.getAttribute('#guest-view', 'data-uid'), /^guest-/);
    assert.equal(await p.$('#guest-view input, #guest-view textarea, #guest-view form'), null, 'read-only');
    assert.equal(await p.isVisible('#auth-view'), false);
    await publish(LOBBY, `sold-out-${RUN}`);
    await waitForText(p, `sold-out-${RUN}`);

    const general = await newPage();
    await general.goto(`${server.url}#/guest/general`);
    await general.waitForSelector('#channel-log .form-error');
    assert.match(await general.textContent('#channel-log .form-error'), /not open to guests/);
    assert.deepEqual(pageErrors, []);
  });
});
