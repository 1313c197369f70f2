"""Chatterbox requests → SpeechService: model and voice mapping, the default voice, health, voices, upload.

- `model`: "standard", "turbo" and "multilingual" mean the primary engine (whichever engine the voice
  belongs to, as OpenAI's model names do); the gateway's own ids (hibari, qwen3-tts, tts-1...) keep
  their meaning (`app.speech.serving.model_engine`).
- A voice is named by a path's stem (`audio_prompt_path: "/app/voices/my_voice.wav"` → "my_voice"),
  looked up like any voice name (id, name, alias); no path is ever opened.
- The default voice (POST /api/voice/default, `set_voice` on the socket) is server-wide, as Chatterbox's
  is, and held in memory by this process: any client that may call these routes (any key's holder; on a
  keyless server anyone the origin guard lets in) changes it for everyone. For one that survives
  restarts start the gateway with `--voice-map default=<voice>`. When its voice is deleted, requests
  naming no voice fall back to the gateway's default (and the setting is cleared), never a 404.
- `exaggeration` and `cfg_weight` are accepted and ignored; `temperature`, `top_p` and
  `repetition_penalty` go to SamplingParams (the Qwen3 engine uses them, the embedded one does not).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import msgspec
from litestar import Request
from litestar.datastructures import UploadFile

from app.audio.encoding import output_rate
from app.chatterbox.protocol import (
    CHATTERBOX_MODELS,
    DefaultVoice,
    Health,
    Uploaded,
    VoiceEntry,
    VoiceListing,
    VoiceOptions,
    _SpeechFields,
)
from app.ops.forms import audio_form
from app.speech.protocol import ENGINE_MODELS
from app.speech.serving import model_engine
from app.voices.protocol import MAX_AUDIO_BYTES, CreateVoiceRequest
from app.voices.serving import create_voice
from engine.base import Priority, SamplingParams, Voice
from engine.errors import InvalidRequest, PayloadTooLarge, VoiceNotFound
from engine.languages import language_of_tag
from engine.service import SpeechParams, SpeechService

log = logging.getLogger("app.chatterbox")

_STATE_KEY = "chatterbox_default_voice"


def voice_stem(path: str) -> str:
    """The voice a Chatterbox file path names: its last component without the extension."""
    name = re.split(r"[\\/]", path.strip())[-1]
    stem, dot, ext = name.rpartition(".")
    return stem if dot and stem and ext.isalnum() else name


def model_of(model: str | None, service: SpeechService) -> str | None:
    """The engine `model` asks for (None: the voice's engine); a 400 naming `model` for an unknown one."""
    return model_engine(model, set(service.engines), CHATTERBOX_MODELS) if model else None


def language_of(language_id: str | None) -> str:
    """Our language for Chatterbox's `language_id` ("en", "fr", "en-US" …; default: detected)."""
    return language_of_tag(language_id, param="language_id")


def format_of(fields: _SpeechFields, default: str) -> tuple[str, int]:
    """Our response format ("wav" or "pcm") and the output rate; a 400 naming `sample_rate` for a bad rate."""
    audio = fields.audio
    fmt = "wav" if (audio and audio.format or default) == "wav" else "pcm"
    try:
        return fmt, output_rate(fmt, audio.sample_rate if audio else None)
    except ValueError as e:
        raise InvalidRequest(str(e), param="sample_rate") from None


# -- the default voice ---------------------------------------------------------------------------
def _state(app: Any) -> dict[str, str | None]:
    return app.state.setdefault(_STATE_KEY, {"voice_path": None, "voice": None})


def resolve_voice(service: SpeechService, value: str | None, engine: str | None = None) -> Voice:
    """The voice a path or name means (None: the gateway's default); VoiceNotFound (404) otherwise."""
    return service.registry.resolve(voice_stem(value) if value else None, prefer=engine)


def _chosen_default(app: Any, service: SpeechService) -> str | None:
    """The voice id set as the default; None for the gateway's own default, also once the voice set has
    been deleted (the setting is cleared then: a voice made later under that name is not picked up)."""
    state = _state(app)
    if state["voice"] is None:
        return None
    try:
        return service.registry.resolve(state["voice"]).id
    except VoiceNotFound:
        log.info("chatterbox default voice %r is gone; back to the gateway's default", state["voice"])
        state.update(voice_path=None, voice=None)
        return None


def default_voice(app: Any, service: SpeechService) -> DefaultVoice:
    voice = resolve_voice(service, _chosen_default(app, service)).id
    return DefaultVoice(voice_path=_state(app)["voice_path"], voice=voice)


def set_default_voice(app: Any, service: SpeechService, voice_path: str | None) -> DefaultVoice:
    """Make the voice `voice_path` names the default of every Chatterbox request; None or "" unsets it."""
    state = _state(app)
    if not voice_path or not voice_path.strip():
        state.update(voice_path=None, voice=None)
    else:
        voice = resolve_voice(service, voice_path)  # 404 now, not at the next request
        state.update(voice_path=voice_path.strip(), voice=voice.id)
    return default_voice(app, service)


def _voice_name(fields: _SpeechFields) -> str | None:
    voice = fields.voice
    if isinstance(voice, VoiceOptions):
        return voice.audio_prompt_path or voice.name
    return voice


# -- a request → SpeechParams --------------------------------------------------------------------
def speech_params(fields: _SpeechFields, app: Any, service: SpeechService, request_id: str, fmt: str) -> SpeechParams:
    """Everything checked before any synthesis: text, model, voice, language."""
    if not fields.text.strip():
        raise InvalidRequest("text is empty", param="text")
    engine = model_of(fields.model, service)
    voice = resolve_voice(service, _voice_name(fields) or _chosen_default(app, service), engine)
    options = fields.voice if isinstance(fields.voice, VoiceOptions) else VoiceOptions()
    return SpeechParams(
        text=fields.text,
        voice=voice.id,
        language=language_of(fields.language_id),
        sampling=SamplingParams(temperature=options.temperature, top_p=options.top_p,
                                repetition_penalty=options.repetition_penalty),
        priority=Priority.BULK if fields.priority == "bulk" else Priority.INTERACTIVE,
        request_id=request_id,
        engine=engine,
        labels={"format": fmt},
    )


# -- health and listings -------------------------------------------------------------------------
def device_of(service: SpeechService) -> str:
    device = str(service.primary.status().details.get("device", "cpu"))
    return device.split(":")[0]  # "cuda:0" → "cuda", as Chatterbox reports it


def loaded_models(service: SpeechService) -> list[str]:
    if not service.ready:
        return []
    return [*CHATTERBOX_MODELS, *(m for m, e in ENGINE_MODELS.items() if service.engines.get(e) is not None
                                  and service.engines[e].status().ready)]


def health(service: SpeechService | None) -> Health:
    if service is None:
        return Health(status="loading", loaded_models=[], device="cpu")
    return Health(status="healthy" if service.ready else "loading", loaded_models=loaded_models(service),
                  device=device_of(service))


def voice_listing(app: Any, service: SpeechService) -> VoiceListing:
    voices = [VoiceEntry(name=v.id, voice_path=f"{v.id}.wav", display_name=v.name, kind=v.kind,
                         language=v.language, engine=v.engine) for v in service.registry.list()]
    return VoiceListing(voices=voices, default_voice=default_voice(app, service).voice)


# -- upload --------------------------------------------------------------------------------------
async def upload_voice(request: Request, service: SpeechService, request_id: str) -> Uploaded:
    """multipart `file` (+ optional `name`, `ref_text`, `language`) → the voices API's import and save.

    The voice is named after the file's stem; Chatterbox clones from audio alone, so without `ref_text`
    it is an x-vector-only clone. Every rule of POST /v1/audio/voices applies (names, size, length,
    --max-voices), and a refused upload leaves nothing behind (`save_voice` is atomic).
    """
    if request.content_type[0] != "multipart/form-data":
        raise InvalidRequest("send multipart/form-data with the audio as the 'file' part", param="file")
    fields: dict[str, str] = {}
    audio: bytes | None = None
    filename = ""
    async with audio_form(request, "file", "the upload is larger than 10 MiB") as form:
        for key, value in form.multi_items():
            if key == "file" and isinstance(value, UploadFile):
                audio, filename = await value.read(MAX_AUDIO_BYTES + 1), value.filename or ""
            elif key in ("name", "ref_text", "language", "consent") and isinstance(value, str) and value.strip():
                fields[key] = value.strip()
    if audio is None:
        raise InvalidRequest("the audio file is missing: send it as the multipart part 'file' "
                             "(curl: -F file=@my_voice.wav)", param="file")
    if len(audio) > MAX_AUDIO_BYTES:
        raise PayloadTooLarge("the audio file is larger than 10 MiB", param="file")
    name = fields.get("name") or voice_stem(filename)
    try:
        # Without ref_text the gateway transcribes the sample when it can (--asr-model), else an x-vector clone.
        data = msgspec.convert({**fields, "name": name}, CreateVoiceRequest)
    except msgspec.ValidationError as e:
        raise InvalidRequest(f"invalid upload: {e}") from None
    settings = request.app.state.settings
    card = await create_voice(service, data, audio, request_id, max_voices=settings.max_voices,
                              require_consent=settings.require_consent)
    return Uploaded(status="uploaded", name=card.id, voice_path=f"{card.id}.wav")
