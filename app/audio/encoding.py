"""Streaming audio encoders for the OpenAI ``response_format`` values, plus the ``speed`` time stretch.

Every format can go out at another rate than the engine's 24 kHz (``sample_rate``, see `output_rate`): the
encoder resamples with one PyAV resampler per stream, so chunk boundaries lose or repeat no samples.
``ulaw`` / ``alaw`` are raw G.711 bytes (no container), 8 kHz unless asked otherwise, for telephony.

Synthesis produces mono float32 chunks in [-1, 1] while the HTTP response is already being sent, so every encoder
here turns an open-ended sample stream into the bytes of *one* container, handing bytes back as soon as the codec
and muxer release them. The compressed formats use a single PyAV output container per stream, written into an
in-memory sink that is drained after every call; WAV and raw PCM are trivial enough to write by hand.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Protocol, TypeVar

import av
import numpy as np

from app.audio.tempo import MAX_SPEED, MIN_SPEED, SAMPLE_RATE, TempoStretcher, as_float

T = TypeVar("T")

__all__ = [
    "CONTENT_TYPES",
    "DEFAULT_RATES",
    "MAX_SPEED",
    "MIN_SPEED",
    "SAMPLE_RATE",
    "AudioEncoder",
    "TempoStretcher",
    "encode_stream",
    "OPUS_RATES",
    "OUTPUT_RATES",
    "content_type",
    "make_encoder",
    "output_rate",
    "sample_rates",
]

# encode_stream cuts each chunk before encoding it. An engine chunk can be a whole sentence (seconds of audio),
# and MP3 costs ~10 ms per second of audio on one core (more on a busy one, or while a step worker holds the GIL):
# encoded whole, the first sentence's bytes would wait for all of it. A small first piece gets the first bytes
# out after ~0.1 s of audio has been encoded; later pieces are bounded so no chunk holds the event loop for long
# between two writes. Encoders buffer internally, so the bytes are the same however the samples are cut.
FIRST_PIECE_SAMPLES = SAMPLE_RATE // 10
PIECE_SAMPLES = SAMPLE_RATE // 2

CONTENT_TYPES: dict[str, str] = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
    "ulaw": "audio/basic",  # RFC 2046's G.711 mu-law, 8 kHz mono; another rate adds `;rate=N` (see content_type)
    "alaw": "audio/x-alaw-basic",
}

# `sample_rate` of a request: what every format accepts, except opus (libopus runs at its own set of rates).
# libmp3lame, FFmpeg's aac, flac, wav/pcm and G.711 take all of OUTPUT_RATES.
OUTPUT_RATES: tuple[int, ...] = (8000, 16000, 22050, 24000, 44100, 48000)
OPUS_RATES: tuple[int, ...] = (8000, 12000, 16000, 24000, 48000)
# Without `sample_rate`: the engine's 24 kHz, except opus (48 kHz, as before) and G.711 (telephony's 8 kHz).
DEFAULT_RATES: dict[str, int] = {"opus": 48000, "ulaw": 8000, "alaw": 8000}


def sample_rates(response_format: str) -> tuple[int, ...]:
    """The output rates `response_format` can be asked for."""
    return OPUS_RATES if response_format == "opus" else OUTPUT_RATES


def output_rate(response_format: str, sample_rate: int | None = None) -> int:
    """The rate `response_format` goes out at; ValueError (saying which rates work) for one it cannot take."""
    if sample_rate is None:
        return DEFAULT_RATES.get(response_format, SAMPLE_RATE)
    rates = sample_rates(response_format)
    if sample_rate not in rates:
        raise ValueError(f"sample_rate {sample_rate} is not available for response_format {response_format!r}; "
                         f"use one of {', '.join(map(str, rates))}")
    return sample_rate


def content_type(response_format: str, rate: int | None = None) -> str:
    """The Content-Type of `response_format` at `rate`. G.711's types mean 8 kHz, so another rate is
    spelled out as a parameter (`audio/basic;rate=16000`); the other formats carry their rate inside
    (raw `pcm` is s16le mono at the requested rate, 24 kHz by default)."""
    ctype = CONTENT_TYPES[response_format]
    if response_format in ("ulaw", "alaw") and rate is not None and rate != 8000:
        return f"{ctype};rate={rate}"
    return ctype


class AudioEncoder(Protocol):
    content_type: str

    def encode(self, samples: np.ndarray) -> bytes: ...

    def flush(self) -> bytes: ...


def _to_s16(samples: np.ndarray) -> np.ndarray:
    # Scale by 32768 (not 32767) to match FFmpeg's own flt<->s16 conversion, so decoders that divide by 32768
    # give back the input to within half an LSB; +1.0 is the one value that has to be clipped.
    return np.clip(np.rint(as_float(samples) * 32768.0), -32768, 32767).astype("<i2")


class Resampler:
    """Float32 mono from `source_rate` to `rate` through one PyAV resampler (its state spans the calls)."""

    def __init__(self, source_rate: int, rate: int) -> None:
        self.source_rate = source_rate
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        self._pts = 0

    def resample(self, samples: np.ndarray) -> np.ndarray:
        if np.size(samples) == 0:
            return np.zeros(0, np.float32)
        x = as_float(samples)
        frame = av.AudioFrame.from_ndarray(x[None, :], format="flt", layout="mono")
        frame.sample_rate = self.source_rate
        frame.time_base = Fraction(1, self.source_rate)
        frame.pts = self._pts
        self._pts += x.shape[0]
        return self._join(self._resampler.resample(frame))

    def flush(self) -> np.ndarray:
        return self._join(self._resampler.resample(None))

    @staticmethod
    def _join(frames: list[av.AudioFrame]) -> np.ndarray:
        parts = [f.to_ndarray().reshape(-1).astype(np.float32, copy=False) for f in frames if f.samples]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)


class PcmEncoder:
    """Raw s16le, no header. `sample_rate`: the input's rate; `output_rate`: the bytes' (default: the same)."""

    content_type = CONTENT_TYPES["pcm"]

    def __init__(self, sample_rate: int = SAMPLE_RATE, output_rate: int | None = None) -> None:
        self.sample_rate = output_rate or sample_rate
        self._resampler = Resampler(sample_rate, self.sample_rate) if self.sample_rate != sample_rate else None

    def encode(self, samples: np.ndarray) -> bytes:
        if self._resampler is not None:
            samples = self._resampler.resample(samples)
        return _to_s16(samples).tobytes()

    def flush(self) -> bytes:
        if self._resampler is None:
            return b""
        tail, self._resampler = self._resampler.flush(), None
        return _to_s16(tail).tobytes()

    def close(self) -> None:
        pass


class WavEncoder(PcmEncoder):
    """RIFF/WAVE PCM s16le whose header goes out first, before the length is known."""

    content_type = CONTENT_TYPES["wav"]
    UNKNOWN_SIZE = 0xFFFFFFFF  # the de-facto "streaming, read to EOF" size that FFmpeg, sox and browsers accept

    def __init__(self, sample_rate: int = SAMPLE_RATE, output_rate: int | None = None) -> None:
        super().__init__(sample_rate, output_rate)  # the header carries the output rate
        self._header_sent = False

    def header(self) -> bytes:
        channels, bits = 1, 16
        block_align = channels * bits // 8
        fmt = struct.pack("<HHIIHH", 1, channels, self.sample_rate, self.sample_rate * block_align, block_align, bits)
        return (
            b"RIFF" + struct.pack("<I", self.UNKNOWN_SIZE) + b"WAVE"
            + b"fmt " + struct.pack("<I", len(fmt)) + fmt
            + b"data" + struct.pack("<I", self.UNKNOWN_SIZE)
        )  # fmt: skip

    def _take_header(self) -> bytes:
        if self._header_sent:
            return b""
        self._header_sent = True
        return self.header()

    def encode(self, samples: np.ndarray) -> bytes:
        return self._take_header() + super().encode(samples)

    def flush(self) -> bytes:
        return self._take_header() + super().flush()  # an empty stream is still a valid (empty) WAV file


class _Sink:
    """Write-only buffer. It deliberately has no seek/tell: PyAV then marks the output non-seekable, so muxers
    never try to rewrite headers at the end (bytes already sent) and FFmpeg flushes its I/O buffer per packet."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def write(self, data: bytes) -> int:
        self._buf += data
        return len(data)

    def drain(self) -> bytes:
        out = bytes(self._buf)
        self._buf.clear()
        return out


