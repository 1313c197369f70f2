"""Engine chunks to WebSocket binary frames: time stretch, resample, PCM16/float32/G.711, bounded frame size."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from fractions import Fraction

import av
import numpy as np

from app.audio.encoding import make_encoder
from app.audio.tempo import SAMPLE_RATE, TempoStretcher, as_float

# Engine chunks can hold several seconds (one sentence of the embedded engine). Splitting them keeps
# frames small for clients with a low max message size and lets a cancel land between two frames.
MAX_FRAME_SECONDS = 0.5


class PcmFramer:
    """One utterance's audio as raw PCM frames, each a whole, non-zero number of samples.

    `push` and `flush` resample at once and return the frames that are ready, each converted only when
    iterated (the first can go out before the rest are converted); one PyAV resampler per utterance,
    flushed at its end, so no samples are lost or duplicated at chunk boundaries.
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE, encoding: str = "pcm16", speed: float = 1.0,
                 source_rate: int = SAMPLE_RATE, frame_seconds: float = MAX_FRAME_SECONDS):
        if encoding not in ("pcm16", "pcm32f", "ulaw", "alaw"):
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
        # pcm32f is written here; pcm16 and G.711 (PyAV's pcm_mulaw / pcm_alaw, already at the session rate)
        # by an encoder whose bytes for a piece come back whole from that piece's call.
        self._encoder = (
            make_encoder("pcm" if encoding == "pcm16" else encoding, sample_rate, output_rate=sample_rate)
            if encoding != "pcm32f"
            else None
        )
        self._max_samples = max(1, int(sample_rate * min(frame_seconds, MAX_FRAME_SECONDS)))

    @property
    def bytes_per_sample(self) -> int:
        return {"pcm16": 2, "pcm32f": 4}.get(self.encoding, 1)

    @property
    def seconds_out(self) -> float:
        return self.samples_out / self.sample_rate

    def push(self, samples: np.ndarray) -> Iterator[bytes]:
        x = self._tempo.process(samples) if self._tempo else as_float(samples)
        return self._frames(self._resample(x))

    def flush(self) -> Iterator[bytes]:
        tail = self._resample(self._tempo.flush()) if self._tempo else np.zeros(0, np.float32)
        if self._resampler is not None:
            tail = np.concatenate([tail, *self._drain(self._resampler.resample(None))])
            self._resampler = None
        return self._frames(tail, last=True)

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

    def _frames(self, x: np.ndarray, last: bool = False) -> Iterator[bytes]:
        for start in range(0, x.size, self._max_samples):
            piece = x[start : start + self._max_samples]
            self.samples_out += piece.size
            if self._encoder is not None:
                yield self._encoder.encode(piece)
            else:
                yield as_float(piece).astype("<f4").tobytes()
        if last and self._encoder is not None:
            tail = self._encoder.flush()  # nothing for these codecs, but it releases the codec
            if tail:
                yield tail
            self.close()

    def close(self) -> None:
        """Release the encoder (an utterance cancelled before `flush`); idempotent."""
        close = getattr(self._encoder, "close", None)
        if close is not None:
            close()


class PlaybackClock:
    """Paces frames for a client that plays them at real time, as they arrive.

    A client cannot tell frames of a cancelled utterance still on the wire from new audio, and every
    second sent ahead of playback is a second it may play after the user pressed Cancel. The clock
    models the client's playback from the first frame on (continuous, restarting after a pause) and
    holds each frame until sending it leaves at most `lead` seconds of audio ahead of playback.
    Frames must be shorter than `lead`, or the client would run dry while waiting for the next one.
    """

    def __init__(self, lead: float):
        self.lead = lead
        self._played_until = 0.0  # monotonic time when the client will have played all audio sent

    @property
    def frame_seconds(self) -> float:
        """The frame length to use: half the lead keeps the client between lead/2 and lead ahead."""
        return self.lead / 2 if self.lead > 0 else MAX_FRAME_SECONDS

    def reset(self) -> None:
        """The client dropped what it had queued (a cancel): the next frame plays at once."""
        self._played_until = 0.0

    async def before_send(self, seconds: float) -> None:
        if self.lead <= 0:
            return
        now = time.monotonic()
        wait = self._played_until + seconds - self.lead - now
        if wait > 0:
            await asyncio.sleep(wait)
            now = time.monotonic()
        self._played_until = max(self._played_until, now) + seconds
