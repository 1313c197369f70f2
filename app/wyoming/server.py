"""The Wyoming TCP server: started in the app's lifespan when --wyoming-port is set, stopped at shutdown."""

from __future__ import annotations

import asyncio
import logging

from wyoming.server import AsyncTcpServer

from app.wyoming.handler import SpeechEventHandler
from engine.service import SpeechService

log = logging.getLogger("app.wyoming")


class WyomingServer:
    def __init__(self, host: str, port: int, service: SpeechService, max_segment_chars: int = 300,
                 idle_timeout: float | None = None):
        self.host, self.port = host, port
        self.service = service
        self.max_segment_chars = max_segment_chars
        self.idle_timeout = idle_timeout
        self._server = AsyncTcpServer(host, port)

    def _handler(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> SpeechEventHandler:
        return SpeechEventHandler(reader, writer, self.service, self.max_segment_chars, self.idle_timeout)

    async def start(self) -> None:
        # start(), not run(): run() would take over SIGTERM, which belongs to uvicorn.
        await self._server.start(self._handler)
        log.info("wyoming: listening on tcp://%s:%d", self.host, self.port)

    async def stop(self) -> None:
        """Stop accepting, end every connection (their engine streams close, slots are freed)."""
        handlers = list(self._server._handlers.items())
        await self._server.stop()
        tasks = [task for task, _ in handlers]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
