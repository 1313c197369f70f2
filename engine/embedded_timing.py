"""The embedded engine's own word timing: hibari's model decides how long each phoneme lasts.

Its ONNX graph predicts a duration per phoneme id (in units of two 12.5 ms frames, 600 samples) and
expands the phonemes by them before the vocoder; the graph just does not return them. `TimedHibari`
opens the same model with that tensor added to the graph's outputs (an edit of the protobuf bytes,
so no `onnx` package is needed), so every synthesis also says where each phoneme starts: word times
exact to the frame, at no cost. `word_times` maps them back onto hibari's G2P tokens (a token is a
word of the normalized text, e.g. "9.99" read as "nine dollars and ninety-nine cents").

With another hibari build whose graph lacks the tensor, `TimedHibari.timed` is False and synthesis is
hibari's own; word timestamps then need a speech recognizer, as for Qwen.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from .base import TimedWord

log = logging.getLogger(__name__)

DURATIONS = "/Cast_32_output_0"  # int64 [ids]: the rounded, clipped duration of each phoneme id
SAMPLES_PER_UNIT = 600  # one duration unit: two vocoder frames of 300 samples at 24 kHz
_OUTPUTS = 6  # lh, theta, ln, lr, phi, f0: what hibari's dsp.synth takes
# A phoneme's sound begins about two duration units before its slot (the decoder's convolutions and the
# 50 ms synthesis window spread it): words spoken alone start 59 ms (mean) before their first phoneme's
# slot by their sound's onset (bench/timestamps.py, words_alone). Times are moved back by this much.
SOUND_LEAD = 0.05


class TimedHibari:
    """hibari's synthesis from phoneme ids, returning the model's phoneme durations beside the audio."""

    def __init__(self, tts: Any, threads: int):
        self.tts = tts
        self.timed = False
        try:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = options.inter_op_num_threads = threads
            options.log_severity_level = 3
            model = with_output(Path(tts.model_path).read_bytes(), DURATIONS)
            tts.sess = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
            self.timed = True
        except Exception as e:  # noqa: BLE001 - synthesis still works, only without native timing
            log.warning("embedded engine: no phoneme durations from %s (%s); word timestamps will need a "
                        "speech recognizer", tts.model_path, e)

    def synthesize(self, phonemes: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
        """hibari's `from_ids(ids(phonemes), 1.0, rng)`, and the durations of the ids (None without timing)."""
        if not self.timed:
            return self.tts.from_ids(self.tts.ids(phonemes), 1.0, rng), None
        from hibari import dsp

        ids = self.tts.ids(phonemes)
        if len(ids) < 3:  # hibari says nothing for it either
            return np.zeros(0, np.float32), np.zeros(len(ids), np.int64)
        out = self.tts.sess.run(None, {"ids": np.asarray([ids], np.int64), "speed": np.asarray([1.0], np.float32)})
        return dsp.synth(*(o[0] for o in out[:_OUTPUTS]), rng), np.asarray(out[_OUTPUTS]).reshape(-1)


def spoken_tokens(tts: Any, segment: str) -> list[tuple[str, str]]:
    """(token text, phonemes) in speaking order: the G2P of `tts.phonemize(segment)`, token by token."""
    from hibari.g2p.normalize import normalize

    g2p = tts.g2p
    tokens: list[tuple[str, str]] = []
    for sentence in tts.split_sentences(segment):
        for tk in g2p.phonemize_tokens(g2p.tokenize(normalize(sentence))):
            tokens.append((tk.text, g2p.unk if tk.phonemes is None else tk.phonemes))
    return tokens


def word_times(tokens: list[tuple[str, str]], pieces: list[tuple[str, np.ndarray, int]],
               vocab: dict[str, int]) -> tuple[TimedWord, ...] | None:
    """Each spoken token with letters or digits, timed: seconds from the first piece's first sample.

    `pieces`: what was synthesized, in order: (phoneme string, durations of its ids, samples of audio).
    Tokens and pieces are matched on their phoneme characters, spaces aside (hibari joins tokens with
    spaces and splits long sentences at clause spaces); None if they do not line up.
    """
    places: list[tuple[int, int]] = []  # per non-space phoneme character: (piece, id index or -1)
    starts: list[np.ndarray] = []  # per piece: sample offset of each id's start, one past the end last
    offset = 0
    for p, (phonemes, durations, samples) in enumerate(pieces):
        unit = SAMPLES_PER_UNIT
        total = int(durations.sum()) * SAMPLES_PER_UNIT
        if total and total != samples:  # never seen; keeps the times inside the audio if it happens
            unit = SAMPLES_PER_UNIT * samples / total
        starts.append(offset + np.concatenate([[0], np.cumsum(durations)]) * unit)
        offset += samples
        index = 0
        for ch in phonemes:
            if ch in vocab:
                index += 1
            if not ch.isspace():
                places.append((p, index if ch in vocab else -1))
    words: list[TimedWord] = []
    at = 0
    for text, phonemes in tokens:
        n = sum(not ch.isspace() for ch in phonemes)
        span = [place for place in places[at:at + n] if place[1] >= 0]
        at += n
        if span and any(ch.isalnum() for ch in text):
            (first_piece, first_id), (last_piece, last_id) = span[0], span[-1]
            start = float(starts[first_piece][first_id]) / 24000
            end = float(starts[last_piece][last_id + 1]) / 24000
            words.append(TimedWord(text, max(0.0, start - SOUND_LEAD), max(0.0, end - SOUND_LEAD)))
    if at != len(places):
        log.debug("embedded timing: %d phoneme characters in tokens, %d synthesized", at, len(places))
        return None
    return tuple(words)


def with_output(model: bytes, name: str) -> bytes:
    """The ONNX model `model` with the tensor `name` added to its graph's outputs.

    Protobuf wire format: ModelProto field 7 is the graph; GraphProto field 12 is a repeated output
    (ValueInfoProto, whose field 1 is the name). The graph field is re-emitted with the output appended.
    """
    out = bytearray()
    i = 0
    while i < len(model):
        start = i
        key, i = _varint(model, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, i = _varint(model, i)
        elif wire == 2:
            size, j = _varint(model, i)
            i = j + size
            if field == 7:
                out += _field(7, model[j:i] + _field(12, _field(1, name.encode())))
                continue
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")
        out += model[start:i]
    return bytes(out)


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def _field(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | 2) + _encode_varint(len(payload)) + payload


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
