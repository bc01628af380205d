// The chat protocol on top of a Connection and a UserStore: incoming events,
// receipts, the outbox and typing. No DOM here besides the page's focus and
// visibility (needed to decide when a message counts as read).
//
// UI events (CustomEvent):
//   'conversations'              the conversation list changed
//   'messages'   detail: convId  a conversation's messages changed
//   'typing'     detail: {convId, active}
//   'notice'     detail: {text, kind: 'error'|'info'}

import { messageKey, STATUS_RANK } from './store.js';
import { newMsgId } from './util.js';

const TYPING_SEND_EVERY_MS = 3000; // refresh "typing" at most this often
const TYPING_IDLE_MS = 4000; // no keystroke for this long → "stopped typing"
const TYPING_SHOW_MS = 6000; // a peer's indicator expires without a refresh
const OUTBOX_RETRY_MS = 5000;
/** Send errors worth retrying with the same MsgID; the rest fail the message. */
const RETRIABLE = new Set(['unavailable', 'rate_limited', 'internal']);

export class ChatClient extends EventTarget {
  constructor({ uid, store, connection }) {
    super();
    this.me = uid;
    this.store = store;
    this.conn = connection;
    this.viewing = null; // convId whose messages are on screen, or null
    this.inflight = new Set(); // message keys awaiting an ack
    this.peerTyping = new Map(); // convId → timer
    this.myTyping = { convId: null, sentAt: 0, idleTimer: null };

    this.onChat = (e) => this.handleEvent(e.detail.ev, e.detail.ack);
    this.onState = (e) => {
      if (e.detail === 'online') this.flushOutbox();
      else this.clearAllPeerTyping();
    };
    this.onAttention = () => this.markViewingSeen();
    this.onExternal = (e) => this.handleExternalChange(e.detail.name);
  }

  start() {
    this.conn.addEventListener('chat', this.onChat);
    this.conn.addEventListener('state', this.onState);
    this.store.addEventListener('external', this.onExternal);
    window.addEventListener('focus', this.onAttention);
    document.addEventListener('visibilitychange', this.onAttention);
    this.retryTimer = setInterval(() => this.flushOutbox(OUTBOX_RETRY_MS * 2), OUTBOX_RETRY_MS);
  }

  dispose() {
    this.conn.removeEventListener('chat', this.onChat);
    this.conn.removeEventListener('state', this.onState);
    this.store.removeEventListener('external', this.onExternal);
    window.removeEventListener('focus', this.onAttention);
    document.removeEventListener('visibilitychange', this.onAttention);
    clearInterval(this.retryTimer);
    clearTimeout(this.myTyping.idleTimer);
    this.clearAllPeerTyping();
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  // -- incoming --------------------------------------------------------------

  /** Handles one `chat` event; acks stored events once their effect is persisted. */
  handleEvent(ev, ack) {
    const seq = Number.isInteger(ev.Seq) ? ev.Seq : null;
    if (seq !== null && seq <= this.store.lastSeq()) {
      // Replayed (e.g. our ack did not reach the server before a reconnect): already handled.
      if (ack) ack();
      return;
    }
    try {
      switch (ev.EvtType) {
        case 'message':
          this.onMessage(ev, seq);
          break;
        case 'delivery':
        case 'display':
          this.onReceipt(ev);
          break;
        case 'typing':
          this.onTyping(ev);
          break;
        case 'error':
          this.onServerError(ev);
          break;
        default:
          // Event types this client does not know yet (e.g. group events) are skipped.
          break;
      }
      if (seq !== null) this.store.setLastSeq(seq);
    } catch (e) {
      // Not acked: the server replays it on the next connect.
      console.error('webchat: failed to handle event', ev, e);
      return;
    }
    if (ack) ack();
  }

  /** The conversation an event belongs to. 1:1 only for now: the other party. */
  conversationOf(ev) {
    return ev.From === this.me ? ev.To : ev.From;
  }

  onMessage(ev, seq) {
    const convId = this.conversationOf(ev);
    if (!convId || !ev.MsgID) return;
    const own = ev.From === this.me;
    const at = ev.SentAt || (ev.Timestamp ? ev.Timestamp * 1000 : Date.now());
    const msg = {
      key: messageKey(ev.From, ev.MsgID),
      id: ev.MsgID,
      from: ev.From,
      to: ev.To,
      body: typeof ev.Body === 'string' ? ev.Body : String(ev.Body ?? ''),
      at,
      out: own,
    };
    if (seq !== null) msg.seq = seq;
    if (own) {
      // A copy of our own message, sent from another tab or device (or a note to self).
      msg.status = ev.To === this.me ? 'read' : 'sent';
    } else {
      msg.seen = false;
    }
    const { added } = this.store.upsertMessage(convId, msg);
    if (added && !own) {
      this.clearPeerTyping(convId);
      this.sendReceipt('delivery', ev.From, ev.MsgID, seq);
    }
    this.emit('messages', convId);
    this.emit('conversations');
    if (!own) this.markViewingSeen();
  }

  onReceipt(ev) {
    const convId = ev.From; // the reader
    const target = this.store.findMessage(convId, messageKey(this.me, ev.MsgID));
    if (!target) return; // sent from a device whose history this one does not have
    const status = ev.EvtType === 'display' ? 'read' : 'delivered';
    const rank = STATUS_RANK[status];
    // Receipts are cumulative: the peer got (or read) everything we sent before it.
    const changed = this.store.updateMessages(convId, (m) => {
      if (!m.out || m.from !== this.me) return null;
      if (m.key !== target.key && m.at > target.at) return null;
      const cur = STATUS_RANK[m.status] ?? 0;
      if (cur < STATUS_RANK.sent || cur >= rank) return null;
      return { status };
    });
    if (changed) {
      this.emit('messages', convId);
      this.emit('conversations');
    }
  }

  onTyping(ev) {
    const convId = ev.From;
    if (!convId || convId === this.me) return;
    if (ev.Body === '1') {
      clearTimeout(this.peerTyping.get(convId));
      this.peerTyping.set(
        convId,
        setTimeout(() => this.clearPeerTyping(convId), TYPING_SHOW_MS),
      );
      this.emit('typing', { convId, active: true });
    } else {
      this.clearPeerTyping(convId);
    }
  }

  clearPeerTyping(convId) {
    if (!this.peerTyping.has(convId)) return;
    clearTimeout(this.peerTyping.get(convId));
    this.peerTyping.delete(convId);
    this.emit('typing', { convId, active: false });
  }

  clearAllPeerTyping() {
    for (const convId of [...this.peerTyping.keys()]) this.clearPeerTyping(convId);
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
      for (const { conv, key } of this.store.outbox()) {
        const m = this.store.findMessage(conv, key);
        if (m && m.id === ev.MsgID) this.failMessage(conv, key, err);
      }
    }
    this.emit('notice', { kind: 'error', text: err.message || 'The server refused a request.' });
  }

