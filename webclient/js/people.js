// Who people are: profiles from the profile service (name, status line, avatar URL),
// updated live by `profile` events, and presence (online/offline) from `presence` events.
//
// When the profile service cannot be reached, names fall back to the ones given at
// sign-up (GET /api/v1/users on the chat server), and the service is tried again later.
//
// Events (CustomEvent): 'change' detail: uid[] whose name/status/avatar/presence changed.

import * as api from './api.js';
import { isGroupId } from './store.js';

const RETRY_DOWN_MS = 30000;
const BATCH = 100;
const RECHECK_MS = 2000;

export class People extends EventTarget {
  constructor(getToken) {
    super();
    this.getToken = getToken;
    this.profiles = new Map(); // uid → {uid, name, status, avatarUrl, updatedAt}
    this.fallback = new Map(); // uid → sign-up name
    this.presence = new Map(); // uid → 'online' | 'offline'
    this.seenAt = new Map(); // uid → when last seen (ms), from an "offline" presence event
    this.rechecked = new Map(); // uid → when its presence was last asked for again (ms)
    this.asked = new Set();
    this.pending = new Set();
    this.downUntil = 0;
    this.timer = null;
    this.retry = new Set(); // uids to ask the profile service for once it may be back
    this.retryTimer = null;
  }

  dispose() {
    clearTimeout(this.timer);
    clearTimeout(this.retryTimer);
  }

  changed(uids) {
    if (uids.length) this.dispatchEvent(new CustomEvent('change', { detail: uids }));
  }

  /** A display name: the profile's, else the sign-up name, else the uid. */
  name(uid) {
    if (isGroupId(uid)) return groupTitle(uid);
    const p = this.profiles.get(uid);
    if (p && p.name) return p.name;
    return this.fallback.get(uid) || uid;
  }

  status(uid) {
    const p = this.profiles.get(uid);
    return (p && p.status) || '';
  }

  avatarUrl(uid) {
    const p = this.profiles.get(uid);
    return (p && p.avatarUrl) || '';
  }

  profile(uid) {
    return this.profiles.get(uid) || null;
  }

  online(uid) {
    return this.presence.get(uid) || null;
  }

  /** When `uid` was last seen (ms), when an "offline" event said so; else 0. */
  lastSeen(uid) {
    return this.seenAt.get(uid) || 0;
  }

  /** A `presence` event: `timestamp` (unix seconds) is when the change happened. */
  setPresence(uid, state, timestamp) {
    if (state !== 'online' && state !== 'offline') return;
    if (state === 'offline' && Number.isFinite(timestamp) && timestamp > 0) this.seenAt.set(uid, timestamp * 1000);
    if (this.presence.get(uid) === state) return;
    this.presence.set(uid, state);
    this.changed([uid]);
  }

  /**
   * Forgets everyone's presence (while disconnected nothing says who is online: a stale
   * green dot would be a lie); `refreshPresence` asks again once connected.
   */
  clearPresence() {
    const uids = [...this.presence.keys()];
    this.presence.clear();
    this.changed(uids);
  }

  /** Asks for the presence of everyone this page shows (after a reconnect). */
  refreshPresence() {
    const uids = [...this.asked].filter((u) => !isGroupId(u));
    for (let i = 0; i < uids.length; i += BATCH) this.fetchPresence(uids.slice(i, i + BATCH));
  }

  /**
   * Asks again for the presence of `uids` not known yet: a conversation just became mutual
   * (the first reply), or a group was shared, from which on the server shares it. At most
   * once per RECHECK_MS per user (a chatty peer costs few requests), in batches.
   */
  recheckPresence(uids) {
    const now = Date.now();
    const due = [...new Set(uids)].filter((u) => u && !isGroupId(u) && !this.presence.has(u) && now - (this.rechecked.get(u) || 0) >= RECHECK_MS);
    for (const u of due) this.rechecked.set(u, now);
    for (let i = 0; i < due.length; i += BATCH) this.fetchPresence(due.slice(i, i + BATCH));
  }

