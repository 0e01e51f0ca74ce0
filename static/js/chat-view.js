/*
 * The chat's view: the conversation list, the open conversation (members,
 * messages, typing line) and the wiring of its controls. Rendered at most
 * once per animation frame (scheduleChatRender); list items and messages
 * are kept by key and updated in place, user data only via textContent.
 * Scrolling keeps the newest message in view for whoever was reading it.
 */

import { $, clockTime, hueOf, make, shortRelativeTime } from './dom.js';
import { me, session } from './session.js';
import {
  activityOf, chat, conversationName, key, otherMembers, othersReadUpTo, scheduleChatRender, threadFor,
} from './chat-state.js';
import { fillPresenceDot, presenceDot, presenceWords, setMyStatus } from './presence.js';
import {
  addMember, createConversation, leaveConversation, loadOlder, maybeMarkRead, onComposerInput, onComposerKeydown,
  retryMessage, selectConversation, sendComposer, stopMyTyping, toggleNewConversation,
} from './chat.js';

const AT_BOTTOM_PX = 48;

const GROUP_WINDOW_MS = 5 * 60 * 1000;

function renderChat() {
  if (!session.token) return;
  renderPane();
  maybeMarkRead(); // before the list, so that its badge never flashes
  renderConversationList();
  $('my-presence-dot').dataset.status = chat.myStatus;
  $('presence-status').value = chat.myStatus;
}

function renderConversationList() {
  const list = $('conversation-list');
  const conversations = [...chat.conversations.values()]
    .sort((a, b) => activityOf(b) - activityOf(a) || Number(b.id) - Number(a.id));
  const existing = new Map([...list.children].map((item) => [item.dataset.id, item]));
  const wanted = new Set(conversations.map((c) => key(c.id)));
  for (const [id, item] of existing) if (!wanted.has(id)) item.remove();
  conversations.forEach((conversation, index) => {
    const item = existing.get(key(conversation.id)) || createConversationItem(conversation);
    fillConversationItem(item, conversation);
    if (list.children[index] !== item) list.insertBefore(item, list.children[index] || null);
  });
  const empty = chat.conversations.size === 0;
  $('conversation-empty').hidden = !empty || !$('new-conversation').hidden;
  $('conversation-empty-title').textContent = !chat.loaded && !chat.failed ? 'Loading…'
    : chat.failed ? 'Could not load your conversations' : 'No conversations yet';
  $('conversation-empty-hint').hidden = !chat.loaded && !chat.failed;
  $('conversation-empty-hint').textContent = chat.failed
    ? 'They load again when the connection comes back.'
    : 'Start one with the + button: add someone by their user id.';
}

function createConversationItem(conversation) {
  const item = make('li', 'conversation');
  item.dataset.id = key(conversation.id);
  const open = make('button', 'conversation-open');
  open.type = 'button';
  open.addEventListener('click', () => selectConversation(item.dataset.id));
  const avatar = make('span', 'avatar');
  avatar.setAttribute('aria-hidden', 'true');
  avatar.append(make('span', 'avatar-initial'), make('span', 'avatar-presence'));
  const top = make('span', 'conversation-top');
  top.append(make('span', 'conversation-title'), make('time', 'conversation-time'));
  const bottom = make('span', 'conversation-bottom');
  bottom.append(make('span', 'conversation-preview'), make('span', 'conversation-unread'));
  const text = make('span', 'conversation-text');
  text.append(top, bottom);
  open.append(avatar, text);
  item.append(open);
  return item;
}

