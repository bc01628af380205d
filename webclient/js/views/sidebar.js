// The conversation list: filter box, the address book ("new chat": find people, open a
// 1:1 chat, or tick several and create a group), one row per conversation (newest
// first) with its name, last message, time, unread badge and the peer's presence.

import * as api from '../api.js';
import { $, h, replaceChildren } from '../dom.js';
import { newGroupId } from '../people.js';
import { isGroupId } from '../store.js';
import { fullTime, listTime, uidProblem } from '../util.js';
import { avatar } from './avatar.js';
import { statusMark } from './icons.js';
import { convTitle, noticeText } from './names.js';

const SEARCH_DEBOUNCE_MS = 200;

export class Sidebar {
  /**
   * @param {{store, client, people, me: string, getToken: () => string,
   *          onOpen: (convId: string) => void, notify: (text) => void}} opts
   */
  constructor({ store, client, people, me, getToken, onOpen, notify }) {
    this.store = store;
    this.client = client;
    this.people = people;
    this.me = me;
    this.getToken = getToken;
    this.onOpen = onOpen;
    this.notify = notify;
    this.active = null;
    this.selected = new Set();
    this.searchSeq = 0;

    this.list = $('conv-list');
    this.empty = $('conv-empty');
    this.filter = $('conv-filter');
    this.newBtn = $('new-chat-btn');
    this.newForm = $('new-chat-form');
    this.newUid = $('new-chat-uid');
    this.newError = $('new-chat-error');
    this.newSubmit = $('new-chat-submit');
    this.newCancel = $('new-chat-cancel');
    this.peopleList = $('people-list');
    this.groupName = $('group-name');
    this.createGroupBtn = $('create-group-btn');

    this.handlers = [
      [this.filter, 'input', () => this.render()],
      [this.newBtn, 'click', () => this.toggleNewChat()],
      [this.newCancel, 'click', () => this.toggleNewChat(false)],
      [this.newForm, 'submit', (e) => { e.preventDefault(); this.startNewChat(); }],
      [this.newUid, 'keydown', (e) => { if (e.key === 'Escape') this.toggleNewChat(false); }],
      [this.newUid, 'input', () => this.searchSoon()],
      [this.peopleList, 'change', (e) => {
        const box = e.target.closest('input[type=checkbox]');
        if (!box) return;
        if (box.checked) this.selected.add(box.value);
        else this.selected.delete(box.value);
        this.updateGroupButton();
      }],
      [this.peopleList, 'click', (e) => {
        const btn = e.target.closest('[data-chat]');
        if (!btn) return;
        // Listed by the address book: the account exists.
        this.toggleNewChat(false);
        this.onOpen(btn.dataset.chat);
      }],
      [this.createGroupBtn, 'click', () => this.createGroup()],
      [this.list, 'click', (e) => {
        const row = e.target.closest('[data-conv]');
        if (row) this.onOpen(row.dataset.conv);
      }],
    ];
    for (const [el, type, fn] of this.handlers) el.addEventListener(type, fn);
  }

