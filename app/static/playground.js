// The playground page: the API key, the tabs, the Speak panel. The Voices tab lives in voices.js.
import { EncodedPlayer, mimeOf } from "./encoded-player.js";
import { PcmPlayer, SAMPLE_RATE } from "./pcm-player.js";
import { SpeakSocket, streamSpeech } from "./speech-client.js";
import { VoicesTab } from "./voices.js";

const KEY_STORAGE = "speech-gateway.api-key";
const $ = (id) => document.getElementById(id);

// Counters a person can read in the console and the browser test reads (like window.speakDemo).
const pg = window.playground = {
  state: "idle", requests: 0, completed: 0, cancels: 0, errors: [],
  bytesReceived: 0, framesReceived: 0, samplesScheduled: 0, framesDropped: 0, framesAfterCancel: 0,
  ttfaMs: null, transport: null, format: null, voices: [],
};

const player = new PcmPlayer();
const socket = new SpeakSocket();
let active = null;  // {transport, abort, encoded, cancelled}

const apiKey = () => $("api-key").value.trim();

function setState(text, kind = "") {
  pg.state = text;
  $("state").textContent = text;
  $("state").dataset.kind = kind;
}

function showError(message) {
  const el = $("speak-error");
  el.hidden = !message;
  el.textContent = message || "";
}

function kb(bytes) { return bytes < 1024 ? `${bytes} B` : `${(bytes / 1024).toFixed(1)} KB`; }

function renderStats() {
  $("ttfa").textContent = pg.ttfaMs === null ? "—" : `${Math.round(pg.ttfaMs)} ms`;
  $("received").textContent = pg.bytesReceived ? kb(pg.bytesReceived) : "—";
  // Live formats count scheduled samples; compressed ones know their length once the player does.
  const duration = $("player").duration;
  const seconds = pg.samplesScheduled ? pg.samplesScheduled / SAMPLE_RATE
    : (!$("player").hidden && Number.isFinite(duration) ? duration : 0);
  $("audio-seconds").textContent = seconds ? `${seconds.toFixed(1)} s` : "—";
}

// -- controls ------------------------------------------------------------------------------------
function syncTransport() {
  const ws = document.querySelector('input[name="transport"]:checked').value === "ws";
  $("format").disabled = ws;
  $("speed").disabled = ws;
  $("instructions").disabled = ws;
  if (ws) $("format").value = "pcm";
  $("transport-hint").textContent = ws
    ? "WebSocket /api/v1/speak: one open socket, PCM16 at 24 kHz scheduled gaplessly. Speed and instructions go over HTTP."
    : "HTTP POST /v1/audio/speech, read as a stream. pcm and wav play as they arrive; mp3 and aac through Media Source; opus and flac once complete.";
}

function setBusy(busy) {
  $("speak").disabled = busy;
  $("cancel").disabled = !busy;
}

// -- speaking ------------------------------------------------------------------------------------
function onFirstAudio(t0) {
  if (pg.ttfaMs === null) { pg.ttfaMs = performance.now() - t0; setState("playing", "busy"); renderStats(); }
}

async function speakOverSocket(text, t0) {
  await socket.open(apiKey());
  await socket.configure($("voice").value, $("language").value);
  active.transport = "ws";
  const result = await socket.speak(text, (buffer) => {
    // In flight between our cancel and the server's answer: counted, never played.
    if (!active || active.cancelled) { pg.framesDropped += 1; return; }
    onFirstAudio(t0);
    pg.framesReceived += 1;
    pg.bytesReceived += buffer.byteLength;
    pg.samplesScheduled += player.pushBytes(buffer);
    renderStats();
  });
  return result;
}

async function speakOverHttp(text, t0) {
  const format = $("format").value;
  const live = format === "pcm" || format === "wav";
  const abort = new AbortController();
  active.abort = abort;
  active.transport = "http";
  const encoded = live ? null : new EncodedPlayer($("player"), format);
  active.encoded = encoded;
  $("player").hidden = live;
  const parts = [];
  const body = { model: "tts-1", input: text, voice: $("voice").value || "default", response_format: format,
    speed: Number($("speed").value), language: $("language").value };
  const instructions = $("instructions").value.trim();
  if (instructions) body.instructions = instructions;
  await streamSpeech({
    body, key: apiKey(), signal: abort.signal,
    onFirstByte: () => onFirstAudio(t0),
    onAudio: (audio, raw) => {
      pg.framesReceived += 1;
      pg.bytesReceived += raw.byteLength;
      parts.push(raw.slice());
      if (live) pg.samplesScheduled += player.pushBytes(audio);
      else encoded.push(audio);
      renderStats();
    },
  });
  const blob = new Blob(parts, { type: mimeOf(format) });
  if (encoded) encoded.finish(blob);
  const link = $("download");
  if (link.href) URL.revokeObjectURL(link.href);
  link.href = URL.createObjectURL(blob);
  link.download = `speech.${format === "opus" ? "ogg" : format}`;
  link.hidden = false;
  return { cancelled: false };
}

