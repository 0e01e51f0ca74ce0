// The chat in a real browser, two users in two separate browser contexts:
// alice starts a conversation with bob through the page, bob sees it
// appear; alice types and bob sees "alice is typing…"; alice sends "Hello
// Bob" (pending, then sent) and bob sees it; bob has the conversation open,
// so it is marked read and alice sees the read tick on her message. Then a
// send that fails on the wire shows "failed" with a retry button, and the
// retry (same client_message_id) delivers it exactly once.
//
//   TIDINGS_URL=http://127.0.0.1:PORT \
//   TIDINGS_ALICE_ID=alice-1 TIDINGS_ALICE_TOKEN=<jwt for alice-1> \
//   TIDINGS_BOB_ID=bob-1 TIDINGS_BOB_TOKEN=<jwt for bob-1> \
//   node chat.mjs
//
// Both users should be fresh (no conversations yet).
// Optional: CHROMIUM_PATH (default /usr/bin/chromium), TIDINGS_SCREENSHOT_DIR
// (default the system's temporary folder; chat-alice.png and chat-bob.png go
// there), TIDINGS_COLOR_SCHEME (light, the default, or dark). Exits 0 and
// prints "chat browser test passed" on success; otherwise saves
// chat-failure-alice.png and chat-failure-bob.png, prints both pages'
// consoles and exits 1.

import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const TIMEOUT_MS = 10_000;
const HELLO = 'Hello Bob';
const RETRIED = 'This one needed a retry';

function requiredEnv(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`chat: set ${name} (see the top of this file)`);
    process.exit(1);
  }
  return value;
}

const baseUrl = requiredEnv('TIDINGS_URL').replace(/\/+$/, '');
const alice = { name: 'alice', id: requiredEnv('TIDINGS_ALICE_ID'), token: requiredEnv('TIDINGS_ALICE_TOKEN'), console: [] };
const bob = { name: 'bob', id: requiredEnv('TIDINGS_BOB_ID'), token: requiredEnv('TIDINGS_BOB_TOKEN'), console: [] };
const screenshotDir = process.env.TIDINGS_SCREENSHOT_DIR || os.tmpdir();
const colorScheme = process.env.TIDINGS_COLOR_SCHEME === 'dark' ? 'dark' : 'light';

function step(message) {
  console.log(`- ${message}`);
}

const wait = (locator, state = 'visible') => locator.waitFor({ state, timeout: TIMEOUT_MS });

/** Resolves when `predicate` (run in the page) is true; bounded. */
function until(page, predicate, arg) {
  return page.waitForFunction(predicate, arg, { timeout: TIMEOUT_MS, polling: 50 });
}

async function open(user) {
  await user.page.goto(`${baseUrl}/#token=${encodeURIComponent(user.token)}`, { timeout: TIMEOUT_MS });
  await wait(user.page.locator('#connection-state[data-state="live"]'));
  await wait(user.page.locator('#chat'));
}

