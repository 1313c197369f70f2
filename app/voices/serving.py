"""Serving logic of /v1/audio/voices: create (upload or design), look up, sample, delete.

Upload (multipart with `audio_sample`): name rules, the `consent` id checked → a place under
`--max-voices` held (`held_place`) → the clip through `engine.audio_import` (any container, mono
24 kHz, trimmed, loudness-normalised, 3-30 s) → what the clone is made from (`clone_reference`:
in context with a transcript, else x-vector only) → `save_voice` (atomic: the voice appears whole
or not at all) → answer. The clone prompt is then computed in the background if the Base model is
already loaded (a speech request arriving meanwhile joins that computation), else on first use;
either way it lands in the disk cache and survives restarts.

Design (`description`, or OpenAI's `prompt`; no audio): the VoiceDesign model speaks `sample_text`
(default: a neutral text in the voice's language, `engine.neutral_scripts`) through the ordinary
admitted, streamed synthesis path; the clip goes through the same import pipeline; the Base model
computes its clone prompt before the answer (designing is slow anyway, and the answer then means
"ready"); the voice is saved as a clone (`source: designed`, description kept).

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
import functools
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import msgspec
import numpy as np
from litestar import Request
from litestar.datastructures import UploadFile

from app.ops.errors import invalid_field
from app.ops.forms import audio_form
from app.settings import NO_VOICE_MAKER
from app.voices.protocol import MAX_AUDIO_BYTES, CreateVoiceRequest, VoiceCard, VoiceDeleted
from engine import limits, quota
from engine.audio_import import MAX_SECONDS, ImportedAudio, import_reference
from engine.base import SAMPLE_RATE, Voice, VoiceMaker, voice_maker
from engine.consent_store import consent_store
from engine.errors import Conflict, Forbidden, InvalidRequest, PayloadTooLarge, VoiceNotFound
from engine.languages import normalize_language
from engine.neutral_scripts import neutral_script, written_language
from engine.service import SpeechParams, SpeechService
from engine.voice_names import check_voice_name, voice_id_for
from engine.voice_store import (
    CONSENTS_DIR,
    VoiceManifest,
    count_voices,
    delete_voice,
    encode_wav,
    is_voice_folder,
    read_reference,
    save_voice,
)

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
    return folder if is_voice_folder(folder) else None


def voice_card(v: Voice, maker: VoiceMaker | None = None) -> VoiceCard:
    stored = v.source in ("shipped", "uploaded", "designed")
    return VoiceCard(
        id=v.id, name=v.name, engine=v.engine, language=v.language, kind=v.kind, object="audio.voice",
        aliases=list(v.aliases),
        description=v.description, created_at=v.created_at, source=v.source,
        type=("prompt" if v.source == "designed" else "audio_sample") if stored and v.kind == "clone" else None,
        prompt=v.description if v.source == "designed" else None,
        ref_text=v.ref_text if v.kind == "clone" else None, x_vector_only=v.x_vector_only,
        ref_text_source=v.ref_text_source if v.kind == "clone" and v.ref_text else None,
        clone_mode=("x_vector" if v.x_vector_only else "in_context") if v.kind == "clone" else None,
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
            raise invalid_field(e) from None
        except msgspec.DecodeError as e:
            raise InvalidRequest(f"invalid JSON body: {e}") from None
    if content_type not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise InvalidRequest("send multipart/form-data (name + audio_sample file) to clone a voice from audio, or "
                             "JSON (name + description) to design one")
    fields, audio = await read_upload_form(request, "audio_sample", "voice.mp3")
    # HTML checkboxes send "on"; msgspec reads "true"/"false"/"1"/"0" as booleans.
    if "x_vector_only" in fields:
        fields["x_vector_only"] = _FORM_BOOLEANS.get(fields["x_vector_only"].strip().lower(), fields["x_vector_only"])
    try:
        return msgspec.convert(fields, CreateVoiceRequest, strict=False), audio
    except msgspec.ValidationError as e:
        raise invalid_field(e) from None


async def read_upload_form(request: Request, file_field: str, example: str) -> tuple[dict[str, str], bytes | None]:
    """A multipart (or url-encoded) form's text fields and its audio file `file_field` (at most 10 MiB).

    The route's body limit (`MAX_CREATE_BODY`) caps what is read at all; a field given twice, a text
    where the file belongs and a file larger than 10 MiB are refused naming the field. An empty text
    field (a blank form control) counts as not given, except `name`, whose own check says it is empty.
    """
    fields: dict[str, str] = {}
    audio: bytes | None = None
    too_large = f"the request is larger than {MAX_CREATE_BODY // 1024} KiB; {file_field} may be at most 10 MiB"
    async with audio_form(request, file_field, too_large) as form:
        for key, values in form.dict().items():
            if len(values) != 1:
                raise InvalidRequest(f"form field {key!r} was given {len(values)} times", param=key)
            value = values[0]
            if isinstance(value, str) and not value.strip() and key != "name":
                continue  # an empty form control (a blank field, a file input left empty) means "not given"
            if key == file_field:
                if not isinstance(value, UploadFile):
                    raise InvalidRequest(f"{file_field} must be a file part (curl: -F {file_field}=@{example})",
                                         param=file_field)
                audio = await value.read(MAX_AUDIO_BYTES + 1)
            elif isinstance(value, str):
                fields[key] = value
    if audio is not None and len(audio) > MAX_AUDIO_BYTES:
        raise PayloadTooLarge(f"{file_field} is larger than 10 MiB", param=file_field)
    return fields, audio


async def create_voice(service: SpeechService, data: CreateVoiceRequest, audio: bytes | None, request_id: str, *,
                       max_voices: int | None = None, require_consent: bool = False) -> VoiceCard:
    """Upload (audio) or design (description), save, and answer the new voice's card.

    `max_voices`: the folder's limit, a place under it held from the checks to the save (`held_place`).
    `require_consent`: a clone from audio must name a consent recording (`--require-consent`).
    """
    description = (data.description or data.prompt or "").strip()
    designing = audio is None and (bool(description) or data.type == "prompt")
    maker = _maker_for(service, design=designing)
    assert maker.user_dir is not None  # checked by _maker_for
    name = check_voice_name(data.name)
    language = normalize_language(data.language)
    consent = await _known_consent(maker.user_dir, data.consent, required=require_consent and not designing)
    if not designing and audio is None:
        raise InvalidRequest("audio_sample (a file) is required to clone a voice; or send a description (prompt) "
                             "to design one", param="audio_sample")
    refusal = f"this server holds its limit of {max_voices} voices (--max-voices); delete one first"
    async with held_place(maker.user_dir, max_voices, count_voices, refusal):
        voice_id = _available_id(service, maker, name)
        if designing:
            return await _design(service, maker, data, name, voice_id, description, language, consent, request_id)
        assert audio is not None
        clip = await decode_admitted(service, maker.engine_name, audio)
        ref_text, x_vector_only = await clone_reference(clip.samples, data.ref_text, x_vector_only=data.x_vector_only,
                                                        language=language, transcriber=clone_transcriber(service))
        manifest = VoiceManifest(id=voice_id, name=name, kind="clone", language=language, ref_text=ref_text,
                                 ref_text_source=ref_text_source(data.ref_text, ref_text),
                                 x_vector_only=x_vector_only, source="uploaded", consent=consent)
        voice = await _save(maker, manifest, clip.samples)
    maker.prepare_soon(voice)
    log.info("voice %r uploaded (%.1f s of %s, trimmed from %.1f s; %s clone)", voice.id, clip.seconds,
             clip.source_format, clip.original_seconds, "x-vector" if x_vector_only else "in-context")
    return voice_card(voice, maker)


Transcribe = Callable[[np.ndarray, str], Awaitable[str | None]]
"""A speech recognizer as `clone_reference` uses it: (24 kHz samples, language) -> their transcript, or None."""


def clone_transcriber(service: SpeechService) -> Transcribe | None:
    """The speech recognizer (--asr-model) as `clone_reference` uses it; None on a server that does not hear."""
    transcriber = service.transcriber
    if transcriber is None:
        return None
    return lambda samples, language: transcriber.transcript_of(samples, SAMPLE_RATE, language)


def ref_text_source(given: str | None, ref_text: str | None) -> str | None:
    """Where a clone's transcript came from, as its card shows it: "given" by the client, or "transcribed"."""
    if not ref_text:
        return None
    return "given" if (given or "").strip() else "transcribed"


