// Browser notifications (Web Push) in a real Chromium, as far as a machine
// without a reachable push service allows:
//
// 1. The gear's panel offers "Enable browser notifications"; its click (with
//    the notification permission granted to the context, since headless
//    Chromium shows no prompt) registers the service worker /sw.js, hands it
//    the token, and tries to subscribe. Chromium cannot reach its push
//    service here, so the panel must then say why instead of failing quietly.
// 2. A push message is delivered to the worker through the DevTools
//    protocol (ServiceWorker.deliverPushMessage, over playwright's CDP
//    session), as the push service would after decrypting: the worker shows
//    a notification with the title and body, tagged by the notification id
//    (checked with self.registration.getNotifications() in the worker).
// 3. A `notificationclick` is dispatched in the worker (CDP has no way to
//    click a notification), and the click is recorded through the API:
//    the notification is read, and the statistics count one click. A
//    synthetic event carries no user activation, so the worker's
//    focus/openWindow of action_url is refused by Chromium; that part is
//    not covered here.
//
//   TIDINGS_URL=http://127.0.0.1:PORT TIDINGS_USER_ID=alice \
//   TIDINGS_USER_TOKEN=<jwt for alice> TIDINGS_PUBLISH_TOKEN=<jwt, scope publish> \
//   node push.mjs
//
// Optional: CHROMIUM_PATH (default /usr/bin/chromium), TIDINGS_SCREENSHOT_DIR
// (push.png goes there). Exits 0 and prints "browser test passed" on
// success; otherwise saves push-failure.png, prints the page's console and
// exits 1.

import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const TIMEOUT_MS = 10_000;
const TYPE = 'browser.push';

function requiredEnv(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`push: set ${name} (see the top of this file)`);
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

async function apiCall(method, pathname, token, body) {
  const response = await fetch(`${baseUrl}${pathname}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${pathname} answered ${response.status}: ${text}`);
  return text ? JSON.parse(text) : null;
}

/** Polls `probe` until it answers something truthy, or fails saying `what`. */
async function until(what, probe, timeout = TIMEOUT_MS) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await probe();
      if (last) return last;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what} (last: ${last && last.message ? last.message : JSON.stringify(last)})`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function run(context, page) {
  await page.goto(`${baseUrl}/#token=${encodeURIComponent(userToken)}`, { timeout: TIMEOUT_MS });
  await until('the page signs in', async () => (await page.locator('#user-id').textContent()) === userId);

  step('the gear panel offers browser notifications, off for now');
  await page.click('#open-preferences');
  const toggle = page.locator('#push-toggle');
  await toggle.waitFor({ state: 'visible', timeout: TIMEOUT_MS });
  await until('the panel says push is off', async () => (await page.locator('#push-status').textContent()) === 'Off for this browser.');
  if ((await toggle.textContent()) !== 'Enable browser notifications') throw new Error(`the button reads ${await toggle.textContent()}`);
  const registeredBefore = await page.evaluate(() => navigator.serviceWorker.getRegistration('/').then(Boolean));
  if (registeredBefore) throw new Error('the worker was registered before the user asked for notifications');

  step('its click registers the worker and, with no push service reachable, says why');
  await toggle.click();
  const status = await until('the panel explains the outcome', async () => {
    const text = await page.locator('#push-status').textContent();
    return text && text !== 'Working\u2026' && text !== 'Off for this browser.' ? text : null;
  }, 30_000);
  step(`the panel says: ${status}`);
  const subscribed = (await toggle.getAttribute('aria-pressed')) === 'true';
  if (!subscribed && !/push service|subscri/i.test(status)) throw new Error(`the failure is not explained: ${status}`);
  await page.screenshot({ path: path.join(screenshotDir, 'push.png') });
  const scope = await until('the worker is active', () => page.evaluate(() => navigator.serviceWorker.getRegistration('/').then((r) => (r && r.active ? r.scope : null))));
  if (scope !== `${baseUrl}/`) throw new Error(`the worker's scope is ${scope}`);
  const worker = await until('playwright sees the worker', () => context.serviceWorkers().find((w) => w.url() === `${baseUrl}/sw.js`));

  step('a push delivered through the DevTools protocol shows a notification');
  const notification = (await apiCall('POST', '/v1/notifications', publishToken, {
    user_id: userId, type: TYPE, title: 'Deploy finished', body: 'api v42 is live', action_url: '/?from=push',
  })).created[0];
  const cdp = await context.newCDPSession(page);
  const registrations = [];
  cdp.on('ServiceWorker.workerRegistrationUpdated', (event) => registrations.push(...event.registrations));
  await cdp.send('ServiceWorker.enable');
  const registration = await until('CDP reports the registration', () => registrations.find((r) => r.scopeURL === `${baseUrl}/` && !r.isDeleted));
  const payload = { id: notification.id, title: notification.title, body: notification.body, action_url: notification.action_url, unread_count: 1 };
  await cdp.send('ServiceWorker.deliverPushMessage', { origin: baseUrl, registrationId: registration.registrationId, data: JSON.stringify(payload) });
  const shown = await until('the worker shows the notification', () => worker.evaluate(async () => {
    const all = await self.registration.getNotifications();
    return all.length ? all.map((n) => ({ title: n.title, body: n.body, tag: n.tag, data: n.data })) : null;
  }));
  const [first] = shown;
  if (first.title !== 'Deploy finished' || first.body !== 'api v42 is live' || first.tag !== `tidings-${notification.id}` || first.data.action_url !== '/?from=push') {
    throw new Error(`unexpected notification: ${JSON.stringify(shown)}`);
  }

  step('its click records the click through the API');
  const recorded = await worker.evaluate(async () => {
    const [shownNotification] = await self.registration.getNotifications();
    self.dispatchEvent(new NotificationEvent('notificationclick', { notification: shownNotification }));
    return self.lastClick;
  });
  if (recorded !== true) throw new Error('the worker did not record the click');
  const left = await worker.evaluate(() => self.registration.getNotifications().then((all) => all.length));
  if (left !== 0) throw new Error('the clicked notification is still shown');
  const list = await apiCall('GET', '/v1/notifications?status=all', userToken);
  const stored = list.items.find((item) => item.id === notification.id);
  if (!stored || !stored.read_at) throw new Error(`the click did not mark it read: ${JSON.stringify(stored)}`);
  const stats = await apiCall('GET', `/v1/stats/notifications?type=${TYPE}`, publishToken);
  const ofType = stats.find((row) => row.type === TYPE);
  if (!ofType || ofType.clicked !== 1) throw new Error(`the click is not counted: ${JSON.stringify(stats)}`);
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    timeout: 30_000,
  });
  let page;
  try {
    const context = await browser.newContext({ viewport: { width: 1100, height: 760 } });
    await context.grantPermissions(['notifications'], { origin: baseUrl });
    page = await context.newPage();
    page.on('console', (message) => consoleLines.push(`[${message.type()}] ${message.text()}`));
    page.on('pageerror', (error) => consoleLines.push(`[pageerror] ${error.stack || error.message}`));
    await run(context, page);
    console.log('browser test passed');
  } catch (error) {
    process.exitCode = 1;
    console.error(`browser test failed: ${error.stack || error.message}`);
    if (page) {
      const shot = path.join(screenshotDir, 'push-failure.png');
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
