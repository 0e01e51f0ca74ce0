/*
 * Tidings notification center and chat: plain ES2020, no framework, no build step.
 *
 * How it is put together, top to bottom:
 *
 *   state       everything the page knows: the token and its claims, the
 *               notifications by id, the unread count, the stream.
 *   token       reading the token from `#token=` or localStorage, decoding
 *               the JWT payload (no verification: the server does that).
 *   api         fetch with the bearer token; error bodies become toasts.
 *   store       merging notifications that come from the stream and REST,
 *               always by id; deleted ids are remembered so that a slow REST
 *               page cannot bring them back.
 *   stream      one EventSource on /v1/stream. The browser reconnects on
 *               its own (sending Last-Event-ID); when it gives up (CLOSED)
 *               we open a new one with `last_event_id`, with backoff.
 *   render      the header, the badge and the panel. Renders are batched
 *               per animation frame; list items are kept by id and updated
 *               in place. User data only ever goes in via textContent.
 *   actions     what the buttons do (optimistic, undone on error).
 *   preferences the gear's panel: which types reach the user, on which
 *               channels. Saved per change with PUT, one request at a time
 *               per type, reverted to the server's last answer on error.
 *   chat        conversations and messages beside the bell: loaded over
 *               REST once the stream is open (the stream carries no chat
 *               history), then kept current by its chat events, merged by
 *               id. Own messages show at once as "pending", keyed by their
 *               client_message_id, so that the POST answer, the stream's
 *               echo and a retry all settle the same entry; a retry re-sends
 *               the same id and the server stores it once. Typing, read
 *               marks (sent when the newest message is on screen) and
 *               presence dots live here too.
 *   hub status  the hub's own figures from the public topic tidings:status,
 *               on an EventSource of its own so that a refused topic (the
 *               server has it off) never touches the main stream. The panel
 *               shows once figures arrive; a refusal leaves it hidden.
 *   boot        wiring it all up.
 */
'use strict';

const TOKEN_KEY = 'tidings_token';
const PAGE_SIZE = 50;
const RETRY_FIRST_MS = 1000;
const RETRY_MAX_MS = 30000;
const CLOCK_TICK_MS = 30000;
const CHAT_BOOT_WAIT_MS = 4000;

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- state

const state = {
  token: null,
  claims: null,
  notifications: new Map(), // String(id) -> notification object
  deleted: new Set(), // String(id)s deleted during this session
  unread: 0,
  nextCursor: undefined, // undefined: first page not loaded yet; null: no more
  filter: 'all',
  source: null, // the current EventSource
  lastEventId: '',
  wasLive: false, // until the first open, "reconnecting" reads "Connecting…"
  retries: 0,
  retryTimer: null,
  // type -> {confirmed, desired, saving, queue}: `confirmed` is the server's
  // last answer, `desired` what the checkboxes show (ahead while saving).
  prefs: new Map(),
  prefsLoaded: false,
  prefsLoading: null, // the GET in flight, if any
  prefsFailed: false,
  chatBootTimer: null,
};

// ---------------------------------------------------------------- token

function tokenFromHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get('token');
  if (token !== null) {
    history.replaceState(null, '', location.pathname + location.search);
  }
  return token ? token.trim() : null;
}

