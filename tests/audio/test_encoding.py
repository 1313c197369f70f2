"""Round-trip tests for the streaming encoders and the tempo stretcher: encode, decode with PyAV, compare."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Iterable

import numpy as np
import pytest

from app.audio.encoding import CONTENT_TYPES, TempoStretcher, encode_stream, make_encoder, output_rate
from tests.audio.decode import decode

SR = 24000
LSB = 1 / 32767
CHUNK_SIZES = [960, 4801, 2400, 12000, 7, 30000, 1234]  # uneven on purpose, cycled


def _signal(seconds: float = 1.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    chirp = np.sin(2 * np.pi * (200 * t + (1800 / (2 * seconds)) * t**2))  # 200 -> 2000 Hz
    return (0.4 * np.sin(2 * np.pi * 440 * t) + 0.3 * chirp).astype(np.float32)


def _tone(seconds: float, freq: float = 440.0) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(int(seconds * SR)) / SR)).astype(np.float32)


def _chunks(x: np.ndarray, sizes: Iterable[int] = CHUNK_SIZES) -> list[np.ndarray]:
    out, pos, sizes = [], 0, list(sizes)
    while pos < len(x):
        n = sizes[len(out) % len(sizes)]
        out.append(x[pos : pos + n])
        pos += n
    return out


def _encode(fmt: str, x: np.ndarray, speed: float = 1.0) -> tuple[bytes, list[bytes]]:
    """Returns (whole stream, per-call outputs before flush)."""
    enc, st = make_encoder(fmt), TempoStretcher(speed)
    parts = [enc.encode(st.process(c)) for c in _chunks(x)]
    tail = enc.encode(st.flush()) + enc.flush()
    return b"".join(parts) + tail, parts


def _decode(fmt: str, data: bytes) -> np.ndarray:
    return decode(fmt, data, SR, source_rate=output_rate(fmt) if fmt in ("ulaw", "alaw") else SR)


def _peak_hz(y: np.ndarray) -> float:
    y = y[len(y) // 10 : -len(y) // 10]  # skip filter/codec edges
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.fft.rfftfreq(len(y), 1 / SR)[np.argmax(spectrum)])


FORMATS = list(CONTENT_TYPES)
CASES = [(f, s) for f in FORMATS for s in (1.0, 0.5, 2.0)] + [(f, s) for f in ("opus", "wav") for s in (0.25, 4.0)]


@pytest.mark.parametrize(("fmt", "speed"), CASES)
def test_round_trip_duration(fmt: str, speed: float) -> None:
    x = _signal()
    data, _ = _encode(fmt, x, speed)
    y = _decode(fmt, data)
    expected = len(x) / SR / speed
    assert abs(len(y) / SR - expected) <= 0.05 * expected + 0.1, (len(y) / SR, expected)
    assert np.isfinite(y).all() and 0.1 < np.max(np.abs(y)) <= 1.0


@pytest.mark.parametrize("fmt", ["wav", "pcm", "flac"])
def test_lossless_exact(fmt: str) -> None:
    x = _signal()
    x[:3] = [1.0, -1.0, 0.0]  # full scale must clip cleanly, not wrap
    y = _decode(fmt, _encode(fmt, x)[0])
    assert len(y) == len(x)
    assert np.max(np.abs(y - x)) <= LSB + 1e-7


def test_out_of_range_and_nan_are_clipped() -> None:
    x = np.array([2.0, -3.0, np.nan, np.inf, -np.inf, 0.5], dtype=np.float32)
    y = np.frombuffer(make_encoder("pcm").encode(x), dtype="<i2")
    assert y.tolist() == [32767, -32768, 0, 32767, -32768, 16384]


@pytest.mark.parametrize("speed", [0.5, 2.0])
def test_stretch_preserves_pitch(speed: float) -> None:
    x = _tone(2.0)
    st = TempoStretcher(speed)
    y = np.concatenate([st.process(c) for c in _chunks(x)] + [st.flush()])
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - len(x) / speed) <= 0.05 * len(x) / speed
    assert abs(_peak_hz(y) - 440) <= 10


@pytest.mark.parametrize("fmt", ["mp3", "opus"])
def test_pitch_survives_codec(fmt: str) -> None:
    y = _decode(fmt, _encode(fmt, _tone(2.0), speed=2.0)[0])
    assert abs(_peak_hz(y) - 440) <= 10


def test_speed_one_is_pass_through() -> None:
    x = _signal()
    st = TempoStretcher(1.0)
    y = st.process(x)
    assert np.shares_memory(x, y) and len(st.flush()) == 0


@pytest.mark.parametrize("speed", [0.2, 4.5, 0.0, -1.0])
def test_speed_out_of_range(speed: float) -> None:
    with pytest.raises(ValueError):
        TempoStretcher(speed)


def test_wav_header() -> None:
    data = make_encoder("wav").encode(np.zeros(10, dtype=np.float32))
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    assert struct.unpack("<I", data[4:8])[0] == 0xFFFFFFFF
    assert data[12:16] == b"fmt " and struct.unpack("<I", data[16:20])[0] == 16
    fmt_tag, channels, rate, byte_rate, align, bits = struct.unpack("<HHIIHH", data[20:36])
    assert (fmt_tag, channels, rate, byte_rate, align, bits) == (1, 1, 24000, 48000, 2, 16)
    assert data[36:40] == b"data" and struct.unpack("<I", data[40:44])[0] == 0xFFFFFFFF
    assert len(data) == 44 + 20


MAGIC = {"mp3": b"\xff", "opus": b"OggS", "aac": b"\xff", "flac": b"fLaC"}


@pytest.mark.parametrize("fmt", list(MAGIC))
def test_incremental_output(fmt: str) -> None:
    x = _signal(1.0)
    enc = make_encoder(fmt)
    parts = [enc.encode(c) for c in _chunks(x, [SR // 5])]
    assert parts[0], "no bytes after the first 0.2 s chunk"
    assert sum(map(len, parts)) > 0.5 * (sum(map(len, parts)) + len(enc.flush()))
    stream = b"".join(parts)
    assert stream.startswith(MAGIC[fmt])
    if fmt == "mp3":  # a bare frame stream: no tags that need seeking back
        assert b"ID3" not in stream and b"Xing" not in stream and b"Info" not in stream
    # One container, not one file per chunk.
    assert stream.count({"mp3": b"\xff\xf3", "opus": b"OpusHead", "aac": b"\xff\xf1", "flac": b"fLaC"}[fmt]) >= 1
    if fmt in ("opus", "flac"):
        assert stream.count(b"OpusHead" if fmt == "opus" else b"fLaC") == 1


def test_content_types_and_unknown_format() -> None:
    assert CONTENT_TYPES == {
        "mp3": "audio/mpeg",
        "opus": "audio/opus",
        "aac": "audio/aac",
        "flac": "audio/flac",
        "wav": "audio/wav",
        "pcm": "audio/pcm",
        "ulaw": "audio/basic",
        "alaw": "audio/x-alaw-basic",
    }
    for fmt, ctype in CONTENT_TYPES.items():
        assert make_encoder(fmt).content_type == ctype
    with pytest.raises(ValueError):
        make_encoder("ogg")


async def _agen(x: np.ndarray, closed: list[bool]) -> AsyncIterator[np.ndarray]:
    try:
        for c in _chunks(x, [SR // 5]):
            yield c
    finally:
        closed.append(True)


@pytest.mark.parametrize(("fmt", "speed"), [("mp3", 1.0), ("opus", 2.0), ("wav", 0.5)])
async def test_encode_stream(fmt: str, speed: float) -> None:
    x = _signal()
    pieces = [p async for p in encode_stream(_agen(x, []), fmt, speed)]
    assert len(pieces) > 2 and all(pieces)
    y = _decode(fmt, b"".join(pieces))
    expected = len(x) / SR / speed
    assert abs(len(y) / SR - expected) <= 0.05 * expected + 0.1


@pytest.mark.parametrize("fmt", FORMATS)
async def test_encode_stream_early_close(fmt: str) -> None:
    closed: list[bool] = []
    gen = encode_stream(_agen(_signal(), closed), fmt, 0.5)
    first = await gen.__anext__()
    assert first
    await gen.aclose()
    assert closed == [True]  # upstream synthesis is told to stop too


@pytest.mark.parametrize("fmt", FORMATS)
async def test_encode_stream_first_bytes_before_the_whole_first_chunk(fmt: str) -> None:
    """A sentence-long first chunk: bytes come out after its first tenth of a second is encoded, before the
    source is asked for more, and the stream is byte for byte what encoding each chunk whole gives."""
    chunks = [_signal(3.0), _tone(1.0)]
    pulled: list[int] = []

    async def source() -> AsyncIterator[np.ndarray]:
        for i, chunk in enumerate(chunks):
            pulled.append(i)
            yield chunk

    stream = encode_stream(source(), fmt)
    first = await anext(stream)
    assert pulled == [0]
    assert len(first) < len(make_encoder(fmt).encode(chunks[0])) / 5
    if fmt in ("pcm", "wav"):
        assert len(first) - (44 if fmt == "wav" else 0) == SR // 10 * 2
    rest = [piece async for piece in stream]
    whole = make_encoder(fmt)
    expected = b"".join(whole.encode(c) for c in chunks) + whole.flush()
    if fmt != "opus":  # Ogg gives every stream a random serial number
        assert b"".join([first, *rest]) == expected
    else:
        assert len(_decode(fmt, b"".join([first, *rest]))) == len(_decode(fmt, expected))
