'use strict';
// The web client in a real headless Chromium against the real chat server and profile
// service (both on Redis): three users in separate browser contexts sign up through the
// UI, chat 1:1, watch ✓ → ✓✓ → read on the sender's side, see typing and presence, get a
// message sent while their page was closed (exactly once), get HTML/script payloads
// rendered as literal text, use two tabs at once, make a group of three (unread counts,
// notices for joins and departures), read their history from the server in a fresh
// browser, and see a profile edit arrive live. Screenshots go to
// tests/browser/screenshots/ and the desktop group chat to docs/webclient.png when
// WEBCHAT_UPDATE_DOCS_SCREENSHOT=1.
//
//   cargo build -p webchat -p webchat-profile --bins && cd tests/browser && npm ci &&
//   WEBCHAT_TEST_REDIS_URL=redis://… node --test

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { after, before, describe, it } = require('node:test');

const { REPO_ROOT, launchBrowser, startServer } = require('./helpers');

const SHOTS = path.join(__dirname, 'screenshots');
const DOCS_SHOT = path.join(REPO_ROOT, 'docs', 'webclient.png');
const WAIT_MS = Number(process.env.WEBCHAT_TEST_TIMEOUT_MS || 10000);
const PASSWORD = 'correct-horse-battery';
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

const XSS_SCRIPT = '<script>alert(1)</script>';
const XSS_IMG = '<img src=x onerror="alert(document.domain)">';

// Accounts live in Redis, which outlives a run: uids are unique per run.
const RUN = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
const U = { alice: `alice-${RUN}`, bob: `bob-${RUN}`, carol: `carol-${RUN}` };

let server;
let browser;
const log = { dialogs: [], pageErrors: [], requests: [], cspViolations: [] };
const ctx = {}; // browser contexts by user
const page = {}; // current page by user

/** Records what must not happen (dialogs, uncaught errors) and every request. */
function watch(p, who) {
  p.setDefaultTimeout(WAIT_MS);
  p.on('dialog', (d) => {
    log.dialogs.push(`${who}: ${d.type()} ${d.message()}`);
    d.dismiss().catch(() => {});
  });
  p.on('pageerror', (e) => log.pageErrors.push(`${who}: ${e.message}`));
  // Chromium reports what the Content-Security-Policy (header or meta) blocked on the console.
  p.on('console', (m) => {
    if (/Content Security Policy/i.test(m.text())) log.cspViolations.push(`${who}: ${m.text()}`);
  });
  p.on('request', (r) => log.requests.push(r.url()));
  return p;
}

async function newPage(who, viewport = DESKTOP) {
  const p = watch(await ctx[who].newPage(), who);
  await p.setViewportSize(viewport);
  page[who] = p;
  return p;
}

async function signUp(p, uid, name) {
  await p.goto(server.url);
  await p.waitForSelector('#auth-view:not([hidden])');
  await p.click('#tab-signup');
  await p.fill('#auth-uid', uid);
  await p.fill('#auth-name', name);
  await p.fill('#auth-password', PASSWORD);
  await p.click('#auth-submit');
  await waitOnline(p);
}

function waitOnline(p) {
  return p.waitForSelector('#app-view:not([hidden])[data-conn="online"]');
}

async function startChat(p, uid) {
  await p.click('#new-chat-btn');
  await p.fill('#new-chat-uid', uid);
  await p.press('#new-chat-uid', 'Enter');
  await p.waitForSelector(`#chat-view:not([hidden])[data-conv="${uid}"]`);
}

async function openConversation(p, uid) {
  await p.click(`#conv-list [data-conv="${uid}"]`);
  await p.waitForSelector(`#chat-view:not([hidden])[data-conv="${uid}"]`);
}

// A test sets up the view it starts from (below) instead of trusting where the test before
// left the page: when one test fails halfway, the next ones still test what they say rather
// than time out on a chat that was never opened.

/** The page of `who`, reopened (logged in by the stored token) if a failed test closed it. */
async function livePage(who, viewport = DESKTOP) {
  if (page[who] && !page[who].isClosed()) return page[who];
  const p = await newPage(who, viewport);
  await p.goto(server.url);
  await waitOnline(p);
  return p;
}

/** The whole conversation list in view (phones show a chat or the list; no filter). */
async function showList(p) {
  if (await p.isVisible('#back-btn')) await p.click('#back-btn');
  await p.waitForSelector('#conv-list', { state: 'visible' });
  if (await p.inputValue('#conv-filter')) await p.fill('#conv-filter', '');
}