@dataclass(frozen=True)
class _Spec:
    container: str
    codec: str
    input_format: str  # sample format we hand to PyAV; it converts to the codec's own format itself
    codec_rate: int | None = None  # None: encode at the input rate
    bit_rate: int | None = None
    options: dict[str, str] = field(default_factory=dict)


_SPECS: dict[str, _Spec] = {
    # No Xing/LAME tag (it would need a seek back to fill in) and no ID3 tag: a bare frame stream plays as it arrives.
    "mp3": _Spec("mp3", "libmp3lame", "flt", bit_rate=64000, options={"write_xing": "0", "id3v2_version": "0"}),
    # Ogg pages default to 1 s and are only written when full, which would hold back the first second of audio.
    # 60 ms pages get bytes out of a 0.2 s first chunk for ~9% overhead at 32 kb/s (20 ms pages cost ~28%).
    "opus": _Spec("ogg", "libopus", "flt", codec_rate=48000, bit_rate=32000, options={"page_duration": "60000"}),
    "aac": _Spec("adts", "aac", "flt", bit_rate=64000),
    # The muxer reserves 8 KiB of padding for later metadata edits by default; useless for a one-shot stream.
    # STREAMINFO keeps total_samples=0 / no MD5, which decoders read as "unknown length".
    "flac": _Spec("flac", "flac", "s16", options={"metadata_header_padding": "0"}),
    # G.711 through FFmpeg's raw muxers: the codec's bytes, nothing around them.
    "ulaw": _Spec("mulaw", "pcm_mulaw", "s16", codec_rate=8000),
    "alaw": _Spec("alaw", "pcm_alaw", "s16", codec_rate=8000),
}


