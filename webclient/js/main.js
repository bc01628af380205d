// Entry point: shows the auth screen or the messenger, and wires the parts.
//
//   session.js      token in localStorage
//   api.js          REST (accounts, history, address book, profiles)
//   connection.js   socket.io connection and its state
//   store.js        in-memory conversations and messages; last Seq, this tab's outbox
//   people.js       profiles (names, status, avatars) and presence
//   chat.js         the chat protocol (events, history, receipts, outbox, typing, groups)
//   channels.js     channels (§9): list, channel page, read-only guest view
//   views/*.js      DOM
//
// Routing: `#/c/<uid or gid>` is the open conversation, `#/ch/<name>` an open channel; no
// hash is the list (which is all a phone shows; wider screens show the list beside the
// conversation). Without a session, `#/guest/<name>` reads a guest channel as a guest.

import { setupAttachments } from './attachments.js';
import * as api from './api.js';
import { ChannelsPanel, GuestView, channelOfHash } from './channels.js';
import { ChatClient } from './chat.js';
import { Connection } from './connection.js';
import { $ } from './dom.js';
import { clearSession, loadSession, onSessionChange, saveSession } from './session.js';
import { People } from './people.js';
import { UserStore } from './store.js';
import { uidProblem } from './util.js';
import { AuthView } from './views/auth.js';
import { paintAvatar } from './views/avatar.js';
import { ContactCard } from './views/contact.js';
import { ConversationView } from './views/conversation.js';
import { convTitle } from './views/names.js';
import { Notifier } from './notify.js';
import { PushSubscriber } from './push.js';
import { ProfileEditor } from './views/profile.js';
import { Sidebar } from './views/sidebar.js';
import { toast } from './views/toast.js';

const CONN_LABEL = { connecting: 'Connecting…', online: 'Online', offline: 'Offline' };
const CONN_BANNER = {
  connecting: 'Connecting… Messages you write are sent once the connection is back.',
  online: '',
  offline: 'Offline. Messages you write are sent once the connection is back.',
};

/** A logged-in messenger; built on login, torn down on logout. */
class Messenger {
  constructor(session, { onLoggedOut }) {
    this.session = session;
    this.onLoggedOut = onLoggedOut;
    this.root = $('app-view');
    const getToken = () => this.session.token;
    this.store = new UserStore(session.uid);
    this.conn = new Connection(getToken);
    this.people = new People(getToken);
    if (session.name) this.people.fallback.set(session.uid, session.name);
    this.client = new ChatClient({ uid: session.uid, store: this.store, connection: this.conn, people: this.people, getToken });
    this.sidebar = new Sidebar({
      store: this.store,
      client: this.client,
      people: this.people,
      me: session.uid,
      getToken,
      onOpen: (convId) => this.navigate(convId),
      notify: (text) => toast(text),
    });
    this.contact = new ContactCard({ people: this.people });
    this.notifier = new Notifier(session.uid);
    this.push = new PushSubscriber(getToken, (convId) => this.navigate(convId));
    this.notifyBtn = $('notify-btn');
    this.chat = new ConversationView({
      store: this.store,
      client: this.client,
      people: this.people,
      me: session.uid,
      getToken,
      onBack: () => this.back(),
      notify: (text, kind) => toast(text, kind),
      onShowContact: (uid) => (uid === session.uid ? this.profileEditor.open() : this.contact.open(uid)),
    });
    setupAttachments({
      form: $('composer'),
      dropZone: $('chat-view'),
      token: getToken,
      toast: (text) => toast(text),
      onChange: () => this.chat.updateSendButton(),
    });
    this.profileEditor = new ProfileEditor({
      people: this.people,
      me: session.uid,
      getToken,
      onSaved: (profile) => {
        this.people.apply(profile);
        this.client.broadcast({ type: 'profile', profile });
        toast('Profile saved.', 'info', 2500);
        // Where the profile service publishes nothing (no Redis), the chat server shares it.
        api.profileChanged(this.session.token).catch((e) => console.warn('webchat: profile change not shared', e.message));
      },
    });
    this.channels = new ChannelsPanel({
      connection: this.conn,
      me: session.uid,
      getToken,
      onOpen: (name) => this.navigateTo(`#/ch/${encodeURIComponent(name)}`),
      notify: (text) => toast(text),
    });
    this.connEl = $('conn-state');
    this.connLabel = $('conn-label');
    this.logoutBtn = $('logout-btn');
    // Staff (contract §10) get a way to the staff console: the ticket list answers them only.
    fetch('api/v1/support/tickets?limit=1', { headers: { Authorization: `Bearer ${session.token}` }, cache: 'no-store' })
      .then((res) => { $('support-link').hidden = !res.ok; })
      .catch(() => {});

    this.listeners = [
      [this.client, 'conversations', () => this.schedule('list', () => this.renderList())],
      [this.client, 'messages', (e) => {
        if (e.detail === this.chat.convId) this.schedule('messages', () => this.chat.renderMessages());
      }],
      [this.client, 'typing', (e) => {
        if (e.detail.convId === this.chat.convId) this.chat.renderHeader();
        this.schedule('list', () => this.renderList());
      }],
      [this.client, 'members', (e) => {
        if (e.detail === this.chat.convId) this.schedule('header', () => this.chat.renderHeader());
      }],
      [this.people, 'change', () => {
        this.schedule('people', () => {
          this.renderMe();
          this.chat.renderHeader();
          this.chat.renderMessages();
          this.renderList();
        });
      }],
      [this.client, 'notice', (e) => toast(e.detail.text, e.detail.kind)],
      [this.client, 'incoming', (e) => this.notifyIncoming(e.detail)],
      [this.client, 'missing', (e) => {
        if (e.detail === this.chat.convId) this.chat.renderHeader();
      }],
      [this.notifyBtn, 'click', () => this.toggleNotifications()],
      [document, 'visibilitychange', () => {
        if (document.visibilityState === 'visible' && this.chat.convId) this.notifier.clear(this.chat.convId);
      }],
      [this.conn, 'state', (e) => this.renderConnection(e.detail)],
      [this.conn, 'unauthorized', () => this.expire()],
      [this.logoutBtn, 'click', () => this.logout()],
      [window, 'popstate', () => this.route()],
    ];
  }

