"""Pitch-preserving time stretch for the OpenAI ``speed`` field, built on libavfilter's ``atempo`` via PyAV."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

SAMPLE_RATE = 24000
MIN_SPEED, MAX_SPEED = 0.25, 4.0


def as_float(samples: np.ndarray) -> np.ndarray:
    """Any sample array -> contiguous 1-D float32, finite and clipped to [-1, 1]."""
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    # A NaN from the model would otherwise become an arbitrary int16 or poison a codec's state.
    if not np.isfinite(x).all():
        x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
    return np.ascontiguousarray(np.clip(x, -1.0, 1.0))


def _atempo_factors(speed: float) -> list[float]:
    # atempo blends within 0.5..2.0 but merely skips samples above 2.0, so split into in-range stages.
    factors: list[float] = []
    while speed > 2.0:
        factors.append(2.0)
        speed /= 2.0
    while speed < 0.5:
        factors.append(0.5)
        speed /= 0.5
    return [*factors, speed]


class TempoStretcher:
    """Pitch-preserving time stretch (libavfilter ``atempo``) for the OpenAI ``speed`` field."""

    def __init__(self, speed: float, sample_rate: int = SAMPLE_RATE) -> None:
        if not MIN_SPEED <= speed <= MAX_SPEED:
            raise ValueError(f"speed must be within {MIN_SPEED}..{MAX_SPEED}, got {speed}")
        self.speed = float(speed)
        self.sample_rate = sample_rate
        self._pts = 0
        self._graph: av.filter.Graph | None = None
        if self.speed == 1.0:
            return  # pass-through: no graph at all
        graph = av.filter.Graph()
        nodes = [graph.add_abuffer(sample_rate=sample_rate, format="flt", layout="mono")]
        nodes += [graph.add("atempo", f"{f:.10g}") for f in _atempo_factors(self.speed)]
        # Pin the sink format so output is always packed float32 mono whatever the graph negotiates.
        nodes.append(graph.add("aformat", f"sample_fmts=flt:channel_layouts=mono:sample_rates={sample_rate}"))
        nodes.append(graph.add("abuffersink"))
        graph.link_nodes(*nodes).configure()
        self._graph = graph

    def _pull(self) -> np.ndarray:
        assert self._graph is not None
        out: list[np.ndarray] = []
        while True:
            try:
                frame = self._graph.pull()
            except (av.BlockingIOError, av.EOFError):
                break
            out.append(frame.to_ndarray().reshape(-1))
        return np.concatenate(out).astype(np.float32, copy=False) if out else np.zeros(0, dtype=np.float32)

    def process(self, samples: np.ndarray) -> np.ndarray:
        if self._graph is None:
            if self.speed == 1.0:
                return np.asarray(samples, dtype=np.float32).reshape(-1)  # no copy for float32 input
            return np.zeros(0, dtype=np.float32)
        x = as_float(samples)
        if x.size == 0:
            return np.zeros(0, dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(x[None, :], format="flt", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.time_base = Fraction(1, self.sample_rate)
        frame.pts = self._pts
        self._pts += x.size
        self._graph.push(frame)
        return self._pull()

    def flush(self) -> np.ndarray:
        if self._graph is None:
            return np.zeros(0, dtype=np.float32)
        self._graph.push(None)
        out = self._pull()
        self._graph = None  # the graph is at EOF; further process() calls yield nothing
        return out
