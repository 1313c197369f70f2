"""The languages Whisper knows: ISO 639-1 codes (what OpenAI's API takes) and the names it answers with."""

from __future__ import annotations

from ..errors import InvalidRequest

WHISPER_LANGUAGES = {
    "en": "english", "zh": "chinese", "de": "german", "es": "spanish", "ru": "russian", "ko": "korean",
    "fr": "french", "ja": "japanese", "pt": "portuguese", "tr": "turkish", "pl": "polish", "ca": "catalan",
    "nl": "dutch", "ar": "arabic", "sv": "swedish", "it": "italian", "id": "indonesian", "hi": "hindi",
    "fi": "finnish", "vi": "vietnamese", "he": "hebrew", "uk": "ukrainian", "el": "greek", "ms": "malay",
    "cs": "czech", "ro": "romanian", "da": "danish", "hu": "hungarian", "ta": "tamil", "no": "norwegian",
    "th": "thai", "ur": "urdu", "hr": "croatian", "bg": "bulgarian", "lt": "lithuanian", "la": "latin",
    "mi": "maori", "ml": "malayalam", "cy": "welsh", "sk": "slovak", "te": "telugu", "fa": "persian",
    "lv": "latvian", "bn": "bengali", "sr": "serbian", "az": "azerbaijani", "sl": "slovenian", "kn": "kannada",
    "et": "estonian", "mk": "macedonian", "br": "breton", "eu": "basque", "is": "icelandic", "hy": "armenian",
    "ne": "nepali", "mn": "mongolian", "bs": "bosnian", "kk": "kazakh", "sq": "albanian", "sw": "swahili",
    "gl": "galician", "mr": "marathi", "pa": "punjabi", "si": "sinhala", "km": "khmer", "sn": "shona",
    "yo": "yoruba", "so": "somali", "af": "afrikaans", "oc": "occitan", "ka": "georgian", "be": "belarusian",
    "tg": "tajik", "sd": "sindhi", "gu": "gujarati", "am": "amharic", "yi": "yiddish", "lo": "lao",
    "uz": "uzbek", "fo": "faroese", "ht": "haitian creole", "ps": "pashto", "tk": "turkmen", "nn": "nynorsk",
    "mt": "maltese", "sa": "sanskrit", "lb": "luxembourgish", "my": "myanmar", "bo": "tibetan", "tl": "tagalog",
    "mg": "malagasy", "as": "assamese", "tt": "tatar", "haw": "hawaiian", "ln": "lingala", "ha": "hausa",
    "ba": "bashkir", "jw": "javanese", "su": "sundanese", "yue": "cantonese",
}
_CODES = {name: code for code, name in WHISPER_LANGUAGES.items()}


def language_code(value: str | None, param: str = "language") -> str | None:
    """An ISO 639-1 code (or a name, or a tag such as en-US) as the code Whisper knows; None or "" for
    "detect it". InvalidRequest naming `param` for anything else."""
    if not value or not value.strip() or value.strip().lower() == "auto":
        return None
    key = value.strip().lower().replace("_", "-")
    code = key if key in WHISPER_LANGUAGES else _CODES.get(key) or _CODES.get(key.split("-")[0]) \
        or (key.split("-")[0] if key.split("-")[0] in WHISPER_LANGUAGES else None)
    if code is None:
        raise InvalidRequest(f"unknown language {value!r}: use an ISO 639-1 code such as en, de or zh", param=param)
    return code


def language_name(code: str) -> str:
    """What OpenAI's verbose_json says for a code: "english" for "en"."""
    return WHISPER_LANGUAGES.get(code, code)
