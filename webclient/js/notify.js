// Desktop notifications for messages that arrive while the tab is hidden, after the user
// turned them on (the bell in the sidebar asks the browser's permission). The choice is kept
// per user in localStorage (`webchat.v1.u.<uid>.notify`); the browser's permission is the
// other half: revoked there, nothing is shown.

const SUPPORTED = typeof window.Notification === 'function';

export class Notifier {
  constructor(uid) {
    this.key = `webchat.v1.u.${uid}.notify`;
    this.shown = new Map(); // convId → Notification, one per conversation
  }

  get supported() {
    return SUPPORTED;
  }

  /** On: asked for and allowed by the browser. */
  get enabled() {
    if (!SUPPORTED || Notification.permission !== 'granted') return false;
    try {
      return localStorage.getItem(this.key) === '1';
    } catch (_) {
      return false;
    }
  }

  /** Turns them on (asking the browser) or off; resolves with the new state. */
  async toggle() {
    if (!SUPPORTED) return false;
    const on = !this.enabled;
    if (on && Notification.permission !== 'granted') {
      const answer = await Notification.requestPermission();
      if (answer !== 'granted') return false;
    }
    try {
      if (on) localStorage.setItem(this.key, '1');
      else localStorage.removeItem(this.key);
    } catch (_) {
      /* storage unavailable: on for this page only */
    }
    return this.enabled;
  }

  /** Shows `title`/`body` for `convId` when turned on and the tab is hidden. */
  show(convId, title, body, onClick) {
    if (!this.enabled || document.visibilityState !== 'hidden') return;
    try {
      const n = new Notification(title, { body: body.length > 140 ? `${body.slice(0, 140)}…` : body, tag: convId, icon: 'icon.svg' });
      n.onclick = () => {
        window.focus();
        onClick();
        n.close();
      };
      this.shown.set(convId, n);
    } catch (e) {
      console.warn('webchat: notification not shown', e);
    }
  }

  /** Drops what is shown for `convId` (it was read). */
  clear(convId) {
    const n = this.shown.get(convId);
    if (n) n.close();
    this.shown.delete(convId);
  }
}
