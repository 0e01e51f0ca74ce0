/*
 * The chat's state and its merge rules: conversations by id, and per
 * conversation a "thread" of messages, sent ones by id and the ones still
 * on their way by client_message_id, so that the POST answer, the stream's
 * echo and a retry all settle the same entry. Every source (stream, REST
 * page, POST answer) goes through `acceptMessage` / `upsertConversation`.
 */

import { perFrame } from './dom.js';
import { me } from './session.js';

/**
 * Everything the chat knows. Messages live per conversation in a "thread":
 * sent ones by id, and the ones still on their way by client_message_id,
 * so that the answer, the stream's echo and a retry all land on one entry.
 */
function freshChat() {
  return {
    conversations: new Map(), // key(id) -> conversation
    loaded: false,
    loading: null, // the list GET in flight
    reloadAgain: false, // a reset came while loading
    touchedWhileLoading: new Set(), // ids the stream changed during a load
    failed: false,
    selected: null, // key(id) of the open conversation
    threads: new Map(), // key(conversation id) -> thread
    typing: new Map(), // key(conversation id) -> Map(user id -> stale timer)
    presence: new Map(), // user id -> {status, last_seen_at}
    readSent: new Map(), // key(conversation id) -> newest message id we marked read
    drafts: new Map(), // key(conversation id) -> what the composer held when we left it
    readFailed: new Map(), // key(conversation id) -> message id whose read mark failed: not again until reconnected
    myTyping: null, // {conversation, sentAt}: we told the server we are typing
    myStatus: 'online',
    atBottom: true,
    forceScroll: false, // the next render scrolls to the newest message
    anchorOlder: false, // the next render keeps the view where it was (older loaded)
    renderedConversation: null,
    renderedNewest: null,
    leaveArmed: null,
  };
}

/** The chat's state: one object for the session, emptied by `resetChat`. */
export const chat = freshChat();

/** Starts the chat's state afresh (a new session, or signed out). */
export function resetChat() {
  Object.assign(chat, freshChat());
}

/** Asks for one chat render on the next frame (the view registers it with `.use`). */
export const scheduleChatRender = perFrame();

/** Ids as map keys: the same whether they came as numbers or strings. */
export const key = (id) => String(id);

/** The thread of a conversation, made empty on first use. */
export function threadFor(conversationId) {
  const id = key(conversationId);
  let thread = chat.threads.get(id);
  if (!thread) {
    thread = {
      messages: new Map(), // key(message id) -> message
      pending: new Map(), // client_message_id -> pending message
      nextCursor: undefined, // undefined: newest page not loaded; null: no older
      loading: null,
      marks: new Map(), // other member -> newest message id they read
    };
    chat.threads.set(id, thread);
  }
  return thread;
}

/** Which of two versions of a message is the later: deletion and edits win. */
export function laterMessage(known, incoming) {
  if (!known) return incoming;
  if (known.deleted_at && !incoming.deleted_at) return known;
  if (!known.deleted_at && incoming.deleted_at) return incoming;
  if ((known.edited_at || '') > (incoming.edited_at || '')) return known;
  return incoming;
}

/** A message from anywhere (stream, page, POST answer); true if it is new here. */
export function acceptMessage(message) {
  const thread = threadFor(message.conversation_id);
  const id = key(message.id);
  const known = thread.messages.get(id);
  thread.messages.set(id, laterMessage(known, message));
  if (message.sender_id === me() && message.client_message_id) {
    thread.pending.delete(message.client_message_id);
  }
  const conversation = chat.conversations.get(key(message.conversation_id));
  if (conversation) {
    const last = conversation.last_message;
    if (!last || Number(message.id) > Number(last.id)) conversation.last_message = message;
    else if (Number(message.id) === Number(last.id)) conversation.last_message = laterMessage(last, message);
  }
  return !known;
}

/** A conversation from anywhere; keeps the newer of the two last messages. Answers the merged one. */
export function upsertConversation(conversation) {
  const id = key(conversation.id);
  const known = chat.conversations.get(id);
  const merged = { ...conversation };
  if (known && known.last_message && (!merged.last_message || Number(known.last_message.id) > Number(merged.last_message.id))) {
    merged.last_message = known.last_message;
  }
  chat.conversations.set(id, merged);
  if (chat.loading) chat.touchedWhileLoading.add(id);
  return merged;
}

/** The members other than the signed-in user. */
export function otherMembers(conversation) {
  return conversation.members.filter((member) => member !== me());
}

/** Its title, else the other members' ids, else "Just you". */
export function conversationName(conversation) {
  if (conversation.title) return conversation.title;
  const others = otherMembers(conversation);
  return others.length ? others.join(', ') : 'Just you';
}

/** When it last had news (its newest message, or its creation): the list's order. */
export function activityOf(conversation) {
  const at = conversation.last_message ? conversation.last_message.created_at : conversation.created_at;
  return Date.parse(at) || 0;
}

/** The newest sent message's id in `thread` (0 if none). */
export function newestMessageId(thread) {
  let newest = 0;
  for (const message of thread.messages.values()) newest = Math.max(newest, Number(message.id));
  return newest;
}

/** The newest message id any other member has read, as far as we heard. */
export function othersReadUpTo(thread) {
  let newest = 0;
  for (const [user, id] of thread.marks) if (user !== me()) newest = Math.max(newest, id);
  return newest;
}

/** The signed-in user and every member of every known conversation: whose presence to load. */
export function allKnownUsers() {
  const users = new Set([me()]);
  for (const conversation of chat.conversations.values()) conversation.members.forEach((m) => users.add(m));
  return [...users].filter(Boolean);
}
