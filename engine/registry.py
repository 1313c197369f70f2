"""Voice names to voices, across engines.

A name resolves by id, then display name, then alias (case-insensitive), looking at the primary
engine first, so OpenAI names (`alloy`, `nova`, ...) reach whatever the primary engine maps them to.
Engines are asked each time: voices uploaded while the server runs resolve at once.

An operator's voice map (`alloy` → `ada-lovelace`) comes before all of that: clients that only
accept OpenAI's 13 names (pipecat, livekit) can then reach uploaded, designed or speaker voices. A
mapped name is listed as an alias of its target and of no other voice.
"""

from __future__ import annotations

from dataclasses import replace

from .base import Engine, Voice
from .errors import InvalidRequest, VoiceNotFound

DEFAULT_VOICE = "default"


class VoiceRegistry:
    def __init__(self, engines: list[Engine], voice_map: dict[str, str] | None = None):
        """`engines` in preference order: the primary engine first; `voice_map`: name → target voice."""
        self._engines = engines
        self.voice_map = {k.strip().lower(): v.strip() for k, v in (voice_map or {}).items()}

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
        return self._apply_map(out) if self.voice_map else out

    def _apply_map(self, voices: list[Voice]) -> list[Voice]:
        targets: dict[str, list[str]] = {}
        for name, target in self.voice_map.items():
            voice = self._find(target.lower(), voices)
            if voice is not None:
                targets.setdefault(voice.id, []).append(name)
        mapped = {name for names in targets.values() for name in names}
        out = []
        for v in voices:
            aliases = tuple(a for a in v.aliases if a.lower() not in mapped) + tuple(
                n for n in targets.get(v.id, ()) if n != v.id.lower())
            out.append(replace(v, aliases=aliases) if aliases != v.aliases else v)
        return out

    @staticmethod
    def _find(wanted: str, voices: list[Voice]) -> Voice | None:
        for match in (
            lambda v: v.id.lower() == wanted,
            lambda v: v.name.lower() == wanted,
            lambda v: wanted in (a.lower() for a in v.aliases),
        ):
            for voice in voices:
                if match(voice):
                    return voice
        return None

    def resolve(self, name: str | None, prefer: str | None = None) -> Voice:
        """The voice called `name`; `None` or "" means the default voice. Raises VoiceNotFound."""
        wanted = (name or DEFAULT_VOICE).strip().lower()
        target = self.voice_map.get(wanted)
        if target is not None:
            voice = self._find(target.lower(), self.list(prefer))
            if voice is None:
                raise VoiceNotFound(f"voice {name!r} is mapped to {target!r} (--voice-map), which is not a voice "
                                    "here; see GET /v1/audio/voices")
            return voice
        voices = self.list(prefer)
        voice = self._find(wanted, voices)
        if voice is not None:
            return voice
        for engine in self._engines:
            # An engine may know the name but lack the model to serve it: say which, as a 400.
            explain = getattr(engine, "explain_unknown_voice", None)
            hint = explain(wanted) if explain else None
            if hint:
                raise InvalidRequest(hint, param="voice")
        known = ", ".join(sorted(v.id for v in voices)[:20])
        raise VoiceNotFound(f"voice {name!r} not found; available voices: {known} (see GET /v1/audio/voices)")
