"""IncrementalSegmenter: text arriving in random pieces comes out as whole sentences, nothing lost or repeated."""

from __future__ import annotations

import random

import pytest

from engine.text import IncrementalSegmenter, split_sentences

PARAGRAPH = (
    "Dr. Smith arrived at 3.5 minutes past noon; nobody expected him.  He said: \"Hello, everyone!\" "
    "Then, without waiting for an answer, he walked to the window, opened it, looked at the rain for a "
    "long while, and began to talk about the weather, the harvest, the price of bread, and the old mill "
    "by the river that had stopped turning years ago.\nWas it true? Nobody knew… The end."
)


def _normalised(text: str) -> str:
    return " ".join(text.split())


def _random_pieces(text: str, rng: random.Random) -> list[str]:
    """Cut anywhere: mid-word, mid-punctuation, single characters, empty pieces."""
    pieces, i = [], 0
    while i < len(text):
        n = rng.choice([0, 1, 1, 2, 3, 5, 8, 13, 40])
        pieces.append(text[i : i + n])
        i += n
    return pieces


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("seed", range(40))
def test_random_splits_reassemble_exactly(seed: int) -> None:
    rng = random.Random(seed)
    segmenter = IncrementalSegmenter(max_chars=rng.choice([80, 120, 300]))
    out: list[str] = []
    for piece in _random_pieces(PARAGRAPH, rng):
        out += segmenter.push(piece)
    out += segmenter.finish()
    assert " ".join(out) == _normalised(PARAGRAPH)
    assert all(seg and seg == seg.strip() and len(seg) <= segmenter.max_chars for seg in out)
    assert segmenter.pending == ""


def test_sentences_are_released_as_soon_as_they_are_complete() -> None:
    segmenter = IncrementalSegmenter()
    assert segmenter.push("Hello wor") == []
    assert segmenter.push("ld.") == []  # "world." could still be "world.com": wait for what follows
    assert segmenter.push(" How") == ["Hello world."]
    assert segmenter.push(" are you? I am") == ["How are you?"]
    assert segmenter.finish() == ["I am"]


def test_abbreviations_and_decimals_do_not_end_a_sentence() -> None:
    segmenter = IncrementalSegmenter()
    assert segmenter.push("Dr. Smith paid 3.5 dollars. Then") == ["Dr. Smith paid 3.5 dollars."]


def test_long_clause_released_before_the_sentence_ends() -> None:
    segmenter = IncrementalSegmenter(clause_chars=40)
    text = "When the long meeting finally came to an end after many hours, everybody went home"
    released = segmenter.push(text)
    assert released == ["When the long meeting finally came to an end after many hours,"]
    assert " ".join(released + segmenter.finish()) == text


def test_matches_split_sentences_on_a_whole_text() -> None:
    segmenter = IncrementalSegmenter(clause_chars=10_000)
    text = "One two three. Four five six! Seven eight nine? Ten."
    assert segmenter.push(text) + segmenter.finish() == split_sentences(text)


def test_idle_flush_with_a_fake_clock() -> None:
    clock = FakeClock()
    segmenter = IncrementalSegmenter(idle_flush_s=1.0, min_words=4, clock=clock)
    assert segmenter.push("one two three four five si") == []
    clock.now += 0.5
    assert segmenter.poll() == []  # not idle long enough
    clock.now += 0.6
    assert segmenter.poll() == ["one two three four five"]  # the unfinished word "si" stays
    assert segmenter.pending == " si"
    assert segmenter.push("x seven") == []
    clock.now += 2
    assert segmenter.poll() == []  # "six seven": too few words to speak on a pause
    assert segmenter.finish() == ["six seven"]


def test_idle_flush_releases_a_short_finished_sentence() -> None:
    clock = FakeClock()
    segmenter = IncrementalSegmenter(idle_flush_s=0.5, min_words=6, clock=clock)
    assert segmenter.push("Sure.") == []
    clock.now += 0.6
    assert segmenter.poll() == ["Sure."]
    assert segmenter.push(" Dr.") == []
    clock.now += 0.6
    assert segmenter.poll() == []  # an abbreviation is not a finished sentence


