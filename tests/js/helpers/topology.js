'use strict';
// The stack of docker-compose.yml as plain processes, for tests/js/topology.test.js:
// two `webchat` nodes and `webchat-profile` with the compose environment, on the test's
// Redis and DynamoDB Local, behind the real nginx running deploy/nginx.conf (rendered with
// loopback addresses, temp paths in a private dir and an access log naming the upstream of
// each request; nothing else changed).
//
// - startTopology(): start it all; resolves with { chatUrl, profileUrl, nodes, profile,
//   nginx, adminToken, stop() } once /health answers through nginx.
// - renderNginxConf(): deploy/nginx.conf with the compose host names replaced.
// - clientAddress(k): a loopback source address in its own /24 (nginx's ip_hash hashes the
//   first three octets of the client address, so every 127.0.0.x client is one "client").

const { spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const { REPO_ROOT, WEBCHAT_BIN, startServer } = require('./server');

const PROFILE_BIN =
  process.env.WEBCHAT_PROFILE_BIN || path.join(path.dirname(WEBCHAT_BIN), 'webchat-profile');
const NGINX_CONF = path.join(REPO_ROOT, 'deploy', 'nginx.conf');
const READY_TIMEOUT_MS = Number(process.env.WEBCHAT_TEST_STARTUP_TIMEOUT_MS || 20000);

/** The nginx binary: $WEBCHAT_TEST_NGINX, else `nginx` on PATH or in /usr/sbin. */
function nginxBin() {
  if (process.env.WEBCHAT_TEST_NGINX) return process.env.WEBCHAT_TEST_NGINX;
  const dirs = (process.env.PATH || '').split(path.delimiter).concat(['/usr/sbin', '/usr/local/sbin']);
  for (const dir of dirs) {
    const p = path.join(dir, 'nginx');
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch (_) {
      /* next */
    }
  }
  return null;
}

/** A TCP port free on 127.0.0.1 right now (for nginx, which cannot report a port 0). */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Loopback source address number k, each in its own /24: 127.0.k.1. */
function clientAddress(k) {
  return `127.0.${k}.1`;
}

/**
 * deploy/nginx.conf for this machine: the compose service names become loopback addresses,
 * the listen ports free loopback ports, and the temp and access-log paths point into `dir`
 * (the file itself sets none, so nginx would use its compiled-in /var paths). Every
 * replacement must match exactly once, so an edit of the file cannot silently leave
 * something untested.
 */
function renderNginxConf(source, { chat1, chat2, profile, chatPort, profilePort, dir }) {
  const replacements = [
    [/^(\s*)server\s+chat1:4000;/m, `$1server ${chat1};`],
    [/^(\s*)server\s+chat2:4000;/m, `$1server ${chat2};`],
    [/^(\s*)server\s+profile:4040;/m, `$1server ${profile};`],
    [/^(\s*)listen\s+8080;/m, `$1listen 127.0.0.1:${chatPort};`],
    [/^(\s*)listen\s+4040;/m, `$1listen 127.0.0.1:${profilePort};`],
    [
      /^http\s*\{/m,
      [
        'http {',
        `    client_body_temp_path ${dir}/client_body;`,
        `    proxy_temp_path ${dir}/proxy;`,
        `    fastcgi_temp_path ${dir}/fastcgi;`,
        `    uwsgi_temp_path ${dir}/uwsgi;`,
        `    scgi_temp_path ${dir}/scgi;`,
        // Which upstream served each request: the test checks stickiness with it.
        '    log_format topology \'$remote_addr $upstream_addr "$request"\';',
        `    access_log ${dir}/access.log topology;`,
      ].join('\n'),
    ],
  ];
  let out = source;
  for (const [re, replacement] of replacements) {
    const global = new RegExp(re.source, 'gm');
    const n = (out.match(global) || []).length;
    if (n !== 1) {
      throw new Error(`deploy/nginx.conf: expected exactly one match of ${re}, found ${n}; update helpers/topology.js`);
    }
    out = out.replace(re, replacement);
  }
  return out;
}

const liveNginx = new Set();
process.on('exit', () => {
  // Last resort if a test file dies: SIGTERM makes the master stop its workers and exit.
  // (nginx stays in our process group, so a Ctrl-C or a CI kill of the group reaches it too.)
  for (const child of liveNginx) {
    try {
      child.kill('SIGTERM');
    } catch (_) {
      /* already gone */
    }
  }
});

/** Start nginx in the foreground on a rendered config. Resolves once it is running. */
async function startNginx(bin, confText, dir) {
  const confPath = path.join(dir, 'nginx.conf');
  fs.writeFileSync(confPath, confText);
  // -e: the startup error log before the config is read; -g: what compose's container gets
  // from the image (foreground) plus a pid file in the temp dir.
  const args = ['-p', dir, '-e', 'stderr', '-c', confPath, '-g', `daemon off; pid ${dir}/nginx.pid; error_log stderr;`];
  const child = spawn(bin, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  liveNginx.add(child);
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => {
    stderr += d;
    if (stderr.length > 64 * 1024) stderr = stderr.slice(-32 * 1024);
  });
  let exitInfo = null;
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  exited.then((info) => {
    exitInfo = info;
    liveNginx.delete(child);
  });
  const spawnError = new Promise((resolve) => child.on('error', resolve));
  const nginx = {
    child,
    confPath,
    args,
    stderr: () => stderr,
    get exitInfo() {
      return exitInfo;
    },
    async stop(timeoutMs = 10000) {
      if (exitInfo === null) {
        // SIGTERM = fast shutdown: the master stops its workers, then exits.
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
        await exited;
        clearTimeout(t);
      }
    },
  };
  const err = await Promise.race([spawnError, new Promise((r) => setImmediate(r, null))]);
  if (err) throw new Error(`nginx (${bin}) did not start: ${err.message}`);
  return { nginx, exited };
}

/** Poll `url` until it answers 200, bounded; fails early if `exited` settles. */
async function untilHealthy(url, what, exited, describe, timeoutMs = READY_TIMEOUT_MS) {
  let gone = null;
  if (exited) exited.then((info) => (gone = info));
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer';
  for (;;) {
    if (gone) throw new Error(`${what} exited (code ${gone.code}, signal ${gone.signal}) before ${url} answered\n${describe()}`);
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
      if (res.status === 200) return;
      last = `HTTP ${res.status}: ${(await res.text()).slice(0, 300)}`;
    } catch (e) {
      last = e.message;
    }
    if (Date.now() > deadline) throw new Error(`${url} (${what}) not healthy within ${timeoutMs} ms: ${last}\n${describe()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Start the compose stack. opts: { redisUrl, dynamodbUrl }.
 * The chat nodes and the profile service get compose's environment (x-chat), with the
 * compose host names replaced by this machine's addresses and a table prefix of their own.
 */
async function startTopology({ redisUrl, dynamodbUrl }) {
  const bin = nginxBin();
  if (!bin) {
    throw new Error('nginx not found (install Debian nginx, or set WEBCHAT_TEST_NGINX); scripts/test-all.sh installs it');
  }
  if (!fs.existsSync(PROFILE_BIN)) {
    throw new Error(`webchat-profile binary not found at ${PROFILE_BIN} (cargo build --workspace --bins, or set WEBCHAT_PROFILE_BIN)`);
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'webchat-topology-'));
  // nginx started as root runs its workers as `nobody`, which must reach the temp paths.
  fs.chmodSync(dir, 0o755);
  const started = [];
  const topo = {
    dir,
    adminToken: crypto.randomBytes(16).toString('hex'),
    nodes: [],
    profile: null,
    nginx: null,
    chatUrl: null,
    profileUrl: null,
    accessLog: () => {
      try {
        return fs.readFileSync(path.join(dir, 'access.log'), 'utf8');
      } catch (_) {
        return '';
      }
    },
    async stop() {
      // nginx first (clients go away), then the services; each stop is independent.
      if (topo.nginx) await topo.nginx.stop();
      await Promise.all(started.map((s) => s.stop()));
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    const [chatPort, profilePort] = await Promise.all([freePort(), freePort()]);
    topo.chatUrl = `http://127.0.0.1:${chatPort}`;
    topo.profileUrl = `http://127.0.0.1:${profilePort}`;
    const prefix = `topo_${Date.now().toString(36)}${crypto.randomBytes(3).toString('hex')}_`;
    // docker-compose.yml x-chat environment (the image serves the web client built into the
    // binary); the listen address and data dir (image ENV) come as --listen 127.0.0.1:0 /
    // --data-dir.
    const env = {
      WEBCHAT_REDIS_URL: redisUrl,
      WEBCHAT_DYNAMODB_ENDPOINT: dynamodbUrl,
      AWS_REGION: 'us-east-1',
      AWS_ACCESS_KEY_ID: 'local',
      AWS_SECRET_ACCESS_KEY: 'local',
      WEBCHAT_TOKEN_SECRET: crypto.randomBytes(32).toString('hex'),
      WEBCHAT_ADMIN_TOKEN: topo.adminToken,
      WEBCHAT_CORS_ORIGINS: topo.chatUrl,
      // compose trusts the private ranges nginx sits in; here nginx is on loopback.
      WEBCHAT_TRUSTED_PROXIES: '127.0.0.0/8',
      RUST_LOG: 'info',
      WEBCHAT_LOG_FORMAT: 'json',
      WEBCHAT_TABLE_PREFIX: prefix,
    };
    // compose starts them together; the chat nodes need the profile service's address.
    topo.profile = await startServer({ bin: PROFILE_BIN, name: 'webchat-profile', env });
    started.push(topo.profile);
    env.WEBCHAT_PROFILE_URL = topo.profile.url;
    const nodes = await Promise.allSettled([startServer({ env }), startServer({ env })]);
    for (const n of nodes) if (n.status === 'fulfilled') started.push(n.value);
    for (const n of nodes) if (n.status === 'rejected') throw n.reason;
    topo.nodes = nodes.map((n) => n.value);
    const services = [
      ['webchat-profile', topo.profile],
      ['webchat node 1', topo.nodes[0]],
      ['webchat node 2', topo.nodes[1]],
    ];
    await Promise.all(
      services.map(([what, s]) => untilHealthy(`${s.url}/health`, what, s.exited, () => s.stderr().slice(-4000))),
    );

    const conf = renderNginxConf(fs.readFileSync(NGINX_CONF, 'utf8'), {
      chat1: topo.nodes[0].addr,
      chat2: topo.nodes[1].addr,
      profile: topo.profile.addr,
      chatPort,
      profilePort,
      dir,
    });
    const { nginx, exited } = await startNginx(bin, conf, dir);
    topo.nginx = nginx;
    const describe = () => `nginx ${nginx.args.join(' ')}\nstderr:\n${nginx.stderr().slice(-4000)}`;
    await untilHealthy(`${topo.chatUrl}/health`, 'nginx', exited, describe);
    await untilHealthy(`${topo.profileUrl}/health`, 'nginx', exited, describe);
  } catch (err) {
    await topo.stop();
    throw err;
  }
  return topo;
}

module.exports = { PROFILE_BIN, nginxBin, freePort, clientAddress, renderNginxConf, startTopology };
