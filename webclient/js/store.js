// Per-user client-side state in localStorage: the conversation list, each
// conversation's messages, the outbox and the highest inbox Seq handled.
//
// The server keeps no history a client can fetch yet, so this is the client's
// history. Keys (all under `webchat.v1.u.<uid>.`):
//   seq          highest stored-event Seq handled (replays at or below it are skipped)
//   convs        { [convId]: Conversation }
//   m.<convId>   Message[] in time order (the newest MAX_MESSAGES)
//   outbox       [{conv, key}] messages not yet acknowledged by the server
//
// Conversation: { id, kind: 'direct', peer, createdAt, lastAt, lastText, lastOut,
//                 lastStatus, unread }
//   convId is the peer's uid for 1:1 chats; group chats (not on the server yet)
//   will use their gid ("group_…") and kind 'group'.
// Message: { key, id (MsgID), from, to, body, at (ms), seq?, out, status, seen?, error? }
//   key = `${from}\n${MsgID}`, the server's idempotency key for a send, so a
//   message merged twice (replay, another tab) is stored once.
//   status (own messages): sending → sent → delivered → read, or failed.
//
// Several tabs of one user share these keys: every write goes through a
// read-merge-write of one key, merges are idempotent, and a `storage` event
// from another tab drops the cached copy and is re-dispatched as 'external'.

const ROOT = 'webchat.v1';
const MAX_MESSAGES = 1000;

export const STATUS_RANK = { failed: -1, sending: 0, sent: 1, delivered: 2, read: 3 };

export function messageKey(from, msgId) {
  return `${from}\n${msgId}`;
}

export class UserStore extends EventTarget {
  constructor(uid) {
    super();
    this.uid = uid;
    this.base = `${ROOT}.u.${uid}.`;
    this.cache = new Map();
    this.onStorage = this.onStorage.bind(this);
    window.addEventListener('storage', this.onStorage);
  }

  dispose() {
    window.removeEventListener('storage', this.onStorage);
    this.cache.clear();
  }

  // -- raw access ----------------------------------------------------------

  read(name, fallback) {
    if (this.cache.has(name)) return this.cache.get(name);
    let value = fallback;
    try {
      const raw = localStorage.getItem(this.base + name);
      if (raw != null) value = JSON.parse(raw);
    } catch (e) {
      console.warn('webchat: unreadable stored', name, e);
    }
    this.cache.set(name, value);
    return value;
  }

  write(name, value) {
    this.cache.set(name, value);
    const raw = JSON.stringify(value);
    try {
      localStorage.setItem(this.base + name, raw);
    } catch (e) {
      // Quota: drop the oldest half of the longest conversations and try once more.
      console.warn('webchat: storage full, trimming history', e);
      this.trimHistory();
      localStorage.setItem(this.base + name, raw);
    }
  }

  onStorage(e) {
    if (e.storageArea !== localStorage) return;
    if (e.key === null) {
      this.cache.clear();
      this.dispatchEvent(new CustomEvent('external', { detail: { name: '*' } }));
    } else if (e.key.startsWith(this.base)) {
      const name = e.key.slice(this.base.length);
      this.cache.delete(name);
      this.dispatchEvent(new CustomEvent('external', { detail: { name } }));
    }
  }

  /** Forgets everything stored for this user (a fresh account must not inherit an old Seq). */
  reset() {
    const doomed = [];
    for (let i = 0; i < localStorage.length; i++) {
      const k = localStorage.key(i);
      if (k && k.startsWith(this.base)) doomed.push(k);
    }
    for (const k of doomed) localStorage.removeItem(k);
    this.cache.clear();
  }

  trimHistory() {
    const convs = this.conversations();
    for (const id of Object.keys(convs)) {
      const msgs = this.read(`m.${id}`, []);
      if (msgs.length > 50) {
        const kept = msgs.slice(Math.floor(msgs.length / 2));
        this.cache.set(`m.${id}`, kept);
        try {
          localStorage.setItem(`${this.base}m.${id}`, JSON.stringify(kept));
        } catch (_) {
          /* keep going */
        }
      }
    }
  }

  // -- Seq -----------------------------------------------------------------

  /** Highest handled Seq; read uncached, since another tab may have moved it. */
  lastSeq() {
    const n = Number(localStorage.getItem(`${this.base}seq`));
    return Number.isFinite(n) ? n : 0;
  }

