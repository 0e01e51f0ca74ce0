/*
 * The chat beside the bell: conversations and messages, loaded over REST
 * once the stream is open (the stream carries no chat history), then kept
 * current by its chat events, merged by id (see chat-state.js). Own
 * messages show at once as "pending"; a retry re-sends the same
 * client_message_id and the server stores it once. Typing (ours and
 * others'), read marks (sent when the newest message is on screen) and the
 * composer live here; chat-view.js draws it all.
 */

import { $, showToast } from './dom.js';
import { api, me, reportError, session } from './session.js';
import {
  acceptMessage, allKnownUsers, chat, key, newestMessageId, resetChat, scheduleChatRender, threadFor, upsertConversation,
} from './chat-state.js';
import { loadPresence, setMyStatus } from './presence.js';

const CHAT_PAGE_SIZE = 50;

const TYPING_RENEW_MS = 3000; // the server forgets "typing" after 5 s

const TYPING_STALE_MS = 7000; // if its "stopped" never reaches us

const SELECTED_KEY = 'tidings_chat_selected'; // + ':' + the user

function newClientId() {
  if (crypto.randomUUID) return crypto.randomUUID(); // secure contexts only
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

// ------------------------------------------------ loading

/** Forgets a conversation the user left or lost (closing it if open). */
export function removeConversation(id) {
  id = key(id);
  chat.conversations.delete(id);
  chat.threads.delete(id);
  chat.typing.delete(id);
  chat.readSent.delete(id);
  if (chat.loading) chat.touchedWhileLoading.add(id);
  if (chat.selected === id) selectConversation(null);
}

/** The conversation list (on start, after a reset or a reconnect without resume point). */
export function loadChat() {
  if (chat.loading) {
    chat.reloadAgain = true;
    return chat.loading;
  }
  const token = session.token;
  const known = new Set(chat.conversations.keys());
  chat.touchedWhileLoading = new Set();
  chat.loading = (async () => {
    try {
      const list = await api('GET', '/v1/conversations');
      if (token !== session.token) return;
      const listed = new Set();
      for (const conversation of list) {
        upsertConversation(conversation);
        listed.add(key(conversation.id));
      }
      // Left meanwhile (from another tab, say): gone unless the stream just said otherwise.
      for (const id of known) {
        if (!listed.has(id) && !chat.touchedWhileLoading.has(id)) removeConversation(id);
      }
      chat.loaded = true;
      chat.failed = false;
      // Histories may have moved on: reload the open one, forget the others.
      for (const [id, thread] of chat.threads) {
        if (id === chat.selected) continue;
        thread.messages.clear();
        thread.nextCursor = undefined;
      }
      if (chat.selected && !chat.conversations.has(chat.selected)) selectConversation(null);
      if (chat.selected) loadNewest(chat.selected);
      loadPresence(allKnownUsers());
    } catch (error) {
      if (token !== session.token) return;
      chat.failed = true;
      reportError(error, 'Could not load conversations');
    } finally {
      if (token === session.token) {
        chat.loading = null;
        if (chat.reloadAgain) {
          chat.reloadAgain = false;
          loadChat();
        }
      }
      scheduleChatRender();
    }
  })();
  scheduleChatRender();
  return chat.loading;
}

/**
 * The newest page of a conversation, merged into what we have. If it does
 * not reach back to what we had (many messages while away), what we had is
 * dropped so that "load older" fills the gap instead of skipping it.
 */
async function loadNewest(conversationId) {
  const id = key(conversationId);
  const thread = threadFor(id);
  if (thread.loading) return thread.loading;
  const token = session.token;
  thread.loading = (async () => {
    try {
      const page = await api('GET', `/v1/conversations/${encodeURIComponent(id)}/messages?limit=${CHAT_PAGE_SIZE}`);
      if (token !== session.token || chat.threads.get(id) !== thread) return;
      const oldestInPage = page.items.length ? Number(page.items[page.items.length - 1].id) : 0;
      const gap = page.next_cursor && thread.nextCursor !== undefined && newestMessageId(thread) < oldestInPage;
      if (gap || thread.nextCursor === undefined) {
        if (gap) thread.messages.clear();
        thread.nextCursor = page.next_cursor || null;
      }
      page.items.forEach(acceptMessage);
      if (id === chat.selected) chat.forceScroll = chat.forceScroll || chat.atBottom;
    } catch (error) {
      if (token !== session.token) return;
      if (error.status === 404) removeConversation(id);
      else reportError(error, 'Could not load messages');
    } finally {
      thread.loading = null;
      scheduleChatRender();
    }
  })();
  scheduleChatRender();
  return thread.loading;
}

/** "Load older messages": the page before the oldest one shown. */
export async function loadOlder() {
  const id = chat.selected;
  if (!id) return;
  const thread = threadFor(id);
  if (!thread.nextCursor || thread.loading) return;
  const token = session.token;
  thread.loading = (async () => {
    try {
      const page = await api('GET', `/v1/conversations/${encodeURIComponent(id)}/messages?limit=${CHAT_PAGE_SIZE}&before=${encodeURIComponent(thread.nextCursor)}`);
      if (token !== session.token || chat.threads.get(id) !== thread) return;
      page.items.forEach(acceptMessage);
      thread.nextCursor = page.next_cursor || null;
      chat.anchorOlder = true;
    } catch (error) {
      reportError(error, 'Could not load older messages');
    } finally {
      thread.loading = null;
      scheduleChatRender();
    }
  })();
  scheduleChatRender();
}

/** One conversation again, e.g. after our own read mark moved in another tab. */
async function refreshConversation(id) {
  try {
    const conversation = await api('GET', `/v1/conversations/${encodeURIComponent(id)}`);
    if (conversation.members.includes(me())) upsertConversation(conversation);
  } catch (error) {
    if (error.status === 404) removeConversation(id);
  }
  scheduleChatRender();
}

// ------------------------------------------------ stream

/** The stream's chat events, by name. */
export const CHAT_EVENTS = {
  conversation(data) {
    if (!data.members.includes(me())) {
      removeConversation(data.id);
      return;
    }
    upsertConversation(data);
    const unknownUsers = data.members.filter((m) => !chat.presence.has(m));
    if (unknownUsers.length) loadPresence(unknownUsers);
  },
  message(data) {
    const id = key(data.conversation_id);
    const conversation = chat.conversations.get(id);
    const last = conversation && conversation.last_message;
    const isNew = acceptMessage(data);
    stopTypingOf(id, data.sender_id);
    if (!conversation) {
      refreshConversation(id);
      return;
    }
    // Counted only once: a message the list already had is in its count.
    if (isNew && data.sender_id !== me() && (!last || Number(data.id) > Number(last.id))) {
      conversation.unread_count = Number(conversation.unread_count || 0) + 1;
    }
  },
  'message.updated'(data) {
    acceptMessage(data);
  },
  'message.deleted'(data) {
    acceptMessage(data);
  },
  read(data) {
    const id = key(data.conversation_id);
    const messageId = Number(data.message_id);
    if (data.user_id === me()) {
      // Another tab (or our own POST) moved our mark.
      chat.readSent.set(id, Math.max(chat.readSent.get(id) || 0, messageId));
      const conversation = chat.conversations.get(id);
      if (!conversation) return;
      if (conversation.last_message && messageId >= Number(conversation.last_message.id)) conversation.unread_count = 0;
      else if (conversation.unread_count > 0) refreshConversation(id);
      return;
    }
    const thread = threadFor(id);
    thread.marks.set(data.user_id, Math.max(thread.marks.get(data.user_id) || 0, messageId));
  },
  typing(data) {
    if (data.user_id === me()) return;
    if (data.is_typing) startTypingOf(key(data.conversation_id), data.user_id);
    else stopTypingOf(key(data.conversation_id), data.user_id);
  },
};

function startTypingOf(conversationId, user) {
  let typists = chat.typing.get(conversationId);
  if (!typists) {
    typists = new Map();
    chat.typing.set(conversationId, typists);
  }
  clearTimeout(typists.get(user));
  typists.set(user, setTimeout(() => {
    stopTypingOf(conversationId, user);
    scheduleChatRender();
  }, TYPING_STALE_MS));
}

function stopTypingOf(conversationId, user) {
  const typists = chat.typing.get(conversationId);
  if (!typists || !typists.has(user)) return;
  clearTimeout(typists.get(user));
  typists.delete(user);
}

/** The stream dropped: whoever was typing may have stopped without us hearing it. */
export function forgetTyping() {
  for (const typists of chat.typing.values()) for (const timer of typists.values()) clearTimeout(timer);
  chat.typing.clear();
  scheduleChatRender();
}

/**
 * The chat's state comes over REST once the stream is open (so nothing
 * falls between the two), and again whenever the stream could not resume
 * (`resumed` false): without a resume point it carries no chat history.
 * Presence and typing are not replayed, so they are asked for again on
 * every open.
 */
export function onChatStreamOpen(first, resumed) {
  chat.readFailed.clear();
  if (first) setMyStatus(chat.myStatus);
  if (!chat.loaded || !resumed) loadChat();
  else loadPresence(allKnownUsers());
}

// ------------------------------------------------ actions

/** Opens a conversation (or the list, with null), keeping the composer's draft per conversation. */
export function selectConversation(id) {
  id = id === null ? null : key(id);
  if (chat.selected === id) {
    if (id) $('chat').dataset.view = 'conversation';
    return;
  }
  stopMyTyping();
  const composer = $('composer');
  if (chat.selected) {
    if (composer.value.trim()) chat.drafts.set(chat.selected, composer.value);
    else chat.drafts.delete(chat.selected);
  }
  chat.selected = id;
  chat.forceScroll = true;
  chat.atBottom = true;
  disarmLeave();
  $('add-member').hidden = true;
  $('add-member-toggle').setAttribute('aria-expanded', 'false');
  $('chat').dataset.view = id ? 'conversation' : 'list';
  if (id) {
    sessionStorage.setItem(`${SELECTED_KEY}:${me()}`, id);
    const thread = threadFor(id);
    if (thread.nextCursor === undefined) loadNewest(id);
  } else {
    sessionStorage.removeItem(`${SELECTED_KEY}:${me()}`);
  }
  composer.value = (id && chat.drafts.get(id)) || '';
  onComposerChange();
  scheduleChatRender();
}

/** The "New conversation" form: creates it and opens it. */
export async function createConversation(event) {
  event.preventDefault();
  const members = [...new Set($('new-conversation-members').value.split(/[\s,;]+/).map((m) => m.trim()).filter(Boolean))]
    .filter((m) => m !== me());
  if (members.length === 0) {
    showToast('Add at least one other member by their user id.');
    $('new-conversation-members').focus();
    return;
  }
  const title = $('new-conversation-title').value.trim();
  const button = $('new-conversation-create');
  button.disabled = true;
  try {
    const body = title ? { title, members } : { members };
    const conversation = await api('POST', '/v1/conversations', body);
    upsertConversation(conversation);
    chat.loaded = true;
    threadFor(conversation.id).nextCursor = null; // brand new: nothing older to load
    toggleNewConversation(false);
    $('new-conversation').reset();
    selectConversation(conversation.id);
    loadPresence(conversation.members);
    $('composer').focus();
  } catch (error) {
    reportError(error, 'Could not start the conversation');
  } finally {
    button.disabled = false;
  }
}

/** Shows or hides the "New conversation" form. */
export function toggleNewConversation(open) {
  const form = $('new-conversation');
  const show = open === undefined ? form.hidden : open;
  form.hidden = !show;
  $('new-conversation-toggle').setAttribute('aria-expanded', String(show));
  if (show) $('new-conversation-members').focus();
  scheduleChatRender();
}

/** The "Add member" form of the open conversation. */
export async function addMember(event) {
  event.preventDefault();
  const id = chat.selected;
  const input = $('add-member-id');
  const user = input.value.trim();
  if (!id || !user) return;
  const button = $('add-member-submit');
  button.disabled = true;
  try {
    upsertConversation(await api('POST', `/v1/conversations/${encodeURIComponent(id)}/members`, { user_id: user }));
    input.value = '';
    $('add-member').hidden = true;
    $('add-member-toggle').setAttribute('aria-expanded', 'false');
    loadPresence([user]);
  } catch (error) {
    reportError(error, `Could not add ${user}`);
  } finally {
    button.disabled = false;
    scheduleChatRender();
  }
}

function disarmLeave() {
  clearTimeout(chat.leaveArmed);
  chat.leaveArmed = null;
  const button = $('leave-conversation');
  button.textContent = 'Leave';
  button.classList.remove('armed');
}

/** Leave asks once more ("Leave?") before it leaves. */
export async function leaveConversation() {
  const id = chat.selected;
  if (!id) return;
  const button = $('leave-conversation');
  if (!chat.leaveArmed) {
    button.textContent = 'Really leave?';
    button.classList.add('armed');
    chat.leaveArmed = setTimeout(disarmLeave, 4000);
    return;
  }
  disarmLeave();
  button.disabled = true;
  try {
    await api('DELETE', `/v1/conversations/${encodeURIComponent(id)}/members/${encodeURIComponent(me())}`);
    removeConversation(id);
  } catch (error) {
    reportError(error, 'Could not leave the conversation');
  } finally {
    button.disabled = false;
    scheduleChatRender();
  }
}

/** Sends what the composer holds: shown at once as pending, then delivered. */
export function sendComposer() {
  const id = chat.selected;
  const composer = $('composer');
  const content = composer.value.trim();
  if (!id || !content) return;
  const pending = {
    client_message_id: newClientId(),
    conversation_id: id,
    sender_id: me(),
    content,
    created_at: new Date().toISOString(),
    state: 'pending',
  };
  threadFor(id).pending.set(pending.client_message_id, pending);
  composer.value = '';
  chat.drafts.delete(id);
  onComposerChange();
  stopMyTyping();
  chat.forceScroll = true;
  deliver(pending);
}

/**
 * Sends (or re-sends: same client_message_id, so never twice) a pending
 * message. The answer or the stream's echo, whichever comes first, turns
 * it into a sent one; an error leaves it failed with a retry button.
 */
async function deliver(pending) {
  const id = key(pending.conversation_id);
  const token = session.token;
  pending.state = 'pending';
  scheduleChatRender();
  try {
    const message = await api('POST', `/v1/conversations/${encodeURIComponent(id)}/messages`, {
      content: pending.content,
      client_message_id: pending.client_message_id,
    });
    if (token !== session.token) return;
    CHAT_EVENTS.message(message);
  } catch (error) {
    if (token !== session.token) return;
    const thread = chat.threads.get(id);
    // The echo may have made it "sent" meanwhile: then nothing failed.
    if (thread && thread.pending.get(pending.client_message_id) === pending) {
      pending.state = 'failed';
      pending.error = error.message;
    }
    if (error.status === 401) reportError(error);
    else if (error.status === 404) {
      showToast('This conversation is gone, or you are no longer in it.');
      removeConversation(id);
    }
  }
  scheduleChatRender();
}

/** The "Retry" button of a message that failed. */
export function retryMessage(conversationId, clientMessageId) {
  const thread = chat.threads.get(key(conversationId));
  const pending = thread && thread.pending.get(clientMessageId);
  if (pending && pending.state === 'failed') deliver(pending);
}

/** Fits the composer to its text and enables "Send" when there is something to send. */
export function onComposerChange() {
  const composer = $('composer');
  const lines = composer.value.split('\n').length;
  composer.rows = Math.min(6, Math.max(1, lines)); // where field-sizing is unknown
  $('send').disabled = !composer.value.trim() || !chat.selected;
}

/** Tells the others we type: at once, then every 3 s while it lasts. */
export function onComposerInput() {
  onComposerChange();
  const id = chat.selected;
  if (!id) return;
  if (!$('composer').value.trim()) {
    stopMyTyping();
    return;
  }
  const now = Date.now();
  if (chat.myTyping && chat.myTyping.conversation === id && now - chat.myTyping.sentAt < TYPING_RENEW_MS) return;
  if (chat.myTyping && chat.myTyping.conversation !== id) stopMyTyping();
  chat.myTyping = { conversation: id, sentAt: now };
  sendTyping(id, true);
}

/** Tells the others we stopped typing, if we had told them we were. */
export function stopMyTyping() {
  if (!chat.myTyping) return;
  const id = chat.myTyping.conversation;
  chat.myTyping = null;
  sendTyping(id, false);
}

function sendTyping(id, isTyping) {
  api('POST', `/v1/conversations/${encodeURIComponent(id)}/typing`, { is_typing: isTyping }).catch((error) => {
    if (error.status === 401) reportError(error);
    else console.warn(`tidings: typing not sent: ${error.message}`);
  });
}

/** Enter sends; Shift+Enter makes a new line. */
export function onComposerKeydown(event) {
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing && !event.altKey && !event.ctrlKey && !event.metaKey) {
    event.preventDefault();
    sendComposer();
  }
}

