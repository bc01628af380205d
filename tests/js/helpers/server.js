'use strict';
// Test helpers for the webchat end-to-end tests.
//
// - startServer(): spawn target/debug/webchat (or $WEBCHAT_BIN) on 127.0.0.1:0
//   with a fresh data dir and wait for its "webchat listening on ADDR" line.
// - REST helpers: api(), signup(), login(), logout(), uniqueUid().
// - socket helpers: connect() (socket.io-client 4, auth {token}),
//   connectV2() (socket.io-client 2 / Engine.IO 3, ?token= query),
//   connectError(), emitAck(), nextChat(), nextChatEvent(), waitFor().
//
// Synchronisation rule: tests never sleep to wait for something to happen.
// Every socket gets an inbox at creation time that records every `chat` event
// (so nothing that arrives between "connect" and the test attaching a listener
// is lost); nextChat() consumes matching events from it. Timeouts exist only
// as failure bounds.

const { spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');

const { io } = require('socket.io-client');
const ioV2 = require('socket.io-client-v2');

const REPO_ROOT = path.resolve(__dirname, '..', '..', '..');
const WEBCHAT_BIN =
  process.env.WEBCHAT_BIN || path.join(REPO_ROOT, 'target', 'debug', 'webchat');
const REDIS_URL = process.env.WEBCHAT_TEST_REDIS_URL || '';

const DEFAULT_TIMEOUT_MS = Number(process.env.WEBCHAT_TEST_TIMEOUT_MS || 5000);
const STARTUP_TIMEOUT_MS = Number(process.env.WEBCHAT_TEST_STARTUP_TIMEOUT_MS || 20000);
const PASSWORD = 'correct-horse-battery';
const LISTEN_RE = /^webchat listening on (\S+)\s*$/;

// ---------------------------------------------------------------------------
// server processes

const liveServers = new Set();

process.on('exit', () => {
  // Last resort: never leave a server behind if a test file dies.
  for (const s of liveServers) {
    try {
      s.child.kill('SIGKILL');
    } catch (_) {
      /* already gone */
    }
  }
});

/** Suite modes: always "local", plus "redis" when WEBCHAT_TEST_REDIS_URL is set. */
function modes() {
  const out = [{ name: 'local', redisUrl: null }];
  if (REDIS_URL) out.push({ name: 'redis', redisUrl: REDIS_URL });
  return out;
}

/**
 * Start a webchat server.
 * opts: { auth: 'open'|'token', redisUrl, maxBodyBytes, dataDir, args: [], env: {},
 *         bin, name }  (bin/name: another binary taking --listen/--data-dir that prints
 *         "<name> listening on ADDR", e.g. webchat-profile; default $WEBCHAT_BIN, 'webchat')
 * Returns { url, addr, port, dataDir, child, stderr(), stop({keepDataDir}) }.
 */
async function startServer(opts = {}) {
  const bin = opts.bin || WEBCHAT_BIN;
  const name = opts.name || 'webchat';
  const listenRe = name === 'webchat' ? LISTEN_RE : new RegExp(`^${name} listening on (\\S+)\\s*$`);
  if (!fs.existsSync(bin)) {
    throw new Error(
      opts.bin
        ? `${name} binary not found at ${bin}`
        : `webchat binary not found at ${WEBCHAT_BIN} (build it with \`cargo build --bin webchat\` or set WEBCHAT_BIN)`,
    );
  }
  const dataDir = opts.dataDir || fs.mkdtempSync(path.join(os.tmpdir(), 'webchat-js-'));
  const ownsDataDir = !opts.dataDir;
  const args = ['--listen', '127.0.0.1:0', '--data-dir', dataDir];
  if (opts.auth) args.push('--auth', opts.auth);
  if (opts.redisUrl) args.push('--redis-url', opts.redisUrl);
  if (opts.maxBodyBytes != null) args.push('--max-body-bytes', String(opts.maxBodyBytes));
  if (opts.args) args.push(...opts.args);

  // Don't let a developer's WEBCHAT_* settings leak into the server under test
  // (they would silently change auth mode, redis, limits...).
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('WEBCHAT_')) env[k] = v;
  }
  if (!env.RUST_LOG) env.RUST_LOG = 'info';
  Object.assign(env, opts.env || {});

  // cwd = repo root, so relative defaults (e.g. --webclient-dir webclient) resolve as for a developer.
  const child = spawn(bin, args, { cwd: opts.cwd || REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderrBuf = '';
  const echo = process.env.WEBCHAT_TEST_SERVER_LOG === '1';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => {
    if (echo) process.stderr.write(d);
    stderrBuf += d;
    if (stderrBuf.length > 256 * 1024) stderrBuf = stderrBuf.slice(-128 * 1024);
  });
  const stdoutLines = [];
  const exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => resolve({ code, signal }));
  });
  let exitInfo = null;
  exited.then((info) => {
    exitInfo = info;
  });

  const server = {
    child,
    dataDir,
    args,
    url: null,
    addr: null,
    port: null,
    stdoutLines,
    stderr: () => stderrBuf,
    exited,
    get exitInfo() {
      return exitInfo;
    },
    async stop({ keepDataDir = false, timeoutMs = 10000 } = {}) {
      liveServers.delete(server);
      if (exitInfo === null) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
        await exited;
        clearTimeout(t);
      }
      if (ownsDataDir && !keepDataDir) {
        fs.rmSync(dataDir, { recursive: true, force: true });
      }
      return exitInfo;
    },
  };
  liveServers.add(server);

  const rl = readline.createInterface({ input: child.stdout });
  const listening = new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`${name} did not print its listening line within ${STARTUP_TIMEOUT_MS} ms`)),
      STARTUP_TIMEOUT_MS,
    );
    rl.on('line', (line) => {
      stdoutLines.push(line);
      const m = listenRe.exec(line);
      if (m && !server.addr) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited before listening (code ${code}, signal ${signal})`));
    });
  });

  try {
    const addr = await listening;
    server.addr = addr;
    server.port = Number(addr.slice(addr.lastIndexOf(':') + 1));
    server.url = `http://${addr}`;
  } catch (err) {
    await server.stop();
    err.message += `\nargs: ${args.join(' ')}\nstdout:\n${stdoutLines.join('\n')}\nstderr (tail):\n${stderrBuf.slice(-4000)}`;
    throw err;
  }
  return server;
}

