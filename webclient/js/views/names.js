// Display texts shared by the views: conversation titles and group notices.

import { groupTitle } from '../people.js';
import { isGroupId } from '../store.js';

/** The title of a conversation: the peer's name, or the group's. */
export function convTitle(id, { people, store, me }) {
  if (id === me) return `${people.name(me)} (you)`;
  if (!isGroupId(id)) return people.name(id);
  const rest = id.slice('group_'.length);
  if (rest.lastIndexOf('.') > 0) return groupTitle(id);
  // Unnamed group: its members.
  const c = store.conversation(id);
  const others = c && c.members ? c.members.filter((u) => u !== me) : [];
  return others.length ? others.map((u) => people.name(u)).join(', ') : groupTitle(id);
}

function who(uid, people, me) {
  return uid === me ? 'You' : people.name(uid);
}

function list(uids, people, me) {
  const names = uids.map((u) => (u === me ? 'you' : people.name(u)));
  if (names.length <= 1) return names.join('');
  return `${names.slice(0, -1).join(', ')} and ${names[names.length - 1]}`;
}

/** The text of a system notice (group created, members added, someone left). */
export function noticeText(m, { people, me }) {
  const actor = who(m.from, people, me);
  switch (m.system) {
    case 'create':
      return `${actor} created the group`;
    case 'notify':
      return m.from === me ? 'You created the group' : `${actor} added you`;
    case 'refer':
    case 'join':
      return `${actor} added ${list(m.uids, people, me)}`;
    case 'depart':
      return `${actor} left`;
    default:
      return '';
  }
}