/** The JWT payload, or null when `token` does not look like a JWT. */
function decodeClaims(token) {
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  try {
    const base64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    const padded = base64 + '='.repeat((4 - (base64.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims.sub === 'string' ? claims : null;
  } catch {
    return null;
  }
}

function tokenExpired(claims) {
  return typeof claims.exp === 'number' && claims.exp * 1000 <= Date.now();
}

// ---------------------------------------------------------------- api

class ApiError extends Error {
  constructor(message, status, code, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter; // seconds, from a 429's Retry-After
  }
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.token}` };
  const init = { method, headers };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError('The server cannot be reached.', 0, 'network');
  }
  if (response.status === 204) return null;
  const payload = await response.json().catch(() => null);
  if (!response.ok) {
    const error = payload && payload.error;
    const message = (error && error.message) || `${response.status} ${response.statusText}`;
    const retryAfter = Number.parseInt(response.headers.get('Retry-After') || '', 10);
    throw new ApiError(message, response.status, error && error.code, Number.isNaN(retryAfter) ? undefined : retryAfter);
  }
  return payload;
}

/**
 * Shows what went wrong, after `context` ("Could not save …") if given; a
 * rejected token sends the user back to setup.
 */
function reportError(error, context) {
  if (error instanceof ApiError && error.status === 401) {
    signOut(`The server did not accept this token: ${error.message}`);
    return;
  }
  let message = error.message || String(error);
  if (error instanceof ApiError && error.status === 429) {
    const wait = error.retryAfter > 0 ? `in ${error.retryAfter} s` : 'in a moment';
    message = `Too many changes at once. Try again ${wait}.`;
  }
  showToast(context ? `${context}: ${message}` : message);
}

// ---------------------------------------------------------------- store

const key = (id) => String(id);

/** A notification from the stream: it is the latest state, take it as is. */
function putFromStream(notification) {
  const id = key(notification.id);
  state.deleted.delete(id);
  state.notifications.set(id, notification);
}

/**
 * A notification from a REST page, which may be older than what the stream
 * already told us: never resurrect a deleted one, never mark a read one
 * unread again unless it has changed since (a grouped notification).
 */
function putFromPage(notification) {
  const id = key(notification.id);
  if (state.deleted.has(id)) return;
  const known = state.notifications.get(id);
  if (known && known.read_at && !notification.read_at && known.updated_at >= notification.updated_at) {
    notification = { ...notification, read_at: known.read_at };
  }
  state.notifications.set(id, notification);
}

function markReadLocally(ids, at) {
  for (const id of ids) {
    const known = state.notifications.get(key(id));
    if (known && !known.read_at) {
      state.notifications.set(key(id), { ...known, read_at: at });
    }
  }
}

function removeLocally(id) {
  state.deleted.add(key(id));
  state.notifications.delete(key(id));
}

function isExpired(notification, now) {
  return Boolean(notification.expires_at) && Date.parse(notification.expires_at) <= now;
}

/** When it last had news: a grouped notification rises when it is updated. */
function activityTime(notification) {
  const at = notification.group_key ? notification.updated_at : notification.created_at;
  return Date.parse(at) || 0;
}

function newestFirst(a, b) {
  return activityTime(b) - activityTime(a) || Number(b.id) - Number(a.id) || key(b.id).localeCompare(key(a.id));
}

function visibleNotifications() {
  const now = Date.now();
  return [...state.notifications.values()]
    .filter((n) => !isExpired(n, now))
    .filter((n) => state.filter === 'all' || !n.read_at)
    .sort(newestFirst);
}

async function loadPage(cursor) {
  let url = `/v1/notifications?status=all&limit=${PAGE_SIZE}`;
  if (cursor) url += `&cursor=${encodeURIComponent(cursor)}`;
  const page = await api('GET', url);
  page.items.forEach(putFromPage);
  state.nextCursor = page.next_cursor || null;
  scheduleRender();
}

// ---------------------------------------------------------------- stream

const STREAM_EVENTS = {
  notification(data) {
    putFromStream(data);
    if (state.prefsLoaded && !state.prefs.has(data.type)) {
      state.prefsLoaded = false; // a new type: list it the next time, or now if open
      if (!$('preferences-panel').hidden) loadPreferences();
    }
  },
  'notification.read'(data) {
    markReadLocally(data.ids, new Date().toISOString());
  },
  'notification.deleted'(data) {
    removeLocally(data.id);
  },
  unread_count(data) {
    state.unread = data.count;
  },
  reset() {
    state.notifications.clear();
    state.deleted.clear();
    state.nextCursor = undefined;
    loadPage(null).catch(reportError);
    loadChat();
  },
};

function connect() {
  clearTimeout(state.retryTimer);
  if (state.source) state.source.close();
  let url = `/v1/stream?access_token=${encodeURIComponent(state.token)}`;
  if (state.lastEventId) url += `&last_event_id=${encodeURIComponent(state.lastEventId)}`;
  const source = new EventSource(url);
  state.source = source;
  source.onopen = () => {
    state.retries = 0;
    const first = !state.wasLive;
    state.wasLive = true;
    setConnection('live');
    onChatStreamOpen(first);
  };
  source.onerror = () => onStreamError(source);
  for (const [name, handle] of [...Object.entries(STREAM_EVENTS), ...Object.entries(CHAT_EVENTS)]) {
    source.addEventListener(name, (event) => onStreamEvent(event, handle));
  }
}

/**
 * The chat's state comes over REST once the stream is open (so nothing
 * falls between the two), and again whenever the stream could not resume:
 * without a resume point it carries no chat history. Presence and typing
 * are not replayed, so they are asked for again on every open.
 */
function onChatStreamOpen(first) {
  clearTimeout(state.chatBootTimer);
  chat.readFailed.clear();
  if (first) setMyStatus(chat.myStatus);
  if (!chat.loaded || !state.lastEventId) loadChat();
  else loadPresence(allKnownUsers());
}

function onStreamEvent(event, handle) {
  if (event.lastEventId) state.lastEventId = event.lastEventId;
  let data;
  try {
    data = JSON.parse(event.data);
  } catch {
    console.warn(`tidings: ignored a ${event.type} event whose data is not JSON`);
    return;
  }
  handle(data);
  scheduleRender();
  scheduleChatRender();
}

function onStreamError(source) {
  if (source !== state.source) return;
  forgetTyping();
  setConnection(navigator.onLine ? 'reconnecting' : 'offline');
  // CONNECTING: the browser is already retrying by itself.
  if (source.readyState === EventSource.CLOSED) {
    scheduleReconnect();
  }
}

/** The browser gave up: find out why, then try again with backoff. */
function scheduleReconnect() {
  if (tokenExpired(state.claims)) {
    signOut('Your token has expired. Open a fresh demo address or paste a new token.');
    return;
  }
  const ceiling = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** state.retries);
  const delay = Math.min(RETRY_MAX_MS, ceiling * (0.8 + Math.random() * 0.4));
  state.retries += 1;
  clearTimeout(state.retryTimer);
  state.retryTimer = setTimeout(probeThenConnect, delay);
}

/** A refused stream says nothing about why; a REST call does. */
async function probeThenConnect() {
  if (!navigator.onLine) return; // the `online` event reconnects
  try {
    await api('GET', '/v1/notifications/unread_count');
  } catch (error) {
    if (error.status === 401) {
      reportError(error);
      return;
    }
  }
  connect();
}

function disconnect() {
  clearTimeout(state.retryTimer);
  if (state.source) state.source.close();
  state.source = null;
}

// ---------------------------------------------------------------- render

let listQueued = false;

/** The badge (and tab title) at once, even in a background tab; the list once per frame. */
function scheduleRender() {
  renderBadge();
  if (listQueued) return;
  listQueued = true;
  requestAnimationFrame(() => {
    listQueued = false;
    renderList();
  });
}

const CONNECTION_LABELS = { live: 'Live', reconnecting: 'Reconnecting…', offline: 'Offline' };

function setConnection(connection) {
  const element = $('connection-state');
  element.dataset.state = connection;
  const first = connection === 'reconnecting' && !state.wasLive;
  element.querySelector('.connection-label').textContent = first ? 'Connecting…' : CONNECTION_LABELS[connection];
}

function renderBadge() {
  const badge = $('unread-badge');
  badge.textContent = String(state.unread);
  badge.hidden = state.unread <= 0;
  $('bell').setAttribute('aria-label', state.unread > 0 ? `Notifications, ${state.unread} unread` : 'Notifications');
  document.title = state.unread > 0 ? `(${state.unread}) Tidings` : 'Tidings';
}

function renderList() {
  const list = $('notification-list');
  const items = visibleNotifications();
  const existing = new Map([...list.children].map((item) => [item.dataset.id, item]));
  const wanted = new Set(items.map((n) => key(n.id)));
  for (const [id, item] of existing) {
    if (!wanted.has(id)) item.remove();
  }
  items.forEach((notification, index) => {
    const item = existing.get(key(notification.id)) || createItem(notification);
    fillItem(item, notification);
    // Moving only what is out of place keeps focus and hover where they are.
    if (list.children[index] !== item) list.insertBefore(item, list.children[index] || null);
  });

  const loaded = state.nextCursor !== undefined;
  $('empty-state').hidden = items.length > 0 || !loaded;
  $('empty-hint').textContent = state.filter === 'unread' && state.notifications.size > 0
    ? 'Nothing unread. Switch to All to see earlier ones.'
    : 'New notifications appear here the moment they are published.';
  $('load-more').hidden = !state.nextCursor;
  $('mark-all-read').disabled = state.unread <= 0 && !items.some((n) => !n.read_at);
}

function make(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** The skeleton of one item; `fillItem` puts the notification in it. */
function createItem(notification) {
  const item = make('li', 'notification');
  item.dataset.id = key(notification.id);

  const open = make('button', 'notification-main');
  open.type = 'button';
  const meta = make('span', 'notification-meta');
  meta.append(make('span', 'notification-type'), make('span', 'notification-updates'), make('time', 'notification-time'));
  open.append(meta, make('span', 'notification-title'), make('span', 'notification-body'));
  open.addEventListener('click', () => openNotification(item.dataset.id));

  const actions = make('span', 'notification-actions');
  const read = make('button', 'icon-button mark-read', '✓');
  read.type = 'button';
  read.title = 'Mark read';
  read.setAttribute('aria-label', 'Mark read');
  read.addEventListener('click', () => markRead(item.dataset.id));
  const remove = make('button', 'icon-button delete', '×');
  remove.type = 'button';
  remove.title = 'Delete';
  remove.setAttribute('aria-label', 'Delete');
  remove.addEventListener('click', () => deleteNotification(item.dataset.id));
  actions.append(read, remove);

  // A single notification has a dot while unread; a group shows a stack
  // with its count ("4 updates" in the meta line says it in words).
  const lead = make('span', 'notification-lead');
  lead.setAttribute('aria-hidden', 'true');
  lead.append(make('span', 'unread-dot'), make('span', 'notification-count'));
  item.addEventListener('animationend', () => item.classList.remove('bumped'));
  item.append(lead, open, actions);
  return item;
}

function fillItem(item, notification) {
  const count = Number(notification.count) > 1 ? Number(notification.count) : 1;
  const previous = Number(item.dataset.count || count);
  // A group that grew while shown: flash it once so the eye finds it on top.
  if (count > previous) item.classList.add('bumped');
  item.dataset.count = String(count);
  item.classList.toggle('grouped', count > 1);
  item.classList.toggle('unread', !notification.read_at);
  item.classList.toggle('actionable', Boolean(safeUrl(notification.action_url)));
  item.querySelector('.notification-type').textContent = notification.type;
  item.querySelector('.notification-count').textContent = count > 1 ? String(count) : '';
  const updates = item.querySelector('.notification-updates');
  updates.textContent = count > 1 ? `${count} updates` : '';
  updates.hidden = count <= 1;
  const time = item.querySelector('.notification-time');
  const at = notification.group_key ? notification.updated_at : notification.created_at;
  time.dateTime = at;
  time.textContent = relativeTime(at);
  time.title = count > 1
    ? `Last update ${new Date(at).toLocaleString()}, first ${new Date(notification.created_at).toLocaleString()}`
    : new Date(at).toLocaleString();
  item.querySelector('.notification-title').textContent = notification.title;
  const body = item.querySelector('.notification-body');
  body.textContent = notification.body || '';
  body.hidden = !notification.body;
  item.querySelector('.mark-read').hidden = Boolean(notification.read_at);
}

function relativeTime(iso) {
  const then = new Date(iso);
  const now = new Date();
  const seconds = Math.max(0, (now - then) / 1000);
  if (Number.isNaN(seconds)) return '';
  if (seconds < 45) return 'just now';
  if (seconds < 3600) return `${Math.max(1, Math.floor(seconds / 60))} min ago`;
  const days = calendarDaysBetween(then, now);
  if (days <= 0) return `${Math.floor(seconds / 3600)} h ago`;
  if (days === 1) return 'yesterday';
  if (days < 7) return `${days} days ago`;
  return then.toLocaleDateString(undefined, { day: 'numeric', month: 'short', year: 'numeric' });
}

/** Local midnights crossed from `a` to `b` (rounded, for daylight saving days). */
function calendarDaysBetween(a, b) {
  const midnight = (date) => new Date(date.getFullYear(), date.getMonth(), date.getDate());
  return Math.round((midnight(b) - midnight(a)) / 86400000);
}

function expiryText(claims) {
  if (typeof claims.exp !== 'number') return 'token does not expire';
  const seconds = claims.exp - Date.now() / 1000;
  if (seconds <= 0) return 'token expired';
  if (seconds < 3600) return `token expires in ${Math.ceil(seconds / 60)} min`;
  if (seconds < 2 * 86400) return `token expires in ${Math.round(seconds / 3600)} h`;
  return `token expires in ${Math.round(seconds / 86400)} days`;
}

function renderSession() {
  $('user-id').textContent = state.claims.sub;
  const expiry = $('token-expiry');
  expiry.textContent = expiryText(state.claims);
  expiry.title = typeof state.claims.exp === 'number' ? new Date(state.claims.exp * 1000).toLocaleString() : '';
  $('try-user').textContent = state.claims.sub;
  $('try-command').textContent = curlCommand(state.claims.sub);
}

/** The publish command for this user, quoted for a POSIX shell. */
function curlCommand(user) {
  const body = JSON.stringify({ user_id: user, type: 'demo', title: 'Hello', body: 'It works' });
  const quoted = `'${body.replace(/'/g, `'\\''`)}'`;
  return [
    `curl -X POST ${location.origin}/v1/notifications \\`,
    `  -H "Authorization: Bearer $PUBLISH_TOKEN" \\`,
    `  -H 'Content-Type: application/json' \\`,
    `  -d ${quoted}`,
  ].join('\n');
}

let toastTimer = null;

function showToast(message) {
  const toast = $('toast');
  toast.textContent = message;
  toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { toast.hidden = true; }, 5000);
}

// ---------------------------------------------------------------- actions

/**
 * Optimistic update: `apply` changes the state at once and returns how to
 * undo that change, which runs if `request` fails. Either way the next
 * `unread_count` event sets the badge straight.
 */
async function optimistic(apply, request) {
  const undo = apply();
  scheduleRender();
  try {
    await request();
  } catch (error) {
    undo();
    scheduleRender();
    reportError(error);
  }
}

/** Marks `ids` read here; returns how to mark them unread again. */
function markReadOptimistically(ids) {
  const at = new Date().toISOString();
  const changed = ids.filter((id) => {
    const known = state.notifications.get(key(id));
    return known && !known.read_at;
  });
  markReadLocally(changed, at);
  const unreadBefore = state.unread;
  state.unread = Math.max(0, state.unread - changed.length);
  return () => {
    for (const id of changed) {
      const known = state.notifications.get(key(id));
      if (known && known.read_at === at) state.notifications.set(key(id), { ...known, read_at: null });
    }
    state.unread = unreadBefore;
  };
}

function markRead(id) {
  optimistic(() => markReadOptimistically([id]),
    () => api('POST', `/v1/notifications/${encodeURIComponent(id)}/read`));
}