async function speak(text) {
  text = (text ?? $("text").value).trim();
  if (!text) { showError("Type something to say first."); return; }
  if (active) await cancel();
  const transport = document.querySelector('input[name="transport"]:checked').value;
  await player.unlock();  // inside the click: browsers only start audio from a user gesture
  player.reset();
  showError("");
  $("download").hidden = true;
  $("player").pause();
  $("player").hidden = true;
  Object.assign(pg, { ttfaMs: null, bytesReceived: 0, framesReceived: 0, samplesScheduled: 0,
    transport, format: transport === "ws" ? "pcm" : $("format").value });
  pg.requests += 1;
  active = { transport, cancelled: false };
  const mine = active;
  setBusy(true);
  setState("waiting for audio…", "busy");
  renderStats();
  const t0 = performance.now();
  try {
    const result = transport === "ws" ? await speakOverSocket(text, t0) : await speakOverHttp(text, t0);
    if (mine.cancelled || result.cancelled) return;
    pg.completed += 1;
    setState("done", "ok");
  } catch (e) {
    if (mine.cancelled || e.name === "AbortError") return;
    pg.errors.push(e.code || e.message);
    setState("failed", "error");
    showError(e.message);
    if (e.status === 401 || e.code === "UNAUTHORIZED") $("api-key").focus();
  } finally {
    if (active === mine) { active = null; setBusy(false); }
    renderStats();
  }
}

async function cancel() {
  const current = active;
  if (!current) return;
  current.cancelled = true;
  pg.cancels += 1;
  player.stop();
  if (current.encoded) current.encoded.stop();
  if (current.abort) current.abort.abort();
  active = null;
  setBusy(false);
  setState("cancelled", "");
  // The socket stays open for the next utterance; frames still in flight are counted, not played.
  if (current.transport === "ws") await socket.cancel().catch(() => {});
}

// -- page ----------------------------------------------------------------------------------------
function setupTabs() {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  const select = (tab) => {
    for (const t of tabs) {
      const on = t === tab;
      t.setAttribute("aria-selected", String(on));
      t.tabIndex = on ? 0 : -1;
      $(t.getAttribute("aria-controls")).hidden = !on;
    }
    tab.focus();
    if (tab.id === "tab-voices") voicesTab.refresh();
  };
  tabs.forEach((tab, i) => {
    tab.addEventListener("click", () => select(tab));
    tab.addEventListener("keydown", (e) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[e.key];
      if (step) { e.preventDefault(); select(tabs[(i + step + tabs.length) % tabs.length]); }
    });
  });
  pg.selectTab = (name) => select($(`tab-${name}`));
}

function setupKey() {
  const input = $("api-key");
  input.value = localStorage.getItem(KEY_STORAGE) || "";
  input.addEventListener("change", () => {
    const key = apiKey();
    if (key) localStorage.setItem(KEY_STORAGE, key); else localStorage.removeItem(KEY_STORAGE);
    socket.close();  // the next speak reconnects with the new key
    voicesTab.refresh();
  });
  $("key-toggle").addEventListener("click", (e) => {
    const show = input.type === "password";
    input.type = show ? "text" : "password";
    e.target.textContent = show ? "Hide" : "Show";
    e.target.setAttribute("aria-pressed", String(show));
  });
}

async function checkHealth() {
  const box = $("health");
  try {
    const r = await fetch("/readyz");
    const body = await r.json();
    const engines = (body.engines || []).map((e) => e.name).join(", ");
    const qwen = (body.engines || []).find((e) => e.name === "qwen");
    voicesTab.setModels(Object.keys((qwen && qwen.details && qwen.details.configured) || {}));
    box.dataset.kind = r.ok ? "ok" : "error";
    $("health-text").textContent = r.ok ? `ready · ${engines}` : `not ready: ${body.reason || body.status}`;
  } catch (_) {
    box.dataset.kind = "error";
    $("health-text").textContent = "unreachable";
  }
}

function fillVoicePicker(voices) {
  const select = $("voice");
  const keep = select.value;
  select.replaceChildren(new Option("default", ""));
  for (const v of voices) {
    const label = v.name && v.name !== v.id ? `${v.name} (${v.id})` : v.id;
    select.add(new Option(`${label} · ${v.engine}`, v.id));
  }
  select.value = [...select.options].some((o) => o.value === keep) ? keep : "";
  pg.voices = voices.map((v) => v.id);
  knownVoices = voices;
  syncLanguages();
}

// Offer only the languages the chosen voice can speak: a voice with a fixed language (the embedded
// English voice) gets auto-detect and that language; "default" gets what any listed voice can speak.
let knownVoices = [];
const ALL_LANGUAGES = [...$("language").options].map((o) => [o.value, o.text]);
function syncLanguages() {
  const chosen = knownVoices.filter((v) => !$("voice").value || v.id === $("voice").value);
  const fixed = new Set(chosen.map((v) => v.language || "auto"));
  const offered = fixed.has("auto") || !chosen.length ? ALL_LANGUAGES
    : ALL_LANGUAGES.filter(([value]) => value === "auto" || fixed.has(value));
  const select = $("language");
  const keep = select.value;
  select.replaceChildren(...offered.map(([value, text]) => new Option(text, value)));
  select.value = offered.some(([value]) => value === keep) ? keep : "auto";
  pg.languages = offered.map(([value]) => value);
}
$("voice").addEventListener("change", syncLanguages);

const voicesTab = new VoicesTab({ apiKey, onVoices: fillVoicePicker });

setupTabs();
setupKey();
syncTransport();
for (const radio of document.querySelectorAll('input[name="transport"]')) radio.addEventListener("change", syncTransport);
$("speed").addEventListener("input", () => { $("speed-out").textContent = `${Number($("speed").value).toFixed(2)}×`; });
const countChars = () => { $("char-count").textContent = $("text").value.length; };
$("text").addEventListener("input", countChars);
countChars();
$("speak-form").addEventListener("submit", (e) => { e.preventDefault(); speak(); });
$("cancel").addEventListener("click", () => cancel());
$("player").addEventListener("durationchange", renderStats);
socket.onStray = () => { pg.framesAfterCancel += 1; };
socket.onClose = (code) => { if (code === 1008) showError("The server refused the API key."); };
pg.speak = speak;
pg.cancel = cancel;
checkHealth();
voicesTab.refresh();
