// The chat protocol on top of a Connection, a UserStore and the REST history: incoming
// events, history pages, receipts, the outbox, typing, groups, presence and profiles.
// No DOM here besides the page's focus and visibility (needed to decide when a message
// counts as read).
//
// UI events (CustomEvent):
//   'conversations'              the conversation list changed
//   'messages'   detail: convId  a conversation's messages changed
//   'members'    detail: gid     a group's member list changed
//   'typing'     detail: {convId, active}
//   'notice'     detail: {text, kind: 'error'|'info'}
//   'incoming'   detail: {convId, msg}  a new message from someone else arrived live
//   'missing'    detail: convId  the server says this 1:1 peer has no account
//
// Tabs: every tab of a user has its own socket and gets every stored event, so each tab
// applies each event to its own memory (idempotently, keyed by sender + MsgID). The Seq in
// localStorage only decides who sends the delivery receipt: the first tab to handle a Seq.
// Read state goes to the other tabs over a BroadcastChannel.

import * as api from './api.js';
import { isGroupId, messageKey, STATUS_RANK } from './store.js';
import { newMsgId } from './util.js';
import { LifecycleClient } from './lifecycle.js';

const TYPING_SEND_EVERY_MS = 3000; // refresh "typing" at most this often
const TYPING_IDLE_MS = 4000; // no keystroke for this long → "stopped typing"
const TYPING_SHOW_MS = 6000; // a peer's indicator expires without a refresh
const OUTBOX_RETRY_MS = 5000;
export const PAGE_SIZE = 30;
const MAX_DISPLAY_RECEIPTS = 50; // per open, when catching up on a long unread run
/** Send errors worth retrying with the same MsgID; the rest fail the message. */
const RETRIABLE = new Set(['unavailable', 'rate_limited', 'internal']);
const SYSTEM_TYPES = new Set(['create', 'notify', 'refer', 'join', 'depart']);

export class ChatClient extends EventTarget {
  constructor({ uid, store, connection, people, getToken }) {
    super();
    this.me = uid;
    this.store = store;
    this.conn = connection;
    this.people = people;
    this.getToken = getToken;
    this.viewing = null; // convId whose messages are on screen, or null
    this.inflight = new Set(); // message keys awaiting an ack
    this.peerTyping = new Map(); // convId → {timer, who}
    this.myTyping = { convId: null, sentAt: 0, idleTimer: null };
    this.receipts = new Map(); // own message key → {status, unread} for messages not loaded yet
    this.listLoaded = false;
    this.blocked = new Set(); // uids this user blocks (loaded with the conversation list)
    this.lifecycle = new LifecycleClient(this); // replies, edits, deletes, reactions

    this.onChat = (e) => this.handleEvent(e.detail.ev, e.detail.ack, e.detail.failed);
    this.onState = (e) => {
      if (e.detail === 'online') {
        this.flushOutbox();
        this.loadConversations();
        this.loadBlocks();
        // The server sends no presence state on connect: ask for it.
        this.people.refreshPresence();
      } else {
        this.clearAllPeerTyping();
        // Disconnected, nobody's presence is known any more (no change would reach us).
        this.people.clearPresence();
      }
    };
    this.onAttention = () => this.markViewingSeen();
    this.onBroadcast = (e) => this.handleBroadcast(e.data);
  }

  start() {
    this.conn.addEventListener('chat', this.onChat);
    this.conn.addEventListener('state', this.onState);
    window.addEventListener('focus', this.onAttention);
    document.addEventListener('visibilitychange', this.onAttention);
    this.retryTimer = setInterval(() => this.flushOutbox(OUTBOX_RETRY_MS * 2), OUTBOX_RETRY_MS);
    if (typeof BroadcastChannel === 'function') {
      this.channel = new BroadcastChannel(`webchat.v1.u.${this.me}`);
      this.channel.addEventListener('message', this.onBroadcast);
    }
    // This tab's unsent messages (kept across a reload in sessionStorage).
    for (const m of this.store.outbox()) {
      this.store.upsertMessage(m.conv, { key: m.key, id: m.id, from: this.me, body: m.body, at: m.at, out: true, status: 'sending' });
    }
    this.loadConversations();
  }