/**
 * Marks the open conversation read up to its newest message, when that
 * message is on screen, the page is visible, and the mark would move.
 */
export function maybeMarkRead() {
  const id = chat.selected;
  if (!id || document.visibilityState !== 'visible' || !chat.atBottom) return;
  const conversation = chat.conversations.get(id);
  const thread = chat.threads.get(id);
  if (!conversation || !thread || thread.nextCursor === undefined) return;
  if (!(conversation.unread_count > 0)) return;
  const newest = newestMessageId(thread);
  if (!newest || newest <= (chat.readSent.get(id) || 0) || chat.readFailed.get(id) === newest) return;
  chat.readSent.set(id, newest);
  const before = conversation.unread_count;
  conversation.unread_count = 0;
  api('POST', `/v1/conversations/${encodeURIComponent(id)}/read`, { message_id: newest }).then((answer) => {
    const current = chat.conversations.get(id);
    if (current && answer && typeof answer.unread_count === 'number') current.unread_count = answer.unread_count;
    scheduleChatRender();
  }, (error) => {
    if (chat.readSent.get(id) === newest) chat.readSent.delete(id);
    chat.readFailed.set(id, newest); // tried again once the stream is back (or the page comes back into view)
    const current = chat.conversations.get(id);
    if (current && current.unread_count === 0) current.unread_count = before;
    if (error.status === 401) reportError(error);
    else console.warn(`tidings: read mark not sent: ${error.message}`);
    scheduleChatRender();
  });
}

// ------------------------------------------------ session

/** A new session's chat: empty, back in the conversation this tab had open. */
export function startChat() {
  resetChat();
  $('conversation-list').replaceChildren();
  $('message-list').replaceChildren();
  $('new-conversation').hidden = true;
  $('new-conversation-toggle').setAttribute('aria-expanded', 'false');
  $('chat').dataset.view = 'list';
  $('composer').value = '';
  onComposerChange();
  const remembered = sessionStorage.getItem(`${SELECTED_KEY}:${me()}`);
  if (remembered) {
    chat.selected = remembered;
    $('chat').dataset.view = 'conversation';
    threadFor(remembered);
  }
  scheduleChatRender();
}

/** Signing out: stop typing, forget everything. */
export function stopChat() {
  stopMyTyping();
  forgetTyping();
  disarmLeave();
  resetChat();
}
