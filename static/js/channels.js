/*
 * The channels this hub delivers on (GET /v1/channels): `web` always, and
 * `email`, `push`, `webhook` when the operator configured them. The
 * preferences panel shows a toggle per channel listed here; the bell shows
 * "email pending" only when the hub sends email.
 */

import { api, session } from './session.js';

/** The channels as last loaded; `['web']` until then, or if loading failed. */
const known = { list: ['web'], loading: null, loaded: false };

/** Forgets the previous session's answer. */
export function startChannels() {
  Object.assign(known, { list: ['web'], loading: null, loaded: false });
}

/** Loads the list once per session; resolves to it. */
export function loadChannels() {
  if (known.loaded) return Promise.resolve(known.list);
  if (known.loading) return known.loading;
  const token = session.token;
  known.loading = api('GET', '/v1/channels').then((list) => {
    if (token !== session.token) return known.list;
    if (Array.isArray(list) && list.includes('web')) known.list = list;
    known.loaded = true;
    return known.list;
  }, () => known.list).finally(() => {
    if (token === session.token) known.loading = null;
  });
  return known.loading;
}

/** The channels known now, in the hub's order. */
export const hubChannels = () => known.list;

/** Whether the hub delivers on `channel`. */
export const hubHas = (channel) => known.list.includes(channel);
