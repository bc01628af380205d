// The sign-up / log-in screen.

import * as api from '../api.js';
import { $ } from '../dom.js';
import { uidProblem } from '../util.js';

export class AuthView {
  /** @param {{onAuthenticated: (issued, {name, isNew}) => void}} opts */
  constructor({ onAuthenticated }) {
    this.onAuthenticated = onAuthenticated;
    this.root = $('auth-view');
    this.form = $('auth-form');
    this.uid = $('auth-uid');
    this.name = $('auth-name');
    this.nameField = $('auth-name-field');
    this.password = $('auth-password');
    this.error = $('auth-error');
    this.submit = $('auth-submit');
    this.tabs = [$('tab-login'), $('tab-signup')];
    this.mode = 'login';
    this.busy = false;

    for (const tab of this.tabs) tab.addEventListener('click', () => this.setMode(tab.dataset.mode));
    this.form.addEventListener('submit', (e) => {
      e.preventDefault();
      this.submitForm();
    });
  }

  show(message = '') {
    this.root.hidden = false;
    this.setMode('login');
    this.password.value = '';
    this.showError(message);
    (this.uid.value ? this.password : this.uid).focus();
  }

  hide() {
    this.root.hidden = true;
  }

  setMode(mode) {
    this.mode = mode;
    for (const tab of this.tabs) tab.setAttribute('aria-selected', String(tab.dataset.mode === mode));
    this.nameField.hidden = mode !== 'signup';
    this.submit.textContent = mode === 'signup' ? 'Create account' : 'Log in';
    this.password.autocomplete = mode === 'signup' ? 'new-password' : 'current-password';
    this.showError('');
    this.uid.focus();
  }

  showError(text) {
    this.error.textContent = text;
    this.error.hidden = !text;
  }

  async submitForm() {
    if (this.busy) return;
    const uid = this.uid.value.trim();
    const password = this.password.value;
    const name = this.name.value.trim();
    const problem = uidProblem(uid);
    if (problem) return this.fail(problem, this.uid);
    if (password.length < 8) return this.fail('The password needs at least 8 characters.', this.password);
    if (password.length > 256) return this.fail('The password can have at most 256 characters.', this.password);

    this.busy = true;
    this.submit.disabled = true;
    this.form.setAttribute('aria-busy', 'true');
    this.showError('');
    try {
      const isNew = this.mode === 'signup';
      const issued = isNew ? await api.signup(uid, password, name) : await api.login(uid, password);
      this.password.value = '';
      this.onAuthenticated(issued, { name: isNew ? name : '', isNew });
    } catch (e) {
      // A refused password is not left in the field to be submitted again.
      if (e.status === 401) this.password.value = '';
      this.fail(this.explain(e), this.mode === 'signup' && e.status === 409 ? this.uid : this.password);
    } finally {
      this.busy = false;
      this.submit.disabled = false;
      this.form.removeAttribute('aria-busy');
    }
  }

  explain(e) {
    if (!(e instanceof api.ApiError)) return 'Something went wrong. Please try again.';
    if (e.status === 401) return 'Wrong user id or password.';
    if (e.status === 409) return 'That user id is taken. Pick another one or log in.';
    return e.message;
  }

  fail(text, field) {
    this.showError(text);
    if (field) field.focus();
  }
}
