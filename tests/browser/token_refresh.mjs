// /tidings.js in another app's page, with tokens that expire within
// seconds: the app's getToken fetches fresh ones from its backend (the
// test's token endpoint) before each expires, and the client reconnects
// with the new token and the last event id. Notifications published
// without pause across the refreshes all arrive, in order, none twice,
// and no stream ever reaches its token's expiry (no disconnect). Then the
// hub's own page, which has no way to get a new token: when its token
// expires it goes back to setup and says why.
//
//   TIDINGS_URL=http://127.0.0.1:PORT (the hub; CORS open to any origin) \
//   TIDINGS_APP_URL=http://127.0.0.1:PORT2 (serves token_refresh.html at /,
//     a fresh short-lived token for TIDINGS_USER_ID at /token, and one for
//     another user at /short-token) \
//   TIDINGS_USER_ID=<the tokens' sub> TIDINGS_PUBLISH_TOKEN=<jwt, scope publish> \
//   TIDINGS_TOKEN_TTL_SECS=<the tokens' lifetime> \
//   node token_refresh.mjs
//
// Optional: CHROMIUM_PATH (default /usr/bin/chromium), TIDINGS_SCREENSHOT_DIR.
// Exits 0 and prints "token refresh browser test passed" on success;
// otherwise prints what the page logged and its console, and exits 1.

import { chromium } from 'playwright-core';

const TIMEOUT_MS = 15_000;

function requiredEnv(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`token_refresh: set ${name} (see the top of this file)`);
    process.exit(1);
  }
  return value;
}

const hubUrl = requiredEnv('TIDINGS_URL').replace(/\/+$/, '');
const appUrl = requiredEnv('TIDINGS_APP_URL').replace(/\/+$/, '');
const userId = requiredEnv('TIDINGS_USER_ID');
const publishToken = requiredEnv('TIDINGS_PUBLISH_TOKEN');
const ttlSecs = Number(requiredEnv('TIDINGS_TOKEN_TTL_SECS'));
// Publishing lasts a little over two token lifetimes: at least two refreshes.
const PUBLISH_FOR_MS = (2 * ttlSecs + 2) * 1000;
const PUBLISH_EVERY_MS = 150;

const consoleLines = [];

function step(message) {
  console.log(`- ${message}`);
}

/** Publishes one notification titled `title` to the user. */
async function publish(title) {
  const response = await fetch(`${hubUrl}/v1/notifications`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${publishToken}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ user_id: userId, type: 'refresh.test', title }),
    signal: AbortSignal.timeout(TIMEOUT_MS),
  });
  if (response.status !== 201) throw new Error(`publishing ${title} answered ${response.status}: ${await response.text()}`);
}

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function run(page) {
  step('open the app page, which imports the hub\'s /tidings.js from another origin');
  await page.goto(`${appUrl}/?hub=${encodeURIComponent(hubUrl)}`, { timeout: TIMEOUT_MS });
  await page.waitForFunction(() => window.tidingsLog && (window.tidingsLog.opens >= 1 || window.tidingsLog.error),
    null, { timeout: TIMEOUT_MS });
  const started = await page.evaluate(() => window.tidingsLog);
  if (started.error) throw new Error(`the page failed: ${started.error}`);

  step(`publish without pause for ${PUBLISH_FOR_MS / 1000} s, across token refreshes (tokens live ${ttlSecs} s)`);
  const published = [];
  const until = Date.now() + PUBLISH_FOR_MS;
  while (Date.now() < until) {
    const title = `n-${published.length}`;
    await publish(title);
    published.push(title);
    // Paced, so that the publishes span the refreshes.
    await pause(PUBLISH_EVERY_MS);
  }
  // The stream is ordered: once the last one is in, anything sent twice
  // before it would be in too.
  step(`wait for all ${published.length} to arrive`);
  await page.waitForFunction((count) => window.tidingsLog.titles.length >= count, published.length, { timeout: TIMEOUT_MS });

  const log = await page.evaluate(() => window.tidingsLog);
  step(`received ${log.titles.length}; tokens ${log.tokens} (getToken called ${log.tokenCalls} times), connections ${log.opens}`);
  if (JSON.stringify(log.titles) !== JSON.stringify(published)) {
    const twice = log.titles.filter((title, index) => log.titles.indexOf(title) !== index);
    const missing = published.filter((title) => !log.titles.includes(title));
    throw new Error(`received a different sequence: twice ${JSON.stringify(twice)}, missing ${JSON.stringify(missing)}`);
  }
  const ids = log.ids.map(Number);
  if (ids.some((id, index) => index > 0 && id <= ids[index - 1])) {
    throw new Error(`event ids are not strictly increasing: ${JSON.stringify(log.ids)}`);
  }

  step('the token was refreshed at least twice, each time with one new connection');
  if (log.tokens < 3) throw new Error(`only ${log.tokens} tokens were used (the first and ${log.tokens - 1} refreshes)`);
  if (log.opens !== log.tokens) throw new Error(`${log.opens} connections for ${log.tokens} tokens`);

  step('no stream reached its token\'s expiry: no disconnect, no reset');
  if (log.disconnects.length > 0) throw new Error(`disconnects: ${JSON.stringify(log.disconnects)}`);
  if (log.resets > 0) throw new Error(`${log.resets} resets`);
}

async function pageSignsOutAtExpiry(page) {
  step('the hub\'s page, with a token it cannot refresh, goes live');
  // Minted now, not when the test started: Chromium may take a while to start.
  const response = await fetch(`${appUrl}/short-token`, { signal: AbortSignal.timeout(TIMEOUT_MS) });
  const shortToken = await response.text();
  await page.goto(`${hubUrl}/#token=${encodeURIComponent(shortToken)}`, { timeout: TIMEOUT_MS });
  await page.locator('#connection-state[data-state="live"]').waitFor({ timeout: TIMEOUT_MS });
  step('when the token expires, it is back at setup, saying why');
  await page.locator('#setup-reason', { hasText: 'Your token has expired' }).waitFor({ state: 'visible', timeout: TIMEOUT_MS });
  if (!(await page.locator('#session').isHidden())) throw new Error('the session is still shown');
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    timeout: 30_000,
  });
  let page;
  try {
    page = await browser.newPage();
    page.on('console', (message) => consoleLines.push(`[${message.type()}] ${message.text()}`));
    page.on('pageerror', (error) => consoleLines.push(`[pageerror] ${error.stack || error.message}`));
    await pageSignsOutAtExpiry(page);
    await run(page);
    console.log('token refresh browser test passed');
  } catch (error) {
    process.exitCode = 1;
    console.error(`token refresh browser test failed: ${error.stack || error.message}`);
    if (page) {
      const log = await page.evaluate(() => window.tidingsLog).catch(() => null);
      console.error(`page log: ${JSON.stringify(log)}`);
    }
    console.error(`page console (${consoleLines.length} messages):`);
    for (const line of consoleLines) console.error(`  ${line}`);
  } finally {
    await browser.close();
  }
}

main().catch((error) => {
  console.error(`token refresh browser test failed: ${error.stack || error.message}`);
  process.exitCode = 1;
});