  /** Another tab changed the store: let the UI re-read it. */
  handleExternalChange(name) {
    if (name === 'convs' || name === '*') this.emit('conversations');
    if (name.startsWith('m.')) this.emit('messages', name.slice(2));
    else if (name === '*') this.emit('messages', this.viewing);
    // Not flushing on 'outbox': that is usually another tab queueing a send it is about to make.
  }

  // -- receipts ------------------------------------------------------------

  sendReceipt(kind, to, msgId, seq) {
    if (to === this.me) return;
    const payload = { EvtType: kind, To: to, MsgID: msgId };
    if (seq != null) payload.Seq = seq;
    this.conn.request(payload).then(
      (res) => res.error && console.warn(`webchat: ${kind} receipt refused`, res.error),
      () => {
        /* offline: the sender sees the next receipt, which is cumulative */
      },
    );
  }

  /** Which conversation is on screen (null: none, e.g. the list on a phone). */
  setViewing(convId) {
    this.viewing = convId;
    this.markViewingSeen();
  }

  /** A message counts as read only when its conversation is open in a focused, visible window. */
  canSee(convId) {
    return (
      convId != null &&
      this.viewing === convId &&
      document.visibilityState === 'visible' &&
      document.hasFocus()
    );
  }

  markViewingSeen() {
    const convId = this.viewing;
    if (!this.canSee(convId)) return;
    const unseen = this.store.messages(convId).filter((m) => !m.out && !m.seen);
    if (!unseen.length) return;
    const keys = new Set(unseen.map((m) => m.key));
    this.store.updateMessages(convId, (m) => (keys.has(m.key) ? { seen: true } : null));
    for (const m of unseen) this.sendReceipt('display', m.from, m.id, m.seq);
    this.emit('messages', convId);
    this.emit('conversations');
  }

  // -- sending -------------------------------------------------------------

  /** Queues a message to `convId` and sends it when online. */
  send(convId, text) {
    const body = String(text);
    if (!body.trim()) return null;
    const id = newMsgId();
    const msg = {
      key: messageKey(this.me, id),
      id,
      from: this.me,
      to: convId,
      body,
      at: Date.now(),
      out: true,
      status: 'sending',
    };
    this.store.upsertMessage(convId, msg);
    this.store.addToOutbox(convId, msg.key);
    // The peer drops our typing indicator when the message lands; typing again re-announces.
    clearTimeout(this.myTyping.idleTimer);
    this.myTyping.sentAt = 0;
    this.myTyping.convId = null;
    this.emit('messages', convId);
    this.emit('conversations');
    this.transmit(convId, msg);
    return msg;
  }

  retry(convId, key) {
    const m = this.store.findMessage(convId, key);
    if (!m || m.status !== 'failed') return;
    this.store.updateMessages(convId, (x) => (x.key === key ? { status: 'sending', error: null } : null));
    this.store.addToOutbox(convId, key);
    this.emit('messages', convId);
    this.emit('conversations');
    this.transmit(convId, { ...m, status: 'sending' });
  }

  /**
   * (Re)sends queued messages, with their original MsgID so the server drops duplicates.
   * minAgeMs skips recent ones, which this or another tab is probably still sending.
   */
  flushOutbox(minAgeMs = 0) {
    if (!this.conn.online) return;
    const now = Date.now();
    for (const { conv, key } of this.store.outbox()) {
      const m = this.store.findMessage(conv, key);
      if (!m || m.status !== 'sending') {
        this.store.removeFromOutbox(key);
        continue;
      }
      if (now - m.at >= minAgeMs) this.transmit(conv, m);
    }
  }

  transmit(convId, msg) {
    if (!this.conn.online || this.inflight.has(msg.key)) return;
    this.inflight.add(msg.key);
    this.conn
      .request({ EvtType: 'message', To: msg.to, MsgID: msg.id, Body: msg.body })
      .then(
        (res) => {
          if (res.ok) {
            const current = this.store.findMessage(convId, msg.key);
            if (current) {
              // The server's clock orders messages across devices.
              this.store.upsertMessage(convId, { ...current, status: 'sent', at: res.SentAt || current.at, error: null });
            }
            this.store.removeFromOutbox(msg.key);
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

  failMessage(convId, key, err) {
    this.store.updateMessages(convId, (m) =>
      m.key === key && m.status === 'sending'
        ? { status: 'failed', error: err.message || err.code || 'not sent' }
        : null,
    );
    this.store.removeFromOutbox(key);
    this.emit('messages', convId);
    this.emit('conversations');
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