function markAllRead() {
  optimistic(() => {
    const undo = markReadOptimistically([...state.notifications.keys()]);
    state.unread = 0;
    return undo;
  }, () => api('POST', '/v1/notifications/read_all', {}));
}

function deleteNotification(id) {
  const known = state.notifications.get(id);
  if (!known) return;
  optimistic(() => {
    removeLocally(id);
    if (!known.read_at) state.unread = Math.max(0, state.unread - 1);
    return () => {
      state.deleted.delete(id);
      if (!state.notifications.has(id)) state.notifications.set(id, known);
      if (!known.read_at) state.unread += 1;
    };
  }, () => api('DELETE', `/v1/notifications/${encodeURIComponent(id)}`));
}

/** Records the click (which also marks it read), then follows its link. */
async function openNotification(id) {
  const known = state.notifications.get(id);
  if (!known) return;
  const target = safeUrl(known.action_url);
  markReadOptimistically([id]);
  scheduleRender();
  try {
    await api('POST', `/v1/notifications/${encodeURIComponent(id)}/click`);
  } catch (error) {
    reportError(error);
  }
  if (target) location.assign(target);
}

/** `raw` as an absolute URL if it is http(s), else null (no javascript:). */
function safeUrl(raw) {
  if (!raw) return null;
  try {
    const url = new URL(raw, location.href);
    return url.protocol === 'http:' || url.protocol === 'https:' ? url.href : null;
  } catch {
    return null;
  }
}

function togglePanel(open) {
  const panel = $('notification-panel');
  const show = open === undefined ? panel.hidden : open;
  panel.hidden = !show;
  $('bell').setAttribute('aria-expanded', String(show));
  if (show) {
    togglePreferences(false);
    scheduleRender();
  }
}

function setFilter(filter) {
  state.filter = filter;
  for (const option of document.querySelectorAll('.filter-option')) {
    option.setAttribute('aria-pressed', String(option.dataset.filter === filter));
  }
  scheduleRender();
}

async function loadMore() {
  const button = $('load-more');
  button.disabled = true;
  try {
    await loadPage(state.nextCursor);
  } catch (error) {
    reportError(error);
  } finally {
    button.disabled = false;
  }
}

async function copyCommand() {
  const button = $('copy-command');
  try {
    await navigator.clipboard.writeText($('try-command').textContent);
    button.textContent = 'Copied';
  } catch {
    getSelection().selectAllChildren($('try-command'));
    button.textContent = 'Press Ctrl+C';
  }
  setTimeout(() => { button.textContent = 'Copy'; }, 2000);
}

// ---------------------------------------------------------------- preferences

const TYPE_PATTERN = /^[a-z0-9_.-]{1,50}$/;
const CHANNELS = ['web', 'email', 'push'];
const FIELD_LABELS = {
  enabled: (type) => `Receive ${type}`,
  web: (type) => `${type} on the web`,
  email: (type) => `${type} by email (coming soon)`,
  push: (type) => `${type} by push (coming soon)`,
};

/** A preference as the page keeps it: every channel present, booleans only. */
function normalizePreference(raw) {
  const channels = raw.channels || {};
  return {
    type: raw.type,
    enabled: Boolean(raw.enabled),
    channels: { web: Boolean(channels.web), email: Boolean(channels.email), push: Boolean(channels.push) },
  };
}

function samePreference(a, b) {
  return a.enabled === b.enabled && CHANNELS.every((channel) => a.channels[channel] === b.channels[channel]);
}

function putPreference(preference) {
  const known = state.prefs.get(preference.type);
  if (!known) {
    state.prefs.set(preference.type, { confirmed: preference, desired: preference, saving: 0, queue: Promise.resolve() });
    return;
  }
  known.confirmed = preference;
  // A change still being saved wins over what the server said before it.
  if (known.saving === 0) known.desired = preference;
}

async function loadPreferences() {
  if (state.prefsLoading) return state.prefsLoading;
  const token = state.token;
  state.prefsLoading = (async () => {
    try {
      const list = await api('GET', '/v1/preferences');
      if (token !== state.token) return;
      list.map(normalizePreference).forEach(putPreference);
      state.prefsLoaded = true;
      state.prefsFailed = false;
    } catch (error) {
      if (token !== state.token) return;
      state.prefsFailed = true;
      reportError(error, 'Could not load preferences');
    } finally {
      if (token === state.token) state.prefsLoading = null;
      renderPreferences();
    }
  })();
  renderPreferences();
  return state.prefsLoading;
}

/**
 * Saves the type's checkboxes as they are now. Requests for one type go one
 * at a time, so the last change is the one that sticks; a failure puts back
 * what the server last confirmed and says why.
 */
function savePreference(type) {
  const entry = state.prefs.get(type);
  entry.saving += 1;
  entry.queue = entry.queue.then(async () => {
    const sent = entry.desired;
    if (samePreference(sent, entry.confirmed)) return; // toggled back before its turn
    try {
      const answer = await api('PUT', `/v1/preferences/${encodeURIComponent(type)}`, {
        enabled: sent.enabled,
        channels: { ...sent.channels },
      });
      entry.confirmed = normalizePreference(answer);
      if (entry.desired === sent) entry.desired = entry.confirmed;
    } catch (error) {
      entry.desired = entry.confirmed;
      reportError(error, `Could not save ${type}`);
    }
  }).finally(() => {
    entry.saving -= 1;
    renderPreferences();
  });
  renderPreferences();
}

function onPreferenceChange(event) {
  const input = event.target;
  if (!(input instanceof HTMLInputElement) || !input.dataset.type) return;
  const entry = state.prefs.get(input.dataset.type);
  if (!entry) return;
  const field = input.dataset.field;
  const desired = field === 'enabled'
    ? { ...entry.desired, enabled: input.checked }
    : { ...entry.desired, channels: { ...entry.desired.channels, [field]: input.checked } };
  entry.desired = desired;
  savePreference(input.dataset.type);
}

async function addPreferenceType(event) {
  event.preventDefault();
  const input = $('preferences-add-type');
  const type = input.value.trim();
  if (!TYPE_PATTERN.test(type)) {
    showToast('A type is 1-50 characters of a-z, 0-9, _, . and -.');
    input.focus();
    return;
  }
  if (!state.prefs.has(type)) {
    const button = $('preferences-add-button');
    button.disabled = true;
    try {
      // No channels: the server fills in the operator's defaults.
      putPreference(normalizePreference(await api('PUT', `/v1/preferences/${encodeURIComponent(type)}`, { enabled: true })));
    } catch (error) {
      reportError(error, `Could not add ${type}`);
      return;
    } finally {
      button.disabled = false;
    }
  }
  input.value = '';
  renderPreferences();
  const toggle = $('preferences-list').querySelector(`input[data-field="enabled"][data-type="${CSS.escape(type)}"]`);
  if (toggle) toggle.focus();
}

function preferenceStatus(entry) {
  if (entry.saving > 0) return 'Saving…';
  const { enabled, channels } = entry.desired;
  if (!enabled) return 'Off: not delivered';
  if (!channels.web) return 'Web off: reaches you nowhere yet';
  return 'On, delivered here';
}

function createPreferenceRow(type) {
  const row = make('tr', 'pref');
  row.dataset.type = type;
  const head = make('th', 'pref-type');
  head.scope = 'row';
  head.append(make('span', 'pref-name', type), make('span', 'pref-status'));
  row.append(head);
  for (const field of ['enabled', ...CHANNELS]) {
    const cell = make('td', `pref-cell pref-${field}`);
    const input = document.createElement('input');
    input.type = 'checkbox';
    input.dataset.type = type;
    input.dataset.field = field;
    input.setAttribute('aria-label', FIELD_LABELS[field](type));
    if (field === 'enabled') {
      input.className = 'switch';
      input.setAttribute('role', 'switch');
    } else {
      input.className = 'channel';
    }
    input.setAttribute('aria-describedby', `pref-status-${type}`);
    cell.append(input);
    row.append(cell);
  }
  head.querySelector('.pref-status').id = `pref-status-${type}`;
  return row;
}

function renderPreferences() {
  const list = $('preferences-list');
  const types = [...state.prefs.keys()].sort();
  const existing = new Map([...list.children].map((row) => [row.dataset.type, row]));
  types.forEach((type, index) => {
    const entry = state.prefs.get(type);
    const row = existing.get(type) || createPreferenceRow(type);
    const { enabled, channels } = entry.desired;
    row.classList.toggle('off', !enabled);
    row.classList.toggle('nowhere', enabled && !channels.web);
    row.classList.toggle('saving', entry.saving > 0);
    row.setAttribute('aria-busy', String(entry.saving > 0));
    row.querySelector('.pref-status').textContent = preferenceStatus(entry);
    for (const input of row.querySelectorAll('input')) {
      const field = input.dataset.field;
      input.checked = field === 'enabled' ? enabled : channels[field];
    }
    if (list.children[index] !== row) list.insertBefore(row, list.children[index] || null);
  });

  const loading = Boolean(state.prefsLoading) && !state.prefsLoaded;
  $('preferences-table').hidden = types.length === 0;
  $('preferences-empty').hidden = types.length > 0;
  $('preferences-empty-title').textContent = loading ? 'Loading…'
    : state.prefsFailed ? 'Could not load your preferences' : 'No types yet';
  $('preferences-empty-hint').textContent = state.prefsFailed
    ? 'Close and open this panel to try again.'
    : 'A type shows up here once you receive it, or add one below.';
  $('preferences-empty-hint').hidden = loading;
}