// ---------------------------------------------------------------------------
// REST

/** uid unique per call: `${prefix}-<base36 time><random hex>` (valid: [A-Za-z0-9_.@+-], ≤ 64). */
function uniqueUid(prefix = 'u') {
  return `${prefix}-${Date.now().toString(36)}${crypto.randomBytes(4).toString('hex')}`;
}

/** JSON request; returns { status, headers, text, json } (json null when the body isn't JSON). */
async function api(url, method, pathname, body, token) {
  const headers = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(url + pathname, {
    method,
    headers,
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    signal: AbortSignal.timeout(DEFAULT_TIMEOUT_MS * 2),
  });
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch (_) {
    json = null;
  }
  return { status: res.status, headers: res.headers, text, json };
}

function describeRes(res) {
  return `HTTP ${res.status}: ${res.text.slice(0, 500)}`;
}

/** Sign up a fresh user. Returns { uid, password, token, expiresAt }. Throws unless 201. */
async function signup(url, prefix = 'u', { uid, password = PASSWORD, name } = {}) {
  uid = uid || uniqueUid(prefix);
  const res = await api(url, 'POST', '/api/v1/signup', { uid, password, name: name || `Test ${uid}` });
  if (res.status !== 201 || !res.json || typeof res.json.token !== 'string') {
    throw new Error(`signup ${uid} failed: ${describeRes(res)}`);
  }
  return { uid, password, token: res.json.token, expiresAt: res.json.expiresAt, body: res.json };
}

/** Log in. Returns { uid, token, expiresAt }. Throws unless 200. */
async function login(url, uid, password = PASSWORD) {
  const res = await api(url, 'POST', '/api/v1/login', { uid, password });
  if (res.status !== 200 || !res.json || typeof res.json.token !== 'string') {
    throw new Error(`login ${uid} failed: ${describeRes(res)}`);
  }
  return { uid, token: res.json.token, expiresAt: res.json.expiresAt, body: res.json };
}

async function logout(url, token) {
  return api(url, 'POST', '/api/v1/logout', undefined, token);
}

// ---------------------------------------------------------------------------
// sockets

const liveSockets = new Set();

/** Disconnect every socket opened through these helpers (use in afterEach/after). */
function disconnectAll() {
  for (const s of liveSockets) {
    try {
      s.disconnect();
    } catch (_) {
      /* ignore */
    }
  }
  liveSockets.clear();
}

/**
 * Records every `chat` event of a socket from the moment the socket is created.
 * With autoAck (default) the server's ack request is answered immediately
 * (handler's last arg is a callback: call it to confirm). With autoAck=false
 * the test confirms by calling `event.ack()` itself.
 */
