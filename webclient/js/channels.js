// Channels (contract §9): the sidebar's channel list, a channel's page (history on open, live
// publications, publishing where allowed), and the read-only guest view.
//
// Recovery: each subscribed channel remembers the epoch and newest offset it has shown. After
// a reconnect it subscribes again with `since: {offset, epoch}`; the server answers exactly
// what was missed (`recovered: true`) or, when the history no longer holds it or the epoch
// changed, the newest publications, which then replace what is shown. Live publications are
// taken only when they follow the newest shown offset: one already shown is dropped, and one
// after a gap triggers a fresh subscribe, so nothing is shown twice or skipped.
//
// Kept in this file (and css/channels.css) so the rest of the client changes little: main.js
// constructs a ChannelsPanel, routes `#/ch/<name>` to it, and starts the guest view for
// `#/guest/<name>` without a session.

/* global io */

import { h } from './dom.js';
import { clockTime, newMsgId } from './util.js';

const REQUEST_TIMEOUT_MS = 15000;
/** Publications kept on screen per channel (the server's history is the bound that matters). */
const MAX_SHOWN = 500;
const NAME_RE = /^[a-z0-9_.:-]{1,64}$/;

function addStylesheet() {
  if (document.querySelector('link[data-channels-css]')) return;
  document.head.appendChild(h('link', { attrs: { rel: 'stylesheet', href: 'css/channels.css', 'data-channels-css': true } }));
}

/** The channel named by a `#/ch/<name>` or `#/guest/<name>` hash, if valid. */
export function channelOfHash(hash, prefix = '#/ch/') {
  if (!hash.startsWith(prefix)) return null;
  let name;
  try {
    name = decodeURIComponent(hash.slice(prefix.length));
  } catch (_) {
    return null;
  }
  return NAME_RE.test(name) ? name : null;
}

/** What one socket knows of its channels: subscribes, recovers, keeps the shown list. */
class Subscriptions extends EventTarget {
  constructor() {
    super();
    this.socket = null;
    /** name → { epoch, offset, items: [publication], subscribed, error } */
    this.channels = new Map();
    this.onPublication = (p) => this.take(p);
    this.onConnect = () => {
      for (const name of this.channels.keys()) this.subscribe(name);
    };
  }

  attach(socket) {
    this.socket = socket;
    socket.on('publication', this.onPublication);
    socket.on('connect', this.onConnect);
    if (socket.connected) this.onConnect();
  }

  detach() {
    if (!this.socket) return;
    this.socket.off('publication', this.onPublication);
    this.socket.off('connect', this.onConnect);
    this.socket = null;
  }

  state(name) {
    if (!this.channels.has(name)) this.channels.set(name, { epoch: null, offset: 0, items: [], subscribed: false, error: null });
    return this.channels.get(name);
  }

  changed(name) {
    this.dispatchEvent(new CustomEvent('change', { detail: name }));
  }

  /** Subscribes (again) to `name`, asking for what was missed since the newest shown. */
  subscribe(name) {
    const ch = this.state(name);
    if (!this.socket || !this.socket.connected) return;
    const payload = { channel: name };
    if (ch.epoch) payload.since = { offset: ch.offset, epoch: ch.epoch };
    this.socket.timeout(REQUEST_TIMEOUT_MS).emit('subscribe', payload, (err, res) => {
      if (err || !res) return; // the next connect subscribes again
      if (res.error) {
        ch.error = res.error;
        ch.subscribed = false;
        this.changed(name);
        return;
      }
      ch.error = null;
      ch.subscribed = true;
      const fresh = Array.isArray(res.publications) ? res.publications : [];
      if (res.recovered && res.epoch === ch.epoch) ch.items.push(...fresh);
      else ch.items = fresh.slice();
      ch.epoch = res.epoch;
      ch.offset = res.offset;
      if (ch.items.length > MAX_SHOWN) ch.items.splice(0, ch.items.length - MAX_SHOWN);
      this.changed(name);
    });
  }

