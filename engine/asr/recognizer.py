"""A Whisper recognizer on faster-whisper (CTranslate2): int8 on CPU, float16 on CUDA, loaded on first use.

faster-whisper rather than transformers' Whisper or the official `qwen-asr`: CTranslate2 runs Whisper
several times faster than PyTorch on a CPU with int8 weights, gives word timestamps, streams segments
as it decodes, and needs neither torch nor a `transformers` version (qwen-asr pins one that qwen-tts's
exact pin excludes). Weights come from a local folder, or from the Hugging Face cache by hub id or size
name ("small.en" → Systran/faster-whisper-small.en), downloaded only when allowed.

`Recognizer` is thread-safe: CTranslate2 runs up to `workers` calls at once on one loaded model, and
everything else per call is local. Its methods are synchronous and heavy: call them from a worker
thread (`TranscriptionService` does).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np

from ..cores import usable_cores
from ..errors import InvalidRequest, Unavailable
from .onsets import energy_db, refine_word_times
from .transcript import Segment, Transcript, Word

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000  # what Whisper hears
TASKS = ("transcribe", "translate")
# What CTranslate2 reads from a converted Whisper folder. tokenizer.json is required here although
# faster-whisper can do without: it would fetch the tokenizer from the hub instead.
_REQUIRED = ("model.bin", "config.json", "tokenizer.json")
_VOCABULARY = ("vocabulary.json", "vocabulary.txt")
# Temperature 0 means what it means to OpenAI: start greedy, sample hotter when a window's decoding
# looks like a failure (repetitive or unlikely), as Whisper's own transcribe() does.
_FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


@dataclass(frozen=True, kw_only=True)
class RecognizerConfig:
    model: str  # a folder, a hub id, or a faster-whisper size name
    device: str = "cpu"  # cpu | cuda | cuda:N
    compute_type: str | None = None  # default: int8 on CPU, float16 on CUDA
    threads: int | None = None  # CPU threads per call (default: cores / workers)
    workers: int = 1  # calls that may run at once on the loaded model
    allow_download: bool = False
    beam_size: int = 5


def resolve_model(name: str, allow_download: bool = False) -> Path:
    """A CTranslate2 Whisper folder for `name`; `Unavailable` naming what is missing otherwise."""
    local = Path(name).expanduser()
    if local.exists() or name.startswith((".", "/", "~")):
        if not local.is_dir():
            raise Unavailable(f"speech recognizer model {name}: no such folder (--asr-model)")
        return _check_folder(local.resolve())
    try:
        from faster_whisper.utils import download_model
    except ImportError as e:
        raise Unavailable(_MISSING_EXTRA) from e
    try:
        folder = Path(download_model(name, local_files_only=not allow_download))
    except Exception as e:  # noqa: BLE001 - every hub failure means the same thing to the caller
        how = "download failed" if allow_download else "not in the local Hugging Face cache (--allow-download " \
                                                       "fetches it)"
        raise Unavailable(f"speech recognizer model {name}: {how} ({type(e).__name__})") from e
    return _check_folder(folder)


_MISSING_EXTRA = ("speech recognition needs faster-whisper, which is not installed: "
                  "pip install 'qwen-speech-gateway[asr]' (or make serve EXTRAS=asr)")


def _check_folder(folder: Path) -> Path:
    missing = [f for f in _REQUIRED if not (folder / f).is_file()]
    if not any((folder / f).is_file() for f in _VOCABULARY):
        missing.append(" or ".join(_VOCABULARY))
    if missing:
        raise Unavailable(f"speech recognizer model at {folder} is not a CTranslate2 Whisper folder: missing "
                          f"{', '.join(missing)} (convert with ct2-transformers-converter, or use a "
                          "Systran/faster-whisper-* snapshot)")
    return folder


def to_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    """Mono float32 at Whisper's 16 kHz (PyAV's resampler, as the rest of the gateway uses)."""
    samples = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
    if rate == SAMPLE_RATE or len(samples) == 0:
        return samples
    frame = av.AudioFrame.from_ndarray(samples[None, :], format="flt", layout="mono")
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    parts = [o.to_ndarray().reshape(-1) for o in (*resampler.resample(frame), *resampler.resample(None))]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


@dataclass
class Recognition:
    """A recognition under way: what is known before decoding, and the segments as they are decoded."""

    language: str  # ISO 639-1
    duration: float  # seconds of audio
    segments: Iterator[Segment]


class Recognizer:
    """One loaded Whisper model (on first use) and the calls made on it."""

    def __init__(self, config: RecognizerConfig):
        self.config = config
        self._lock = threading.Lock()
        self._model: WhisperModel | None = None
        self.path: Path | None = None
        self.load_seconds = 0.0

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def device(self) -> str:
        return self.config.device.split(":")[0]

    @property
    def compute_type(self) -> str:
        return self.config.compute_type or ("int8" if self.device == "cpu" else "float16")

    def load(self) -> WhisperModel:
        """The model, loaded now if it is not yet (once, whichever thread asks first)."""
        if self._model is not None:
            return self._model
        with self._lock:
            if self._model is None:
                self._model = self._load()
        return self._model

    def _load(self) -> WhisperModel:
        path = resolve_model(self.config.model, self.config.allow_download)
        try:
            from faster_whisper import WhisperModel
        except ImportError as e:
            raise Unavailable(_MISSING_EXTRA) from e
        device, _, index = self.config.device.partition(":")
        workers = max(1, self.config.workers)
        threads = self.config.threads or (max(1, usable_cores() // workers) if device == "cpu" else 0)
        t0 = time.perf_counter()
        try:
            model = WhisperModel(str(path), device=device, device_index=int(index or 0),
                                 compute_type=self.compute_type, cpu_threads=threads, num_workers=workers)
        except (RuntimeError, ValueError) as e:  # no such device, a compute type it cannot do, a bad model.bin
            raise Unavailable(f"speech recognizer {path} did not load on {self.config.device} "
                              f"({self.compute_type}): {e}") from e
        self.path, self.load_seconds = path, time.perf_counter() - t0
        log.info("speech recognizer %s loaded on %s (%s) in %.1f s", path, self.config.device, self.compute_type,
                 self.load_seconds)
        return model

    def languages(self) -> list[str]:
        """ISO codes the model knows (only "en" for an English-only .en model); loads the model."""
        return list(self.load().supported_languages)

    def transcribe(self, audio: np.ndarray, sample_rate: int, *, language: str | None = None,
                   task: str = "transcribe", prompt: str | None = None, temperature: float = 0.0,
                   word_timestamps: bool = False, beam_size: int | None = None) -> Transcript:
        """The whole audio at once."""
        run = self.recognize(audio, sample_rate, language=language, task=task, prompt=prompt,
                             temperature=temperature, word_timestamps=word_timestamps, beam_size=beam_size)
        return Transcript(language=run.language, duration=run.duration, segments=list(run.segments))

    def transcribe_stream(self, audio: np.ndarray, sample_rate: int, *, language: str | None = None,
                          task: str = "transcribe", prompt: str | None = None, temperature: float = 0.0,
                          word_timestamps: bool = False) -> Iterator[Segment]:
        """Segments one by one as Whisper decodes them. Nothing runs until the first `next()`."""
        yield from self.recognize(audio, sample_rate, language=language, task=task, prompt=prompt,
                                  temperature=temperature, word_timestamps=word_timestamps).segments

    def recognize(self, audio: np.ndarray, sample_rate: int, *, language: str | None = None,
                  task: str = "transcribe", prompt: str | None = None, temperature: float = 0.0,
                  word_timestamps: bool = False, beam_size: int | None = None) -> Recognition:
        """Checks the arguments, loads the model, finds the language (decoding the first 30 s when none is
        given), and returns the segments still to decode, lazily. `InvalidRequest` for a bad argument.
        `beam_size` overrides the configured one (1, greedy, where only the words' times matter)."""
        if task not in TASKS:
            raise InvalidRequest(f"unknown task {task!r}: transcribe or translate", param="task")
        model = self.load()
        if language is not None:
            language = language.strip().lower()
            known = model.supported_languages
            if language not in known:
                what = "the configured English-only model" if known == ["en"] else "Whisper"
                raise InvalidRequest(f"language {language!r} is not one {what} knows; use an ISO 639-1 code "
                                     f"({', '.join(known[:12])}{', ...' if len(known) > 12 else ''})",
                                     param="language")
        samples = to_16k(audio, sample_rate)
        temperatures = _FALLBACK_TEMPERATURES if temperature <= 0 else (temperature,)
        raw, info = model.transcribe(
            samples, language=language, task=task, initial_prompt=prompt or None, temperature=list(temperatures),
            beam_size=beam_size or self.config.beam_size, word_timestamps=word_timestamps, vad_filter=False)
        levels = energy_db(samples, SAMPLE_RATE) if word_timestamps else None

        def convert() -> Iterator[Segment]:
            for index, s in enumerate(raw):
                words = [Word(word=w.word.strip(), start=float(w.start), end=float(w.end),
                              probability=float(w.probability)) for w in (s.words or []) if w.word.strip()]
                words = refine_word_times(samples, SAMPLE_RATE, words, levels=levels)
                start, end = (words[0].start, words[-1].end) if words else (s.start, s.end)
                yield Segment(id=index, start=round(float(start), 3), end=round(float(end), 3), text=s.text,
                              words=words, avg_logprob=s.avg_logprob, no_speech_prob=s.no_speech_prob,
                              temperature=s.temperature or 0.0, compression_ratio=s.compression_ratio,
                              tokens=list(s.tokens))

        return Recognition(language=info.language, duration=len(samples) / SAMPLE_RATE, segments=convert())

    def close(self) -> None:
        with self._lock:
            self._model = None