class PyAVEncoder:
    """One PyAV output container for the whole stream, drained after every call."""

    def __init__(self, response_format: str, sample_rate: int = SAMPLE_RATE, output_rate: int | None = None) -> None:
        spec = _SPECS[response_format]
        self.sample_rate = sample_rate
        self._spec = spec
        self._sink = _Sink()
        # Explicit, because auto-flush only kicks in for non-seekable output by FFmpeg's default heuristics.
        options = {"flush_packets": "1", **spec.options}
        self._container = av.open(self._sink, mode="w", format=spec.container, container_options=options)
        codec_rate = output_rate or spec.codec_rate or sample_rate
        self.output_rate = codec_rate
        self.content_type = content_type(response_format, codec_rate)
        self._stream = self._container.add_stream(spec.codec, rate=codec_rate, layout="mono")
        if spec.bit_rate:
            self._stream.bit_rate = spec.bit_rate
        self._resampler = (
            av.AudioResampler(format=spec.input_format, layout="mono", rate=codec_rate)
            if codec_rate != sample_rate
            else None
        )
        self._pts = 0
        self._closed = False
        # Open the codec now rather than in the first encode(): an encoder made while the engine works on the
        # first chunk (see `app.speech.serving.open_with_encoder`) then has nothing left to set up when it arrives.
        self._container.start_encoding()

    def _frame(self, samples: np.ndarray) -> av.AudioFrame:
        data = _to_s16(samples) if self._spec.input_format == "s16" else as_float(samples)
        frame = av.AudioFrame.from_ndarray(data[None, :], format=self._spec.input_format, layout="mono")
        frame.sample_rate = self.sample_rate
        frame.time_base = Fraction(1, self.sample_rate)
        frame.pts = self._pts
        self._pts += data.shape[0]
        return frame

    def _encode_frames(self, frames: list[av.AudioFrame | None]) -> None:
        for frame in frames:
            self._container.mux(self._stream.encode(frame))

    def encode(self, samples: np.ndarray) -> bytes:
        if self._closed:
            raise RuntimeError("encoder already flushed/closed")
        if np.size(samples) == 0:
            return b""
        frame = self._frame(samples)
        self._encode_frames(self._resampler.resample(frame) if self._resampler else [frame])
        return self._sink.drain()

    def flush(self) -> bytes:
        if self._closed:
            return b""
        if self._resampler:
            self._encode_frames(self._resampler.resample(None))
        self._encode_frames([None])
        if self._pts == 0:
            # Nothing was ever encoded: still emit the headers so the response is a valid, empty file.
            self._container.start_encoding()
        self.close()
        return self._sink.drain()

    def close(self) -> None:
        """Release the codec/container; idempotent and silent, for consumers that hang up mid-stream."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(av.FFmpegError):
            self._container.close()


def make_encoder(response_format: str, sample_rate: int = SAMPLE_RATE, output_rate: int | None = None
                 ) -> AudioEncoder:
    """An encoder of `sample_rate` input into `response_format` at `output_rate` (None: the format's default,
    see `output_rate()`; the caller checks a client's rate with `output_rate()` first)."""
    if response_format == "wav":
        return WavEncoder(sample_rate, output_rate)
    if response_format == "pcm":
        return PcmEncoder(sample_rate, output_rate)
    if response_format in _SPECS:
        return PyAVEncoder(response_format, sample_rate, output_rate)
    raise ValueError(f"unsupported response_format {response_format!r}; expected one of {sorted(CONTENT_TYPES)}")


def _pieces(samples: np.ndarray, first: int) -> Iterator[np.ndarray]:
    """`samples` as consecutive views: `first` samples, then at most PIECE_SAMPLES each."""
    start, size = 0, first
    while start < samples.shape[0]:
        yield samples[start : start + size]
        start += size
        size = PIECE_SAMPLES


async def encode_stream(
    chunks: AsyncIterator[np.ndarray | T], response_format: str, speed: float = 1.0,
    encoder: AudioEncoder | None = None, sample_rate: int | None = None,
) -> AsyncIterator[bytes | T]:
    """Stretch and encode ``chunks``, yielding each non-empty piece of the container as soon as it exists.

    Items of ``chunks`` that are not sample arrays (events that go out beside the audio) are passed on as
    they come, in their place between the pieces.

    ``encoder``: one made beforehand for ``response_format`` (this stream owns it from now on); else one is made
    for ``sample_rate`` (the output rate, checked by the caller; None: the format's default).
    If the consumer stops early, the encoder is closed quietly and ``chunks`` is closed too (when it can be), so
    upstream synthesis stops instead of running on for a client that is gone.
    """
    encoder = encoder or make_encoder(response_format, output_rate=sample_rate)
    stretcher = TempoStretcher(speed) if speed != 1.0 else None
    first = True
    try:
        async for chunk in chunks:
            if not isinstance(chunk, np.ndarray):
                yield chunk
                continue
            samples = stretcher.process(chunk) if stretcher else chunk
            for piece in _pieces(samples, FIRST_PIECE_SAMPLES if first else PIECE_SAMPLES):
                data = encoder.encode(piece)
                if data:
                    first = False
                    yield data
        tail = encoder.encode(stretcher.flush()) if stretcher else b""
        tail += encoder.flush()
        if tail:
            yield tail
    finally:
        close = getattr(encoder, "close", None)
        if close is not None:
            close()
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
