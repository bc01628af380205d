'use strict';
// Helpers for the browser test: the webchat server process and headless Chromium.
//
// Synchronisation rule: waits are on page conditions (waitForSelector /
// waitForFunction), never on fixed sleeps. Timeouts are failure bounds only.

const { spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');

const { chromium } = require('playwright-core');

const REPO_ROOT = path.resolve(__dirname, '..', '..');
const WEBCHAT_BIN = process.env.WEBCHAT_BIN || path.join(REPO_ROOT, 'target', 'debug', 'webchat');
// The profile service is built next to the chat server.
const PROFILE_BIN = process.env.WEBCHAT_PROFILE_BIN || path.join(path.dirname(WEBCHAT_BIN), 'webchat-profile');
const REDIS_URL = process.env.WEBCHAT_TEST_REDIS_URL || '';
const WEBCLIENT_DIR = path.join(REPO_ROOT, 'webclient');
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const STARTUP_TIMEOUT_MS = 20000;
const LISTEN_RE = /^webchat listening on (\S+)\s*$/;
const PROFILE_LISTEN_RE = /^webchat-profile listening on (\S+)\s*$/;

const live = new Set();
process.on('exit', () => {
  for (const child of live) {
    try {
      child.kill('SIGKILL');
    } catch (_) {
      /* gone */
    }
  }
});

/** A free loopback port (closed again: the caller binds it right away). */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Spawns `bin` and resolves with the address from its "… listening on ADDR" line. */
async function spawnListening(bin, args, env, re, label) {
  const child = spawn(bin, args, { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => {
    if (process.env.WEBCHAT_TEST_SERVER_LOG === '1') process.stderr.write(`[${label}] ${d}`);
    stderr += d;
    if (stderr.length > 256 * 1024) stderr = stderr.slice(-128 * 1024);
  });
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const addr = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${label} printed no listening line in ${STARTUP_TIMEOUT_MS} ms\n${stderr}`)), STARTUP_TIMEOUT_MS);
    const rl = readline.createInterface({ input: child.stdout });
    rl.on('line', (line) => {
      const m = re.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`${label} exited early (code ${code}, signal ${signal})\n${stderr}`));
    });
  });
  return {
    addr,
    stderr: () => stderr,
    async stop() {
      live.delete(child);
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 10000);
        await exited;
        clearTimeout(t);
      }
    },
  };
}

/**
 * Starts the profile service and the chat server, both on Redis (WEBCHAT_TEST_REDIS_URL)
 * with one token key, so a profile update reaches the chat server (channel wc:profiles).
 * With `{ redis: false }` both run on their embedded stores instead (one node, no Redis:
 * the chat server learns of profile changes from the web client, see profiles.rs).
 * The web client is served from a copy of webclient/ whose config.js names the profile
 * service and whose CSP allows it, as a deployment would set them.
 * → {url, profileUrl, stop(), stopChat(), startChat(), stderr()}
 */
async function startServer({ redis = true } = {}) {
  for (const [bin, what] of [[WEBCHAT_BIN, 'webchat'], [PROFILE_BIN, 'webchat-profile']]) {
    if (!fs.existsSync(bin)) {
      throw new Error(`${what} binary not found at ${bin} (run \`cargo build -p webchat -p webchat-profile --bins\` or set WEBCHAT_BIN)`);
    }
  }
  if (redis && !REDIS_URL) {
    throw new Error('WEBCHAT_TEST_REDIS_URL is not set: the browser test runs the chat server and the profile service on Redis (scripts/lib/redis.sh starts one)');
  }
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'webchat-browser-'));
  const dataDir = path.join(tmp, 'data');
  const profileDir = path.join(tmp, 'profile');
  const webclientDir = path.join(tmp, 'webclient');
  fs.mkdirSync(dataDir);
  fs.mkdirSync(profileDir);

  // A developer's WEBCHAT_* settings must not change the servers under test.
  const base = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('WEBCHAT_')) base[k] = v;
  if (!base.RUST_LOG) base.RUST_LOG = 'info';
  if (redis) base.WEBCHAT_REDIS_URL = REDIS_URL;
  base.WEBCHAT_TOKEN_SECRET = crypto.randomBytes(32).toString('hex');

  const chatPort = await freePort();
  const chatOrigin = `http://127.0.0.1:${chatPort}`;
  const profile = await spawnListening(
    PROFILE_BIN,
    ['--listen', '127.0.0.1:0'],
    { ...base, WEBCHAT_DATA_DIR: profileDir, WEBCHAT_CORS_ORIGINS: chatOrigin },
    PROFILE_LISTEN_RE,
    'webchat-profile',
  );
  const profileUrl = `http://${profile.addr}`;

  fs.cpSync(WEBCLIENT_DIR, webclientDir, { recursive: true, filter: (src) => !src.includes('node_modules') });
  fs.writeFileSync(
    path.join(webclientDir, 'config.js'),
    `export default { profileUrl: ${JSON.stringify(profileUrl)} };\n`,
  );
  const index = path.join(webclientDir, 'index.html');
  const html = fs.readFileSync(index, 'utf8');
  const patched = html.replace('http://*:4040 https://*:4040', profileUrl);
  if (patched === html) throw new Error('index.html: the CSP connect-src no longer names http://*:4040 https://*:4040');
  fs.writeFileSync(index, patched);

  const startChat = () =>
    spawnListening(
      WEBCHAT_BIN,
      ['--listen', `127.0.0.1:${chatPort}`, '--data-dir', dataDir, '--webclient-dir', webclientDir],
      { ...base, WEBCHAT_PROFILE_URL: profileUrl },
      LISTEN_RE,
      'webchat',
    );
  let chat;
  try {
    chat = await startChat();
  } catch (e) {
    await profile.stop();
    throw e;
  }

  return {
    url: `http://${chat.addr}/`,
    profileUrl,
    stderr: () => `${chat.stderr()}\n--- webchat-profile ---\n${profile.stderr()}`,
    /** Stops the chat server (SIGTERM); `start()` brings it back on the same port and data. */
    async stopChat() {
      await chat.stop();
    },
    async startChat() {
      chat = await startChat();
    },
    async stop() {
      await chat.stop();
      await profile.stop();
      fs.rmSync(tmp, { recursive: true, force: true });
    },
  };
}

