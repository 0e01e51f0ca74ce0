/*
 * Tidings notification center: plain ES2020, no framework, no build step.
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
 *   boot        wiring it all up.
 */
'use strict';

const TOKEN_KEY = 'tidings_token';
const PAGE_SIZE = 50;
const RETRY_FIRST_MS = 1000;
const RETRY_MAX_MS = 30000;
const CLOCK_TICK_MS = 30000;

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
    state.wasLive = true;
    setConnection('live');
  };
  source.onerror = () => onStreamError(source);
  for (const [name, handle] of Object.entries(STREAM_EVENTS)) {
    source.addEventListener(name, (event) => onStreamEvent(event, handle));
  }
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
}

function onStreamError(source) {
  if (source !== state.source) return;
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
  renderSession();
  setConnection(navigator.onLine ? 'reconnecting' : 'offline');
  connect();
  loadPage(null).catch(reportError);
  scheduleRender();
}

function signOut(reason) {
  disconnect();
  localStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.claims = null;
  togglePanel(false);
  togglePreferences(false);
  $('session').hidden = true;
  $('try-it').hidden = true;
  $('setup').hidden = false;
  $('setup-reason').textContent = reason || '';
  $('setup-reason').hidden = !reason;
  document.title = 'Tidings';
}

function wireEvents() {
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
  }, CLOCK_TICK_MS);
}

function boot() {
  wireEvents();
  const token = tokenFromHash() || localStorage.getItem(TOKEN_KEY);
  if (token) signIn(token);
  else signOut();
}

boot();