function togglePreferences(open) {
  const panel = $('preferences-panel');
  const show = open === undefined ? panel.hidden : open;
  panel.hidden = !show;
  $('open-preferences').setAttribute('aria-expanded', String(show));
  if (show) {
    togglePanel(false);
    renderPreferences();
    loadPreferences();
  }
}

// ---------------------------------------------------------------- chat

const CHAT_PAGE_SIZE = 50;
const TYPING_RENEW_MS = 3000; // the server forgets "typing" after 5 s
const TYPING_STALE_MS = 7000; // if its "stopped" never reaches us
const AT_BOTTOM_PX = 48;
const PRESENCE_BATCH = 500;
const GROUP_WINDOW_MS = 5 * 60 * 1000;
const SELECTED_KEY = 'tidings_chat_selected'; // + ':' + the user
const PRESENCE_LABELS = { online: 'online', away: 'away', busy: 'busy', offline: 'offline', unknown: 'status unknown' };

/**
 * Everything the chat knows. Messages live per conversation in a "thread":
 * sent ones by id, and the ones still on their way by client_message_id,
 * so that the answer, the stream's echo and a retry all land on one entry.
 */
function freshChat() {
  return {
    conversations: new Map(), // key(id) -> conversation
    loaded: false,
    loading: null, // the list GET in flight
    reloadAgain: false, // a reset came while loading
    touchedWhileLoading: new Set(), // ids the stream changed during a load
    failed: false,
    selected: null, // key(id) of the open conversation
    threads: new Map(), // key(conversation id) -> thread
    typing: new Map(), // key(conversation id) -> Map(user id -> stale timer)
    presence: new Map(), // user id -> {status, last_seen_at}
    readSent: new Map(), // key(conversation id) -> newest message id we marked read
    drafts: new Map(), // key(conversation id) -> what the composer held when we left it
    readFailed: new Map(), // key(conversation id) -> message id whose read mark failed: not again until reconnected
    myTyping: null, // {conversation, sentAt}: we told the server we are typing
    myStatus: 'online',
    atBottom: true,
    forceScroll: false, // the next render scrolls to the newest message
    anchorOlder: false, // the next render keeps the view where it was (older loaded)
    renderedConversation: null,
    renderedNewest: null,
    leaveArmed: null,
  };
}

let chat = freshChat();

const me = () => (state.claims ? state.claims.sub : '');

function threadFor(conversationId) {
  const id = key(conversationId);
  let thread = chat.threads.get(id);
  if (!thread) {
    thread = {
      messages: new Map(), // key(message id) -> message
      pending: new Map(), // client_message_id -> pending message
      nextCursor: undefined, // undefined: newest page not loaded; null: no older
      loading: null,
      marks: new Map(), // other member -> newest message id they read
    };
    chat.threads.set(id, thread);
  }
  return thread;
}

