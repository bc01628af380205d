// Avatars: the profile picture when there is one (https only, see the CSP), else letters
// of the display name on a stable colour per uid. The letters are drawn by CSS from
// `data-letters`, not as text: they are decoration (avatars are aria-hidden), and as text they
// would become part of what a button holding an avatar visibly "says" next to its label.

import { h } from '../dom.js';
import { hueOf, initials } from '../util.js';

/** Fills an existing avatar element for `uid` (name: display name, url: avatar URL). */
export function paintAvatar(el, uid, { name, url } = {}) {
  el.style.setProperty('--hue', String(hueOf(uid)));
  const letters = initials(name || uid);
  const img = el.querySelector('img');
  if (url && /^https?:\/\//i.test(url)) {
    if (img && img.getAttribute('src') === url) return;
    const pic = h('img', { attrs: { alt: '', src: url, referrerpolicy: 'no-referrer', loading: 'lazy' } });
    // A picture that does not load (blocked, gone) falls back to the letters. (In the
    // element holding it then: the conversation list moves a row's nodes into the row shown.)
    pic.addEventListener('error', () => {
      const host = pic.parentElement;
      pic.remove();
      if (!host) return;
      host.classList.remove('has-img');
      host.dataset.letters = letters;
    });
    el.replaceChildren(pic);
    el.classList.add('has-img');
    delete el.dataset.letters;
    return;
  }
  el.classList.remove('has-img');
  if (img || el.textContent) el.replaceChildren();
  if (el.dataset.letters !== letters) el.dataset.letters = letters;
}

export function avatar(uid, opts, extraClass = '') {
  const el = h('div', { className: `avatar ${extraClass}`.trim(), attrs: { 'aria-hidden': 'true' } });
  paintAvatar(el, uid, opts);
  return el;
}