class ChatInbox {
  constructor(socket, { autoAck = true } = {}) {
    this.autoAck = autoAck;
    this.all = []; // every event ever received, in order: { data, ack, acked }
    this.pending = []; // not yet consumed by nextChat
    this.waiters = [];
    socket.on('chat', (...args) => {
      const cb = typeof args[args.length - 1] === 'function' ? args.pop() : null;
      const ev = { data: args[0], extra: args.slice(1), ackRequested: !!cb, acked: false };
      ev.ack = (...ackArgs) => {
        if (cb && !ev.acked) {
          ev.acked = true;
          cb(...ackArgs);
        }
      };
      if (this.autoAck) ev.ack();
      this.all.push(ev);
      const i = this.waiters.findIndex((w) => safeMatch(w.predicate, ev.data));
      if (i >= 0) {
        const [w] = this.waiters.splice(i, 1);
        w.resolve(ev);
      } else {
        this.pending.push(ev);
      }
    });
  }

  next(predicate, timeoutMs = DEFAULT_TIMEOUT_MS, label = '') {
    const i = this.pending.findIndex((ev) => safeMatch(predicate, ev.data));
    if (i >= 0) return Promise.resolve(this.pending.splice(i, 1)[0]);
    return new Promise((resolve, reject) => {
      const w = { predicate };
      const timer = setTimeout(() => {
        const idx = this.waiters.indexOf(w);
        if (idx >= 0) this.waiters.splice(idx, 1);
        reject(
          new Error(
            `timed out after ${timeoutMs} ms waiting for a matching chat event${label ? ` (${label})` : ''}; ` +
              `received so far: ${JSON.stringify(this.all.map((e) => e.data)).slice(0, 2000)}`,
          ),
        );
      }, timeoutMs);
      w.resolve = (ev) => {
        clearTimeout(timer);
        resolve(ev);
      };
      this.waiters.push(w);
    });
  }

  /** Events received so far (data only) that match predicate, consumed or not. */
  seen(predicate = () => true) {
    return this.all.filter((ev) => safeMatch(predicate, ev.data)).map((ev) => ev.data);
  }
}

function safeMatch(predicate, data) {
  try {
    return !!predicate(data);
  } catch (_) {
    return false;
  }
}

function toPredicate(p) {
  if (typeof p === 'function') return p;
  if (p && typeof p === 'object') {
    return (d) => d && typeof d === 'object' && Object.entries(p).every(([k, v]) => d[k] === v);
  }
  return () => true;
}

function inboxOf(socket) {
  if (!socket.inbox) socket.inbox = new ChatInbox(socket);
  return socket.inbox;
}

/** Resolve with the first matching `chat` event as { data, ack, ackRequested }. */
function nextChatEvent(socket, predicate, timeoutMs = DEFAULT_TIMEOUT_MS, label = '') {
  return inboxOf(socket).next(toPredicate(predicate), timeoutMs, label);
}

/** Resolve with the payload of the first matching `chat` event (function or {field: value} predicate). */
async function nextChat(socket, predicate, timeoutMs = DEFAULT_TIMEOUT_MS, label = '') {
  return (await nextChatEvent(socket, predicate, timeoutMs, label)).data;
}

/** Collect `n` matching chat payloads, in arrival order. */
async function collectChats(socket, predicate, n, timeoutMs = DEFAULT_TIMEOUT_MS, label = '') {
  const out = [];
  for (let i = 0; i < n; i++) {
    out.push(await nextChat(socket, predicate, timeoutMs, `${label} #${i + 1} of ${n}`));
  }
  return out;
}

function errMessage(err) {
  if (err == null) return String(err);
  if (typeof err === 'string') return err;
  if (err.message) return err.message;
  return JSON.stringify(err);
}

function openSocket(socket, timeoutMs, what) {
  liveSockets.add(socket);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      socket.disconnect();
      reject(new Error(`${what}: no connect within ${timeoutMs} ms`));
    }, timeoutMs);
    const fail = (err) => {
      cleanup();
      socket.disconnect();
      const e = new Error(errMessage(err));
      e.data = err && err.data;
      e.raw = err;
      reject(e);
    };
    const ok = () => {
      cleanup();
      resolve(socket);
    };
    const cleanup = () => {
      clearTimeout(timer);
      socket.off('connect', ok);
      socket.off('connect_error', fail);
      socket.off('error', fail);
    };
    socket.on('connect', ok);
    socket.on('connect_error', fail);
    // socket.io-client 2.x reports namespace (middleware) refusals as `error`.
    socket.on('error', fail);
  });
}

