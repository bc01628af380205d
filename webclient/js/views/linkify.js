// Message text with its web addresses as links. Only http: and https: addresses become links
// (never javascript:, data: or anything else), they open in a new tab without giving it
// `window.opener` or a referrer, and everything is built as text and elements: no HTML is
// parsed.

import { h } from '../dom.js';

const URL_RE = /\bhttps?:\/\/[^\s<>"']+/gi;
/** Punctuation that ends a sentence rather than the address. */
const TRAILING = /[.,;:!?)\]}'"»”’]+$/;

/** The nodes showing `text`: text nodes, and <a> for each http(s) address in it. */
export function linkify(text) {
  const s = String(text ?? '');
  const out = [];
  let last = 0;
  for (const m of s.matchAll(URL_RE)) {
    let raw = m[0];
    const trail = TRAILING.exec(raw);
    // Keep a closing bracket that belongs to the address, as in …/Foo_(bar).
    if (trail && !(trail[0].startsWith(')') && raw.includes('('))) raw = raw.slice(0, -trail[0].length);
    const href = safeHref(raw);
    if (!href) continue;
    if (m.index > last) out.push(document.createTextNode(s.slice(last, m.index)));
    out.push(h('a', { text: raw, attrs: { href, target: '_blank', rel: 'noopener noreferrer nofollow' } }));
    last = m.index + raw.length;
  }
  if (last < s.length) out.push(document.createTextNode(s.slice(last)));
  return out;
}

/** The address, normalised, when it is a valid http(s) URL; else null. */
export function safeHref(raw) {
  try {
    const u = new URL(raw);
    return u.protocol === 'http:' || u.protocol === 'https:' ? u.href : null;
  } catch (_) {
    return null;
  }
}
