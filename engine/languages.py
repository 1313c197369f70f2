"""Languages Qwen3-TTS speaks, with the ISO codes and spellings clients send for them."""

from __future__ import annotations

from .errors import InvalidRequest

LANGUAGES = (
    "auto", "chinese", "english", "german", "italian", "portuguese", "spanish", "japanese", "korean", "french",
    "russian",
)
_ALIASES = {
    "zh": "chinese", "zh-cn": "chinese", "cn": "chinese", "mandarin": "chinese",
    "en": "english", "en-us": "english", "en-gb": "english",
    "de": "german", "it": "italian", "pt": "portuguese", "pt-br": "portuguese", "es": "spanish",
    "ja": "japanese", "jp": "japanese", "ko": "korean", "fr": "french", "ru": "russian",
}


def normalize_language(value: str | None) -> str:
    """Canonical lowercase language name; None or "" means auto. Raises InvalidRequest (param language)."""
    if not value:
        return "auto"
    key = value.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in LANGUAGES:
        raise InvalidRequest(
            f"unsupported language {value!r}; supported: {', '.join(LANGUAGES)} (or ISO codes such as en, zh)",
            param="language",
        )
    return key


def language_of_tag(value: str | None, param: str = "language") -> str:
    """`normalize_language` for a BCP 47 tag as Home Assistant and Chatterbox send them: a region we have
    no alias for ("en-AU", "fr_CA") falls back to its primary subtag; an unknown language raises with the list."""
    try:
        return normalize_language(value)
    except InvalidRequest:
        assert value  # "" and None are "auto"
        try:
            return normalize_language(value.replace("_", "-").split("-")[0])
        except InvalidRequest as e:
            raise InvalidRequest(e.message, param=param) from None
