"""Decoding helpers shared by the tests: any response_format back to float32 mono at a given rate."""

from __future__ import annotations

import io

import av
import numpy as np

RAW_DEMUXERS = {"ulaw": "mulaw", "alaw": "alaw"}  # FFmpeg's raw G.711 demuxers need the rate told


def decode(fmt: str, data: bytes, rate: int = 24000, *, source_rate: int | None = None) -> np.ndarray:
    """`data` (a whole `fmt` file) as float32 mono resampled to `rate`. `source_rate`: the rate of a raw format
    (pcm, ulaw, alaw), which carries none itself; default `rate`."""
    source_rate = source_rate or rate
    if fmt == "pcm":
        x = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768
        return x if source_rate == rate else _resample(x, source_rate, rate)
    if fmt in RAW_DEMUXERS:
        container = av.open(io.BytesIO(data), format=RAW_DEMUXERS[fmt],
                            options={"sample_rate": str(source_rate), "ch_layout": "mono"})
    else:
        container = av.open(io.BytesIO(data))
    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    out = []
    with container:
        for frame in container.decode(audio=0):
            for r in resampler.resample(frame):
                assert r.sample_rate == rate
                out.append(r.to_ndarray().reshape(-1))
    out += [r.to_ndarray().reshape(-1) for r in resampler.resample(None)]
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def _resample(x: np.ndarray, source_rate: int, rate: int) -> np.ndarray:
    from app.audio.encoding import Resampler

    r = Resampler(source_rate, rate)
    return np.concatenate([r.resample(x), r.flush()])


def band_energy(x: np.ndarray, rate: int, low: float = 100.0, high: float = 3400.0) -> float:
    """Mean power of `x` between `low` and `high` Hz (per sample, so lengths may differ a little)."""
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    return float(spectrum[(freqs >= low) & (freqs < high)].sum() / len(x) ** 2)