  setLastSeq(seq) {
    if (seq > this.lastSeq()) localStorage.setItem(`${this.base}seq`, String(seq));
  }

  // -- conversations -------------------------------------------------------

  conversations() {
    return this.read('convs', {});
  }

  conversation(id) {
    return this.conversations()[id] || null;
  }

  /** Conversations, newest activity first. */
  sortedConversations() {
    return Object.values(this.conversations()).sort(
      (a, b) => (b.lastAt || b.createdAt || 0) - (a.lastAt || a.createdAt || 0),
    );
  }

  ensureConversation(id, fields = {}) {
    const convs = { ...this.conversations() };
    if (!convs[id]) {
      convs[id] = {
        id,
        kind: 'direct',
        peer: id,
        createdAt: Date.now(),
        lastAt: 0,
        lastText: '',
        lastOut: false,
        lastStatus: null,
        unread: 0,
        ...fields,
      };
      this.write('convs', convs);
    }
    return convs[id];
  }

  /** Recomputes a conversation's preview and unread count from its messages. */
  refreshConversation(id) {
    const convs = { ...this.conversations() };
    const conv = convs[id] || this.ensureConversation(id);
    const msgs = this.messages(id);
    const last = msgs[msgs.length - 1];
    const next = {
      ...conv,
      lastAt: last ? last.at : conv.lastAt,
      lastText: last ? last.body : conv.lastText,
      lastOut: last ? last.out : conv.lastOut,
      lastStatus: last && last.out ? last.status : null,
      unread: msgs.reduce((n, m) => n + (!m.out && !m.seen ? 1 : 0), 0),
    };
    convs[id] = next;
    this.write('convs', convs);
    return next;
  }

  totalUnread() {
    return Object.values(this.conversations()).reduce((n, c) => n + (c.unread || 0), 0);
  }

  // -- messages ------------------------------------------------------------

  messages(convId) {
    return this.read(`m.${convId}`, []);
  }

  findMessage(convId, key) {
    return this.messages(convId).find((m) => m.key === key) || null;
  }

  /**
   * Adds a message or merges it into the stored copy (statuses never go back).
   * Returns { added, message }.
   */
  upsertMessage(convId, msg) {
    this.ensureConversation(convId);
    const msgs = this.messages(convId).slice();
    const i = msgs.findIndex((m) => m.key === msg.key);
    let added = false;
    let result;
    if (i >= 0) {
      result = mergeMessage(msgs[i], msg);
      msgs.splice(i, 1);
    } else {
      result = { ...msg };
      added = true;
    }
    // Keep time order; equal times keep arrival order.
    let j = msgs.length;
    while (j > 0 && msgs[j - 1].at > result.at) j--;
    msgs.splice(j, 0, result);
    if (msgs.length > MAX_MESSAGES) msgs.splice(0, msgs.length - MAX_MESSAGES);
    this.write(`m.${convId}`, msgs);
    this.refreshConversation(convId);
    return { added, message: result };
  }

  /** Applies fn(message) → patch|null to each message; writes once. Returns changed count. */
  updateMessages(convId, fn) {
    const msgs = this.messages(convId);
    let changed = 0;
    const next = msgs.map((m) => {
      const patch = fn(m);
      if (!patch) return m;
      changed++;
      return { ...m, ...patch };
    });
    if (changed) {
      this.write(`m.${convId}`, next);
      this.refreshConversation(convId);
    }
    return changed;
  }

  // -- outbox --------------------------------------------------------------

  outbox() {
    return this.read('outbox', []);
  }

  addToOutbox(conv, key) {
    const box = this.outbox();
    if (!box.some((e) => e.key === key)) this.write('outbox', [...box, { conv, key }]);
  }

  removeFromOutbox(key) {
    const box = this.outbox();
    if (box.some((e) => e.key === key)) this.write('outbox', box.filter((e) => e.key !== key));
  }
}

function mergeMessage(old, incoming) {
  const merged = { ...old, ...incoming };
  // Never step a status back (a late ack after a display receipt, a replayed copy…).
  if (old.status && incoming.status && STATUS_RANK[old.status] > STATUS_RANK[incoming.status]) {
    merged.status = old.status;
  }
  if (old.seen) merged.seen = true;
  if (old.seq != null && incoming.seq == null) merged.seq = old.seq;
  return merged;
}
