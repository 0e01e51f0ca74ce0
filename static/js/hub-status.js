/*
 * The "Hub status" panel: the hub's own figures from the public topic
 * tidings:status, on a TidingsStream of its own so that a refused topic
 * (the server has it off) never touches the main stream. The panel shows
 * once figures arrive; a refusal leaves it hidden (`data-state="off"`).
 */

import { TidingsStream } from '../tidings.js';
import { $, durationText } from './dom.js';
import { api, session } from './session.js';

const STATUS_TOPIC = 'tidings:status';

/** The status stream, or null when the panel is off. */
let stream = null;

/**
 * Opens the status stream. Like every stream it also carries the user's own
 * events; only `topic.event` is listened to here. It resumes with the last
 * id, and the topic's key means a resume brings only the newest figures.
 */
export function connectHubStatus() {
  if (stream) stream.close();
  const token = session.token;
  const current = new TidingsStream({ token, topics: [STATUS_TOPIC] });
  stream = current;
  $('hub-status').dataset.state = 'connecting';
  current.addEventListener('open', () => {
    if (current !== stream) return;
    $('hub-status').dataset.state = 'live';
  });
  current.addEventListener('disconnect', (event) => {
    if (current !== stream) return;
    $('hub-status').dataset.state = 'reconnecting';
    $('hub-status-state').textContent = 'reconnecting…';
    // Refused: find out whether for good before the next attempt.
    if (event.refused) event.waitUntil(probeHubStatus(current, token));
  });
  current.on('topic.event', (data) => {
    if (current === stream) showHubStatus(data);
  });
  current.start();
}

/**
 * A refused stream says nothing about why; the topic's history does. A 403
 * means this server does not publish its status (or not to this token):
 * give up quietly, panel hidden. A 401 is the main stream's business.
 * Anything else is passing: the stream tries again with backoff.
 */
async function probeHubStatus(current, token) {
  try {
    await api('GET', `/v1/topics/${STATUS_TOPIC}/events?limit=1`);
  } catch (error) {
    if (current !== stream || token !== session.token) return;
    if (error.status === 401 || error.status === 403 || error.status === 404) stopHubStatus();
  }
}

/** Closes the status stream and hides the panel. */
export function stopHubStatus() {
  if (stream) stream.close();
  stream = null;
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
