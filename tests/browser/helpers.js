'use strict';
// Helpers for the browser test: the webchat server process and headless Chromium.
//
// Synchronisation rule: waits are on page conditions (waitForSelector /
// waitForFunction), never on fixed sleeps. Timeouts are failure bounds only.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');

const { chromium } = require('playwright-core');

const REPO_ROOT = path.resolve(__dirname, '..', '..');
const WEBCHAT_BIN = process.env.WEBCHAT_BIN || path.join(REPO_ROOT, 'target', 'debug', 'webchat');
const WEBCLIENT_DIR = path.join(REPO_ROOT, 'webclient');
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const STARTUP_TIMEOUT_MS = 20000;
const LISTEN_RE = /^webchat listening on (\S+)\s*$/;

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

/** Spawns the server on an ephemeral port with a fresh data dir. → {url, stop(), stderr()} */
async function startServer() {
  if (!fs.existsSync(WEBCHAT_BIN)) {
    throw new Error(`webchat binary not found at ${WEBCHAT_BIN} (run \`cargo build --bin webchat\` or set WEBCHAT_BIN)`);
  }
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'webchat-browser-'));
  const args = ['--listen', '127.0.0.1:0', '--data-dir', dataDir, '--webclient-dir', WEBCLIENT_DIR];
  // A developer's WEBCHAT_* settings must not change the server under test.
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('WEBCHAT_')) env[k] = v;
  if (!env.RUST_LOG) env.RUST_LOG = 'info';

  const child = spawn(WEBCHAT_BIN, args, { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => {
    if (process.env.WEBCHAT_TEST_SERVER_LOG === '1') process.stderr.write(d);
    stderr += d;
    if (stderr.length > 256 * 1024) stderr = stderr.slice(-128 * 1024);
  });
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));

  const addr = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`webchat printed no listening line in ${STARTUP_TIMEOUT_MS} ms\n${stderr}`)), STARTUP_TIMEOUT_MS);
    const rl = readline.createInterface({ input: child.stdout });
    rl.on('line', (line) => {
      const m = LISTEN_RE.exec(line);
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
      reject(new Error(`webchat exited early (code ${code}, signal ${signal})\n${stderr}`));
    });
  });

  return {
    url: `http://${addr}/`,
    stderr: () => stderr,
    async stop() {
      live.delete(child);
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 10000);
        await exited;
        clearTimeout(t);
      }
      fs.rmSync(dataDir, { recursive: true, force: true });
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

module.exports = { REPO_ROOT, startServer, launchBrowser };
