// The notification center in a real browser: the page goes live, a
// notification published over HTTP shows up under the bell, and "Mark all
// read" clears it. Then grouping: two notifications with one group_key show
// as ONE item with count 2, the newest title, on top. Then preferences: the
// gear's panel turns the type browser.muted off, and the next publish of
// that type lists the user as suppressed. With TIDINGS_EXPECT_EMAIL=1 (a
// hub with email configured): the panel has an Email column, turning email
// on for a type saves it, and the next notification of that type shows
// "email pending" under the bell. The test hubs have Web Push on (as
// `tidings serve` always does), so a Push column is offered; no Webhook
// column, since no webhook is registered.
//
//   TIDINGS_URL=http://127.0.0.1:PORT TIDINGS_USER_ID=alice \
//   TIDINGS_USER_TOKEN=<jwt for alice> TIDINGS_PUBLISH_TOKEN=<jwt, scope publish> \
//   node notification_center.mjs
//
// TIDINGS_USER_ID must have no unread notifications yet (a fresh user), since
// the badge is expected to read 1.
// Optional: CHROMIUM_PATH (default /usr/bin/chromium), TIDINGS_SCREENSHOT_DIR
// (default the system's temporary folder; notification_center.png,
// grouped.png and preferences.png go there), TIDINGS_COLOR_SCHEME (light,
// the default, or dark). Exits 0 and prints "browser test passed" on
// success; otherwise saves notification_center-failure.png, prints the
// page's console and exits 1.

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
const colorScheme = process.env.TIDINGS_COLOR_SCHEME === 'dark' ? 'dark' : 'light';
const MUTED_TYPE = 'browser.muted';
const MAILED_TYPE = 'browser.mailed';
const expectEmail = process.env.TIDINGS_EXPECT_EMAIL === '1';

const consoleLines = [];

function step(message) {
  console.log(`- ${message}`);
}

/** POST /v1/notifications to the test user; the 201 answer's body. */
async function publishRaw(fields = {}) {
  const response = await fetch(`${baseUrl}/v1/notifications`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${publishToken}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({
      user_id: userId,
      type: 'browser.test',
      title: TITLE,
      body: `Published by notification_center.mjs at ${new Date().toISOString()}.`,
      ...fields,
    }),
    signal: AbortSignal.timeout(TIMEOUT_MS),
  });
  const text = await response.text();
  if (response.status !== 201) {
    throw new Error(`POST /v1/notifications answered ${response.status}, expected 201: ${text}`);
  }
  return JSON.parse(text);
}

/** Publishes one notification that must be delivered; its id. */
async function publish(fields) {
  const { created } = await publishRaw(fields);
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

  await checkAnnouncement(page);
  await checkGrouping(page);
  await checkPreferences(page);
  if (expectEmail) await checkEmail(page);
}

async function checkEmail(page) {
  step(`add ${MAILED_TYPE} in the preferences and turn its email on`);
  await page.locator('#open-preferences').click({ timeout: TIMEOUT_MS });
  await page.locator('#preferences-head th[data-channel="email"]').waitFor({ state: 'visible', timeout: TIMEOUT_MS });
  await page.locator('#preferences-add-type').fill(MAILED_TYPE);
  await page.locator('#preferences-add-button').click({ timeout: TIMEOUT_MS });
  const email = page.locator(`#preferences-panel input[type="checkbox"][data-type="${MAILED_TYPE}"][data-field="email"]`);
  await email.waitFor({ state: 'visible', timeout: TIMEOUT_MS });
  if (await email.isChecked()) throw new Error(`${MAILED_TYPE} has email on before it was turned on`);
  const saved = page.waitForResponse(
    (response) => response.request().method() === 'PUT' && new URL(response.url()).pathname === `/v1/preferences/${MAILED_TYPE}`,
    { timeout: TIMEOUT_MS },
  );
  await email.check({ timeout: TIMEOUT_MS });
  const preference = await (await saved).json();
  if (preference.channels.email !== true || preference.channels.web !== true || preference.enabled !== true) {
    throw new Error(`PUT /v1/preferences/${MAILED_TYPE} answered ${JSON.stringify(preference)}`);
  }
  await page.locator(`#preferences-panel tr.pref[data-type="${MAILED_TYPE}"]:not(.saving)`).waitFor({ timeout: TIMEOUT_MS });
  await page.screenshot({ path: path.join(screenshotDir, 'preferences_email.png'), animations: 'disabled' });
  await page.keyboard.press('Escape');
  await page.locator('#preferences-panel').waitFor({ state: 'hidden', timeout: TIMEOUT_MS });

  step(`a ${MAILED_TYPE} notification shows "email pending" while unread`);
  const id = await publish({ type: MAILED_TYPE, title: 'This one will also come by email' });
  await page.locator('#bell').click({ timeout: TIMEOUT_MS });
  const mark = page.locator(`#notification-list .notification.unread[data-id="${id}"] .notification-email:not([hidden])`);
  await mark.waitFor({ state: 'visible', timeout: TIMEOUT_MS });
  await page.screenshot({ path: path.join(screenshotDir, 'email_pending.png'), animations: 'disabled' });

  step('marking it read takes the mark away');
  await page.locator(`#notification-list .notification[data-id="${id}"] .mark-read`).click({ timeout: TIMEOUT_MS });
  await page.locator(`#notification-list .notification[data-id="${id}"]:not(.unread) .notification-email[hidden]`)
    .waitFor({ state: 'attached', timeout: TIMEOUT_MS });
}