async function run() {
  const a = alice.page;
  const b = bob.page;

  step('both pages open and go live');
  await Promise.all([open(alice), open(bob)]);

  step('alice starts a conversation with bob from the "New conversation" form');
  await a.locator('#new-conversation-toggle').click({ timeout: TIMEOUT_MS });
  await wait(a.locator('#new-conversation'));
  await a.locator('#new-conversation-members').fill(bob.id, { timeout: TIMEOUT_MS });
  const created = a.waitForResponse(
    (response) => response.request().method() === 'POST' && new URL(response.url()).pathname === '/v1/conversations',
    { timeout: TIMEOUT_MS },
  );
  await a.locator('#new-conversation-create').click({ timeout: TIMEOUT_MS });
  const response = await created;
  if (response.status() !== 201) {
    throw new Error(`POST /v1/conversations answered ${response.status()}: ${await response.text()}`);
  }
  const conversation = await response.json();
  const conversationId = String(conversation.id);
  const sorted = [...conversation.members].sort();
  if (sorted.join() !== [alice.id, bob.id].sort().join()) {
    throw new Error(`the conversation's members are ${JSON.stringify(conversation.members)}`);
  }
  const aliceItem = a.locator(`#conversation-list .conversation.selected[data-id="${conversationId}"]`);
  await wait(aliceItem.locator('.conversation-title', { hasText: bob.id }));
  await wait(a.locator('#conversation-view'));

  step('bob sees it appear in his list, titled with alice\'s id, and opens it');
  const bobItem = b.locator(`#conversation-list .conversation[data-id="${conversationId}"]`);
  await wait(bobItem.locator('.conversation-title', { hasText: alice.id }));
  await bobItem.locator('.conversation-open').click({ timeout: TIMEOUT_MS });
  await wait(b.locator(`#conversation-list .conversation.selected[data-id="${conversationId}"]`));
  await wait(b.locator('#conversation-view'));

  step('each sees the other online (presence dots)');
  await wait(a.locator(`#conversation-list .conversation[data-id="${conversationId}"] .presence-dot[data-user="${bob.id}"][data-status="online"]`));
  await wait(b.locator(`#member-list .presence-dot[data-user="${alice.id}"][data-status="online"]`));

  step('alice types; bob sees "alice is typing…"');
  const composer = a.locator('#composer');
  await composer.click({ timeout: TIMEOUT_MS });
  await composer.pressSequentially(HELLO, { timeout: TIMEOUT_MS });
  await wait(b.locator('#typing-indicator', { hasText: `${alice.id} is typing…` }));
  await b.screenshot({ path: path.join(screenshotDir, 'chat-bob-typing.png'), animations: 'disabled' });

  step('alice presses Enter: her message shows at once, then turns "sent"');
  const sent = a.waitForResponse(
    (r) => r.request().method() === 'POST' && new URL(r.url()).pathname === `/v1/conversations/${conversationId}/messages`,
    { timeout: TIMEOUT_MS },
  );
  await composer.press('Enter', { timeout: TIMEOUT_MS });
  await wait(a.locator('#message-list .message.mine', { hasText: HELLO }));
  if ((await composer.inputValue()) !== '') throw new Error('the composer was not cleared after sending');
  const sendResponse = await sent;
  if (sendResponse.status() !== 201) {
    throw new Error(`POST .../messages answered ${sendResponse.status()}: ${await sendResponse.text()}`);
  }
  const message = await sendResponse.json();
  const request = sendResponse.request().postDataJSON();
  if (!request.client_message_id || request.content !== HELLO) {
    throw new Error(`the page sent ${JSON.stringify(request)}, expected the content and a client_message_id`);
  }
  const mine = a.locator(`#message-list .message.mine[data-id="${message.id}"]`);
  await wait(a.locator(`#message-list .message.mine[data-id="${message.id}"][data-state="sent"]`));
  if ((await a.locator('#message-list .message', { hasText: HELLO }).count()) !== 1) {
    throw new Error('alice\'s message shows more than once (the answer and the echo were not merged)');
  }

  step('bob sees the message, and alice no longer typing');
  await wait(b.locator(`#message-list .message[data-id="${message.id}"]:not(.mine) .message-content`, { hasText: HELLO }));
  await until(b, () => document.getElementById('typing-indicator').textContent === '');

  step('bob has it open and on screen: it is read, and alice sees the read tick');
  await wait(a.locator(`#message-list .message.mine[data-id="${message.id}"][data-read="true"]`));
  await wait(b.locator(`#conversation-list .conversation[data-id="${conversationId}"] .conversation-unread`), 'hidden');
  if ((await mine.getAttribute('data-state')) !== 'sent') throw new Error('the read message is not "sent"');

  await checkRetry(conversationId);

  await a.screenshot({ path: path.join(screenshotDir, 'chat-alice.png'), animations: 'disabled' });
  await b.screenshot({ path: path.join(screenshotDir, 'chat-bob.png'), animations: 'disabled' });
}