def test_idle_flush_keeps_reassembly_exact() -> None:
    rng = random.Random(7)
    clock = FakeClock()
    segmenter = IncrementalSegmenter(idle_flush_s=0.3, min_words=3, clock=clock)
    out: list[str] = []
    for piece in _random_pieces(PARAGRAPH, rng):
        out += segmenter.push(piece)
        clock.now += rng.choice([0.0, 0.1, 0.5])
        out += segmenter.poll()
    out += segmenter.finish()
    assert " ".join(out) == _normalised(PARAGRAPH)



def test_short_sentences_wait_to_be_joined_under_min_chars_and_min_segment_words() -> None:
    segmenter = IncrementalSegmenter(min_chars=20, min_segment_words=3)
    assert segmenter.push("Hi. Yes, ok. ") == []  # 3 words, 12 characters: too short alone
    assert segmenter.push("This one is long enough. And") == ["Hi. Yes, ok. This one is long enough."]
    assert segmenter.push(" two words. Then") == []  # "And two words." waits: 14 characters
    assert segmenter.finish() == ["And two words. Then"]


def test_default_releases_even_one_word_sentences() -> None:
    assert IncrementalSegmenter().push("Hi. Yes. ") == ["Hi.", "Yes."]  # the other sockets' behaviour


def test_max_delay_releases_text_without_a_boundary() -> None:
    clock = FakeClock()
    segmenter = IncrementalSegmenter(max_delay_s=0.25, min_words=6, clock=clock)
    assert segmenter.push("one two thr") == []
    assert segmenter.due_in() == pytest.approx(0.25)
    clock.now += 0.125
    assert segmenter.push("ee fo") == []
    assert segmenter.due_in() == pytest.approx(0.125)  # the oldest text's deadline, not the newest
    clock.now += 0.125
    assert segmenter.poll() == ["one two three"]  # fewer than min_words: the delay wins; "fo" may be growing
    assert segmenter.pending == " fo"
    assert segmenter.due_in() == pytest.approx(0.125)  # the rest arrived 0.125 s ago
    clock.now += 0.125
    assert segmenter.poll() == ["fo"]  # nothing new for max_delay: the last word is taken as whole
    assert segmenter.pending == "" and segmenter.due_in() is None


def test_max_delay_counts_from_the_oldest_text_while_text_keeps_coming() -> None:
    clock = FakeClock()
    segmenter = IncrementalSegmenter(max_delay_s=0.25, clock=clock)
    out: list[str] = []
    for word in "a stream of words that never reaches a sentence end at all".split():
        out += segmenter.push(word + " ")
        clock.now += 0.1
        out += segmenter.poll()
    assert out and all(len(s.split()) <= 3 for s in out)  # released every ~0.25 s, never all at the end
    out += segmenter.finish()
    assert " ".join(out) == "a stream of words that never reaches a sentence end at all"


def test_due_in_without_max_delay_is_the_idle_pause() -> None:
    clock = FakeClock()
    segmenter = IncrementalSegmenter(idle_flush_s=1.0, clock=clock)
    assert segmenter.due_in() is None
    segmenter.push("two words")
    assert segmenter.due_in() == pytest.approx(1.0)
    clock.now += 1.5
    assert segmenter.poll() == []  # too few words for a pause
    assert segmenter.due_in() is None  # and nothing will change that but new text


@pytest.mark.parametrize("seed", range(5))
def test_chunking_options_keep_reassembly_exact(seed: int) -> None:
    rng = random.Random(seed)
    clock = FakeClock()
    segmenter = IncrementalSegmenter(max_chars=60, min_chars=24, min_segment_words=2, max_delay_s=0.22,
                                     clock=clock)
    out: list[str] = []
    for piece in _random_pieces(PARAGRAPH, rng):
        out += segmenter.push(piece)
        clock.now += rng.choice([0.0, 0.05, 0.3])
        out += segmenter.poll()
    out += segmenter.finish()
    assert all(len(s) <= 60 for s in out)
    # Nothing lost or repeated; a word stalled for longer than max_delay is spoken in two parts.
    assert "".join(out).replace(" ", "") == "".join(PARAGRAPH.split())


def test_push_is_linear_in_the_text():
    """64 KB of short sentences in one piece: tens of ms now; the old rescan-per-sentence took minutes."""
    import time

    text = "Hi. " * 16384
    segmenter = IncrementalSegmenter()
    started = time.perf_counter()
    out = segmenter.push(text)
    assert time.perf_counter() - started < 0.5
    assert len(out) == 16384 and set(out) == {"Hi."}
    assert segmenter.finish() == []