async function checkAnnouncement(page) {
  step('an announcement to everyone lands in the bell with its "everyone" mark, unread');
  const { created } = await publishRaw({ user_id: undefined, audience: 'all', type: 'browser.announce', title: 'Maintenance tonight' });
  const id = String(created[0].id);
  await page.locator('#unread-badge:not([hidden])', { hasText: /^1$/ }).waitFor({ state: 'visible', timeout: TIMEOUT_MS });
  const item = page.locator(`#notification-list .notification.unread.announcement[data-id="${id}"]`);
  await item.locator('.notification-audience:not([hidden])', { hasText: 'everyone' }).waitFor({ state: 'visible', timeout: TIMEOUT_MS });
  await page.screenshot({ path: path.join(screenshotDir, 'announcement.png'), animations: 'disabled' });

  step('marking it read clears it for this user');
  await item.locator('.mark-read').click({ timeout: TIMEOUT_MS });
  await page.locator('#unread-badge').waitFor({ state: 'hidden', timeout: TIMEOUT_MS });
  await page.locator(`#notification-list .notification[data-id="${id}"]:not(.unread)`).waitFor({ timeout: TIMEOUT_MS });
}

async function checkGrouping(page) {
  const groupKey = `browser-group-${Date.now()}`;
  const first = 'A new comment on your post';
  const newest = '2 new comments on your post';

  step('publish with a group_key, then an ungrouped one, then the same group_key again');
  const groupId = await publish({ group_key: groupKey, title: first, body: 'Ada: looks good' });
  const otherId = await publish({ title: 'Something else happened' });
  await page.locator(`#notification-panel .notification[data-id="${otherId}"]`).waitFor({ timeout: TIMEOUT_MS });
  const updatedId = await publish({ group_key: groupKey, title: newest, body: 'Grace: agreed' });
  if (updatedId !== groupId) {
    throw new Error(`the second publish with group_key ${groupKey} created ${updatedId}, expected it to update ${groupId}`);
  }

  step('ONE item shows count 2 and the newest title, moved to the top');
  const group = page.locator(`#notification-list .notification[data-id="${groupId}"][data-count="2"]`);
  await group.locator('.notification-title', { hasText: newest }).waitFor({ state: 'visible', timeout: TIMEOUT_MS });
  await group.locator('.notification-count', { hasText: /^2$/ }).waitFor({ state: 'visible', timeout: TIMEOUT_MS });
  await group.locator('.notification-updates', { hasText: '2 updates' }).waitFor({ state: 'visible', timeout: TIMEOUT_MS });
  const items = await page.locator('#notification-list .notification').evaluateAll((nodes) =>
    nodes.map((node) => ({ id: node.dataset.id, title: node.querySelector('.notification-title').textContent })));
  const grouped = items.filter((item) => item.id === groupId || item.title === first || item.title === newest);
  if (grouped.length !== 1) {
    throw new Error(`expected one item for the group, found ${JSON.stringify(grouped)}`);
  }
  if (items[0].id !== groupId) {
    throw new Error(`the updated group is not on top: ${JSON.stringify(items.slice(0, 3))}`);
  }

  step('the unread count did not grow with the update (2: the group and the other one)');
  await page.locator('#unread-badge:not([hidden])', { hasText: /^2$/ }).waitFor({ state: 'visible', timeout: TIMEOUT_MS });
  await page.screenshot({ path: path.join(screenshotDir, 'grouped.png'), animations: 'disabled' });
}

