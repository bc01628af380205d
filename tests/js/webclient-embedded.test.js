'use strict';
// The web client is built into the binary: a server started in an empty directory (an
// installed binary, a service manager) serves it at `/` with its content types, ETags,
// revalidation and gzip; `--webclient-dir` still swaps in a directory on disk.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const zlib = require('node:zlib');
const http = require('node:http');

const { startServer } = require('./helpers/server');

/** A raw GET/HEAD (fetch would decompress gzip and hide Content-Encoding). */
function get(url, { method = 'GET', headers = {} } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('the web client built into the binary', () => {
  let server;
  let emptyDir;

  before(async () => {
    emptyDir = fs.mkdtempSync(path.join(os.tmpdir(), 'webchat-empty-cwd-'));
    server = await startServer({ cwd: emptyDir });
  });
  after(async () => {
    if (server) await server.stop();
    fs.rmSync(emptyDir, { recursive: true, force: true });
  });

  it('is served at / from a binary started in an empty directory', async () => {
    assert.deepEqual(fs.readdirSync(emptyDir), [], 'the server wrote nothing into its working directory');
    const index = await get(`${server.url}/`);
    assert.equal(index.status, 200);
    assert.match(index.headers['content-type'], /^text\/html/);
    assert.match(index.body.toString(), /<script type="module" src="js\/main\.js"><\/script>/);
    assert.equal(index.headers['x-content-type-options'], 'nosniff');
    assert.equal(index.headers['cache-control'], 'no-cache');

    const js = await get(`${server.url}/js/main.js`);
    assert.equal(js.status, 200);
    assert.match(js.headers['content-type'], /javascript/);
    const css = await get(`${server.url}/css/app.css`);
    assert.match(css.headers['content-type'], /^text\/css/);
    const svg = await get(`${server.url}/icon.svg`);
    assert.match(svg.headers['content-type'], /^image\/svg\+xml/);
    const same = fs.readFileSync(path.join(__dirname, '..', '..', 'webclient', 'js', 'main.js'));
    assert.ok(js.body.equals(same), 'the built-in main.js is the one in webclient/');
  });

  it('answers a current ETag with 304 and a stale one with the file', async () => {
    const first = await get(`${server.url}/js/main.js`);
    const etag = first.headers.etag;
    assert.match(etag, /^W\/"[0-9a-f]{64}"$/);
    const again = await get(`${server.url}/js/main.js`, { headers: { 'if-none-match': etag } });
    assert.equal(again.status, 304);
    assert.equal(again.body.length, 0);
    const stale = await get(`${server.url}/js/main.js`, { headers: { 'if-none-match': '"0000"' } });
    assert.equal(stale.status, 200);
    assert.ok(stale.body.equals(first.body));
  });

  it('compresses for a browser that accepts gzip', async () => {
    const plain = await get(`${server.url}/vendor/socket.io.min.js`);
    const gz = await get(`${server.url}/vendor/socket.io.min.js`, { headers: { 'accept-encoding': 'gzip' } });
    assert.equal(gz.status, 200);
    assert.equal(gz.headers['content-encoding'], 'gzip');
    assert.ok(gz.body.length < plain.body.length / 2, `gzip ${gz.body.length} of ${plain.body.length} bytes`);
    assert.ok(zlib.gunzipSync(gz.body).equals(plain.body));
  });

  it('serves HEAD without a body, and nothing outside the client', async () => {
    const head = await get(`${server.url}/index.html`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.body.length, 0);
    for (const p of ['/package.json', '/.npmrc', '/scripts/vendor.sh', '/README.md', '/nope.js', '/../Cargo.toml', '/%2e%2e/Cargo.toml']) {
      const r = await get(`${server.url}${p}`);
      assert.equal(r.status, 404, p);
    }
    const post = await get(`${server.url}/index.html`, { method: 'POST' });
    assert.equal(post.status, 405);
  });

  it('is replaced by --webclient-dir', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'webchat-client-dir-'));
    fs.writeFileSync(path.join(dir, 'index.html'), '<!doctype html><title>custom</title>');
    const custom = await startServer({ cwd: emptyDir, args: ['--webclient-dir', dir] });
    try {
      const index = await get(`${custom.url}/`);
      assert.equal(index.status, 200);
      assert.match(index.body.toString(), /<title>custom<\/title>/);
      assert.equal((await get(`${custom.url}/js/main.js`)).status, 404);
    } finally {
      await custom.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