  /** A live publication. */
  take(p) {
    if (!p || typeof p !== 'object' || !this.channels.has(p.channel)) return;
    const ch = this.channels.get(p.channel);
    if (!ch.subscribed) return; // the subscribe's answer is still to come, and covers it
    if (p.epoch !== ch.epoch) {
      // The channel's history was lost: this publication starts the new one.
      ch.epoch = p.epoch;
      ch.items = [p];
    } else if (p.offset <= ch.offset) {
      return; // already shown
    } else if (p.offset !== ch.offset + 1) {
      this.subscribe(p.channel); // a gap: recover it from the history
      return;
    } else {
      ch.items.push(p);
      if (ch.items.length > MAX_SHOWN) ch.items.shift();
    }
    ch.offset = p.offset;
    this.changed(p.channel);
  }

  /** Publishes `data` on `name`; resolves with the server's answer. */
  publish(name, data) {
    return new Promise((resolve, reject) => {
      if (!this.socket || !this.socket.connected) return reject(new Error('offline'));
      this.socket.timeout(REQUEST_TIMEOUT_MS).emit('publish', { channel: name, data, MsgID: newMsgId() }, (err, res) => {
        if (err) reject(err);
        else resolve(res || {});
      });
    });
  }
}

/** Renders one channel's publications into `log` (text only). */
function renderLog(log, ch, me) {
  log.replaceChildren(
    ...ch.items.map((p) =>
      h(
        'div',
        { className: `channel-pub${p.from && p.from === me ? ' mine' : ''}`, dataset: { offset: String(p.offset) } },
        h('span', { className: 'channel-pub-from', text: p.from || 'server' }),
        h('span', { className: 'channel-pub-time', text: clockTime(p.at) }),
        h('div', { className: 'channel-pub-data', text: p.data, attrs: { dir: 'auto' } }),
      ),
    ),
  );
  if (!ch.items.length) log.appendChild(h('p', { className: 'channel-empty', text: 'Nothing published yet.' }));
  log.scrollTop = log.scrollHeight;
}

/** The channels of a signed-in user: sidebar list and channel page. */
export class ChannelsPanel {
  /**
   * @param {{ connection: import('./connection.js').Connection, me: string, getToken: () => string,
   *           onOpen: (name: string) => void, notify: (text: string) => void }} deps
   */
  constructor({ connection, me, getToken, onOpen, notify }) {
    addStylesheet();
    this.connection = connection;
    this.me = me;
    this.getToken = getToken;
    this.notify = notify;
    this.subs = new Subscriptions();
    this.list = [];
    this.open = null;
    this.nav = h('nav', { className: 'channel-nav', attrs: { 'aria-label': 'Channels', id: 'channel-nav' } },
      h('h2', { className: 'channel-nav-title', text: 'Channels' }),
      (this.navList = h('ul', { className: 'channel-list', attrs: { id: 'channel-list' } })));
    this.nav.addEventListener('click', (e) => {
      const btn = e.target.closest('button[data-channel]');
      if (btn) onOpen(btn.dataset.channel);
    });
    this.log = h('div', { className: 'channel-log', attrs: { id: 'channel-log', role: 'log', 'aria-live': 'polite', tabindex: '0' } });
    this.title = h('h2', { className: 'channel-title', attrs: { id: 'channel-title' } });
    this.input = h('input', { attrs: { id: 'channel-input', 'aria-label': 'Publish on this channel', placeholder: 'Write to the channel…', autocomplete: 'off', maxlength: '16384' } });
    this.form = h('form', { className: 'channel-composer', attrs: { id: 'channel-form' } },
      this.input,
      h('button', { className: 'btn btn-primary', attrs: { type: 'submit' }, text: 'Send' }));
    this.form.addEventListener('submit', (e) => {
      e.preventDefault();
      this.send();
    });
    this.view = h('section', { className: 'channel-view', attrs: { id: 'channel-view', 'aria-labelledby': 'channel-title' }, hidden: true },
      h('header', { className: 'channel-header' }, this.title), this.log, this.form);
    this.onChange = (e) => {
      if (e.detail === this.open) this.render();
    };
    this.onState = (e) => {
      if (e.detail === 'online' && this.connection.socket && this.subs.socket !== this.connection.socket) {
        this.subs.attach(this.connection.socket);
      }
    };
  }

  /** Mounts into the sidebar (above the conversations) and the pane; call after the connection starts. */
  start() {
    const convList = document.getElementById('conv-list');
    if (convList && convList.parentNode) convList.parentNode.insertBefore(this.nav, convList);
    const pane = document.querySelector('main.pane');
    if (pane) pane.appendChild(this.view);
    this.subs.addEventListener('change', this.onChange);
    this.connection.addEventListener('state', this.onState);
    if (this.connection.socket) this.subs.attach(this.connection.socket);
    this.refresh();
  }

