"""The gateway a benchmark measures: a running one on loopback (`--url`), or one it starts and stops."""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class Target:
    url: str
    pid: int | None  # the server's process id when this script started it (for memory readings)


@contextmanager
def gateway(parser: argparse.ArgumentParser, url: str | None, *flags: str, prefix: str, timeout: float = 120,
            pid: int | None = None) -> Iterator[Target]:
    """Yield the gateway to measure; refuse anything but loopback; stop what was started here."""
    if url:
        if urlsplit(url).hostname not in LOOPBACK:
            parser.error("benchmarks only target loopback addresses")
        yield Target(url.rstrip("/"), pid)
        return
    from tests.server import start_server

    server = start_server(Path(tempfile.mkdtemp(prefix=prefix)), *flags, timeout=timeout)
    try:
        yield Target(server.url, server.proc.pid)
    finally:
        server.stop()
