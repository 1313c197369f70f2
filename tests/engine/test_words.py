"""Word timestamps' pure parts: the input's words and their offsets, and aligning timed words onto them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.base import TimedWord
from engine.words.align import align
from engine.words.split import split_words, word_key


def words_of(text: str) -> list[str]:
    return [text[w.start:w.end] for w in split_words(text)]


def test_words_keep_their_offsets_and_lose_surrounding_punctuation():
    text = '  "Hello," she said — (don\'t) pay $9.99, 50% off… state-of-the-art!  '
    assert words_of(text) == ["Hello", "she", "said", "don't", "pay", "$9.99", "50%", "off", "state-of-the-art"]
    assert [w.key for w in split_words(text)][:4] == ["hello", "she", "said", "dont"]


def test_dashes_and_ellipses_between_words_split_them_a_hyphen_does_not():
    assert words_of("Bye—for now…really well-known") == ["Bye", "for", "now", "really", "well-known"]


def test_each_han_or_kana_character_is_a_word_and_punctuation_alone_is_none():
    assert words_of("你好，世界。Hello 東京タワー! — … &") == ["你", "好", "世", "界", "Hello", "東", "京", "タ", "ワ", "ー"]


def test_keys_fold_case_width_and_compatibility_forms():
    assert word_key("ＨＥＬＬＯ") == word_key("hello") == "hello"
    assert word_key("Straße") == "strasse"
    assert word_key("x²") == "x2"


def t(word: str, start: float, end: float) -> TimedWord:
    return TimedWord(word, start, end)


def keys(text: str) -> list[str]:
    return [w.key for w in split_words(text)]


def test_matched_words_take_the_heard_times():
    heard = [t("Hello", 0.3, 0.6), t("there,", 0.7, 1.0), t("friend.", 1.1, 1.5)]
    assert align(keys("hello there friend"), heard, 0.0, 2.0) == [(0.3, 0.6), (0.7, 1.0), (1.1, 1.5)]


def test_words_read_differently_share_the_time_of_what_was_heard_between_matches():
    # "$9.99" read (and heard) as four words: the word takes their span.
    heard = [t("paid", 0.0, 0.4), t("nine", 0.5, 0.7), t("dollars", 0.7, 1.0), t("ninety-nine", 1.0, 1.5),
             t("cents", 1.5, 1.9), t("each", 2.0, 2.3)]
    assert align(keys("paid $9.99 each"), heard, 0.0, 3.0) == [(0.0, 0.4), (0.5, 1.9), (2.0, 2.3)]


def test_a_word_heard_as_two_and_two_heard_as_one_are_matched_as_groups():
    heard = [t("She", 0.0, 0.2), t("sells", 0.2, 0.5), t("seashells", 0.5, 1.1), t("to", 1.1, 1.2)]
    times = align(keys("She sells sea shells to"), heard, 0.0, 2.0)
    assert times[2][0] == 0.5 and times[3][1] == 1.1 and times[2][1] == times[3][0]  # split by length
    assert times[4] == (1.1, 1.2)
    heard = [t("any", 0.0, 0.3), t("one", 0.3, 0.6), t("came", 0.6, 0.9)]
    assert align(keys("anyone came"), heard, 0.0, 1.0) == [(0.0, 0.6), (0.6, 0.9)]


def test_near_spellings_match_and_unheard_words_are_interpolated_between_neighbours():
    heard = [t("the", 0.0, 0.2), t("color", 0.2, 0.6), t("blue", 1.4, 1.8)]
    times = align(keys("the colour is really blue"), heard, 0.0, 2.0)
    assert times[1] == (0.2, 0.6) and times[4] == (1.4, 1.8)
    # "is" and "really" were not heard: they share the gap 0.6-1.4 in proportion to their length (2:6).
    assert times[2] == pytest.approx((0.6, 0.8)) and times[3] == pytest.approx((0.8, 1.4))


def test_nothing_heard_spreads_the_words_over_the_bounds():
    times = align(keys("one three"), [], 1.0, 2.6)
    assert times == [pytest.approx((1.0, 1.6)), pytest.approx((1.6, 2.6))]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(["a", "the", "fox", "jumps", "sea", "shells", "seashells", "2024", "colour"]),
             min_size=1, max_size=25),
    st.lists(st.tuples(st.sampled_from(["a", "the", "fox", "jump", "sea", "shells", "color", "uh", "...", ""]),
                       st.floats(-1, 12), st.floats(0, 3)), max_size=30),
    st.floats(0, 2), st.floats(0, 10),
)
def test_every_word_gets_ordered_times_inside_the_bounds(words, heard, lo, width):
    """Whatever was heard (out of order, overlapping, outside the sentence, nothing): one time per word,
    starts never going back, no overlap, all inside [lo, hi]."""
    hi = lo + width
    times = align([word_key(w) for w in words], [t(w, s, s + d) for w, s, d in heard], lo, hi)
    assert len(times) == len(words)
    for i, (start, end) in enumerate(times):
        assert lo <= start <= end <= hi
        if i:
            assert times[i - 1][1] <= start and times[i - 1][0] <= start
