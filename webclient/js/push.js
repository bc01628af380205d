// Web Push (contract §13): with notifications turned on (the bell: the moment the user asks
// for them, never on load), this browser subscribes with the server's VAPID key and the
// server pushes `message.offline` notices while no tab is open; `sw.js` shows them and opens
// the conversation on click. Turning notifications off, or logging out, unsubscribes, so
// the next user of this browser gets none of them.

import * as api from './api.js';

const SUPPORTED =
  typeof navigator !== 'undefined' && 'serviceWorker' in navigator && typeof window.PushManager === 'function';

/** base64url → Uint8Array (`applicationServerKey`). */
function decodeKey(text) {
  const b64 = text.replace(/-/g, '+').replace(/_/g, '/');
  const raw = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

export class PushSubscriber {
  constructor(getToken, onOpen) {
    this.getToken = getToken;
    this.onOpen = onOpen;
    this.onMessage = (e) => {
      if (e.data?.type === 'open-conversation' && typeof e.data.conversation === 'string') this.onOpen(e.data.conversation);
    };
  }

  get supported() {
    return SUPPORTED;
  }

  /** Listens for the worker's "open this conversation" (a clicked notification). */
  start() {
    if (SUPPORTED) navigator.serviceWorker.addEventListener('message', this.onMessage);
  }

  stop() {
    if (SUPPORTED) navigator.serviceWorker.removeEventListener('message', this.onMessage);
  }

  /** Registers the worker, subscribes, and gives the server the subscription. */
  async enable() {
    if (!SUPPORTED || Notification.permission !== 'granted') return false;
    const registration = await navigator.serviceWorker.register('sw.js');
    await navigator.serviceWorker.ready;
    let subscription = await registration.pushManager.getSubscription();
    if (!subscription) {
      const { publicKey } = await api.vapidKey();
      subscription = await registration.pushManager.subscribe({
        userVisibleOnly: true,
        applicationServerKey: decodeKey(publicKey),
      });
    }
    await api.pushSubscribe(this.getToken(), subscription.toJSON());
    return true;
  }

  /** Unsubscribes this browser and tells the server. */
  async disable(token = this.getToken()) {
    if (!SUPPORTED) return;
    const registration = await navigator.serviceWorker.getRegistration();
    const subscription = registration && (await registration.pushManager.getSubscription());
    if (!subscription) return;
    try {
      await api.pushUnsubscribe(token, subscription.endpoint);
    } catch (e) {
      console.warn('webchat: push subscription not removed on the server', e.message);
    }
    await subscription.unsubscribe();
  }
}