async def clone_reference(samples: np.ndarray, ref_text: str | None, *, x_vector_only: bool, language: str,
                          transcriber: Transcribe | None = None) -> tuple[str | None, bool]:
    """What a clone of `samples` (24 kHz) is made from: (transcript, x_vector_only). The one place that decides
    what a sample without a transcript becomes (uploads and inline `ref_audio` alike).

    - `x_vector_only` asked for: the speaker embedding alone (the transcript, if any, is kept but unused).
    - a transcript given: an in-context clone, the clip and its words (the closest likeness).
    - no transcript (OpenAI's SDK sends only the audio): with a `transcriber` (a speech recognizer), its
      transcript of the clip makes an in-context clone; without one, or when it hears nothing, an
      x-vector-only clone, which needs no words (the timbre; less of the accent, rhythm and manner).
    """
    text = (ref_text or "").strip() or None
    if text is None and not x_vector_only and transcriber is not None:
        text = ((await transcriber(samples, language)) or "").strip() or None
    return text, x_vector_only or text is None


@asynccontextmanager
async def held_place(folder: Path, limit: int | None, count: Callable[[Path], int], refusal: str
                     ) -> AsyncIterator[None]:
    """A place under `folder`'s `limit` (`engine.quota`), held while the body runs: Forbidden with `refusal`
    when the folder is full. Checked and taken in one step, also across processes sharing the folder,
    so parallel uploads never pass the limit together."""
    if limit is None:
        yield
        return
    reserving = asyncio.ensure_future(asyncio.to_thread(quota.reserve, folder, limit, count))
    try:
        marker = await asyncio.shield(reserving)
    except asyncio.CancelledError:  # the place may still be taken after we stop waiting: give it back then
        reserving.add_done_callback(_give_back)
        raise
    if marker is None:
        limits.hit("max_voices")
        raise Forbidden(refusal, param="name")
    try:
        yield
    finally:
        # Off the loop: giving back waits for the folder's lock while another upload counts.
        await asyncio.shield(asyncio.to_thread(quota.release, marker))


