/*
 * The session: the token and its claims, read from `#token=` or
 * localStorage (the JWT payload is decoded, not verified: the server does
 * that), and `api()`, fetch with the bearer token whose error bodies become
 * `ApiError`s. `reportError` shows them; a rejected token ends the session
 * through the handler the boot code registers.
 */

import { showToast } from './dom.js';

/** Where the token is kept between visits, and shared with other tabs. */
export const TOKEN_KEY = 'tidings_token';

/** The signed-in user's token and claims; both null when signed out. */
export const session = {
  token: null,
  claims: null,
};

/** The signed-in user's id, or '' when signed out. */
export const me = () => (session.claims ? session.claims.sub : '');

let onUnauthorized = () => {};

/** Registers what to do when the server rejects the token (sign out, with the reason). */
export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

/** The token in the address's fragment, which is then removed from the address bar. */
export function tokenFromHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get('token');
  if (token !== null) {
    history.replaceState(null, '', location.pathname + location.search);
  }
  return token ? token.trim() : null;
}

/** The JWT payload, or null when `token` does not look like a JWT. */
export function decodeClaims(token) {
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

/** True once the token's `exp` has passed. */
export function tokenExpired(claims) {
  return typeof claims.exp === 'number' && claims.exp * 1000 <= Date.now();
}

/** An answer of the API that is not a success, with the contract's code. */
export class ApiError extends Error {
  constructor(message, status, code, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter; // seconds, from a 429's Retry-After
  }
}

/** One API call with the session's token: the JSON answer, or an ApiError. */
export async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${session.token}` };
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
export function reportError(error, context) {
  if (error instanceof ApiError && error.status === 401) {
    onUnauthorized(`The server did not accept this token: ${error.message}`);
    return;
  }
  let message = error.message || String(error);
  if (error instanceof ApiError && error.status === 429) {
    const wait = error.retryAfter > 0 ? `in ${error.retryAfter} s` : 'in a moment';
    message = `Too many changes at once. Try again ${wait}.`;
  }
  showToast(context ? `${context}: ${message}` : message);
}