  start() {
    for (const [target, type, fn] of this.listeners) target.addEventListener(type, fn);
    this.people.want([this.session.uid]);
    this.renderMe();
    this.root.hidden = false;
    this.renderNotifyButton();
    this.push.start();
    // Turned on earlier (the permission was asked then): keep the server's copy current.
    if (this.notifier.enabled) this.syncPush(true);
    this.client.start();
    this.renderConnection(this.conn.state);
    this.route();
    this.conn.start();
    this.channels.start();
    this.route();
    // Focus where work starts (not on the page body): the open chat's composer, else the
    // chat search (on phones the "new chat" button, so no keyboard pops up).
    if (!this.chat.convId) {
      const fine = window.matchMedia('(pointer: fine)').matches;
      (fine ? $('conv-filter') : $('new-chat-btn')).focus();
    }
  }

  renderNotifyButton() {
    const btn = this.notifyBtn;
    btn.hidden = !this.notifier.supported;
    const on = this.notifier.enabled;
    btn.setAttribute('aria-pressed', String(on));
    btn.title = on ? 'Desktop notifications: on' : 'Desktop notifications: off';
  }

  async toggleNotifications() {
    const on = await this.notifier.toggle();
    this.renderNotifyButton();
    this.syncPush(on);
    if (on) toast('Notifications are on: for messages while this tab is in the background, and while webchat is closed.', 'info', 3000);
    else if (typeof Notification === 'function' && Notification.permission === 'denied') toast('Notifications are blocked in the browser settings for this site.');
  }

  /** Subscribes this browser to Web Push (`on`) or unsubscribes it; failures only logged. */
  syncPush(on) {
    if (!this.push.supported) return;
    (on ? this.push.enable() : this.push.disable()).catch((e) =>
      console.warn('webchat: push subscription not updated', e.message),
    );
  }

  /** A desktop notification for a message that came while the tab is hidden. */
  notifyIncoming({ convId, msg }) {
    const group = convId.startsWith('group_');
    const title = group ? `${this.people.name(msg.from)} in ${convTitle(convId, { people: this.people, store: this.store, me: this.session.uid })}` : this.people.name(msg.from);
    this.notifier.show(convId, title, msg.body || '', () => this.navigate(convId));
  }

  stop() {
    clearTimeout(this.bannerTimer);
    for (const id of (this.pending || new Map()).values()) cancelAnimationFrame(id);
    for (const [target, type, fn] of this.listeners) target.removeEventListener(type, fn);
    this.channels.stop();
    this.push.stop();
    this.client.dispose();
    this.people.dispose();
    this.profileEditor.dispose();
    this.contact.dispose();
    this.conn.stop();
    this.sidebar.dispose();
    this.chat.dispose();
    this.store.dispose();
    this.root.hidden = true;
    document.title = 'webchat';
  }

  /**
   * Coalesces renders into the next frame, so a replay of many events renders once.
   * (Hidden tabs get no frames; they render when shown, the title is kept current.)
   */
  schedule(what, fn) {
    this.updateTitle();
    this.pending = this.pending || new Map();
    if (this.pending.has(what)) return;
    this.pending.set(
      what,
      requestAnimationFrame(() => {
        this.pending.delete(what);
        if (!this.root.hidden) fn();
      }),
    );
  }

