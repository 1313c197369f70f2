"""Engine chunks to WebSocket binary frames: time stretch, resample, PCM16/float32, bounded frame size."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from app.encoding import make_encoder
from app.tempo import SAMPLE_RATE, TempoStretcher, as_float

# Engine chunks can hold several seconds (one sentence of the embedded engine). Splitting them keeps
# frames small for clients with a low max message size and lets a cancel land between two frames.
MAX_FRAME_SECONDS = 0.5


class PcmFramer:
    """One utterance's audio as raw PCM frames, each a whole, non-zero number of samples.

    `push` and `flush` return the frames that are ready; one PyAV resampler per utterance, flushed at
    its end, so no samples are lost or duplicated at chunk boundaries.
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE, encoding: str = "pcm16", speed: float = 1.0,
                 source_rate: int = SAMPLE_RATE):
        if encoding not in ("pcm16", "pcm32f"):
            raise ValueError(f"unsupported encoding {encoding!r}")
        self.sample_rate = sample_rate
        self.encoding = encoding
        self.source_rate = source_rate
        self.samples_out = 0
        self._tempo = TempoStretcher(speed, source_rate) if speed != 1.0 else None
        self._resampler = (
            av.AudioResampler(format="flt", layout="mono", rate=sample_rate) if sample_rate != source_rate else None
        )
        self._pts = 0
        self._pcm16 = make_encoder("pcm", sample_rate) if encoding == "pcm16" else None
        self._max_samples = max(1, int(sample_rate * MAX_FRAME_SECONDS))

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self.encoding == "pcm16" else 4

    @property
    def seconds_out(self) -> float:
        return self.samples_out / self.sample_rate

    def push(self, samples: np.ndarray) -> list[bytes]:
        x = self._tempo.process(samples) if self._tempo else as_float(samples)
        return self._frames(self._resample(x))

    def flush(self) -> list[bytes]:
        tail = self._resample(self._tempo.flush()) if self._tempo else np.zeros(0, np.float32)
        if self._resampler is not None:
            tail = np.concatenate([tail, *self._drain(self._resampler.resample(None))])
            self._resampler = None
        return self._frames(tail)

    def _resample(self, x: np.ndarray) -> np.ndarray:
        if self._resampler is None or x.size == 0:
            return x
        frame = av.AudioFrame.from_ndarray(as_float(x)[None, :], format="flt", layout="mono")
        frame.sample_rate = self.source_rate
        frame.time_base = Fraction(1, self.source_rate)
        frame.pts = self._pts
        self._pts += x.size
        parts = self._drain(self._resampler.resample(frame))
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    @staticmethod
    def _drain(frames: list[av.AudioFrame]) -> list[np.ndarray]:
        return [f.to_ndarray().reshape(-1).astype(np.float32, copy=False) for f in frames if f.samples]

    def _frames(self, x: np.ndarray) -> list[bytes]:
        out: list[bytes] = []
        for start in range(0, x.size, self._max_samples):
            piece = x[start : start + self._max_samples]
            self.samples_out += piece.size
            if self._pcm16 is not None:
                out.append(self._pcm16.encode(piece))
            else:
                out.append(as_float(piece).astype("<f4").tobytes())
        return out
