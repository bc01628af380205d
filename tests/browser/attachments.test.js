'use strict';
// Attachments in the web client, in Chromium against the real chat server (on Redis):
// alice attaches a photo with the composer's file picker (upload progress, then "Ready"),
// sends it; bob sees its thumbnail appear in the conversation and opens it in the viewer,
// which shows the full image; a text file dropped on the chat reaches bob as a download
// under its name. No dialogs, page errors or Content-Security-Policy
// violations on either side. The conversation and the viewer are saved as
// screenshots/attachments-thumbnail.png and attachments-viewer.png (committed).
//
//   cargo build -p webchat -p webchat-profile --bins && cd tests/browser && npm ci &&
//   WEBCHAT_TEST_REDIS_URL=redis://… node --test attachments.test.js

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const zlib = require('node:zlib');
const { after, before, describe, it } = require('node:test');

const { launchBrowser, startServer } = require('./helpers');

const SHOTS = path.join(__dirname, 'screenshots');
const WAIT_MS = Number(process.env.WEBCHAT_TEST_TIMEOUT_MS || 10000);
const PASSWORD = 'correct-horse-battery';
const RUN = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
const U = { alice: `alice-att-${RUN}`, bob: `bob-att-${RUN}` };

function crc32(buf) {
  let crc = 0xffffffff;
  for (const b of buf) {
    crc ^= b;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0xedb88320 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

/** A width×height RGB PNG: a gradient with a dark diagonal band (something to look at). */
function png(width, height) {
  const raw = Buffer.alloc((width * 3 + 1) * height);
  for (let y = 0; y < height; y++) {
    const row = y * (width * 3 + 1);
    for (let x = 0; x < width; x++) {
      const band = Math.abs(x - y * (width / height)) < 20;
      raw[row + 1 + x * 3] = band ? 30 : Math.round((x / width) * 255);
      raw[row + 2 + x * 3] = band ? 30 : Math.round((y / height) * 255);
      raw[row + 3 + x * 3] = band ? 30 : 180;
    }
  }
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const typed = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(typed));
    return Buffer.concat([len, typed, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

let server;
let browser;
const problems = [];
const page = {};

async function newPage(ctx, who) {
  const p = await ctx.newPage();
  p.setDefaultTimeout(WAIT_MS);
  p.on('dialog', (d) => {
    problems.push(`${who}: dialog ${d.message()}`);
    d.dismiss().catch(() => {});
  });
  p.on('pageerror', (e) => problems.push(`${who}: ${e.message}`));
  p.on('console', (m) => {
    if (/Content Security Policy/i.test(m.text())) problems.push(`${who}: ${m.text()}`);
  });
  page[who] = p;
  return p;
}

/**
 * waitForFunction, but a timeout with page errors recorded fails on those errors: a script
 * that throws while rendering leaves the page waiting, and the error says why.
 */
async function untilOrPageError(p, fn) {
  try {
    await p.waitForFunction(fn);
  } catch (e) {
    assert.deepEqual(problems, [], `page errors while waiting (${e.message.split('\n')[0]})`);
    throw e;
  }
}

async function signUp(p, uid) {
  await p.goto(server.url);
  await p.waitForSelector('#auth-view:not([hidden])');
  await p.click('#tab-signup');
  await p.fill('#auth-uid', uid);
  await p.fill('#auth-name', uid.split('-')[0]);
  await p.fill('#auth-password', PASSWORD);
  await p.click('#auth-submit');
  await p.waitForSelector('#app-view:not([hidden])[data-conn="online"]');
}

describe('attachments in the web client', () => {
  before(async () => {
    server = await startServer();
    browser = await launchBrowser();
    for (const who of ['alice', 'bob']) {
      const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
      await signUp(await newPage(ctx, who), U[who]);
    }
  });

  after(async () => {
    if (browser) await browser.close();
    if (server) await server.stop();
  });

  it('sends a photo whose thumbnail appears on the other side and opens in the viewer', async () => {
    const a = page.alice;
    const b = page.bob;
    await a.click('#new-chat-btn');
    await a.fill('#new-chat-uid', U.bob);
    await a.press('#new-chat-uid', 'Enter');
    await a.waitForSelector(`#chat-view:not([hidden])[data-conv="${U.bob}"]`);

    await a.setInputFiles('#attach-input', { name: 'shelf.png', mimeType: 'image/png', buffer: png(900, 600) });
    await a.waitForSelector('#attach-tray:not([hidden]) .attach-item.done');
    assert.equal(await a.textContent('#attach-tray .attach-name'), 'shelf.png');
    await a.fill('#composer-input', 'the shelf');
    await a.waitForSelector('#send-btn:not([disabled])');
    await a.click('#send-btn');
    // The sender's own bubble shows the thumbnail too; the tray is empty again.
    await a.waitForFunction(() => {
      const img = document.querySelector('#messages .msg.out .attachment-thumb');
      return img && img.complete && img.naturalWidth > 0;
    });
    assert.equal(await a.isVisible('#attach-tray'), false);

    await b.click(`#conv-list [data-conv="${U.alice}"]`);
    await b.waitForSelector(`#chat-view:not([hidden])[data-conv="${U.alice}"]`);
    await b.waitForFunction(() => {
      const img = document.querySelector('#messages .msg.in .attachment-thumb');
      return img && img.complete && img.naturalWidth > 0;
    });
    const thumb = await b.$eval('#messages .msg.in .attachment-thumb', (img) => [img.naturalWidth, img.naturalHeight]);
    assert.deepEqual(thumb, [320, 213], 'the thumbnail, not the original');
    assert.match(await b.textContent('#messages .msg.in .msg-text'), /the shelf/);
    fs.mkdirSync(SHOTS, { recursive: true });
    await b.screenshot({ path: path.join(SHOTS, 'attachments-thumbnail.png') });

    await b.click('#messages .msg.in .attachment');
    await b.waitForFunction(() => {
      const img = document.querySelector('#attachment-viewer .viewer-img');
      return img && img.complete && img.naturalWidth > 0;
    });
    const full = await b.$eval('#attachment-viewer .viewer-img', (img) => [img.naturalWidth, img.naturalHeight, img.alt]);
    assert.deepEqual(full, [900, 600, 'shelf.png']);
    await b.screenshot({ path: path.join(SHOTS, 'attachments-viewer.png') });
    await b.keyboard.press('Escape');
    await b.waitForSelector('#attachment-viewer', { state: 'detached' });

    assert.deepEqual(problems, []);
  });

  it('takes a dropped file and offers it to the other side as a download', async () => {
    const a = page.alice;
    const b = page.bob;
    const drop = await a.evaluateHandle(() => {
      const dt = new DataTransfer();
      dt.items.add(new File(['aisle 4, top shelf\n'], 'where.txt', { type: 'text/plain' }));
      return dt;
    });
    await a.dispatchEvent('#chat-view', 'dragenter', { dataTransfer: drop });
    await a.dispatchEvent('#chat-view', 'drop', { dataTransfer: drop });
    await a.waitForSelector('#attach-tray:not([hidden]) .attach-item.done');
    await a.waitForSelector('#send-btn:not([disabled])');
    await a.click('#send-btn');
    // Text has no thumbnail: the tile offers the download.
    await untilOrPageError(b, () => [...document.querySelectorAll('#messages .msg.in .attachment.file')].length === 1);
    const [download] = await Promise.all([
      b.waitForEvent('download'),
      b.click('#messages .msg.in .attachment.file'),
    ]);
    assert.equal(download.suggestedFilename(), 'where.txt');
    assert.deepEqual(problems, []);
  });
});
