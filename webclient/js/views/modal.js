// Modal dialogs: focus moves into the dialog, Tab cycles inside it, Escape closes it, and
// focus returns to what had it before (not the page body).

const FOCUSABLE = 'a[href], button:not([disabled]), input:not([disabled]), textarea:not([disabled]), select:not([disabled]), [tabindex]:not([tabindex="-1"])';

/**
 * Shows `overlay` (the backdrop holding the dialog) and keeps focus in `dialog` until the
 * returned function is called; `onEscape` runs on Escape (it should close the dialog).
 * `first` is focused at once (default: the first focusable element).
 */
export function holdFocus(overlay, dialog, { onEscape, first } = {}) {
  const before = document.activeElement;
  overlay.hidden = false;
  const focusables = () => [...dialog.querySelectorAll(FOCUSABLE)].filter((el) => !el.closest('[hidden]'));
  const onKey = (e) => {
    if (e.key === 'Escape') {
      e.preventDefault();
      e.stopPropagation();
      if (onEscape) onEscape();
      return;
    }
    if (e.key !== 'Tab') return;
    const all = focusables();
    if (!all.length) return;
    const at = all.indexOf(document.activeElement);
    if (e.shiftKey && (at <= 0)) {
      e.preventDefault();
      all[all.length - 1].focus();
    } else if (!e.shiftKey && at === all.length - 1) {
      e.preventDefault();
      all[0].focus();
    }
  };
  // Focus that lands outside (a click on the backdrop, a screen reader moving) comes back.
  const onFocusIn = (e) => {
    if (!dialog.contains(e.target)) (focusables()[0] || dialog).focus();
  };
  overlay.addEventListener('keydown', onKey);
  document.addEventListener('focusin', onFocusIn);
  (first || focusables()[0] || dialog).focus();
  let released = false;
  return () => {
    if (released) return;
    released = true;
    overlay.removeEventListener('keydown', onKey);
    document.removeEventListener('focusin', onFocusIn);
    overlay.hidden = true;
    if (before && before !== document.body && before.isConnected && typeof before.focus === 'function') before.focus();
  };
}
