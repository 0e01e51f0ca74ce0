/**
 * tidings.js: a small client for the Tidings stream (`GET /v1/stream`), for
 * any web app. It wraps `EventSource` and adds what every app otherwise
 * writes by hand:
 *
 * - it keeps the id of the last event it saw and resumes from it, so a new
 *   connection misses nothing and repeats nothing;
 * - it asks the app for a fresh token (`getToken`) before the current one
 *   expires (the JWT's `exp`; the server ends a stream at `exp`), then
 *   reconnects with the new token and the last id;
 * - it calls the app back on `reset` (the server no longer has the history
 *   to resume from: refetch state over REST);
 * - it parses each event's JSON once and hands it out as a typed event.
 *
 * No build step and no dependency: import it as an ES module from the hub,
 *
 *     import { TidingsStream } from 'https://hub.example.com/tidings.js';
 *     const stream = new TidingsStream({ getToken: () => fetchTokenFromMyBackend() });
 *     stream.on('notification', (notification) => show(notification));
 *     stream.on('unread_count', ({ count }) => setBadge(count));
 *     stream.start();
 *
 * The stream's URL defaults to `/v1/stream` on the origin this file was
 * loaded from. Token expiry is judged by this browser's clock.
 *
 * @module tidings
 */

/**
 * @typedef {object} Notification
 * @property {number} id
 * @property {string|null} user_id null for an announcement
 * @property {string} type
 * @property {string} title
 * @property {string} body
 * @property {object|null} data
 * @property {string|null} action_url
 * @property {string|null} group_key
 * @property {number} count
 * @property {string} created_at
 * @property {string} updated_at
 * @property {string|null} expires_at
 * @property {string|null} read_at
 */

/**
 * @typedef {object} Message
 * @property {number} id
 * @property {number} conversation_id
 * @property {string} sender_id
 * @property {string|null} content null once deleted
 * @property {string|null} client_message_id
 * @property {string} created_at
 * @property {string|null} edited_at
 * @property {string|null} deleted_at
 */

/**
 * @typedef {object} Conversation
 * @property {number} id
 * @property {string|null} title
 * @property {string[]} members
 * @property {string} created_at
 * @property {Message|null} [last_message]
 * @property {number} [unread_count]
 */

/**
 * @typedef {object} TopicEvent
 * @property {number} id
 * @property {string} topic
 * @property {string} type
 * @property {object} data
 * @property {string|null} key
 * @property {string} created_at
 */

/**
 * The contract's events and the data each carries.
 *
 * @typedef {object} TidingsEventMap
 * @property {Notification} notification
 * @property {{ids: number[]}} 'notification.read'
 * @property {{id: number}} 'notification.deleted'
 * @property {{count: number}} unread_count
 * @property {Message} message
 * @property {Message} 'message.updated'
 * @property {Message} 'message.deleted'
 * @property {{conversation_id: number, user_id: string, message_id: number, at: string}} read
 * @property {Conversation} conversation
 * @property {{conversation_id: number, user_id: string, is_typing: boolean}} typing
 * @property {{user_id: string, status: string, last_seen_at: string|null}} presence
 * @property {{}} reset
 * @property {TopicEvent} 'topic.event'
 */

/**
 * @typedef {object} TidingsStreamOptions
 * @property {string|URL} [url] the stream's URL; default `/v1/stream` on the
 *   origin this module came from
 * @property {() => (string|Promise<string>)} [getToken] answers a JWT for
 *   the stream. Called to connect when there is no token yet, before the
 *   current one expires, and when a reconnection finds it expired. A
 *   rejection is reported as a `disconnect` event (with `error`) and tried
 *   again after a backoff. Without it, the stream relies on `token` alone,
 *   or on the `tidings_token` cookie (with `withCredentials`).
 * @property {string} [token] a token to start with, before any `getToken`
 * @property {string[]} [topics] broadcast topics to add to the stream
 *   (`?topic=`); the token must be allowed to read each
 * @property {string} [lastEventId] resume after this id (one saved from an
 *   earlier page, say) instead of starting afresh
 * @property {() => void} [onReset] called on `reset`: the server could not
 *   resume, so the app should refetch its state over REST
 * @property {number} [refreshMarginMs] how long before `exp` to refresh the
 *   token (default 30 s, at most a fifth of the token's lifetime)
 * @property {number} [retryMinMs] first wait after a refused connection (default 1 s)
 * @property {number} [retryMaxMs] longest wait between attempts (default 30 s)
 * @property {boolean} [withCredentials] send cookies to another origin
 * @property {string[]} [events] further event names to listen to (the
 *   contract's are always listened to)
 */

