// A minimal SSE hub on better-sse: the comparison peer a Node team would
// write in an afternoon. One better-sse Channel per channel name; a POST to
// /pub/NAME broadcasts its body (verbatim) to every session of /sub/NAME.
// No persistence and no replay: better-sse keeps no history, so the
// benchmark marks `catchup` as n/a for this hub.
//
// Usage: node server.js [--port 18082] [--host 127.0.0.1]
'use strict';

const http = require('node:http');
const { createSession, createChannel } = require('better-sse');

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1] : fallback;
}

const host = arg('host', '127.0.0.1');
const port = Number(arg('port', process.env.PORT || 18082));
const MAX_BODY = 512 * 1024;

/** channel name -> better-sse Channel; a channel goes when its last session does. */
const channels = new Map();
let nextEventId = 0;

function channelFor(name) {
  let channel = channels.get(name);
  if (!channel) {
    channel = createChannel();
    channel.on('session-deregistered', () => {
      if (channel.sessionCount === 0 && channels.get(name) === channel) channels.delete(name);
    });
    channels.set(name, channel);
  }
  return channel;
}

function reply(res, status, body) {
  res.writeHead(status, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify(body));
}

async function subscribe(req, res, name) {
  // The body is already JSON text: send it as is instead of re-encoding it.
  const session = await createSession(req, res, { serializer: (data) => data, retry: 3000, keepAlive: 15000 });
  channelFor(name).register(session);
}

function publish(req, res, name) {
  const chunks = [];
  let size = 0;
  req.on('data', (chunk) => {
    size += chunk.length;
    if (size > MAX_BODY) {
      reply(res, 413, { error: 'payload too large' });
      req.destroy();
      return;
    }
    chunks.push(chunk);
  });
  req.on('end', () => {
    const data = Buffer.concat(chunks).toString('utf8');
    const channel = channels.get(name);
    nextEventId += 1;
    if (channel) channel.broadcast(data, 'message', { eventId: String(nextEventId) });
    reply(res, 201, { id: String(nextEventId), subscribers: channel ? channel.sessionCount : 0 });
  });
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://hub');
  const match = /^\/(sub|pub)\/([A-Za-z0-9_.-]{1,200})$/.exec(url.pathname);
  if (url.pathname === '/healthz') return reply(res, 200, { status: 'ok' });
  if (match && match[1] === 'sub' && req.method === 'GET') {
    return subscribe(req, res, match[2]).catch((e) => {
      if (!res.headersSent) reply(res, 500, { error: String(e) });
    });
  }
  if (match && match[1] === 'pub' && req.method === 'POST') return publish(req, res, match[2]);
  reply(res, 404, { error: 'not found' });
});
server.keepAliveTimeout = 60000;
server.listen(port, host, () => console.error(`node-hub (better-sse) on http://${host}:${port}`));
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(0));
