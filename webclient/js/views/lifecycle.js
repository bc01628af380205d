// The lifecycle parts of a message bubble and of the composer (contract §11): the quote of
// the message a reply answers (click: jump to it), the "edited" mark (click: the earlier
// versions), the tombstone of a deleted message, the reactions (counts, who reacted; click
// a chip to add or take back one's own), and the actions: Reply, React, Edit, Delete.
//
// A minimal reaction chooser with a fixed set of emoji; text is only ever set with
// textContent.

import { h, replaceChildren, setText } from '../dom.js';
import { clockTime } from '../util.js';

/** The reactions offered by the chooser. */
export const QUICK_REACTIONS = ['👍', '❤️', '😂', '😮', '😢', '🎉'];
const EXCERPT_CHARS = 80;
/** The server's default edit window; past it the Edit action is not offered. */
const EDIT_WINDOW_MS = 48 * 3600 * 1000;

function excerpt(text) {
  const flat = String(text || '').replace(/\s+/g, ' ').trim();
  return flat.length > EXCERPT_CHARS ? `${flat.slice(0, EXCERPT_CHARS - 1)}…` : flat;
}

export class MessageActions {
  /** @param view the ConversationView (list, form, input, client, people, me, notify) */
  constructor(view) {
    this.view = view;
    this.mode = null; // {kind: 'reply'|'edit', key}
    this.bar = h(
      'div',
      { className: 'compose-context', attrs: { id: 'compose-context', role: 'status' }, hidden: true },
      h('span', { className: 'compose-context-text' }),
      h('button', { className: 'link-btn compose-context-cancel', text: 'Cancel', attrs: { type: 'button', 'aria-label': 'Cancel' } }),
    );
    view.form.parentNode.insertBefore(this.bar, view.form);
    this.chooser = h('div', { className: 'reaction-chooser', attrs: { role: 'menu', 'aria-label': 'React' }, hidden: true },
      QUICK_REACTIONS.map((emoji) =>
        h('button', { className: 'reaction-choice', text: emoji, dataset: { emoji }, attrs: { type: 'button', role: 'menuitem', 'aria-label': `React ${emoji}` } }),
      ),
    );
    this.chooserFor = null;
    this.handlers = [
      [view.list, 'click', (e) => this.onClick(e)],
      [this.bar.querySelector('button'), 'click', () => this.cancel()],
      [view.input, 'keydown', (e) => {
        if (e.key === 'Escape' && this.mode) this.cancel();
      }],
      [this.chooser, 'click', (e) => {
        const choice = e.target.closest('[data-emoji]');
        if (choice && this.chooserFor) this.react(this.chooserFor, choice.dataset.emoji);
        this.closeChooser();
      }],
    ];
    for (const [el, type, fn] of this.handlers) el.addEventListener(type, fn);
  }

  dispose() {
    for (const [el, type, fn] of this.handlers) el.removeEventListener(type, fn);
    this.bar.remove();
    this.chooser.remove();
  }

  get client() {
    return this.view.client;
  }

  message(key) {
    return this.view.convId ? this.view.store.findMessage(this.view.convId, key) : null;
  }

