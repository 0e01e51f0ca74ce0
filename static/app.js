/*
 * Tidings notification center and chat: the page's entry module. Plain ES
 * modules, no framework, no build step. This file signs in and out and
 * wires the parts together; each part is a module of its own:
 *
 *   /tidings.js          the stream client (also for other apps): resumes
 *                        from the last id, reconnects, typed events
 *   js/dom.js            UI helpers: elements, toast, times, render batching
 *   js/session.js        the token and its claims, `api()`, error reporting
 *   js/stream.js         the page's stream and the connection indicator
 *   js/notifications.js  the bell: badge, panel, actions
 *   js/preferences.js    the gear: types and channels
 *   js/channels.js       the channels this hub delivers on (GET /v1/channels)
 *   js/chat-state.js     the chat's state and merge rules
 *   js/chat.js           chat loading, stream events, typing, actions
 *   js/chat-view.js      chat rendering and controls
 *   js/presence.js       presence dots and the user's own status
 *   js/hub-status.js     the "Hub status" panel (topic tidings:status)
 */

import { $ } from './js/dom.js';
import {
  TOKEN_KEY, decodeClaims, reportError, session, tokenExpired, tokenFromHash, whenUnauthorized,
} from './js/session.js';
import { backOnline, closeStream, openStream, setConnection } from './js/stream.js';
import {
  NOTIFICATION_EVENTS, loadMore, loadPage, markAllRead, resetNotifications, scheduleRender, setFilter,
  startNotifications, togglePanel,
} from './js/notifications.js';
import {
  addPreferenceType, noticeType, onPreferenceChange, startPreferences, togglePreferences,
} from './js/preferences.js';
import { loadChannels, startChannels } from './js/channels.js';
import { chat, scheduleChatRender } from './js/chat-state.js';
import { CHAT_EVENTS, forgetTyping, loadChat, onChatStreamOpen, startChat, stopChat } from './js/chat.js';
import { wireChat } from './js/chat-view.js';
import { PRESENCE_EVENTS } from './js/presence.js';
import { connectHubStatus, stopHubStatus } from './js/hub-status.js';

const CLOCK_TICK_MS = 30000;
const CHAT_BOOT_WAIT_MS = 4000;
const EXPIRED = 'Your token has expired. Open a fresh demo address or paste a new token.';

/** Loads the chat over REST should the stream not open (too many tabs, say). */
let chatBootTimer = null;

/** Every event the page's stream handles, by name. */
const STREAM_EVENTS = {
  ...NOTIFICATION_EVENTS,
  notification(data) {
    NOTIFICATION_EVENTS.notification(data);
    noticeType(data.type);
  },
  ...CHAT_EVENTS,
  ...PRESENCE_EVENTS,
};

// ---------------------------------------------------------------- header

function expiryText(claims) {
  if (typeof claims.exp !== 'number') return 'token does not expire';
  const seconds = claims.exp - Date.now() / 1000;
  if (seconds <= 0) return 'token expired';
  if (seconds < 3600) return `token expires in ${Math.ceil(seconds / 60)} min`;
  if (seconds < 2 * 86400) return `token expires in ${Math.round(seconds / 3600)} h`;
  return `token expires in ${Math.round(seconds / 86400)} days`;
}

function renderSession() {
  $('user-id').textContent = session.claims.sub;
  const expiry = $('token-expiry');
  expiry.textContent = expiryText(session.claims);
  expiry.title = typeof session.claims.exp === 'number' ? new Date(session.claims.exp * 1000).toLocaleString() : '';
  $('try-user').textContent = session.claims.sub;
  $('try-command').textContent = curlCommand(session.claims.sub);
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

/** The bell's panel and the gear's: opening one closes the other. */
function toggleNotifications(open) {
  if (togglePanel(open)) togglePreferences(false);
}

function togglePreferencesPanel(open) {
  if (togglePreferences(open)) togglePanel(false);
}

// ---------------------------------------------------------------- session

function connect() {
  openStream({
    events: STREAM_EVENTS,
    afterEvent: () => {
      scheduleRender();
      scheduleChatRender();
    },
    onOpen: (first, resumed) => {
      clearTimeout(chatBootTimer);
      onChatStreamOpen(first, resumed);
    },
    onReset: () => {
      resetNotifications();
      loadChat();
    },
    onDisconnect: forgetTyping,
    onExpired: () => signOut(EXPIRED),
  });
}

/** Starts a session with `token`, or shows setup if it is unusable. */
function signIn(token) {
  const claims = decodeClaims(token);
  if (!claims) {
    signOut('That does not look like a Tidings token (a JWT with a "sub" claim).');
    return;
  }
  if (tokenExpired(claims)) {
    signOut(EXPIRED);
    return;
  }
  closeStream();
  stopHubStatus();
  if (session.token) stopChat();
  localStorage.setItem(TOKEN_KEY, token);
  session.token = token;
  session.claims = claims;
  startNotifications();
  startPreferences();
  startChannels();
  $('setup').hidden = true;
  $('session').hidden = false;
  $('try-it').hidden = false;
  $('chat').hidden = false;
  $('main').dataset.mode = 'session';
  renderSession();
  startChat();
  connect();
  connectHubStatus();
  loadPage(null).catch(reportError);
  loadChannels().then(scheduleRender);
  // Should the stream not open (too many tabs, say), chat still loads over REST.
  clearTimeout(chatBootTimer);
  chatBootTimer = setTimeout(() => {
    if (!chat.loaded && !chat.loading) loadChat();
  }, CHAT_BOOT_WAIT_MS);
  scheduleRender();
}

function signOut(reason) {
  closeStream();
  stopHubStatus();
  clearTimeout(chatBootTimer);
  if (session.token) stopChat();
  localStorage.removeItem(TOKEN_KEY);
  session.token = null;
  session.claims = null;
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

// ---------------------------------------------------------------- boot

function wireEvents() {
  whenUnauthorized(signOut);
  wireChat();
  $('bell').addEventListener('click', () => toggleNotifications());
  $('open-preferences').addEventListener('click', () => togglePreferencesPanel());
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
    if (session.token) setConnection('offline');
  });
  window.addEventListener('online', () => {
    if (session.token) backOnline();
  });
  // A new demo address pasted into this tab only changes the fragment.
  window.addEventListener('hashchange', () => {
    const token = tokenFromHash();
    if (token && token !== session.token) signIn(token);
  });
  // Another tab signed in with a new token or signed out.
  window.addEventListener('storage', (event) => {
    if (event.key !== TOKEN_KEY || event.newValue === session.token) return;
    if (event.newValue) signIn(event.newValue);
    else signOut();
  });
  setInterval(() => {
    if (!session.token) return;
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
