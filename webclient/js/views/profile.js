// Editing the own profile (name, status line, avatar URL) in the profile service.

import * as api from '../api.js';
import { $ } from '../dom.js';
import { holdFocus } from './modal.js';

export class ProfileEditor {
  /** @param {{people, me: string, getToken: () => string, onSaved: (profile) => void}} opts */
  constructor({ people, me, getToken, onSaved }) {
    this.people = people;
    this.me = me;
    this.getToken = getToken;
    this.onSaved = onSaved;
    this.root = $('profile-panel');
    this.form = $('profile-form');
    this.name = $('profile-name');
    this.status = $('profile-status');
    this.avatar = $('profile-avatar');
    this.error = $('profile-error');
    this.save = $('profile-save');
    this.openBtn = $('profile-btn');
    this.cancel = $('profile-cancel');
    this.release = null;
    this.handlers = [
      [this.openBtn, 'click', () => this.open()],
      [this.cancel, 'click', () => this.close()],
      [this.root, 'click', (e) => { if (e.target === this.root) this.close(); }],
      [this.form, 'submit', (e) => { e.preventDefault(); this.submit(); }],
    ];
    for (const [el, type, fn] of this.handlers) el.addEventListener(type, fn);
  }

  dispose() {
    for (const [el, type, fn] of this.handlers) el.removeEventListener(type, fn);
    this.close();
  }

  open() {
    const p = this.people.profile(this.me);
    this.name.value = (p && p.name) || this.people.name(this.me);
    this.status.value = (p && p.status) || '';
    this.avatar.value = (p && p.avatarUrl) || '';
    this.showError('');
    // A modal dialog: focus stays inside until it closes, then returns to the avatar.
    this.release = holdFocus(this.root, this.form, { onEscape: () => this.close(), first: this.name });
  }

  close() {
    if (this.release) this.release();
    this.release = null;
    this.root.hidden = true;
  }

  showError(text) {
    this.error.textContent = text;
    this.error.hidden = !text;
  }

  async submit() {
    const name = this.name.value.trim();
    const status = this.status.value.trim();
    const avatarUrl = this.avatar.value.trim();
    if (!name) return this.showError('Enter a name.');
    if (avatarUrl && !/^https?:\/\/\S+$/i.test(avatarUrl)) return this.showError('The avatar URL must start with https:// (or http://).');
    this.save.disabled = true;
    try {
      const saved = await api.putProfile(this.getToken(), this.me, { name, status, avatarUrl });
      this.onSaved(saved || { uid: this.me, name, status, avatarUrl, updatedAt: Date.now() });
      this.close();
    } catch (e) {
      this.showError(e.status === 0 ? 'The profile service cannot be reached right now.' : e.message);
    } finally {
      this.save.disabled = false;
    }
  }
}