  dispose() {
    this.disposed = true;
    this.conn.removeEventListener('chat', this.onChat);
    this.conn.removeEventListener('state', this.onState);
    window.removeEventListener('focus', this.onAttention);
    document.removeEventListener('visibilitychange', this.onAttention);
    clearInterval(this.retryTimer);
    clearTimeout(this.myTyping.idleTimer);
    this.clearAllPeerTyping();
    if (this.channel) this.channel.close();
  }

  emit(type, detail) {
    if (!this.disposed) this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  broadcast(msg) {
    try {
      if (this.channel) this.channel.postMessage(msg);
    } catch (_) {
      /* closed */
    }
  }

  handleBroadcast(msg) {
    if (!msg || typeof msg !== 'object') return;
    if (msg.type === 'read' && typeof msg.conv === 'string') {
      this.store.markRead(msg.conv, msg.at);
      this.emit('messages', msg.conv);
      this.emit('conversations');
    } else if (msg.type === 'profile') {
      this.people.apply(msg.profile);
    }
  }

  // -- REST ----------------------------------------------------------------

  /** (Re)loads whom this user blocks; a failure keeps what we knew. */
  async loadBlocks() {
    try {
      const res = await api.blocks(this.getToken());
      this.blocked = new Set(res.items || []);
      this.emit('blocks');
    } catch (_) {
      /* the button shows the last known state; the next reconnect retries */
    }
  }

  isBlocked(uid) {
    return this.blocked.has(uid);
  }

  /** Blocks or unblocks `uid` (throws the ApiError on failure). */
  async setBlocked(uid, on) {
    await api.setBlocked(this.getToken(), uid, on);
    if (on) this.blocked.add(uid);
    else this.blocked.delete(uid);
    this.emit('blocks');
  }

  /** (Re)loads the conversation list; merged into what live events already told us. */
  async loadConversations() {
    if (this.loadingList) return this.loadingList;
    this.loadingList = (async () => {
      try {
        let cursor = null;
        const peers = new Set();
        for (let page = 0; page < 5; page++) {
          const res = await api.conversations(this.getToken(), cursor);
          for (const item of res.items || []) {
            const c = this.store.mergeSummary(item, (ev) => this.toMsg(ev));
            if (c.kind === 'direct') peers.add(c.id);
            else {
              if (item.last) peers.add(this.senderOf(item.last));
              // An unnamed group is titled by its members.
              if (!c.members && !/^group_.+\.[^.]+$/.test(c.id)) this.loadGroup(c.id);
            }
          }
          cursor = res.next;
          if (!cursor) break;
        }
        this.people.want([...peers]);
        this.listLoaded = true;
        this.emit('conversations');
      } catch (e) {
        if (e.status === 401) this.conn.dispatchEvent(new Event('unauthorized'));
        else console.warn('webchat: conversation list not loaded', e.message);
      } finally {
        this.loadingList = null;
      }
    })();
    return this.loadingList;
  }

  /** Loads the newest page of a conversation (once), or the next older page. */
  async loadHistory(convId, { older = false } = {}) {
    const t = this.store.thread(convId);
    if (t.loading) return t.loading;
    if (older ? !t.older : t.loaded) return null;
    t.loading = (async () => {
      try {
        const res = await api.messages(this.getToken(), convId, { cursor: older ? t.older : null, limit: PAGE_SIZE });
        const items = res.items || [];
        for (const ev of items) {
          const m = this.toMsg(ev);
          if (m) this.merge(convId, m);
        }
        this.cumulate(convId);
        t.older = res.next || null;
        if (!older) {
          t.loaded = true;
          this.markServerUnread(convId);
        }
        this.people.want(items.map((ev) => this.senderOf(ev)));
        this.emit('messages', convId);
        this.emit('conversations');
        if (!older) this.markViewingSeen();
      } catch (e) {
        if (e.status === 401) this.conn.dispatchEvent(new Event('unauthorized'));
        else if (e.status === 403 || e.status === 404) {
          t.loaded = true; // e.g. a group we left: nothing to read
          this.emit('messages', convId);
        } else {
          this.emit('notice', { kind: 'error', text: `History not loaded: ${e.message}` });
        }
      } finally {
        t.loading = null;
      }
    })();
    return t.loading;
  }

  /** The newest `unread` incoming messages of a freshly loaded page are the unread ones. */
  markServerUnread(convId) {
    const c = this.store.ensureConversation(convId);
    let left = c.serverUnread;
    const list = this.store.messages(convId);
    for (let i = list.length - 1; i >= 0 && left > 0; i--) {
      const m = list[i];
      if (m.out || m.system || m.at <= c.readAt) continue;
      if (m.seen === false) {
        if (m.at <= c.serverAt) left--; // live, and one of those the server counted
        continue;
      }
      m.seen = false;
      c.unseen.add(m.key);
      left--;
    }
  }

  async loadGroup(gid) {
    try {
      const res = await api.group(this.getToken(), gid);
      this.setMembers(gid, res.members || []);
    } catch (e) {
      if (e.status === 403 || e.status === 404) {
        const c = this.store.ensureConversation(gid);
        c.left = true;
        this.emit('members', gid);
      }
    }
  }

  setMembers(gid, members) {
    const c = this.store.ensureConversation(gid);
    c.members = [...new Set(members)].sort();
    c.left = !c.members.includes(this.me);
    this.people.want(c.members);
    this.emit('members', gid);
    this.emit('conversations');
  }

  // -- events → messages ---------------------------------------------------

  senderOf(ev) {
    return isGroupId(ev.From) ? ev.Originated : ev.From;
  }

  conversationOf(ev) {
    if (isGroupId(ev.From)) return ev.From;
    if (isGroupId(ev.To)) return ev.To;
    return ev.From === this.me ? ev.To : ev.From;
  }

  /** A wire event or a REST LoggedEvent as a Msg (null: not a conversation item). */
  toMsg(ev) {
    if (!ev || !ev.MsgID) return null;
    const convId = this.conversationOf(ev);
    if (!convId) return null;
    const group = isGroupId(convId);
    const at = ev.SentAt || (ev.Timestamp ? ev.Timestamp * 1000 : Date.now());
    if (SYSTEM_TYPES.has(ev.EvtType)) {
      return {
        key: `sys\n${ev.MsgID}`,
        id: ev.MsgID,
        from: ev.Originated || ev.From,
        conv: convId,
        at,
        system: ev.EvtType,
        uids: parseList(ev.Body),
        out: false,
        seen: true,
        body: '',
      };
    }
    if (ev.EvtType !== 'message') return null;
    const from = group ? ev.Originated : ev.From;
    const out = from === this.me;
    const m = this.lifecycle.decorate(
      {
        key: messageKey(from, ev.MsgID),
        id: ev.MsgID,
        from,
        conv: convId,
        body: typeof ev.Body === 'string' ? ev.Body : String(ev.Body ?? ''),
        at,
        out,
      },
      ev,
    );
    if (Number.isInteger(ev.Seq) && !out) m.seq = ev.Seq;
    if (out) {
      if (!group && convId === this.me) m.status = 'read';
      else if (group) {
        m.status = ev.DisplayedAt && ev.Unread === 0 ? 'read' : ev.DeliveredAt ? 'delivered' : 'sent';
        if (Number.isInteger(ev.Unread)) m.unread = ev.Unread;
      } else {
        m.status = ev.DisplayedAt ? 'read' : ev.DeliveredAt ? 'delivered' : 'sent';
      }
    }
    return m;
  }

  /**
   * Merges a message into the store, with receipts that came before it was loaded.
   * Live notices also update the member list (history pages don't: they are old news,
   * and GET /groups/{gid} has the current list).
   */
  merge(convId, m, { live = false } = {}) {
    if (m.out) {
      const r = this.receipts.get(m.key);
      if (r) {
        if (STATUS_RANK[r.status] > STATUS_RANK[m.status]) m.status = r.status;
        if (r.unread != null && (m.unread == null || r.unread < m.unread)) m.unread = r.unread;
      }
    }
    if (m.system && live) this.applySystem(m);
    const merged = this.store.upsertMessage(convId, m);
    this.lifecycle.afterMerge(convId, merged.message);
    return merged;
  }

  /** 1:1 receipts are cumulative: a read (delivered) message means every earlier one is. */
  cumulate(convId) {
    if (isGroupId(convId)) return;
    let best = 0;
    const list = this.store.messages(convId);
    for (let i = list.length - 1; i >= 0; i--) {
      const m = list[i];
      if (!m.out || m.system) continue;
      const rank = STATUS_RANK[m.status] ?? 0;
      if (rank >= STATUS_RANK.sent && rank < best) m.status = best === STATUS_RANK.read ? 'read' : 'delivered';
      else if (rank > best) best = rank;
    }
  }

  /** Membership effects of a system notice (idempotent). */
  applySystem(m) {
    const c = this.store.ensureConversation(m.conv);
    if (!c.members) return;
    const set = new Set(c.members);
    if (m.system === 'notify' || m.system === 'create') for (const u of m.uids) set.add(u);
    else if (m.system === 'join' || m.system === 'refer') for (const u of m.uids) set.add(u);
    else if (m.system === 'depart') for (const u of m.uids.length ? m.uids : [m.from]) set.delete(u);
    c.members = [...set].sort();
  }

  // -- incoming --------------------------------------------------------------

  /** Handles one `chat` event; acks stored events once handled. */
  handleEvent(ev, ack, failed) {
    const seq = Number.isInteger(ev.Seq) ? ev.Seq : null;
    // Handled before (a replay, or another tab of ours was first): apply it to this tab's
    // memory all the same (idempotent), but don't send its receipts again.
    const replay = seq !== null && seq <= this.store.lastSeq();
    if (seq !== null && !replay) this.store.setLastSeq(seq);
    try {
      switch (ev.EvtType) {
        case 'message':
          this.onMessage(ev, seq, replay);
          break;
        case 'delivery':
        case 'display':
          this.onReceipt(ev);
          break;
        case 'typing':
          this.onTyping(ev);
          break;
        case 'presence':
          this.people.setPresence(ev.From, ev.Body, ev.Timestamp);
          break;
        case 'profile':
          this.onProfile(ev);
          break;
        case 'notify':
        case 'restart':
        case 'join':
        case 'depart':
        case 'create':
          this.onGroupEvent(ev);
          break;
        case 'error':
          this.onServerError(ev);
          break;
        case 'edit':
        case 'delete':
        case 'react':
        case 'unreact':
          this.lifecycle.onEvent(ev);
          break;
        default:
          break; // event types this client does not know
      }
    } catch (e) {
      // Not acked: the server replays it on the next connect.
      console.error('webchat: failed to handle event', ev, e);
      if (failed) failed();
      return;
    }
    if (ack) ack();
  }

  onMessage(ev, seq, replay) {
    const m = this.toMsg(ev);
    if (!m) return;
    const convId = m.conv;
    if (m.out && m.status !== 'read') m.status = 'sent'; // a copy from another tab or device
    const c = this.store.ensureConversation(convId);
    if (!m.out) m.seen = c.readAt >= m.at; // true: another tab read past it already
    if (isGroupId(convId) && !c.members) this.loadGroup(convId);
    const { added } = this.merge(convId, m);
    this.people.want([m.from]);
    if (added && !m.out) {
      this.clearPeerTyping(convId);
      if (!replay) this.sendReceipt('delivery', m, seq);
      // A reply to what we wrote may have just made us mutual contacts (the server shares
      // presence from then on, but sends no event for it).
      if (!isGroupId(convId) && this.hasOwn(convId)) this.people.recheckPresence([convId]);
      if (!replay && m.seen === false) this.emit('incoming', { convId, msg: m });
    }
    this.emit('messages', convId);
    this.emit('conversations');
    if (!m.out) this.markViewingSeen();
  }

  onReceipt(ev) {
    const group = isGroupId(ev.From);
    const convId = ev.From; // the reader, or the group
    const key = messageKey(this.me, ev.MsgID);
    const display = ev.EvtType === 'display';
    const unread = Number.isInteger(ev.Unread) ? ev.Unread : null;
    let status;
    if (group) status = display && unread === 0 ? 'read' : 'delivered';
    else status = display ? 'read' : 'delivered';
    // Remember it for a message whose page is not loaded yet.
    const prev = this.receipts.get(key);
    const rec = { status, unread };
    if (prev) {
      if (STATUS_RANK[prev.status] > STATUS_RANK[status]) rec.status = prev.status;
      if (prev.unread != null && (unread == null || prev.unread < unread)) rec.unread = prev.unread;
    }
    this.receipts.set(key, rec);

    const target = this.store.findMessage(convId, key);
    let changed = 0;
    if (group) {
      if (target) changed = this.store.updateMessages(convId, (m) => (m === target ? { status: rec.status, unread: rec.unread ?? m.unread } : null));
    } else {
      const upTo = target ? target.at : Infinity;
      const rank = STATUS_RANK[status];
      changed = this.store.updateMessages(convId, (m) => {
        if (!m.out || m.system || m.at > upTo) return null;
        if (!target && m.key !== key) return null;
        const cur = STATUS_RANK[m.status] ?? 0;
        if (cur < STATUS_RANK.sent || cur >= rank) return null;
        return { status };
      });
    }
    const c = this.store.conversation(convId);
    if (c && c.last && c.last.key === key && c.last !== target) {
      c.last = { ...c.last, status: rec.status };
      changed++;
    }
    if (changed) {
      this.emit('messages', convId);
      this.emit('conversations');
    }
  }

  onGroupEvent(ev) {
    const gid = ev.From;
    if (!isGroupId(gid)) return;
    const c = this.store.ensureConversation(gid);
    const list = parseList(ev.Body);
    const isNew = !c.members;
    if (ev.EvtType === 'notify' || ev.EvtType === 'restart') {
      c.members = list.slice().sort();
      c.left = !c.members.includes(this.me);
    }
    if (ev.EvtType === 'depart' && (ev.Originated === this.me || list.includes(this.me))) c.left = true;
    if (ev.EvtType === 'join' && c.members === null) this.loadGroup(gid);
    // Notices: joins, departures, and being added (a notify for a group new to us).
    if (ev.EvtType !== 'restart' && (ev.EvtType !== 'notify' || isNew || !c.lastAt)) {
      const m = this.toMsg(ev);
      if (m) this.merge(gid, m, { live: true });
    }
    this.people.want(list.concat(ev.Originated ? [ev.Originated] : []));
    // Sharing a group shares presence (up to the server's group limit): ask for the
    // newcomers' (or, when we are the newcomer, everyone's) now.
    if (ev.EvtType === 'notify' || ev.EvtType === 'join') this.people.recheckPresence(list.filter((u) => u !== this.me));
    this.emit('members', gid);
    this.emit('messages', gid);
    this.emit('conversations');
  }

  onProfile(ev) {
    let p = null;
    try {
      p = typeof ev.Body === 'string' ? JSON.parse(ev.Body) : ev.Body;
    } catch (_) {
      return;
    }
    if (p && !p.uid) p.uid = ev.From;
    this.people.apply(p);
  }

  onTyping(ev) {
    const group = isGroupId(ev.From);
    const convId = ev.From;
    const who = group ? ev.Originated : ev.From;
    if (!convId || who === this.me) return;
    if (ev.Body === '1') {
      const cur = this.peerTyping.get(convId);
      if (cur) clearTimeout(cur.timer);
      this.peerTyping.set(convId, { who, timer: setTimeout(() => this.clearPeerTyping(convId), TYPING_SHOW_MS) });
      this.emit('typing', { convId, active: true });
    } else {
      this.clearPeerTyping(convId);
    }
  }

  clearPeerTyping(convId) {
    const cur = this.peerTyping.get(convId);
    if (!cur) return;
    clearTimeout(cur.timer);
    this.peerTyping.delete(convId);
    this.emit('typing', { convId, active: false });
  }

  clearAllPeerTyping() {
    for (const convId of [...this.peerTyping.keys()]) this.clearPeerTyping(convId);
  }

  /** Who is typing in `convId` (a uid), or null. */
  typingIn(convId) {
    const cur = this.peerTyping.get(convId);
    return cur ? cur.who : null;
  }

  isPeerTyping(convId) {
    return this.peerTyping.has(convId);
  }

  onServerError(ev) {
    let err = {};
    try {
      err = JSON.parse(ev.Body || '{}');
    } catch (_) {
      err = { message: ev.Body };
    }
    if (ev.MsgID) {
      for (const o of this.store.outbox()) if (o.id === ev.MsgID) this.failMessage(o.conv, o.key, err);
    }
    this.emit('notice', { kind: 'error', text: err.message || 'The server refused a request.' });
  }

  // -- receipts ------------------------------------------------------------

  sendReceipt(kind, m, seq) {
    if (m.from === this.me) return;
    const payload = { EvtType: kind, To: m.from, MsgID: m.id };
    if (isGroupId(m.conv)) payload.From = m.conv;
    if (seq != null) payload.Seq = seq;
    this.conn.request(payload).then(
      (res) => res.error && console.warn(`webchat: ${kind} receipt refused`, res.error),
      () => {
        /* offline: 1:1 receipts are cumulative; group ones are re-sent on the next open */
      },
    );
  }

  /** Which conversation is on screen (null: none, e.g. the list on a phone). */
  setViewing(convId) {
    this.viewing = convId;
    if (convId) {
      this.loadHistory(convId);
      const c = this.store.conversation(convId);
      if (isGroupId(convId) && (!c || !c.members)) this.loadGroup(convId);
      if (!isGroupId(convId)) this.people.want([convId]);
    }
    this.markViewingSeen();
  }

  /** A message counts as read only when its conversation is open in a visible, focused window. */
  canSee(convId) {
    return convId != null && this.viewing === convId && document.visibilityState === 'visible' && document.hasFocus();
  }

  markViewingSeen() {
    const convId = this.viewing;
    if (!this.canSee(convId)) return;
    const t = this.store.thread(convId);
    if (!t.loaded) return; // after the first page, which says which messages are unread
    const c = this.store.ensureConversation(convId);
    const unseen = t.list.filter((m) => !m.out && !m.system && m.seen === false);
    if (!unseen.length && !this.store.unread(c)) return;
    const newest = t.list.length ? t.list[t.list.length - 1].at : 0;
    const at = Math.max(newest, c.serverAt);
    this.store.markRead(convId, at);
    for (const m of unseen.slice(-MAX_DISPLAY_RECEIPTS)) this.sendReceipt('display', m, m.seq);
    this.broadcast({ type: 'read', conv: convId, at });
    this.emit('messages', convId);
    this.emit('conversations');
  }

  // -- sending -------------------------------------------------------------

  /** Queues a message to `convId` (a uid or a gid) and sends it when online. */
  send(convId, text, { ref } = {}) {
    const body = String(text);
    if (!body.trim()) return null;
    const id = newMsgId();
    const msg = { key: messageKey(this.me, id), id, from: this.me, body, at: Date.now(), out: true, status: 'sending' };
    if (ref) msg.ref = ref; // a reply
    const c = this.store.ensureConversation(convId);
    if (isGroupId(convId) && c.members) msg.unread = Math.max(0, c.members.length - 1);
    this.store.upsertMessage(convId, msg);
    this.store.addToOutbox({ ...msg, conv: convId });
    // The peer drops our typing indicator when the message lands; typing again re-announces.
    clearTimeout(this.myTyping.idleTimer);
    this.myTyping.sentAt = 0;
    this.myTyping.convId = null;
    this.emit('messages', convId);
    this.emit('conversations');
    this.transmit(convId, this.store.findMessage(convId, msg.key));
    return msg;
  }

  retry(convId, key) {
    const m = this.store.findMessage(convId, key);
    if (!m || m.status !== 'failed') return;
    m.status = 'sending';
    m.error = null;
    this.store.addToOutbox(m);
    this.emit('messages', convId);
    this.emit('conversations');
    this.transmit(convId, m);
  }

  /**
   * (Re)sends this tab's queued messages with their original MsgID (the server drops
   * duplicates). minAgeMs skips recent ones, which are probably still in flight.
   */
  flushOutbox(minAgeMs = 0) {
    if (!this.conn.online) return;
    const now = Date.now();
    for (const o of this.store.outbox()) {
      const m = this.store.findMessage(o.conv, o.key);
      if (!m || m.status !== 'sending') {
        this.store.removeFromOutbox(o.key);
        continue;
      }
      if (now - m.at >= minAgeMs) this.transmit(o.conv, m);
    }
  }

  transmit(convId, msg) {
    if (!msg || !this.conn.online || this.inflight.has(msg.key)) return;
    this.inflight.add(msg.key);
    this.conn
      .request({ EvtType: 'message', To: convId, MsgID: msg.id, Body: msg.body, ...(msg.ref ? { Ref: msg.ref } : {}) })
      .then(
        (res) => {
          if (res.ok) {
            // A receipt can overtake the ack (the peer's client answers as soon as the message
            // is published, the ack waits for the call log too): never step back below it.
            const early = this.receipts.get(msg.key);
            const status = early && STATUS_RANK[early.status] > STATUS_RANK.sent ? early.status : 'sent';
            const update = { key: msg.key, status, at: res.SentAt || msg.at, error: null };
            if (early && early.unread != null) update.unread = early.unread;
            // The server's clock orders messages across devices.
            this.store.upsertMessage(convId, update);
            this.store.removeFromOutbox(msg.key);
            // Our reply may have just made us mutual contacts: their presence is ours to see.
            if (!isGroupId(convId) && convId !== this.me && this.hasIncoming(convId)) this.people.recheckPresence([convId]);
          } else if (res.error && res.error.code === 'unauthorized') {
            this.conn.dispatchEvent(new Event('unauthorized'));
          } else if (!res.error || !RETRIABLE.has(res.error.code)) {
            this.failMessage(convId, msg.key, res.error || {});
          }
          this.emit('messages', convId);
          this.emit('conversations');
        },
        () => {
          /* timeout or offline: stays in the outbox, retried with the same MsgID */
        },
      )
      .finally(() => this.inflight.delete(msg.key));
  }

  /** Whether this tab knows a message of ours in `convId`. */
  hasOwn(convId) {
    const c = this.store.conversation(convId);
    return Boolean((c && c.last && c.last.out && !c.last.system) || this.store.thread(convId).list.some((m) => m.out && !m.system));
  }

  /** Whether this tab knows a message from the peer in `convId`. */
  hasIncoming(convId) {
    const c = this.store.conversation(convId);
    return Boolean((c && c.last && !c.last.out && !c.last.system) || this.store.thread(convId).list.some((m) => !m.out && !m.system));
  }

  failMessage(convId, key, err) {
    const m = this.store.findMessage(convId, key);
    if (m && m.status === 'sending') {
      m.status = 'failed';
      m.error = sendErrorText(convId, err, this.people);
    }
    if (err.code === 'not_found' && !isGroupId(convId)) {
      // No such account: the chat is a dead end; the list drops it once it is closed.
      const c = this.store.conversation(convId);
      if (c && !c.missing) {
        c.missing = true;
        this.emit('missing', convId);
      }
    }
    this.store.removeFromOutbox(key);
    this.emit('messages', convId);
    this.emit('conversations');
  }

  // -- groups --------------------------------------------------------------

  /** A command with an ack; resolves with the ack or throws its error. */
  async command(payload) {
    if (!this.conn.online) throw new Error('You are offline.');
    const res = await this.conn.request(payload);
    if (res.error) throw new Error(res.error.message || res.error.code);
    return res;
  }

  async createGroup(gid, uids) {
    const res = await this.command({ EvtType: 'create', To: gid, MsgID: newMsgId(), Body: JSON.stringify(uids) });
    const id = res.Group || gid;
    const c = this.store.ensureConversation(id);
    if (!c.members) c.members = [...new Set([...uids, this.me])].sort();
    if (!c.lastAt) c.lastAt = res.SentAt || Date.now();
    this.emit('conversations');
    return id;
  }

  addMembers(gid, uids) {
    return this.command({ EvtType: 'refer', To: gid, MsgID: newMsgId(), Body: JSON.stringify(uids) });
  }

  leaveGroup(gid) {
    return this.command({ EvtType: 'depart', To: gid, MsgID: newMsgId() });
  }

  // -- typing --------------------------------------------------------------

  /** Call on every edit of the composer for `convId`; `hasText` = the draft is not empty. */
  typing(convId, hasText) {
    const t = this.myTyping;
    if (t.convId && t.convId !== convId) this.stopTyping();
    clearTimeout(t.idleTimer);
    if (!hasText) {
      this.stopTyping();
      return;
    }
    t.convId = convId;
    const now = Date.now();
    if (now - t.sentAt > TYPING_SEND_EVERY_MS) {
      t.sentAt = now;
      this.sendTyping(convId, true);
    }
    t.idleTimer = setTimeout(() => this.stopTyping(), TYPING_IDLE_MS);
  }

  stopTyping() {
    const t = this.myTyping;
    clearTimeout(t.idleTimer);
    if (t.convId && t.sentAt) this.sendTyping(t.convId, false);
    t.convId = null;
    t.sentAt = 0;
  }

  sendTyping(convId, active) {
    if (convId === this.me || !this.conn.online) return;
    // With an ack, so a refusal (say, an unknown uid) does not come back as an error event.
    this.conn.request({ EvtType: 'typing', To: convId, Body: active ? '1' : '0' }).catch(() => {});
  }
}

/** What a refused message shows, in words for people rather than the server's. */
export function sendErrorText(convId, err, people) {
  switch (err.code) {
    case 'not_found':
      return isGroupId(convId) ? 'this group no longer exists' : `nobody has the user id “${convId}”`;
    case 'forbidden':
      return isGroupId(convId) ? 'you are not a member of this group' : `${people.name(convId)} does not accept your messages`;
    case 'too_large':
      return 'the message is too long';
    case 'bad_request':
      return err.message || 'the server refused it';
    default:
      return err.message || err.code || 'not sent';
  }
}

function parseList(body) {
  if (Array.isArray(body)) return body.filter((u) => typeof u === 'string');
  try {
    const v = JSON.parse(body || '[]');
    return Array.isArray(v) ? v.filter((u) => typeof u === 'string') : [];
  } catch (_) {
    return [];
  }
}