function fillConversationItem(item, conversation) {
  const id = key(conversation.id);
  const name = conversationName(conversation);
  const others = otherMembers(conversation);
  const selected = chat.selected === id;
  item.classList.toggle('selected', selected);
  const open = item.querySelector('.conversation-open');
  if (selected) open.setAttribute('aria-current', 'true');
  else open.removeAttribute('aria-current');

  const avatar = item.querySelector('.avatar');
  avatar.dataset.hue = hueOf(conversation.title ? `#${id}` : others[0] || me());
  avatar.classList.toggle('group', others.length > 1);
  item.querySelector('.avatar-initial').textContent = [...(name.trim() || '?')][0].toUpperCase();
  // One dot per other member (the first few), on the avatar's corner.
  const dots = item.querySelector('.avatar-presence');
  const shown = others.slice(0, 3);
  if (dots.children.length !== shown.length || shown.some((user, i) => dots.children[i].dataset.user !== user)) {
    dots.replaceChildren(...shown.map(presenceDot));
  }
  for (const dot of dots.children) fillPresenceDot(dot);

  item.querySelector('.conversation-title').textContent = name;
  item.querySelector('.conversation-title').title = conversation.members.join(', ');
  const time = item.querySelector('.conversation-time');
  const at = conversation.last_message ? conversation.last_message.created_at : conversation.created_at;
  time.dateTime = at;
  time.textContent = shortRelativeTime(at);
  time.title = new Date(at).toLocaleString();

  const preview = item.querySelector('.conversation-preview');
  const last = conversation.last_message;
  let text = 'No messages yet';
  if (last) {
    const who = last.sender_id === me() ? 'You: ' : others.length > 1 ? `${last.sender_id}: ` : '';
    text = who + (last.content === null || last.deleted_at ? 'Message deleted' : last.content.replace(/\s+/g, ' '));
  }
  preview.textContent = text;
  preview.classList.toggle('muted', !last || Boolean(last.deleted_at));

  const unread = Number(conversation.unread_count) || 0;
  const badge = item.querySelector('.conversation-unread');
  badge.textContent = unread > 99 ? '99+' : String(unread);
  badge.hidden = unread <= 0;
  item.classList.toggle('has-unread', unread > 0);
  open.setAttribute('aria-label', `${name}${unread > 0 ? `, ${unread} unread` : ''}: ${text}`);
}

function renderPane() {
  const id = chat.selected;
  const conversation = id ? chat.conversations.get(id) : null;
  $('pane-empty').hidden = Boolean(conversation);
  $('conversation-view').hidden = !conversation;
  if (!conversation) {
    $('typing-indicator').textContent = '';
    delete $('typing-indicator').dataset.active;
    return;
  }
  $('conversation-name').textContent = conversationName(conversation);
  renderMembers(conversation);
  renderMessages(id, conversation);
  renderTyping(id);
}

/**
 * The members under the title, each with a presence dot. With one other
 * member, their status in words instead ("online", "last seen 5 min ago").
 */
function renderMembers(conversation) {
  const list = $('member-list');
  const others = otherMembers(conversation);
  const members = others.length === 1 ? others
    : [...conversation.members].sort((a, b) => (a === me()) - (b === me()) || a.localeCompare(b));
  if (list.children.length !== members.length || members.some((user, i) => list.children[i].dataset.user !== user)) {
    list.replaceChildren(...members.map((user) => {
      const item = make('li', 'member');
      item.dataset.user = user;
      item.append(presenceDot(user), make('span', 'member-name'));
      return item;
    }));
  }
  for (const item of list.children) {
    const user = item.dataset.user;
    fillPresenceDot(item.querySelector('.presence-dot'));
    let text = user === me() ? `${user} (you)` : user;
    if (others.length === 1) {
      const status = presenceWords(user);
      text = conversation.title ? `${user} · ${status}` : status;
    }
    item.querySelector('.member-name').textContent = text;
  }
}

/** The thread in display order: sent by id, then what is still on its way. */
function threadItems(thread) {
  const sent = [...thread.messages.values()].sort((a, b) => Number(a.id) - Number(b.id));
  const pending = [...thread.pending.values()].sort((a, b) => a.created_at.localeCompare(b.created_at));
  return [...sent, ...pending];
}

/** Own messages keep one element from "pending" to "sent": keyed by their client id. */
function renderKey(message) {
  return message.sender_id === me() && message.client_message_id ? `c:${message.client_message_id}` : `m:${message.id}`;
}

