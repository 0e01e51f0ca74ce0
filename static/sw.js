/*
 * Tidings' service worker: shows Web Push notifications while no tab of the
 * page is open, and records their clicks.
 *
 * A push's payload (decrypted by the browser) is
 * `{id, title, body, action_url, unread_count}`. It is shown with the title
 * and body, tagged by the notification's id so that a grouped update
 * replaces the one on screen, and the unread count goes to the app badge
 * where the browser has one (`navigator.setAppBadge`).
 *
 * A click closes the notification, records the click through
 * `POST /v1/notifications/{id}/click` (which also marks it read), then
 * focuses a tab already at the notification's `action_url` or, failing
 * that, opens it (no `action_url`: focuses any tab of the page, or opens
 * the page).
 *
 * The token: a service worker cannot read the page's localStorage, and it
 * is stopped whenever idle, so memory alone would forget the token before
 * the next push. The page posts it (`{type: 'token', token}`) each time it
 * signs in, and null when it signs out; the worker keeps it in IndexedDB,
 * of this origin only, as the page keeps it in localStorage. An expired
 * token only means the click is not recorded; the link still opens.
 *
 * Served from `/sw.js` with scope `/` and the page's strict
 * Content-Security-Policy: it talks to its own origin only.
 */

const DB_NAME = 'tidings-sw';
const STORE = 'settings';
const TOKEN = 'token';

/** The worker's small key-value store. */
function openStore() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB_NAME, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function withStore(mode, action) {
  const db = await openStore();
  try {
    return await new Promise((resolve, reject) => {
      const transaction = db.transaction(STORE, mode);
      const request = action(transaction.objectStore(STORE));
      transaction.oncomplete = () => resolve(request.result);
      transaction.onerror = () => reject(transaction.error);
    });
  } finally {
    db.close();
  }
}

const saveToken = (token) => withStore('readwrite', (store) => (token ? store.put(token, TOKEN) : store.delete(TOKEN)));
const loadToken = () => withStore('readonly', (store) => store.get(TOKEN));

/** `event.waitUntil(work)` where allowed: a synthetic event (a test's) may not extend its life. */
function keepAlive(event, work) {
  try {
    event.waitUntil(work);
  } catch {
    // Not dispatched by the browser: the work still runs.
  }
  return work;
}

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => keepAlive(event, self.clients.claim()));

self.addEventListener('message', (event) => {
  const message = event.data || {};
  if (message.type !== 'token') return;
  const stored = saveToken(typeof message.token === 'string' ? message.token : null).then(
    () => event.ports[0] && event.ports[0].postMessage({ stored: true }),
    (error) => event.ports[0] && event.ports[0].postMessage({ stored: false, error: String(error) }),
  );
  keepAlive(event, stored);
});

/** The payload of a push, or a generic one if it cannot be read. */
function readPayload(event) {
  try {
    const payload = event.data ? event.data.json() : null;
    if (payload && typeof payload === 'object') return payload;
  } catch {
    // Not JSON: fall through.
  }
  return { title: 'New notification', body: event.data ? event.data.text() : '' };
}

self.addEventListener('push', (event) => {
  const payload = readPayload(event);
  const shown = (async () => {
    const options = {
      body: typeof payload.body === 'string' ? payload.body : '',
      data: { id: payload.id, action_url: payload.action_url || null, unread_count: payload.unread_count },
    };
    if (payload.id !== undefined && payload.id !== null) {
      // A grouped update keeps its id: it replaces the one on screen, and says so.
      options.tag = `tidings-${payload.id}`;
      options.renotify = true;
    }
    await self.registration.showNotification(typeof payload.title === 'string' && payload.title ? payload.title : 'New notification', options);
    if (typeof payload.unread_count === 'number' && 'setAppBadge' in self.navigator) {
      await self.navigator.setAppBadge(payload.unread_count).catch(() => {});
    }
  })();
  keepAlive(event, shown);
});

/** Records the click with the stored token; false if it could not be. */
async function recordClick(id) {
  if (typeof id !== 'number') return false;
  const token = await loadToken().catch(() => null);
  if (!token) return false;
  try {
    const response = await fetch(`/v1/notifications/${id}/click`, { method: 'POST', headers: { Authorization: `Bearer ${token}` } });
    return response.ok;
  } catch {
    return false;
  }
}

/** Focuses a tab at `target` (or any tab of the page when there is no link), else opens it. */
async function focusOrOpen(actionUrl) {
  const target = new URL(actionUrl || '/', self.location.origin).href;
  const tabs = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
  const open = tabs.find((tab) => tab.url === target) || (!actionUrl && tabs.find((tab) => new URL(tab.url).origin === self.location.origin));
  if (open) return open.focus();
  return self.clients.openWindow(target);
}

self.addEventListener('notificationclick', (event) => {
  const notification = event.notification;
  notification.close();
  const data = notification.data || {};
  const handled = (async () => {
    const recorded = await recordClick(data.id);
    try {
      await focusOrOpen(data.action_url);
    } catch (error) {
      // Without the browser's own click (a synthetic event) neither focus
      // nor openWindow is allowed; the click is recorded all the same.
      console.warn('tidings: could not focus or open', data.action_url, error);
    }
    return recorded;
  })();
  // The latest click's outcome (true if recorded), for whoever dispatched
  // it: the browser test, which cannot click a notification, awaits it.
  self.lastClick = handled;
  keepAlive(event, handled);
});
