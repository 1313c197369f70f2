"""The words of a text, with their character offsets, and the key two spellings of a word are compared by.

A word is a run of characters other than spaces and dashes or ellipses between words ("Bye—for now"
is three words; a hyphen joins) with at least one letter or digit, without the punctuation around it ("(Hello," → "Hello"; "don't", "$9.99", "50%" and "state-of-the-art" stay whole). In
scripts written without spaces (Han, kana) each character is a word. Offsets index the original
string, so `text[start:end]` is the word as the client wrote it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

_TOKEN = re.compile(r"[^\s—–…]+")
# Han, kana, CJK symbols: spoken words with no spaces between them.
_WIDE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_KEPT_PUNCTUATION = frozenset("%‰#@&")  # read aloud as words ("percent", "at"), so part of the word


@dataclass(frozen=True, slots=True)
class TextWord:
    start: int  # character offsets into the text
    end: int
    key: str  # what it is compared by (see `word_key`)
    letters: int  # letters and digits it adds to the text, after NFKC (see `alnum_count`)


def word_key(text: str) -> str:
    """NFKC, case-folded, letters and digits only: "Don't," and "dont" compare equal."""
    return "".join(ch for ch in unicodedata.normalize("NFKC", text).casefold() if ch.isalnum())


def alnum_count(text: str) -> int:
    """Letters and digits of `text` after NFKC, as engines that normalize it (and split it) still have them."""
    return sum(ch.isalnum() for ch in unicodedata.normalize("NFKC", text))


def split_words(text: str) -> list[TextWord]:
    words: list[TextWord] = []
    for token in _TOKEN.finditer(text):
        start = token.start()
        for piece in _pieces(token.group()):
            _add(words, text, start + piece[0], start + piece[1])
    return words


def _pieces(token: str) -> list[tuple[int, int]]:
    """A token cut around each wide character: [(start, end)] within the token."""
    if not _WIDE.search(token):
        return [(0, len(token))]
    out, at = [], 0
    for m in _WIDE.finditer(token):
        if m.start() > at:
            out.append((at, m.start()))
        out.append((m.start(), m.end()))
        at = m.end()
    if at < len(token):
        out.append((at, len(token)))
    return out


def _add(words: list[TextWord], text: str, start: int, end: int) -> None:
    while start < end and _trimmed(text[start]):
        start += 1
    while end > start and _trimmed(text[end - 1]):
        end -= 1
    key = word_key(text[start:end])
    if key:
        words.append(TextWord(start, end, key, alnum_count(text[start:end])))


def _trimmed(ch: str) -> bool:
    return unicodedata.category(ch).startswith("P") and ch not in _KEPT_PUNCTUATION