  /** Adds or updates the lifecycle parts of bubble `el` of message `m`. */
  decorate(el, m) {
    const bubble = el.querySelector('.bubble');
    const meta = el.querySelector('.msg-meta');
    el.classList.toggle('deleted', Boolean(m.deleted));
    // A message of attachments only has no text line (conversation.js bubble()); a delete
    // (or an edit that adds words) gives it one, above the time.
    const shown = m.deleted ? 'This message was deleted' : m.body;
    let text = el.querySelector('.msg-text');
    if (!text && shown) {
      text = h('div', { className: 'msg-text', attrs: { dir: 'auto' } });
      bubble.insertBefore(text, meta);
    }
    if (text) setText(text, shown);

    // The quote of the message replied to.
    let quote = el.querySelector('.msg-quote');
    if (m.ref && !m.deleted) {
      if (!quote) {
        quote = h('button', { className: 'msg-quote', attrs: { type: 'button' }, dataset: { lcAction: 'jump' } },
          h('span', { className: 'msg-quote-from' }), h('span', { className: 'msg-quote-text', attrs: { dir: 'auto' } }));
        bubble.insertBefore(quote, text || meta);
      }
      const original = this.client.lifecycle.find(m.conv, m.ref);
      quote.dataset.ref = m.ref;
      setText(quote.firstChild, original ? this.view.people.name(original.from) : 'Reply');
      setText(quote.lastChild, !original ? 'Earlier message' : original.deleted ? 'This message was deleted' : excerpt(original.body));
      quote.title = 'Show the message this replies to';
    } else if (quote) {
      quote.remove();
    }

    // "edited": opens the earlier versions.
    let edited = el.querySelector('.msg-edited');
    if (m.editedAt && !m.deleted) {
      if (!edited) {
        edited = h('button', { className: 'msg-edited link-btn', text: 'edited', attrs: { type: 'button' }, dataset: { lcAction: 'versions' } });
        meta.insertBefore(edited, meta.firstChild);
      }
      edited.title = `Edited at ${clockTime(m.editedAt)}: show earlier versions`;
    } else if (edited) {
      edited.remove();
      el.querySelector('.msg-versions')?.remove();
    }

    // Reactions: one chip per emoji with its count; the title says who.
    let row = el.querySelector('.msg-reactions');
    const reactions = Object.entries(m.deleted ? {} : m.reactions || {});
    if (reactions.length) {
      if (!row) {
        row = h('div', { className: 'msg-reactions' });
        bubble.appendChild(row);
      }
      replaceChildren(
        row,
        reactions.map(([emoji, who]) => {
          const mine = who.includes(this.view.me);
          const names = who.map((u) => (u === this.view.me ? 'You' : this.view.people.name(u))).join(', ');
          return h('button', {
            className: `reaction${mine ? ' mine' : ''}`,
            dataset: { lcAction: 'toggle', emoji, count: String(who.length) },
            attrs: { type: 'button', title: `${names} reacted ${emoji}`, 'aria-pressed': String(mine), 'aria-label': `${emoji} ${who.length}: ${names}` },
          }, h('span', { className: 'reaction-emoji', text: emoji }), h('span', { className: 'reaction-count', text: String(who.length) }));
        }),
      );
    } else if (row) {
      row.remove();
    }

    // Actions, for messages the server has.
    let actions = el.querySelector('.msg-actions');
    const usable = !m.deleted && m.status !== 'sending' && m.status !== 'failed' && !(this.view.isGroup && this.view.store.conversation(m.conv)?.left);
    if (usable) {
      const own = m.out;
      const editable = own && Date.now() - m.at < EDIT_WINDOW_MS;
      const wanted = [['reply', 'Reply'], ['react', 'React'], editable ? ['edit', 'Edit'] : null, own ? ['delete', 'Delete'] : null].filter(Boolean);
      const sig = wanted.map((w) => w[0]).join(',');
      if (!actions || actions.dataset.sig !== sig) {
        actions?.remove();
        actions = h('div', { className: 'msg-actions', dataset: { sig }, attrs: { role: 'group', 'aria-label': 'Message actions' } },
          wanted.map(([action, label]) => h('button', { className: 'msg-action link-btn', text: label, dataset: { lcAction: action }, attrs: { type: 'button' } })));
        el.appendChild(actions);
      }
    } else if (actions) {
      actions.remove();
    }
  }

