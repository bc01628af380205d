'use strict';
// Web Push in the web client (contract §13): no permission prompt on load; the bell asks,
// then the service worker registers and the browser's subscription reaches the server; the
// service worker shows a pushed notice and a click opens its conversation.
//
// Headless Chromium has no push service, so the page's PushManager is replaced by one that
// returns a subscription with real P-256 keys (the server checks them); everything else is
// the browser's own. The worker's handlers run in a sandbox with stand-ins for `self` and
// `clients`, since headless Chromium shows no notifications to click.
//
//   cargo build -p webchat -p webchat-profile --bins && cd tests/browser && npm ci &&
//   WEBCHAT_TEST_REDIS_URL=redis://… node --test push.test.js

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');
const { after, before, describe, it } = require('node:test');

const { launchBrowser, startServer } = require('./helpers');

const WAIT_MS = Number(process.env.WEBCHAT_TEST_TIMEOUT_MS || 10000);
const PASSWORD = 'correct-horse-battery';
const RUN = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
const SW_SOURCE = fs.readFileSync(path.join(__dirname, '..', '..', 'webclient', 'sw.js'), 'utf8');

/** Runs sw.js with stand-ins; → {fire(type, event), shown, opened, messages}. */
function loadWorker({ windows = [] } = {}) {
  const listeners = {};
  const shown = [];
  const opened = [];
  const messages = [];
  const clients = {
    matchAll: async () =>
      windows.map((url) => ({ url, postMessage: (m) => messages.push(m), focus: async () => 'focused' })),
    openWindow: async (url) => opened.push(url),
    claim: async () => {},
  };
  const self = {
    addEventListener: (type, fn) => (listeners[type] = fn),
    registration: { scope: 'https://chat.example/app/', showNotification: async (title, options) => shown.push({ title, options }) },
    clients,
    skipWaiting: () => {},
  };
  vm.runInNewContext(SW_SOURCE, { self, URL, console });
  return {
    shown,
    opened,
    messages,
    async fire(type, event) {
      const waits = [];
      listeners[type]({ ...event, waitUntil: (p) => waits.push(p) });
      await Promise.all(waits);
    },
  };
}

describe('the service worker', () => {
  it('shows a pushed notice with the sender as title, one per conversation', async () => {
    const sw = loadWorker();
    const data = { type: 'message.offline', fromName: 'Alice', preview: 'lunch?', conversation: 'alice' };
    await sw.fire('push', { data: { json: () => data } });
    assert.equal(sw.shown.length, 1);
    assert.equal(sw.shown[0].title, 'Alice');
    assert.equal(sw.shown[0].options.body, 'lunch?');
    assert.equal(sw.shown[0].options.tag, 'alice');
    assert.deepEqual({ ...sw.shown[0].options.data }, { conversation: 'alice' });
  });

  it('opens the conversation on click, in a new tab when none is open', async () => {
    const sw = loadWorker();
    let closed = false;
    const notification = { data: { conversation: 'group_x1' }, close: () => (closed = true) };
    await sw.fire('notificationclick', { notification });
    assert.ok(closed);
    assert.deepEqual(sw.opened, ['https://chat.example/app/#/c/group_x1']);
  });

  it('tells an open tab to open the conversation instead of opening another', async () => {
    const sw = loadWorker({ windows: ['https://chat.example/app/#/c/bob'] });
    await sw.fire('notificationclick', { notification: { data: { conversation: 'alice' }, close() {} } });
    assert.deepEqual(sw.opened, []);
    assert.deepEqual(sw.messages.map((m) => ({ ...m })), [{ type: 'open-conversation', conversation: 'alice' }]);
  });
});

describe('push subscription from the web client', () => {
  let server;
  let browser;

  before(async () => {
    server = await startServer({ chatEnv: { WEBCHAT_WEBHOOK_ALLOW_PRIVATE: 'true' } });
    browser = await launchBrowser();
  });

  after(async () => {
    if (browser) await browser.close();
    if (server) await server.stop();
  });

  it('asks for permission only from the bell, then registers the worker and posts the subscription', async () => {
    const context = await browser.newContext();
    const origin = new URL(server.url).origin;
    const ecdh = crypto.createECDH('prime256v1');
    ecdh.generateKeys();
    const fake = {
      endpoint: `http://127.0.0.1:9/push/${RUN}`,
      expirationTime: null,
      keys: { p256dh: ecdh.getPublicKey().toString('base64url'), auth: crypto.randomBytes(16).toString('base64url') },
    };
    await context.addInitScript((sub) => {
      window.__permissionAsks = 0;
      const ask = Notification.requestPermission.bind(Notification);
      Notification.requestPermission = (...args) => {
        window.__permissionAsks += 1;
        return ask(...args);
      };
      let current = null;
      const make = () => ({ endpoint: sub.endpoint, toJSON: () => sub, unsubscribe: async () => ((current = null), true) });
      PushManager.prototype.subscribe = async function subscribe(options) {
        window.__subscribeKey = options.applicationServerKey.length;
        current = make();
        return current;
      };
      PushManager.prototype.getSubscription = async function getSubscription() {
        return current;
      };
    }, fake);
    const p = await context.newPage();
    p.setDefaultTimeout(WAIT_MS);
    const posted = [];
    p.on('response', (res) => {
      if (res.url().endsWith('/api/v1/push/subscriptions') && res.request().method() === 'POST') posted.push(res.status());
    });
    const uid = `push-${RUN}`;
    await p.goto(server.url);
    await p.waitForSelector('#auth-view:not([hidden])');
    await p.click('#tab-signup');
    await p.fill('#auth-uid', uid);
    await p.fill('#auth-name', 'Pat');
    await p.fill('#auth-password', PASSWORD);
    await p.click('#auth-submit');
    await p.waitForSelector('#app-view:not([hidden])[data-conn="online"]');
    assert.equal(await p.evaluate(() => window.__permissionAsks), 0, 'no permission prompt on load');
    assert.equal(posted.length, 0);

    // The bell asks (headless Chromium answers no by itself); nothing is subscribed then.
    await p.click('#notify-btn');
    await p.waitForFunction(() => window.__permissionAsks === 1);
    assert.equal(posted.length, 0);
    // Allowed in the browser's settings: the bell turns them on without asking again.
    await context.grantPermissions(['notifications'], { origin });
    await p.click('#notify-btn');
    await p.waitForFunction(async () => {
      const reg = await navigator.serviceWorker.getRegistration();
      return Boolean(reg && reg.active && reg.active.scriptURL.endsWith('/sw.js'));
    });
    await p.waitForFunction(() => window.__subscribeKey === 65, null, { timeout: WAIT_MS });
    const deadline = Date.now() + WAIT_MS;
    while (posted.length === 0 && Date.now() < deadline) await p.waitForTimeout(20);
    assert.deepEqual(posted, [201], 'the subscription reached the server');
    const token = await p.evaluate(() => JSON.parse(localStorage.getItem('webchat.v1.session')).token);
    const res = await fetch(`${server.url}api/v1/push/subscriptions`, { headers: { authorization: `Bearer ${token}` } });
    const body = await res.json();
    assert.deepEqual(body.items.map((s) => s.endpoint), [fake.endpoint]);
    await context.close();
  });
});