  stop() {
    this.subs.removeEventListener('change', this.onChange);
    this.connection.removeEventListener('state', this.onState);
    this.subs.detach();
    this.nav.remove();
    this.view.remove();
  }

  /** Loads the channel list. */
  async refresh() {
    try {
      const res = await fetch('api/v1/channels', { headers: { Authorization: `Bearer ${this.getToken()}` }, cache: 'no-store' });
      if (!res.ok) return;
      const body = await res.json();
      this.list = Array.isArray(body.items) ? body.items : [];
      this.renderNav();
    } catch (_) {
      /* offline: the list stays as it was */
    }
  }

  renderNav() {
    this.navList.replaceChildren(
      ...this.list.map((c) =>
        h('li', {},
          h('button', {
            className: `channel-link${c.name === this.open ? ' active' : ''}`,
            dataset: { channel: c.name },
            attrs: { type: 'button', 'aria-current': c.name === this.open ? 'page' : null },
            text: `# ${c.name}`,
          })),
      ),
    );
  }

  /** Shows channel `name` (null: none); subscribes on first open. */
  show(name) {
    this.open = name;
    this.view.hidden = !name;
    this.renderNav();
    if (!name) return;
    const ch = this.subs.state(name);
    if (!ch.subscribed) this.subs.subscribe(name);
    this.render();
  }

  render() {
    const name = this.open;
    if (!name) return;
    const ch = this.subs.state(name);
    const info = this.list.find((c) => c.name === name);
    this.title.textContent = `# ${name}`;
    this.form.hidden = Boolean(info && info.publish === 'server');
    if (ch.error) {
      this.log.replaceChildren(h('p', { className: 'form-error', text: ch.error.message || ch.error.code }));
      return;
    }
    renderLog(this.log, ch, this.me);
  }

  async send() {
    const data = this.input.value;
    if (!data.trim() || !this.open) return;
    try {
      const res = await this.subs.publish(this.open, data);
      if (res.error) this.notify(res.error.message || res.error.code);
      else this.input.value = '';
    } catch (_) {
      this.notify('Offline: not sent. Try again once the connection is back.');
    }
  }
}

/** The read-only page of one guest channel, for visitors without an account. */
export class GuestView {
  constructor(name) {
    addStylesheet();
    this.name = name;
    this.subs = new Subscriptions();
    this.log = h('div', { className: 'channel-log', attrs: { id: 'channel-log', role: 'log', 'aria-live': 'polite', tabindex: '0' } });
    this.status = h('p', { className: 'guest-status', attrs: { id: 'guest-status', role: 'status' }, text: 'Connecting…' });
    this.root = h('main', { className: 'guest-view', attrs: { id: 'guest-view', 'aria-labelledby': 'guest-title' } },
      h('header', { className: 'channel-header' },
        h('h1', { className: 'channel-title', attrs: { id: 'guest-title' }, text: `# ${name}` }),
        this.status),
      this.log,
      h('p', { className: 'guest-note', text: 'You are reading as a guest. Log in to take part.' }));
    this.subs.addEventListener('change', () => this.render());
  }

  start() {
    document.body.appendChild(this.root);
    if (typeof io !== 'function') throw new Error('socket.io client missing (vendor/socket.io.min.js)');
    this.socket = io({ path: '/socket.io/', auth: { guest: true }, reconnectionDelay: 500, reconnectionDelayMax: 8000 });
    this.socket.on('session', (s) => {
      this.root.dataset.uid = s && s.uid ? s.uid : '';
    });
    this.socket.on('connect', () => {
      this.status.textContent = 'Live';
    });
    this.socket.on('disconnect', () => {
      this.status.textContent = 'Reconnecting…';
    });
    this.socket.on('connect_error', (err) => {
      this.status.textContent = err && err.message === 'unauthorized' ? 'Guest access is off on this server.' : 'Reconnecting…';
    });
    this.subs.state(this.name);
    this.subs.attach(this.socket);
  }

  render() {
    const ch = this.subs.state(this.name);
    if (ch.error) {
      this.log.replaceChildren(h('p', { className: 'form-error', text: ch.error.code === 'forbidden' ? 'This channel is not open to guests.' : ch.error.message || ch.error.code }));
      return;
    }
    renderLog(this.log, ch, null);
  }
}