  dispose() {
    for (const [el, type, fn] of this.handlers) el.removeEventListener(type, fn);
    clearTimeout(this.searchTimer);
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

  // -- address book ----------------------------------------------------------

  toggleNewChat(open = this.newForm.hidden) {
    this.newForm.hidden = !open;
    this.newError.hidden = true;
    this.newBtn.setAttribute('aria-expanded', String(open));
    this.selected.clear();
    this.updateGroupButton();
    if (open) {
      this.newUid.value = '';
      this.groupName.value = '';
      this.newUid.focus();
      this.search();
    } else {
      replaceChildren(this.peopleList);
    }
  }

  searchSoon() {
    clearTimeout(this.searchTimer);
    this.searchTimer = setTimeout(() => this.search(), SEARCH_DEBOUNCE_MS);
  }

  /** Lists accounts whose uid starts with what is typed (the chat server's address book). */
  async search() {
    const seq = ++this.searchSeq;
    const prefix = this.newUid.value.trim();
    let items = [];
    try {
      const res = await api.users(this.getToken(), prefix, null, 50);
      items = (res.items || []).filter((u) => u.uid !== this.me);
    } catch (e) {
      if (seq === this.searchSeq) this.showError(`Address book not loaded: ${e.message}`);
      return;
    }
    if (seq !== this.searchSeq || this.newForm.hidden) return;
    this.newError.hidden = true;
    for (const u of items) if (u.name && !this.people.fallback.has(u.uid)) this.people.fallback.set(u.uid, u.name);
    this.people.want(items.map((u) => u.uid));
    this.renderPeople(items);
  }

  renderPeople(items) {
    // Keep ticked people listed even when the search moved on. Rows are keyed by uid and
    // reused, so a search finishing while someone ticks a box does not swap it away.
    const shown = new Map(items.map((u) => [u.uid, u]));
    for (const uid of this.selected) if (!shown.has(uid)) shown.set(uid, { uid });
    const rows = new Map([...this.peopleList.querySelectorAll('li[data-uid]')].map((li) => [li.dataset.uid, li]));
    const wanted = [...shown.keys()].map((uid) => {
      let li = rows.get(uid);
      if (!li) li = this.personRow(uid);
      li.querySelector('input[type=checkbox]').checked = this.selected.has(uid);
      li.querySelector('.person-name').textContent = this.people.name(uid);
      return li;
    });
    if (!wanted.length) wanted.push(h('li', { className: 'person-none', text: 'Nobody found.' }));
    const keep = new Set(wanted);
    for (const child of [...this.peopleList.children]) if (!keep.has(child)) child.remove();
    let cursor = this.peopleList.firstElementChild;
    for (const el of wanted) {
      if (el === cursor) cursor = cursor.nextElementSibling;
      else this.peopleList.insertBefore(el, cursor);
    }
  }

  personRow(uid) {
    return h(
      'li',
      { className: 'person', dataset: { uid } },
      h(
        'label',
        { className: 'person-pick' },
        h('input', { attrs: { type: 'checkbox', value: uid, 'aria-label': `Select ${uid} for a group` } }),
        avatar(uid, { name: this.people.name(uid), url: this.people.avatarUrl(uid) }, 'avatar-sm'),
        h('span', { className: 'person-text' }, h('span', { className: 'person-name', attrs: { dir: 'auto' } }), h('span', { className: 'person-uid', text: uid })),
      ),
      h('button', { className: 'btn btn-ghost btn-sm', text: 'Chat', dataset: { chat: uid }, attrs: { type: 'button', title: `Chat with ${uid}` } }),
    );
  }

  updateGroupButton() {
    const n = this.selected.size;
    this.createGroupBtn.disabled = n === 0;
    this.createGroupBtn.textContent = n ? `New group (${n + 1})` : 'New group';
  }

  async createGroup() {
    const uids = [...this.selected];
    if (!uids.length) return;
    this.createGroupBtn.disabled = true;
    try {
      const gid = await this.client.createGroup(newGroupId(this.groupName.value.trim()), uids);
      this.toggleNewChat(false);
      this.onOpen(gid);
    } catch (e) {
      this.showError(`Group not created: ${e.message}`);
      this.updateGroupButton();
    }
  }

  showError(text) {
    this.newError.textContent = text;
    this.newError.hidden = false;
  }

  /**
   * "Chat" with the typed user id: opened only when that account exists (the address book
   * says so), so a typo never leaves a chat that cannot be delivered. When the check itself
   * cannot be made (offline), the chat opens: the server refuses an unknown user later.
   */
  async startNewChat() {
    const uid = this.newUid.value.trim();
    const problem = uidProblem(uid);
    if (problem) {
      this.showError(problem);
      this.newUid.focus();
      return;
    }
    if (uid !== this.me) {
      this.newSubmit.disabled = true;
      let exists;
      try {
        exists = await api.userExists(this.getToken(), uid);
      } catch (e) {
        exists = e.status === 0 ? true : null;
        if (exists === null) this.showError(`Could not look up “${uid}”: ${e.message}`);
      } finally {
        this.newSubmit.disabled = false;
      }
      if (exists === null) return;
      if (!exists) {
        this.showError(`Nobody has the user id “${uid}”. Check the spelling, or pick someone from the list.`);
        this.newUid.focus();
        return;
      }
    }
    this.toggleNewChat(false);
    this.onOpen(uid);
  }

  // -- the list --------------------------------------------------------------

  render() {
    const q = this.filter.value.trim().toLowerCase();
    // Left groups stay while they have history; a chat with a user who does not exist only
    // while it is open.
    const convs = this.store
      .sortedConversations(this.active)
      .filter((c) => (!c.left || c.id === this.active || c.lastAt) && (!c.missing || c.id === this.active));
    const ctx = { people: this.people, store: this.store, me: this.me };
    const titled = convs.map((c) => ({ c, title: convTitle(c.id, ctx) }));
    const shown = q
      ? titled.filter(({ c, title }) => c.id.toLowerCase().includes(q) || title.toLowerCase().includes(q) || previewText(c, ctx).toLowerCase().includes(q))
      : titled;
    const now = Date.now();
    this.renderRows(shown.map(({ c, title }) => this.row(c, title, now, ctx)));

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

  /**
   * Puts `fresh` rows in the list, keyed by conversation: a row already shown keeps its
   * nodes (updated in place, see `morph`) and stays where it is unless the order changed.
   * The list re-renders on every message, typing and presence event; Chromium drops a click
   * whose pressed element is removed before the release, so replacing the rows lost clicks
   * that straddled a re-render, as for a user clicking in a busy list.
   */
  renderRows(fresh) {
    const old = new Map([...this.list.querySelectorAll(':scope > li')].map((li) => [li.firstElementChild?.dataset.conv, li]));
    const wanted = fresh.map((li) => {
      const cur = old.get(li.firstElementChild.dataset.conv);
      if (!cur) return li;
      morph(cur, li);
      return cur;
    });
    const keep = new Set(wanted);
    for (const child of [...this.list.children]) if (!keep.has(child)) child.remove();
    let cursor = this.list.firstElementChild;
    for (const el of wanted) {
      if (el === cursor) cursor = cursor.nextElementSibling;
      else this.list.insertBefore(el, cursor);
    }
  }

  row(c, title, now, ctx) {
    const typist = this.client.typingIn(c.id);
    const unread = this.store.unread(c);
    const last = c.last;
    let preview;
    if (typist) {
      // Names and bodies in <bdi>: a right-to-left name or text does not reorder its
      // neighbours (the server refuses bidi controls in names; bodies may still hold them).
      preview = isGroupId(c.id)
        ? h('span', { className: 'conv-preview typing' }, h('bdi', { text: this.people.name(typist) }), ' is typing…')
        : h('span', { className: 'conv-preview typing', text: 'typing…' });
    } else {
      const own = last && last.out && !last.system;
      const sender = last && !last.out && !last.system && isGroupId(c.id) ? this.people.name(last.from) : null;
      preview = h(
        'span',
        { className: 'conv-preview' },
        own && last.status ? statusMark(last.status) : null,
        h(
          'span',
          { className: 'conv-text' },
          own ? h('span', { className: 'you', text: 'You: ' }) : null,
          sender ? h('span', { className: 'you' }, h('bdi', { text: sender }), ': ') : null,
          h('bdi', { text: firstLine(previewText(c, ctx)) }),
        ),
      );
    }
    const presence = !isGroupId(c.id) ? this.people.online(c.id) : null;
    // Screen readers read the row's text as its name: hidden separators keep the parts
    // apart ("Bob, online, 11:35, Back after …, 2 unread", not "Bob11:35Back after…").
    const sr = (text) => h('span', { className: 'sr-only', text });
    return h(
      'li',
      { className: 'conv-row' },
      h(
        'button',
        {
          className: `conv${c.id === this.active ? ' active' : ''}${unread ? ' has-unread' : ''}`,
          dataset: { conv: c.id, kind: c.kind },
          attrs: { type: 'button', 'aria-current': c.id === this.active ? 'true' : null },
        },
        h(
          'span',
          { className: 'avatar-wrap' },
          avatar(c.id, { name: title, url: isGroupId(c.id) ? '' : this.people.avatarUrl(c.id) }, isGroupId(c.id) ? 'avatar-group' : ''),
          presence ? h('span', { className: 'presence', dataset: { state: presence }, attrs: { title: presence } }) : null,
        ),
        h(
          'span',
          { className: 'conv-main' },
          h(
            'span',
            { className: 'conv-top' },
            h('span', { className: 'conv-name', text: title, attrs: { dir: 'auto' } }),
            sr(presence === 'online' ? ', online, ' : ', '),
            h('time', { className: 'conv-time', text: listTime(c.lastAt, now), attrs: { datetime: c.lastAt ? new Date(c.lastAt).toISOString() : null, title: fullTime(c.lastAt) || null } }),
          ),
          h(
            'span',
            { className: 'conv-bottom' },
            sr(', '),
            preview,
            unread ? sr(', ') : null,
            unread ? h('span', { className: 'badge', text: unread > 99 ? '99+' : String(unread) }) : null,
            unread ? sr(' unread') : null,
          ),
        ),
      ),
    );
  }
}

/**
 * Makes `cur` look like `next` keeping `cur`'s nodes where the structure matches: same
 * element → attributes and children updated, text → data updated; anything else replaced.
 */
function morph(cur, next) {
  if (cur.nodeType !== next.nodeType || cur.nodeName !== next.nodeName) {
    cur.replaceWith(next);
    return;
  }
  if (cur.nodeType === Node.TEXT_NODE) {
    if (cur.data !== next.data) cur.data = next.data;
    return;
  }
  if (cur.nodeType !== Node.ELEMENT_NODE) return;
  for (const { name } of [...cur.attributes]) if (!next.hasAttribute(name)) cur.removeAttribute(name);
  for (const { name, value } of [...next.attributes]) if (cur.getAttribute(name) !== value) cur.setAttribute(name, value);
  const have = [...cur.childNodes];
  const want = [...next.childNodes];
  want.forEach((n, i) => (i < have.length ? morph(have[i], n) : cur.appendChild(n)));
  for (const n of have.slice(want.length)) n.remove();
}

function previewText(c, ctx) {
  const last = c.last;
  if (!last) return c.kind === 'group' ? 'New group' : '';
  if (last.system) return noticeText(last, ctx);
  return last.body || '';
}

function firstLine(text) {
  const s = String(text || '');
  const nl = s.indexOf('\n');
  const line = nl >= 0 ? `${s.slice(0, nl)} …` : s;
  return line.length > 140 ? `${line.slice(0, 140)}…` : line;
}
