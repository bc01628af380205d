// Client-side state of one signed-in user.
//
// History lives on the server (REST) now, so almost everything here is in memory and per
// tab: the conversation list, the loaded pages of each conversation, group member lists.
// What is persisted is tiny and written so that tabs cannot clobber each other:
//
//   localStorage   webchat.v1.u.<uid>.seq     highest stored-event Seq handled; only ever
//                                              raised (a stale write can lower it for a
//                                              moment, which costs one idempotent replay)
//   localStorage   webchat.v1.u.<uid>.notify  '1': desktop notifications turned on (notify.js)
//   sessionStorage webchat.v1.u.<uid>.outbox  this tab's unsent messages (per tab: survives
//                                              a reload, never shared, so never raced)
//
// Read state is shared between tabs over a BroadcastChannel (see chat.js), not through
// storage. Older versions kept whole histories in localStorage; those keys are removed.
//
// Conversation: { id, kind: 'direct'|'group', lastAt, last: Msg|null, serverUnread,
//                 serverAt, readAt, unseen: Set<key>, members: string[]|null, left }
//   unread = serverUnread (from GET /conversations) + unseen messages newer than serverAt.
// Msg: { key, id (MsgID), from (sender uid), conv, body, at (ms), seq?, out, status?,
//        unread? (groups: members who have not read it), seen?, system?, error? }
//   key = `${sender}\n${MsgID}` (the server's idempotency key), so a message merged twice
//   (REST page, live event, replay, another tab) is one message. System notices (group
//   create/join/depart) use `sys\n${MsgID}`.

const ROOT = 'webchat.v1';

export const STATUS_RANK = { failed: -1, sending: 0, sent: 1, delivered: 2, read: 3 };

export function messageKey(from, msgId) {
  return `${from}\n${msgId}`;
}

export function isGroupId(id) {
  return typeof id === 'string' && id.startsWith('group_');
}

export class UserStore extends EventTarget {
  constructor(uid) {
    super();
    this.uid = uid;
    this.base = `${ROOT}.u.${uid}.`;
    this.convs = new Map();
    this.threads = new Map(); // convId → { list: Msg[] (time order), byKey: Map, older, loaded }
    this.migrate();
  }

  dispose() {
    this.convs.clear();
    this.threads.clear();
  }

  /** Drops what older client versions kept in localStorage (whole histories). */
  migrate() {
    try {
      const doomed = [];
      for (let i = 0; i < localStorage.length; i++) {
        const k = localStorage.key(i);
        if (k && k.startsWith(this.base) && k !== `${this.base}seq` && k !== `${this.base}notify`) doomed.push(k);
      }
      for (const k of doomed) localStorage.removeItem(k);
    } catch (_) {
      /* storage unavailable: nothing to migrate */
    }
  }

