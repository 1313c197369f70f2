"""The voices a Qwen3 engine offers: CustomVoice speakers, stored clone/design voices, OpenAI names.

The nine CustomVoice speakers (from the Qwen3-TTS model card; every speaker speaks all ten
languages, `language` below is the native one):

| id | gender | native language | character |
|---|---|---|---|
| aiden | male | english | sunny American male, clear midrange |
| ryan | male | english | dynamic male, strong rhythmic drive |
| vivian | female | chinese | bright, slightly edgy young female |
| serena | female | chinese | warm, gentle young female |
| uncle_fu | male | chinese | seasoned male, low mellow timbre |
| dylan | male | chinese (Beijing dialect) | youthful Beijing male, clear and natural |
| eric | male | chinese (Sichuan dialect) | lively Chengdu male, slightly husky |
| ono_anna | female | japanese | playful Japanese female, light and nimble |
| sohee | female | korean | warm Korean female, rich emotion |

OpenAI clients send OpenAI's voice names. They resolve through `Voice.aliases`, chosen by what is
configured, first match wins:

1. a CustomVoice model: each name goes to the speaker closest in gender and character —

   | OpenAI voice | OpenAI's character | speaker |
   |---|---|---|
   | alloy | neutral, balanced (the usual default) | aiden |
   | ash | confident, energetic male | ryan |
   | ballad | soft, emotive male | dylan |
   | coral | warm, friendly female | sohee |
   | echo | clear, even male | aiden |
   | fable | expressive storyteller | eric |
   | onyx | deep, authoritative male | uncle_fu |
   | nova | bright, young female | vivian |
   | sage | calm, thoughtful female | serena |
   | shimmer | soft, warm female | serena |
   | verse | expressive, dynamic male | ryan |
   | marin | natural, light female | ono_anna |
   | cedar | grounded, warm male | uncle_fu |

   English-native speakers (aiden, ryan) take the most used names (alloy, echo, ash, verse) because
   most OpenAI clients speak English.
2. only a Base model: every name goes to the shipped `default` clone voice.
3. only a VoiceDesign model: every name goes to the `narrator-design` voice (or the first design voice).

The same rule picks the voice behind the id `default` (used when a request names no voice): the
`default` clone voice when a Base model is configured, else the alloy speaker, else the narrator.
An alias is never added when it would shadow a stored voice's own id, so a user who uploads a voice
called `alloy` gets that voice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from engine.base import Voice

ENGINE = "qwen"
DEFAULT_VOICE = "default"
DEFAULT_DESIGN_VOICE = "narrator-design"

OPENAI_VOICES = (
    "alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse", "marin", "cedar",
)  # fmt: skip


@dataclass(frozen=True)
class Speaker:
    """One CustomVoice speaker: `id` is the name the model's `spk_id` table knows (lowercase)."""

    id: str
    name: str
    gender: str
    language: str
    description: str


SPEAKERS: tuple[Speaker, ...] = (
    Speaker("aiden", "Aiden", "male", "english", "Sunny American male voice with a clear midrange."),
    Speaker("ryan", "Ryan", "male", "english", "Dynamic male voice with a strong rhythmic drive."),
    Speaker("vivian", "Vivian", "female", "chinese", "Bright, slightly edgy young female voice."),
    Speaker("serena", "Serena", "female", "chinese", "Warm, gentle young female voice."),
    Speaker("uncle_fu", "Uncle Fu", "male", "chinese", "Seasoned male voice with a low, mellow timbre."),
    Speaker("dylan", "Dylan", "male", "chinese", "Youthful Beijing male voice, clear and natural (Beijing dialect)."),
    Speaker("eric", "Eric", "male", "chinese", "Lively Chengdu male voice, slightly husky (Sichuan dialect)."),
    Speaker("ono_anna", "Ono Anna", "female", "japanese", "Playful Japanese female voice, light and nimble."),
    Speaker("sohee", "Sohee", "female", "korean", "Warm Korean female voice with rich emotion."),
)

OPENAI_TO_SPEAKER: dict[str, str] = {
    "alloy": "aiden",
    "ash": "ryan",
    "ballad": "dylan",
    "coral": "sohee",
    "echo": "aiden",
    "fable": "eric",
    "onyx": "uncle_fu",
    "nova": "vivian",
    "sage": "serena",
    "shimmer": "serena",
    "verse": "ryan",
    "marin": "ono_anna",
    "cedar": "uncle_fu",
}


def speaker_voices() -> list[Voice]:
    """The nine CustomVoice speakers as `Voice(kind="speaker")`, without aliases."""
    return [
        Voice(
            id=s.id,
            name=s.name,
            kind="speaker",
            engine=ENGINE,
            language=s.language,
            description=s.description,
            speaker=s.id,
            source="builtin",
        )
        for s in SPEAKERS
    ]


def qwen_voices(stored: Iterable[Voice], *, base: bool, custom_voice: bool, voice_design: bool) -> list[Voice]:
    """Every voice the configured models can serve, with OpenAI names and `default` as aliases.

    `stored` are the voices from the voice folders (clone and design); a voice whose model is not
    configured is left out, so nothing listed ever answers "model not configured".
    """
    stored = list(stored)
    voices: list[Voice] = []
    if custom_voice:
        voices += speaker_voices()
    if base:
        voices += [v for v in stored if v.kind == "clone"]
    if voice_design:
        voices += [v for v in stored if v.kind == "design"]
    if not voices:
        return []

    taken = {v.id for v in voices}
    wanted: dict[str, list[str]] = {}  # voice id → aliases to add
    by_id = {v.id: v for v in voices}
    if custom_voice:
        for name, speaker in OPENAI_TO_SPEAKER.items():
            wanted.setdefault(speaker, []).append(name)
        fallback = OPENAI_TO_SPEAKER["alloy"]
    else:
        fallback = _fallback(by_id, base=base, voice_design=voice_design)
        if fallback is not None:
            wanted[fallback] = list(OPENAI_VOICES)
    if base and DEFAULT_VOICE in by_id:
        fallback = DEFAULT_VOICE  # the shipped clone voice stays the default whatever else is there
    if fallback is not None and fallback != DEFAULT_VOICE:
        wanted.setdefault(fallback, []).append(DEFAULT_VOICE)

    out = []
    for v in voices:
        extra = tuple(a for a in wanted.get(v.id, ()) if a not in taken and a not in v.aliases)
        out.append(replace(v, aliases=v.aliases + extra) if extra else v)
    return out


def _fallback(by_id: dict[str, Voice], *, base: bool, voice_design: bool) -> str | None:
    """The voice that stands in for every OpenAI name when there is no CustomVoice model."""
    if base and DEFAULT_VOICE in by_id:
        return DEFAULT_VOICE
    if voice_design:
        if DEFAULT_DESIGN_VOICE in by_id:
            return DEFAULT_DESIGN_VOICE
        designs = sorted(v.id for v in by_id.values() if v.kind == "design")
        if designs:
            return designs[0]
    if base:
        clones = sorted(v.id for v in by_id.values() if v.kind == "clone")
        return clones[0] if clones else None
    return None
