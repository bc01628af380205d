'use strict';
// Benchmark baseline: the subset of webchat that the load generator uses, on stock
// socket.io 4 with one of two Redis adapters:
//   --adapter pubsub   (default) @socket.io/redis-adapter: a PUBLISH per emit, no durability:
//                      a message for a user with no socket anywhere is dropped, nothing is
//                      stored, acks mean "handed to the adapter";
//   --adapter streams  @socket.io/redis-streams-adapter with socket.io's
//                      connectionStateRecovery: every emit is an XADD to one Redis stream
//                      that every node reads, so a socket that reconnects within two minutes
//                      gets what it missed (socket.io's own recovery, not a per-user inbox:
//                      a user who was not connected recently still gets nothing).
//
//   node server.js --port 0 --redis-url redis://127.0.0.1:6379 [--adapter streams]
//
// Prints `baseline (ADAPTER) listening on 127.0.0.1:PORT` once ready (port 0 = a free port).
// Env: BASELINE_PORT, BASELINE_HOST (127.0.0.1), REDIS_URL.
//
// Events (namespace /, open mode):
//   join  uid (bare string or {uid})      -> socket joins room uid; ack {ok:true}
//   chat  {EvtType:"message",To,MsgID,Body} with an ack callback
//         -> room To gets chat {EvtType,From,Originated:"",To,MsgID,Body,Timestamp,SentAt}
//            on every node (through Redis pub/sub); ack {ok:true,MsgID,SentAt}
//   subscribe {channel}  -> the socket joins room `ch:<channel>`; ack {ok:true,channel,
//            offset:0,publications:[]} (no history: socket.io rooms keep none)
// REST (the channel benchmark's publisher, webchat §9's subset):
//   POST /api/v1/channels/NAME/publish {"data"} -> io.to("ch:NAME").emit("publication",
//            {channel,offset,data,from:null,at}) on every node; 201 {offset} (offsets count
//            per node: nothing orders them across nodes)
const http = require('http');
const { Server } = require('socket.io');
const { createAdapter } = require('@socket.io/redis-adapter');
const { createAdapter: createStreamsAdapter } = require('@socket.io/redis-streams-adapter');
const { createClient } = require('redis');

function option(name, envName, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  if (i !== -1 && i + 1 < process.argv.length) return process.argv[i + 1];
  return process.env[envName] || fallback;
}

const port = Number(option('port', 'BASELINE_PORT', '0'));
const host = option('host', 'BASELINE_HOST', '127.0.0.1');
const redisUrl = option('redis-url', 'REDIS_URL', 'redis://127.0.0.1:6379');
const adapterKind = option('adapter', 'BASELINE_ADAPTER', 'pubsub');
if (adapterKind !== 'pubsub' && adapterKind !== 'streams') {
  console.error(`unknown --adapter ${adapterKind} (pubsub or streams)`);
  process.exit(2);
}
const UID = /^[A-Za-z0-9_.@+-]{1,64}$/;

function fail(ack, code, message) {
  if (typeof ack === 'function') ack({ error: { code, message } });
}

// Under overload a Redis call may fail (e.g. a timeout); log it rather than crash, at most
// once a second (a lost publish shows up as lost messages in the load generator).
let lastComplaint = 0;
process.on('unhandledRejection', (e) => {
  const now = Date.now();
  if (now - lastComplaint > 1000) {
    lastComplaint = now;
    console.error('unhandled rejection:', e && e.message ? e.message : e);
  }
});

async function main() {
  const pub = createClient({ url: redisUrl });
  const sub = pub.duplicate();
  pub.on('error', (e) => console.error('redis pub:', e.message));
  sub.on('error', (e) => console.error('redis sub:', e.message));
  await Promise.all([pub.connect(), sub.connect()]);

  const offsets = new Map();
  const server = http.createServer((req, res) => {
    const m = /^\/api\/v1\/channels\/([a-z0-9_.:-]{1,64})\/publish$/.exec(req.url || '');
    if (req.method !== 'POST' || !m) {
      res.writeHead(404).end();
      return;
    }
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      let body;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch (e) {
        res.writeHead(400, { 'content-type': 'application/json' }).end('{"error":{"code":"bad_request"}}');
        return;
      }
      if (!body || typeof body.data !== 'string') {
        res.writeHead(400, { 'content-type': 'application/json' }).end('{"error":{"code":"bad_request"}}');
        return;
      }
      const channel = m[1];
      const offset = (offsets.get(channel) || 0) + 1;
      offsets.set(channel, offset);
      io.to(`ch:${channel}`).emit('publication', { channel, offset, data: body.data, from: null, at: Date.now() });
      res.writeHead(201, { 'content-type': 'application/json' }).end(JSON.stringify({ offset }));
    });
  });
  const io =
    adapterKind === 'streams'
      ? new Server(server, {
          serveClient: false,
          adapter: createStreamsAdapter(pub),
          // socket.io's defaults: missed packets kept two minutes for a reconnecting socket.
          connectionStateRecovery: { maxDisconnectionDuration: 2 * 60 * 1000 },
        })
      : new Server(server, { serveClient: false, adapter: createAdapter(pub, sub) });

  io.on('connection', (socket) => {
    let uid = null;

    socket.on('join', (arg, ack) => {
      const u = typeof arg === 'string' ? arg : arg && arg.uid;
      if (typeof u !== 'string' || !UID.test(u)) return fail(ack, 'bad_request', 'bad uid');
      uid = u;
      socket.join(uid);
      if (typeof ack === 'function') ack({ ok: true });
    });

    socket.on('subscribe', (arg, ack) => {
      const channel = arg && arg.channel;
      if (typeof channel !== 'string' || !/^[a-z0-9_.:-]{1,64}$/.test(channel)) {
        return fail(ack, 'bad_request', 'bad channel');
      }
      socket.join(`ch:${channel}`);
      if (typeof ack === 'function') ack({ ok: true, channel, offset: 0, publications: [] });
    });

    socket.on('chat', (arg, ack) => {
      let evt = arg;
      if (typeof evt === 'string') {
        try {
          evt = JSON.parse(evt);
        } catch (e) {
          return fail(ack, 'bad_request', 'bad JSON');
        }
      }
      if (!uid) return fail(ack, 'unauthorized', 'join first');
      if (!evt || evt.EvtType !== 'message') return fail(ack, 'bad_request', 'only message');
      if (typeof evt.To !== 'string' || !UID.test(evt.To)) return fail(ack, 'bad_request', 'bad To');
      const sentAt = Date.now();
      io.to(evt.To).emit('chat', {
        EvtType: 'message',
        From: uid,
        Originated: '',
        To: evt.To,
        MsgID: evt.MsgID,
        Body: evt.Body,
        Timestamp: Math.floor(sentAt / 1000),
        SentAt: sentAt,
      });
      if (typeof ack === 'function') ack({ ok: true, MsgID: evt.MsgID, SentAt: sentAt });
    });
  });

  server.listen(port, host, () => {
    const a = server.address();
    console.log(`baseline (${adapterKind}) listening on ${a.address}:${a.port}`);
  });

  const stop = () => {
    io.close();
    Promise.allSettled([pub.quit(), sub.quit()]).then(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
