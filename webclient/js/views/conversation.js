// One open conversation: header (name, presence, status line or typing indicator,
// group members), messages (history pages from the server, older ones loaded on
// scrolling up), composer.
//
// Messages are rendered keyed by message key: a status change updates the existing
// bubble in place (keeps text selections and the scroll position), new messages are
// inserted where they belong. Message bodies are set with textContent only.

import * as api from '../api.js';
import * as emojiPicker from '../emoji-picker.js';
import { $, h, replaceChildren, setText } from '../dom.js';
import { isGroupId } from '../store.js';
import { clockTime, dayKey, dayLabel, fullTime, lastSeenText, uidProblem, utf8Length } from '../util.js';
import { paintAvatar } from './avatar.js';
import { statusMark } from './icons.js';
import { linkify } from './linkify.js';
import { convTitle, noticeText } from './names.js';
import { MessageActions } from './lifecycle.js';

const GROUP_GAP_MS = 5 * 60 * 1000; // same sender within this → one visual group
const NEAR_BOTTOM_PX = 120;
const NEAR_TOP_PX = 80;
const MAX_BODY_BYTES = 16 * 1024; // the server's default limit
const MAX_UNREAD_PAGES = 5; // older pages loaded to reach the first unread message on open

export class ConversationView {
  /**
   * @param {{store, client, people, me: string, onBack: () => void, notify: (text, kind?) => void,
   *          onShowContact: (uid: string) => void, getToken: () => string}} opts
   */
  constructor({ store, client, people, me, onBack, notify, onShowContact, getToken }) {
    this.store = store;
    this.client = client;
    this.people = people;
    this.me = me;
    this.onBack = onBack;
    this.notify = notify;
    this.onShowContact = onShowContact;
    this.getToken = getToken;
    this.unreadAtOpen = 0; // unread count when the chat was opened (for the divider)
    this.jumpPending = false; // scroll to the first unread once the page is loaded
    this.convId = null;
    this.nodes = new Map(); // key → element (messages, notices and day separators)
    this.drafts = new Map(); // convId → unsent text

    this.empty = $('pane-empty');
    this.root = $('chat-view');
    this.avatar = $('chat-avatar');
    this.presence = $('chat-presence');
    this.name = $('chat-name');
    this.sub = $('chat-sub');
    this.infoBtn = $('chat-info-btn');
    this.blockBtn = $('block-btn');
    this.panel = $('group-panel');
    this.memberList = $('member-list');
    this.addForm = $('add-member-form');
    this.addUid = $('add-member-uid');
    this.groupError = $('group-error');
    this.leaveBtn = $('leave-group-btn');
    this.leaveConfirm = $('leave-confirm');
    this.leaveConfirmBtn = $('leave-confirm-btn');
    this.leaveCancelBtn = $('leave-cancel-btn');
    this.titleBtn = $('chat-title-btn');
    this.newMsgsBtn = $('new-messages-btn');
    this.warning = $('composer-warning');
    this.emojiBtn = $('emoji-btn');
    this.unreadSep = h('div', { className: 'unread-sep', attrs: { id: 'unread-sep', role: 'separator' } });
    this.list = $('messages');
    this.form = $('composer');
    this.input = $('composer-input');
    this.sendBtn = $('send-btn');
    this.back = $('back-btn');
    this.older = h('button', { className: 'load-older link-btn', text: 'Load older messages', attrs: { type: 'button', id: 'load-older' } });

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
      [this.list, 'scroll', () => {
        if (this.list.scrollTop < NEAR_TOP_PX) this.loadOlder();
        if (this.nearBottom()) this.newMsgsBtn.hidden = true;
      }],
      [this.newMsgsBtn, 'click', () => {
        this.newMsgsBtn.hidden = true;
        this.list.scrollTop = this.list.scrollHeight;
        this.list.focus({ preventScroll: true });
      }],
      [this.titleBtn, 'click', () => {
        if (!this.convId) return;
        if (this.isGroup) this.togglePanel();
        else this.onShowContact(this.convId);
      }],
      [this.panel, 'keydown', (e) => {
        if (e.key !== 'Escape') return;
        e.preventDefault();
        this.togglePanel(false);
        this.infoBtn.focus();
      }],
      [this.emojiBtn, 'click', () => emojiPicker.open(this.emojiBtn, (emoji) => this.insertText(emoji))],
      [this.older, 'click', () => this.loadOlder()],
      [this.infoBtn, 'click', () => this.togglePanel()],
      [this.blockBtn, 'click', () => this.toggleBlock()],
      [this.client, 'blocks', () => this.renderBlock()],
      [this.addForm, 'submit', (e) => { e.preventDefault(); this.addMember(); }],
      [this.leaveBtn, 'click', () => this.askLeave(true)],
      [this.leaveCancelBtn, 'click', () => {
        this.askLeave(false);
        this.leaveBtn.focus();
      }],
      [this.leaveConfirmBtn, 'click', () => this.leave()],
    ];
    for (const [el, type, fn] of this.handlers) el.addEventListener(type, fn);
    this.actions = new MessageActions(this); // reply, edit, delete, react
  }

  dispose() {
    this.actions.dispose();
    for (const [el, type, fn] of this.handlers) el.removeEventListener(type, fn);
    this.close();
  }

  get ctx() {
    return { people: this.people, store: this.store, me: this.me };
  }

  get isGroup() {
    return isGroupId(this.convId);
  }

  open(convId) {
    if (this.convId === convId) return;
    this.saveDraft();
    this.actions.cancel();
    this.convId = convId;
    this.nodes.clear();
    this.list.replaceChildren();
    this.empty.hidden = true;
    this.root.hidden = false;
    this.root.dataset.conv = convId;
    this.root.dataset.kind = isGroupId(convId) ? 'group' : 'direct';
    this.panel.hidden = true;
    this.askLeave(false);
    this.newMsgsBtn.hidden = true;
    emojiPicker.close({ refocus: false });
    const c = this.store.conversation(convId);
    this.unreadAtOpen = c ? this.store.unread(c) : 0;
    this.jumpPending = this.unreadAtOpen > 0;
    this.unreadSep.remove();
    delete this.unreadSep.dataset.before;
    this.unreadPages = 0;
    this.infoBtn.hidden = !this.isGroup;
    this.infoBtn.setAttribute('aria-expanded', 'false');
    this.input.value = this.drafts.get(convId) || '';
    this.autosize();
    this.updateSendButton();
    this.updateWarning();
    this.renderHeader();
    this.renderMessages({ scroll: 'bottom' });
    // Phones: don't pop the keyboard over the messages just by opening a chat.
    if (window.matchMedia('(pointer: fine)').matches) this.input.focus({ preventScroll: true });
  }

  close() {
    emojiPicker.close({ refocus: false });
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

  /** Name, avatar, presence and the line below the name (typing… / status / members). */
  renderHeader() {
    if (!this.convId) return;
    const id = this.convId;
    const title = convTitle(id, this.ctx);
    setText(this.name, title);
    paintAvatar(this.avatar, id, { name: title, url: this.isGroup ? '' : this.people.avatarUrl(id) });
    const typist = this.client.typingIn(id);
    this.root.classList.toggle('peer-typing', Boolean(typist));
    let sub;
    const c = this.store.conversation(id);
    if (typist) sub = this.isGroup ? `${this.people.name(typist)} is typing…` : 'typing…';
    else if (id === this.me) sub = 'Notes to yourself';
    else if (this.isGroup) {
      if (c && c.left) sub = 'You left this group';
      else sub = c && c.members ? `${c.members.length} members` : '';
    } else if (c && c.missing) {
      sub = 'No account has this user id';
    } else {
      const online = this.people.online(id);
      const status = this.people.status(id);
      const seen = online === 'offline' ? lastSeenText(this.people.lastSeen(id)) : '';
      sub = [online === 'online' ? 'online' : seen, status].filter(Boolean).join(' · ');
    }
    this.titleBtn.title = this.isGroup ? 'Group members' : id === this.me ? 'Your profile' : 'Show their profile';
    setText(this.sub, sub);
    this.sub.hidden = !sub;
    const presence = this.isGroup ? null : this.people.online(id);
    this.presence.hidden = !presence;
    if (presence) this.presence.dataset.state = presence;
    this.renderBlock();
    // A group we left: no composer.
    const left = Boolean(this.isGroup && c && c.left);
    this.form.hidden = left;
    if (!this.panel.hidden) this.renderPanel();
  }

  /** The Block/Unblock button: 1:1 conversations with someone else only. */
  renderBlock() {
    const id = this.convId;
    const shown = Boolean(id) && !this.isGroup && id !== this.me;
    this.blockBtn.hidden = !shown;
    if (!shown) return;
    const blocked = this.client.isBlocked(id);
    setText(this.blockBtn, blocked ? 'Unblock' : 'Block');
    this.blockBtn.dataset.blocked = String(blocked);
  }

  async toggleBlock() {
    const id = this.convId;
    if (!id || this.isGroup) return;
    const on = !this.client.isBlocked(id);
    this.blockBtn.disabled = true;
    try {
      await this.client.setBlocked(id, on);
      this.notify(on ? `${this.people.name(id)} is blocked.` : `${this.people.name(id)} is unblocked.`, 'info');
    } catch (e) {
      this.notify(e.message || 'Could not change the block.');
    } finally {
      this.blockBtn.disabled = false;
    }
  }

  // -- group panel -----------------------------------------------------------

  togglePanel(open = this.panel.hidden) {
    this.panel.hidden = !open;
    if (!open) this.askLeave(false);
    this.infoBtn.setAttribute('aria-expanded', String(open));
    this.groupError.hidden = true;
    if (open) {
      this.client.loadGroup(this.convId);
      this.renderPanel();
    }
  }

  renderPanel() {
    const c = this.store.conversation(this.convId);
    const members = (c && c.members) || [];
    replaceChildren(
      this.memberList,
      members.map((uid) =>
        h(
          'li',
          { className: 'member', dataset: { uid } },
          h('span', { className: 'member-name' }, h('bdi', { text: this.people.name(uid) }), uid === this.me ? ' (you)' : null),
          h('span', { className: 'member-uid', text: uid }),
        ),
      ),
    );
    const left = Boolean(c && c.left);
    this.addForm.hidden = left;
    this.leaveBtn.hidden = left;
  }

  async addMember() {
    const uids = this.addUid.value.split(/[\s,]+/).map((u) => u.trim()).filter(Boolean);
    const problem = uids.length ? uids.map(uidProblem).find(Boolean) : 'Enter a user id.';
    if (problem) return this.groupFail(problem);
    try {
      // Name the ones who do not exist instead of the server's one-line refusal.
      const known = await Promise.all(uids.map((u) => api.userExists(this.getToken(), u).catch(() => true)));
      const missing = uids.filter((_, i) => !known[i]);
      if (missing.length) {
        return this.groupFail(
          missing.length === 1
            ? `Nobody has the user id “${missing[0]}”. Check the spelling.`
            : `Nobody has these user ids: ${missing.map((u) => `“${u}”`).join(', ')}.`,
        );
      }
      await this.client.addMembers(this.convId, uids);
      this.addUid.value = '';
      this.groupError.hidden = true;
      await this.client.loadGroup(this.convId);
    } catch (e) {
      this.groupFail(e.message);
    }
  }

  /** Shows (or hides) the "Leave this group?" question; leaving takes a second click. */
  askLeave(show) {
    this.leaveConfirm.hidden = !show;
    this.leaveBtn.setAttribute('aria-expanded', String(show));
    if (show) this.leaveCancelBtn.focus();
  }

  async leave() {
    this.askLeave(false);
    try {
      await this.client.leaveGroup(this.convId);
    } catch (e) {
      this.groupFail(e.message);
    }
  }

  groupFail(text) {
    this.groupError.textContent = text;
    this.groupError.hidden = false;
  }

  // -- messages ----------------------------------------------------------------

  async loadOlder() {
    const id = this.convId;
    const t = this.store.thread(id);
    if (!t.older || t.loading) return;
    // Keep what is on screen where it is while older messages go in above it.
    const list = this.list;
    const fromBottom = list.scrollHeight - list.scrollTop;
    await this.client.loadHistory(id, { older: true });
    if (this.convId !== id) return;
    this.renderMessages();
    list.scrollTop = list.scrollHeight - fromBottom;
  }

  nearBottom() {
    const list = this.list;
    return list.scrollHeight - list.scrollTop - list.clientHeight < NEAR_BOTTOM_PX;
  }

  /**
   * The key of the first unread message when the chat was opened (the divider goes above
   * it), once the loaded pages reach back to it; loads older pages to get there.
   */
  firstUnreadKey(t) {
    const incoming = t.list.filter((m) => !m.out && !m.system);
    if (incoming.length >= this.unreadAtOpen || !t.older) {
      const first = incoming[Math.max(0, incoming.length - this.unreadAtOpen)];
      return first ? first.key : null;
    }
    this.unreadPages = (this.unreadPages || 0) + 1;
    if (this.unreadPages <= MAX_UNREAD_PAGES) this.client.loadHistory(this.convId, { older: true });
    else return incoming.length ? incoming[0].key : null;
    return undefined; // not loaded yet
  }

  renderMessages({ scroll } = {}) {
    if (!this.convId) return;
    const list = this.list;
    const nearBottom = this.nearBottom();
    const t = this.store.thread(this.convId);
    const msgs = t.list;
    const wanted = [];
    if (t.older) wanted.push(this.older);
    let prevDay = null;
    let prev = null;
    let lastOwnAdded = false;
    let incomingAdded = false;
    let dividerKey = this.unreadSep.dataset.before || null;
    if (this.jumpPending && t.loaded && !t.loading) {
      const key = this.firstUnreadKey(t);
      if (key !== undefined) {
        dividerKey = key;
        if (key) {
          this.unreadSep.dataset.before = key;
          setText(this.unreadSep, this.unreadAtOpen === 1 ? '1 unread message' : `${this.unreadAtOpen} unread messages`);
        }
      }
    }
    for (const m of msgs) {
      const day = dayKey(m.at);
      if (day !== prevDay) {
        wanted.push(this.separator(day, m.at));
        prevDay = day;
        prev = null;
      }
      if (m.system) {
        wanted.push(this.notice(m));
        prev = null;
        continue;
      }
      if (dividerKey && m.key === dividerKey) {
        wanted.push(this.unreadSep);
        prev = null;
      }
      const cont = prev && prev.from === m.from && m.at - prev.at < GROUP_GAP_MS;
      const { el, created } = this.bubble(m, cont);
      if (created && m.out) lastOwnAdded = true;
      if (created && !m.out && t.loaded) incomingAdded = true;
      wanted.push(el);
      prev = m;
    }
    if (!msgs.length) {
      let text;
      if (!t.loaded) text = 'Loading…';
      else if (this.convId === this.me) text = 'Jot something down for yourself.';
      else if (this.isGroup) text = 'Say hello to the group.';
      else text = `Say hello to ${this.people.name(this.convId)}. If they're offline, they get it when they're back.`;
      wanted.push(this.placeholder(t.loaded ? 'No messages yet' : '', text));
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
    if (this.jumpPending && t.loaded && !t.loading && this.unreadSep.isConnected) {
      // Opened with unread messages: start at the first of them, not at the bottom.
      this.jumpPending = false;
      this.unreadPages = 0;
      list.scrollTop += this.unreadSep.getBoundingClientRect().top - list.getBoundingClientRect().top - 8;
      if (!this.nearBottom()) this.newMsgsBtn.hidden = false;
      return;
    }
    if (this.jumpPending && t.loaded && !t.loading && dividerKey === null) this.jumpPending = false;
    if (scroll === 'bottom' || nearBottom || lastOwnAdded) {
      list.scrollTop = list.scrollHeight;
      this.newMsgsBtn.hidden = true;
    } else if (incomingAdded && !this.jumpPending) {
      // Scrolled up reading older messages: say that something new came instead of moving.
      this.newMsgsBtn.hidden = false;
    }
  }

  placeholder(title, text) {
    const key = `empty:${title}:${text}`;
    let el = this.nodes.get(key);
    if (!el) {
      el = h('div', { className: 'messages-empty' }, title ? h('p', { className: 'messages-empty-title', text: title }) : null, h('p', { text }));
      this.nodes.set(key, el);
    }
    return el;
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

  notice(m) {
    let el = this.nodes.get(m.key);
    if (!el) {
      el = h('div', { className: 'notice', dataset: { key: m.key, kind: m.system } }, h('span', { className: 'notice-text' }));
      this.nodes.set(m.key, el);
    }
    setText(el.firstChild, noticeText(m, this.ctx));
    return el;
  }

  /** Creates or updates the bubble of message `m`. */
  bubble(m, cont) {
    let el = this.nodes.get(m.key);
    let created = false;
    const group = this.isGroup;
    if (!el) {
      created = true;
      el = h(
        'div',
        { className: `msg ${m.out ? 'out' : 'in'}`, dataset: { key: m.key, msgid: m.id, from: m.from } },
        h(
          'div',
          { className: 'bubble' },
          group && !m.out ? h('div', { className: 'msg-from', attrs: { dir: 'auto' } }) : null,
          h('div', { className: 'msg-text', attrs: { dir: 'auto' } }, linkify(m.body)),
          h(
            'div',
            { className: 'msg-meta' },
            group && m.out ? h('span', { className: 'msg-unread' }) : null,
            h('time', { className: 'msg-time' }),
            m.out ? h('span', { className: 'msg-status' }) : null,
          ),
        ),
      );
      this.nodes.set(m.key, el);
    }
    el.classList.toggle('cont', Boolean(cont));
    const from = el.querySelector('.msg-from');
    if (from) {
      from.hidden = Boolean(cont);
      setText(from, this.people.name(m.from));
    }
    const time = el.querySelector('.msg-time');
    setText(time, clockTime(m.at));
    time.setAttribute('datetime', new Date(m.at).toISOString());
    time.title = fullTime(m.at);
    if (m.out && group) {
      // How many members have not read it yet (the latest receipt's Unread).
      const n = m.unread;
      const badge = el.querySelector('.msg-unread');
      const show = n != null && n > 0 && m.status !== 'sending' && m.status !== 'failed';
      if (show) {
        el.dataset.unread = String(n);
        setText(badge, `${n} unread`);
        badge.title = `${n} member${n === 1 ? ' has' : 's have'} not read it yet`;
      } else {
        if (n === 0) el.dataset.unread = '0';
        else delete el.dataset.unread;
        setText(badge, '');
      }
    }
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
    this.actions.decorate(el, m);
    return { el, created };
  }

  /** Puts `text` at the caret (replacing a selection) and keeps typing there. */
  insertText(text) {
    const el = this.input;
    const start = el.selectionStart ?? el.value.length;
    const end = el.selectionEnd ?? el.value.length;
    el.setRangeText(text, start, end, 'end');
    el.focus();
    this.onInput();
  }

  onInput() {
    this.autosize();
    this.updateSendButton();
    this.updateWarning();
    if (this.convId) this.client.typing(this.convId, this.input.value.trim().length > 0);
  }

  autosize() {
    this.input.style.height = 'auto';
    this.input.style.height = `${Math.min(this.input.scrollHeight, 160)}px`;
  }

  updateSendButton() {
    this.sendBtn.disabled = !this.input.value.trim() || this.tooLong();
  }

  tooLong() {
    // Cheap first: a text this short cannot reach the limit in UTF-8.
    return this.input.value.length * 3 > MAX_BODY_BYTES && utf8Length(this.input.value) > MAX_BODY_BYTES;
  }

  /** Above the composer (never over the text being typed): how far over the limit it is. */
  updateWarning() {
    const over = this.tooLong();
    this.warning.hidden = !over;
    if (over) {
      const kib = (utf8Length(this.input.value) / 1024).toFixed(1);
      setText(this.warning, `This message is too long to send: ${kib} KiB, at most ${MAX_BODY_BYTES / 1024} KiB. Shorten it or split it in two.`);
    }
  }

  submit() {
    const text = this.input.value;
    if (!this.convId || !text.trim()) return;
    if (utf8Length(text) > MAX_BODY_BYTES) {
      this.updateWarning();
      return;
    }
    if (!this.actions.submit(text)) this.client.send(this.convId, text);
    this.input.value = '';
    this.drafts.delete(this.convId);
    this.autosize();
    this.updateSendButton();
    this.updateWarning();
    this.renderMessages({ scroll: 'bottom' });
  }
}
