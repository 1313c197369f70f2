"""Serving logic of /v1/audio/voices: create (upload or design), look up, sample, delete.

Upload (multipart with `audio_sample`): name rules → the clip through `engine.audio_import` (any
container, mono 24 kHz, trimmed, loudness-normalised, 3-30 s) → `save_voice` (atomic: the voice
appears whole or not at all) → answer. The clone prompt is then computed in the background if the
Base model is already loaded (a speech request arriving meanwhile joins that computation), else on
first use; either way it lands in the disk cache and survives restarts.

Design (`description` + `sample_text`, no audio): the VoiceDesign model speaks `sample_text` through
the ordinary admitted, streamed synthesis path; the clip goes through the same import pipeline; the
Base model computes its clone prompt before the answer (designing is slow anyway, and the answer
then means "ready"); the voice is saved as a clone (`source: designed`, description kept).

Both go through the engine contract only: the running engine's `VoiceMaker` (`engine.base`; the Qwen
engine has one) saves, prepares and forgets voices. Both need its Base model: without it the request
is refused with a 400 naming the flag (the maker's `require`, or `NO_VOICE_MAKER` when no engine makes
voices), rather than storing a voice that could not speak and would not even be listed.

Names: shown as given; the id is a slug of the name (`engine.voice_names`). A name or id equal to
an OpenAI voice name, a CustomVoice speaker, or any listed voice's id, name or alias is refused
(400, reserved) unless it is one of the user's own voices (409, exists).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
from pathlib import Path

import msgspec
import numpy as np
from litestar import Request
from litestar.datastructures import UploadFile
from litestar.exceptions import ClientException

from app.settings import NO_VOICE_MAKER
from app.voices.protocol import MAX_AUDIO_BYTES, CreateVoiceRequest, VoiceCard, VoiceDeleted
from engine import limits
from engine.audio_import import MAX_SECONDS, ImportedAudio, import_reference
from engine.base import SAMPLE_RATE, Voice, VoiceMaker, voice_maker
from engine.errors import Conflict, Forbidden, InvalidRequest, PayloadTooLarge, VoiceNotFound
from engine.languages import normalize_language
from engine.service import SpeechParams, SpeechService
from engine.voice_names import check_voice_name, voice_id_for
from engine.voice_store import VoiceManifest, delete_voice, encode_wav, read_reference, save_voice

log = logging.getLogger("app.voices")

# The route's body limit: the largest clip plus room for the multipart framing and the text fields.
MAX_CREATE_BODY = MAX_AUDIO_BYTES + 64 * 1024
_URL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)
_FORM_BOOLEANS = {"on": "true", "yes": "true", "off": "false", "no": "false"}
_VOICE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")  # what voice_id_for makes (no '.', no '/')


def find_maker(service: SpeechService) -> VoiceMaker | None:
    """The running engine that makes voices (`engine.base.VoiceMaker`), if any."""
    return next((m for e in service.engines.values() if (m := voice_maker(e)) is not None), None)


def _user_folder(maker: VoiceMaker | None, voice_id: str) -> Path | None:
    """The voice's folder if it is one of the user's own (deletable) voices."""
    user_dir = maker.user_dir if maker is not None else None
    if user_dir is None or not _VOICE_ID.match(voice_id):
        return None
    folder = user_dir / voice_id
    return folder if folder.is_dir() else None


def voice_card(v: Voice, maker: VoiceMaker | None = None) -> VoiceCard:
    stored = v.source in ("shipped", "uploaded", "designed")
    return VoiceCard(
        id=v.id, name=v.name, engine=v.engine, language=v.language, kind=v.kind, object="audio.voice",
        aliases=list(v.aliases),
        description=v.description, created_at=v.created_at, source=v.source,
        type=("prompt" if v.source == "designed" else "audio_sample") if stored and v.kind == "clone" else None,
        prompt=v.description if v.source == "designed" else None,
        ref_text=v.ref_text if v.kind == "clone" else None, x_vector_only=v.x_vector_only,
        deletable=_user_folder(maker, v.id) is not None,
        sample_url=f"/v1/audio/voices/{v.id}/sample" if v.kind == "clone" and v.ref_audio else None,
    )


def list_cards(service: SpeechService) -> list[VoiceCard]:
    maker = find_maker(service)
    return [voice_card(v, maker) for v in service.registry.list()]


def find_voice(service: SpeechService, voice_id: str) -> Voice:
    """A listed voice by id (case-insensitive); VoiceNotFound otherwise."""
    wanted = voice_id.strip().lower()
    voice = next((v for v in service.registry.list() if v.id.lower() == wanted), None)
    if voice is None:
        raise VoiceNotFound(f"no voice with id {voice_id!r} (see GET /v1/audio/voices)", param="voice_id")
    return voice


async def voice_sample(service: SpeechService, voice_id: str) -> tuple[Voice, bytes]:
    """A clone voice's cleaned reference clip (the rendered sample of a designed voice), as WAV bytes."""
    voice = find_voice(service, voice_id)
    if voice.kind != "clone" or not voice.ref_audio:
        raise VoiceNotFound(f"voice {voice.id!r} has no sample: only clone voices have a reference clip",
                            param="voice_id")
    try:
        return voice, await asyncio.to_thread(Path(voice.ref_audio).read_bytes)
    except FileNotFoundError:
        raise VoiceNotFound(f"voice {voice.id!r} was deleted", param="voice_id") from None