/** The events of the contract, listened to on every stream. */
export const EVENT_NAMES = Object.freeze([
  'notification',
  'notification.read',
  'notification.deleted',
  'unread_count',
  'message',
  'message.updated',
  'message.deleted',
  'read',
  'conversation',
  'typing',
  'presence',
  'reset',
  'topic.event',
]);

const DEFAULT_REFRESH_MARGIN_MS = 30_000;
const DEFAULT_RETRY_MIN_MS = 1_000;
const DEFAULT_RETRY_MAX_MS = 30_000;

/**
 * One event of the stream: its name is the event's `type`, its JSON is
 * parsed once into `data`, and `id` is the stream's last event id when it
 * arrived: the event's own for those that have one; for those that do not
 * (`unread_count`, `typing`, ...) the one before, or '' on a fresh stream.
 *
 * @template [T=unknown]
 */
export class TidingsEvent extends Event {
  /**
   * @param {string} type
   * @param {T} data
   * @param {string} id
   */
  constructor(type, data, id) {
    super(type);
    /** @type {T} */
    this.data = data;
    /** @type {string} */
    this.id = id;
  }
}

/**
 * `disconnect`: the connection dropped or could not be made. `refused` is
 * true when it will be tried again only after a backoff (the browser gave
 * up: a refusal such as 401, 403 or 429, or no network; or `getToken`
 * failed, then `error` says why); false when it is being retried at once.
 * A listener may hold the next attempt with `waitUntil(promise)`, e.g. to
 * ask the API why it was refused and `close()` the stream for good.
 */
export class DisconnectEvent extends Event {
  /**
   * @param {{refused: boolean, error?: unknown}} detail
   */
  constructor({ refused, error }) {
    super('disconnect');
    /** @type {boolean} */
    this.refused = refused;
    /** @type {unknown} */
    this.error = error;
    /** @type {Promise<unknown>[]} */
    this.pending = [];
  }

  /** Holds the next attempt until `promise` settles. @param {Promise<unknown>} promise */
  waitUntil(promise) {
    this.pending.push(promise);
  }
}

/**
 * The `exp` and `iat` claims of a JWT, in seconds, or null when `token` is
 * not a JWT. Nothing is verified: that is the server's job.
 *
 * @param {string} token
 * @returns {{exp?: number, iat?: number} | null}
 */