  onClick(e) {
    const button = e.target.closest('[data-lc-action]');
    if (!button) return;
    const el = button.closest('.msg');
    const m = el && this.message(el.dataset.key);
    if (!m) return;
    switch (button.dataset.lcAction) {
      case 'jump':
        this.jump(m.ref);
        break;
      case 'versions':
        this.showVersions(el, m);
        break;
      case 'toggle':
        this.react(m, button.dataset.emoji);
        break;
      case 'react':
        this.openChooser(button, m);
        break;
      case 'reply':
        this.start('reply', m);
        break;
      case 'edit':
        this.start('edit', m);
        break;
      case 'delete':
        this.client.lifecycle.remove(this.view.convId, m).catch((err) => this.view.notify(`Not deleted: ${err.message}`));
        if (this.mode && this.mode.key === m.key) this.cancel();
        break;
      default:
        break;
    }
  }

  /** Scrolls to the message `msgId` and highlights it for a moment. */
  jump(msgId) {
    const target = this.view.list.querySelector(`.msg[data-msgid="${CSS.escape(msgId)}"]`);
    if (!target) {
      this.view.notify('That message is further back: scroll up to load it.', 'info');
      return;
    }
    target.scrollIntoView({ block: 'center' });
    target.classList.remove('flash');
    void target.offsetWidth; // restart the animation
    target.classList.add('flash');
    target.querySelector('.bubble')?.focus?.();
  }

  async showVersions(el, m) {
    const open = el.querySelector('.msg-versions');
    if (open) {
      open.remove();
      return;
    }
    try {
      const items = await this.client.lifecycle.versions(this.view.convId, m);
      const box = h('div', { className: 'msg-versions', attrs: { role: 'list', 'aria-label': 'Earlier versions' } },
        items.length
          ? items.map((v) => h('div', { className: 'msg-version', attrs: { role: 'listitem' } },
            h('time', { className: 'msg-version-time', text: clockTime(v.SentAt) }), ' ', h('span', { className: 'msg-version-text', text: v.Body, attrs: { dir: 'auto' } })))
          : h('div', { className: 'msg-version', text: 'Earlier versions are not available yet.' }));
      el.querySelector('.msg-versions')?.remove();
      el.querySelector('.bubble').appendChild(box);
    } catch (err) {
      this.view.notify(`Versions not loaded: ${err.message}`);
    }
  }

  react(m, emoji) {
    this.client.lifecycle.toggleReaction(this.view.convId, m, emoji).catch((err) => this.view.notify(`Reaction not sent: ${err.message}`));
  }

  openChooser(anchor, m) {
    if (this.chooserFor === m && !this.chooser.hidden) {
      this.closeChooser();
      return;
    }
    this.chooserFor = m;
    anchor.closest('.msg').appendChild(this.chooser);
    this.chooser.hidden = false;
    this.chooser.querySelector('button')?.focus();
  }

  closeChooser() {
    this.chooser.hidden = true;
    this.chooserFor = null;
  }

  /** Starts replying to or editing `m` in the composer. */
  start(kind, m) {
    this.mode = { kind, key: m.key };
    const who = this.view.people.name(m.from);
    setText(this.bar.firstChild, kind === 'edit' ? 'Editing your message' : `Replying to ${who}: ${excerpt(m.body)}`);
    this.bar.dataset.kind = kind;
    this.bar.hidden = false;
    if (kind === 'edit') this.view.input.value = m.body;
    this.view.onInput();
    this.view.input.focus();
  }

  cancel() {
    const wasEdit = this.mode && this.mode.kind === 'edit';
    this.mode = null;
    this.bar.hidden = true;
    if (wasEdit) {
      this.view.input.value = '';
      this.view.onInput();
    }
  }

  /** Sends the composer's text as a reply or an edit; false when neither is under way. */
  submit(text) {
    if (!this.mode) return false;
    const m = this.message(this.mode.key);
    const { kind } = this.mode;
    this.cancel();
    if (!m) return false;
    if (kind === 'reply') {
      this.client.send(this.view.convId, text, { ref: m.id });
    } else {
      this.client.lifecycle.edit(this.view.convId, m, text).catch((err) => this.view.notify(`Not edited: ${err.message}`));
    }
    return true;
  }
}