function newClientId() {
  if (crypto.randomUUID) return crypto.randomUUID(); // secure contexts only
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

// ------------------------------------------------ chat: store

/** Which of two versions of a message is the later: deletion and edits win. */
function laterMessage(known, incoming) {
  if (!known) return incoming;
  if (known.deleted_at && !incoming.deleted_at) return known;
  if (!known.deleted_at && incoming.deleted_at) return incoming;
  if ((known.edited_at || '') > (incoming.edited_at || '')) return known;
  return incoming;
}

/** A message from anywhere (stream, page, POST answer); true if it is new here. */
function acceptMessage(message) {
  const thread = threadFor(message.conversation_id);
  const id = key(message.id);
  const known = thread.messages.get(id);
  thread.messages.set(id, laterMessage(known, message));
  if (message.sender_id === me() && message.client_message_id) {
    thread.pending.delete(message.client_message_id);
  }
  const conversation = chat.conversations.get(key(message.conversation_id));
  if (conversation) {
    const last = conversation.last_message;
    if (!last || Number(message.id) > Number(last.id)) conversation.last_message = message;
    else if (Number(message.id) === Number(last.id)) conversation.last_message = laterMessage(last, message);
  }
  return !known;
}

function upsertConversation(conversation) {
  const id = key(conversation.id);
  const known = chat.conversations.get(id);
  const merged = { ...conversation };
  if (known && known.last_message && (!merged.last_message || Number(known.last_message.id) > Number(merged.last_message.id))) {
    merged.last_message = known.last_message;
  }
  chat.conversations.set(id, merged);
  if (chat.loading) chat.touchedWhileLoading.add(id);
  return merged;
}

function removeConversation(id) {
  id = key(id);
  chat.conversations.delete(id);
  chat.threads.delete(id);
  chat.typing.delete(id);
  chat.readSent.delete(id);
  if (chat.loading) chat.touchedWhileLoading.add(id);
  if (chat.selected === id) selectConversation(null);
}

function otherMembers(conversation) {
  return conversation.members.filter((member) => member !== me());
}

function conversationName(conversation) {
  if (conversation.title) return conversation.title;
  const others = otherMembers(conversation);
  return others.length ? others.join(', ') : 'Just you';
}

function activityOf(conversation) {
  const at = conversation.last_message ? conversation.last_message.created_at : conversation.created_at;
  return Date.parse(at) || 0;
}

function newestMessageId(thread) {
  let newest = 0;
  for (const message of thread.messages.values()) newest = Math.max(newest, Number(message.id));
  return newest;
}

/** The newest message id any other member has read, as far as we heard. */
function othersReadUpTo(thread) {
  let newest = 0;
  for (const [user, id] of thread.marks) if (user !== me()) newest = Math.max(newest, id);
  return newest;
}

// ------------------------------------------------ chat: loading

/** The conversation list (on start, after a reset or a reconnect without resume point). */
function loadChat() {
  if (chat.loading) {
    chat.reloadAgain = true;
    return chat.loading;
  }
  const token = state.token;
  const known = new Set(chat.conversations.keys());
  chat.touchedWhileLoading = new Set();
  chat.loading = (async () => {
    try {
      const list = await api('GET', '/v1/conversations');
      if (token !== state.token) return;
      const listed = new Set();
      for (const conversation of list) {
        upsertConversation(conversation);
        listed.add(key(conversation.id));
      }
      // Left meanwhile (from another tab, say): gone unless the stream just said otherwise.
      for (const id of known) {
        if (!listed.has(id) && !chat.touchedWhileLoading.has(id)) removeConversation(id);
      }
      chat.loaded = true;
      chat.failed = false;
      // Histories may have moved on: reload the open one, forget the others.
      for (const [id, thread] of chat.threads) {
        if (id === chat.selected) continue;
        thread.messages.clear();
        thread.nextCursor = undefined;
      }
      if (chat.selected && !chat.conversations.has(chat.selected)) selectConversation(null);
      if (chat.selected) loadNewest(chat.selected);
      loadPresence(allKnownUsers());
    } catch (error) {
      if (token !== state.token) return;
      chat.failed = true;
      reportError(error, 'Could not load conversations');
    } finally {
      if (token === state.token) {
        chat.loading = null;
        if (chat.reloadAgain) {
          chat.reloadAgain = false;
          loadChat();
        }
      }
      scheduleChatRender();
    }
  })();
  scheduleChatRender();
  return chat.loading;
}

/**
 * The newest page of a conversation, merged into what we have. If it does
 * not reach back to what we had (many messages while away), what we had is
 * dropped so that "load older" fills the gap instead of skipping it.
 */
async function loadNewest(conversationId) {
  const id = key(conversationId);
  const thread = threadFor(id);
  if (thread.loading) return thread.loading;
  const token = state.token;
  thread.loading = (async () => {
    try {
      const page = await api('GET', `/v1/conversations/${encodeURIComponent(id)}/messages?limit=${CHAT_PAGE_SIZE}`);
      if (token !== state.token || chat.threads.get(id) !== thread) return;
      const oldestInPage = page.items.length ? Number(page.items[page.items.length - 1].id) : 0;
      const gap = page.next_cursor && thread.nextCursor !== undefined && newestMessageId(thread) < oldestInPage;
      if (gap || thread.nextCursor === undefined) {
        if (gap) thread.messages.clear();
        thread.nextCursor = page.next_cursor || null;
      }
      page.items.forEach(acceptMessage);
      if (id === chat.selected) chat.forceScroll = chat.forceScroll || chat.atBottom;
    } catch (error) {
      if (token !== state.token) return;
      if (error.status === 404) removeConversation(id);
      else reportError(error, 'Could not load messages');
    } finally {
      thread.loading = null;
      scheduleChatRender();
    }
  })();
  scheduleChatRender();
  return thread.loading;
}

async function loadOlder() {
  const id = chat.selected;
  if (!id) return;
  const thread = threadFor(id);
  if (!thread.nextCursor || thread.loading) return;
  const token = state.token;
  thread.loading = (async () => {
    try {
      const page = await api('GET', `/v1/conversations/${encodeURIComponent(id)}/messages?limit=${CHAT_PAGE_SIZE}&before=${encodeURIComponent(thread.nextCursor)}`);
      if (token !== state.token || chat.threads.get(id) !== thread) return;
      page.items.forEach(acceptMessage);
      thread.nextCursor = page.next_cursor || null;
      chat.anchorOlder = true;
    } catch (error) {
      reportError(error, 'Could not load older messages');
    } finally {
      thread.loading = null;
      scheduleChatRender();
    }
  })();
  scheduleChatRender();
}

/** One conversation again, e.g. after our own read mark moved in another tab. */
async function refreshConversation(id) {
  try {
    const conversation = await api('GET', `/v1/conversations/${encodeURIComponent(id)}`);
    if (conversation.members.includes(me())) upsertConversation(conversation);
  } catch (error) {
    if (error.status === 404) removeConversation(id);
  }
  scheduleChatRender();
}

function allKnownUsers() {
  const users = new Set([me()]);
  for (const conversation of chat.conversations.values()) conversation.members.forEach((m) => users.add(m));
  return [...users].filter(Boolean);
}

async function loadPresence(userIds) {
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

async function setMyStatus(status) {
  chat.myStatus = status;
  chat.presence.set(me(), { ...(chat.presence.get(me()) || {}), user_id: me(), status });
  scheduleChatRender();
  try {
    await api('POST', '/v1/presence', { status });
  } catch (error) {
    reportError(error, 'Could not set your status');
  }
}

// ------------------------------------------------ chat: stream

const CHAT_EVENTS = {
  conversation(data) {
    if (!data.members.includes(me())) {
      removeConversation(data.id);
      return;
    }
    upsertConversation(data);
    const unknownUsers = data.members.filter((m) => !chat.presence.has(m));
    if (unknownUsers.length) loadPresence(unknownUsers);
  },
  message(data) {
    const id = key(data.conversation_id);
    const conversation = chat.conversations.get(id);
    const last = conversation && conversation.last_message;
    const isNew = acceptMessage(data);
    stopTypingOf(id, data.sender_id);
    if (!conversation) {
      refreshConversation(id);
      return;
    }
    // Counted only once: a message the list already had is in its count.
    if (isNew && data.sender_id !== me() && (!last || Number(data.id) > Number(last.id))) {
      conversation.unread_count = Number(conversation.unread_count || 0) + 1;
    }
  },
  'message.updated'(data) {
    acceptMessage(data);
  },
  'message.deleted'(data) {
    acceptMessage(data);
  },
  read(data) {
    const id = key(data.conversation_id);
    const messageId = Number(data.message_id);
    if (data.user_id === me()) {
      // Another tab (or our own POST) moved our mark.
      chat.readSent.set(id, Math.max(chat.readSent.get(id) || 0, messageId));
      const conversation = chat.conversations.get(id);
      if (!conversation) return;
      if (conversation.last_message && messageId >= Number(conversation.last_message.id)) conversation.unread_count = 0;
      else if (conversation.unread_count > 0) refreshConversation(id);
      return;
    }
    const thread = threadFor(id);
    thread.marks.set(data.user_id, Math.max(thread.marks.get(data.user_id) || 0, messageId));
  },
  typing(data) {
    if (data.user_id === me()) return;
    if (data.is_typing) startTypingOf(key(data.conversation_id), data.user_id);
    else stopTypingOf(key(data.conversation_id), data.user_id);
  },
  presence(data) {
    chat.presence.set(data.user_id, data);
  },
};

function startTypingOf(conversationId, user) {
  let typists = chat.typing.get(conversationId);
  if (!typists) {
    typists = new Map();
    chat.typing.set(conversationId, typists);
  }
  clearTimeout(typists.get(user));
  typists.set(user, setTimeout(() => {
    stopTypingOf(conversationId, user);
    scheduleChatRender();
  }, TYPING_STALE_MS));
}

function stopTypingOf(conversationId, user) {
  const typists = chat.typing.get(conversationId);
  if (!typists || !typists.has(user)) return;
  clearTimeout(typists.get(user));
  typists.delete(user);
}

/** The stream dropped: whoever was typing may have stopped without us hearing it. */
function forgetTyping() {
  for (const typists of chat.typing.values()) for (const timer of typists.values()) clearTimeout(timer);
  chat.typing.clear();
  scheduleChatRender();
}

// ------------------------------------------------ chat: actions

function selectConversation(id) {
  id = id === null ? null : key(id);
  if (chat.selected === id) {
    if (id) $('chat').dataset.view = 'conversation';
    return;
  }
  stopMyTyping();
  const composer = $('composer');
  if (chat.selected) {
    if (composer.value.trim()) chat.drafts.set(chat.selected, composer.value);
    else chat.drafts.delete(chat.selected);
  }
  chat.selected = id;
  chat.forceScroll = true;
  chat.atBottom = true;
  disarmLeave();
  $('add-member').hidden = true;
  $('add-member-toggle').setAttribute('aria-expanded', 'false');
  $('chat').dataset.view = id ? 'conversation' : 'list';
  if (id) {
    sessionStorage.setItem(`${SELECTED_KEY}:${me()}`, id);
    const thread = threadFor(id);
    if (thread.nextCursor === undefined) loadNewest(id);
  } else {
    sessionStorage.removeItem(`${SELECTED_KEY}:${me()}`);
  }
  composer.value = (id && chat.drafts.get(id)) || '';
  onComposerChange();
  scheduleChatRender();
}

async function createConversation(event) {
  event.preventDefault();
  const members = [...new Set($('new-conversation-members').value.split(/[\s,;]+/).map((m) => m.trim()).filter(Boolean))]
    .filter((m) => m !== me());
  if (members.length === 0) {
    showToast('Add at least one other member by their user id.');
    $('new-conversation-members').focus();
    return;
  }
  const title = $('new-conversation-title').value.trim();
  const button = $('new-conversation-create');
  button.disabled = true;
  try {
    const body = title ? { title, members } : { members };
    const conversation = await api('POST', '/v1/conversations', body);
    upsertConversation(conversation);
    chat.loaded = true;
    threadFor(conversation.id).nextCursor = null; // brand new: nothing older to load
    toggleNewConversation(false);
    $('new-conversation').reset();
    selectConversation(conversation.id);
    loadPresence(conversation.members);
    $('composer').focus();
  } catch (error) {
    reportError(error, 'Could not start the conversation');
  } finally {
    button.disabled = false;
  }
}

function toggleNewConversation(open) {
  const form = $('new-conversation');
  const show = open === undefined ? form.hidden : open;
  form.hidden = !show;
  $('new-conversation-toggle').setAttribute('aria-expanded', String(show));
  if (show) $('new-conversation-members').focus();
  scheduleChatRender();
}

async function addMember(event) {
  event.preventDefault();
  const id = chat.selected;
  const input = $('add-member-id');
  const user = input.value.trim();
  if (!id || !user) return;
  const button = $('add-member-submit');
  button.disabled = true;
  try {
    upsertConversation(await api('POST', `/v1/conversations/${encodeURIComponent(id)}/members`, { user_id: user }));
    input.value = '';
    $('add-member').hidden = true;
    $('add-member-toggle').setAttribute('aria-expanded', 'false');
    loadPresence([user]);
  } catch (error) {
    reportError(error, `Could not add ${user}`);
  } finally {
    button.disabled = false;
    scheduleChatRender();
  }
}

function disarmLeave() {
  clearTimeout(chat.leaveArmed);
  chat.leaveArmed = null;
  const button = $('leave-conversation');
  button.textContent = 'Leave';
  button.classList.remove('armed');
}

/** Leave asks once more ("Leave?") before it leaves. */
async function leaveConversation() {
  const id = chat.selected;
  if (!id) return;
  const button = $('leave-conversation');
  if (!chat.leaveArmed) {
    button.textContent = 'Really leave?';
    button.classList.add('armed');
    chat.leaveArmed = setTimeout(disarmLeave, 4000);
    return;
  }
  disarmLeave();
  button.disabled = true;
  try {
    await api('DELETE', `/v1/conversations/${encodeURIComponent(id)}/members/${encodeURIComponent(me())}`);
    removeConversation(id);
  } catch (error) {
    reportError(error, 'Could not leave the conversation');
  } finally {
    button.disabled = false;
    scheduleChatRender();
  }
}

function sendComposer() {
  const id = chat.selected;
  const composer = $('composer');
  const content = composer.value.trim();
  if (!id || !content) return;
  const pending = {
    client_message_id: newClientId(),
    conversation_id: id,
    sender_id: me(),
    content,
    created_at: new Date().toISOString(),
    state: 'pending',
  };
  threadFor(id).pending.set(pending.client_message_id, pending);
  composer.value = '';
  chat.drafts.delete(id);
  onComposerChange();
  stopMyTyping();
  chat.forceScroll = true;
  deliver(pending);
}

/**
 * Sends (or re-sends: same client_message_id, so never twice) a pending
 * message. The answer or the stream's echo, whichever comes first, turns
 * it into a sent one; an error leaves it failed with a retry button.
 */
async function deliver(pending) {
  const id = key(pending.conversation_id);
  const token = state.token;
  pending.state = 'pending';
  scheduleChatRender();
  try {
    const message = await api('POST', `/v1/conversations/${encodeURIComponent(id)}/messages`, {
      content: pending.content,
      client_message_id: pending.client_message_id,
    });
    if (token !== state.token) return;
    CHAT_EVENTS.message(message);
  } catch (error) {
    if (token !== state.token) return;
    const thread = chat.threads.get(id);
    // The echo may have made it "sent" meanwhile: then nothing failed.
    if (thread && thread.pending.get(pending.client_message_id) === pending) {
      pending.state = 'failed';
      pending.error = error.message;
    }
    if (error.status === 401) reportError(error);
    else if (error.status === 404) {
      showToast('This conversation is gone, or you are no longer in it.');
      removeConversation(id);
    }
  }
  scheduleChatRender();
}

function retryMessage(conversationId, clientMessageId) {
  const thread = chat.threads.get(key(conversationId));
  const pending = thread && thread.pending.get(clientMessageId);
  if (pending && pending.state === 'failed') deliver(pending);
}

function onComposerChange() {
  const composer = $('composer');
  const lines = composer.value.split('\n').length;
  composer.rows = Math.min(6, Math.max(1, lines)); // where field-sizing is unknown
  $('send').disabled = !composer.value.trim() || !chat.selected;
}

/** Tells the others we type: at once, then every 3 s while it lasts. */
function onComposerInput() {
  onComposerChange();
  const id = chat.selected;
  if (!id) return;
  if (!$('composer').value.trim()) {
    stopMyTyping();
    return;
  }
  const now = Date.now();
  if (chat.myTyping && chat.myTyping.conversation === id && now - chat.myTyping.sentAt < TYPING_RENEW_MS) return;
  if (chat.myTyping && chat.myTyping.conversation !== id) stopMyTyping();
  chat.myTyping = { conversation: id, sentAt: now };
  sendTyping(id, true);
}

function stopMyTyping() {
  if (!chat.myTyping) return;
  const id = chat.myTyping.conversation;
  chat.myTyping = null;
  sendTyping(id, false);
}

function sendTyping(id, isTyping) {
  api('POST', `/v1/conversations/${encodeURIComponent(id)}/typing`, { is_typing: isTyping }).catch((error) => {
    if (error.status === 401) reportError(error);
    else console.warn(`tidings: typing not sent: ${error.message}`);
  });
}

function onComposerKeydown(event) {
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing && !event.altKey && !event.ctrlKey && !event.metaKey) {
    event.preventDefault();
    sendComposer();
  }
}

/**
 * Marks the open conversation read up to its newest message, when that
 * message is on screen, the page is visible, and the mark would move.
 */
function maybeMarkRead() {
  const id = chat.selected;
  if (!id || document.visibilityState !== 'visible' || !chat.atBottom) return;
  const conversation = chat.conversations.get(id);
  const thread = chat.threads.get(id);
  if (!conversation || !thread || thread.nextCursor === undefined) return;
  if (!(conversation.unread_count > 0)) return;
  const newest = newestMessageId(thread);
  if (!newest || newest <= (chat.readSent.get(id) || 0) || chat.readFailed.get(id) === newest) return;
  chat.readSent.set(id, newest);
  const before = conversation.unread_count;
  conversation.unread_count = 0;
  api('POST', `/v1/conversations/${encodeURIComponent(id)}/read`, { message_id: newest }).then((answer) => {
    const current = chat.conversations.get(id);
    if (current && answer && typeof answer.unread_count === 'number') current.unread_count = answer.unread_count;
    scheduleChatRender();
  }, (error) => {
    if (chat.readSent.get(id) === newest) chat.readSent.delete(id);
    chat.readFailed.set(id, newest); // tried again once the stream is back (or the page comes back into view)
    const current = chat.conversations.get(id);
    if (current && current.unread_count === 0) current.unread_count = before;
    if (error.status === 401) reportError(error);
    else console.warn(`tidings: read mark not sent: ${error.message}`);
    scheduleChatRender();
  });
}

function onMessageScroll() {
  const scroller = $('message-scroll');
  chat.atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight <= AT_BOTTOM_PX;
  if (chat.atBottom) {
    $('jump-latest').hidden = true;
    maybeMarkRead();
    renderConversationList();
  }
}

function jumpToLatest() {
  const scroller = $('message-scroll');
  scroller.scrollTop = scroller.scrollHeight;
  onMessageScroll();
}

// ------------------------------------------------ chat: render

let chatQueued = false;

function scheduleChatRender() {
  if (chatQueued) return;
  chatQueued = true;
  requestAnimationFrame(() => {
    chatQueued = false;
    renderChat();
  });
}

function renderChat() {
  if (!state.token) return;
  renderPane();
  maybeMarkRead(); // before the list, so that its badge never flashes
  renderConversationList();
  $('my-presence-dot').dataset.status = chat.myStatus;
  $('presence-status').value = chat.myStatus;
}

/** A hue (0-7) for a user or conversation, the same every time. */
function hueOf(text) {
  let hash = 0;
  for (const char of text) hash = (hash * 31 + char.codePointAt(0)) >>> 0;
  return String(hash % 8);
}

function presenceOf(user) {
  const entry = chat.presence.get(user);
  return entry && PRESENCE_LABELS[entry.status] ? entry.status : 'unknown';
}

function presenceDot(user) {
  const dot = make('span', 'presence-dot');
  dot.dataset.user = user;
  fillPresenceDot(dot);
  return dot;
}

function fillPresenceDot(dot) {
  dot.dataset.status = presenceOf(dot.dataset.user);
  dot.title = `${dot.dataset.user}: ${presenceWords(dot.dataset.user)}`;
}

function renderConversationList() {
  const list = $('conversation-list');
  const conversations = [...chat.conversations.values()]
    .sort((a, b) => activityOf(b) - activityOf(a) || Number(b.id) - Number(a.id));
  const existing = new Map([...list.children].map((item) => [item.dataset.id, item]));
  const wanted = new Set(conversations.map((c) => key(c.id)));
  for (const [id, item] of existing) if (!wanted.has(id)) item.remove();
  conversations.forEach((conversation, index) => {
    const item = existing.get(key(conversation.id)) || createConversationItem(conversation);
    fillConversationItem(item, conversation);
    if (list.children[index] !== item) list.insertBefore(item, list.children[index] || null);
  });
  const empty = chat.conversations.size === 0;
  $('conversation-empty').hidden = !empty || !$('new-conversation').hidden;
  $('conversation-empty-title').textContent = !chat.loaded && !chat.failed ? 'Loading…'
    : chat.failed ? 'Could not load your conversations' : 'No conversations yet';
  $('conversation-empty-hint').hidden = !chat.loaded && !chat.failed;
  $('conversation-empty-hint').textContent = chat.failed
    ? 'They load again when the connection comes back.'
    : 'Start one with the + button: add someone by their user id.';
}

function createConversationItem(conversation) {
  const item = make('li', 'conversation');
  item.dataset.id = key(conversation.id);
  const open = make('button', 'conversation-open');
  open.type = 'button';
  open.addEventListener('click', () => selectConversation(item.dataset.id));
  const avatar = make('span', 'avatar');
  avatar.setAttribute('aria-hidden', 'true');
  avatar.append(make('span', 'avatar-initial'), make('span', 'avatar-presence'));
  const top = make('span', 'conversation-top');
  top.append(make('span', 'conversation-title'), make('time', 'conversation-time'));
  const bottom = make('span', 'conversation-bottom');
  bottom.append(make('span', 'conversation-preview'), make('span', 'conversation-unread'));
  const text = make('span', 'conversation-text');
  text.append(top, bottom);
  open.append(avatar, text);
  item.append(open);
  return item;
}

function fillConversationItem(item, conversation) {
  const id = key(conversation.id);
  const name = conversationName(conversation);
  const others = otherMembers(conversation);
  const selected = chat.selected === id;
  item.classList.toggle('selected', selected);
  const open = item.querySelector('.conversation-open');
  if (selected) open.setAttribute('aria-current', 'true');
  else open.removeAttribute('aria-current');

  const avatar = item.querySelector('.avatar');
  avatar.dataset.hue = hueOf(conversation.title ? `#${id}` : others[0] || me());
  avatar.classList.toggle('group', others.length > 1);
  item.querySelector('.avatar-initial').textContent = [...(name.trim() || '?')][0].toUpperCase();
  // One dot per other member (the first few), on the avatar's corner.
  const dots = item.querySelector('.avatar-presence');
  const shown = others.slice(0, 3);
  if (dots.children.length !== shown.length || shown.some((user, i) => dots.children[i].dataset.user !== user)) {
    dots.replaceChildren(...shown.map(presenceDot));
  }
  for (const dot of dots.children) fillPresenceDot(dot);

  item.querySelector('.conversation-title').textContent = name;
  item.querySelector('.conversation-title').title = conversation.members.join(', ');
  const time = item.querySelector('.conversation-time');
  const at = conversation.last_message ? conversation.last_message.created_at : conversation.created_at;
  time.dateTime = at;
  time.textContent = shortRelativeTime(at);
  time.title = new Date(at).toLocaleString();

  const preview = item.querySelector('.conversation-preview');
  const last = conversation.last_message;
  let text = 'No messages yet';
  if (last) {
    const who = last.sender_id === me() ? 'You: ' : others.length > 1 ? `${last.sender_id}: ` : '';
    text = who + (last.content === null || last.deleted_at ? 'Message deleted' : last.content.replace(/\s+/g, ' '));
  }
  preview.textContent = text;
  preview.classList.toggle('muted', !last || Boolean(last.deleted_at));

  const unread = Number(conversation.unread_count) || 0;
  const badge = item.querySelector('.conversation-unread');
  badge.textContent = unread > 99 ? '99+' : String(unread);
  badge.hidden = unread <= 0;
  item.classList.toggle('has-unread', unread > 0);
  open.setAttribute('aria-label', `${name}${unread > 0 ? `, ${unread} unread` : ''}: ${text}`);
}

function renderPane() {
  const id = chat.selected;
  const conversation = id ? chat.conversations.get(id) : null;
  $('pane-empty').hidden = Boolean(conversation);
  $('conversation-view').hidden = !conversation;
  if (!conversation) {
    $('typing-indicator').textContent = '';
    delete $('typing-indicator').dataset.active;
    return;
  }
  $('conversation-name').textContent = conversationName(conversation);
  renderMembers(conversation);
  renderMessages(id, conversation);
  renderTyping(id);
}

/**
 * The members under the title, each with a presence dot. With one other
 * member, their status in words instead ("online", "last seen 5 min ago").
 */
function renderMembers(conversation) {
  const list = $('member-list');
  const others = otherMembers(conversation);
  const members = others.length === 1 ? others
    : [...conversation.members].sort((a, b) => (a === me()) - (b === me()) || a.localeCompare(b));
  if (list.children.length !== members.length || members.some((user, i) => list.children[i].dataset.user !== user)) {
    list.replaceChildren(...members.map((user) => {
      const item = make('li', 'member');
      item.dataset.user = user;
      item.append(presenceDot(user), make('span', 'member-name'));
      return item;
    }));
  }
  for (const item of list.children) {
    const user = item.dataset.user;
    fillPresenceDot(item.querySelector('.presence-dot'));
    let text = user === me() ? `${user} (you)` : user;
    if (others.length === 1) {
      const status = presenceWords(user);
      text = conversation.title ? `${user} · ${status}` : status;
    }
    item.querySelector('.member-name').textContent = text;
  }
}

function presenceWords(user) {
  const status = presenceOf(user);
  const entry = chat.presence.get(user);
  if (status === 'offline' && entry && entry.last_seen_at) return `last seen ${relativeTime(entry.last_seen_at)}`;
  return PRESENCE_LABELS[status];
}

/** The thread in display order: sent by id, then what is still on its way. */
function threadItems(thread) {
  const sent = [...thread.messages.values()].sort((a, b) => Number(a.id) - Number(b.id));
  const pending = [...thread.pending.values()].sort((a, b) => a.created_at.localeCompare(b.created_at));
  return [...sent, ...pending];
}

/** Own messages keep one element from "pending" to "sent": keyed by their client id. */
function renderKey(message) {
  return message.sender_id === me() && message.client_message_id ? `c:${message.client_message_id}` : `m:${message.id}`;
}

function renderMessages(id, conversation) {
  const thread = threadFor(id);
  const list = $('message-list');
  const scroller = $('message-scroll');
  if (chat.renderedConversation !== id) {
    list.replaceChildren();
    chat.renderedConversation = id;
    chat.renderedNewest = null;
    $('jump-latest').hidden = true;
  }
  const wasAtBottom = chat.atBottom;
  const previousHeight = scroller.scrollHeight;
  const previousTop = scroller.scrollTop;

  const items = threadItems(thread);
  const readUpTo = othersReadUpTo(thread);
  const existing = new Map([...list.children].map((node) => [node.dataset.key, node]));
  const wanted = new Set(items.map(renderKey));
  for (const [k, node] of existing) if (!wanted.has(k)) node.remove();
  let previous = null;
  items.forEach((message, index) => {
    const k = renderKey(message);
    const node = existing.get(k) || createMessageItem(message, k);
    fillMessageItem(node, message, previous, readUpTo, conversation);
    if (list.children[index] !== node) list.insertBefore(node, list.children[index] || null);
    previous = message;
  });

  const loaded = thread.nextCursor !== undefined;
  $('load-older').hidden = !thread.nextCursor;
  $('load-older').disabled = Boolean(thread.loading);
  $('load-older').textContent = thread.loading && loaded ? 'Loading…' : 'Load older messages';
  const start = $('history-start');
  start.hidden = loaded && Boolean(thread.nextCursor);
  start.textContent = !loaded ? 'Loading messages…'
    : items.length === 0 ? 'No messages yet. Say hello!' : 'This is the beginning of the conversation.';

  const newest = items.length ? renderKey(items[items.length - 1]) : null;
  const grew = newest !== chat.renderedNewest;
  chat.renderedNewest = newest;
  if (chat.forceScroll || (wasAtBottom && !chat.anchorOlder)) {
    scroller.scrollTop = scroller.scrollHeight;
    chat.forceScroll = false;
  } else if (chat.anchorOlder) {
    scroller.scrollTop = previousTop + (scroller.scrollHeight - previousHeight);
  } else if (grew && items.length) {
    $('jump-latest').hidden = false;
  }
  chat.anchorOlder = false;
  chat.atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight <= AT_BOTTOM_PX;
  if (chat.atBottom) $('jump-latest').hidden = true;
}

function createMessageItem(message, renderedKey) {
  const item = make('li', 'message');
  item.dataset.key = renderedKey;
  const bubble = make('div', 'message-bubble');
  const meta = make('span', 'message-meta');
  const status = make('span', 'message-status');
  const retry = make('button', 'message-retry', 'Retry');
  retry.type = 'button';
  retry.addEventListener('click', () => retryMessage(item.dataset.conversation, item.dataset.clientId));
  meta.append(make('span', 'message-edited', 'edited'), make('time', 'message-time'), status, retry);
  bubble.append(make('p', 'message-content'), meta);
  item.append(make('span', 'message-sender'), bubble);
  return item;
}

function fillMessageItem(item, message, previous, readUpTo, conversation) {
  const mine = message.sender_id === me();
  const sent = message.id !== undefined;
  const deleted = sent && (message.content === null || Boolean(message.deleted_at));
  item.classList.toggle('mine', mine);
  item.classList.toggle('deleted', deleted);
  item.dataset.conversation = key(message.conversation_id);
  item.dataset.sender = message.sender_id;
  if (sent) item.dataset.id = key(message.id);
  else delete item.dataset.id;
  if (message.client_message_id) item.dataset.clientId = message.client_message_id;
  // Same sender within a few minutes: one block, the name shown once.
  const continued = Boolean(previous) && previous.sender_id === message.sender_id
    && Date.parse(message.created_at) - Date.parse(previous.created_at) < GROUP_WINDOW_MS;
  item.classList.toggle('continued', continued);
  const sender = item.querySelector('.message-sender');
  sender.textContent = message.sender_id;
  sender.hidden = mine || continued || otherMembers(conversation).length <= 1; // a 1:1 says who
  sender.dataset.hue = hueOf(message.sender_id);

  const content = item.querySelector('.message-content');
  content.textContent = deleted ? 'This message was deleted' : message.content;
  const edited = item.querySelector('.message-edited');
  edited.hidden = !sent || deleted || !message.edited_at;
  if (message.edited_at) edited.title = `Edited ${new Date(message.edited_at).toLocaleString()}`;
  const time = item.querySelector('.message-time');
  time.dateTime = message.created_at;
  time.textContent = clockTime(message.created_at);
  time.title = new Date(message.created_at).toLocaleString();

  const status = item.querySelector('.message-status');
  const retry = item.querySelector('.message-retry');
  if (mine) {
    const messageState = sent ? 'sent' : message.state;
    const read = sent && readUpTo >= Number(message.id);
    item.dataset.state = messageState;
    item.dataset.read = String(read);
    const label = messageState === 'pending' ? 'Sending…' : messageState === 'failed' ? 'Not sent' : read ? 'Read' : 'Sent';
    status.dataset.label = label;
    status.title = messageState === 'failed' && message.error ? `Not sent: ${message.error}` : label;
    status.setAttribute('aria-label', label);
    status.textContent = messageState === 'failed' ? 'Not sent' : '';
    status.hidden = deleted;
    retry.hidden = messageState !== 'failed';
  } else {
    delete item.dataset.state;
    delete item.dataset.read;
    status.hidden = true;
    retry.hidden = true;
  }
}

function renderTyping(id) {
  const typists = [...(chat.typing.get(id) || new Map()).keys()];
  const indicator = $('typing-indicator');
  let text = '';
  if (typists.length === 1) text = `${typists[0]} is typing…`;
  else if (typists.length === 2) text = `${typists[0]} and ${typists[1]} are typing…`;
  else if (typists.length > 2) text = `${typists[0]}, ${typists[1]} and ${typists.length - 2} more are typing…`;
  indicator.textContent = text;
  if (text) indicator.dataset.active = 'true';
  else delete indicator.dataset.active;
}

/** "14:05" today, "Tue 14:05" this week, "3 Mar 14:05" before. */
function clockTime(iso) {
  const then = new Date(iso);
  if (Number.isNaN(then.getTime())) return '';
  const clock = then.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
  const days = calendarDaysBetween(then, new Date());
  if (days <= 0) return clock;
  if (days < 7) return `${then.toLocaleDateString(undefined, { weekday: 'short' })} ${clock}`;
  return `${then.toLocaleDateString(undefined, { day: 'numeric', month: 'short' })} ${clock}`;
}

/** relativeTime, shorter, for the conversation list. */
function shortRelativeTime(iso) {
  const then = new Date(iso);
  const seconds = Math.max(0, (Date.now() - then) / 1000);
  if (Number.isNaN(seconds)) return '';
  if (seconds < 45) return 'now';
  if (seconds < 3600) return `${Math.max(1, Math.floor(seconds / 60))} min`;
  const days = calendarDaysBetween(then, new Date());
  if (days <= 0) return `${Math.floor(seconds / 3600)} h`;
  if (days === 1) return 'yesterday';
  if (days < 7) return then.toLocaleDateString(undefined, { weekday: 'short' });
  return then.toLocaleDateString(undefined, { day: 'numeric', month: 'short' });
}

function startChat() {
  chat = freshChat();
  $('conversation-list').replaceChildren();
  $('message-list').replaceChildren();
  $('new-conversation').hidden = true;
  $('new-conversation-toggle').setAttribute('aria-expanded', 'false');
  $('chat').dataset.view = 'list';
  $('composer').value = '';
  onComposerChange();
  const remembered = sessionStorage.getItem(`${SELECTED_KEY}:${me()}`);
  if (remembered) {
    chat.selected = remembered;
    $('chat').dataset.view = 'conversation';
    threadFor(remembered);
  }
  scheduleChatRender();
}

function stopChat() {
  stopMyTyping();
  forgetTyping();
  disarmLeave();
  chat = freshChat();
}

function wireChat() {
  $('new-conversation-toggle').addEventListener('click', () => toggleNewConversation());
  $('new-conversation-cancel').addEventListener('click', () => toggleNewConversation(false));
  $('new-conversation').addEventListener('submit', createConversation);
  $('presence-status').addEventListener('change', (event) => setMyStatus(event.target.value));
  $('back-to-list').addEventListener('click', () => selectConversation(null));
  $('add-member-toggle').addEventListener('click', () => {
    const form = $('add-member');
    form.hidden = !form.hidden;
    $('add-member-toggle').setAttribute('aria-expanded', String(!form.hidden));
    if (!form.hidden) $('add-member-id').focus();
  });
  $('add-member').addEventListener('submit', addMember);
  $('leave-conversation').addEventListener('click', leaveConversation);
  $('load-older').addEventListener('click', loadOlder);
  $('jump-latest').addEventListener('click', jumpToLatest);
  $('message-scroll').addEventListener('scroll', onMessageScroll, { passive: true });
  const composer = $('composer');
  composer.addEventListener('input', onComposerInput);
  composer.addEventListener('keydown', onComposerKeydown);
  composer.addEventListener('blur', stopMyTyping);
  $('composer-form').addEventListener('submit', (event) => {
    event.preventDefault();
    sendComposer();
    $('composer').focus();
  });
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') {
      chat.readFailed.clear();
      scheduleChatRender();
    } else {
      stopMyTyping();
    }
  });
  window.addEventListener('focus', () => {
    chat.readFailed.clear();
    scheduleChatRender();
  });
  // The composer grows, the window shrinks: whoever read the newest message keeps it in view.
  new ResizeObserver(() => {
    const scroller = $('message-scroll');
    if (chat.atBottom && scroller.clientHeight > 0) scroller.scrollTop = scroller.scrollHeight;
  }).observe($('message-scroll'));
  window.addEventListener('pagehide', stopMyTyping);
}

