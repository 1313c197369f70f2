"""What a designed voice says in its reference clip when the client gives no script (OpenAI's `script_hint`).

A designed voice is the VoiceDesign model speaking a text, kept as a clone: the clip should be plain,
even speech (no names, numbers or emotion that would colour every later sentence) of about 8-12 s,
in the language the voice is for. `neutral_script(language)` is that text for each language Qwen3
speaks; `written_language(text)` guesses the language a description was written in, for when the
request names none.
"""

from __future__ import annotations

import re

SCRIPTS = {
    "english": "The morning light came in through the window while the kettle warmed on the stove. It was a quiet "
               "day, with time to read, to think, and to take a slow walk along the river.",
    "chinese": "早晨的阳光透过窗户照进房间，水壶在炉子上慢慢热了起来。这是安静的一天，有时间读书、思考，"
               "还可以沿着河边慢慢地散步。",
    "japanese": "朝の光が窓から差し込み、やかんがコンロの上でゆっくりと温まっていました。静かな一日で、"
                "本を読んだり、考えごとをしたり、川沿いをのんびり散歩したりする時間がありました。",
    "korean": "아침 햇살이 창문으로 들어오고, 주전자가 난로 위에서 천천히 데워지고 있었습니다. 조용한 하루였고, "
              "책을 읽고 생각하며 강가를 천천히 걸을 시간이 있었습니다.",
    "german": "Das Morgenlicht fiel durch das Fenster, während der Wasserkessel langsam warm wurde. Es war ein "
              "ruhiger Tag, mit Zeit zum Lesen, zum Nachdenken und für einen langsamen Spaziergang am Fluss.",
    "french": "La lumière du matin entrait par la fenêtre pendant que la bouilloire chauffait doucement. C'était "
              "une journée calme, avec le temps de lire, de réfléchir et de marcher lentement le long de la rivière.",
    "spanish": "La luz de la mañana entraba por la ventana mientras el agua se calentaba despacio. Era un día "
               "tranquilo, con tiempo para leer, pensar y dar un paseo lento junto al río.",
    "italian": "La luce del mattino entrava dalla finestra mentre il bollitore si scaldava piano. Era una giornata "
               "tranquilla, con il tempo di leggere, di pensare e di passeggiare con calma lungo il fiume.",
    "portuguese": "A luz da manhã entrava pela janela enquanto a chaleira aquecia devagar. Era um dia tranquilo, "
                  "com tempo para ler, pensar e passear com calma à beira do rio.",
    "russian": "Утренний свет проникал в окно, пока чайник медленно нагревался на плите. Это был тихий день, "
               "и было время почитать, подумать и не спеша прогуляться вдоль реки.",
}

# Words frequent in one Latin-script language and rare in the others: enough to tell a description's language.
_LATIN_MARKERS = {
    "english": {"the", "and", "with", "a", "of", "voice", "is", "speaking", "warm", "calm"},
    "german": {"der", "die", "das", "und", "mit", "eine", "ein", "stimme", "ist", "nicht"},
    "french": {"le", "la", "les", "et", "avec", "une", "voix", "est", "des", "du"},
    "spanish": {"el", "la", "los", "las", "y", "con", "una", "voz", "es", "del"},
    "italian": {"il", "la", "gli", "e", "con", "una", "voce", "è", "di", "che"},
    "portuguese": {"o", "a", "os", "as", "e", "com", "uma", "voz", "é", "do", "da"},
}
_SCRIPTS = (  # (language, character range), checked in order: kana before the ideographs Japanese shares
    ("korean", re.compile(r"[\uac00-\ud7af\u1100-\u11ff]")),
    ("japanese", re.compile(r"[\u3040-\u30ff]")),
    ("chinese", re.compile(r"[\u4e00-\u9fff]")),
    ("russian", re.compile(r"[\u0400-\u04ff]")),
)


def neutral_script(language: str) -> str:
    """The neutral reference text for a canonical language name (`engine.languages`); English for auto."""
    return SCRIPTS.get(language, SCRIPTS["english"])


def written_language(text: str) -> str:
    """The language `text` is most likely written in, among those Qwen3 speaks; English when unsure."""
    for language, chars in _SCRIPTS:
        if chars.search(text):
            return language
    words = re.findall(r"[^\W\d_]+", text.lower())
    scores = {language: sum(w in markers for w in words) for language, markers in _LATIN_MARKERS.items()}
    best = max(scores, key=lambda language: scores[language])
    return best if scores[best] > scores["english"] else "english"
