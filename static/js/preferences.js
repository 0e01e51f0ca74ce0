/*
 * The gear's panel: which notification types reach the user, and on which
 * channels. Saved per change with PUT, one request at a time per type,
 * reverted to the server's last answer on error. Types are listed as the
 * user receives them (`noticeType`) or adds them by hand. There is a column
 * per channel the hub delivers on (`channels.js`); every channel is sent
 * back on save, so one the hub does not offer keeps its stored value.
 */

import { $, make, showToast } from './dom.js';
import { api, reportError, session } from './session.js';
import { hubChannels, loadChannels } from './channels.js';

/**
 * The preferences as the page knows them. `types`: type ->
 * {confirmed, desired, saving, queue}: `confirmed` is the server's last
 * answer, `desired` what the checkboxes show (ahead while saving).
 */
const prefs = {
  types: new Map(),
  loaded: false,
  loading: null, // the GET in flight, if any
  failed: false,
};

/** Forgets the previous session's preferences. */
export function startPreferences() {
  Object.assign(prefs, { types: new Map(), loaded: false, loading: null, failed: false });
  $('preferences-list').replaceChildren();
}

/** A notification of `type` arrived: a new type is listed the next time, or now if open. */
export function noticeType(type) {
  if (prefs.loaded && !prefs.types.has(type)) {
    prefs.loaded = false;
    if (!$('preferences-panel').hidden) loadPreferences();
  }
}

const TYPE_PATTERN = /^[a-z0-9_.-]{1,50}$/;
/** Every channel a preference stores, whether or not this hub offers it. */
const CHANNELS = ['web', 'email', 'push', 'webhook'];
const CHANNEL_NAMES = { web: 'Web', email: 'Email', push: 'Push', webhook: 'Webhook' };
const FIELD_LABELS = {
  enabled: (type) => `Receive ${type}`,
  web: (type) => `${type} on the web`,
  email: (type) => `${type} by email`,
  push: (type) => `${type} by push`,
  webhook: (type) => `${type} to the operator's webhooks`,
};

/** The channel columns shown: the hub's, in a fixed order. */
const shownChannels = () => CHANNELS.filter((channel) => hubChannels().includes(channel));

/** A preference as the page keeps it: every channel present, booleans only. */
function normalizePreference(raw) {
  const channels = raw.channels || {};
  return {
    type: raw.type,
    enabled: Boolean(raw.enabled),
    channels: Object.fromEntries(CHANNELS.map((channel) => [channel, Boolean(channels[channel])])),
  };
}

function samePreference(a, b) {
  return a.enabled === b.enabled && CHANNELS.every((channel) => a.channels[channel] === b.channels[channel]);
}

function putPreference(preference) {
  const known = prefs.types.get(preference.type);
  if (!known) {
    prefs.types.set(preference.type, { confirmed: preference, desired: preference, saving: 0, queue: Promise.resolve() });
    return;
  }
  known.confirmed = preference;
  // A change still being saved wins over what the server said before it.
  if (known.saving === 0) known.desired = preference;
}

/** Loads the user's preferences (one GET at a time) and renders them. */
export async function loadPreferences() {
  if (prefs.loading) return prefs.loading;
  const token = session.token;
  prefs.loading = (async () => {
    try {
      const [list] = await Promise.all([api('GET', '/v1/preferences'), loadChannels()]);
      if (token !== session.token) return;
      list.map(normalizePreference).forEach(putPreference);
      prefs.loaded = true;
      prefs.failed = false;
    } catch (error) {
      if (token !== session.token) return;
      prefs.failed = true;
      reportError(error, 'Could not load preferences');
    } finally {
      if (token === session.token) prefs.loading = null;
      renderPreferences();
    }
  })();
  renderPreferences();
  return prefs.loading;
}

/**
 * Saves the type's checkboxes as they are now. Requests for one type go one
 * at a time, so the last change is the one that sticks; a failure puts back
 * what the server last confirmed and says why.
 */
function savePreference(type) {
  const entry = prefs.types.get(type);
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

/** A checkbox changed: save that type as the checkboxes now say. */
export function onPreferenceChange(event) {
  const input = event.target;
  if (!(input instanceof HTMLInputElement) || !input.dataset.type) return;
  const entry = prefs.types.get(input.dataset.type);
  if (!entry) return;
  const field = input.dataset.field;
  const desired = field === 'enabled'
    ? { ...entry.desired, enabled: input.checked }
    : { ...entry.desired, channels: { ...entry.desired.channels, [field]: input.checked } };
  entry.desired = desired;
  savePreference(input.dataset.type);
}

/** The "add a type" form: lists a type before any notification of it arrived. */
export async function addPreferenceType(event) {
  event.preventDefault();
  const input = $('preferences-add-type');
  const type = input.value.trim();
  if (!TYPE_PATTERN.test(type)) {
    showToast('A type is 1-50 characters of a-z, 0-9, _, . and -.');
    input.focus();
    return;
  }
  if (!prefs.types.has(type)) {
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
  if (!channels.web) return 'Web off: not delivered anywhere';
  return channels.email && hubChannels().includes('email') ? 'On, here and by email when unread' : 'On, delivered here';
}

function createPreferenceRow(type, channels) {
  const row = make('tr', 'pref');
  row.dataset.type = type;
  row.dataset.channels = channels.join(',');
  const head = make('th', 'pref-type');
  head.scope = 'row';
  head.append(make('span', 'pref-name', type), make('span', 'pref-status'));
  row.append(head);
  for (const field of ['enabled', ...channels]) {
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

/** The table of types, rows kept by type and updated in place. */
export function renderPreferences() {
  const list = $('preferences-list');
  const types = [...prefs.types.keys()].sort();
  const columns = shownChannels();
  renderHead(columns);
  // Rows built for other columns (the channels arrived since) are rebuilt.
  const existing = new Map([...list.children]
    .filter((row) => row.dataset.channels === columns.join(',') || (row.remove(), false))
    .map((row) => [row.dataset.type, row]));
  types.forEach((type, index) => {
    const entry = prefs.types.get(type);
    const row = existing.get(type) || createPreferenceRow(type, columns);
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

  const loading = Boolean(prefs.loading) && !prefs.loaded;
  $('preferences-table').hidden = types.length === 0;
  $('preferences-empty').hidden = types.length > 0;
  $('preferences-empty-title').textContent = loading ? 'Loading…'
    : prefs.failed ? 'Could not load your preferences' : 'No types yet';
  $('preferences-empty-hint').textContent = prefs.failed
    ? 'Close and open this panel to try again.'
    : 'A type shows up here once you receive it, or add one below.';
  $('preferences-empty-hint').hidden = loading;
}

/** The table's head: Type, On, then a column per channel the hub offers. */
function renderHead(channels) {
  const head = $('preferences-head');
  if (head.dataset.channels === channels.join(',')) return;
  head.dataset.channels = channels.join(',');
  for (const cell of head.querySelectorAll('.prefs-channel')) cell.remove();
  for (const channel of channels) {
    const cell = make('th', 'prefs-channel', CHANNEL_NAMES[channel]);
    cell.scope = 'col';
    cell.dataset.channel = channel;
    head.append(cell);
  }
}

/** Opens, closes (or with no argument flips) the panel; answers whether it is open. */
export function togglePreferences(open) {
  const panel = $('preferences-panel');
  const show = open === undefined ? panel.hidden : open;
  panel.hidden = !show;
  $('open-preferences').setAttribute('aria-expanded', String(show));
  if (show) {
    renderPreferences();
    loadPreferences();
  }
  return show;
}
