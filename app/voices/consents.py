"""Serving logic of /v1/audio/voice_consents: OpenAI's consent recordings, kept beside the voices.

A consent is someone's recorded agreement to have their voice cloned. Creating one reads the upload
exactly as a voice upload is read (`serving.read_upload_form`: the same body and file limits) and
puts the recording through the same import (`engine.audio_import`: decoding bounds against bombs,
3-30 s of sound, admitted like a synthesis); only the cleaned clip is stored. A voice created with a
`consent` id records it, and `--require-consent` makes one mandatory for every clone from audio
(`serving.create_voice`). Consents live in `<voices dir>/consents/` (`engine.consent_store`), so
gateway processes sharing the voices folder share them; their number is held to `--max-voices`
like the voices' own.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Literal

import msgspec
from litestar import Request

from app.ops.errors import invalid_field
from app.voices.protocol import ConsentCard, ConsentDeleted, ConsentFields, ConsentPage
from app.voices.serving import decode_admitted, held_place, read_upload_form
from engine.consent_store import ID, Consent, ConsentStore, consent_store, count_consents
from engine.errors import InvalidRequest
from engine.service import SpeechService
from engine.voice_names import check_voice_name
from engine.voice_store import CONSENTS_DIR

log = logging.getLogger("app.voices")

MAX_PAGE = 100


class ConsentNotFound(InvalidRequest):
    status = 404
    code = "consent_not_found"


def consents_of(request: Request) -> ConsentStore:
    return consent_store(Path(request.app.state.settings.voices_dir) / CONSENTS_DIR)


def card(consent: Consent) -> ConsentCard:
    return ConsentCard(id=consent.id, name=consent.name, language=consent.language, created_at=consent.created_at)


async def create_consent(request: Request) -> ConsentCard:
    """POST /v1/audio/voice_consents: multipart `name`, `language`, `recording`."""
    if request.content_type[0] not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise InvalidRequest("send multipart/form-data: name, language and the recording as a file part")
    fields, audio = await read_upload_form(request, "recording", "consent.wav")
    try:
        data = msgspec.convert(fields, ConsentFields, strict=False)
    except msgspec.ValidationError as e:
        raise invalid_field(e) from None
    name = check_voice_name(data.name, "consent recording")
    if audio is None:
        raise InvalidRequest("recording (a file) is required: the person saying they agree to have their voice "
                             "cloned", param="recording")
    service: SpeechService = request.app.state.service
    store = consents_of(request)
    limit = request.app.state.settings.max_voices
    refusal = f"this server holds its limit of {limit} consent recordings (--max-voices); delete one first"
    async with held_place(store.root, limit, count_consents, refusal):
        clip = await decode_admitted(service, service.primary.name, audio, what="the recording", param="recording")
        consent = await asyncio.to_thread(store.create, name, data.language, clip.samples)
    log.info("consent recording %s stored (%.1f s of %s)", consent.id, clip.seconds, clip.source_format)
    return card(consent)


async def list_consents(request: Request, limit: int, after: str | None, order: Literal["asc", "desc"]
                        ) -> ConsentPage:
    """One cursor page, newest first unless `order` is asc; `after` is the last id of the previous page."""
    if after is not None and not ID.match(after):
        raise InvalidRequest("after must be a consent recording id (the last_id of the previous page)", param="after")
    consents = await asyncio.to_thread(consents_of(request).all)
    if order == "desc":
        consents.reverse()
    if after is not None:
        # Ids sort by creation time, so a cursor works even after its consent was deleted.
        consents = [c for c in consents if (c.id > after if order == "asc" else c.id < after)]
    page = consents[:limit]
    return ConsentPage(data=[card(c) for c in page], first_id=page[0].id if page else None,
                       last_id=page[-1].id if page else None, has_more=len(consents) > limit)


async def get_consent(request: Request, consent_id: str) -> ConsentCard:
    consent = await asyncio.to_thread(consents_of(request).get, consent_id.strip())
    if consent is None:
        raise _not_found(consent_id)
    return card(consent)


async def rename_consent(request: Request, consent_id: str, name: str) -> ConsentCard:
    name = check_voice_name(name, "consent recording")
    consent = await asyncio.to_thread(consents_of(request).rename, consent_id.strip(), name)
    if consent is None:
        raise _not_found(consent_id)
    return card(consent)


async def delete_consent(request: Request, consent_id: str) -> ConsentDeleted:
    """Deleting a consent leaves the voices that name it as they are (OpenAI's rule, in reverse)."""
    consent_id = consent_id.strip()
    if not await asyncio.to_thread(consents_of(request).delete, consent_id):
        raise _not_found(consent_id)
    log.info("consent recording %s deleted", consent_id)
    return ConsentDeleted(id=consent_id)


def _not_found(consent_id: str) -> ConsentNotFound:
    return ConsentNotFound(f"no consent recording with id {consent_id!r} (see GET /v1/audio/voice_consents)",
                           param="consent_id")
