// Small pure helpers: ids, uid rules, time formatting, avatars.

/** The server's uid rule: 1–64 of [A-Za-z0-9_.@+-], not starting with "group_". */
const UID_RE = /^[A-Za-z0-9_.@+-]{1,64}$/;

/** Returns an error text for a bad uid, or null when it is valid. */
export function uidProblem(uid) {
  if (!uid) return 'Enter a user id.';
  if (uid.length > 64) return 'A user id has at most 64 characters.';
  if (!UID_RE.test(uid)) return 'A user id may only contain letters, digits and _ . @ + -';
  if (uid.startsWith('group_')) return 'A user id must not start with "group_".';
  return null;
}

/**
 * A fresh message id (the send's idempotency key, ≤ 64 chars). Uses
 * crypto.getRandomValues, which unlike crypto.randomUUID also exists on
 * plain-HTTP origins.
 */
export function newMsgId() {
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  let hex = '';
  for (const b of bytes) hex += b.toString(16).padStart(2, '0');
  return `${Date.now().toString(36)}-${hex}`;
}

const pad = (n) => String(n).padStart(2, '0');

function sameDay(a, b) {
  return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();
}

/** "14:05" */
export function clockTime(ms) {
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** For the conversation list: time today, "Yesterday", weekday this week, else a date. */
export function listTime(ms, now = Date.now()) {
  if (!ms) return '';
  const d = new Date(ms);
  const today = new Date(now);
  if (sameDay(d, today)) return clockTime(ms);
  const yesterday = new Date(now);
  yesterday.setDate(today.getDate() - 1);
  if (sameDay(d, yesterday)) return 'Yesterday';
  if (now - ms < 6 * 24 * 3600 * 1000) return d.toLocaleDateString(undefined, { weekday: 'short' });
  return d.toLocaleDateString(undefined, { day: 'numeric', month: 'short', year: d.getFullYear() === today.getFullYear() ? undefined : 'numeric' });
}

/** Day separator label inside a conversation. */
export function dayLabel(ms, now = Date.now()) {
  const d = new Date(ms);
  const today = new Date(now);
  if (sameDay(d, today)) return 'Today';
  const yesterday = new Date(now);
  yesterday.setDate(today.getDate() - 1);
  if (sameDay(d, yesterday)) return 'Yesterday';
  return d.toLocaleDateString(undefined, { weekday: 'long', day: 'numeric', month: 'long', year: d.getFullYear() === today.getFullYear() ? undefined : 'numeric' });
}

export function dayKey(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}-${d.getMonth() + 1}-${d.getDate()}`;
}

/** Initials for an avatar: "alice" → "A", "bob.smith" → "BS". */
export function initials(name) {
  const parts = String(name || '?').split(/[\s._@+-]+/).filter(Boolean);
  const first = parts[0] ? [...parts[0]][0] : '?';
  const second = parts[1] ? [...parts[1]][0] : '';
  return (first + second).toUpperCase();
}

/** A stable hue per uid, for avatar colours. */
export function hueOf(text) {
  let h = 0;
  for (const ch of String(text)) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  return h % 360;
}

/** Byte length of text as UTF-8 (the server limits Body in bytes). */
export function utf8Length(text) {
  return new TextEncoder().encode(text).length;
}

/** A full date and time for hover titles: "Monday, 7 December 2026 at 14:05". */
export function fullTime(ms) {
  if (!ms) return '';
  return new Date(ms).toLocaleString(undefined, { dateStyle: 'full', timeStyle: 'short' });
}

/** "last seen today at 14:05", "last seen yesterday at …", "last seen 3 Dec at …"; '' when unknown. */
export function lastSeenText(ms, now = Date.now()) {
  if (!ms) return '';
  const d = new Date(ms);
  const today = new Date(now);
  const yesterday = new Date(now);
  yesterday.setDate(today.getDate() - 1);
  let day;
  if (sameDay(d, today)) day = 'today';
  else if (sameDay(d, yesterday)) day = 'yesterday';
  else day = d.toLocaleDateString(undefined, { day: 'numeric', month: 'short', year: d.getFullYear() === today.getFullYear() ? undefined : 'numeric' });
  return `last seen ${day} at ${clockTime(ms)}`;
}