/** `uid`'s conversation in view: opened unless it already is. */
async function showConversation(p, uid) {
  if (await p.isVisible(`#chat-view:not([hidden])[data-conv="${uid}"]`)) return;
  await showList(p);
  await openConversation(p, uid);
}

async function send(p, text) {
  await p.fill('#composer-input', text);
  await p.press('#composer-input', 'Enter');
}

/**
 * Waits until the first `selector` shows exactly `expected`. Names are such a text: a row
 * or a bubble is drawn at once, the name once the profile service has answered (until then
 * the uid stands in), so reading it right after the row appears is a race.
 */
async function waitText(p, selector, expected) {
  try {
    await p.waitForFunction(([s, want]) => document.querySelector(s)?.textContent === want, [selector, expected]);
  } catch (e) {
    const shown = await p.evaluate((s) => document.querySelector(s)?.textContent ?? null, selector).catch(() => 'unknown');
    throw new Error(`${selector}: wanted ${JSON.stringify(expected)}, shows ${JSON.stringify(shown)} (${e.message})`);
  }
}

/** Bubbles in the open conversation whose text is exactly `text`: [{out, status, text}]. */
function bubbles(p, text) {
  return p.evaluate(
    (t) =>
      [...document.querySelectorAll('#messages .msg')]
        .filter((m) => m.querySelector('.msg-text').textContent === t)
        .map((m) => ({ out: m.classList.contains('out'), status: m.dataset.status || null, text: m.querySelector('.msg-text').textContent })),
    text,
  );
}

/** Waits until exactly one bubble shows `text` (own: with status `status`). */
async function waitBubble(p, text, { status } = {}) {
  await p.waitForFunction(
    ([t, s]) => {
      const found = [...document.querySelectorAll('#messages .msg')].filter(
        (m) => m.querySelector('.msg-text').textContent === t,
      );
      return found.length === 1 && (!s || found[0].dataset.status === s);
    },
    [text, status || null],
  );
}

function unreadBadge(p, uid) {
  return p.evaluate((u) => {
    const row = document.querySelector(`#conv-list [data-conv="${u}"]`);
    if (!row) return null;
    const badge = row.querySelector('.badge');
    return badge ? badge.textContent : '';
  }, uid);
}

async function waitUnread(p, uid, expected) {
  try {
    await p.waitForFunction(
      ([u, want]) => {
        const row = document.querySelector(`#conv-list [data-conv="${u}"]`);
        if (!row) return false;
        const badge = row.querySelector('.badge');
        return (badge ? badge.textContent : '') === want;
      },
      [uid, expected],
    );
  } catch (e) {
    // Say what the badge showed instead: no row (null), no badge (''), or another count.
    const shown = await unreadBadge(p, uid).catch(() => 'unknown');
    throw new Error(`unread badge for ${uid}: wanted ${JSON.stringify(expected)}, shows ${JSON.stringify(shown)} (${e.message})`);
  }
}

async function openGroup(p) {
  await p.click('#conv-list [data-kind="group"]');
  await p.waitForSelector('#chat-view:not([hidden])[data-kind="group"]');
}

/** Waits until the own bubble `text` carries data-unread=`n` (members who have not read it). */
async function waitGroupUnread(p, text, n) {
  await p.waitForFunction(
    ([t, want]) => {
      const found = [...document.querySelectorAll('#messages .msg.out')].filter((m) => m.querySelector('.msg-text').textContent === t);
      return found.length === 1 && found[0].dataset.unread === want;
    },
    [text, String(n)],
  );
}

async function waitNotice(p, re) {
  await p.waitForFunction(
    (src) => [...document.querySelectorAll('#messages .notice')].some((n) => new RegExp(src).test(n.textContent)),
    re.source,
  );
}

function waitPresence(p, uid, state) {
  return p.waitForSelector(`#conv-list [data-conv="${uid}"] .presence[data-state="${state}"]`);
}

async function logIn(p, uid) {
  await p.goto(server.url);
  await p.waitForSelector('#auth-view:not([hidden])');
  await p.fill('#auth-uid', uid);
  await p.fill('#auth-password', PASSWORD);
  await p.click('#auth-submit');
  await waitOnline(p);
}

async function shot(p, name) {
  fs.mkdirSync(SHOTS, { recursive: true });
  const file = path.join(SHOTS, `${name}.png`);
  await p.screenshot({ path: file });
  return file;
}

