"""Timing the words of a sentence from timed words heard in (or spoken by) its audio.

The heard words (a recognizer's, or an engine's own tokens) are matched to the sentence's words in
order by their keys: a monotonic alignment that maximizes the summed similarity (1 for the same key,
the characters' match ratio for a near spelling such as "colour"/"color", nothing below 0.6), where
two or three words on one side may match one on the other ("sea shells" heard as "seashells"). A
matched word takes its heard word's times (words matched together share them by length). The words
between two matches share, in proportion to their length, the time of the unmatched heard words
between those matches ("$9.99" read as "nine dollars and ninety-nine cents"), else the gap between
the matches, else the sentence's bounds. Every word gets times; they never go back, never overlap and
stay inside the bounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from difflib import SequenceMatcher

from engine.base import TimedWord

from .split import word_key

NEAR = 0.6  # least character match ratio for two different keys to count as the same word
GROUP_NEAR = 0.85  # ... for words joined on one side: "colour is" is not "color"


def align(keys: Sequence[str], heard: Sequence[TimedWord], lo: float, hi: float) -> list[tuple[float, float]]:
    """(start, end) for each of `keys` (see `word_key`), from the timed words `heard`, within [lo, hi]."""
    if not keys:
        return []
    hi = max(hi, lo)
    heard = [w for w in heard if word_key(w.text)]
    groups = _match(keys, [word_key(w.text) for w in heard])
    times: list[tuple[float, float] | None] = [None] * len(keys)
    for (i0, i1), (j0, j1) in groups:
        _spread(times, keys, i0, i1, heard[j0].start, heard[j1 - 1].end)
    # The runs between matches (and before the first, after the last), with the heard words between them.
    anchors = [((-1, 0), (-1, 0)), *groups, ((len(keys), 0), (len(heard), 0))]
    for ((_, i0), (_, j0)), ((i1, _), (j1, _)) in zip(anchors, anchors[1:], strict=False):
        if i1 <= i0:
            continue
        between = heard[j0:j1]
        if between:
            start, end = between[0].start, between[-1].end
        else:
            start = heard[j0 - 1].end if j0 > 0 else lo
            end = heard[j1].start if j1 < len(heard) else hi
        _spread(times, keys, i0, i1, start, end)
    return _ordered(times, lo, hi)  # type: ignore[arg-type]


# Steps of the alignment: (words of the text, words heard) matched as one. Besides one to one, a word heard
# as two or three ("seashells" / "sea shells", "2024" / "twenty twenty-four") or two or three heard as one.
_STEPS = ((1, 1), (2, 1), (1, 2), (3, 1), (1, 3))


def _match(keys: Sequence[str], heard: Sequence[str]) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """The best monotonic alignment of `keys` with `heard`: matched groups ((i0, i1), (j0, j1)), in order.

    Runs of equal keys are matched first (most words are heard as written); the scored alignment below
    runs only on what lies between them, which keeps a long sentence to a few milliseconds."""
    groups: list[tuple[tuple[int, int], tuple[int, int]]] = []
    i = j = 0
    for a, b, size in SequenceMatcher(None, keys, heard, autojunk=False).get_matching_blocks():
        groups += [((i + gi, i + gi2), (j + gj, j + gj2)) for (gi, gi2), (gj, gj2) in _scored(keys[i:a], heard[j:b])]
        groups += [((a + k, a + k + 1), (b + k, b + k + 1)) for k in range(size)]
        i, j = a + size, b + size
    return groups


def _scored(keys: Sequence[str], heard: Sequence[str]) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """The alignment of `keys` with `heard` that scores best. A group scores its similarity times the words
    it covers on both sides, halved: joining two words that were heard as one beats matching one of them
    roughly. Joined words must match closely (GROUP_NEAR)."""
    n, m = len(keys), len(heard)
    if not n or not m:
        return []
    similar: dict[tuple[str, str], float] = {}

    def score_of(i: int, j: int, a: int, b: int) -> float:
        pair = ("".join(keys[i - a:i]), "".join(heard[j - b:j]))
        if pair not in similar:
            similar[pair] = similarity(*pair)
        sim = similar[pair]
        if a + b > 2 and sim < GROUP_NEAR:
            return 0.0
        return sim * (a + b) / 2

    score = [[0.0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        row, above = score[i], score[i - 1]
        for j in range(1, m + 1):
            best = max(above[j], row[j - 1])
            for a, b in _STEPS:
                if a <= i and b <= j:
                    gain = score_of(i, j, a, b)
                    if gain and score[i - a][j - b] + gain > best:
                        best = score[i - a][j - b] + gain
            row[j] = best
    groups = []
    i, j = n, m
    while i and j:
        for a, b in _STEPS:
            if a <= i and b <= j:
                gain = score_of(i, j, a, b)
                if gain and score[i][j] == score[i - a][j - b] + gain:
                    groups.append(((i - a, i), (j - b, j)))
                    i, j = i - a, j - b
                    break
        else:
            if score[i][j] == score[i - 1][j]:
                i -= 1
            else:
                j -= 1
    return groups[::-1]


def similarity(a: str, b: str) -> float:
    """1 for the same key, the match ratio of a near spelling, else 0."""
    if a == b:
        return 1.0
    if 2 * min(len(a), len(b)) < NEAR * (len(a) + len(b)):  # the most two lengths allow is below NEAR
        return 0.0
    matcher = SequenceMatcher(None, a, b, autojunk=False)
    if matcher.quick_ratio() < NEAR:
        return 0.0
    ratio = matcher.ratio()
    return ratio if ratio >= NEAR else 0.0


def _spread(times: list, keys: Sequence[str], first: int, stop: int, start: float, end: float) -> None:
    """Words first..stop-1 share [start, end] in proportion to their length."""
    if stop <= first:
        return
    weights = [len(keys[k]) for k in range(first, stop)]
    total, at = sum(weights), 0
    end = max(start, end)
    for k, weight in zip(range(first, stop), weights, strict=True):
        at += weight
        times[k] = (times[k - 1][1] if k > first else start, end if at == total else start + (end - start) * at / total)


def _ordered(times: list[tuple[float, float]], lo: float, hi: float) -> list[tuple[float, float]]:
    """Clamped into [lo, hi], each start at or after the previous start, each end at or before the next start."""
    out: list[list[float]] = []
    for start, end in times:
        start = min(max(start, lo), hi)
        if out:
            start = max(start, out[-1][0])
            out[-1][1] = min(out[-1][1], start)
        out.append([start, min(max(end, start), hi)])
    return [(start, end) for start, end in out]
