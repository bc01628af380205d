// The shop demo (/demo/shop/): both halves of webchat in one page.
//
// Broadcast: item stock comes live from the `stock` channel (contract §9), which a back-end
// feeds through the REST publish API (examples/shop-feed); each publication is the whole
// stock list as JSON, so the newest one is all the page needs.
// Conversation: on an out-of-stock item, "Talk to staff" opens a support ticket (§10) with the
// item as its topic; any staff member can claim it, and their answer comes back here, also
// after a reload, since the shopper keeps their guest identity (the guest token the server
// hands out in its `session` event) in localStorage.

/* global io */

import { h } from '/js/dom.js';
import { newMsgId } from '/js/util.js';
import { TicketDesk, chat, renderMessages } from '/js/ticket.js';

const GUEST_KEY = 'webchat.shop.guest';
const TICKETS_KEY = 'webchat.shop.tickets';
const $ = (id) => document.getElementById(id);

const stock = { items: [], offset: 0, epoch: null };
/** topic (item id) → ticket gid, for tickets this shopper opened. */
const tickets = JSON.parse(localStorage.getItem(TICKETS_KEY) || '{}');
let current = null; // { item, gid }
let me = null;

const guest = JSON.parse(localStorage.getItem(GUEST_KEY) || 'null');
const socket = io({ auth: guest?.token ? { guest: true, token: guest.token } : { guest: true }, transports: ['websocket', 'polling'] });
const desk = new TicketDesk(null);
desk.attach(socket);

socket.on('session', (s) => {
  if (guest && guest.uid !== s.uid) {
    // A new identity (the old token expired): its tickets are not this shopper's any more.
    for (const k of Object.keys(tickets)) delete tickets[k];
    localStorage.setItem(TICKETS_KEY, '{}');
  }
  me = s.uid;
  desk.me = s.uid;
  localStorage.setItem(GUEST_KEY, JSON.stringify({ uid: s.uid, token: s.token }));
  $('shop-who').textContent = `shopping as ${s.uid.slice(0, 14)}…`;
});

socket.on('connect', () => {
  $('shop-live').textContent = 'Live';
  const since = stock.epoch ? { offset: stock.offset, epoch: stock.epoch } : undefined;
  socket.timeout(15000).emit('subscribe', { channel: 'stock', since }, (err, ack) => {
    if (err || !ack || ack.error) {
      $('shop-empty').textContent = ack?.error?.code === 'not_found'
        ? 'The stock channel does not exist yet: start examples/shop-feed.'
        : 'Could not read the stock.';
      return;
    }
    stock.epoch = ack.epoch;
    for (const p of ack.publications || []) take(p);
    if (!(ack.publications || []).length) $('shop-empty').textContent = 'No stock published yet: start examples/shop-feed.';
  });
});
socket.on('disconnect', () => { $('shop-live').textContent = 'Reconnecting…'; });
socket.on('publication', (p) => { if (p.channel === 'stock') take(p); });

function take(p) {
  if (p.offset <= stock.offset && p.epoch === stock.epoch) return;
  stock.offset = p.offset;
  stock.epoch = p.epoch;
  try {
    const data = JSON.parse(p.data);
    if (Array.isArray(data.items)) stock.items = data.items;
  } catch (_) { return; }
  renderItems();
}

function renderItems() {
  $('shop-empty').hidden = stock.items.length > 0;
  $('shop-items').replaceChildren(...stock.items.map((item) => {
    const out = !(item.stock > 0);
    return h('li', { className: 'shop-item', dataset: { item: String(item.id) } },
      h('h3', { text: item.name || item.id }),
      item.price ? h('span', { className: 'shop-price', text: item.price }) : null,
      h('span', { className: `shop-stock${out ? ' out' : ''}`, dataset: { stock: String(item.stock) }, text: out ? 'Out of stock' : `${item.stock} in stock` }),
      out ? h('button', { className: 'btn btn-primary', attrs: { type: 'button' }, on: { click: () => openChat(item) } }, 'Talk to staff') : null);
  }));
}

function openChat(item) {
  current = { item, gid: tickets[item.id] || null };
  $('shop-chat').hidden = false;
  $('shop-chat-title').textContent = `About: ${item.name || item.id}`;
  const input = $('shop-input');
  if (!current.gid) input.value = `Hi! When will "${item.name || item.id}" be back in stock?`;
  const token = JSON.parse(localStorage.getItem(GUEST_KEY) || 'null')?.token;
  // After a reload, what was said before (acked by the earlier page) comes from history.
  if (current.gid && token) desk.loadHistory(current.gid, token).catch(() => {});
  renderChat();
  input.focus();
}

function renderChat() {
  if (!current) return;
  const e = current.gid ? desk.entry(current.gid) : null;
  const t = e?.ticket;
  $('shop-chat-state').textContent = !current.gid ? 'Ask us anything about this item.'
    : !t || t.state === 'open' ? 'Waiting for staff… you can leave; the answer will wait for you.'
      : t.state === 'claimed' ? `${t.staff} is answering.` : 'This chat has ended.';
  $('shop-chat-end').hidden = !current.gid || t?.state === 'closed';
  $('shop-composer').hidden = t?.state === 'closed';
  renderMessages($('shop-messages'), e ? e.messages : [], me);
}

desk.addEventListener('change', (e) => { if (current && e.detail === current.gid) renderChat(); });

$('shop-chat-hide').addEventListener('click', () => { $('shop-chat').hidden = true; current = null; });
$('shop-chat-end').addEventListener('click', async () => {
  try {
    await chat(socket, { EvtType: 'close', To: current.gid });
    const e = desk.entry(current.gid);
    e.ticket = { ...(e.ticket || {}), state: 'closed' };
    delete tickets[current.item.id];
    localStorage.setItem(TICKETS_KEY, JSON.stringify(tickets));
    renderChat();
  } catch (err) {
    showError(err.message);
  }
});

function showError(text) {
  $('shop-chat-error').textContent = text || '';
  $('shop-chat-error').hidden = !text;
}

$('shop-composer').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const input = $('shop-input');
  const body = input.value.trim();
  if (!body || !current) return;
  showError('');
  try {
    if (!current.gid) {
      const MsgID = newMsgId();
      const ack = await chat(socket, { EvtType: 'support', MsgID, Body: body, Topic: String(current.item.id) });
      current.gid = ack.Ticket;
      tickets[current.item.id] = ack.Ticket;
      localStorage.setItem(TICKETS_KEY, JSON.stringify(tickets));
      const e = desk.entry(ack.Ticket);
      if (!e.ticket) e.ticket = { ticket: ack.Ticket, state: 'open', topic: String(current.item.id), customer: me, openedAt: ack.SentAt };
      desk.mine(ack.Ticket, MsgID, body);
    } else {
      await desk.send(current.gid, body);
    }
    input.value = '';
    renderChat();
  } catch (err) {
    showError(err.message);
  }
});