// ---------------------------------------------------------------- hub status

const STATUS_TOPIC = 'tidings:status';

const hubStatus = {
  source: null, // its own EventSource, or null
  retries: 0,
  timer: null,
};

/**
 * Opens the status stream. Like every stream it also carries the user's own
 * events; only `topic.event` is listened to here. EventSource resumes by
 * itself with Last-Event-ID, and the topic's key means a resume brings only
 * the newest figures.
 */
function connectHubStatus() {
  clearTimeout(hubStatus.timer);
  if (hubStatus.source) hubStatus.source.close();
  const url = `/v1/stream?topic=${encodeURIComponent(STATUS_TOPIC)}&access_token=${encodeURIComponent(state.token)}`;
  const source = new EventSource(url);
  hubStatus.source = source;
  $('hub-status').dataset.state = 'connecting';
  source.onopen = () => {
    if (source !== hubStatus.source) return;
    hubStatus.retries = 0;
    $('hub-status').dataset.state = 'live';
  };
  source.onerror = () => {
    if (source !== hubStatus.source) return;
    $('hub-status').dataset.state = 'reconnecting';
    $('hub-status-state').textContent = 'reconnecting…';
    // CONNECTING: the browser retries by itself. CLOSED: it was refused.
    if (source.readyState === EventSource.CLOSED) {
      source.close();
      hubStatus.source = null;
      probeHubStatus(state.token);
    }
  };
  source.addEventListener('topic.event', (event) => {
    if (source !== hubStatus.source) return;
    try {
      showHubStatus(JSON.parse(event.data));
    } catch (error) {
      console.warn(`tidings: ignored a status event: ${error.message}`);
    }
  });
}

