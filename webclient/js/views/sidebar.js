// The conversation list: filter box, "new chat", one row per conversation
// (newest first) with its last message, time and unread badge.

import { $, h, replaceChildren } from '../dom.js';
import { listTime, uidProblem } from '../util.js';
import { avatar } from './avatar.js';
import { statusMark } from './icons.js';

export class Sidebar {
  /**
   * @param {{store, client, me: string, onOpen: (convId: string) => void}} opts
   */
  constructor({ store, client, me, onOpen }) {
    this.store = store;
    this.client = client;
    this.me = me;
    this.onOpen = onOpen;
    this.active = null;

    this.list = $('conv-list');
    this.empty = $('conv-empty');
    this.filter = $('conv-filter');
    this.newBtn = $('new-chat-btn');
    this.newForm = $('new-chat-form');
    this.newUid = $('new-chat-uid');
    this.newError = $('new-chat-error');
    this.newCancel = $('new-chat-cancel');

    this.handlers = [
      [this.filter, 'input', () => this.render()],
      [this.newBtn, 'click', () => this.toggleNewChat()],
      [this.newCancel, 'click', () => this.toggleNewChat(false)],
      [this.newForm, 'submit', (e) => { e.preventDefault(); this.startNewChat(); }],
      [this.newUid, 'keydown', (e) => { if (e.key === 'Escape') this.toggleNewChat(false); }],
      [this.list, 'click', (e) => {
        const row = e.target.closest('[data-conv]');
        if (row) this.onOpen(row.dataset.conv);
      }],
    ];
    for (const [el, type, fn] of this.handlers) el.addEventListener(type, fn);
  }

  dispose() {
    for (const [el, type, fn] of this.handlers) el.removeEventListener(type, fn);
    this.filter.value = '';
    this.toggleNewChat(false);
    replaceChildren(this.list);
  }

  setActive(convId) {
    this.active = convId;
    for (const row of this.list.querySelectorAll('[data-conv]')) {
      const on = row.dataset.conv === convId;
      row.classList.toggle('active', on);
      if (on) row.setAttribute('aria-current', 'true');
      else row.removeAttribute('aria-current');
    }
  }

  toggleNewChat(open = this.newForm.hidden) {
    this.newForm.hidden = !open;
    this.newError.hidden = true;
    this.newBtn.setAttribute('aria-expanded', String(open));
    if (open) {
      this.newUid.value = '';
      this.newUid.focus();
    }
  }

  startNewChat() {
    const uid = this.newUid.value.trim();
    const problem = uidProblem(uid);
    if (problem) {
      this.newError.textContent = problem;
      this.newError.hidden = false;
      this.newUid.focus();
      return;
    }
    this.toggleNewChat(false);
    this.onOpen(uid);
  }

  render() {
    const q = this.filter.value.trim().toLowerCase();
    const convs = this.store.sortedConversations().filter((c) => c.lastAt || c.id === this.active);
    const shown = q
      ? convs.filter((c) => c.id.toLowerCase().includes(q) || (c.lastText || '').toLowerCase().includes(q))
      : convs;
    const now = Date.now();
    replaceChildren(this.list, shown.map((c) => this.row(c, now)));

    if (!convs.length) {
      this.empty.replaceChildren(
        h('p', { className: 'conv-empty-title', text: 'No chats yet' }),
        h('p', { text: 'Start one with the ' }, h('strong', { text: 'new chat' }), ' button above.'),
      );
    } else if (!shown.length) {
      this.empty.replaceChildren(h('p', { text: 'No chats match “' }, q, '”.'));
    }
    this.empty.hidden = shown.length > 0;
  }

  row(c, now) {
    const typing = this.client.isPeerTyping(c.id);
    const title = c.id === this.me ? `${c.id} (you)` : c.id;
    let preview;
    if (typing) {
      preview = h('span', { className: 'conv-preview typing', text: 'typing…' });
    } else {
      preview = h(
        'span',
        { className: 'conv-preview' },
        c.lastOut && c.lastStatus ? statusMark(c.lastStatus) : null,
        h('span', { className: 'conv-text' }, c.lastOut ? h('span', { className: 'you', text: 'You: ' }) : null, firstLine(c.lastText)),
      );
    }
    return h(
      'li',
      { className: 'conv-row' },
      h(
        'button',
        {
          className: `conv${c.id === this.active ? ' active' : ''}${c.unread ? ' has-unread' : ''}`,
          dataset: { conv: c.id },
          attrs: { type: 'button', 'aria-current': c.id === this.active ? 'true' : null },
        },
        avatar(c.id),
        h(
          'span',
          { className: 'conv-main' },
          h(
            'span',
            { className: 'conv-top' },
            h('span', { className: 'conv-name', text: title }),
            h('time', { className: 'conv-time', text: listTime(c.lastAt, now), attrs: { datetime: c.lastAt ? new Date(c.lastAt).toISOString() : null } }),
          ),
          h(
            'span',
            { className: 'conv-bottom' },
            preview,
            c.unread ? h('span', { className: 'badge', text: c.unread > 99 ? '99+' : String(c.unread), attrs: { 'aria-label': `${c.unread} unread` } }) : null,
          ),
        ),
      ),
    );
  }
}

function firstLine(text) {
  const s = String(text || '');
  const nl = s.indexOf('\n');
  const line = nl >= 0 ? `${s.slice(0, nl)} …` : s;
  return line.length > 140 ? `${line.slice(0, 140)}…` : line;
}