async def remove_voice(service: SpeechService, voice_id: str) -> VoiceDeleted:
    """Delete one of the user's voices: folder (atomically), then its cached clone prompts."""
    maker = find_maker(service)
    wanted = voice_id.strip().lower()
    folder = _user_folder(maker, wanted)
    if maker is None or folder is None:
        known = [*service.registry.list(), *(maker.stored_voices() if maker is not None else [])]
        voice = next((v for v in known if v.id.lower() == wanted), None)
        if voice is None and maker is not None and wanted in maker.speaker_ids:  # even where its model is not loaded
            raise Forbidden(f"voice {wanted!r} is a built-in speaker and cannot be deleted", param="voice_id")
        if voice is not None:
            raise Forbidden(f"voice {voice.id!r} is {'shipped' if voice.source == 'shipped' else 'built in'} and "
                            "cannot be deleted; only uploaded and designed voices can", param="voice_id")
        raise VoiceNotFound(f"no voice with id {voice_id!r} (see GET /v1/audio/voices)", param="voice_id")
    stored = maker.stored_voice(wanted)  # None for a damaged folder: deleting it is still allowed
    # The prompt-cache digest needs the reference clip: read it before the files go.
    digest = await maker.digest(stored) if stored is not None and stored.kind == "clone" else None
    if not await asyncio.to_thread(delete_voice, folder.parent, wanted):
        raise VoiceNotFound(f"voice {wanted!r} was deleted already", param="voice_id")
    if digest is not None:
        await maker.forget(digest)
    log.info("deleted voice %r", wanted)
    return VoiceDeleted(id=wanted)


