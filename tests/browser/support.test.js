'use strict';
// The shop demo and the staff console in headless Chromium, as the README's two commands
// run them (one node on its embedded store, so the queue holds only this test's tickets;
// claims across nodes on Redis are tests/api/support.rs's): examples/shop-feed publishes stock through the REST publish
// API, the shop page shows it live, a shopper (a guest) asks about an out-of-stock item, a
// staff member claims the ticket in the console and answers, and the answer reaches the
// shopper. Screenshots: screenshots/support-queue.png, support-shop.png and support-console.png
// (committed).
//
//   cargo build -p webchat -p webchat-profile --bins && cd tests/browser && npm ci &&
//   node --test support.test.js

const assert = require('node:assert/strict');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { after, before, describe, it } = require('node:test');

const { REPO_ROOT, launchBrowser, startServer } = require('./helpers');

const WAIT_MS = Number(process.env.WEBCHAT_TEST_TIMEOUT_MS || 10000);
const ADMIN = 'browser-support-admin';
const FEED_KEY = 'browser-feed-secret';
const RUN = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
const STAFF = `staff-${RUN}`;
const STAFF_PASSWORD = 'staff-demo-password';
const SHOTS = path.join(__dirname, 'screenshots');

let server;
let browser;
let feed;
let feedOutput = '';
const pageErrors = [];

/** Starts examples/shop-feed against the server; resolves once it has published once. */
function startFeed() {
  return new Promise((resolve, reject) => {
    feed = spawn(process.execPath, [path.join(REPO_ROOT, 'examples/shop-feed/feed.mjs')], {
      env: {
        ...process.env,
        WEBCHAT_URL: server.url.replace(/\/$/, ''),
        WEBCHAT_SERVICE_KEY: FEED_KEY,
        WEBCHAT_ADMIN_TOKEN: ADMIN,
        DEMO_STAFF_UID: STAFF,
        FEED_INTERVAL_MS: '300',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const timer = setTimeout(() => reject(new Error(`the feed did not publish: ${feedOutput}`)), WAIT_MS);
    const take = (chunk) => {
      feedOutput += chunk;
      if (/offset \d+:/.test(feedOutput)) {
        clearTimeout(timer);
        resolve();
      }
    };
    feed.stdout.on('data', take);
    feed.stderr.on('data', take);
    feed.on('exit', (code) => reject(new Error(`the feed exited (${code}): ${feedOutput}`)));
  });
}

async function newPage() {
  const context = await browser.newContext({ viewport: { width: 1100, height: 720 } });
  const p = await context.newPage();
  p.setDefaultTimeout(WAIT_MS);
  p.on('pageerror', (e) => pageErrors.push(e.message));
  return p;
}

describe('the shop demo and the staff console', () => {
  before(async () => {
    server = await startServer({
      redis: false,
      chatEnv: { WEBCHAT_GUESTS: 'true', WEBCHAT_ADMIN_TOKEN: ADMIN, WEBCHAT_SERVICE_KEYS: `shop:${FEED_KEY}` },
    });
    browser = await launchBrowser();
    await startFeed();
  });
  after(async () => {
    if (feed) feed.kill('SIGTERM');
    if (browser) await browser.close();
    if (server) await server.stop();
  });

  it('shows live stock, and a shopper\'s question about an out-of-stock item is claimed and answered by staff', async () => {
    const shop = await newPage();
    await shop.goto(`${server.url}demo/shop/`);
    await shop.waitForSelector('.shop-item[data-item="kettle-red"]');
    // Stock is live: the feed's next changes show without a reload.
    const stockNow = () => shop.$$eval('.shop-stock', (els) => els.map((e) => e.dataset.stock).join(','));
    const first = await stockNow();
    await shop.waitForFunction((was) => [...document.querySelectorAll('.shop-stock')].map((e) => e.dataset.stock).join(',') !== was, first);
    assert.match(await shop.textContent('.shop-item[data-item="kettle-red"] .shop-stock'), /Out of stock/);

    // The shopper, a guest, asks about the red kettle.
    await shop.click('.shop-item[data-item="kettle-red"] button');
    await shop.waitForSelector('#shop-chat:not([hidden])');
    await shop.fill('#shop-input', `Will the red kettle be back? (${RUN})`);
    await shop.click('#shop-composer button[type="submit"]');
    await shop.waitForFunction(() => document.querySelector('#shop-chat-state').textContent.startsWith('Waiting for staff'));
    await shop.waitForSelector('#shop-messages .ticket-msg.mine');

    // Staff log in to the console, see the ticket waiting, claim it and read the question.
    const desk = await newPage();
    await desk.goto(`${server.url}support.html`);
    await desk.waitForSelector('#support-login:not([hidden])');
    await desk.fill('#support-uid', STAFF);
    await desk.fill('#support-password', STAFF_PASSWORD);
    await desk.click('#support-login-form button[type="submit"]');
    await desk.waitForSelector('#support-app:not([hidden])');
    // This shopper's ticket, found by its uid.
    const shopper = await shop.evaluate(() => JSON.parse(localStorage.getItem('webchat.shop.guest')).uid);
    const queued = desk.locator('#queue-open .ticket-item', { hasText: shopper });
    await queued.waitFor();
    assert.match(await queued.textContent(), /waiting \d+ s/);
    await desk.screenshot({ path: path.join(SHOTS, 'support-queue.png') });
    await queued.click();
    await desk.click('#ticket-claim');
    await desk.waitForSelector('#queue-mine .ticket-item');
    await desk.waitForFunction((run) => [...document.querySelectorAll('#ticket-messages .ticket-msg-body')]
      .some((e) => e.textContent.includes(run)), RUN);

    // The shopper hears that staff joined; the answer reaches them.
    await shop.waitForFunction((s) => document.querySelector('#shop-chat-state').textContent.startsWith(s), STAFF);
    await desk.fill('#ticket-input', 'Yes: a delivery comes on Tuesday.');
    await desk.click('#ticket-composer button[type="submit"]');
    await shop.waitForFunction(() => [...document.querySelectorAll('#shop-messages .ticket-msg-body')]
      .some((e) => e.textContent === 'Yes: a delivery comes on Tuesday.'));
    await desk.waitForFunction(() => [...document.querySelectorAll('#ticket-messages .ticket-msg.mine')].length === 1);
    await shop.screenshot({ path: path.join(SHOTS, 'support-shop.png') });
    await desk.screenshot({ path: path.join(SHOTS, 'support-console.png') });

    // Staff close it; the shopper's chat ends.
    await desk.click('#ticket-close');
    await shop.waitForFunction(() => document.querySelector('#shop-chat-state').textContent === 'This chat has ended.');

    // In the messenger (same login), staff find their way to the console.
    const messenger = await desk.context().newPage();
    await messenger.goto(server.url);
    await messenger.waitForSelector('#support-link:not([hidden])');
    assert.equal(await messenger.getAttribute('#support-link', 'href'), 'support.html');
    assert.deepEqual(pageErrors, []);
  });
});
