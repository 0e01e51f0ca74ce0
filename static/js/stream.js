/*
 * The page's stream: one TidingsStream (/tidings.js) on /v1/stream with the
 * session's token, and the header's connection indicator. tidings.js keeps
 * the last event id and resumes from it, whoever reconnects (the browser on
 * its own, or tidings.js after a refusal, with backoff). The page has no
 * way to get a new token, so an expired one ends the session; a refused
 * connection asks the API why, since the stream cannot say.
 */

import { TidingsStream } from '../tidings.js';
import { $ } from './dom.js';
import { api, reportError, session, tokenExpired } from './session.js';

/** What `getToken` throws once the page's only token has expired. */
class TokenExpired extends Error {}

/** The current stream, or null when signed out. */
let stream = null;
/** Until the first open, "reconnecting" reads "Connecting…". */
let wasLive = false;

const CONNECTION_LABELS = { live: 'Live', reconnecting: 'Reconnecting…', offline: 'Offline' };

/** The header's indicator: live, reconnecting (or connecting) or offline. */
export function setConnection(connection) {
  const element = $('connection-state');
  element.dataset.state = connection;
  const first = connection === 'reconnecting' && !wasLive;
  element.querySelector('.connection-label').textContent = first ? 'Connecting…' : CONNECTION_LABELS[connection];
}

/**
 * Opens the stream for the session's token.
 *
 * - `events`: handlers by event name, each given the parsed data;
 * - `afterEvent()`: after each of them (renders);
 * - `onOpen(first, resumed)`: a connection opened; `resumed` is false when
 *   it started afresh (no resume point), so that state must be reloaded;
 * - `onReset()`: the server could not resume: refetch everything;
 * - `onDisconnect()`: the connection dropped;
 * - `onExpired()`: the token has expired: nothing more can be done.
 */
export function openStream({ events, afterEvent, onOpen, onReset, onDisconnect, onExpired }) {
  closeStream();
  wasLive = false;
  setConnection(navigator.onLine ? 'reconnecting' : 'offline');
  const current = new TidingsStream({
    token: session.token,
    getToken: () => {
      if (!session.claims || tokenExpired(session.claims)) throw new TokenExpired('the token has expired');
      return session.token;
    },
    onReset: () => {
      if (current !== stream) return;
      onReset();
      afterEvent();
    },
  });
  stream = current;
  current.addEventListener('open', () => {
    if (current !== stream) return;
    const first = !wasLive;
    wasLive = true;
    setConnection('live');
    onOpen(first, current.lastEventId !== '');
  });
  current.addEventListener('disconnect', (event) => {
    if (current !== stream) return;
    onDisconnect();
    setConnection(navigator.onLine ? 'reconnecting' : 'offline');
    if (!event.refused) return; // being retried at once
    if (event.error instanceof TokenExpired) {
      onExpired();
      return;
    }
    event.waitUntil(askWhyRefused());
  });
  for (const [name, handle] of Object.entries(events)) {
    current.on(name, (data) => {
      if (current !== stream) return;
      handle(data);
      afterEvent();
    });
  }
  current.start();
}

/**
 * A refused stream says nothing about why; a REST call does. A rejected
 * token ends the session (reportError), which closes the stream; anything
 * else is passing, and tidings.js tries again after its backoff.
 */
async function askWhyRefused() {
  if (!navigator.onLine) return; // the `online` event reconnects
  try {
    await api('GET', '/v1/notifications/unread_count');
  } catch (error) {
    if (error.status === 401) reportError(error);
  }
}

/** Closes the stream (signing out, or before another token's). */
export function closeStream() {
  if (stream) stream.close();
  stream = null;
}

/** The network is back: reconnect now rather than after the backoff. */
export function backOnline() {
  if (!stream) return;
  if (stream.readyState === TidingsStream.OPEN) {
    setConnection('live');
  } else {
    setConnection('reconnecting');
    stream.reconnect();
  }
}
