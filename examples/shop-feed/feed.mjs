#!/usr/bin/env node
// The shop demo's stock feed: a back-end that publishes stock changes to the `stock` channel
// through webchat's REST publish API with a service key (contract §9), and every shopper's
// page updates at once. Node 18+, no packages.
//
//   WEBCHAT_URL=http://localhost:4000   the chat server
//   WEBCHAT_SERVICE_KEY=<secret>        a secret from the server's WEBCHAT_SERVICE_KEYS
//   WEBCHAT_ADMIN_TOKEN=<token>         optional: creates the `stock` channel (server-only
//                                       publishing, open to guests) and a demo staff account
//   FEED_INTERVAL_MS=3000               how often stock changes; FEED_ROUNDS=0 runs forever
//
// Each publication is the whole stock list as JSON ({"items":[{id,name,price,stock}]}), so
// a page that connects late needs only the newest one.

const url = process.env.WEBCHAT_URL || 'http://localhost:4000';
const serviceKey = process.env.WEBCHAT_SERVICE_KEY;
const admin = process.env.WEBCHAT_ADMIN_TOKEN;
const every = Number(process.env.FEED_INTERVAL_MS || 3000);
const rounds = Number(process.env.FEED_ROUNDS || 0);
const staff = { uid: process.env.DEMO_STAFF_UID || 'staff', password: process.env.DEMO_STAFF_PASSWORD || 'staff-demo-password' };

if (!serviceKey) {
  console.error('set WEBCHAT_SERVICE_KEY to a secret listed in the server\'s WEBCHAT_SERVICE_KEYS');
  process.exit(2);
}

const items = [
  { id: 'kettle-red', name: 'Red kettle', price: '€39', stock: 0 },
  { id: 'mug-blue', name: 'Blue mug', price: '€9', stock: 12 },
  { id: 'teapot', name: 'Cast-iron teapot', price: '€55', stock: 3 },
  { id: 'grinder', name: 'Coffee grinder', price: '€79', stock: 1 },
  { id: 'scale', name: 'Kitchen scale', price: '€25', stock: 7 },
  { id: 'tray', name: 'Oak tray', price: '€32', stock: 0 },
];

async function call(method, path, token, body) {
  const res = await fetch(`${url}/api/v1${path}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

async function setUp() {
  const channel = await call('PUT', '/admin/channels/stock', admin, { publish: 'server', guests: true, historySize: 20 });
  if (channel.status !== 200) throw new Error(`creating the stock channel: ${channel.status} ${JSON.stringify(channel.body)}`);
  const signup = await fetch(`${url}/api/v1/signup`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ uid: staff.uid, password: staff.password, name: 'Shop staff' }),
  });
  if (signup.status !== 201 && signup.status !== 409) throw new Error(`demo staff signup: ${signup.status}`);
  const roles = await call('PUT', `/admin/users/${staff.uid}/roles`, admin, { roles: ['staff'] });
  if (roles.status !== 200) throw new Error(`staff role: ${roles.status}`);
  console.log(`stock channel ready; staff console: ${url}/support.html (log in as ${staff.uid} / ${staff.password})`);
}

async function publish() {
  const res = await call('POST', '/channels/stock/publish', serviceKey, { data: JSON.stringify({ items }) });
  if (res.status !== 201) throw new Error(`publish: ${res.status} ${JSON.stringify(res.body)}`);
  console.log(`offset ${res.body.offset}: ${items.map((i) => `${i.id}=${i.stock}`).join(' ')}`);
}

/** One stock change: a sale or a delivery, but the red kettle stays out (ask the staff!). */
function change() {
  const item = items[1 + Math.floor(Math.random() * (items.length - 1))];
  item.stock = Math.max(0, item.stock + (Math.random() < 0.6 ? -1 : 2));
}

if (admin) await setUp();
await publish();
for (let round = 1; rounds === 0 || round < rounds; round++) {
  await new Promise((r) => setTimeout(r, every));
  change();
  await publish();
}