export function tokenTimes(token) {
  const parts = String(token).split('.');
  if (parts.length !== 3) return null;
  try {
    const base64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    const padded = base64 + '='.repeat((4 - (base64.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    if (!claims || typeof claims !== 'object') return null;
    return {
      exp: typeof claims.exp === 'number' ? claims.exp : undefined,
      iat: typeof claims.iat === 'number' ? claims.iat : undefined,
    };
  } catch {
    return null;
  }
}

/**
 * A Tidings stream that resumes, refreshes its token and reconnects on its
 * own. Listen with `on(name, handler)` or `addEventListener(name, listener)`
 * for the contract's events (see {@link TidingsEventMap}), plus:
 *
 * - `open`: a connection is open (the first, or one after a reconnection);
 * - `disconnect`: a {@link DisconnectEvent};
 * - `token`: a fresh token from `getToken` is now in use (`detail`-less
 *   {@link TidingsEvent} whose `data` is the token).
 */
export class TidingsStream extends EventTarget {
  /** Opening, or waiting to open again. */
  static CONNECTING = 0;
  /** A connection is open. */
  static OPEN = 1;
  /** Closed by `close()`: nothing more happens. */
  static CLOSED = 2;

  #url;
  #getToken;
  #token;
  #topics;
  #onReset;
  #refreshMarginMs;
  #retryMinMs;
  #retryMaxMs;
  #withCredentials;
  #names;

  #lastEventId;
  #readyState = TidingsStream.CONNECTING;
  #started = false;
  /** @type {EventSource|null} */
  #source = null;
  /** Bumped by every (re)connection, so that a stale async step gives up. */
  #generation = 0;
  #attempts = 0;
  #retryTimer = null;
  #refreshTimer = null;
  /** The `getToken` call in flight, shared by whoever needs a token. */
  #tokenRequest = null;
  /** The token `getToken` last answered that was no fresher than the one in use. */
  #unrefreshable = null;

  /** @param {TidingsStreamOptions} [options] */
  constructor(options = {}) {
    super();
    this.#url = new URL(options.url ?? '/v1/stream', import.meta.url);
    this.#getToken = options.getToken ?? null;
    this.#token = options.token ?? null;
    this.#topics = [...(options.topics ?? [])];
    this.#lastEventId = options.lastEventId ?? '';
    this.#onReset = options.onReset ?? null;
    this.#refreshMarginMs = options.refreshMarginMs ?? DEFAULT_REFRESH_MARGIN_MS;
    this.#retryMinMs = options.retryMinMs ?? DEFAULT_RETRY_MIN_MS;
    this.#retryMaxMs = options.retryMaxMs ?? DEFAULT_RETRY_MAX_MS;
    this.#withCredentials = Boolean(options.withCredentials);
    this.#names = [...new Set([...EVENT_NAMES, ...(options.events ?? [])])];
  }

  /** The id of the last event received: where the next connection resumes. */
  get lastEventId() {
    return this.#lastEventId;
  }

  /** {@link TidingsStream.CONNECTING}, {@link TidingsStream.OPEN} or {@link TidingsStream.CLOSED}. */
  get readyState() {
    return this.#readyState;
  }

  /**
   * Calls `handler(data, event)` for each event named `name`; answers a
   * function that stops it.
   *
   * @template {keyof TidingsEventMap} K
   * @param {K} name
   * @param {(data: TidingsEventMap[K], event: TidingsEvent<TidingsEventMap[K]>) => void} handler
   * @returns {() => void}
   */
  on(name, handler) {
    const listener = (event) => handler(event.data, event);
    this.addEventListener(name, listener);
    return () => this.removeEventListener(name, listener);
  }

  /** Connects (once; later calls do nothing). @returns {this} */
  start() {
    if (!this.#started && this.#readyState !== TidingsStream.CLOSED) {
      this.#started = true;
      this.#connect();
    }
    return this;
  }

  /** Closes the stream for good. */
  close() {
    this.#readyState = TidingsStream.CLOSED;
    this.#generation += 1;
    this.#drop();
    clearTimeout(this.#refreshTimer);
  }

  /** Connects again now, resuming from the last id (e.g. when the network is back). */
  reconnect() {
    if (this.#readyState === TidingsStream.CLOSED || !this.#started) return;
    this.#connect();
  }

  /** Gets a fresh token from `getToken` now and, if it is fresher, reconnects with it. */
  async refreshToken() {
    if (this.#readyState === TidingsStream.CLOSED || !this.#getToken) return;
    const before = this.#token;
    await this.#freshToken();
    if (this.#token !== before && this.#readyState !== TidingsStream.CLOSED) this.#connect();
  }

  // ------------------------------------------------------------ internals

  /** Closes the current connection, if any, and cancels a pending retry. */
  #drop() {
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    if (this.#source) this.#source.close();
    this.#source = null;
  }

  /**
   * Opens a connection that resumes after the last id, getting a token
   * first if there is none or it is due for refresh. The previous
   * connection is closed first: it delivers nothing more, so the new one,
   * resuming after the last id it delivered, repeats nothing.
   */
  async #connect() {
    this.#drop();
    const generation = ++this.#generation;
    this.#readyState = TidingsStream.CONNECTING;
    if (this.#getToken && (!this.#token || this.#tokenDue(this.#token))) {
      try {
        await this.#freshToken();
      } catch (error) {
        if (generation === this.#generation) this.#refused(error);
        return;
      }
      if (generation !== this.#generation) return;
      const times = tokenTimes(this.#token);
      if (times && typeof times.exp === 'number' && times.exp * 1000 <= Date.now()) {
        this.#refused(new Error('getToken answered a token that has expired'));
        return;
      }
    }
    const url = new URL(this.#url);
    if (this.#token) url.searchParams.set('access_token', this.#token);
    if (this.#lastEventId) url.searchParams.set('last_event_id', this.#lastEventId);
    for (const topic of this.#topics) url.searchParams.append('topic', topic);
    const source = new EventSource(url, { withCredentials: this.#withCredentials });
    this.#source = source;
    source.onopen = () => {
      if (source !== this.#source) return;
      this.#attempts = 0;
      this.#readyState = TidingsStream.OPEN;
      this.dispatchEvent(new Event('open'));
    };
    source.onerror = () => this.#onError(source);
    for (const name of this.#names) {
      source.addEventListener(name, (event) => this.#onEvent(source, /** @type {MessageEvent} */ (event)));
    }
    this.#scheduleRefresh();
  }

  /** @param {EventSource} source @param {MessageEvent} event */
  #onEvent(source, event) {
    if (source !== this.#source) return;
    // Kept before anything can throw: whatever the app does with the event,
    // it was delivered, and a new connection must not send it again. Events
    // without an id of their own carry the stream's last id too, including
    // one set by an id-only frame (which dispatches nothing): a fresh
    // stream's `unread_count` brings the log head it reflects.
    if (event.lastEventId) this.#lastEventId = event.lastEventId;
    let data;
    try {
      data = JSON.parse(event.data);
    } catch {
      console.warn(`tidings: ignored a ${event.type} event whose data is not JSON`);
      return;
    }
    this.dispatchEvent(new TidingsEvent(event.type, data, event.lastEventId));
    if (event.type === 'reset' && this.#onReset) this.#onReset();
  }

  /** @param {EventSource} source */
  #onError(source) {
    if (source !== this.#source) return;
    this.#readyState = TidingsStream.CONNECTING;
    const gaveUp = source.readyState === EventSource.CLOSED;
    // The token ran out (the server ends a stream at `exp`) or is about to:
    // the browser's own retry would use it again and be refused. Refresh
    // and resume now instead.
    if (this.#getToken && this.#token && this.#tokenDue(this.#token)) {
      this.dispatchEvent(new DisconnectEvent({ refused: false }));
      this.#connect();
      return;
    }
    if (!gaveUp) {
      // CONNECTING: the browser retries by itself, with Last-Event-ID.
      this.dispatchEvent(new DisconnectEvent({ refused: false }));
      return;
    }
    this.#refused();
  }

  /** A connection that could not be made: tell the app, then retry after a backoff. */
  async #refused(error) {
    this.#drop();
    this.#readyState = TidingsStream.CONNECTING;
    const generation = this.#generation;
    const event = new DisconnectEvent({ refused: true, error });
    this.dispatchEvent(event);
    await Promise.allSettled(event.pending);
    if (generation !== this.#generation || this.#readyState === TidingsStream.CLOSED) return;
    const ceiling = Math.min(this.#retryMaxMs, this.#retryMinMs * 2 ** this.#attempts);
    this.#attempts += 1;
    const delay = Math.min(this.#retryMaxMs, ceiling * (0.8 + Math.random() * 0.4));
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => {
      if (generation === this.#generation) this.#connect();
    }, delay);
  }

  /** How long before `exp` the token is refreshed: 30 s, or a fifth of its life if shorter. */
  #marginFor(times) {
    const lifetimeMs = typeof times.iat === 'number' ? (times.exp - times.iat) * 1000 : times.exp * 1000 - Date.now();
    return Math.max(0, Math.min(this.#refreshMarginMs, lifetimeMs / 5));
  }

  /** True once `token` is within its refresh margin (or past `exp`). */
  #tokenDue(token) {
    const times = tokenTimes(token);
    if (!times || typeof times.exp !== 'number') return false;
    const left = times.exp * 1000 - Date.now();
    // A token `getToken` already answered, and that was no fresher, is used
    // until it expires: asking again would only get it again.
    if (token === this.#unrefreshable) return left <= 0;
    return left <= this.#marginFor(times);
  }

  /** Arms the timer that refreshes the token before it expires. */
  #scheduleRefresh() {
    clearTimeout(this.#refreshTimer);
    if (!this.#getToken || !this.#token || this.#token === this.#unrefreshable) return;
    const times = tokenTimes(this.#token);
    if (!times || typeof times.exp !== 'number') return;
    const due = times.exp * 1000 - this.#marginFor(times) - Date.now();
    const token = this.#token;
    this.#refreshTimer = setTimeout(() => this.#refreshBeforeExpiry(token), Math.max(0, due));
  }

  async #refreshBeforeExpiry(token) {
    if (this.#readyState === TidingsStream.CLOSED || token !== this.#token) return;
    const generation = this.#generation;
    try {
      await this.#freshToken();
    } catch {
      // Try again shortly while the token lasts; once it has run out, the
      // server ends the stream and the reconnection asks again.
      const times = tokenTimes(token);
      if (times && times.exp * 1000 - Date.now() > this.#retryMinMs) {
        this.#refreshTimer = setTimeout(() => this.#refreshBeforeExpiry(token), this.#retryMinMs);
      }
      return;
    }
    // Reconnected meanwhile (and so with the new token already): done.
    if (this.#readyState === TidingsStream.CLOSED || generation !== this.#generation) return;
    if (this.#token !== token) this.#connect();
  }

  /**
   * Asks `getToken` for a token (one call at a time) and takes it if it is
   * fresher than the one in use. Rejects if `getToken` does.
   */
  #freshToken() {
    if (!this.#tokenRequest) {
      const current = this.#token;
      this.#tokenRequest = (async () => {
        const answer = String(await this.#getToken()).trim();
        if (!answer) throw new Error('getToken answered an empty token');
        const times = tokenTimes(answer);
        const currentTimes = current ? tokenTimes(current) : null;
        const notLater = Boolean(times && currentTimes && typeof times.exp === 'number'
          && typeof currentTimes.exp === 'number' && times.exp <= currentTimes.exp);
        const fresher = !current || (answer !== current && !notLater);
        if (!fresher) {
          this.#unrefreshable = current;
          return;
        }
        this.#token = answer;
        this.#unrefreshable = null;
        this.dispatchEvent(new TidingsEvent('token', answer, ''));
      })().finally(() => {
        this.#tokenRequest = null;
      });
    }
    return this.#tokenRequest;
  }
}