async function checkPreferences(page) {
  step(`publish a ${MUTED_TYPE} notification so that the type is listed`);
  await publish({ type: MUTED_TYPE, title: 'You will not see the next one of these' });

  step('the gear opens the preferences panel, which lists the type as enabled');
  await page.locator('#open-preferences').click({ timeout: TIMEOUT_MS });
  await page.locator('#preferences-panel').waitFor({ state: 'visible', timeout: TIMEOUT_MS });
  if (await page.locator('#notification-panel').isVisible()) {
    throw new Error('the notification panel stayed open under the preferences panel');
  }
  const enabled = page.locator(`#preferences-panel input[type="checkbox"][data-type="${MUTED_TYPE}"][data-field="enabled"]`);
  await enabled.waitFor({ state: 'visible', timeout: TIMEOUT_MS });
  if (!(await enabled.isChecked())) throw new Error(`${MUTED_TYPE} is listed as disabled before it was turned off`);
  const offered = expectEmail ? ['web', 'email', 'push'] : ['web', 'push'];
  for (const field of offered) {
    await page.locator(`#preferences-panel input[type="checkbox"][data-type="${MUTED_TYPE}"][data-field="${field}"]`)
      .waitFor({ state: 'visible', timeout: TIMEOUT_MS });
  }
  for (const field of ['email', 'push', 'webhook'].filter((f) => !offered.includes(f))) {
    const extra = await page.locator(`#preferences-panel input[data-field="${field}"], #preferences-head th[data-channel="${field}"]`).count();
    if (extra !== 0) throw new Error(`the panel offers ${field}, which this hub does not deliver on`);
  }

  step(`unchecking "enabled" saves it with PUT /v1/preferences/${MUTED_TYPE}`);
  const saved = page.waitForResponse(
    (response) => response.request().method() === 'PUT' && new URL(response.url()).pathname === `/v1/preferences/${MUTED_TYPE}`,
    { timeout: TIMEOUT_MS },
  );
  await enabled.uncheck({ timeout: TIMEOUT_MS });
  const response = await saved;
  if (response.status() !== 200) {
    throw new Error(`PUT /v1/preferences/${MUTED_TYPE} answered ${response.status()}: ${await response.text()}`);
  }
  const preference = await response.json();
  if (preference.type !== MUTED_TYPE || preference.enabled !== false) {
    throw new Error(`PUT /v1/preferences/${MUTED_TYPE} answered ${JSON.stringify(preference)}`);
  }
  await page.locator(`#preferences-panel tr.pref.off[data-type="${MUTED_TYPE}"]:not(.saving)`).waitFor({ timeout: TIMEOUT_MS });
  if (await enabled.isChecked()) throw new Error(`${MUTED_TYPE} is checked again after it was saved as off`);
  await page.screenshot({ path: path.join(screenshotDir, 'preferences.png'), animations: 'disabled' });

  step(`the next ${MUTED_TYPE} publish lists the user as suppressed`);
  const answer = await publishRaw({ type: MUTED_TYPE, title: 'This one is suppressed' });
  if (!Array.isArray(answer.suppressed) || !answer.suppressed.includes(userId)) {
    throw new Error(`POST /v1/notifications answered ${JSON.stringify(answer)}, expected ${userId} in "suppressed"`);
  }
  if (answer.created.length !== 0) {
    throw new Error(`POST /v1/notifications created ${JSON.stringify(answer.created)} for a disabled type`);
  }

  step('Escape closes the panel and gives the focus back to the gear');
  await page.keyboard.press('Escape');
  await page.locator('#preferences-panel').waitFor({ state: 'hidden', timeout: TIMEOUT_MS });
  if (!(await page.locator('#open-preferences').evaluate((node) => node === document.activeElement))) {
    throw new Error('the focus did not go back to the gear');
  }
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    timeout: 30_000,
  });
  let page;
  try {
    page = await browser.newPage({ viewport: { width: 1100, height: 760 }, colorScheme });
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