/**
 * A refused stream says nothing about why; the topic's history does. A 403
 * means this server does not publish its status (or not to this token):
 * give up quietly, panel hidden, `data-state="off"`. A 401 is the main
 * stream's business.
 * Anything else is passing: try again with backoff.
 */
async function probeHubStatus(token) {
  try {
    await api('GET', `/v1/topics/${STATUS_TOPIC}/events?limit=1`);
  } catch (error) {
    if (token !== state.token) return;
    if (error.status === 401 || error.status === 403 || error.status === 404) {
      stopHubStatus();
      return;
    }
  }
  if (token !== state.token) return;
  const ceiling = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** hubStatus.retries);
  hubStatus.retries += 1;
  clearTimeout(hubStatus.timer);
  hubStatus.timer = setTimeout(connectHubStatus, ceiling * (0.8 + Math.random() * 0.4));
}

function stopHubStatus() {
  clearTimeout(hubStatus.timer);
  if (hubStatus.source) hubStatus.source.close();
  hubStatus.source = null;
  hubStatus.retries = 0;
  $('hub-status').hidden = true;
  $('hub-status').dataset.state = 'off';
  for (const figure of document.querySelectorAll('#hub-figures [data-figure]')) figure.textContent = '–';
  $('hub-status-state').textContent = '';
}

