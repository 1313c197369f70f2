"""Word times moved onto the audio's own onsets.

Whisper's word times come from cross-attention aligned by dynamic time warping: good for where a word
is, not for where it begins. After a pause the start lands 100-300 ms early (the pause is handed to
the next word) and a word's end runs on into the silence after it. Captions, karaoke highlighting and
a voice agent's "what was heard before the barge-in" need the moment the sound starts, so each word's
[start, end] window is narrowed to where its short-time energy rises above, and last stays above, a
threshold set by the word's own loudness (and by the clip's noise floor). A window that is loud from
its first frame (continuous speech, no pause before the word) keeps its start.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from .transcript import Word

HOP_S = 0.01  # energy frames every 10 ms ...
WINDOW_S = 0.02  # ... each 20 ms long
# A word's sound starts where its energy comes within this much of the word's loudest frame, a level
# that takes in the weak first consonants ("h", "f", "th") but not the previous word's fading tail.
BELOW_PEAK_DB = 30.0
ABOVE_FLOOR_DB = 12.0  # and it must stand this far above the clip's noise floor
MIN_WORD_S = 0.02  # a refined word keeps at least this length
LOOK_BACK_S = 0.3  # how far before Whisper's start a word's sound may begin
PAUSE_FRAMES = round(0.12 / HOP_S)  # quiet longer than this between two sounds is a pause between words
SHORT_WORD_S = 0.05  # shorter than this, no spoken word: the aligner lost it (see spread_short_words)


def energy_db(samples: np.ndarray, rate: int) -> np.ndarray:
    """Short-time energy in dB, one value per HOP_S, frame i covering [i*HOP_S, i*HOP_S + WINDOW_S)."""
    hop, win = max(1, round(HOP_S * rate)), max(1, round(WINDOW_S * rate))
    if len(samples) < win:
        samples = np.pad(samples, (0, win - len(samples)))
    frames = np.lib.stride_tricks.sliding_window_view(samples, win)[::hop]
    return 10 * np.log10(np.maximum(np.mean(frames.astype(np.float64) ** 2, axis=1), 1e-10))


def spread_short_words(words: Sequence[Word], shortest: float = SHORT_WORD_S) -> list[Word]:
    """Whisper's alignment sometimes squeezes a word to nothing (start == end) and gives its time to a
    neighbour. Each run of words linked by such a word shares the run's span again, by letters spoken."""
    out = list(words)
    i = 0
    while i < len(out):
        j = i
        while j + 1 < len(out) and min(out[j].end - out[j].start, out[j + 1].end - out[j + 1].start) < shortest:
            j += 1
        if j > i:
            start, end = out[i].start, max(w.end for w in out[i:j + 1])
            weights = [max(1, sum(c.isalnum() for c in w.word)) for w in out[i:j + 1]]
            at, total = start, sum(weights)
            for k, weight in enumerate(weights, i):
                step = (end - start) * weight / total
                out[k] = replace(out[k], start=round(at, 3), end=round(at + step, 3))
                at += step
        i = j + 1
    return out


def refine_word_times(samples: np.ndarray, rate: int, words: Sequence[Word], *,
                      levels: np.ndarray | None = None) -> list[Word]:
    """`words` with each start moved forward to its onset and each end back to where its sound stops,
    both inside the word's own window (after `spread_short_words`); order and count are kept.
    `levels`: `energy_db(samples, rate)` when the caller has it already (one clip, several segments)."""
    if not words:
        return []
    words = spread_short_words(words)
    db = energy_db(samples, rate) if levels is None else levels
    floor = float(np.percentile(db, 10))
    out: list[Word] = []
    for w in words:
        # Whisper's start may also be late, inside the word's sound: look back too, as far as the previous
        # word's sound ends (so its tail is never taken for this word's onset) and at most LOOK_BACK_S.
        earliest = max(w.start - LOOK_BACK_S, out[-1].end if out else 0.0, 0.0)
        i0 = min(len(db) - 1, max(0, int(round(min(earliest, w.start) / HOP_S))))
        i1 = min(len(db), max(i0 + 1, int(round(w.end / HOP_S))))
        own = db[int(round(w.start / HOP_S)):i1]
        window = db[i0:i1]
        peak = float(own.max()) if len(own) else float(window.max())
        threshold = max(floor + ABOVE_FLOOR_DB, peak - BELOW_PEAK_DB)
        loud = np.flatnonzero(window > threshold)
        if len(loud) == 0:  # too quiet to tell (whispered, or noise): Whisper's times stand
            out.append(w)
            continue
        # Loud stretches, joined across gaps shorter than a pause (a stop closure inside a word). The word's
        # own sound is the longest: the window may also hold the previous word's tail and the next word's
        # first sound, each cut off from it by a pause.
        breaks = np.flatnonzero(np.diff(loud) > PAUSE_FRAMES)
        firsts, lasts = np.r_[loud[0], loud[breaks + 1]], np.r_[loud[breaks], loud[-1]]
        reaching = lasts >= int(round(w.start / HOP_S)) - i0  # a sound that ends before the word's window is not it
        if not reaching.any():
            out.append(w)
            continue
        k = int(np.argmax(np.where(reaching, lasts - firsts, -1)))
        start = (i0 + firsts[k]) * HOP_S
        end = min(w.end, (i0 + lasts[k]) * HOP_S + WINDOW_S)
        if end - start < MIN_WORD_S:
            start, end = w.start, w.end
        out.append(replace(w, start=round(float(start), 3), end=round(float(end), 3)))
    return out