  renderMe() {
    const uid = this.session.uid;
    const name = this.people.name(uid);
    $('me-uid').textContent = name;
    $('me-uid').title = uid;
    // The own status line, as others see it.
    const status = this.people.status(uid);
    $('me-status').textContent = status;
    $('me-status').hidden = !status;
    paintAvatar($('me-avatar'), uid, { name, url: this.people.avatarUrl(uid) });
  }

  navigate(convId) {
    return this.navigateTo(convId ? `#/c/${encodeURIComponent(convId)}` : '');
  }

  navigateTo(hash) {
    if (location.hash === hash || (!hash && !location.hash)) return this.route();
    this.openedFromList = Boolean(hash) && !location.hash;
    if (hash) history.pushState(null, '', hash);
    else history.pushState(null, '', location.pathname + location.search);
    this.route();
  }

  /** The back arrow (phones): return to the list, as the browser's back button would. */
  back() {
    if (this.openedFromList) {
      this.openedFromList = false;
      history.back();
    } else {
      this.navigate(null);
    }
  }

  /** Shows what the URL names. */
  route() {
    const channel = channelOfHash(location.hash);
    this.channels.show(channel);
    if (channel) {
      this.chat.close();
      $('pane-empty').hidden = true;
      this.root.dataset.view = 'chat';
      this.sidebar.setActive(null);
      this.client.setViewing(null);
      this.renderList();
      return;
    }
    const m = /^#\/c\/(.+)$/.exec(location.hash);
    let convId = null;
    if (m) {
      try {
        convId = decodeURIComponent(m[1]);
      } catch (_) {
        convId = null;
      }
      if (convId && uidProblem(convId) && !/^group_[A-Za-z0-9_.@+-]{1,58}$/.test(convId)) convId = null;
    }
    // The view first: on phones the pane is not displayed while the list is, and a chat
    // opened there could not scroll (to its end, or to its first unread message).
    this.root.dataset.view = convId ? 'chat' : 'list';
    if (convId) this.chat.open(convId);
    else this.chat.close();
    this.sidebar.setActive(convId);
    this.client.setViewing(convId);
    this.renderList();
  }

  renderList() {
    this.sidebar.render();
    this.updateTitle();
  }

  updateTitle() {
    const unread = this.store.totalUnread();
    document.title = unread ? `(${unread}) webchat` : 'webchat';
  }

  renderConnection(state) {
    this.connEl.dataset.state = state;
    this.connLabel.textContent = CONN_LABEL[state] || state;
    // The banner waits a moment, so a quick (re)connect does not flash it.
    clearTimeout(this.bannerTimer);
    const banner = $('conn-banner');
    if (state === 'online') {
      banner.hidden = true;
    } else {
      this.bannerTimer = setTimeout(() => {
        banner.textContent = CONN_BANNER[state] || '';
        banner.dataset.state = state;
        banner.hidden = false;
      }, 1200);
    }
    this.root.dataset.conn = state;
  }

  async logout() {
    const token = this.session.token;
    // The next user of this browser must not get this user's pushes.
    await this.push.disable(token).catch((e) => console.warn('webchat: push not turned off', e.message));
    this.onLoggedOut('');
    try {
      await api.logout(token);
    } catch (e) {
      // The local session is gone either way; the token expires on its own.
      console.warn('webchat: logout request failed', e);
    }
  }

  expire() {
    this.onLoggedOut('Your session has ended. Please log in again.');
  }
}

// -- bootstrap -----------------------------------------------------------------

let messenger = null;

const auth = new AuthView({
  onAuthenticated(issued, { name, isNew }) {
    const session = saveSession(issued, name);
    if (isNew) {
      // A new account starts from Seq 0: forget anything an old account of this uid left here.
      const stale = new UserStore(session.uid);
      stale.reset();
      stale.dispose();
    }
    enter(session);
  },
});

function enter(session) {
  auth.hide();
  if (messenger) messenger.stop();
  messenger = new Messenger(session, { onLoggedOut: leave });
  messenger.start();
}

function leave(message) {
  clearSession();
  if (messenger) {
    messenger.stop();
    messenger = null;
  }
  if (location.hash) history.replaceState(null, '', location.pathname + location.search);
  auth.show(message);
}

// Another tab logged in or out: follow it.
onSessionChange((s) => {
  if (!s && messenger) leave('');
  else if (s && (!messenger || messenger.session.uid !== s.uid)) enter(s);
  else if (s && messenger) messenger.session = s;
});

const session = loadSession();
const guestChannel = channelOfHash(location.hash, '#/guest/');
if (session) enter(session);
else if (guestChannel) {
  new GuestView(guestChannel).start();
} else {
  clearSession();
  auth.show('');
}
