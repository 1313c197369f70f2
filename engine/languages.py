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
