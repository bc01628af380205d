// Short-lived notices in the corner.

import { $, h } from '../dom.js';

export function toast(text, kind = 'error', ms = 5000) {
  const box = $('toasts');
  const el = h('div', { className: `toast toast-${kind}`, text, attrs: { role: kind === 'error' ? 'alert' : 'status' } });
  box.appendChild(el);
  while (box.children.length > 3) box.firstElementChild.remove();
  setTimeout(() => {
    el.classList.add('leaving');
    setTimeout(() => el.remove(), 300);
  }, ms);
}