# -- create ---------------------------------------------------------------------------------------
async def read_create_request(request: Request) -> tuple[CreateVoiceRequest, bytes | None]:
    """The request's fields and the uploaded clip, from multipart (or url-encoded) forms or JSON."""
    content_type = request.content_type[0]
    if content_type == "application/json":
        try:
            return msgspec.json.decode(await request.body(), type=CreateVoiceRequest), None
        except msgspec.ValidationError as e:
            raise _invalid_field(e) from None
        except msgspec.DecodeError as e:
            raise InvalidRequest(f"invalid JSON body: {e}") from None
    if content_type not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise InvalidRequest("send multipart/form-data (name + audio_sample file) to clone a voice from audio, or "
                             "JSON (name + description + sample_text) to design one")
    try:
        form = await request.form()
    except ClientException as e:
        if e.status_code == 413:
            raise PayloadTooLarge(f"the request is larger than {MAX_CREATE_BODY // 1024} KiB; the audio sample "
                                  "may be at most 10 MiB", param="audio_sample") from None
        raise InvalidRequest(f"malformed form data: {e.detail}") from None
    except UnicodeDecodeError:
        raise InvalidRequest("a form field is not UTF-8 text: send audio_sample as a file part") from None
    fields: dict[str, object] = {}
    audio: bytes | None = None
    try:
        for key, values in form.dict().items():
            if len(values) != 1:
                raise InvalidRequest(f"form field {key!r} was given {len(values)} times", param=key)
            value = values[0]
            if isinstance(value, str) and not value.strip() and key != "name":
                continue  # an empty form control (a blank field, a file input left empty) means "not given"
            if key == "audio_sample":
                if not isinstance(value, UploadFile):
                    raise InvalidRequest("audio_sample must be a file part (curl: -F audio_sample=@voice.mp3)",
                                         param="audio_sample")
                audio = await value.read(MAX_AUDIO_BYTES + 1)
            elif isinstance(value, str):
                # HTML checkboxes send "on"; msgspec reads "true"/"false"/"1"/"0" as booleans.
                fields[key] = _FORM_BOOLEANS.get(value.strip().lower(), value) if key == "x_vector_only" else value
    finally:
        for values in form.dict().values():
            for value in values:
                if isinstance(value, UploadFile):
                    await value.close()
    if audio is not None and len(audio) > MAX_AUDIO_BYTES:
        raise PayloadTooLarge("audio_sample is larger than 10 MiB", param="audio_sample")
    try:
        return msgspec.convert(fields, CreateVoiceRequest, strict=False), audio
    except msgspec.ValidationError as e:
        raise _invalid_field(e) from None


def _invalid_field(e: msgspec.ValidationError) -> InvalidRequest:
    """msgspec's message ("Expected `str` of length <= 64 - at `$.name`") with `param` set to the field."""
    field = re.search(r"at `\$\.(\w+)`", str(e))
    missing = re.search(r"missing required field `(\w+)`", str(e))
    param = field.group(1) if field else missing.group(1) if missing else None
    return InvalidRequest(f"invalid value for {param!r}: {e}" if param else f"invalid request: {e}", param=param)


async def create_voice(service: SpeechService, data: CreateVoiceRequest, audio: bytes | None,
                       request_id: str, *, max_voices: int | None = None) -> VoiceCard:
    """Upload (audio) or design (description), save, and answer the new voice's card."""
    description = (data.description or data.prompt or "").strip()
    designing = audio is None and (bool(description) or data.type == "prompt")
    maker = _maker_for(service, design=designing)
    if max_voices is not None:
        await _check_room(maker, max_voices)
    name = check_voice_name(data.name)
    voice_id = _available_id(service, maker, name)
    language = normalize_language(data.language)
    if designing:
        return await _design(service, maker, data, name, voice_id, description, language, request_id)
    if audio is None:
        raise InvalidRequest("audio_sample (a file) is required to clone a voice; or send description and "
                             "sample_text to design one", param="audio_sample")
    ref_text = (data.ref_text or "").strip() or None
    if ref_text is None and not data.x_vector_only:
        raise InvalidRequest("ref_text (the exact transcript of audio_sample) is required unless x_vector_only "
                             "is true", param="ref_text")
    clip = await _decode_admitted(service, maker, audio)
    manifest = VoiceManifest(id=voice_id, name=name, kind="clone", language=language, ref_text=ref_text,
                             x_vector_only=data.x_vector_only, source="uploaded", consent=data.consent)
    voice = await _save(maker, manifest, clip.samples)
    maker.prepare_soon(voice)
    log.info("voice %r uploaded (%.1f s of %s, trimmed from %.1f s)", voice.id, clip.seconds, clip.source_format,
             clip.original_seconds)
    return voice_card(voice, maker)