describe('web client in Chromium', () => {
  before(async () => {
    server = await startServer();
    browser = await launchBrowser();
    for (const who of ['alice', 'bob', 'carol']) ctx[who] = await browser.newContext({ viewport: DESKTOP });
  });

  after(async () => {
    if (browser) await browser.close();
    if (server) await server.stop();
  });

  it('signs up three users through the UI', async () => {
    const a = await newPage('alice');
    await a.goto(server.url);
    await a.waitForSelector('#auth-view:not([hidden])');
    await a.click('#tab-signup');
    await a.waitForSelector('#auth-name-field:not([hidden])');
    await shot(a, 'auth');

    // A too-short password is refused in the form, before any request.
    await a.fill('#auth-uid', U.alice);
    await a.fill('#auth-password', 'short');
    await a.click('#auth-submit');
    await a.waitForSelector('#auth-error:not([hidden])');
    assert.match(await a.textContent('#auth-error'), /8 characters/);

    await signUp(a, U.alice, 'Alice');
    await signUp(await newPage('bob'), U.bob, 'Bob');
    await signUp(await newPage('carol'), U.carol, 'Carol');
    assert.equal(await a.textContent('#conn-label'), 'Online');
    // The name comes from the profile the chat server created at sign-up.
    await a.waitForFunction(() => document.querySelector('#me-uid').textContent === 'Alice');
    // Nobody has chats yet.
    assert.equal(await a.isVisible('#conv-empty'), true);
  });

  it('a taken uid gets a clear error', async () => {
    const tmp = await browser.newContext({ viewport: DESKTOP });
    const q = watch(await tmp.newPage(), 'taken');
    await q.goto(server.url);
    await q.click('#tab-signup');
    await q.fill('#auth-uid', U.bob);
    await q.fill('#auth-password', PASSWORD);
    await q.click('#auth-submit');
    await q.waitForSelector('#auth-error:not([hidden])');
    assert.match(await q.textContent('#auth-error'), /taken/);
    await tmp.close();
  });

  it('1:1 chat: sent → delivered while unread → read once the peer opens it', async () => {
    const a = page.alice;
    const b = page.bob;
    await startChat(a, U.bob);
    // The header shows the peer's profile name.
    await a.waitForFunction(() => document.querySelector('#chat-name').textContent === 'Bob');
    const hello = 'Hi Bob! Are we still on for the demo on Friday?';
    await send(a, hello);

    // Bob is online but has no conversation open: delivered, not read.
    await waitBubble(a, hello, { status: 'delivered' });
    await waitUnread(b, U.alice, '1');
    assert.deepEqual(await bubbles(a, hello), [{ out: true, status: 'delivered', text: hello }]);
    assert.match(await b.textContent(`#conv-list [data-conv="${U.alice}"] .conv-preview`), /Are we still on/);
    // Bob's page asks the profile service for Alice's name when her message arrives.
    await waitText(b, `#conv-list [data-conv="${U.alice}"] .conv-name`, 'Alice');

    // Bob opens it in his focused window: read on Alice's side, badge gone on Bob's.
    await openConversation(b, U.alice);
    await waitBubble(b, hello);
    await waitBubble(a, hello, { status: 'read' });
    await waitUnread(b, U.alice, '');
    assert.deepEqual(await bubbles(b, hello), [{ out: false, status: null, text: hello }]);
  });

  it('typing indicator and a reply', async () => {
    const a = page.alice;
    const b = page.bob;
    await showConversation(a, U.bob);
    await showConversation(b, U.alice);
    await b.click('#composer-input');
    await b.keyboard.type('Yes', { delay: 20 });
    await a.waitForFunction(() => document.querySelector('#chat-sub').textContent === 'typing…');
    await b.keyboard.type(' — 10:00 in the big room. I will bring the slides.');
    await b.keyboard.press('Enter');
    const reply = 'Yes — 10:00 in the big room. I will bring the slides.';
    await waitBubble(a, reply);
    // The reply made them mutual contacts: each sees the other online at once (issue 28; no
    // one reconnected, so no presence event came).
    await a.waitForSelector('#chat-presence[data-state="online"]:not([hidden])');
    await b.waitForSelector('#chat-presence[data-state="online"]:not([hidden])');
    // The message replaces the indicator.
    await a.waitForFunction(() => document.querySelector('#chat-sub').textContent !== 'typing…');
    // Both sides agree; Alice has the chat open, so Bob sees it read.
    await waitBubble(b, reply, { status: 'read' });

    await send(a, 'Perfect, see you there!');
    await waitBubble(a, 'Perfect, see you there!', { status: 'read' });

    // Carol writes to Alice meanwhile: an unread chat in Alice's list.
    await startChat(page.carol, U.alice);
    await send(page.carol, 'Lunch tomorrow? The new ramen place opened.');
    await waitUnread(a, U.carol, '1');
    await waitBubble(page.carol, 'Lunch tomorrow? The new ramen place opened.', { status: 'delivered' });

    // Newest first.
    const order = await a.$$eval('#conv-list [data-conv]', (rows) => rows.map((r) => r.dataset.conv));
    assert.deepEqual(order, [U.carol, U.bob]);
    await a.waitForSelector('#messages .msg.out[data-status="read"]');
    await shot(a, 'desktop-chat');
  });

  it('the conversation filter narrows the list (by name or uid)', async () => {
    const a = page.alice;
    await a.fill('#conv-filter', 'carol');
    await a.waitForFunction((u) => [...document.querySelectorAll('#conv-list [data-conv]')].map((r) => r.dataset.conv).join() === u, U.carol);
    await a.fill('#conv-filter', 'bob');
    await a.waitForFunction((u) => [...document.querySelectorAll('#conv-list [data-conv]')].map((r) => r.dataset.conv).join() === u, U.bob);
    await a.fill('#conv-filter', 'nobody-matches');
    await a.waitForSelector('#conv-empty:not([hidden])');
    await a.fill('#conv-filter', '');
    await a.waitForFunction(() => document.querySelectorAll('#conv-list [data-conv]').length === 2);
  });

  it('Block / Unblock on a 1:1 chat: kept by the server, shown again after a reload', async () => {
    const a = page.alice;
    await showConversation(a, U.carol);
    await a.waitForSelector('#block-btn:not([hidden])[data-blocked="false"]');
    await a.click('#block-btn');
    await a.waitForSelector('#block-btn[data-blocked="true"]');
    assert.equal((await a.textContent('#block-btn')).trim(), 'Unblock');
    // The block outlives the page: a fresh page reads it from GET /api/v1/blocks.
    await a.reload();
    await waitOnline(a);
    await showConversation(a, U.carol);
    await a.waitForSelector('#block-btn[data-blocked="true"]');
    await a.click('#block-btn');
    await a.waitForSelector('#block-btn[data-blocked="false"]');
    assert.equal((await a.textContent('#block-btn')).trim(), 'Block');
    // Each chat shows its own peer's state.
    await showConversation(a, U.bob);
    await a.waitForSelector('#block-btn:not([hidden])[data-blocked="false"]');
  });

  it('HTML and script in messages are shown as literal text', async () => {
    const a = page.alice;
    const b = page.bob;
    await openConversation(a, U.bob);
    await showConversation(b, U.alice);
    await send(a, XSS_SCRIPT);
    await send(a, XSS_IMG);
    await waitBubble(b, XSS_SCRIPT);
    await waitBubble(b, XSS_IMG);
    await waitBubble(a, XSS_IMG, { status: 'read' });

    for (const p of [a, b]) {
      assert.deepEqual((await bubbles(p, XSS_SCRIPT)).map((m) => m.text), [XSS_SCRIPT]);
      assert.deepEqual((await bubbles(p, XSS_IMG)).map((m) => m.text), [XSS_IMG]);
      // Nothing was parsed into elements, in the messages or in the list preview.
      assert.equal(await p.locator('#messages img, #messages script, #conv-list .conv-main img, #conv-list script').count(), 0);
    }
    assert.equal(await b.textContent(`#conv-list [data-conv="${U.alice}"] .conv-preview`), XSS_IMG);
    await shot(b, 'xss-literal');
    assert.deepEqual(log.dialogs, [], 'no alert/confirm/prompt may fire');
    assert.deepEqual(
      log.requests.filter((u) => new URL(u).pathname === '/x'),
      [],
      'the <img src=x> must not be loaded',
    );
  });

  it('right-to-left text and bidi controls in a message stay inside their bubble', async () => {
    const a = page.alice;
    const b = page.bob;
    await openConversation(a, U.bob);
    await showConversation(b, U.alice);
    const text = 'abc \u202Efed ghi';
    await send(a, text);
    await waitBubble(b, text);
    const isolated = await b.$$eval('#messages .msg .msg-text', (ms, t) => ms
      .filter((m) => m.textContent === t)
      .map((m) => ({ dir: m.getAttribute('dir'), bidi: getComputedStyle(m).unicodeBidi })), text);
    assert.deepEqual(isolated, [{ dir: 'auto', bidi: 'isolate' }]);
    const preview = await b.$eval(`#conv-list [data-conv="${U.alice}"] .conv-text bdi`, (e) => e.textContent);
    assert.equal(preview, text);
    for (const sel of ['#chat-name', `#conv-list [data-conv="${U.alice}"] .conv-name`]) {
      assert.equal(await b.$eval(sel, (e) => getComputedStyle(e).unicodeBidi), 'isolate', sel);
    }
  });

  it('store-and-forward: a message sent while the page is closed arrives once on reopen; presence follows', async () => {
    const a = page.alice;
    await showConversation(a, U.bob);
    await page.bob.close();
    // Bob's last socket is gone: Alice sees him offline.
    await waitPresence(a, U.bob, 'offline');
    const text = 'Bob, ping me when you are back online.';
    await send(a, text);
    await waitBubble(a, text, { status: 'sent' });
    assert.deepEqual(await bubbles(a, text), [{ out: true, status: 'sent', text }]);

    // Bob comes back on a phone-sized window: the stored token logs him straight in.
    const b = await newPage('bob', PHONE);
    await b.goto(server.url);
    await waitOnline(b);
    await waitPresence(a, U.bob, 'online');
    await waitUnread(b, U.alice, '1');
    // Alice was online all along (no presence event since): Bob's fresh page learns it from
    // the presence snapshot.
    await waitPresence(b, U.alice, 'online');
    await waitBubble(a, text, { status: 'delivered' });
    assert.equal(await b.isVisible('#chat-view'), false, 'phones show the list alone');
    await shot(b, 'phone-list');

    await openConversation(b, U.alice);
    assert.equal(await b.isVisible('#conv-list'), false, 'phones show the chat alone');
    await waitBubble(b, text);
    await waitBubble(a, text, { status: 'read' });
    await shot(b, 'phone-chat');

    // A reload replays nothing twice: same messages, each once.
    const before = await b.$$eval('#messages .msg', (ms) => ms.map((m) => m.dataset.key));
    await b.reload();
    await waitOnline(b);
    await b.waitForSelector(`#chat-view:not([hidden])[data-conv="${U.alice}"]`);
    await waitBubble(b, text);
    await b.waitForFunction((n) => document.querySelectorAll('#messages .msg').length >= n, before.length);
    const afterReload = await b.$$eval('#messages .msg', (ms) => ms.map((m) => m.dataset.key));
    assert.deepEqual(afterReload, before);
    assert.equal(new Set(afterReload).size, afterReload.length);

    // Back arrow returns to the list.
    await b.click('#back-btn');
    await b.waitForSelector('#conv-list', { state: 'visible' });
  });

  it('two tabs of one user: each event handled once, read state shared', async () => {
    const a = page.alice;
    const b1 = await livePage('bob', PHONE); // phone-sized, on the list
    await showList(b1);
    await showConversation(a, U.bob);
    const b2 = watch(await ctx.bob.newPage(), 'bob-tab2');
    await b2.goto(server.url);
    await waitOnline(b2);
    await b2.waitForSelector(`#conv-list [data-conv="${U.alice}"]`);

    // Both of Bob's sockets get the stored event; each tab shows it once, with one unread.
    const text = 'Same message, two tabs.';
    await send(a, text);
    await waitUnread(b1, U.alice, '1');
    await waitUnread(b2, U.alice, '1');
    await waitBubble(a, text, { status: 'delivered' });

    await openConversation(b2, U.alice);
    await waitBubble(b2, text);
    await waitBubble(a, text, { status: 'read' });
    await b1.bringToFront();
    await waitUnread(b1, U.alice, ''); // synced from the other tab
    await openConversation(b1, U.alice);
    await waitBubble(b1, text);

    // Bob's own message from tab 2 shows up in tab 1 (the server's live copy to other tabs).
    const mine = 'Sent from my other tab.';
    await send(b2, mine);
    // The client renders in animation frames, which a background tab may not get (a user
    // sees the other tab when they switch to it): bring it to the front first.
    await b1.bringToFront();
    await waitBubble(b1, mine);
    // Bob's window shows tab 2 (so it renders), then alice's window gets the focus (display
    // receipts are only sent from a focused window) and she reads it.
    await b2.bringToFront();
    await a.bringToFront();
    await waitBubble(a, mine);
    await waitBubble(b2, mine, { status: 'read' });
    // The other tab got the read receipt too.
    await b1.bringToFront();
    await waitBubble(b1, mine, { status: 'read' });
    for (const p of [b1, b2]) {
      const keys = await p.$$eval('#messages .msg', (ms) => ms.map((m) => m.dataset.key));
      assert.equal(new Set(keys).size, keys.length, 'no message twice');
    }
    await b2.close();
    await b1.click('#back-btn');
  });

  it('a group of three: create from the address book, add a member, unread counts, leave', async () => {
    const a = page.alice;
    const b = await livePage('bob', PHONE);
    const c = page.carol;
    await showList(b);
    await a.bringToFront();

    // Alice ticks Bob in the address book and names the group.
    await a.click('#new-chat-btn');
    await a.fill('#new-chat-uid', `bob-${RUN}`);
    // The address book answers the prefix: Bob alone.
    await a.waitForFunction((u) => [...document.querySelectorAll('#people-list [data-uid]')].map((li) => li.dataset.uid).join() === u, U.bob);
    await a.check(`#people-list [data-uid="${U.bob}"] input[type=checkbox]`);
    await a.fill('#group-name', 'Demo team');
    await a.click('#create-group-btn');
    await a.waitForSelector('#chat-view:not([hidden])[data-kind="group"]');
    await a.waitForFunction(() => document.querySelector('#chat-name').textContent === 'Demo team');
    await b.waitForSelector('#conv-list [data-kind="group"]');

    // She adds Carol from the member list: Bob sees the notice, Carol gets the group.
    await a.click('#chat-info-btn');
    await a.waitForSelector(`#member-list [data-uid="${U.bob}"]`);
    await a.fill('#add-member-uid', U.carol);
    await a.click('#add-member-btn');
    await a.waitForSelector(`#member-list [data-uid="${U.carol}"]`);
    await a.click('#chat-info-btn');
    await a.waitForSelector('#group-panel', { state: 'hidden' });
    await c.waitForSelector('#conv-list [data-kind="group"]');
    await openGroup(b);
    await waitNotice(b, /Alice added Carol/);
    await b.click('#back-btn');

    // Two members have not read it, then one, then nobody.
    const text = 'Welcome to the demo team! Slides are in the shared folder.';
    await send(a, text);
    await waitGroupUnread(a, text, 2);
    await a.waitForSelector('#messages .msg.out[data-status="delivered"]');
    const gid = await a.getAttribute('#chat-view', 'data-conv');
    await waitUnread(b, gid, '1');
    await waitUnread(c, gid, '1');

    await b.bringToFront();
    await openGroup(b);
    await waitBubble(b, text);
    await waitGroupUnread(a, text, 1);
    await waitUnread(b, gid, '');

    await c.bringToFront();
    await openGroup(c);
    await waitBubble(c, text);
    // Group messages name their sender.
    await waitText(c, '#messages .msg.in .msg-from', 'Alice');
    await waitBubble(a, text, { status: 'read' });
    await waitGroupUnread(a, text, 0);

    // Bob answers while Carol looks at another chat: Alice sees who wrote it, Bob that
    // one member (Carol) has not read it.
    await openConversation(c, U.alice);
    const answer = 'Thanks! I will add my notes before Friday.';
    await b.bringToFront();
    await send(b, answer);
    await a.bringToFront();
    await waitBubble(a, answer);
    await waitText(a, '#messages .msg.in .msg-from', 'Bob');
    await waitGroupUnread(b, answer, 1);
    const file = await shot(a, 'group-chat');
    // The README's picture is refreshed only on request, so a test run leaves the tree clean.
    if (process.env.WEBCHAT_UPDATE_DOCS_SCREENSHOT === '1') {
      fs.mkdirSync(path.dirname(DOCS_SHOT), { recursive: true });
      fs.copyFileSync(file, DOCS_SHOT);
    }

    // Carol leaves: everyone sees it, and her composer is gone.
    await openGroup(c);
    await c.click('#chat-info-btn');
    await c.click('#leave-group-btn');
    await c.click('#leave-confirm-btn'); // leaving asks first
    await c.waitForSelector('#composer', { state: 'hidden' });
    await waitNotice(a, /Carol left/);
    await a.click('#chat-info-btn');
    await a.waitForSelector(`#member-list [data-uid="${U.bob}"]`);
    await a.waitForFunction((u) => !document.querySelector(`#member-list [data-uid="${u}"]`), U.carol);
    await a.click('#chat-info-btn');
  });

  it('history comes from the server: a fresh browser (no localStorage) shows old messages, older pages on scroll', async () => {
    const a = page.alice;
    // 35 messages to Carol: more than one page (30).
    await openConversation(a, U.carol);
    for (let i = 1; i <= 35; i++) await send(a, `Backlog message ${i}`);
    await waitBubble(a, 'Backlog message 35');
    await a.waitForFunction(() => [...document.querySelectorAll('#messages .msg.out')].every((m) => m.dataset.status !== 'sending'));

    const fresh = await browser.newContext({ viewport: DESKTOP });
    const q = watch(await fresh.newPage(), 'alice-fresh');
    page.aliceFresh = q;
    ctx.aliceFresh = fresh;
    await logIn(q, U.alice);
    assert.equal(await q.evaluate(() => Object.keys(localStorage).filter((k) => k.includes('.m.') || k.endsWith('.convs')).length), 0);
    await q.waitForSelector(`#conv-list [data-conv="${U.bob}"]`);
    await q.waitForSelector(`#conv-list [data-conv="${U.carol}"]`);
    await q.waitForSelector('#conv-list [data-kind="group"]');

    await openConversation(q, U.bob);
    await waitBubble(q, 'Hi Bob! Are we still on for the demo on Friday?', { status: 'read' });
    await waitBubble(q, 'Yes — 10:00 in the big room. I will bring the slides.');
    await waitBubble(q, XSS_SCRIPT, { status: 'read' });
    assert.equal(await q.locator('#messages script, #messages img').count(), 0);

    await openConversation(q, U.carol);
    await waitBubble(q, 'Backlog message 35');
    assert.equal((await bubbles(q, 'Backlog message 1')).length, 0, 'only the newest page at first');
    await q.waitForSelector('#load-older');
    await q.$eval('#messages', (el) => { el.scrollTop = 0; el.dispatchEvent(new Event('scroll')); });
    await waitBubble(q, 'Backlog message 1');
    assert.notEqual((await bubbles(q, 'Backlog message 1'))[0].status, 'sending');
    await waitBubble(q, 'Lunch tomorrow? The new ramen place opened.');
    await q.waitForSelector('#load-older', { state: 'detached' });
    const texts = await q.$$eval('#messages .msg .msg-text', (ms) => ms.map((m) => m.textContent));
    assert.equal(new Set(texts).size, texts.length, 'no message twice');
  });

  it('a profile edit reaches the other user live', async () => {
    const q = page.aliceFresh;
    const b = await livePage('bob', PHONE);
    await showConversation(q, U.bob);
    await b.bringToFront();
    await showList(b); // a phone: the list has the profile button
    await b.click('#profile-btn');
    await b.waitForSelector('#profile-panel:not([hidden])');
    await b.fill('#profile-name', 'Robert');
    await b.fill('#profile-status', 'At the demo');
    await b.click('#profile-save');
    await b.waitForSelector('#profile-panel', { state: 'hidden' });
    await b.waitForFunction(() => document.querySelector('#me-uid').textContent === 'Robert');

    // Alice's page learns it from a `profile` event: list row and chat header.
    await q.bringToFront();
    await q.waitForFunction((u) => document.querySelector(`#conv-list [data-conv="${u}"] .conv-name`).textContent === 'Robert', U.bob);
    await q.waitForFunction(() => document.querySelector('#chat-name').textContent === 'Robert');
    await q.waitForFunction(() => document.querySelector('#chat-sub').textContent.includes('At the demo'));
    await shot(q, 'profile-live');
  });

  it('without the profile service, names fall back to the sign-up names', async () => {
    const down = await browser.newContext({ viewport: PHONE });
    // Every request to the profile service fails, as if it were not running.
    await down.route(`${server.profileUrl}/**`, (route) => route.abort('connectionrefused'));
    const q = watch(await down.newPage(), 'carol-no-profiles');
    const failed = [];
    q.on('requestfailed', (r) => failed.push(r.url()));
    await logIn(q, U.carol);
    await q.waitForFunction((u) => document.querySelector(`#conv-list [data-conv="${u}"] .conv-name`)?.textContent === 'Alice', U.alice);
    await q.waitForFunction(() => document.querySelector('#me-uid').textContent === 'Carol');
    assert.ok(failed.some((u) => u.startsWith(server.profileUrl)), 'the profile service was tried');
    await openConversation(q, U.alice);
    await waitBubble(q, 'Backlog message 35');
    await down.close();
  });

  it('log out and log back in', async () => {
    const a = page.alice;
    await a.bringToFront();
    await a.click('#logout-btn');
    await a.waitForSelector('#auth-view:not([hidden])');
    assert.equal(await a.evaluate(() => localStorage.getItem('webchat.v1.session')), null);
    // The login tab is the default.
    await a.fill('#auth-uid', U.alice);
    await a.fill('#auth-password', 'wrong-password!');
    await a.click('#auth-submit');
    await a.waitForSelector('#auth-error:not([hidden])');
    assert.match(await a.textContent('#auth-error'), /Wrong user id or password/);
    await a.fill('#auth-password', PASSWORD);
    await a.click('#auth-submit');
    await waitOnline(a);
    await a.waitForFunction(() => document.querySelectorAll('#conv-list [data-conv]').length === 3);
    await openConversation(a, U.bob);
    await waitBubble(a, 'Hi Bob! Are we still on for the demo on Friday?', { status: 'read' });
    // localStorage holds the session and a Seq, no history.
    const keys = await a.evaluate(() => Object.keys(localStorage));
    assert.deepEqual(keys.filter((k) => !/^webchat\.v1\.(session|u\.[^.]+(\.[^.]+)*\.seq)$/.test(k)), []);
  });

  it('reconnect: the chat server restarts; the state is shown, a message written meanwhile is sent once', async () => {
    const a = page.alice;
    const b = await livePage('bob', PHONE);
    await showList(b); // no chat open: the message arrives unread
    await showConversation(a, U.bob);
    await a.bringToFront();
    await server.stopChat();
    await a.waitForSelector('#app-view:not([data-conn="online"])');
    await a.waitForSelector('#conn-banner:not([hidden])');
    const text = 'Written while the server was down.';
    await send(a, text);
    await waitBubble(a, text, { status: 'sending' });

    await server.startChat();
    // socket.io retries with a growing delay (at most 8 s).
    await a.waitForSelector('#app-view[data-conn="online"]', { timeout: 30000 });
    await a.waitForSelector('#conn-banner', { state: 'hidden' });
    await waitBubble(a, text, { status: 'delivered' });
    await b.waitForSelector('#app-view[data-conn="online"]', { timeout: 30000 });
    await b.bringToFront();
    await waitUnread(b, U.alice, '1');
    await openConversation(b, U.alice);
    await waitBubble(b, text);
    await a.bringToFront();
    await waitBubble(a, text, { status: 'read' });
  });

  it('stored events are acked cumulatively: one `ack {Seq}`, no socket.io ack per event', async () => {
    const dave = `dave-${RUN}`;
    const c = await browser.newContext({ viewport: DESKTOP });
    const d = watch(await c.newPage(), 'dave');
    // Everything Dave's page sends: websocket frames, and polling POSTs before the upgrade
    // (several packets per POST, separated by \x1e).
    const sent = [];
    let ackSeen;
    const firstAck = new Promise((resolve) => {
      ackSeen = resolve;
    });
    const note = (packet) => {
      sent.push(packet);
      const m = /^42\["ack",\{"Seq":(\d+)\}\]$/.exec(packet);
      if (m && Number(m[1]) >= 3) ackSeen(Number(m[1]));
    };
    d.on('websocket', (ws) =>
      ws.on('framesent', (f) => {
        if (typeof f.payload === 'string') note(f.payload);
      }),
    );
    d.on('request', (r) => {
      if (r.method() === 'POST' && r.url().includes('/socket.io/')) {
        for (const packet of String(r.postData() || '').split('\x1e')) note(packet);
      }
    });
    await signUp(d, dave, 'Dave');

    const a = await livePage('alice');
    await a.bringToFront();
    await startChat(a, dave);
    const texts = ['Cumulative one', 'Cumulative two', 'Cumulative three'];
    for (const text of texts) await send(a, text);
    await waitBubble(a, texts[2], { status: 'delivered' });
    await waitUnread(d, U.alice, '3');
    // An `ack` covering all three (Seq 3 at least: Dave's first stored events), within the
    // contract's second after they arrived.
    const seq = await Promise.race([
      firstAck,
      new Promise((_, reject) => setTimeout(() => reject(new Error(`no ack frame in: ${sent.join(' | ')}`)), WAIT_MS)),
    ]);
    assert.ok(seq >= 3, `acked up to Seq ${seq}`);
    // Socket.io acks from the client are packets of type 3 (`43<id>[…]`): none.
    assert.deepEqual(
      sent.filter((p) => p.startsWith('43')),
      [],
      'no per-event acks',
    );
    await c.close();
  });

  it('no dialogs and no uncaught page errors anywhere', () => {
    assert.deepEqual(log.dialogs, []);
    assert.deepEqual(log.pageErrors, []);
  });

  it('the page is served with the security headers and nothing broke the CSP', async () => {
    const res = await fetch(server.url);
    const csp = res.headers.get('content-security-policy') || '';
    assert.match(csp, /frame-ancestors 'none'/);
    assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
    assert.equal(res.headers.get('referrer-policy'), 'no-referrer');
    assert.deepEqual(log.cspViolations, []);
  });
});
