"""Sentence segmentation of whole texts."""

from __future__ import annotations

import re

from engine.text import split_sentences


def test_sentences_and_abbreviations():
    text = "Dr. Smith met Mr. J. Doe at 3.5 km. It was fun! Was it? Yes… 你好。世界！"
    assert split_sentences(text) == ["Dr. Smith met Mr. J. Doe at 3.5 km.", "It was fun!", "Was it?", "Yes…",
                                     "你好。", "世界！"]


def test_long_sentences_are_bounded_and_nothing_is_lost():
    text = ("This clause goes on, and on, and on; " * 30) + "word " * 200 + "end."
    segments = split_sentences(text, max_chars=80)
    assert all(len(s) <= 80 for s in segments)
    assert " ".join(segments) == re.sub(r"\s+", " ", text).strip()


def test_whitespace_and_empty():
    assert split_sentences("  Hello \n\n world.  ") == ["Hello world."]
    assert split_sentences("") == []
    assert split_sentences("...") == ["..."]  # punctuation alone still reaches the engine, which decides
