// Support tickets (contract §10), shared by the staff console (support.html) and the shop
// demo's customer side (/demo/shop/): one socket's view of its tickets and their messages.
//
// A ticket is a group: its messages are group `message` events (From = the ticket's gid,
// Originated = who wrote), the staff member joining is `join`, and the ticket's state comes
// in `ticket` events (Body = the ticket as JSON). Every stored event is acked once handled,
// so the server does not send it again; events are deduplicated by Seq, as the server may
// replay what an earlier socket received but did not ack.

import { h } from './dom.js';
import { clockTime, newMsgId } from './util.js';

const ACK_TIMEOUT_MS = 15000;

/** Emits a `chat` event and resolves with its ack (rejects on an error answer). */
export function chat(socket, event) {
  return new Promise((resolve, reject) => {
    socket.timeout(ACK_TIMEOUT_MS).emit('chat', event, (err, ack) => {
      if (err) return reject(new Error('The server did not answer. Try again.'));
      if (ack && ack.error) {
        const e = new Error(ack.error.message || ack.error.code);
        e.code = ack.error.code;
        return reject(e);
      }
      resolve(ack);
    });
  });
}

/** Tickets and their messages as one socket sees them; emits `change` with the gid. */
export class TicketDesk extends EventTarget {
  constructor(me) {
    super();
    this.me = me;
    /** gid → {ticket (latest known state), messages: [{MsgID, from, body, at}]} */
    this.tickets = new Map();
    this.seen = new Set();
    this.onChat = (evt, ack) => this.take(evt, ack);
  }

  attach(socket) {
    this.socket = socket;
    socket.on('chat', this.onChat);
  }

  entry(gid) {
    if (!this.tickets.has(gid)) this.tickets.set(gid, { ticket: null, messages: [] });
    return this.tickets.get(gid);
  }

  take(evt, ack) {
    if (typeof evt === 'string') {
      try { evt = JSON.parse(evt); } catch (_) { return; }
    }
    if (typeof ack === 'function') ack({ ok: true });
    if (!evt || typeof evt.From !== 'string' || !evt.From.startsWith('group_ticket-')) return;
    if (evt.Seq && this.seen.has(evt.Seq)) return;
    if (evt.Seq) this.seen.add(evt.Seq);
    const gid = evt.From;
    const e = this.entry(gid);
    if (evt.EvtType === 'ticket') {
      try {
        const t = JSON.parse(evt.Body);
        // States only move forward; a replayed older one is ignored.
        const order = { open: 0, claimed: 1, closed: 2 };
        if (!e.ticket || order[t.state] >= order[e.ticket.state]) e.ticket = t;
      } catch (_) { return; }
    } else if (evt.EvtType === 'message') {
      if (e.messages.some((m) => m.MsgID === evt.MsgID && m.from === evt.Originated)) return;
      e.messages.push({ MsgID: evt.MsgID, from: evt.Originated, body: evt.Body, at: evt.SentAt || Date.now() });
    } else if (evt.EvtType === 'join') {
      if (e.ticket && e.ticket.state === 'open') e.ticket = { ...e.ticket, state: 'claimed', staff: evt.Originated };
    } else {
      return;
    }
    this.dispatchEvent(new CustomEvent('change', { detail: gid }));
  }

  /** Adds what this socket itself said (its own messages do not come back to it). */
  mine(gid, MsgID, body) {
    const e = this.entry(gid);
    e.messages.push({ MsgID, from: this.me, body, at: Date.now() });
    this.dispatchEvent(new CustomEvent('change', { detail: gid }));
  }

  /**
   * Loads a ticket's history (oldest first) from REST, merging what is already shown. The
   * server writes history behind the message path, so a staff member who has just claimed a
   * ticket may find its first message not there yet: with `untilAny`, it asks again a few
   * times until there is at least one message.
   */
  async loadHistory(gid, token, { untilAny = false } = {}) {
    for (let attempt = 0; attempt < 20; attempt++) {
      await this.loadHistoryOnce(gid, token);
      if (!untilAny || this.entry(gid).messages.length > 0) return;
      await new Promise((r) => setTimeout(r, 250 * Math.min(attempt + 1, 4)));
    }
  }

  async loadHistoryOnce(gid, token) {
    const res = await fetch(`/api/v1/conversations/${encodeURIComponent(gid)}/messages?limit=200`, {
      headers: { Authorization: `Bearer ${token}`, Accept: 'application/json' },
      cache: 'no-store',
    });
    if (!res.ok) return;
    const page = await res.json();
    const e = this.entry(gid);
    for (const m of (page.items || []).slice().reverse()) {
      if (m.EvtType !== 'message') continue;
      const from = m.Originated || m.From;
      if (e.messages.some((x) => x.MsgID === m.MsgID && x.from === from)) continue;
      e.messages.push({ MsgID: m.MsgID, from, body: m.Body, at: m.SentAt });
    }
    e.messages.sort((a, b) => a.at - b.at);
    this.dispatchEvent(new CustomEvent('change', { detail: gid }));
  }

  async send(gid, body) {
    const MsgID = newMsgId();
    await chat(this.socket, { EvtType: 'message', To: gid, MsgID, Body: body });
    this.mine(gid, MsgID, body);
  }
}

/** The message list of one ticket, `me` on the right. */
export function renderMessages(list, messages, me, names = {}) {
  list.replaceChildren(...messages.map((m) => h('li', { className: `ticket-msg${m.from === me ? ' mine' : ''}` },
    h('span', { className: 'ticket-msg-from', text: m.from === me ? 'You' : (names[m.from] || m.from) }),
    h('span', { className: 'ticket-msg-time', text: clockTime(m.at) }),
    h('div', { className: 'ticket-msg-body', text: m.body }))));
  list.scrollTop = list.scrollHeight;
}

/** "3 min" for a wait since `ms`. */
export function waited(ms, now = Date.now()) {
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}