/**
 * The chat server and the profile service in open mode on the embedded store (no Redis), as
 * the 2020 client's deployment runs them: both allow the page's origin (`corsOrigins`).
 * → {chatUrl, profileUrl, stop()}
 */
async function spawnOpenModeServers({ corsOrigins }) {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'webchat-legacy-'));
  const base = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('WEBCHAT_')) base[k] = v;
  if (!base.RUST_LOG) base.RUST_LOG = 'info';
  base.WEBCHAT_AUTH = 'open';
  base.WEBCHAT_CORS_ORIGINS = corsOrigins;
  base.WEBCHAT_TOKEN_SECRET = crypto.randomBytes(32).toString('hex');
  const profile = await spawnListening(
    PROFILE_BIN,
    ['--listen', '127.0.0.1:0'],
    { ...base, WEBCHAT_DATA_DIR: path.join(tmp, 'profile') },
    PROFILE_LISTEN_RE,
    'webchat-profile',
  );
  const profileUrl = `http://${profile.addr}`;
  let chat;
  try {
    chat = await spawnListening(
      WEBCHAT_BIN,
      ['--listen', '127.0.0.1:0', '--data-dir', path.join(tmp, 'chat')],
      { ...base, WEBCHAT_PROFILE_URL: profileUrl },
      LISTEN_RE,
      'webchat',
    );
  } catch (e) {
    await profile.stop();
    throw e;
  }
  return {
    chatUrl: `http://${chat.addr}`,
    profileUrl,
    async stop() {
      await chat.stop();
      await profile.stop();
      fs.rmSync(tmp, { recursive: true, force: true });
    },
  };
}

function launchBrowser() {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`Chromium not found at ${CHROMIUM} (apt-get install -y chromium, or set CHROMIUM_BIN)`);
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--no-first-run',
      '--disable-sync',
    ],
  });
}

module.exports = { REPO_ROOT, freePort, startServer, spawnOpenModeServers, launchBrowser };