def _give_back(reserving: asyncio.Future[Path | None]) -> None:
    if not reserving.cancelled() and reserving.exception() is None and (marker := reserving.result()) is not None:
        asyncio.get_running_loop().run_in_executor(None, quota.release, marker)


async def _known_consent(voices_dir: Path, consent_id: str | None, *, required: bool) -> str | None:
    """`consent_id` when it names a stored consent recording; a 400 naming `consent` when it does not, or
    when none is given and one is `required`."""
    consent_id = (consent_id or "").strip() or None
    if consent_id is None:
        if required:
            raise InvalidRequest("this server clones a voice only with a consent recording (--require-consent): "
                                 "upload one (POST /v1/audio/voice_consents) and send its id as 'consent'",
                                 param="consent")
        return None
    # The store is made here, on the loop (its first use cleans the folder before this process writes there);
    # the lookup reads the disk, on a thread.
    if await asyncio.to_thread(consent_store(voices_dir / CONSENTS_DIR).get, consent_id) is None:
        raise InvalidRequest(f"no consent recording with id {consent_id!r} (see GET /v1/audio/voice_consents)",
                             param="consent")
    return consent_id


async def decode_admitted(service: SpeechService, engine: str, audio: bytes, *, what: str = "the audio sample",
                          param: str = "audio_sample") -> ImportedAudio:
    """Decoding costs CPU and memory like a synthesis does, so it waits for (and holds) an admission slot
    of `engine`: a flood of uploads queues and meets 429 instead of decoding all at once. `what`, `param`:
    how refusals name the upload (`import_reference`)."""
    async with await service.admission[engine].acquire():
        return await asyncio.to_thread(functools.partial(import_reference, audio, what=what, param=param))


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
    if keys & {"default", CONSENTS_DIR, *maker.reserved_names}:
        raise InvalidRequest(f"the name {name!r} is reserved (an OpenAI voice name, a Qwen3 speaker, or the "
                             "consents folder)", param="name")
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
                  description: str, language: str, consent: str | None, request_id: str) -> VoiceCard:
    if not description:
        raise InvalidRequest("description (or prompt: the voice, in words) is required to design a voice",
                             param="description")
    sample_text = (data.sample_text or data.script_hint or "").strip()
    if not sample_text:  # OpenAI's script_hint is optional: a neutral text in the voice's language
        language = written_language(description) if language == "auto" else language
        sample_text = neutral_script(language)
    rendered = await _render(service, maker, description, sample_text, language, data.seed, request_id)
    try:
        clip = await asyncio.to_thread(import_reference, encode_wav(rendered))
    except InvalidRequest as e:
        raise InvalidRequest(f"the designed sample is unusable as a reference: {e.message}; adjust sample_text",
                             param="sample_text") from None
    manifest = VoiceManifest(id=voice_id, name=name, kind="clone", language=language, ref_text=sample_text,
                             description=description, source="designed", consent=consent)
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
                       language: str, *, require_consent: bool = False) -> Voice:
    """An unsaved clone voice from a request's `ref_audio` (base64 bytes or a stored voice's id).
    `require_consent` (`--require-consent`): raw audio is refused, having no consent recording."""
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
    elif require_consent:
        raise InvalidRequest("this server clones a voice only with a consent recording (--require-consent): "
                             "create the voice (POST /v1/audio/voices with 'consent') and name it in ref_audio",
                             param="ref_audio")
    else:
        samples = (await decode_admitted(service, maker.engine_name, _b64decode(value), what="ref_audio",
                                         param="ref_audio")).samples
    transcriber = clone_transcriber(service)
    hearing = text is None and not x_vector_only and transcriber is not None
    text, x_vector_only = await clone_reference(samples, text, x_vector_only=x_vector_only, language=language,
                                                transcriber=transcriber)
    if hearing:
        log.info("inline clone: ref_audio came without ref_text; %s", f"transcribed {len(text.split())} words"
                 if text else "nothing heard in it, an x-vector clone")
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

