/*
 * UI helpers shared by every part of the page: finding and making elements,
 * the toast, safe links, times and durations in words, and the per-frame
 * render scheduler. Nothing here knows about notifications or chat.
 */

/** The element with this id. */
export const $ = (id) => document.getElementById(id);

/** A new element; user data only ever goes in as `text` (textContent). */
export function make(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/**
 * A scheduler that batches renders: calling it asks for one `render` on the
 * next animation frame, however often it is called before then. The render
 * function is set later with `.use(fn)`, so that modules can ask for a
 * render of a view they do not import.
 */
export function perFrame(render = null) {
  let queued = false;
  const schedule = () => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => {
      queued = false;
      if (render) render();
    });
  };
  schedule.use = (fn) => {
    render = fn;
  };
  return schedule;
}

let toastTimer = null;

/** Shows `message` for five seconds. */
export function showToast(message) {
  const toast = $('toast');
  toast.textContent = message;
  toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { toast.hidden = true; }, 5000);
}

/** `raw` as an absolute URL if it is http(s), else null (no javascript:). */
export function safeUrl(raw) {
  if (!raw) return null;
  try {
    const url = new URL(raw, location.href);
    return url.protocol === 'http:' || url.protocol === 'https:' ? url.href : null;
  } catch {
    return null;
  }
}

/** Local midnights crossed from `a` to `b` (rounded, for daylight saving days). */
export function calendarDaysBetween(a, b) {
  const midnight = (date) => new Date(date.getFullYear(), date.getMonth(), date.getDate());
  return Math.round((midnight(b) - midnight(a)) / 86400000);
}

/** "just now", "5 min ago", "yesterday", ... */
export function relativeTime(iso) {
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

/** relativeTime, shorter, for the conversation list. */
export function shortRelativeTime(iso) {
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

/** "14:05" today, "Tue 14:05" this week, "3 Mar 14:05" before. */
export function clockTime(iso) {
  const then = new Date(iso);
  if (Number.isNaN(then.getTime())) return '';
  const clock = then.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
  const days = calendarDaysBetween(then, new Date());
  if (days <= 0) return clock;
  if (days < 7) return `${then.toLocaleDateString(undefined, { weekday: 'short' })} ${clock}`;
  return `${then.toLocaleDateString(undefined, { day: 'numeric', month: 'short' })} ${clock}`;
}

/** 42 s, 3 min 5 s, 2 h 7 min, 3 d 4 h. */
export function durationText(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

/** A hue (0-7) for a user or conversation, the same every time. */
export function hueOf(text) {
  let hash = 0;
  for (const char of text) hash = (hash * 31 + char.codePointAt(0)) >>> 0;
  return String(hash % 8);
}
