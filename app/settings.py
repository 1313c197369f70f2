"""Settings: one frozen struct, filled from defaults < environment < command-line flags.

`OPTIONS` is the single table of every setting: the CLI builds its flags from it and
docs/configuration.md documents it. Nothing else in the code reads the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

ENV_PREFIX = "SPEECH_GATEWAY_"

# What to start the server with to make voices (/v1/audio/voices, inline `ref_audio`) when no running
# engine can: these are this CLI's own options. A running engine that lacks a model names its own
# missing options (`engine.base.VoiceMaker.require`).
NO_VOICE_MAKER = {
    "clone": "cloning a voice needs the Qwen3 Base model: start the server with --engine qwen "
             "--qwen-base <checkpoint> (and --voices-dir)",
    "design": "designing a voice needs the Qwen3 VoiceDesign and Base models: start the server with --engine qwen "
              "--qwen-voice-design <checkpoint> --qwen-base <checkpoint> (and --voices-dir)",
    "inline": "inline cloning (ref_audio) needs the Qwen3 Base model: start the server with --engine qwen "
              "--qwen-base <checkpoint>",
}


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8000
    engine: str = "embedded"  # the primary engine: embedded | qwen
    voices_dir: str = "./data/voices"
    max_concurrent: int | None = None  # None: each engine's own (`stream_slots`)
    max_queue: int = 32
    queue_timeout: float = 30.0
    request_timeout: float = 300.0
    api_keys: tuple[str, ...] = ()
    api_key_file: str | None = None
    log_level: str = "info"
    log_format: str = "text"  # text | json (one JSON object per line)
    shutdown_grace: float = 30.0  # seconds in-flight streams get to finish after SIGTERM
    embedded_instances: int = 0  # 0: one per usable core, up to 4 (1 beside Qwen)
    max_segment_chars: int = 300
    voice_map: tuple[str, ...] = ()  # NAME=VOICE entries
    # Qwen3 engine
    qwen_base: str | None = None
    qwen_custom_voice: str | None = None
    qwen_voice_design: str | None = None
    device: str = "cpu"
    dtype: str | None = None
    attn: str | None = None
    allow_download: bool = False
    qwen_instances: int = 1
    preload: bool = False
    first_chunk_frames: int = 2
    chunk_frames: int = 8
    prompt_cache_size: int = 32
    qwen_threads: int | None = None
    qwen_max_batch: int | None = None
    no_cuda_graphs: bool = False
    no_blocked_gemm: bool = False
    qwen_max_context: int = 2048
    # Speech recognition (/v1/audio/transcriptions, clone samples without a transcript): off without a model
    asr_model: str | None = None
    asr_device: str = "cpu"
    asr_compute_type: str | None = None
    asr_max_concurrent: int = 1
    asr_threads: int | None = None
    # WebSockets (/api/v1/speak, /v1/audio/speech/stream)
    ws_idle_timeout: float = 300.0
    ws_max_queued_utterances: int = 8
    ws_max_message_bytes: int = 65536
    ws_speak_lead: float = 0.5
    ws_compression: bool = False
    # Hostile and careless clients
    send_timeout: float = 30.0
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    max_connections: int = 1000
    max_voices: int = 200
    require_consent: bool = False
    public_listings: bool = False
    cors_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()  # names browsers may call a keyless server by (DNS rebinding guard)
    # Wyoming (Home Assistant): off unless a port is given
    wyoming_port: int | None = None
    wyoming_host: str = "127.0.0.1"
    wyoming_allow: tuple[str, ...] = ()  # client addresses / networks allowed to connect; empty: any
    wyoming_max_connections: int = 64
    wyoming_max_event_bytes: int = 65536
    wyoming_language: str = "en"
    # Drop-in protocols of other speech servers (app/wiring/protocols.py); all on unless narrowed
    protocols: tuple[str, ...] = ("all",)

    def all_api_keys(self) -> tuple[str, ...]:
        """Keys from flags/env plus one per non-empty, non-comment line of `api_key_file`."""
        keys = list(self.api_keys)
        if self.api_key_file:
            for line in Path(self.api_key_file).read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    keys.append(line)
        return tuple(k for k in keys if k)

    def voice_mapping(self) -> dict[str, str]:
        """`voice_map` as {name: voice}; SystemExit naming the entry when one is not NAME=VOICE."""
        out: dict[str, str] = {}
        for entry in self.voice_map:
            name, sep, voice = entry.partition("=")
            if not sep or not name.strip() or not voice.strip():
                raise SystemExit(f"--voice-map {entry!r}: expected NAME=VOICE, e.g. alloy=ada-lovelace")
            out[name.strip().lower()] = voice.strip()
        return out


@dataclass(frozen=True)
class Option:
    field: str
    flag: str
    help: str
    kind: type = str
    repeat: bool = False

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.field.upper()


OPTIONS: tuple[Option, ...] = (
    Option("host", "--host", "address to listen on"),
    Option("port", "--port", "port to listen on", int),
    Option("engine", "--engine", "primary engine: embedded (CPU, nothing to download) or qwen"),
    Option("voices_dir", "--voices-dir", "folder of user voices (uploads, designed voices, prompt cache)"),
    Option("max_concurrent", "--max-concurrent", "streams served at once per engine (default: the engine's own: "
           "32 per embedded synthesis thread; for Qwen, --qwen-max-batch rows x --qwen-instances)", int),
    Option("max_queue", "--max-queue", "requests waiting per engine before 429", int),
    Option("queue_timeout", "--queue-timeout", "seconds a request may wait in the queue before 429", float),
    Option("request_timeout", "--request-timeout", "deadline in seconds for one synthesis", float),
    Option("api_keys", "--api-key", "accepted Bearer key (repeat the flag; env: comma-separated)", str, True),
    Option("api_key_file", "--api-key-file", "file with one accepted key per line"),
    Option("log_level", "--log-level", "debug | info | warning | error"),
    Option("log_format", "--log-format", "text | json (one JSON object per line, for log collectors)"),
    Option("shutdown_grace", "--shutdown-grace", "seconds in-flight streams may run on after SIGTERM", float),
    Option("embedded_instances", "--embedded-instances", "embedded engine synthesis threads, sharing one model "
           "(0: one per usable core, up to 4, when it is the primary engine; 1 beside Qwen)", int),
    Option("max_segment_chars", "--max-segment-chars", "longest text segment synthesized in one go", int),
    Option("voice_map", "--voice-map", "NAME=VOICE: requests for voice NAME (e.g. an OpenAI name) speak with VOICE (repeat; env: comma-separated)", str, True),
    Option("qwen_base", "--qwen-base", "Qwen3-TTS Base checkpoint (folder or hub id): voice cloning"),
    Option("qwen_custom_voice", "--qwen-custom-voice", "Qwen3-TTS CustomVoice checkpoint: 9 speakers + instructions"),
    Option("qwen_voice_design", "--qwen-voice-design", "Qwen3-TTS VoiceDesign checkpoint: voices from descriptions"),
    Option("device", "--device", "cpu or cuda:N"),
    Option("dtype", "--dtype", "float32 | bfloat16 | float16 (default: bfloat16 on CUDA, float32 on CPU)"),
    Option("attn", "--attn", "attention: flash_attention_2 | sdpa | eager (default: flash-attn if importable on CUDA)"),
    Option("allow_download", "--allow-download", "let hub ids download weights (default: local cache only)", bool),
    Option("qwen_instances", "--qwen-instances", "model instances (one worker each) per Qwen model kind", int),
    Option("preload", "--preload", "load and warm up Qwen models at start instead of on first use", bool),
    Option("first_chunk_frames", "--first-chunk-frames", "codec frames (80 ms each) in the first audio chunk", int),
    Option("chunk_frames", "--chunk-frames", "codec frames in each later audio chunk", int),
    Option("prompt_cache_size", "--prompt-cache-size", "voice-clone prompts kept in memory (LRU)", int),
    Option("qwen_threads", "--qwen-threads", "torch CPU threads per Qwen worker (default: usable cores / instances)", int),
    Option("qwen_max_batch", "--qwen-max-batch", "streams one Qwen model instance steps together (default: 32 on CUDA, 8 on CPU)", int),
    Option("no_cuda_graphs", "--no-cuda-graphs", "run the Qwen frame steps eagerly on CUDA (no graph capture)", bool),
    Option("no_blocked_gemm", "--no-blocked-gemm", "CPU float32: batched Qwen steps use the plain GEMM kernel (to compare; 4 or more streams cost more)", bool),
    Option("qwen_max_context", "--qwen-max-context", "CUDA: prompt + frames one Qwen stream may hold (cache positions per row)", int),
    Option("asr_model", "--asr-model", "speech recognizer for /v1/audio/transcriptions: a CTranslate2 Whisper folder, a hub id (Systran/faster-whisper-small.en) or a size name (small.en); off when unset"),
    Option("asr_device", "--asr-device", "where the recognizer runs: cpu or cuda:N"),
    Option("asr_compute_type", "--asr-compute-type", "recognizer weights: int8, int8_float16, float16, float32 (default: int8 on CPU, float16 on CUDA)"),
    Option("asr_max_concurrent", "--asr-max-concurrent", "transcriptions running at once (their own slots, apart from speech)", int),
    Option("asr_threads", "--asr-threads", "CPU threads per transcription (default: usable cores / --asr-max-concurrent)", int),
    Option("ws_idle_timeout", "--ws-idle-timeout", "seconds a speech WebSocket or Wyoming connection may stay silent and idle before it is closed", float),
    Option("ws_max_queued_utterances", "--ws-max-queued-utterances", "utterances one /api/v1/speak socket may queue behind the one playing", int),
    Option("ws_max_message_bytes", "--ws-max-message-bytes", "largest client WebSocket message accepted, in bytes", int),
    Option("ws_speak_lead", "--ws-speak-lead", "seconds of audio /api/v1/speak sends ahead of real-time playback, so a cancel stops it within that (0: no pacing)", float),
    Option("ws_compression", "--ws-compression", "compress WebSocket messages (permessage-deflate): about 40 percent fewer bytes of base64 audio, at about 1.8 ms of server CPU per second of audio per socket (off: CPU is what many listeners cost)", bool),
    Option("send_timeout", "--send-timeout", "seconds a response, WebSocket or Wyoming send may make no progress (client not reading) before the connection is aborted and its slot freed", float),
    Option("header_timeout", "--header-timeout", "seconds a connection may take to send complete request headers", float),
    Option("body_timeout", "--body-timeout", "seconds a request may take to send its whole body (408 after)", float),
    Option("max_connections", "--max-connections", "open connections (HTTP and WebSocket) before new requests get 503", int),
    Option("max_voices", "--max-voices", "user voices the voices folder may hold; creating more is refused (consent recordings: as many again)", int),
    Option("require_consent", "--require-consent", "every voice cloned from audio must name a consent recording (OpenAI's rule); inline ref_audio clones are refused", bool),
    Option("public_listings", "--public-listings", "with API keys set, GET /v1/audio/voices and /v1/audio/models answer without a key (Open WebUI lists them keyless)", bool),
    Option("cors_origins", "--cors-origin", "origin allowed to call the API from a browser (repeat; * for any). Default: any origin when API keys are set, none otherwise", str, True),
    Option("allowed_hosts", "--allowed-host", "without API keys: a host name browsers may call this server by besides localhost, IP addresses and --host (repeat; env: comma-separated); others get 421 (DNS rebinding)", str, True),
    Option("wyoming_port", "--wyoming-port", "serve the Wyoming protocol (Home Assistant TTS) on this TCP port too (default: off)", int),
    Option("wyoming_host", "--wyoming-host", "address the Wyoming server listens on (0.0.0.0 for Home Assistant on another machine)"),
    Option("wyoming_allow", "--wyoming-allow", "client address or network (CIDR) allowed to use the Wyoming port, which has no keys (repeat; env: comma-separated). Default: any that can reach --wyoming-host", str, True),
    Option("wyoming_max_connections", "--wyoming-max-connections", "open Wyoming connections (counted apart from HTTP); one more is told why and closed", int),
    Option("wyoming_max_event_bytes", "--wyoming-max-event-bytes", "largest Wyoming event header, data or payload a client may send, in bytes; a larger one drops the connection", int),
    Option("wyoming_language", "--wyoming-language", "language (ISO code) Wyoming lists a voice under when the voice speaks any language", str),
    Option("protocols", "--protocol", "other servers' APIs to serve too: chatterbox, soprano, voicereader (repeat; env: comma-separated; all; none: only this gateway's own)", str, True),
)


def _parse(option: Option, raw: str) -> Any:
    if option.kind is bool:
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if option.repeat:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return option.kind(raw)


def load_settings(overrides: dict[str, Any] | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Defaults, then `SPEECH_GATEWAY_*` environment variables, then `overrides` (CLI flags)."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for option in OPTIONS:
        if option.env in environ:
            values[option.field] = _parse(option, environ[option.env])
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    for repeated in ("api_keys", "cors_origins", "protocols", "wyoming_allow"):
        if repeated in values:
            values[repeated] = tuple(values[repeated])
    return msgspec.convert(values, Settings)
