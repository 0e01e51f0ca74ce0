// The "Hub status" panel in a real browser: on a server that publishes its
// figures to the public topic tidings:status, the panel appears with the
// figures and they update live; on a server that does not, the status
// stream is refused (403), the panel stays hidden and the rest of the page
// is live all the same.
//
//   TIDINGS_URL=http://127.0.0.1:PORT TIDINGS_USER_TOKEN=<jwt, no scope> \
//   TIDINGS_OFF_URL=http://127.0.0.1:PORT2 TIDINGS_OFF_TOKEN=<jwt, no scope> \
//   node hub_status.mjs
//
// TIDINGS_URL's server must have TIDINGS_STATUS_TOPIC_SECS at 1 or 2 (the
// figures must change within the timeout); TIDINGS_OFF_URL's must have it
// off. Optional: CHROMIUM_PATH (default /usr/bin/chromium),
// TIDINGS_SCREENSHOT_DIR (default the system's temporary folder;
// hub_status.png goes there). Exits 0 and prints "hub status browser test
// passed" on success; otherwise saves hub_status-failure.png, prints the
// page's console and exits 1.

import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const TIMEOUT_MS = 10_000;

function requiredEnv(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`hub_status: set ${name} (see the top of this file)`);
    process.exit(1);
  }
  return value;
}

const baseUrl = requiredEnv('TIDINGS_URL').replace(/\/+$/, '');
const userToken = requiredEnv('TIDINGS_USER_TOKEN');
const offUrl = requiredEnv('TIDINGS_OFF_URL').replace(/\/+$/, '');
const offToken = requiredEnv('TIDINGS_OFF_TOKEN');
const screenshotDir = process.env.TIDINGS_SCREENSHOT_DIR || os.tmpdir();

const consoleLines = [];

function step(message) {
  console.log(`- ${message}`);
}

/** The raw number behind a figure (its title), or null before the first figures. */
async function figure(page, name) {
  const title = await page.locator(`#hub-figures [data-figure="${name}"]`).getAttribute('title');
  return title === null ? null : Number(title);
}

function failOnCspViolations() {
  const violations = consoleLines.filter((line) => /Content Security Policy/i.test(line));
  if (violations.length > 0) throw new Error(`the page broke its CSP:\n${violations.join('\n')}`);
}

async function checkLive(page) {
  step('open the page on the server that publishes its status');
  await page.goto(`${baseUrl}/#token=${encodeURIComponent(userToken)}`, { timeout: TIMEOUT_MS });
  await page.locator('#connection-state[data-state="live"]').waitFor({ timeout: TIMEOUT_MS });

  step('the panel appears with figures');
  const panel = page.locator('#hub-status');
  await panel.waitFor({ state: 'visible', timeout: TIMEOUT_MS });
  await page.locator('#hub-status[data-state="live"]').waitFor({ timeout: TIMEOUT_MS });
  const names = ['open_streams', 'events_appended', 'frames_delivered', 'writer_batches', 'writer_jobs', 'uptime_secs'];
  const first = {};
  for (const name of names) {
    first[name] = await figure(page, name);
    if (!Number.isInteger(first[name]) || first[name] < 0) {
      throw new Error(`figure ${name} reads ${first[name]}, expected a count`);
    }
    const text = await page.locator(`#hub-figures [data-figure="${name}"]`).textContent();
    if (!text || text === '–') throw new Error(`figure ${name} shows ${JSON.stringify(text)}`);
  }
  // The first figures may predate the page's second stream (they are taken
  // every second or two, and the two streams open independently): wait for
  // a snapshot that counts both, rather than judging the first one.
  step("open_streams counts this page's two streams");
  await page.waitForFunction(
    () => Number(document.querySelector('#hub-figures [data-figure="open_streams"]').title) >= 2,
    null,
    { timeout: TIMEOUT_MS },
  ).catch(async () => {
    throw new Error(`open_streams reads ${await figure(page, 'open_streams')}, expected at least this page's two streams`);
  });
  const stateText = await page.locator('#hub-status-state').textContent();
  if (!/^as of /.test(stateText || '')) throw new Error(`the panel's time reads ${JSON.stringify(stateText)}`);

  step('the figures update live (events appended grows with every status event)');
  await page.waitForFunction(
    (before) => Number(document.querySelector('#hub-figures [data-figure="events_appended"]').title) > before,
    first.events_appended,
    { timeout: TIMEOUT_MS },
  );
  const uptime = await figure(page, 'uptime_secs');
  if (uptime < first.uptime_secs) throw new Error(`uptime went back from ${first.uptime_secs} to ${uptime}`);
  await panel.scrollIntoViewIfNeeded();
  await page.screenshot({ path: path.join(screenshotDir, 'hub_status.png') });
}

async function checkOff(page) {
  step('open the page on a server with the status topic off');
  const refused = page.waitForResponse(
    (response) => new URL(response.url()).pathname === '/v1/stream' && new URL(response.url()).searchParams.get('topic') === 'tidings:status',
    { timeout: TIMEOUT_MS },
  );
  const probed = page.waitForResponse(
    (response) => decodeURIComponent(new URL(response.url()).pathname) === '/v1/topics/tidings:status/events',
    { timeout: TIMEOUT_MS },
  );
  await page.goto(`${offUrl}/#token=${encodeURIComponent(offToken)}`, { timeout: TIMEOUT_MS });
  const stream = await refused;
  if (stream.status() !== 403) throw new Error(`the status stream answered ${stream.status()}, expected 403`);
  const probe = await probed;
  if (probe.status() !== 403) throw new Error(`the status probe answered ${probe.status()}, expected 403`);

  step('the page gives up on the status (no retries), the panel stays hidden, the page is live all the same');
  await page.locator('#hub-status[data-state="off"]').waitFor({ state: 'attached', timeout: TIMEOUT_MS });
  await page.locator('#connection-state[data-state="live"]').waitFor({ timeout: TIMEOUT_MS });
  if (await page.locator('#hub-status').isVisible()) throw new Error('the panel shows on a server without status');
  if (await page.locator('#toast').isVisible()) {
    throw new Error(`a toast showed: ${await page.locator('#toast').textContent()}`);
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
    page = await browser.newPage({ viewport: { width: 1100, height: 760 } });
    page.on('console', (message) => consoleLines.push(`[${message.type()}] ${message.text()}`));
    page.on('pageerror', (error) => consoleLines.push(`[pageerror] ${error.stack || error.message}`));
    await checkLive(page);
    await checkOff(page);
    failOnCspViolations();
    if (consoleLines.some((line) => line.startsWith('[pageerror]'))) throw new Error('the page threw');
    console.log('hub status browser test passed');
  } catch (error) {
    process.exitCode = 1;
    console.error(`hub status browser test failed: ${error.stack || error.message}`);
    if (page) {
      const shot = path.join(screenshotDir, 'hub_status-failure.png');
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
  console.error(`hub status browser test failed: ${error.stack || error.message}`);
  process.exitCode = 1;
});