  /** Forgets everything stored for this user (a fresh account must not inherit an old Seq). */
  reset() {
    try {
      localStorage.removeItem(`${this.base}seq`);
      sessionStorage.removeItem(`${this.base}outbox`);
    } catch (_) {
      /* ignore */
    }
    this.convs.clear();
    this.threads.clear();
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

  // -- outbox (this tab only) ------------------------------------------------

  outbox() {
    try {
      return JSON.parse(sessionStorage.getItem(`${this.base}outbox`) || '[]');
    } catch (_) {
      return [];
    }
  }

  saveOutbox(list) {
    try {
      if (list.length) sessionStorage.setItem(`${this.base}outbox`, JSON.stringify(list));
      else sessionStorage.removeItem(`${this.base}outbox`);
    } catch (_) {
      /* quota: the in-memory copy still sends */
    }
  }

  addToOutbox(msg) {
    const box = this.outbox().filter((m) => m.key !== msg.key);
    box.push({ key: msg.key, id: msg.id, conv: msg.conv, body: msg.body, at: msg.at, ref: msg.ref });
    this.saveOutbox(box);
  }

  removeFromOutbox(key) {
    const box = this.outbox();
    if (box.some((m) => m.key === key)) this.saveOutbox(box.filter((m) => m.key !== key));
  }

  // -- conversations -------------------------------------------------------

  conversation(id) {
    return this.convs.get(id) || null;
  }

  ensureConversation(id) {
    let c = this.convs.get(id);
    if (!c) {
      c = {
        id,
        kind: isGroupId(id) ? 'group' : 'direct',
        lastAt: 0,
        last: null,
        serverUnread: 0,
        serverAt: 0,
        readAt: 0,
        unseen: new Set(),
        members: null,
        left: false,
      };
      this.convs.set(id, c);
    }
    return c;
  }

  unread(c) {
    let n = c.serverUnread;
    const t = this.threads.get(c.id);
    for (const key of c.unseen) {
      const m = t && t.byKey.get(key);
      if (m && m.at > c.serverAt) n++;
    }
    return n;
  }

  /** Conversations with something in them (or `keep`), newest activity first. */
  sortedConversations(keep) {
    return [...this.convs.values()]
      .filter((c) => c.lastAt || c.id === keep || c.kind === 'group')
      .sort((a, b) => (b.lastAt || 0) - (a.lastAt || 0));
  }

  totalUnread() {
    let n = 0;
    for (const c of this.convs.values()) n += this.unread(c);
    return n;
  }

  /** Merges one item of GET /conversations. */
  mergeSummary(item, toMsg) {
    const c = this.ensureConversation(item.id);
    c.kind = item.kind === 'group' ? 'group' : 'direct';
    const last = item.last ? toMsg(item.last) : null;
    if (last) this.noteLast(c, last);
    c.serverAt = Math.max(c.serverAt, item.updatedAt || 0);
    // A display this tab sent after the server's latest event wins over its (lagging) count.
    c.serverUnread = c.readAt && c.readAt >= c.serverAt ? 0 : item.unread || 0;
    if (!c.lastAt && item.updatedAt) c.lastAt = item.updatedAt;
    return c;
  }

  noteLast(c, m) {
    if (!c.last || m.at >= c.last.at || m.key === c.last.key) {
      c.last = m;
      c.lastAt = Math.max(c.lastAt, m.at);
    }
  }

  /** Everything incoming in `convId` up to `at` (ms) is read (here or in another tab). */
  markRead(convId, at) {
    const c = this.ensureConversation(convId);
    c.readAt = Math.max(c.readAt, at);
    if (at >= c.serverAt) c.serverUnread = 0;
    const t = this.threads.get(convId);
    if (t) {
      for (const m of t.list) {
        if (!m.out && !m.system && m.at <= at) {
          m.seen = true;
          c.unseen.delete(m.key);
        }
      }
    }
  }

  // -- messages ------------------------------------------------------------

  thread(convId) {
    let t = this.threads.get(convId);
    if (!t) {
      t = { list: [], byKey: new Map(), older: null, loaded: false, loading: null };
      this.threads.set(convId, t);
    }
    return t;
  }

  messages(convId) {
    return this.thread(convId).list;
  }

  findMessage(convId, key) {
    return this.thread(convId).byKey.get(key) || null;
  }

  /**
   * Adds a message or merges it into the known copy (statuses never go back, a group's
   * unread count never goes up). Returns { added, message }.
   */
  upsertMessage(convId, msg) {
    const c = this.ensureConversation(convId);
    const t = this.thread(convId);
    const old = t.byKey.get(msg.key);
    let result;
    if (old) {
      result = mergeMessage(old, msg);
      Object.assign(old, result);
      result = old;
      resort(t);
    } else {
      result = { ...msg, conv: convId };
      t.byKey.set(result.key, result);
      let j = t.list.length;
      while (j > 0 && t.list[j - 1].at > result.at) j--;
      t.list.splice(j, 0, result);
    }
    if (!result.system || !c.last) this.noteLast(c, result);
    // Live messages arrive with seen: false; history pages leave it unset (read, unless
    // the conversation's unread count says otherwise, see ChatClient.markServerUnread).
    if (!result.out && !result.system && result.seen === false) c.unseen.add(result.key);
    else c.unseen.delete(result.key);
    return { added: !old, message: result };
  }

  /** Applies fn(message) → patch|null to each message of a conversation. Returns changed count. */
  updateMessages(convId, fn) {
    let changed = 0;
    for (const m of this.thread(convId).list) {
      const patch = fn(m);
      if (!patch) continue;
      const merged = mergeMessage(m, patch);
      Object.assign(m, merged);
      changed++;
    }
    return changed;
  }
}

function resort(t) {
  t.list.sort((a, b) => a.at - b.at);
}

export function mergeMessage(old, incoming) {
  const merged = { ...old, ...incoming };
  // Never step a status back (a late ack after a display receipt, a replayed copy…).
  // failed ranks lowest, so a retry (sending) moves on from it.
  if (old.status && incoming.status && STATUS_RANK[old.status] > STATUS_RANK[incoming.status]) {
    merged.status = old.status;
  }
  if (old.seen) merged.seen = true;
  if (old.seq != null && incoming.seq == null) merged.seq = old.seq;
  if (old.unread != null && (incoming.unread == null || incoming.unread > old.unread)) merged.unread = old.unread;
  // The local copy of an own message keeps its text and clock until the server's copy lands.
  if (incoming.body == null) merged.body = old.body;
  // A deleted message stays deleted (a late copy of it, or an edit, brings nothing back).
  if (old.deleted) {
    merged.deleted = true;
    merged.body = '';
  }
  return merged;
}
