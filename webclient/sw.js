// The service worker: shows Web Push notifications (contract §13) while no tab of webchat is
// open, and opens the conversation when one is clicked. The server sends
// {"type":"message.offline","fromName","preview","conversation"}, encrypted for this
// browser; the browser decrypts it before `push` fires.

/** The page URL that opens `conversation` (a uid or gid) under the worker's scope. */
function conversationUrl(scope, conversation) {
  const url = new URL('./', scope);
  if (conversation) url.hash = `#/c/${encodeURIComponent(conversation)}`;
  return url.href;
}

/** The notification a push payload becomes: [title, options]. */
function notificationFor(data) {
  const conversation = typeof data?.conversation === 'string' ? data.conversation : '';
  const title = typeof data?.fromName === 'string' && data.fromName ? data.fromName : 'New message';
  return [
    title,
    {
      body: typeof data?.preview === 'string' ? data.preview : '',
      // One notification per conversation, the newest.
      tag: conversation || 'webchat',
      renotify: true,
      icon: 'icon.svg',
      data: { conversation },
    },
  ];
}

/** Focuses an open tab and tells it to open the conversation, or opens a new tab. */
async function openConversation(clients, scope, conversation) {
  const url = conversationUrl(scope, conversation);
  const open = await clients.matchAll({ type: 'window', includeUncontrolled: true });
  for (const client of open) {
    if (new URL(client.url).origin !== new URL(scope).origin) continue;
    client.postMessage({ type: 'open-conversation', conversation });
    if ('focus' in client) return client.focus();
    return client;
  }
  return clients.openWindow(url);
}

// A classic worker (module service workers are not in every browser): no imports, no
// exports. Tests run this file in a sandbox with their own `self` and `clients`.
if (typeof self !== 'undefined' && typeof self.addEventListener === 'function') {
  self.addEventListener('install', () => self.skipWaiting());
  self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));
  self.addEventListener('push', (event) => {
    let data = {};
    try {
      data = event.data ? event.data.json() : {};
    } catch (_) {
      /* not JSON: a generic notification */
    }
    const [title, options] = notificationFor(data);
    event.waitUntil(self.registration.showNotification(title, options));
  });
  self.addEventListener('notificationclick', (event) => {
    event.notification.close();
    const conversation = event.notification.data?.conversation || '';
    event.waitUntil(openConversation(self.clients, self.registration.scope, conversation));
  });
}