/**
 * socket.io-client 4.x. token → auth {token} (null/undefined: no auth at all).
 * opts: { autoAck=true, transports=['websocket'], timeoutMs, ...socket.io options }
 * Resolves with the connected socket (with .inbox); rejects with the connect_error.
 */
function connect(url, token, opts = {}) {
  const { autoAck = true, timeoutMs = DEFAULT_TIMEOUT_MS, ...ioOpts } = opts;
  const socket = io(url, {
    transports: ['websocket'],
    reconnection: false,
    forceNew: true,
    timeout: timeoutMs,
    ...(token != null ? { auth: { token } } : {}),
    ...ioOpts,
  });
  socket.inbox = new ChatInbox(socket, { autoAck });
  return openSocket(socket, timeoutMs, 'socket.io-client 4');
}

/**
 * socket.io-client 2.x (Engine.IO 3). token → query ?token=T.
 * opts: { autoAck=true, transports (default polling then websocket upgrade), timeoutMs, ... }
 */
function connectV2(url, token, opts = {}) {
  const { autoAck = true, timeoutMs = DEFAULT_TIMEOUT_MS, ...ioOpts } = opts;
  const socket = ioV2(url, {
    reconnection: false,
    forceNew: true,
    timeout: timeoutMs,
    ...(token != null ? { query: { token } } : {}),
    ...ioOpts,
  });
  socket.inbox = new ChatInbox(socket, { autoAck });
  return openSocket(socket, timeoutMs, 'socket.io-client 2');
}

/** Expect the connection to be refused; resolves with the error message. */
async function connectError(connectFn) {
  try {
    await connectFn();
  } catch (err) {
    return err.message;
  }
  throw new Error('expected the connection to be refused, but it connected');
}

/** emit with an ack callback; resolves with the (first) ack argument. */
function emitAck(socket, event, payload, timeoutMs = DEFAULT_TIMEOUT_MS) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`no ack for ${event} ${JSON.stringify(payload).slice(0, 300)} within ${timeoutMs} ms`)),
      timeoutMs,
    );
    socket.emit(event, payload, (...args) => {
      clearTimeout(timer);
      resolve(args[0]);
    });
  });
}

/** Resolve when `event` fires on `emitter` (first argument), reject after timeoutMs. */
function waitFor(emitter, event, timeoutMs = DEFAULT_TIMEOUT_MS) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, handler);
      reject(new Error(`timed out after ${timeoutMs} ms waiting for "${event}"`));
    }, timeoutMs);
    const handler = (arg) => {
      clearTimeout(timer);
      resolve(arg);
    };
    emitter.once(event, handler);
  });
}

/**
 * Wait until the server holds exactly `n` sockets (its `webchat_connections` gauge). A closed
 * socket's delivery task has then finished, including confirming what the client acked, so a
 * reconnect cannot race that confirmation. Polls; the timeout is a failure bound only.
 */
async function untilConnections(url, n, timeoutMs = DEFAULT_TIMEOUT_MS) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = await (await fetch(`${url}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith('webchat_connections '));
    const value = line ? Number(line.split(' ')[1]) : NaN;
    if (value === n) return;
    if (Date.now() > deadline) throw new Error(`server holds ${value} sockets, expected ${n}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Disconnect a socket and wait for its local `disconnect` event. */
async function closeSocket(socket) {
  liveSockets.delete(socket);
  if (!socket.connected) return;
  const done = waitFor(socket, 'disconnect');
  socket.disconnect();
  await done;
}

let msgCounter = 0;
/** A MsgID unique in this process (≤ 64 chars). */
function msgId(prefix = 'm') {
  msgCounter += 1;
  return `${prefix}-${process.pid}-${msgCounter}-${crypto.randomBytes(3).toString('hex')}`;
}

module.exports = {
  REPO_ROOT,
  WEBCHAT_BIN,
  REDIS_URL,
  DEFAULT_TIMEOUT_MS,
  PASSWORD,
  modes,
  startServer,
  uniqueUid,
  api,
  signup,
  login,
  logout,
  connect,
  connectV2,
  connectError,
  disconnectAll,
  closeSocket,
  untilConnections,
  emitAck,
  nextChat,
  nextChatEvent,
  collectChats,
  waitFor,
  msgId,
  ChatInbox,
};
