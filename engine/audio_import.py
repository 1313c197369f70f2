"""Reference-audio import: any common container in, a clean 24 kHz mono float32 clip out (or a clear refusal).

decode (PyAV, in-process) → downmix → resample to 24 kHz → trim leading/trailing silence →
normalise loudness → check duration. Everything happens in memory on bytes the client sent; nothing
is fetched and no external program runs.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np

from . import limits
from .base import SAMPLE_RATE
from .errors import InvalidRequest

MIN_SECONDS = 3.0
MAX_SECONDS = 30.0
MAX_DECODED_SECONDS = 600.0  # refuse to decode absurdly long uploads before trimming
# A few bytes can declare hours of audio (a 10 Hz FLAC, one huge PCM packet at 100 Hz in Matroska) that
# resampling to 24 kHz would blow up to gigabytes, so every bound is checked before the work is done:
# the declared rate, channels and duration, then each decoded frame's length before it is resampled.
MIN_SAMPLE_RATE = 4000
MAX_SAMPLE_RATE = 384_000
MAX_CHANNELS = 8
TARGET_RMS_DBFS = -20.0
PEAK_LIMIT = 0.95
SILENCE_DBFS = -45.0  # frames quieter than this (relative to full scale) count as silence


@dataclass(frozen=True)
class ImportedAudio:
    samples: np.ndarray  # float32 mono, SAMPLE_RATE
    original_seconds: float
    trimmed_seconds: float
    source_format: str

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def _too_long(what: str, param: str) -> InvalidRequest:
    limits.hit("decoded_audio")
    return InvalidRequest(f"{what} is longer than {MAX_DECODED_SECONDS:.0f} s", param=param)


def _check_shape(rate: int, channels: int, what: str, param: str) -> None:
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        limits.hit("decoded_audio")
        raise InvalidRequest(f"{what} rate {rate} Hz is outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz", param=param)
    if not 1 <= channels <= MAX_CHANNELS:
        limits.hit("decoded_audio")
        raise InvalidRequest(f"{what} has {channels} channels; at most {MAX_CHANNELS} are accepted", param=param)


def decode_audio(data: bytes, *, what: str = "the audio sample", param: str = "audio_sample"
                 ) -> tuple[np.ndarray, str]:
    """Decode any container PyAV knows to float32 mono 24 kHz; InvalidRequest if it is not audio.

    `what` and `param`: how refusals name the upload ("the recording", "recording")."""
    if not data:
        raise InvalidRequest(f"{what} is empty", param=param)
    try:
        with av.open(io.BytesIO(data)) as container:
            if not container.streams.audio:
                raise InvalidRequest("the file has no audio stream", param=param)
            fmt = container.format.name
            stream = container.streams.audio[0]
            _check_shape(stream.codec_context.sample_rate or SAMPLE_RATE, stream.codec_context.channels or 1, what,
                         param)
            if container.duration is not None and container.duration / av.time_base > MAX_DECODED_SECONDS:
                raise _too_long(what, param)
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            parts: list[np.ndarray] = []
            seconds_in = 0.0
            for frame in container.decode(stream):
                # Frames may change rate or layout mid-stream: check each before resampling it.
                _check_shape(frame.sample_rate, len(frame.layout.channels), what, param)
                seconds_in += frame.samples / frame.sample_rate
                if seconds_in > MAX_DECODED_SECONDS:
                    raise _too_long(what, param)
                parts.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
            parts.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    except InvalidRequest:
        raise
    except (av.FFmpegError, ValueError, IndexError) as e:
        raise InvalidRequest(f"could not decode {what} ({e.__class__.__name__}): send wav, mp3, "
                             "ogg/opus, flac, m4a/aac or webm", param=param) from None
    if not parts:
        raise InvalidRequest(f"{what} decodes to no samples", param=param)
    samples = np.concatenate(parts).astype(np.float32, copy=False)
    return np.nan_to_num(samples, nan=0.0, posinf=0.0, neginf=0.0, copy=False), fmt


def _frame_dbfs(samples: np.ndarray, frame: int) -> np.ndarray:
    n = len(samples) // frame
    if n == 0:
        return np.full(1, -120.0)
    rms = np.sqrt(np.mean(samples[: n * frame].reshape(n, frame) ** 2, axis=1))
    return 20 * np.log10(np.maximum(rms, 1e-6))


def trim_silence(samples: np.ndarray, *, keep_ms: float = 100.0) -> np.ndarray:
    """Cut leading and trailing silence, keeping a short margin so word onsets are not clipped."""
    frame = SAMPLE_RATE // 100  # 10 ms
    loud = np.nonzero(_frame_dbfs(samples, frame) > SILENCE_DBFS)[0]
    if len(loud) == 0:
        return samples[:0]
    margin = int(keep_ms / 1000 * SAMPLE_RATE)
    start = max(0, loud[0] * frame - margin)
    end = min(len(samples), (loud[-1] + 1) * frame + margin)
    return samples[start:end]


def normalize_loudness(samples: np.ndarray) -> np.ndarray:
    """Scale speech to about -20 dBFS RMS (measured over non-silent frames), peaks kept below 0.95."""
    frame = SAMPLE_RATE // 100
    levels = _frame_dbfs(samples, frame)
    voiced = levels[levels > SILENCE_DBFS]
    if len(voiced) == 0:
        return samples
    speech_rms_db = 10 * np.log10(np.mean(10 ** (voiced / 10)))
    gain = 10 ** ((TARGET_RMS_DBFS - speech_rms_db) / 20)
    peak = float(np.max(np.abs(samples))) * gain
    if peak > PEAK_LIMIT:
        gain *= PEAK_LIMIT / peak
    return (samples * gain).astype(np.float32)


def import_reference(data: bytes, *, min_seconds: float = MIN_SECONDS, max_seconds: float = MAX_SECONDS,
                     what: str = "the audio sample", param: str = "audio_sample") -> ImportedAudio:
    """The whole pipeline; raises InvalidRequest (naming the upload as `decode_audio` does) with a message a
    person can act on."""
    samples, fmt = decode_audio(data, what=what, param=param)
    original = len(samples) / SAMPLE_RATE
    trimmed = trim_silence(samples)
    if len(trimmed) == 0:
        raise InvalidRequest(f"{what} is silent", param=param)
    seconds = len(trimmed) / SAMPLE_RATE
    if seconds < min_seconds:
        raise InvalidRequest(f"{what} has {seconds:.1f} s of sound after trimming silence; "
                             f"at least {min_seconds:.0f} s are needed", param=param)
    if seconds > max_seconds:
        raise InvalidRequest(f"{what} has {seconds:.1f} s of sound after trimming silence; "
                             f"at most {max_seconds:.0f} s are allowed", param=param)
    return ImportedAudio(normalize_loudness(trimmed), original, seconds, fmt)
