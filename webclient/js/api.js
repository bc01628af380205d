// REST client for /api/v1. Every failure is thrown as an ApiError carrying the
// HTTP status and the server's {"error":{"code","message"}} when there is one.

import config from '../config.js';

const BASE = 'api/v1';
const PROFILE_TIMEOUT_MS = 4000;

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status; // 0 = the server could not be reached
    this.code = code;
  }
}

async function call(method, path, { body, token, base = BASE, timeoutMs } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  let res;
  const abort = timeoutMs ? new AbortController() : null;
  const timer = abort ? setTimeout(() => abort.abort(), timeoutMs) : null;
  try {
    res = await fetch(`${base}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      signal: abort ? abort.signal : undefined,
    });
  } catch (e) {
    throw new ApiError(0, 'network', "Can't reach the server. Check your connection.");
  } finally {
    clearTimeout(timer);
  }
  if (res.status === 204) return null;
  let data = null;
  try {
    data = await res.json();
  } catch (_) {
    /* not JSON */
  }
  if (!res.ok) {
    const err = data && data.error;
    throw new ApiError(res.status, err?.code || `http_${res.status}`, err?.message || `Request failed (${res.status})`);
  }
  return data;
}

/** → {uid, token, expiresAt} */
export function signup(uid, password, name) {
  return call('POST', '/signup', { body: { uid, password, name } });
}

/** → {uid, token, expiresAt} */
export function login(uid, password) {
  return call('POST', '/login', { body: { uid, password } });
}

export function logout(token) {
  return call('POST', '/logout', { token });
}

const q = (params) => {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v != null && v !== '') u.set(k, String(v));
  const s = u.toString();
  return s ? `?${s}` : '';
};

/** → {items: [{id, kind, last, unread, updatedAt}], next} (newest first) */
export function conversations(token, cursor) {
  return call('GET', `/conversations${q({ cursor, limit: 200 })}`, { token });
}

/** One page of a conversation's history, newest first → {items: [LoggedEvent], next}. */
export function messages(token, convId, { cursor, limit = 50 } = {}) {
  return call('GET', `/conversations/${encodeURIComponent(convId)}/messages${q({ cursor, limit })}`, { token });
}

/** → {items: [{MsgID, Body, SentAt}], next}: the earlier texts of an edited message. */
export function versions(token, convId, msgId) {
  return call('GET', `/conversations/${encodeURIComponent(convId)}/messages/${encodeURIComponent(msgId)}/versions${q({ limit: 200 })}`, { token });
}

/** → {gid, members} */
export function group(token, gid) {
  return call('GET', `/groups/${encodeURIComponent(gid)}`, { token });
}

/** The users you block → {items: [uid], next: null}. */
export function blocks(token) {
  return call('GET', '/blocks', { token });
}

/** Blocks (`on`) or unblocks `uid`. */
export function setBlocked(token, uid, on) {
  return call(on ? 'PUT' : 'DELETE', `/blocks/${encodeURIComponent(uid)}`, { token });
}

/** The address book → {items: [{uid, name}], next} */
export function users(token, prefix, cursor, limit = 50) {
  return call('GET', `/users${q({ prefix, cursor, limit })}`, { token });
}

/** Whether `uid` has an account: the address book lists it (the prefix is the uid itself). */
export async function userExists(token, uid) {
  const res = await users(token, uid, null, 5);
  return (res.items || []).some((u) => u.uid === uid);
}

// -- the profile service (another origin, see config.js) ------------------------

export const PROFILE_BASE = `${String(config.profileUrl ?? '').replace(/\/+$/, '')}/api/v1`;

/** → [{uid, name, status, avatarUrl, updatedAt}] (unknown ids absent; ≤ 100 ids) */
export async function profiles(ids) {
  const res = await call('GET', `/profiles${q({ ids: ids.join(',') })}`, { base: PROFILE_BASE, timeoutMs: PROFILE_TIMEOUT_MS });
  return (res && res.items) || [];
}

/** Replaces the own profile → the stored profile. */
export function putProfile(token, uid, { name, status, avatarUrl }) {
  return call('PUT', `/profiles/${encodeURIComponent(uid)}`, {
    base: PROFILE_BASE,
    token,
    body: { name, status, avatarUrl },
    timeoutMs: PROFILE_TIMEOUT_MS,
  });
}

/**
 * Tells the chat server that the own profile was saved, so it shares it with one's contacts
 * (needed where the profile service publishes no updates itself: one node without Redis).
 */
export function profileChanged(token) {
  return call('POST', '/me/profile-changed', { token });
}

/** → {items:[{uid, online}]}: which of `ids` (one's contacts) are online now. */
export function presence(token, ids) {
  return call('GET', `/presence?ids=${ids.map(encodeURIComponent).join(',')}`, { token });
}

/** → {publicKey}: the server's VAPID key (§13). */
export function vapidKey() {
  return call('GET', '/push/vapid');
}

/** Gives the server this browser's `PushSubscription.toJSON()`. */
export function pushSubscribe(token, subscription) {
  return call('POST', '/push/subscriptions', { token, body: subscription });
}

export function pushUnsubscribe(token, endpoint) {
  return call('DELETE', '/push/subscriptions', { token, body: { endpoint } });
}