function renderMessages(id, conversation) {
  const thread = threadFor(id);
  const list = $('message-list');
  const scroller = $('message-scroll');
  if (chat.renderedConversation !== id) {
    list.replaceChildren();
    chat.renderedConversation = id;
    chat.renderedNewest = null;
    $('jump-latest').hidden = true;
  }
  const wasAtBottom = chat.atBottom;
  const previousHeight = scroller.scrollHeight;
  const previousTop = scroller.scrollTop;

  const items = threadItems(thread);
  const readUpTo = othersReadUpTo(thread);
  const existing = new Map([...list.children].map((node) => [node.dataset.key, node]));
  const wanted = new Set(items.map(renderKey));
  for (const [k, node] of existing) if (!wanted.has(k)) node.remove();
  let previous = null;
  items.forEach((message, index) => {
    const k = renderKey(message);
    const node = existing.get(k) || createMessageItem(message, k);
    fillMessageItem(node, message, previous, readUpTo, conversation);
    if (list.children[index] !== node) list.insertBefore(node, list.children[index] || null);
    previous = message;
  });

  const loaded = thread.nextCursor !== undefined;
  $('load-older').hidden = !thread.nextCursor;
  $('load-older').disabled = Boolean(thread.loading);
  $('load-older').textContent = thread.loading && loaded ? 'Loading…' : 'Load older messages';
  const start = $('history-start');
  start.hidden = loaded && Boolean(thread.nextCursor);
  start.textContent = !loaded ? 'Loading messages…'
    : items.length === 0 ? 'No messages yet. Say hello!' : 'This is the beginning of the conversation.';

  const newest = items.length ? renderKey(items[items.length - 1]) : null;
  const grew = newest !== chat.renderedNewest;
  chat.renderedNewest = newest;
  if (chat.forceScroll || (wasAtBottom && !chat.anchorOlder)) {
    scroller.scrollTop = scroller.scrollHeight;
    chat.forceScroll = false;
  } else if (chat.anchorOlder) {
    scroller.scrollTop = previousTop + (scroller.scrollHeight - previousHeight);
  } else if (grew && items.length) {
    $('jump-latest').hidden = false;
  }
  chat.anchorOlder = false;
  chat.atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight <= AT_BOTTOM_PX;
  if (chat.atBottom) $('jump-latest').hidden = true;
}

function createMessageItem(message, renderedKey) {
  const item = make('li', 'message');
  item.dataset.key = renderedKey;
  const bubble = make('div', 'message-bubble');
  const meta = make('span', 'message-meta');
  const status = make('span', 'message-status');
  const retry = make('button', 'message-retry', 'Retry');
  retry.type = 'button';
  retry.addEventListener('click', () => retryMessage(item.dataset.conversation, item.dataset.clientId));
  meta.append(make('span', 'message-edited', 'edited'), make('time', 'message-time'), status, retry);
  bubble.append(make('p', 'message-content'), meta);
  item.append(make('span', 'message-sender'), bubble);
  return item;
}

function fillMessageItem(item, message, previous, readUpTo, conversation) {
  const mine = message.sender_id === me();
  const sent = message.id !== undefined;
  const deleted = sent && (message.content === null || Boolean(message.deleted_at));
  item.classList.toggle('mine', mine);
  item.classList.toggle('deleted', deleted);
  item.dataset.conversation = key(message.conversation_id);
  item.dataset.sender = message.sender_id;
  if (sent) item.dataset.id = key(message.id);
  else delete item.dataset.id;
  if (message.client_message_id) item.dataset.clientId = message.client_message_id;
  // Same sender within a few minutes: one block, the name shown once.
  const continued = Boolean(previous) && previous.sender_id === message.sender_id
    && Date.parse(message.created_at) - Date.parse(previous.created_at) < GROUP_WINDOW_MS;
  item.classList.toggle('continued', continued);
  const sender = item.querySelector('.message-sender');
  sender.textContent = message.sender_id;
  sender.hidden = mine || continued || otherMembers(conversation).length <= 1; // a 1:1 says who
  sender.dataset.hue = hueOf(message.sender_id);

  const content = item.querySelector('.message-content');
  content.textContent = deleted ? 'This message was deleted' : message.content;
  const edited = item.querySelector('.message-edited');
  edited.hidden = !sent || deleted || !message.edited_at;
  if (message.edited_at) edited.title = `Edited ${new Date(message.edited_at).toLocaleString()}`;
  const time = item.querySelector('.message-time');
  time.dateTime = message.created_at;
  time.textContent = clockTime(message.created_at);
  time.title = new Date(message.created_at).toLocaleString();

  const status = item.querySelector('.message-status');
  const retry = item.querySelector('.message-retry');
  if (mine) {
    const messageState = sent ? 'sent' : message.state;
    const read = sent && readUpTo >= Number(message.id);
    item.dataset.state = messageState;
    item.dataset.read = String(read);
    const label = messageState === 'pending' ? 'Sending…' : messageState === 'failed' ? 'Not sent' : read ? 'Read' : 'Sent';
    status.dataset.label = label;
    status.title = messageState === 'failed' && message.error ? `Not sent: ${message.error}` : label;
    status.setAttribute('aria-label', label);
    status.textContent = messageState === 'failed' ? 'Not sent' : '';
    status.hidden = deleted;
    retry.hidden = messageState !== 'failed';
  } else {
    delete item.dataset.state;
    delete item.dataset.read;
    status.hidden = true;
    retry.hidden = true;
  }
}

