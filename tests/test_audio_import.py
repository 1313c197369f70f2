"""Reference import: every common container decodes; silence, short, long and non-audio are refused."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from engine.audio_import import SAMPLE_RATE, import_reference
from engine.errors import InvalidRequest


def speechlike(seconds: float, rate: int = 44100, channels: int = 2, level: float = 0.05) -> np.ndarray:
    """A voiced-like signal: harmonics with a syllable-rate envelope, so it is neither silence nor a tone."""
    t = np.arange(int(seconds * rate)) / rate
    tone = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((140, 280, 420, 700), 1))
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)
    mono = (level * tone * envelope).astype(np.float32)
    return np.stack([mono] * channels) if channels > 1 else mono[None, :]


def encode(samples: np.ndarray, rate: int, container: str, codec: str, lead_silence: float = 0.0) -> bytes:
    channels = samples.shape[0]
    if lead_silence:
        pad = np.zeros((channels, int(lead_silence * rate)), np.float32)
        samples = np.concatenate([pad, samples, pad], axis=1)
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout="stereo" if channels == 2 else "mono")
        fmt = stream.codec_context.codec.audio_formats[0].name
        resampler = av.AudioResampler(format=fmt, layout=stream.layout.name, rate=rate)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples.reshape(1, -1) if channels == 1 else
                                                                samples.T.reshape(1, -1)),
                                           format="flt", layout="stereo" if channels == 2 else "mono")
        frame.sample_rate = rate
        for f in resampler.resample(frame):
            for packet in stream.encode(f):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


@pytest.mark.parametrize("container,codec", [("wav", "pcm_s16le"), ("mp3", "libmp3lame"), ("ogg", "libopus"),
                                             ("flac", "flac"), ("adts", "aac"), ("webm", "libopus"),
                                             ("ipod", "aac")])
def test_common_formats_import_clean(container, codec):
    rate = 48000 if codec == "libopus" else 44100
    data = encode(speechlike(5.0, rate), rate, container, codec, lead_silence=1.0)
    clip = import_reference(data)
    assert clip.samples.dtype == np.float32 and clip.samples.ndim == 1
    assert clip.original_seconds > 6.5  # the silence was there...
    assert 4.9 < clip.seconds < 5.5  # ...and was trimmed, keeping a short margin
    rms_db = 20 * np.log10(np.sqrt(np.mean(clip.samples**2)))
    assert -24 < rms_db < -16  # loudness normalised from about -30 dBFS
    assert np.max(np.abs(clip.samples)) <= 0.95 + 1e-6


def test_refusals():
    rate = SAMPLE_RATE
    cases = {
        b"": "empty",
        b"this is not audio at all" * 50: "could not decode",
        encode(np.zeros((1, rate * 5), np.float32), rate, "wav", "pcm_s16le"): "silent",
        encode(speechlike(1.5, rate, 1), rate, "wav", "pcm_s16le", lead_silence=2.0): "at least 3",
        encode(speechlike(31.0, rate, 1), rate, "wav", "pcm_s16le"): "at most 30",
    }
    for data, message in cases.items():
        with pytest.raises(InvalidRequest) as info:
            import_reference(data)
        assert message in info.value.message and info.value.param == "audio_sample"
