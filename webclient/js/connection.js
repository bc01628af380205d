// The socket.io connection: authenticates with the session token, reconnects
// on its own and reports its state.
//
// Events (CustomEvent):
//   'state'        detail: 'connecting' | 'online' | 'offline'
//   'chat'         detail: { ev, ack }  — ack is a function for stored events (call it
//                  once the event is handled), undefined for live-only ones
//   'unauthorized' the server refused the token (expired or revoked)

/* global io */

const REQUEST_TIMEOUT_MS = 15000;

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
      auth: (cb) => cb({ token: this.getToken() }),
      reconnectionDelay: 500,
      reconnectionDelayMax: 8000,
      timeout: 10000,
    });
    this.socket = socket;
    this.setState('connecting');

    socket.on('connect', () => this.setState('online'));
    socket.on('disconnect', (reason) => {
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
      if (!ev || typeof ev !== 'object') {
        if (typeof ack === 'function') ack();
        return;
      }
      this.dispatchEvent(new CustomEvent('chat', { detail: { ev, ack: typeof ack === 'function' ? ack : undefined } }));
    });
    window.addEventListener('online', this.onBrowserOnline);
    window.addEventListener('offline', this.onBrowserOffline);
  }

  stop() {
    clearTimeout(this.kickTimer);
    window.removeEventListener('online', this.onBrowserOnline);
    window.removeEventListener('offline', this.onBrowserOffline);
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