function showHubStatus(event) {
  if (event.topic !== STATUS_TOPIC || event.type !== 'hub.status' || !event.data) return;
  for (const figure of document.querySelectorAll('#hub-figures [data-figure]')) {
    const value = event.data[figure.dataset.figure];
    if (typeof value !== 'number') continue;
    figure.textContent = figure.dataset.figure === 'uptime_secs' ? durationText(value) : value.toLocaleString();
    figure.title = String(value);
  }
  const at = new Date(event.created_at);
  $('hub-status-state').textContent = Number.isNaN(at.getTime()) ? '' : `as of ${at.toLocaleTimeString()}`;
  $('hub-status').dataset.state = 'live';
  $('hub-status').hidden = false;
}

/** 42 s, 3 min 5 s, 2 h 7 min, 3 d 4 h. */
function durationText(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

// ---------------------------------------------------------------- boot

/** Starts a session with `token`, or shows setup if it is unusable. */
function signIn(token) {
  const claims = decodeClaims(token);
  if (!claims) {
    signOut('That does not look like a Tidings token (a JWT with a "sub" claim).');
    return;
  }
  if (tokenExpired(claims)) {
    signOut('Your token has expired. Open a fresh demo address or paste a new token.');
    return;
  }
  disconnect();
  stopHubStatus();
  if (state.token) stopChat();
  localStorage.setItem(TOKEN_KEY, token);
  Object.assign(state, {
    token,
    claims,
    notifications: new Map(),
    deleted: new Set(),
    unread: 0,
    nextCursor: undefined,
    lastEventId: '',
    wasLive: false,
    retries: 0,
    prefs: new Map(),
    prefsLoaded: false,
    prefsLoading: null,
    prefsFailed: false,
  });
  $('preferences-list').replaceChildren();
  $('setup').hidden = true;
  $('session').hidden = false;
  $('try-it').hidden = false;
  $('chat').hidden = false;
  $('main').dataset.mode = 'session';
  renderSession();
  setConnection(navigator.onLine ? 'reconnecting' : 'offline');
  startChat();
  connect();
  connectHubStatus();
  loadPage(null).catch(reportError);
  // Should the stream not open (too many tabs, say), chat still loads over REST.
  clearTimeout(state.chatBootTimer);
  state.chatBootTimer = setTimeout(() => {
    if (!chat.loaded && !chat.loading) loadChat();
  }, CHAT_BOOT_WAIT_MS);
  scheduleRender();
}

function signOut(reason) {
  disconnect();
  stopHubStatus();
  clearTimeout(state.chatBootTimer);
  if (state.token) stopChat();
  localStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.claims = null;
  togglePanel(false);
  togglePreferences(false);
  $('session').hidden = true;
  $('try-it').hidden = true;
  $('chat').hidden = true;
  $('main').dataset.mode = 'setup';
  $('setup').hidden = false;
  $('setup-reason').textContent = reason || '';
  $('setup-reason').hidden = !reason;
  document.title = 'Tidings';
}

function wireEvents() {
  wireChat();
  $('bell').addEventListener('click', () => togglePanel());
  $('open-preferences').addEventListener('click', () => togglePreferences());
  $('preferences-list').addEventListener('change', onPreferenceChange);
  $('preferences-add').addEventListener('submit', addPreferenceType);
  $('mark-all-read').addEventListener('click', markAllRead);
  $('load-more').addEventListener('click', loadMore);
  $('copy-command').addEventListener('click', copyCommand);
  $('sign-out').addEventListener('click', () => signOut());
  for (const option of document.querySelectorAll('.filter-option')) {
    option.addEventListener('click', () => setFilter(option.dataset.filter));
  }
  $('token-form').addEventListener('submit', (event) => {
    event.preventDefault();
    signIn($('token-input').value.trim());
  });
  document.addEventListener('click', (event) => {
    if (!event.target.closest('.bell-wrap')) togglePanel(false);
    if (!event.target.closest('.prefs-wrap')) togglePreferences(false);
  });
  document.addEventListener('keydown', (event) => {
    if (event.key !== 'Escape') return;
    if (!$('notification-panel').hidden) {
      togglePanel(false);
      $('bell').focus();
    } else if (!$('preferences-panel').hidden) {
      togglePreferences(false);
      $('open-preferences').focus();
    }
  });
  window.addEventListener('offline', () => {
    if (state.token) setConnection('offline');
  });
  window.addEventListener('online', () => {
    if (state.token && (!state.source || state.source.readyState === EventSource.CLOSED)) connect();
    else if (state.token) setConnection(state.source.readyState === EventSource.OPEN ? 'live' : 'reconnecting');
  });
  // A new demo address pasted into this tab only changes the fragment.
  window.addEventListener('hashchange', () => {
    const token = tokenFromHash();
    if (token && token !== state.token) signIn(token);
  });
  // Another tab signed in with a new token or signed out.
  window.addEventListener('storage', (event) => {
    if (event.key !== TOKEN_KEY || event.newValue === state.token) return;
    if (event.newValue) signIn(event.newValue);
    else signOut();
  });
  setInterval(() => {
    if (!state.token) return;
    renderSession();
    scheduleRender();
    scheduleChatRender();
  }, CLOCK_TICK_MS);
}

function boot() {
  wireEvents();
  const token = tokenFromHash() || localStorage.getItem(TOKEN_KEY);
  if (token) signIn(token);
  else signOut();
}

boot();