  /** A profile from an event or our own update: kept unless an older one. */
  apply(p) {
    if (!p || typeof p.uid !== 'string') return false;
    const cur = this.profiles.get(p.uid);
    if (cur && (cur.updatedAt || 0) > (p.updatedAt || 0)) return false;
    this.profiles.set(p.uid, {
      uid: p.uid,
      name: typeof p.name === 'string' ? p.name : '',
      status: typeof p.status === 'string' ? p.status : '',
      avatarUrl: typeof p.avatarUrl === 'string' ? p.avatarUrl : '',
      updatedAt: p.updatedAt || 0,
    });
    this.asked.add(p.uid);
    this.changed([p.uid]);
    return true;
  }

  /** Makes sure the profiles of `uids` are (being) fetched. Coalesced into batches. */
  want(uids, { fresh = false } = {}) {
    for (const uid of uids) {
      if (!uid || isGroupId(uid)) continue;
      if (fresh || !this.asked.has(uid)) this.pending.add(uid);
    }
    if (this.pending.size && !this.timer) this.timer = setTimeout(() => this.fetchPending(), 0);
  }

  /**
   * Presence of `uids` now (the server answers for contacts only); live `presence` events
   * that arrived meanwhile win over this snapshot.
   */
  async fetchPresence(uids) {
    try {
      const res = await api.presence(this.getToken(), uids);
      const got = [];
      for (const { uid, online } of res.items || []) {
        if (this.presence.has(uid)) continue;
        this.presence.set(uid, online ? 'online' : 'offline');
        got.push(uid);
      }
      this.changed(got);
    } catch (_) {
      /* dots appear with the next presence events */
    }
  }

  async fetchPending() {
    this.timer = null;
    const ids = [...this.pending];
    this.pending.clear();
    for (const id of ids) this.asked.add(id);
    for (let i = 0; i < ids.length; i += BATCH) {
      const chunk = ids.slice(i, i + BATCH);
      this.fetchPresence(chunk);
      if (Date.now() >= this.downUntil) {
        try {
          const items = await api.profiles(chunk);
          const got = [];
          for (const p of items) {
            const cur = this.profiles.get(p.uid);
            if (!cur || (cur.updatedAt || 0) <= (p.updatedAt || 0)) {
              this.profiles.set(p.uid, p);
              got.push(p.uid);
            }
          }
          this.changed(got);
          const missing = chunk.filter((u) => !this.profiles.has(u));
          if (missing.length) await this.fetchFallback(missing);
          continue;
        } catch (e) {
          console.warn('webchat: profile service unreachable, using sign-up names', e.message);
          this.downUntil = Date.now() + RETRY_DOWN_MS;
        }
      }
      // Not asked (or no answer): ask again once it may be back. This covers the uids first
      // seen while it was down too, which would otherwise keep their sign-up name for good.
      this.retryWhenUp(chunk);
      await this.fetchFallback(chunk);
    }
  }

  retryWhenUp(uids) {
    for (const uid of uids) this.retry.add(uid);
    if (this.retryTimer) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      const ids = [...this.retry].filter((u) => !this.profiles.has(u));
      this.retry.clear();
      this.want(ids, { fresh: true });
    }, Math.max(0, this.downUntil - Date.now()));
  }

  /** Sign-up names from the chat server's address book. */
  async fetchFallback(uids) {
    const token = this.getToken();
    const got = [];
    await Promise.all(
      uids.filter((u) => !this.fallback.has(u)).map(async (uid) => {
        try {
          const res = await api.users(token, uid, null, 5);
          const hit = (res.items || []).find((x) => x.uid === uid);
          if (hit && hit.name) {
            this.fallback.set(uid, hit.name);
            got.push(uid);
          }
        } catch (_) {
          /* the uid stands in */
        }
      }),
    );
    this.changed(got);
  }
}

/**
 * A group's title from its gid. Groups have no name on the server; the web client makes
 * gids `group_<name>.<random>` when a name is given (spaces as '-').
 */
export function groupTitle(gid) {
  const rest = gid.slice('group_'.length);
  const dot = rest.lastIndexOf('.');
  const name = dot > 0 ? rest.slice(0, dot) : '';
  return name ? name.replace(/-/g, ' ') : `Group ${rest.slice(0, 6)}`;
}

/** A gid for a new group named `name` (may be empty). */
export function newGroupId(name) {
  const slug = String(name || '')
    .normalize('NFKD')
    .replace(/[^A-Za-z0-9_@+]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 48);
  const bytes = new Uint8Array(5);
  crypto.getRandomValues(bytes);
  const rand = [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
  return slug ? `group_${slug}.${rand}` : `group_${rand}`;
}
