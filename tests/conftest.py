"""Shared fixtures: real gateway processes on loopback ports, and audio decoding for assertions."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from tests.server import Server, start_server

API_KEY = "sk-test-key-123"


@pytest.fixture(scope="session")
def embedded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The default set-up: embedded engine, no API keys, small limits so tests can fill the queue."""
    server = start_server(tmp_path_factory.mktemp("embedded"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("keyed")
    key_file = tmp / "keys.txt"
    key_file.write_text("# one key per line\nsk-from-file-456\n")
    server = start_server(tmp, "--api-key", API_KEY, "--api-key-file", str(key_file))
    server.api_key = API_KEY
    yield server
    server.stop()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator:
    """Start extra servers with custom flags; all stopped at the end of the test."""
    started: list[Server] = []

    def make(*args: str, **kwargs) -> Server:
        server = start_server(tmp_path / f"s{len(started)}", *args, **kwargs)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def decode_audio(data: bytes, fmt: str) -> tuple[np.ndarray, int]:
    """Decode any response format to mono float32; pcm is raw s16le 24 kHz."""
    if fmt == "pcm":
        assert len(data) % 2 == 0
        return np.frombuffer(data, "<i2").astype(np.float32) / 32768.0, 24000
    container = av.open(io.BytesIO(data))
    resampler = av.AudioResampler(format="flt", layout="mono", rate=24000)
    parts = []
    for frame in container.decode(audio=0):
        for out in resampler.resample(frame):
            parts.append(out.to_ndarray().reshape(-1))
    for out in resampler.resample(None):
        parts.append(out.to_ndarray().reshape(-1))
    container.close()
    return (np.concatenate(parts) if parts else np.zeros(0, np.float32)), 24000
