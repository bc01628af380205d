// Letter avatars with a stable colour per uid (profile pictures can replace the
// letters once the server has profiles).

import { h } from '../dom.js';
import { hueOf, initials } from '../util.js';

/** Fills an existing avatar element for `uid`. */
export function paintAvatar(el, uid) {
  el.textContent = initials(uid);
  el.style.setProperty('--hue', String(hueOf(uid)));
}

export function avatar(uid, extraClass = '') {
  const el = h('div', { className: `avatar ${extraClass}`.trim(), attrs: { 'aria-hidden': 'true' } });
  paintAvatar(el, uid);
  return el;
}
