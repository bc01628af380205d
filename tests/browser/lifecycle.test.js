'use strict';
// Message lifecycle (contract §11) in the web client, in a real headless Chromium: two users
// in separate browser contexts (and a second tab of one of them) reply (quoted excerpt,
// click to jump), edit (marked "edited", earlier versions shown), react (counts and who
// reacted, toggled off again) and delete (a tombstone), live on every page, and all of it
// is still there after a reload (from the server's history).
//
//   cargo build -p webchat -p webchat-profile --bins && cd tests/browser && npm ci &&
//   WEBCHAT_TEST_REDIS_URL=redis://… node --test lifecycle.test.js

const assert = require('node:assert/strict');
const { after, before, describe, it } = require('node:test');

const { launchBrowser, startServer } = require('./helpers');

const WAIT_MS = Number(process.env.WEBCHAT_TEST_TIMEOUT_MS || 10000);
const PASSWORD = 'correct-horse-battery';
const RUN = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
const U = { alice: `lc-alice-${RUN}`, bob: `lc-bob-${RUN}` };

let server;
let browser;
const problems = [];
const ctx = {};

function watch(p, who) {
  p.setDefaultTimeout(WAIT_MS);
  p.on('dialog', (d) => {
    problems.push(`${who}: dialog ${d.message()}`);
    d.dismiss().catch(() => {});
  });
  p.on('pageerror', (e) => problems.push(`${who}: ${e.message}`));
  p.on('console', (m) => {
    if (/Content Security Policy/i.test(m.text())) problems.push(`${who}: ${m.text()}`);
  });
  return p;
}

async function newPage(who) {
  return watch(await ctx[who].newPage(), who);
}

function waitOnline(p) {
  return p.waitForSelector('#app-view:not([hidden])[data-conn="online"]');
}

async function signUp(p, uid) {
  await p.goto(server.url);
  await p.waitForSelector('#auth-view:not([hidden])');
  await p.click('#tab-signup');
  await p.fill('#auth-uid', uid);
  await p.fill('#auth-name', uid.split('-')[1]);
  await p.fill('#auth-password', PASSWORD);
  await p.click('#auth-submit');
  await waitOnline(p);
}

async function openChat(p, uid) {
  if (await p.isVisible(`#chat-view:not([hidden])[data-conv="${uid}"]`)) return;
  await p.click(`#conv-list [data-conv="${uid}"]`);
  await p.waitForSelector(`#chat-view:not([hidden])[data-conv="${uid}"]`);
}

async function reload(p, peer) {
  await p.reload();
  await waitOnline(p);
  await openChat(p, peer);
}

async function send(p, text) {
  await p.fill('#composer-input', text);
  await p.press('#composer-input', 'Enter');
}

/** The bubble whose text (or whose original text, for `msgid`) is `text`. */
function bubble(p, text) {
  return p.locator('#messages .msg', { has: p.locator('.msg-text', { hasText: text }) });
}

async function action(p, text, name) {
  const b = bubble(p, text);
  await b.hover();
  await b.locator(`[data-lc-action="${name}"]`).click();
}

/**
 * Waits until the bubble with MsgID `id` shows `want`: any of text, edited, deleted, flash,
 * actions (booleans) and reactions ({emoji: count}, 0 for none).
 */
function waitMsg(p, id, want) {
  return p.waitForFunction(
    ([msgid, w]) => {
      const el = document.querySelector(`#messages .msg[data-msgid="${CSS.escape(msgid)}"]`);
      if (!el) return false;
      const state = {
        text: el.querySelector('.msg-text').textContent,
        edited: Boolean(el.querySelector('.msg-edited')),
        deleted: el.classList.contains('deleted'),
        flash: el.classList.contains('flash'),
        actions: Boolean(el.querySelector('.msg-actions')),
      };
      for (const [k, v] of Object.entries(w)) {
        if (k === 'reactions') {
          for (const [emoji, n] of Object.entries(v)) {
            const chip = el.querySelector(`.reaction[data-emoji="${emoji}"]`);
            if (n === 0 ? chip : !chip || chip.dataset.count !== String(n)) return false;
          }
        } else if (state[k] !== v) return false;
      }
      return true;
    },
    [id, want],
  );
}

