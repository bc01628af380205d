// The logged-in session, kept in localStorage so it survives reloads and is
// shared by the tabs of one browser.

const KEY = 'webchat.v1.session';

/** → {uid, token, expiresAt (unix s), name} or null when absent, unreadable or expired. */
export function loadSession() {
  let s;
  try {
    s = JSON.parse(localStorage.getItem(KEY) || 'null');
  } catch (_) {
    return null;
  }
  if (!s || typeof s.uid !== 'string' || typeof s.token !== 'string') return null;
  if (isExpired(s)) return null;
  return s;
}

export function isExpired(s, now = Date.now()) {
  return typeof s.expiresAt === 'number' && s.expiresAt > 0 && s.expiresAt * 1000 <= now;
}

export function saveSession({ uid, token, expiresAt }, name = '') {
  const s = { uid, token, expiresAt, name };
  localStorage.setItem(KEY, JSON.stringify(s));
  return s;
}

export function clearSession() {
  localStorage.removeItem(KEY);
}

/** Calls fn(sessionOrNull) when another tab logs in or out. */
export function onSessionChange(fn) {
  const listener = (e) => {
    if (e.key === KEY || e.key === null) fn(loadSession());
  };
  window.addEventListener('storage', listener);
  return () => window.removeEventListener('storage', listener);
}