function renderTyping(id) {
  const typists = [...(chat.typing.get(id) || new Map()).keys()];
  const indicator = $('typing-indicator');
  let text = '';
  if (typists.length === 1) text = `${typists[0]} is typing…`;
  else if (typists.length === 2) text = `${typists[0]} and ${typists[1]} are typing…`;
  else if (typists.length > 2) text = `${typists[0]}, ${typists[1]} and ${typists.length - 2} more are typing…`;
  indicator.textContent = text;
  if (text) indicator.dataset.active = 'true';
  else delete indicator.dataset.active;
}

function onMessageScroll() {
  const scroller = $('message-scroll');
  chat.atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight <= AT_BOTTOM_PX;
  if (chat.atBottom) {
    $('jump-latest').hidden = true;
    maybeMarkRead();
    renderConversationList();
  }
}

function jumpToLatest() {
  const scroller = $('message-scroll');
  scroller.scrollTop = scroller.scrollHeight;
  onMessageScroll();
}

/** Wires the chat's controls and makes `scheduleChatRender` draw with `renderChat`. */
export function wireChat() {
  scheduleChatRender.use(renderChat);
  $('new-conversation-toggle').addEventListener('click', () => toggleNewConversation());
  $('new-conversation-cancel').addEventListener('click', () => toggleNewConversation(false));
  $('new-conversation').addEventListener('submit', createConversation);
  $('presence-status').addEventListener('change', (event) => setMyStatus(event.target.value));
  $('back-to-list').addEventListener('click', () => selectConversation(null));
  $('add-member-toggle').addEventListener('click', () => {
    const form = $('add-member');
    form.hidden = !form.hidden;
    $('add-member-toggle').setAttribute('aria-expanded', String(!form.hidden));
    if (!form.hidden) $('add-member-id').focus();
  });
  $('add-member').addEventListener('submit', addMember);
  $('leave-conversation').addEventListener('click', leaveConversation);
  $('load-older').addEventListener('click', loadOlder);
  $('jump-latest').addEventListener('click', jumpToLatest);
  $('message-scroll').addEventListener('scroll', onMessageScroll, { passive: true });
  const composer = $('composer');
  composer.addEventListener('input', onComposerInput);
  composer.addEventListener('keydown', onComposerKeydown);
  composer.addEventListener('blur', stopMyTyping);
  $('composer-form').addEventListener('submit', (event) => {
    event.preventDefault();
    sendComposer();
    $('composer').focus();
  });
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') {
      chat.readFailed.clear();
      scheduleChatRender();
    } else {
      stopMyTyping();
    }
  });
  window.addEventListener('focus', () => {
    chat.readFailed.clear();
    scheduleChatRender();
  });
  // The composer grows, the window shrinks: whoever read the newest message keeps it in view.
  new ResizeObserver(() => {
    const scroller = $('message-scroll');
    if (chat.atBottom && scroller.clientHeight > 0) scroller.scrollTop = scroller.scrollHeight;
  }).observe($('message-scroll'));
  window.addEventListener('pagehide', stopMyTyping);
}
