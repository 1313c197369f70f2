// The two ways the playground speaks:
//  - SpeakSocket: one long-lived WebSocket to /api/v1/speak (Makima protocol), PCM16 frames out;
//  - streamSpeech: POST /v1/audio/speech read as a stream with fetch + ReadableStream, any format.
// Both report through the same callbacks: onAudio(bytes) for every piece, onEnd() when it is over.

const TOKEN_CHARS = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;  // what a WebSocket subprotocol may contain

export class ApiError extends Error {
  constructor(message, status = 0, code = null) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// The OpenAI error body's message, or the status line when the body is something else.
export async function apiError(response) {
  let message = `${response.status} ${response.statusText}`;
  let code = null;
  try {
    const body = await response.json();
    if (body && body.error) { message = body.error.message || message; code = body.error.code; }
  } catch (_) { /* not JSON */ }
  return new ApiError(message, response.status, code);
}

export function authHeaders(key) {
  return key ? { Authorization: `Bearer ${key}` } : {};
}

// Browsers cannot set headers on a WebSocket: the key rides in the `auth.bearer.v1` subprotocol
// (kept out of URLs and logs) unless it has characters a subprotocol cannot carry; then `?token=`.
function socketTarget(key) {
  const base = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/api/v1/speak";
  if (!key) return { url: base, protocols: undefined };
  if (TOKEN_CHARS.test(key)) return { url: base, protocols: ["auth.bearer.v1", key] };
  return { url: `${base}?token=${encodeURIComponent(key)}`, protocols: undefined };
}

export class SpeakSocket {
  constructor() {
    this.ws = null;
    this.key = null;
    this.config = null;        // the voice/language the server last confirmed with `started`
    this.waiters = [];         // {types, resolve, reject} waiting for a JSON event
    this.current = null;       // the utterance whose frames are arriving
    this.trailingEnd = false;  // an error after audio is followed by one audio_end: swallow it
    this.staleEnds = 0;        // audio_end events still due for cancelled utterances: swallow them
    this.onClose = () => {};
    this.onStray = () => {};  // a frame with no utterance to belong to (e.g. after a cancel's answer)
  }

  async open(key) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN && this.key === key) return;
    this.close();
    const { url, protocols } = socketTarget(key);
    const ws = new WebSocket(url, protocols);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    this.key = key;
    this.config = null;
    ws.onmessage = (e) => this.receive(e);
    ws.onclose = (e) => {
      if (this.ws !== ws) return;
      this.ws = null;
      const error = new ApiError(e.code === 1008 ? "the server refused the API key"
        : `connection closed (code: ${e.code})`, 0, e.code === 1008 ? "UNAUTHORIZED" : null);
      for (const w of this.waiters.splice(0)) w.reject(error);
      if (this.current) this.finish(error);
      this.onClose(e.code);
    };
    await this.expect(["ready"]);
  }

  close() {
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      try { ws.send(JSON.stringify({ type: "stop" })); ws.close(1000); } catch (_) { /* already closing */ }
    }
  }

  // The next JSON event of one of `types`; an `error` event (or a close) rejects instead.
  expect(types) {
    return new Promise((resolve, reject) => this.waiters.push({ types, resolve, reject }));
  }

  send(msg) { this.ws.send(JSON.stringify(msg)); }

  async configure(voice, language) {
    const wanted = `${voice}|${language}`;
    if (this.config === wanted) return;
    this.send({ type: "start", voice: voice || null, language: language || null });
    await this.expect(["started"]);
    this.config = wanted;
  }

  // Resolves when the utterance's audio_end arrives; rejects on an error event.
  speak(text, onAudio) {
    return new Promise((resolve, reject) => {
      this.current = { onAudio, resolve, reject, bytes: 0 };
      this.send({ type: "speak", text });
    });
  }

  // Every frame of the cancelled utterance precedes the server's `cancelled`: wait for it. When it
  // stopped something, one `audio_end` follows; it closes the cancelled utterance, not the next one.
  async cancel() {
    if (!this.ws) return;
    const done = this.expect(["cancelled"]);
    this.send({ type: "cancel" });
    const ack = await done;
    if (ack.utterances > 0) this.staleEnds += 1;
    if (this.current) this.finish(null, true);
  }

  finish(error, cancelled = false) {
    const u = this.current;
    this.current = null;
    if (error) u.reject(error); else u.resolve({ cancelled });
  }

  receive(e) {
    if (e.data instanceof ArrayBuffer) {
      if (this.current) { this.current.bytes += e.data.byteLength; this.current.onAudio(e.data); }
      else this.onStray(e.data);
      return;
    }
    const msg = JSON.parse(e.data);
    if (msg.type === "error") {
      const error = new ApiError(msg.message || `Error: ${msg.code}`, 0, msg.code);
      const w = this.waiters.shift();
      if (w) { w.reject(error); return; }
      if (this.current) { this.trailingEnd = this.current.bytes > 0; this.finish(error); }
      return;
    }
    const i = this.waiters.findIndex((w) => w.types.includes(msg.type));
    if (i >= 0) { this.waiters.splice(i, 1)[0].resolve(msg); return; }
    if (msg.type === "audio_end") {
      if (this.trailingEnd) { this.trailingEnd = false; return; }
      if (this.staleEnds > 0) { this.staleEnds -= 1; return; }
      if (this.current) this.finish(null);
    }
  }
}

// WAV from the gateway is streamed: a 44-byte header (sizes unknown), then PCM16. Find the start
// of the `data` chunk so the rest can play as it comes.
function wavDataOffset(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 12;
  while (at + 8 <= bytes.length) {
    const id = String.fromCharCode(...bytes.subarray(at, at + 4));
    if (id === "data") return at + 8;
    at += 8 + view.getUint32(at + 4, true);
  }
  return -1;
}

// POST /v1/audio/speech and hand the body to `onAudio` piece by piece as it is received. For
// "wav" the header is stripped so the caller gets raw PCM16 (`pcmOut`), playable at once.
export async function streamSpeech({ body, key, signal, onAudio, onFirstByte }) {
  const response = await fetch("/v1/audio/speech", {
    method: "POST", signal,
    headers: { "Content-Type": "application/json", ...authHeaders(key) },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw await apiError(response);
  const reader = response.body.getReader();
  const wav = body.response_format === "wav";
  let header = wav ? new Uint8Array(0) : null;
  let first = true;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (first) { first = false; onFirstByte(); }
    if (header === null) { onAudio(value, value); continue; }
    const joined = new Uint8Array(header.length + value.length);
    joined.set(header);
    joined.set(value, header.length);
    const offset = wavDataOffset(joined);
    if (offset < 0) { header = joined; continue; }
    header = null;
    onAudio(joined.subarray(offset), joined);
  }
  return { voice: response.headers.get("x-voice") };
}
