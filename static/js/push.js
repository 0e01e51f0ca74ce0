/*
 * Browser notifications (Web Push) in the gear's panel: "Enable browser
 * notifications" registers the service worker (/sw.js), asks the
 * browser's permission (only on that click), subscribes with the hub's
 * VAPID key and posts the subscription; "Turn off" undoes it. When this
 * browser cannot subscribe, the panel says why (no support, permission
 * blocked, push not configured on the hub, the push service unreachable).
 *
 * The worker records clicks with the user's token: the page hands it the
 * token on every sign-in (and null on sign-out), which the worker keeps in
 * IndexedDB (see the opening comment of /sw.js).
 */

import { $ } from './dom.js';
import { ApiError, api, session } from './session.js';

const WORKER_URL = '/sw.js';

/** Whether this browser is subscribed, and whether a change is under way. */
const push = {
  subscribed: false,
  busy: false,
};

/** Whether this browser can do Web Push at all; else the reason. */
function unsupportedReason() {
  if (!window.isSecureContext) return 'Browser notifications need this page on https (or localhost).';
  if (!('serviceWorker' in navigator)) return 'This browser has no service workers, which browser notifications need.';
  if (!('PushManager' in window) || !('Notification' in window)) return 'This browser does not support push notifications.';
  return null;
}

function render(message) {
  const button = $('push-toggle');
  const reason = unsupportedReason();
  button.textContent = push.subscribed ? 'Turn off browser notifications' : 'Enable browser notifications';
  button.disabled = push.busy || Boolean(reason);
  button.setAttribute('aria-pressed', String(push.subscribed));
  const status = $('push-status');
  if (message !== undefined) {
    status.textContent = message;
  } else if (reason) {
    status.textContent = reason;
  } else if (push.subscribed) {
    status.textContent = 'On for this browser: types with Push checked reach you here when no tab is open.';
  } else if (Notification.permission === 'denied') {
    status.textContent = 'Notifications are blocked for this site in the browser\u2019s settings; allow them there first.';
  } else {
    status.textContent = 'Off for this browser.';
  }
}

/** Hands the worker the session's token (or null), and waits until it is stored. */
async function tellWorker(registration, token) {
  const worker = registration.active || registration.waiting || registration.installing;
  if (!worker) return;
  await new Promise((resolve) => {
    const channel = new MessageChannel();
    const timer = setTimeout(resolve, 2000);
    channel.port1.onmessage = () => {
      clearTimeout(timer);
      resolve();
    };
    worker.postMessage({ type: 'token', token }, [channel.port2]);
  });
}

/** The worker's registration once it is active. */
async function activeRegistration() {
  await navigator.serviceWorker.register(WORKER_URL, { scope: '/' });
  return navigator.serviceWorker.ready;
}

/** Signed in: if this browser has the worker, refresh its token and show where push stands. */
export async function startPush() {
  push.subscribed = false;
  push.busy = false;
  if (unsupportedReason()) {
    render();
    return;
  }
  render();
  try {
    const registration = await navigator.serviceWorker.getRegistration('/');
    if (!registration) return;
    await tellWorker(await navigator.serviceWorker.ready, session.token);
    push.subscribed = Boolean(await registration.pushManager.getSubscription());
  } catch {
    // Nothing registered, or unreadable: stays off.
  }
  render();
}

/** Signing out: the worker forgets the token, so a click records nothing for the next user. */
export async function stopPush() {
  if (unsupportedReason()) return;
  const registration = await navigator.serviceWorker.getRegistration('/').catch(() => null);
  if (registration) await tellWorker(registration, null).catch(() => {});
}

/** Base64url (the VAPID key) to the bytes `subscribe` takes. */
function keyBytes(base64url) {
  const base64 = base64url.replace(/-/g, '+').replace(/_/g, '/');
  const padded = base64 + '='.repeat((4 - (base64.length % 4)) % 4);
  return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
}

/** Why a subscribe step failed, in words for the panel. */
function explain(error, step) {
  if (error instanceof ApiError) {
    if (step === 'key' && error.status === 404) return 'This hub does not send browser notifications (Web Push is not configured).';
    if (error.status === 0) return 'The hub cannot be reached; try again.';
    return `The hub refused this browser\u2019s subscription: ${error.message}`;
  }
  if (error && error.name === 'NotAllowedError') return 'The browser did not allow notifications for this site.';
  if (step === 'subscribe') return `The browser could not subscribe with its push service (${error && error.message ? error.message : error}).`;
  return `Could not enable browser notifications: ${error && error.message ? error.message : error}`;
}

async function enable() {
  let step = 'key';
  try {
    const { key } = await api('GET', '/v1/push/vapid_public_key');
    step = 'permission';
    // Asked here, on the user's click, and nowhere else.
    const permission = await Notification.requestPermission();
    if (permission !== 'granted') {
      return permission === 'denied'
        ? 'Notifications are blocked for this site; allow them in the browser\u2019s settings, then try again.'
        : 'No permission given: browser notifications stay off.';
    }
    step = 'worker';
    const registration = await activeRegistration();
    await tellWorker(registration, session.token);
    step = 'subscribe';
    const subscription = await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: keyBytes(key) });
    step = 'post';
    await api('POST', '/v1/push/subscriptions', subscription.toJSON());
    push.subscribed = true;
    return undefined;
  } catch (error) {
    return explain(error, step);
  }
}

async function disable() {
  try {
    const registration = await navigator.serviceWorker.getRegistration('/');
    const subscription = registration && await registration.pushManager.getSubscription();
    if (subscription) {
      await api('DELETE', '/v1/push/subscriptions', { endpoint: subscription.endpoint });
      await subscription.unsubscribe();
    }
    push.subscribed = false;
    return undefined;
  } catch (error) {
    return explain(error, 'post');
  }
}

/** The button: enables or turns off push for this browser. */
export async function togglePush() {
  if (push.busy) return;
  push.busy = true;
  render('Working\u2026');
  let message;
  try {
    message = await (push.subscribed ? disable() : enable());
  } finally {
    push.busy = false;
    render(message);
  }
}
