"""Voice names to voices, across engines.

A name resolves by id, then display name, then alias (case-insensitive), looking at the primary
engine first, so OpenAI names (`alloy`, `nova`, ...) reach whatever the primary engine maps them to.
Engines are asked each time: voices uploaded while the server runs resolve at once.
"""

from __future__ import annotations

from .base import Engine, Voice
from .errors import InvalidRequest, VoiceNotFound

DEFAULT_VOICE = "default"


class VoiceRegistry:
    def __init__(self, engines: list[Engine]):
        """`engines` in preference order: the primary engine first."""
        self._engines = engines

    def list(self, prefer: str | None = None) -> list[Voice]:
        """Every voice, those of engine `prefer` (else the primary engine) first."""
        engines = sorted(self._engines, key=lambda e: e.name != prefer) if prefer else self._engines
        seen: set[str] = set()
        out: list[Voice] = []
        for engine in engines:
            for voice in engine.voices():
                if voice.id not in seen:
                    seen.add(voice.id)
                    out.append(voice)
        return out

    def resolve(self, name: str | None, prefer: str | None = None) -> Voice:
        """The voice called `name`; `None` or "" means the default voice. Raises VoiceNotFound."""
        wanted = (name or DEFAULT_VOICE).strip().lower()
        voices = self.list(prefer)
        for match in (
            lambda v: v.id.lower() == wanted,
            lambda v: v.name.lower() == wanted,
            lambda v: wanted in (a.lower() for a in v.aliases),
        ):
            for voice in voices:
                if match(voice):
                    return voice
        for engine in self._engines:
            # An engine may know the name but lack the model to serve it: say which, as a 400.
            explain = getattr(engine, "explain_unknown_voice", None)
            hint = explain(wanted) if explain else None
            if hint:
                raise InvalidRequest(hint, param="voice")
        known = ", ".join(sorted(v.id for v in voices)[:20])
        raise VoiceNotFound(f"voice {name!r} not found; available voices: {known} (see GET /v1/audio/voices)")
