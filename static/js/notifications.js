/*
 * The notification center: the bell's badge and panel. Notifications from
 * the stream and from REST pages are merged by id; deleted ids are
 * remembered so that a slow REST page cannot bring them back. Renders are
 * batched per animation frame, list items kept by id and updated in place.
 * The buttons act optimistically and undo on error. An unread notification
 * whose email is still waiting (`email_due_at`, in REST pages only) shows
 * an "email pending" mark; after a notification arrives on the stream, the
 * unread page is fetched again (at most once a second) to learn it.
 */

import { $, make, relativeTime, safeUrl } from './dom.js';
import { api, reportError, session } from './session.js';
import { hubHas } from './channels.js';

const PAGE_SIZE = 50;
/** How long after a stream notification the "email pending" marks are fetched. */
const EMAIL_MARKS_DELAY_MS = 1000;

/** What the center knows; `startNotifications` empties it for a new session. */
const state = {
  notifications: new Map(), // String(id) -> notification object
  deleted: new Set(), // String(id)s deleted during this session
  unread: 0,
  nextCursor: undefined, // undefined: first page not loaded yet; null: no more
  filter: 'all',
};

const key = (id) => String(id);

/** Forgets the previous session's notifications. */
export function startNotifications() {
  Object.assign(state, { notifications: new Map(), deleted: new Set(), unread: 0, nextCursor: undefined });
}

// ---------------------------------------------------------------- store

/** A notification from the stream: it is the latest state, take it as is. */
function putFromStream(notification) {
  const id = key(notification.id);
  state.deleted.delete(id);
  const known = state.notifications.get(id);
  // The stream does not say whether an email waits; keep what a page said.
  if (known && known.email_due_at && !('email_due_at' in notification)) {
    notification = { ...notification, email_due_at: known.email_due_at };
  }
  state.notifications.set(id, notification);
  if (!notification.read_at && hubHas('email')) scheduleEmailMarks();
}

let emailMarksTimer = null;

/** Fetches the unread page soon, for its `email_due_at` fields only. */
function scheduleEmailMarks() {
  if (emailMarksTimer) return;
  const token = session.token;
  emailMarksTimer = setTimeout(async () => {
    emailMarksTimer = null;
    try {
      const page = await api('GET', `/v1/notifications?status=unread&limit=${PAGE_SIZE}`);
      if (token !== session.token) return;
      for (const fresh of page.items) {
        const known = state.notifications.get(key(fresh.id));
        if (known) state.notifications.set(key(fresh.id), { ...known, email_due_at: fresh.email_due_at });
      }
      scheduleRender();
    } catch (error) {
      // Only a mark is missing; the next notification tries again.
    }
  }, EMAIL_MARKS_DELAY_MS);
}

/** Whether an email of `notification` is still waiting to go out. */
function emailPending(notification, now = Date.now()) {
  return !notification.read_at && Boolean(notification.email_due_at) && Date.parse(notification.email_due_at) > now;
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

/** One REST page of notifications (the newest with `cursor` null), merged in. */
export async function loadPage(cursor) {
  let url = `/v1/notifications?status=all&limit=${PAGE_SIZE}`;
  if (cursor) url += `&cursor=${encodeURIComponent(cursor)}`;
  const page = await api('GET', url);
  page.items.forEach(putFromPage);
  state.nextCursor = page.next_cursor || null;
  scheduleRender();
}

// ---------------------------------------------------------------- stream

/** The stream's notification events, by name. */
export const NOTIFICATION_EVENTS = {
  notification(data) {
    putFromStream(data);
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
};

/** `reset`: what we have may be stale; start over from the newest page. */
export function resetNotifications() {
  state.notifications.clear();
  state.deleted.clear();
  state.nextCursor = undefined;
  loadPage(null).catch(reportError);
}

// ---------------------------------------------------------------- render

let listQueued = false;

/** The badge (and tab title) at once, even in a background tab; the list once per frame. */
export function scheduleRender() {
  renderBadge();
  if (listQueued) return;
  listQueued = true;
  requestAnimationFrame(() => {
    listQueued = false;
    renderList();
  });
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

/** The skeleton of one item; `fillItem` puts the notification in it. */
function createItem(notification) {
  const item = make('li', 'notification');
  item.dataset.id = key(notification.id);

  const open = make('button', 'notification-main');
  open.type = 'button';
  const meta = make('span', 'notification-meta');
  meta.append(make('span', 'notification-type'), make('span', 'notification-audience'), make('span', 'notification-updates'),
    make('span', 'notification-email', 'email pending'), make('time', 'notification-time'));
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

/** `"all"` → "everyone", `{topic}` → "#topic", a user's own → "". */
function audienceLabel(audience) {
  if (audience === 'all') return 'everyone';
  if (audience && typeof audience.topic === 'string') return `#${audience.topic}`;
  return '';
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
  // An announcement (stored once for everyone, or a topic's readers) says so.
  const audience = item.querySelector('.notification-audience');
  const label = audienceLabel(notification.audience);
  audience.textContent = label;
  audience.hidden = !label;
  audience.title = label ? 'An announcement: the same notification for everyone it names; your read state is your own' : '';
  item.classList.toggle('announcement', Boolean(label));
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
  const email = item.querySelector('.notification-email');
  const pending = emailPending(notification);
  item.classList.toggle('email-pending', pending);
  email.hidden = !pending;
  email.title = pending ? `An email goes out ${new Date(notification.email_due_at).toLocaleTimeString()} unless you read this first` : '';
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

/** "Mark all read". */
export function markAllRead() {
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

/** Opens, closes (or with no argument flips) the panel; answers whether it is open. */
export function togglePanel(open) {
  const panel = $('notification-panel');
  const show = open === undefined ? panel.hidden : open;
  panel.hidden = !show;
  $('bell').setAttribute('aria-expanded', String(show));
  if (show) scheduleRender();
  return show;
}

/** Shows all notifications, or only the unread ones. */
export function setFilter(filter) {
  state.filter = filter;
  for (const option of document.querySelectorAll('.filter-option')) {
    option.setAttribute('aria-pressed', String(option.dataset.filter === filter));
  }
  scheduleRender();
}

/** "Load more": the next older page. */
export async function loadMore() {
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
