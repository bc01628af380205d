// App-owned SVG path data for status marks.

import { h, icon } from '../dom.js';

const PATHS = {
  sending: 'M12 2a10 10 0 100 20 10 10 0 000-20zm0 18a8 8 0 110-16 8 8 0 010 16zm.5-13H11v6l5.2 3.2.8-1.3-4.5-2.7V7z',
  sent: 'M9 16.2L4.8 12l-1.4 1.4L9 19 21 7l-1.4-1.4L9 16.2z',
  delivered:
    'M18 7l-1.41-1.41-6.34 6.34 1.41 1.41L18 7zm4.24-1.41L11.66 16.17 7.48 12l-1.41 1.41L11.66 19l12-12-1.42-1.41zM.41 13.41L6 19l1.41-1.41L1.83 12 .41 13.41z',
  failed: 'M12 2a10 10 0 100 20 10 10 0 000-20zm1 15h-2v-2h2v2zm0-4h-2V7h2v6z',
};
PATHS.read = PATHS.delivered;

export const STATUS_LABEL = {
  sending: 'Sending',
  sent: 'Sent',
  delivered: 'Delivered',
  read: 'Read',
  failed: 'Not sent',
};

/** The ✓ / ✓✓ / clock / ! mark of an own message. */
export function statusMark(status) {
  const s = PATHS[status] ? status : 'sending';
  return h(
    'span',
    { className: `status status-${s}`, attrs: { role: 'img', 'aria-label': STATUS_LABEL[s], title: STATUS_LABEL[s] } },
    icon(PATHS[s], 'tick'),
  );
}
