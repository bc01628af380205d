// A small emoji picker, shared by the composer (insert at the caret) and reactions.
//
//   import * as emojiPicker from './emoji-picker.js';
//   emojiPicker.open(anchorButton, (emoji) => { … });   // toggles when open on that anchor
//   emojiPicker.close();
//
// The picker is a non-modal popup next to its anchor: arrow keys move between emoji, Enter
// or a click picks one (the picker then closes), Escape or a click elsewhere closes it, and
// focus goes back to the anchor. The anchor's aria-expanded follows the picker.

import { h } from './dom.js';

/** The emoji offered, most used first. */
export const EMOJI = [
  '😀', '😂', '🙂', '😉', '😊', '😍', '😘', '😎',
  '🤔', '😅', '😇', '🥳', '😴', '😢', '😭', '😡',
  '😮', '🙄', '😬', '🤗', '🤩', '😱', '🤯', '🥲',
  '👍', '👎', '👏', '🙌', '🙏', '💪', '👋', '👌',
  '✌️', '🤞', '👀', '🤝', '❤️', '🧡', '💛', '💚',
  '💙', '💜', '🖤', '💔', '🔥', '✨', '⭐', '🎉',
  '🎂', '🎁', '☕', '🍕', '🍺', '🍜', '⚽', '🚀',
  '✅', '❌', '⚠️', '❓', '💡', '📌', '📎', '⏰',
];

const COLUMNS = 8;

let current = null; // { root, anchor, onPick, cleanup }

/** Whether the picker is open (on `anchor`, when given). */
export function isOpen(anchor) {
  return Boolean(current && (!anchor || current.anchor === anchor));
}

/**
 * Opens the picker beside `anchor` (an element, usually the button that opened it); `onPick`
 * gets the chosen emoji. Opening it again on the same anchor closes it.
 */
export function open(anchor, onPick) {
  if (isOpen(anchor)) {
    close();
    return;
  }
  close();
  const grid = h(
    'div',
    { className: 'emoji-grid', attrs: { role: 'group', 'aria-label': 'Emoji' } },
    EMOJI.map((e, i) => h('button', { text: e, dataset: { emoji: e }, attrs: { type: 'button', tabindex: i === 0 ? '0' : '-1', 'aria-label': e } })),
  );
  const root = h('div', { className: 'emoji-picker', attrs: { role: 'dialog', 'aria-label': 'Pick an emoji' } }, grid);
  document.body.appendChild(root);
  place(root, anchor);

  const buttons = () => [...grid.querySelectorAll('button')];
  const focusAt = (i) => {
    const all = buttons();
    const at = Math.max(0, Math.min(all.length - 1, i));
    for (const [j, b] of all.entries()) b.tabIndex = j === at ? 0 : -1;
    all[at].focus();
  };
  const pick = (emoji) => {
    close();
    onPick(emoji);
  };
  const onClick = (e) => {
    const b = e.target.closest('button[data-emoji]');
    if (b) pick(b.dataset.emoji);
  };
  const onKey = (e) => {
    const all = buttons();
    const i = all.indexOf(document.activeElement);
    const moves = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: COLUMNS, ArrowUp: -COLUMNS, Home: -Infinity, End: Infinity };
    if (e.key === 'Escape') {
      e.preventDefault();
      e.stopPropagation();
      close();
    } else if (e.key in moves && i >= 0) {
      e.preventDefault();
      const step = moves[e.key];
      focusAt(Number.isFinite(step) ? i + step : step < 0 ? 0 : all.length - 1);
    } else if (e.key === 'Tab') {
      // Leaving the picker closes it (it is a popup, not a place to stay).
      close({ refocus: false });
    }
  };
  const onOutside = (e) => {
    if (!root.contains(e.target) && !anchor.contains(e.target)) close({ refocus: false });
  };
  const onResize = () => place(root, anchor);
  root.addEventListener('click', onClick);
  root.addEventListener('keydown', onKey);
  document.addEventListener('pointerdown', onOutside, true);
  window.addEventListener('resize', onResize);
  anchor.setAttribute('aria-expanded', 'true');
  current = {
    root,
    anchor,
    cleanup() {
      document.removeEventListener('pointerdown', onOutside, true);
      window.removeEventListener('resize', onResize);
    },
  };
  focusAt(0);
}

/** Closes the picker (focus back on its anchor unless `refocus` is false). */
export function close({ refocus = true } = {}) {
  if (!current) return;
  const { root, anchor, cleanup } = current;
  current = null;
  cleanup();
  root.remove();
  anchor.setAttribute('aria-expanded', 'false');
  if (refocus && anchor.isConnected) anchor.focus();
}

/** Above the anchor when there is room, else below; kept inside the window. */
function place(root, anchor) {
  const r = anchor.getBoundingClientRect();
  const w = root.offsetWidth;
  const hgt = root.offsetHeight;
  const left = Math.max(8, Math.min(window.innerWidth - w - 8, r.left));
  const top = r.top - hgt - 8 >= 8 ? r.top - hgt - 8 : Math.min(window.innerHeight - hgt - 8, r.bottom + 8);
  root.style.left = `${left}px`;
  root.style.top = `${Math.max(8, top)}px`;
}
