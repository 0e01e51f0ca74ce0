// The notification center in a real browser: the page goes live, a
// notification published over HTTP shows up under the bell, and "Mark all
// read" clears it.
//
//   TIDINGS_URL=http://127.0.0.1:PORT TIDINGS_USER_ID=alice \
//   TIDINGS_USER_TOKEN=<jwt for alice> TIDINGS_PUBLISH_TOKEN=<jwt, scope publish> \
//   node notification_center.mjs
//
// TIDINGS_USER_ID must have no unread notifications yet (a fresh user), since
// the badge is expected to read 1.
// Optional: CHROMIUM_PATH (default /usr/bin/chromium), TIDINGS_SCREENSHOT_DIR
// (default the system's temporary folder). Exits 0 and prints "browser test
// passed" on success; otherwise saves notification_center-failure.png, prints
// the page's console and exits 1.

import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const TIMEOUT_MS = 10_000;
const TITLE = 'Hello from the browser test';

function requiredEnv(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`notification_center: set ${name} (see the top of this file)`);
    process.exit(1);
  }
  return value;
}

const baseUrl = requiredEnv('TIDINGS_URL').replace(/\/+$/, '');
const userToken = requiredEnv('TIDINGS_USER_TOKEN');
const publishToken = requiredEnv('TIDINGS_PUBLISH_TOKEN');
const userId = requiredEnv('TIDINGS_USER_ID');
const screenshotDir = process.env.TIDINGS_SCREENSHOT_DIR || os.tmpdir();

const consoleLines = [];

function step(message) {
  console.log(`- ${message}`);
}

async function publish() {
  const response = await fetch(`${baseUrl}/v1/notifications`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${publishToken}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({
      user_id: userId,
      type: 'browser.test',
      title: TITLE,
      body: `Published by notification_center.mjs at ${new Date().toISOString()}.`,
    }),
    signal: AbortSignal.timeout(TIMEOUT_MS),
  });
  const text = await response.text();
  if (response.status !== 201) {
    throw new Error(`POST /v1/notifications answered ${response.status}, expected 201: ${text}`);
  }
  const created = JSON.parse(text).created;
  if (!Array.isArray(created) || created.length !== 1) {
    throw new Error(`POST /v1/notifications created ${JSON.stringify(created)}, expected one notification`);
  }
  return String(created[0].id);
}

async function run(page) {
  step('open the page with the token in the fragment');
  await page.goto(`${baseUrl}/#token=${encodeURIComponent(userToken)}`, { timeout: TIMEOUT_MS });
  await page.locator('#connection-state[data-state="live"]').waitFor({ timeout: TIMEOUT_MS });
  if (new URL(page.url()).hash !== '') {
    throw new Error(`the token was left in the address bar: ${page.url()}`);
  }

  step('publish a notification over HTTP');
  const id = await publish();

  step('the badge shows 1');
  const badge = page.locator('#unread-badge');
  await page.locator('#unread-badge:not([hidden])', { hasText: /^1$/ }).waitFor({ state: 'visible', timeout: TIMEOUT_MS });

  step('the bell opens the panel with the notification, unread');
  await page.locator('#bell').click({ timeout: TIMEOUT_MS });
  await page.locator('#notification-panel').waitFor({ state: 'visible', timeout: TIMEOUT_MS });
  const item = page.locator(`#notification-panel .notification[data-id="${id}"]`);
  await item.locator('.notification-title', { hasText: TITLE }).waitFor({ state: 'visible', timeout: TIMEOUT_MS });
  await page.locator(`#notification-panel .notification.unread[data-id="${id}"]`).waitFor({ timeout: TIMEOUT_MS });
  await page.screenshot({ path: path.join(screenshotDir, 'notification_center.png') });

  step('"Mark all read" clears the badge and the unread mark');
  await page.locator('#mark-all-read').click({ timeout: TIMEOUT_MS });
  await badge.waitFor({ state: 'hidden', timeout: TIMEOUT_MS });
  await page.locator(`#notification-panel .notification[data-id="${id}"]:not(.unread)`).waitFor({ timeout: TIMEOUT_MS });
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    timeout: 30_000,
  });
  let page;
  try {
    page = await browser.newPage({ viewport: { width: 1100, height: 760 } });
    page.on('console', (message) => consoleLines.push(`[${message.type()}] ${message.text()}`));
    page.on('pageerror', (error) => consoleLines.push(`[pageerror] ${error.stack || error.message}`));
    await run(page);
    console.log('browser test passed');
  } catch (error) {
    process.exitCode = 1;
    console.error(`browser test failed: ${error.stack || error.message}`);
    if (page) {
      const shot = path.join(screenshotDir, 'notification_center-failure.png');
      await page.screenshot({ path: shot, fullPage: true }).then(
        () => console.error(`screenshot: ${shot}`),
        (shotError) => console.error(`no screenshot: ${shotError.message}`),
      );
    }
    console.error(`page console (${consoleLines.length} messages):`);
    for (const line of consoleLines) console.error(`  ${line}`);
  } finally {
    await browser.close();
  }
}

main().catch((error) => {
  console.error(`browser test failed: ${error.stack || error.message}`);
  process.exitCode = 1;
});
