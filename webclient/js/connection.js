// The socket.io connection: authenticates with the session token, reconnects
// on its own and reports its state.
//
// Events (CustomEvent):
//   'state'        detail: 'connecting' | 'online' | 'offline'
//   'chat'         detail: { ev, ack, failed } — ack is a function for stored events (call
//                  it once the event is handled), undefined for live-only ones; failed (if
//                  set) is called instead when handling it threw
//   'unauthorized' the server refused the token (expired or revoked)
//
// Acks are cumulative (contract §15): the client connects with `acks: "cumulative"`, and
// instead of one socket.io ack per stored event it emits `ack {Seq}` for the highest Seq it
// has handled, after every ACK_EVERY events or ACK_DELAY_MS after the first unacked one, and
// when the page is hidden. An event whose handling failed is not acked (nor anything after
// it on this connection): the server replays it on the next connect; if it fails again
// there, it is given up on rather than holding back every later ack.

/* global io */

const REQUEST_TIMEOUT_MS = 15000;
/** Stored events handled before an `ack` is sent at once. */
const ACK_EVERY = 100;
/** Longest wait before an `ack` for what was handled (the contract's bound is 1 s). */
const ACK_DELAY_MS = 250;

export class Connection extends EventTarget {
  /** @param {() => string} getToken */
  constructor(getToken) {
    super();
    this.getToken = getToken;
    this.socket = null;
    this.state = 'connecting';
    this.kickTimer = null;
    this.onBrowserOnline = () => {
      if (this.socket && !this.socket.connected) this.socket.connect();
    };
    this.onBrowserOffline = () => this.setState('offline');
    this.resetAcks();
    /** Failures per Seq, across reconnects of this page (see `failed`). */
    this.failures = new Map();
    // A tab going to the background may be frozen: confirm what it has seen first.
    this.onHidden = () => {
      if (document.visibilityState === 'hidden') this.flushAck();
    };
  }

  /** Forgets the ack state: a new connection starts over (unacked events are replayed). */
  resetAcks() {
    clearTimeout(this.ackTimer);
    this.ackTimer = null;
    this.handledSeq = 0; // highest Seq handled on this connection
    this.ackedSeq = 0; // highest Seq sent in an `ack`
    this.unacked = 0; // handled since the last `ack`
    this.ackBlocked = false; // an event failed: ack nothing more on this connection
  }

  /** A stored event with `seq` was handled (in Seq order, as the server sends them). */
  handled(seq) {
    if (this.ackBlocked || seq <= this.handledSeq) return;
    this.handledSeq = seq;
    this.unacked += 1;
    if (this.unacked >= ACK_EVERY) this.flushAck();
    else if (!this.ackTimer) this.ackTimer = setTimeout(() => this.flushAck(), ACK_DELAY_MS);
  }

  /**
   * The handling of stored event `seq` failed: it must be replayed, so no later ack may
   * cover it; what was handled before it is acked now. An event that fails again after a
   * replay is given up on (logged) and counted as handled: one unrenderable event must not
   * hold back every later ack, which would let the inbox grow and replay ever more.
   */
  failed(seq) {
    const failures = (this.failures.get(seq) || 0) + 1;
    this.failures.set(seq, failures);
    if (failures >= 2) {
      console.error(`webchat: giving up on event Seq ${seq} after ${failures} failures`);
      this.handled(seq);
      return;
    }
    this.flushAck();
    this.ackBlocked = true;
    clearTimeout(this.ackTimer);
    this.ackTimer = null;
  }

  /** Sends `ack` for everything handled so far, if anything is new. */
  flushAck() {
    clearTimeout(this.ackTimer);
    this.ackTimer = null;
    if (this.ackBlocked || this.handledSeq <= this.ackedSeq) return;
    if (!this.socket || !this.socket.connected) return;
    this.socket.emit('ack', { Seq: this.handledSeq });
    this.ackedSeq = this.handledSeq;
    this.unacked = 0;
  }