/**
 * The first attempt of a send fails on the wire: the message stays, marked
 * failed, with a retry button. The retry goes out with the same
 * client_message_id and bob receives the message exactly once.
 */
async function checkRetry(conversationId) {
  const a = alice.page;
  const b = bob.page;
  const messagesPath = `/v1/conversations/${conversationId}/messages`;
  const attempts = [];
  const failFirst = async (route) => {
    const body = route.request().postDataJSON();
    attempts.push(body);
    if (attempts.length === 1) await route.abort('connectionfailed');
    else await route.continue();
  };
  await a.route((url) => url.pathname === messagesPath, failFirst);
  try {
    step('a send whose request fails shows "failed" with a retry button');
    await a.locator('#composer').fill(RETRIED, { timeout: TIMEOUT_MS });
    await a.locator('#send').click({ timeout: TIMEOUT_MS });
    const failed = a.locator('#message-list .message.mine[data-state="failed"]', { hasText: RETRIED });
    await wait(failed);
    await wait(failed.locator('.message-retry'));
    await a.screenshot({ path: path.join(screenshotDir, 'chat-alice-failed.png'), animations: 'disabled' });

    step('retry sends the same client_message_id; it arrives once');
    await failed.locator('.message-retry').click({ timeout: TIMEOUT_MS });
    await wait(a.locator('#message-list .message.mine[data-state="sent"]', { hasText: RETRIED }));
    if (attempts.length !== 2 || attempts[0].client_message_id !== attempts[1].client_message_id) {
      throw new Error(`expected two attempts with one client_message_id, saw ${JSON.stringify(attempts)}`);
    }
    await wait(b.locator('#message-list .message:not(.mine)', { hasText: RETRIED }));
    for (const page of [a, b]) {
      const count = await page.locator('#message-list .message', { hasText: RETRIED }).count();
      if (count !== 1) throw new Error(`the retried message shows ${count} times`);
    }
  } finally {
    await a.unroute((url) => url.pathname === messagesPath, failFirst);
  }
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    timeout: 30_000,
  });
  try {
    for (const user of [alice, bob]) {
      // Separate contexts: separate localStorage, as on two devices.
      const context = await browser.newContext({ viewport: { width: 1100, height: 720 }, colorScheme });
      user.page = await context.newPage();
      user.page.on('console', (message) => user.console.push(`[${message.type()}] ${message.text()}`));
      user.page.on('pageerror', (error) => user.console.push(`[pageerror] ${error.stack || error.message}`));
    }
    await run();
    for (const user of [alice, bob]) {
      // The failed send of checkRetry logs "Failed to load resource": expected.
      const errors = user.console.filter((line) => line.startsWith('[pageerror]')
        || (line.startsWith('[error]') && !line.includes('Failed to load resource')));
      if (errors.length) throw new Error(`${user.name}'s page logged errors:\n  ${errors.join('\n  ')}`);
    }
    console.log('chat browser test passed');
  } catch (error) {
    process.exitCode = 1;
    console.error(`chat browser test failed: ${error.stack || error.message}`);
    for (const user of [alice, bob]) {
      if (!user.page) continue;
      const shot = path.join(screenshotDir, `chat-failure-${user.name}.png`);
      await user.page.screenshot({ path: shot, fullPage: true }).then(
        () => console.error(`screenshot: ${shot}`),
        (shotError) => console.error(`no screenshot of ${user.name}: ${shotError.message}`),
      );
    }
    for (const user of [alice, bob]) {
      console.error(`${user.name}'s page console (${user.console.length} messages):`);
      for (const line of user.console) console.error(`  ${line}`);
    }
  } finally {
    await browser.close();
  }
}

main().catch((error) => {
  console.error(`chat browser test failed: ${error.stack || error.message}`);
  process.exitCode = 1;
});
