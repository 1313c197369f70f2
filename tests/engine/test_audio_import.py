"""Reference import: every common container decodes; silence, short, long and non-audio are refused."""

from __future__ import annotations

import io
import struct

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


# -- decompression bombs: a few bytes that declare hours of audio -----------------------------------
def _pcm_bomb(container: str, rate: int, samples: int) -> bytes:
    """One huge PCM packet at a tiny rate: ~2 bytes per sample in, 24000/rate float samples out each."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream("pcm_s16le", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.full((1, samples), 1000, np.int16), format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return buf.getvalue()


def _crc8(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def _flac_bomb(rate: int = 10, frames: int = 2, block: int = 65535, declare: bool = True) -> bytes:
    """68 bytes, by hand: STREAMINFO at 10 Hz and CONSTANT subframes of 65535 samples (1.8 h at 10 Hz)."""
    info = struct.pack(">HH", block, block) + b"\0\0\0\0\0\0"
    # 20 bits rate, 3 bits channels-1 (mono), 5 bits bps-1 (16), 36 bits total samples
    packed = (rate << 44) | (0 << 41) | (15 << 36) | (block * frames if declare else 0)
    info += packed.to_bytes(8, "big") + bytes(16)
    out = b"fLaC" + bytes([0x80, 0, 0, 34]) + info
    for number in range(frames):
        header = bytes([0xFF, 0xF8, 0x70, 0x08, number]) + struct.pack(">H", block - 1)
        header += bytes([_crc8(header)])
        frame = header + b"\x00" + struct.pack(">h", 1000)
        out += frame + struct.pack(">H", _crc16(frame))
    return out


def _long_at_legal_rate() -> bytes:
    """A legal rate, but 11 minutes of low-rate audio in a 10 MB-ish file: refused by the running count."""
    return _pcm_bomb("matroska", 8000, 8000 * 660)


BOMBS = {
    "flac-10Hz": _flac_bomb,
    "matroska-pcm-100Hz": lambda: _pcm_bomb("matroska", 100, 2_000_000),
    "nut-pcm-400Hz": lambda: _pcm_bomb("nut", 400, 2_000_000),
    "matroska-8kHz-11min": _long_at_legal_rate,
    # No declared length, a legal rate: only the running count of decoded input seconds stops it.
    "flac-4kHz-undeclared-35min": lambda: _flac_bomb(4000, frames=120, declare=False),
}

_PEAK_SCRIPT = """
import resource, sys
from engine.audio_import import import_reference
from engine.errors import InvalidRequest
data = open(sys.argv[1], "rb").read()
try:
    import_reference(data)
    print("accepted")
except InvalidRequest as e:
    print("refused:", e.message)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def _peak_mib(tmp_path, data: bytes) -> tuple[str, int]:
    import subprocess
    import sys

    from tests.server import ROOT

    path = tmp_path / f"clip-{len(data)}.bin"
    path.write_bytes(data)
    out = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(path)], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=True).stdout.splitlines()
    return out[0], int(out[1])


@pytest.mark.parametrize("shape", list(BOMBS))
def test_decompression_bombs_are_refused_with_flat_memory(tmp_path, shape):
    data = BOMBS[shape]()
    assert len(data) < 11 * 1024 * 1024  # each fits the upload limit
    _, baseline = _peak_mib(tmp_path, encode(speechlike(5.0, 24000, 1), 24000, "wav", "pcm_s16le"))
    verdict, peak = _peak_mib(tmp_path, data)
    assert verdict.startswith("refused:") and ("Hz is outside" in verdict or "longer than 600 s" in verdict), verdict
    # Before the bounds: the 100 Hz packet alone grew to ~2 GB while being resampled.
    assert peak < baseline + 64, f"{shape}: peak {peak} MiB, a normal clip peaks at {baseline} MiB"


def test_rates_and_lengths_within_bounds_still_import():
    data = encode(speechlike(5.0, 8000, 1), 8000, "wav", "pcm_s16le")
    assert 4.9 < import_reference(data).seconds < 5.1