describe('web client: replies, edits, deletes, reactions', () => {
  before(async () => {
    server = await startServer();
    browser = await launchBrowser();
    for (const who of ['alice', 'bob']) ctx[who] = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  });

  after(async () => {
    if (browser) await browser.close();
    if (server) await server.stop();
  });

  it('reply, edit, react and delete between two users, live and after a reload', async () => {
    const a = await newPage('alice');
    const b = await newPage('bob');
    await signUp(a, U.alice);
    await signUp(b, U.bob);
    await a.click('#new-chat-btn');
    await a.fill('#new-chat-uid', U.bob);
    await a.press('#new-chat-uid', 'Enter');
    await a.waitForSelector(`#chat-view:not([hidden])[data-conv="${U.bob}"]`);
    await send(a, 'helo wrold');
    await b.waitForSelector(`#conv-list [data-conv="${U.alice}"]`);
    await openChat(b, U.alice);
    await bubble(b, 'helo wrold').waitFor();
    const original = await bubble(a, 'helo wrold').getAttribute('data-msgid');
    // A second tab of alice's sees everything live too.
    const a2 = await newPage('alice');
    await a2.goto(server.url);
    await waitOnline(a2);
    await openChat(a2, U.bob);
    await bubble(a2, 'helo wrold').waitFor();

    // Bob replies: the quote shows the excerpt on every page.
    await action(b, 'helo wrold', 'reply');
    await b.waitForSelector('#compose-context:not([hidden])');
    assert.match(await b.textContent('#compose-context'), /helo wrold/);
    await send(b, 'what did you mean?');
    for (const p of [a, a2, b]) {
      const reply = bubble(p, 'what did you mean?');
      await reply.waitFor();
      await reply.locator('.msg-quote', { hasText: 'helo wrold' }).waitFor();
    }
    await b.waitForSelector('#compose-context', { state: 'hidden' });

    // Alice edits: "edited" everywhere, the earlier text among the versions.
    await action(a, 'helo wrold', 'edit');
    assert.equal(await a.inputValue('#composer-input'), 'helo wrold');
    await a.fill('#composer-input', 'hello world');
    await a.press('#composer-input', 'Enter');
    for (const p of [a, a2, b]) {
      await waitMsg(p, original, { text: 'hello world', edited: true });
    }
    // The reply's quote follows the edit.
    await bubble(b, 'what did you mean?').locator('.msg-quote', { hasText: 'hello world' }).waitFor();

    // Reactions: bob 👍, alice 👍 too (count 2, who reacted in the title), then bob ❤️ and
    // takes it back.
    await action(b, 'hello world', 'react');
    await b.click('.reaction-chooser:not([hidden]) [data-emoji="👍"]');
    await waitMsg(a, original, { reactions: { '👍': 1 } });
    await bubble(a, 'hello world').locator('.reaction[data-emoji="👍"]').click();
    for (const p of [a, a2, b]) await waitMsg(p, original, { reactions: { '👍': 2 } });
    const title = await bubble(b, 'hello world').locator('.reaction[data-emoji="👍"]').getAttribute('title');
    assert.match(title, /You/);
    assert.match(title, /alice/);
    await action(b, 'hello world', 'react');
    await b.click('.reaction-chooser:not([hidden]) [data-emoji="❤️"]');
    await waitMsg(a2, original, { reactions: { '❤️': 1 } });
    await bubble(b, 'hello world').locator('.reaction[data-emoji="❤️"]').click();
    for (const p of [a, a2, b]) await waitMsg(p, original, { reactions: { '❤️': 0 } });

    // A message to take back.
    await send(a, 'sent by mistake');
    await bubble(b, 'sent by mistake').waitFor();
    const mistake = await bubble(a, 'sent by mistake').getAttribute('data-msgid');

    // After a reload, everything comes back from the server's history.
    await reload(a, U.bob);
    await reload(b, U.alice);
    for (const p of [a, b]) {
      await waitMsg(p, original, { text: 'hello world', edited: true });
      await waitMsg(p, original, { reactions: { '👍': 2 } });
      await waitMsg(p, original, { reactions: { '❤️': 0 } });
      await bubble(p, 'what did you mean?').locator('.msg-quote', { hasText: 'hello world' }).waitFor();
    }
    await bubble(b, 'hello world').locator('.msg-edited').click();
    await bubble(b, 'hello world').locator('.msg-versions', { hasText: 'helo wrold' }).waitFor();

    // Clicking the quote jumps to the message replied to.
    await bubble(b, 'what did you mean?').locator('.msg-quote').click();
    await waitMsg(b, original, { flash: true });

    // Alice deletes: a tombstone everywhere, also after another reload.
    await action(a, 'sent by mistake', 'delete');
    for (const p of [a, a2, b]) {
      await waitMsg(p, mistake, { deleted: true, text: 'This message was deleted', actions: false });
    }
    await reload(b, U.alice);
    await waitMsg(b, mistake, { deleted: true, text: 'This message was deleted' });
    assert.deepEqual(problems, []);
  });
});