async def _check_room(maker: VoiceMaker, max_voices: int) -> None:
    """Every voice is listed, scanned and cached by every process: an unbounded folder slows everyone."""
    assert maker.user_dir is not None  # checked by _maker_for
    user_dir = maker.user_dir

    def count() -> int:
        return sum(1 for p in user_dir.iterdir() if p.is_dir() and not p.name.startswith(".")) \
            if user_dir.is_dir() else 0

    if await asyncio.to_thread(count) >= max_voices:
        limits.hit("max_voices")
        raise Forbidden(f"this server holds its limit of {max_voices} voices (--max-voices); delete one first",
                        param="name")


async def _decode_admitted(service: SpeechService, maker: VoiceMaker, audio: bytes) -> ImportedAudio:
    """Decoding costs CPU and memory like a synthesis does, so it waits for (and holds) an admission slot:
    a flood of uploads queues and meets 429 instead of decoding all at once."""
    async with await service.admission[maker.engine_name].acquire():
        return await asyncio.to_thread(import_reference, audio)


def _maker_for(service: SpeechService, *, design: bool) -> VoiceMaker:
    """The engine's voice maker, able to make this voice, or a 400 naming the missing options."""
    maker = find_maker(service)
    param = "description" if design else "audio_sample"
    if maker is None:
        raise InvalidRequest(NO_VOICE_MAKER["design" if design else "clone"], param=param)
    maker.require(design=design, param=param)
    return maker


def _available_id(service: SpeechService, maker: VoiceMaker, name: str) -> str:
    """The id for `name`; Conflict (409) if one of the user's voices has it, 400 if it is reserved."""
    voice_id = voice_id_for(name)
    keys = {name.casefold(), voice_id}
    for v in [*service.registry.list(), *maker.stored_voices()]:
        if keys & {v.id.casefold(), v.name.casefold(), *(a.casefold() for a in v.aliases)}:
            if _user_folder(maker, v.id) is not None:
                raise Conflict(f"a voice named {v.name!r} (id {v.id!r}) exists already; delete it first or choose "
                               "another name", param="name")
            raise InvalidRequest(f"the name {name!r} is reserved: voice {v.id!r} answers to it", param="name")
    if keys & {"default", *maker.reserved_names}:
        raise InvalidRequest(f"the name {name!r} is reserved (an OpenAI voice name or a Qwen3 speaker)", param="name")
    if _user_folder(maker, voice_id) is not None:  # a folder the store ignores (damaged): still taken
        raise Conflict(f"the voice id {voice_id!r} is taken by a damaged voice folder; choose another name",
                       param="name")
    return voice_id


async def _save(maker: VoiceMaker, manifest: VoiceManifest, samples: np.ndarray) -> Voice:
    assert maker.user_dir is not None  # checked by _maker_for
    try:
        await asyncio.to_thread(save_voice, maker.user_dir, manifest, samples)
    except FileExistsError:
        raise Conflict(f"a voice with id {manifest.id!r} exists already (created at the same moment?)",
                       param="name") from None
    voice = maker.stored_voice(manifest.id)
    if voice is None:  # saved, but e.g. deleted at once by another process
        raise VoiceNotFound(f"voice {manifest.id!r} vanished right after it was saved", param="name")
    return voice


