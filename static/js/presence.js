/*
 * Presence: who is online, away, busy or offline, shown as dots beside
 * users and in words ("last seen 5 min ago"). Loaded over REST for the
 * users the chat knows, kept current by the stream's `presence` events;
 * the user's own status is set from the header's select.
 */

import { make, relativeTime } from './dom.js';
import { api, me, reportError } from './session.js';
import { chat, scheduleChatRender } from './chat-state.js';

const PRESENCE_BATCH = 500;

const PRESENCE_LABELS = { online: 'online', away: 'away', busy: 'busy', offline: 'offline', unknown: 'status unknown' };

/** Loads the presence of `userIds`, in batches of 500. */
export async function loadPresence(userIds) {
  for (let start = 0; start < userIds.length; start += PRESENCE_BATCH) {
    const batch = userIds.slice(start, start + PRESENCE_BATCH);
    try {
      const list = await api('GET', `/v1/presence?user_ids=${batch.map(encodeURIComponent).join(',')}`);
      for (const entry of list) chat.presence.set(entry.user_id, entry);
    } catch (error) {
      if (error.status === 401) reportError(error);
      else console.warn(`tidings: presence not loaded: ${error.message}`);
    }
  }
  scheduleChatRender();
}

/** Sets the user's own status (shown at once, then sent). */
export async function setMyStatus(status) {
  chat.myStatus = status;
  chat.presence.set(me(), { ...(chat.presence.get(me()) || {}), user_id: me(), status });
  scheduleChatRender();
  try {
    await api('POST', '/v1/presence', { status });
  } catch (error) {
    reportError(error, 'Could not set your status');
  }
}

function presenceOf(user) {
  const entry = chat.presence.get(user);
  return entry && PRESENCE_LABELS[entry.status] ? entry.status : 'unknown';
}

/** A user's presence in words: "online", "last seen 5 min ago", ... */
export function presenceWords(user) {
  const status = presenceOf(user);
  const entry = chat.presence.get(user);
  if (status === 'offline' && entry && entry.last_seen_at) return `last seen ${relativeTime(entry.last_seen_at)}`;
  return PRESENCE_LABELS[status];
}

/** A dot showing `user`'s presence. */
export function presenceDot(user) {
  const dot = make('span', 'presence-dot');
  dot.dataset.user = user;
  fillPresenceDot(dot);
  return dot;
}

/** Brings a presence dot up to date. */
export function fillPresenceDot(dot) {
  dot.dataset.status = presenceOf(dot.dataset.user);
  dot.title = `${dot.dataset.user}: ${presenceWords(dot.dataset.user)}`;
}

/** The stream's presence event. */
export const PRESENCE_EVENTS = {
  presence(data) {
    chat.presence.set(data.user_id, data);
  },
};
