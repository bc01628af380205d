// Message lifecycle (contract §11) on the client: replies, edits, deletes and reactions.
//
// Each is an event of its own that names the message it is about in `Ref`. Live events,
// replays and the echo of this user's other tabs are applied to the message in the store;
// history rows come with the result already (latest Body, EditedAt, Deleted, Reactions).
// Applying is idempotent, and a delete is final: an edit or reaction that arrives after
// the delete of its message changes nothing (the server's history agrees).
//
// Msg fields added here: ref (MsgID replied to), editedAt (ms), deleted, reactions
// ({emoji: [uid, ...]}).

import * as api from './api.js';
import { newMsgId } from './util.js';

export const LIFECYCLE_TYPES = new Set(['edit', 'delete', 'react', 'unreact']);
/** Events about messages not loaded yet, kept per conversation until they are. */
const MAX_PENDING = 500;

export class LifecycleClient {
  constructor(client) {
    this.client = client;
    this.pending = new Map(); // convId → events whose message is not in the store yet
  }

  /** Copies the lifecycle fields of a wire event or history row onto message `m`. */
  decorate(m, ev) {
    if (typeof ev.Ref === 'string' && ev.Ref) m.ref = ev.Ref;
    if (Number.isInteger(ev.EditedAt)) m.editedAt = ev.EditedAt;
    if (ev.Deleted === true) {
      m.deleted = true;
      m.body = '';
    }
    if (ev.Reactions && typeof ev.Reactions === 'object') m.reactions = cleanReactions(ev.Reactions);
    return m;
  }

  /** Handles an incoming `edit`, `delete`, `react` or `unreact`. */
  onEvent(ev) {
    const c = this.client;
    const convId = c.conversationOf(ev);
    if (!convId || typeof ev.Ref !== 'string') return;
    const actor = c.senderOf(ev);
    this.apply(convId, { type: ev.EvtType, ref: ev.Ref, body: String(ev.Body ?? ''), actor, at: ev.SentAt || Date.now() });
  }

  /** Applies one change; kept for later when its message is not loaded yet. */
  apply(convId, change) {
    const m = this.find(convId, change.ref);
    if (!m) {
      const list = this.pending.get(convId) || [];
      list.push(change);
      if (list.length > MAX_PENDING) list.shift();
      this.pending.set(convId, list);
      return;
    }
    const patch = patchFor(m, change);
    if (patch) {
      this.client.store.updateMessages(convId, (x) => (x === m ? patch : null));
      this.client.emit('messages', convId);
      this.client.emit('conversations');
    }
  }

  /** After a message was merged: the changes that waited for it. */
  afterMerge(convId, m) {
    const list = this.pending.get(convId);
    if (!list || !m || m.system) return;
    const mine = list.filter((ch) => ch.ref === m.id);
    if (!mine.length) return;
    this.pending.set(convId, list.filter((ch) => ch.ref !== m.id));
    for (const ch of mine) {
      const patch = patchFor(m, ch);
      if (patch) this.client.store.updateMessages(convId, (x) => (x === m ? patch : null));
    }
  }

  /** The (non-notice) message `msgId` of `convId`, if loaded. */
  find(convId, msgId) {
    const list = this.client.store.messages(convId);
    for (let i = list.length - 1; i >= 0; i--) if (list[i].id === msgId && !list[i].system) return list[i];
    return null;
  }

  // -- sending -----------------------------------------------------------------

  /** Sends an event about `m` and applies it here once the server has it. */
  async send(convId, type, m, body = '') {
    const res = await this.client.command({ EvtType: type, To: convId, MsgID: newMsgId(), Ref: m.id, Body: body });
    this.apply(convId, { type, ref: m.id, body, actor: this.client.me, at: res.SentAt || Date.now() });
    return res;
  }

  edit(convId, m, text) {
    return this.send(convId, 'edit', m, text);
  }

  remove(convId, m) {
    return this.send(convId, 'delete', m);
  }

  /** Adds this user's `emoji` to `m`, or takes it back if it is there. */
  toggleReaction(convId, m, emoji) {
    const mine = ((m.reactions || {})[emoji] || []).includes(this.client.me);
    return this.send(convId, mine ? 'unreact' : 'react', m, emoji);
  }

  /** The earlier texts of `m` (oldest first), from the server. */
  async versions(convId, m) {
    const res = await api.versions(this.client.getToken(), convId, m.id);
    return res.items || [];
  }
}

/** The patch `change` makes to message `m` (null: nothing changes). */
export function patchFor(m, change) {
  if (m.deleted) return null; // final
  switch (change.type) {
    case 'delete':
      return { deleted: true, body: '', reactions: {}, editedAt: null };
    case 'edit':
      if (m.editedAt && m.editedAt > change.at) return null; // a newer edit is shown
      return { body: change.body, editedAt: change.at };
    case 'react':
    case 'unreact': {
      const reactions = { ...(m.reactions || {}) };
      const who = (reactions[change.body] || []).filter((u) => u !== change.actor);
      if (change.type === 'react') who.push(change.actor);
      if (who.length) reactions[change.body] = who;
      else delete reactions[change.body];
      return { reactions };
    }
    default:
      return null;
  }
}

function cleanReactions(raw) {
  const out = {};
  for (const [emoji, who] of Object.entries(raw)) {
    if (Array.isArray(who)) {
      const uids = who.filter((u) => typeof u === 'string');
      if (uids.length) out[emoji] = uids;
    }
  }
  return out;
}