async def _design(service: SpeechService, maker: VoiceMaker, data: CreateVoiceRequest, name: str, voice_id: str,
                  description: str, language: str, request_id: str) -> VoiceCard:
    sample_text = (data.sample_text or data.script_hint or "").strip()
    if not description:
        raise InvalidRequest("description (the voice, in words) is required to design a voice", param="description")
    if not sample_text:
        raise InvalidRequest("sample_text (what the designed voice says in its reference clip, about 5-20 s of "
                             "speech) is required to design a voice", param="sample_text")
    rendered = await _render(service, maker, description, sample_text, language, data.seed, request_id)
    try:
        clip = await asyncio.to_thread(import_reference, encode_wav(rendered))
    except InvalidRequest as e:
        raise InvalidRequest(f"the designed sample is unusable as a reference: {e.message}; adjust sample_text",
                             param="sample_text") from None
    manifest = VoiceManifest(id=voice_id, name=name, kind="clone", language=language, ref_text=sample_text,
                             description=description, source="designed")
    # Computed before saving, from exactly the samples the saved WAV will give back (same cache key).
    preview = maker.inline(clip.samples, ref_text=sample_text, language=language)
    await maker.prepare(preview, load=True)
    try:
        voice = await _save(maker, manifest, preview.samples)
    except Conflict:
        await maker.forget(await maker.digest(preview))
        raise
    log.info("voice %r designed (%.1f s sample)", voice.id, clip.seconds)
    return voice_card(voice, maker)


async def _render(service: SpeechService, maker: VoiceMaker, description: str, text: str, language: str,
                  seed: int | None, request_id: str) -> np.ndarray:
    """The VoiceDesign model speaking `text`, through admission and the engine's streaming path."""
    voice = Voice(id="voice-design-preview", name="design preview", kind="design", engine=maker.engine_name,
                  description=description, language=language, source="designed")
    stream = await service.open(SpeechParams(text=text, voice_override=voice, language=language, seed=seed,
                                             request_id=request_id, labels={"format": "wav"}))
    parts: list[np.ndarray] = []
    total = 0
    try:
        async for chunk in stream:
            parts.append(chunk.samples)
            total += len(chunk.samples)
            if total > (MAX_SECONDS + 5) * SAMPLE_RATE:  # enough to tell it is too long; stop the runaway
                break
    finally:
        await stream.aclose()
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


# -- inline cloning on the speech endpoint --------------------------------------------------------
async def inline_voice(service: SpeechService, ref_audio: str, ref_text: str | None, x_vector_only: bool,
                       language: str) -> Voice:
    """An unsaved clone voice from a request's `ref_audio` (base64 bytes or a stored voice's id)."""
    maker = find_maker(service)
    value = ref_audio.strip()
    if _URL.match(value) and not value.lower().startswith("data:"):
        raise InvalidRequest("ref_audio must be base64 audio bytes (or a data: URL, or a stored voice id); URLs are "
                             "never fetched", param="ref_audio")
    if maker is None:
        raise InvalidRequest(NO_VOICE_MAKER["inline"], param="ref_audio")
    text = (ref_text or "").strip() or None
    stored = maker.stored_voice(value.lower()) if len(value) <= 64 else None
    if stored is not None and stored.kind == "clone" and stored.ref_audio:
        samples, _ = await asyncio.to_thread(read_reference, stored.ref_audio)
        text = text or stored.ref_text
    else:
        try:
            samples = (await _decode_admitted(service, maker, _b64decode(value))).samples
        except InvalidRequest as e:
            raise type(e)(e.message.replace("the audio sample", "ref_audio"), param="ref_audio") from None
    if text is None and not x_vector_only:
        raise InvalidRequest("ref_text (the exact transcript of ref_audio) is required unless x_vector_only is true",
                             param="ref_text")
    return maker.inline(samples, ref_text=text, x_vector_only=x_vector_only, language=language)


def _b64decode(value: str) -> bytes:
    if value.lower().startswith("data:"):
        header, _, value = value.partition(",")
        if ";base64" not in header.lower():
            raise InvalidRequest("a data: URL in ref_audio must be base64 (data:audio/wav;base64,...)",
                                 param="ref_audio")
    try:
        data = base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("ref_audio is neither a stored voice id nor valid base64 audio", param="ref_audio") \
            from None
    if len(data) > MAX_AUDIO_BYTES:
        raise PayloadTooLarge("ref_audio is larger than 10 MiB", param="ref_audio")
    return data

