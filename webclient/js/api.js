// REST client for /api/v1. Every failure is thrown as an ApiError carrying the
// HTTP status and the server's {"error":{"code","message"}} when there is one.

const BASE = 'api/v1';

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status; // 0 = the server could not be reached
    this.code = code;
  }
}

async function call(method, path, { body, token } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  let res;
  try {
    res = await fetch(`${BASE}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch (e) {
    throw new ApiError(0, 'network', "Can't reach the server. Check your connection.");
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
