"""A transcript as OpenAI's plain-text formats: text, SubRip (srt) and WebVTT (vtt), one cue per segment.

Shared by POST /v1/audio/transcriptions and `speech-gateway transcribe`.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.asr import Segment, Transcript


def timestamp(seconds: float, separator: str = ",") -> str:
    """HH:MM:SS,mmm (SubRip) or HH:MM:SS.mmm (WebVTT, separator ".")."""
    ms = max(0, round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{ms:03d}"


def _cues(segments: Sequence[Segment]) -> list[tuple[float, float, str]]:
    # A cue needs text and positive length: Whisper may end a segment at its own start.
    return [(s.start, max(s.end, s.start + 0.001), s.text.strip()) for s in segments if s.text.strip()]


def srt(segments: Sequence[Segment]) -> str:
    return "".join(f"{i}\n{timestamp(a)} --> {timestamp(b)}\n{text}\n\n"
                   for i, (a, b, text) in enumerate(_cues(segments), 1))


def vtt(segments: Sequence[Segment]) -> str:
    return "WEBVTT\n\n" + "".join(f"{timestamp(a, '.')} --> {timestamp(b, '.')}\n{text}\n\n"
                                  for a, b, text in _cues(segments))


def plain_text(transcript: Transcript) -> str:
    return transcript.text + "\n"


TEXT_FORMATS = {"text": plain_text, "srt": lambda t: srt(t.segments), "vtt": lambda t: vtt(t.segments)}
MEDIA_TYPES = {"text": "text/plain; charset=utf-8", "srt": "application/x-subrip; charset=utf-8",
               "vtt": "text/vtt; charset=utf-8"}
