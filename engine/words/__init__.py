"""Word timestamps for synthesized speech: the input's words (`split`), matched to timed words heard or
spoken (`align`), per sentence as the audio streams (`timer`)."""

from .timer import Hear, SentenceWords, WordTime, WordTimer

__all__ = ["Hear", "SentenceWords", "WordTime", "WordTimer"]
