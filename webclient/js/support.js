// The staff console (support.html, contract §10): the queue of waiting tickets with how long
// each has waited, claiming one (exactly one staff member wins; the others are told it was
// taken), the conversation with its history, answering, and closing.
//
// It uses the web client's session (the same login, kept in localStorage) or asks for one.
// The queue is read from REST once and then kept current by `ticket` events, which the server
// stores for every staff member, so a console opened later finds the same queue.

/* global io */

import { h } from './dom.js';
import { loadSession, saveSession } from './session.js';
import { TicketDesk, chat, renderMessages, waited } from './ticket.js';

const $ = (id) => document.getElementById(id);

async function login(uid, password) {
  const res = await fetch('/api/v1/login', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
    body: JSON.stringify({ uid, password }),
  });
  const body = await res.json().catch(() => null);
  if (!res.ok) throw new Error(body?.error?.message || 'Log in failed');
  return saveSession(body, uid);
}

async function listTickets(token, state) {
  const res = await fetch(`/api/v1/support/tickets?state=${state}&limit=200`, {
    headers: { Authorization: `Bearer ${token}`, Accept: 'application/json' },
    cache: 'no-store',
  });
  const body = await res.json().catch(() => null);
  if (!res.ok) throw new Error(body?.error?.message || `Could not read the ${state} tickets`);
  return body.items || [];
}

function showError(text) {
  const el = $('support-error');
  el.textContent = text || '';
  el.hidden = !text;
}

function start(session) {
  $('support-login').hidden = true;
  $('support-app').hidden = false;
  $('support-me').textContent = session.uid;
  const desk = new TicketDesk(session.uid);
  let selected = null;
  const socket = io({ auth: { token: session.token }, transports: ['websocket', 'polling'] });
  desk.attach(socket);
  socket.on('connect', () => { $('support-conn').textContent = 'Online'; });
  socket.on('disconnect', () => { $('support-conn').textContent = 'Reconnecting…'; });
  socket.on('connect_error', (e) => {
    $('support-conn').textContent = e.message === 'unauthorized' ? 'Logged out' : 'Offline';
  });

  const item = (t) => h('li', {},
    h('button', {
      className: `ticket-item${t.ticket === selected ? ' active' : ''}`,
      attrs: { type: 'button', 'data-ticket': t.ticket },
      on: { click: () => select(t.ticket) },
    },
    h('span', { className: 'ticket-item-top' },
      h('span', { text: t.topic || 'No topic' }),
      t.state === 'open' ? h('span', { className: 'ticket-wait', text: `waiting ${waited(t.openedAt)}` }) : null),
    h('span', { className: 'ticket-item-sub', text: t.customer })));

  function renderQueue() {
    const all = [...desk.tickets.values()].map((e) => e.ticket).filter(Boolean);
    const open = all.filter((t) => t.state === 'open').sort((a, b) => a.openedAt - b.openedAt);
    const mine = all.filter((t) => t.state === 'claimed' && t.staff === session.uid);
    $('queue-open').replaceChildren(...(open.length ? open.map(item) : [h('li', { className: 'ticket-item-sub', text: 'Nobody is waiting.' })]));
    $('queue-mine').replaceChildren(...(mine.length ? mine.map(item) : [h('li', { className: 'ticket-item-sub', text: 'None yet.' })]));
  }

  function renderTicket() {
    if (!selected) return;
    const e = desk.entry(selected);
    const t = e.ticket;
    $('ticket-empty').hidden = true;
    $('ticket-pane').hidden = false;
    $('ticket-title').textContent = t?.topic || 'Ticket';
    const state = !t ? '' : t.state === 'open' ? `waiting ${waited(t.openedAt)}`
      : t.state === 'claimed' ? `with ${t.staff === session.uid ? 'you' : t.staff}` : 'closed';
    $('ticket-meta').textContent = t ? `${t.customer} · ${state}` : '';
    const mine = t && t.state === 'claimed' && t.staff === session.uid;
    $('ticket-claim').hidden = !(t && t.state === 'open');
    $('ticket-close').hidden = !mine;
    $('ticket-composer').hidden = !mine;
    renderMessages($('ticket-messages'), e.messages, session.uid);
  }

  async function select(gid) {
    selected = gid;
    renderQueue();
    renderTicket();
    const t = desk.entry(gid).ticket;
    if (t && t.staff === session.uid) await desk.loadHistory(gid, session.token, { untilAny: true });
  }

  desk.addEventListener('change', (e) => {
    renderQueue();
    if (e.detail === selected) renderTicket();
  });

  $('ticket-claim').addEventListener('click', async () => {
    const gid = selected;
    showError('');
    try {
      await chat(socket, { EvtType: 'claim', To: gid });
      const e = desk.entry(gid);
      e.ticket = { ...e.ticket, state: 'claimed', staff: session.uid, claimedAt: Date.now() };
      renderQueue();
      renderTicket();
      await desk.loadHistory(gid, session.token, { untilAny: true });
    } catch (err) {
      showError(err.code === 'conflict' ? 'Someone else took this ticket.' : err.message);
    }
  });
  $('ticket-close').addEventListener('click', async () => {
    showError('');
    try {
      await chat(socket, { EvtType: 'close', To: selected });
      const e = desk.entry(selected);
      e.ticket = { ...e.ticket, state: 'closed', closedAt: Date.now() };
      renderQueue();
      renderTicket();
    } catch (err) {
      showError(err.message);
    }
  });
  $('ticket-composer').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const input = $('ticket-input');
    const body = input.value.trim();
    if (!body || !selected) return;
    showError('');
    try {
      await desk.send(selected, body);
      input.value = '';
    } catch (err) {
      showError(err.message);
    }
  });

  (async () => {
    try {
      for (const state of ['open', 'claimed']) {
        for (const t of await listTickets(session.token, state)) {
          const e = desk.entry(t.ticket);
          if (!e.ticket) e.ticket = t;
        }
      }
      renderQueue();
    } catch (err) {
      showError(err.message);
    }
  })();
  // Waiting times move on.
  setInterval(() => { renderQueue(); renderTicket(); }, 10000);
}

function main() {
  const session = loadSession();
  if (session) return start(session);
  $('support-login').hidden = false;
  $('support-login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      start(await login($('support-uid').value.trim(), $('support-password').value));
    } catch (err) {
      $('support-login-error').textContent = err.message;
      $('support-login-error').hidden = false;
    }
  });
}

main();