  get online() {
    return Boolean(this.socket && this.socket.connected);
  }

  start() {
    if (this.socket) return;
    if (typeof io !== 'function') throw new Error('socket.io client missing (vendor/socket.io.min.js)');
    const socket = io({
      path: '/socket.io/',
      // A function, so every reconnect sends the current token.
      auth: (cb) => cb({ token: this.getToken(), acks: 'cumulative' }),
      reconnectionDelay: 500,
      reconnectionDelayMax: 8000,
      timeout: 10000,
    });
    this.socket = socket;
    this.setState('connecting');

    socket.on('connect', () => {
      this.resetAcks();
      this.setState('online');
    });
    socket.on('disconnect', (reason) => {
      // What was handled but not acked is replayed on the next connect (deduped by Seq).
      this.resetAcks();
      if (reason === 'io client disconnect') return this.setState('offline');
      if (socket.active) return this.setState('connecting');
      // The server closed the socket (e.g. slow consumer): socket.io won't retry by itself.
      this.setState('offline');
      clearTimeout(this.kickTimer);
      this.kickTimer = setTimeout(() => socket.connect(), 1000 + Math.random() * 2000);
    });
    socket.on('connect_error', (err) => {
      if (!socket.active && err && err.message === 'unauthorized') {
        this.dispatchEvent(new Event('unauthorized'));
        return;
      }
      this.setState(navigator.onLine === false ? 'offline' : 'connecting');
      if (!socket.active) {
        clearTimeout(this.kickTimer);
        this.kickTimer = setTimeout(() => socket.connect(), 3000);
      }
    });
    socket.io.on('reconnect_attempt', () => this.setState('connecting'));
    socket.io.on('reconnect_error', () => this.setState('offline'));
    socket.on('chat', (raw, ack) => {
      let ev = raw;
      if (typeof raw === 'string') {
        try {
          ev = JSON.parse(raw);
        } catch (_) {
          ev = null;
        }
      }
      const seq = ev && typeof ev === 'object' && Number.isInteger(ev.Seq) ? ev.Seq : null;
      if (!ev || typeof ev !== 'object') {
        // Unreadable: nothing to handle, and replaying it would not help.
        if (typeof ack === 'function') ack();
        return;
      }
      // A server that still asks for per-event acks gets them; otherwise stored events (those
      // with a Seq) count towards the next cumulative `ack`.
      let done;
      if (typeof ack === 'function') done = ack;
      else if (seq !== null) done = () => this.handled(seq);
      const failed = seq !== null && typeof ack !== 'function' ? () => this.failed(seq) : undefined;
      this.dispatchEvent(new CustomEvent('chat', { detail: { ev, ack: done, failed } }));
    });
    window.addEventListener('online', this.onBrowserOnline);
    window.addEventListener('offline', this.onBrowserOffline);
    document.addEventListener('visibilitychange', this.onHidden);
  }

  stop() {
    clearTimeout(this.kickTimer);
    window.removeEventListener('online', this.onBrowserOnline);
    window.removeEventListener('offline', this.onBrowserOffline);
    document.removeEventListener('visibilitychange', this.onHidden);
    this.flushAck();
    this.resetAcks();
    if (this.socket) {
      this.socket.removeAllListeners();
      this.socket.io.removeAllListeners();
      this.socket.disconnect();
      this.socket = null;
    }
    this.setState('offline');
  }

  setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: state }));
  }

  /**
   * Emits a `chat` command and resolves with the server's ack
   * ({ok:true,…} or {error:{code,message}}). Rejects when offline or on timeout,
   * without queueing: callers keep their own outbox and retry with the same MsgID.
   */
  request(payload, timeoutMs = REQUEST_TIMEOUT_MS) {
    return new Promise((resolve, reject) => {
      if (!this.online) {
        reject(new Error('offline'));
        return;
      }
      this.socket.timeout(timeoutMs).emit('chat', payload, (err, res) => {
        if (err) reject(err);
        else resolve(res || {});
      });
    });
  }
}
