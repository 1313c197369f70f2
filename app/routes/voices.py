"""The voice catalogue."""

from __future__ import annotations

from litestar import Request, get

from app.openapi_docs import error_responses
from app.protocol import VoiceCard, VoiceList
from engine.base import Voice
from engine.service import SpeechService


def voice_card(v: Voice) -> VoiceCard:
    return VoiceCard(id=v.id, name=v.name, engine=v.engine, language=v.language, kind=v.kind,
                     aliases=list(v.aliases), description=v.description, created_at=v.created_at, source=v.source)


@get("/v1/audio/voices", summary="List voices", responses=error_responses(401))
async def list_voices(request: Request) -> VoiceList:
    service: SpeechService = request.app.state.service
    cards = [voice_card(v) for v in service.registry.list()]
    return VoiceList(data=cards, voices=cards)
