// Someone's profile, opened from the chat header: avatar, name, user id, presence (or when
// they were last seen) and status line.

import { $, setText } from '../dom.js';
import { lastSeenText } from '../util.js';
import { paintAvatar } from './avatar.js';
import { holdFocus } from './modal.js';

export class ContactCard {
  /** @param {{people}} opts */
  constructor({ people }) {
    this.people = people;
    this.uid = null;
    this.root = $('contact-panel');
    this.card = $('contact-card');
    this.closeBtn = $('contact-close');
    this.release = null;
    this.onChange = (e) => {
      if (this.uid && e.detail.includes(this.uid)) this.render();
    };
    this.handlers = [
      [this.closeBtn, 'click', () => this.close()],
      [this.root, 'click', (e) => { if (e.target === this.root) this.close(); }],
      [this.people, 'change', this.onChange],
    ];
    for (const [el, type, fn] of this.handlers) el.addEventListener(type, fn);
  }

  dispose() {
    for (const [el, type, fn] of this.handlers) el.removeEventListener(type, fn);
    this.close();
  }

  open(uid) {
    this.uid = uid;
    this.people.want([uid]);
    this.render();
    this.release = holdFocus(this.root, this.card, { onEscape: () => this.close(), first: this.closeBtn });
  }

  close() {
    this.uid = null;
    if (this.release) this.release();
    this.release = null;
    this.root.hidden = true;
  }

  render() {
    const uid = this.uid;
    const name = this.people.name(uid);
    paintAvatar($('contact-avatar'), uid, { name, url: this.people.avatarUrl(uid) });
    setText($('contact-name'), name);
    setText($('contact-uid'), `@${uid}`);
    const state = this.people.online(uid);
    let presence = '';
    if (state === 'online') presence = 'Online now';
    else if (state === 'offline') presence = lastSeenText(this.people.lastSeen(uid)) || 'Offline';
    else presence = 'Presence is shared once you have both written to each other.';
    setText($('contact-presence'), presence);
    const status = this.people.status(uid);
    const statusEl = $('contact-status');
    setText(statusEl, status);
    statusEl.hidden = !status;
  }
}
