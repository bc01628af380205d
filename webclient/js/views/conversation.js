// One open conversation: header (with typing indicator), messages, composer.
//
// Messages are rendered keyed by message key: a status change updates the
// existing bubble in place (keeps text selections and the scroll position),
// new messages are inserted where they belong. Message bodies are set with
// textContent only.

import { $, h, setText } from '../dom.js';
import { clockTime, dayKey, dayLabel, utf8Length } from '../util.js';
import { paintAvatar } from './avatar.js';
import { statusMark } from './icons.js';

const GROUP_GAP_MS = 5 * 60 * 1000; // same sender within this → one visual group
const NEAR_BOTTOM_PX = 120;
const MAX_BODY_BYTES = 16 * 1024; // the server's default limit

export class ConversationView {
  /** @param {{store, client, me: string, onBack: () => void, notify: (text) => void}} opts */
  constructor({ store, client, me, onBack, notify }) {
    this.store = store;
    this.client = client;
    this.me = me;
    this.onBack = onBack;
    this.notify = notify;
    this.convId = null;
    this.nodes = new Map(); // key → element (messages and day separators)
    this.drafts = new Map(); // convId → unsent text

    this.empty = $('pane-empty');
    this.root = $('chat-view');
    this.avatar = $('chat-avatar');
    this.name = $('chat-name');
    this.sub = $('chat-sub');
    this.list = $('messages');
    this.form = $('composer');
    this.input = $('composer-input');
    this.sendBtn = $('send-btn');
    this.back = $('back-btn');

    this.handlers = [
      [this.form, 'submit', (e) => { e.preventDefault(); this.submit(); }],
      [this.input, 'input', () => this.onInput()],
      [this.input, 'keydown', (e) => {
        if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
          e.preventDefault();
          this.submit();
        }
      }],
      [this.input, 'blur', () => this.client.stopTyping()],
      [this.back, 'click', () => this.onBack()],
      [this.list, 'click', (e) => {
        const retry = e.target.closest('[data-retry]');
        if (retry) this.client.retry(this.convId, retry.dataset.retry);
      }],
    ];
    for (const [el, type, fn] of this.handlers) el.addEventListener(type, fn);
  }

  dispose() {
    for (const [el, type, fn] of this.handlers) el.removeEventListener(type, fn);
    this.close();
  }

  open(convId) {
    if (this.convId === convId) return;
    this.saveDraft();
    this.convId = convId;
    this.nodes.clear();
    this.list.replaceChildren();
    this.empty.hidden = true;
    this.root.hidden = false;
    this.root.dataset.conv = convId;
    paintAvatar(this.avatar, convId);
    setText(this.name, convId === this.me ? `${convId} (you)` : convId);
    this.input.value = this.drafts.get(convId) || '';
    this.autosize();
    this.updateSendButton();
    this.renderHeader();
    this.renderMessages({ scroll: 'bottom' });
    // Phones: don't pop the keyboard over the messages just by opening a chat.
    if (window.matchMedia('(pointer: fine)').matches) this.input.focus({ preventScroll: true });
  }

  close() {
    this.saveDraft();
    this.client.stopTyping();
    this.convId = null;
    this.nodes.clear();
    this.list.replaceChildren();
    this.root.hidden = true;
    delete this.root.dataset.conv;
    this.empty.hidden = false;
  }

  saveDraft() {
    if (!this.convId) return;
    if (this.input.value) this.drafts.set(this.convId, this.input.value);
    else this.drafts.delete(this.convId);
  }

  renderHeader() {
    if (!this.convId) return;
    const typing = this.client.isPeerTyping(this.convId);
    this.root.classList.toggle('peer-typing', typing);
    setText(this.sub, typing ? 'typing…' : this.convId === this.me ? 'Notes to yourself' : '');
    this.sub.hidden = !this.sub.textContent;
  }

  renderMessages({ scroll } = {}) {
    if (!this.convId) return;
    const list = this.list;
    const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < NEAR_BOTTOM_PX;
    const msgs = this.store.messages(this.convId);
    const wanted = [];
    let prevDay = null;
    let prev = null;
    let lastOwnAdded = false;
    for (const m of msgs) {
      const day = dayKey(m.at);
      if (day !== prevDay) {
        wanted.push(this.separator(day, m.at));
        prevDay = day;
        prev = null;
      }
      const cont = prev && prev.from === m.from && m.at - prev.at < GROUP_GAP_MS;
      const { el, created } = this.bubble(m, cont);
      if (created && m.out) lastOwnAdded = true;
      wanted.push(el);
      prev = m;
    }
    // Reconcile: keep existing nodes where they are, insert/move the rest, drop leftovers.
    const keep = new Set(wanted);
    for (const child of [...list.children]) if (!keep.has(child)) child.remove();
    for (const [key, el] of this.nodes) if (!keep.has(el)) this.nodes.delete(key);
    let cursor = list.firstElementChild;
    for (const el of wanted) {
      if (el === cursor) cursor = cursor.nextElementSibling;
      else list.insertBefore(el, cursor);
    }
    if (!msgs.length) {
      list.appendChild(
        h(
          'div',
          { className: 'messages-empty' },
          h('p', { className: 'messages-empty-title', text: 'No messages yet' }),
          h('p', { text: this.convId === this.me ? 'Jot something down for yourself.' : `Say hello to ${this.convId}. If they're offline, they get it when they're back.` }),
        ),
      );
    }
    if (scroll === 'bottom' || nearBottom || lastOwnAdded) list.scrollTop = list.scrollHeight;
  }

  separator(day, at) {
    const key = `day:${day}`;
    let el = this.nodes.get(key);
    if (!el) {
      el = h('div', { className: 'day-sep', attrs: { role: 'separator' } }, h('span', { text: dayLabel(at) }));
      this.nodes.set(key, el);
    }
    return el;
  }

  /** Creates or updates the bubble of message `m`. */
  bubble(m, cont) {
    let el = this.nodes.get(m.key);
    let created = false;
    if (!el) {
      created = true;
      el = h(
        'div',
        { className: `msg ${m.out ? 'out' : 'in'}`, dataset: { key: m.key, msgid: m.id } },
        h(
          'div',
          { className: 'bubble' },
          h('div', { className: 'msg-text', text: m.body }),
          h('div', { className: 'msg-meta' }, h('time', { className: 'msg-time' }), m.out ? h('span', { className: 'msg-status' }) : null),
        ),
      );
      this.nodes.set(m.key, el);
    }
    el.classList.toggle('cont', Boolean(cont));
    const time = el.querySelector('.msg-time');
    setText(time, clockTime(m.at));
    time.setAttribute('datetime', new Date(m.at).toISOString());
    if (m.out && el.dataset.status !== m.status) {
      el.dataset.status = m.status;
      el.querySelector('.msg-status').replaceChildren(statusMark(m.status));
      el.querySelector('.msg-error')?.remove();
      if (m.status === 'failed') {
        el.appendChild(
          h(
            'div',
            { className: 'msg-error' },
            `Not sent: ${m.error || 'error'} · `,
            h('button', { className: 'link-btn', text: 'Retry', dataset: { retry: m.key }, attrs: { type: 'button' } }),
          ),
        );
      }
    }
    return { el, created };
  }

  onInput() {
    this.autosize();
    this.updateSendButton();
    if (this.convId) this.client.typing(this.convId, this.input.value.trim().length > 0);
  }

  autosize() {
    this.input.style.height = 'auto';
    this.input.style.height = `${Math.min(this.input.scrollHeight, 160)}px`;
  }

  updateSendButton() {
    this.sendBtn.disabled = !this.input.value.trim();
  }

  submit() {
    const text = this.input.value;
    if (!this.convId || !text.trim()) return;
    if (utf8Length(text) > MAX_BODY_BYTES) {
      this.notify(`That message is too long (at most ${MAX_BODY_BYTES / 1024} KiB).`);
      return;
    }
    this.client.send(this.convId, text);
    this.input.value = '';
    this.drafts.delete(this.convId);
    this.autosize();
    this.updateSendButton();
    this.renderMessages({ scroll: 'bottom' });
  }
}
