"""The Wyoming TCP server: started in the app's lifespan when --wyoming-port is set, stopped at shutdown.

Wyoming has no keys, so who may connect is the operator's to say: the bind address
(`--wyoming-host`) and an address list (`--wyoming-allow`). Connections are counted on their own
(`--wyoming-max-connections`): one past the limit is told why and closed at once, so idle Wyoming
clients can never take the descriptors HTTP needs. Each connection runs in its own task, and
whatever ends it ends as one log line, never as an unretrieved task exception.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Iterable
from typing import Any

from wyoming.error import Error

from app.ops.origins import OncePerMinute
from app.wyoming import wire
from app.wyoming.handler import ConnectionOptions, WyomingConnection, advertised_language
from engine import limits
from engine.service import SpeechService

log = logging.getLogger("app.wyoming")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def allowed_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """`--wyoming-allow` entries as networks; SystemExit naming an entry that is not an address or CIDR."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise SystemExit(f"--wyoming-allow {entry!r}: expected an IP address or a network such as "
                             "192.168.1.0/24") from None
    return tuple(networks)


def peer_address(writer: asyncio.StreamWriter) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    peer = writer.get_extra_info("peername")
    try:
        address = ipaddress.ip_address(peer[0])
    except (TypeError, IndexError, ValueError):
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack socket's view of an IPv4 client
    return address


class WyomingServer:
    def __init__(self, settings: Any):
        """Checks the Wyoming settings now, so a wrong one stops the start rather than the first client."""
        self.host, self.port = settings.wyoming_host, settings.wyoming_port
        self.allow = allowed_networks(settings.wyoming_allow)
        self.max_connections = settings.wyoming_max_connections
        self.options = ConnectionOptions(
            max_segment_chars=settings.max_segment_chars,
            idle_timeout=settings.ws_idle_timeout,
            send_timeout=settings.send_timeout,
            max_event_bytes=settings.wyoming_max_event_bytes,
            language=advertised_language(settings.wyoming_language),
        )
        self.service: SpeechService | None = None
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task, WyomingConnection] = {}
        # once a minute per address: a client retrying in a loop does not fill the log
        self._should_log = OncePerMinute()

    async def start(self, service: SpeechService) -> None:
        self.service = service
        # The reader's limit bounds an event's header line (see wire.read_event).
        self._server = await asyncio.start_server(self._serve, self.host, self.port,
                                                  limit=self.options.max_event_bytes)
        log.info("wyoming: listening on tcp://%s:%d", self.host, self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        address = peer_address(writer)
        if self.allow and (address is None or not any(address in net for net in self.allow)):
            limits.hit("wyoming_not_allowed")
            self._log_refusal(str(address), "its address is not in --wyoming-allow")
            self._refuse(writer, "this address may not use this Wyoming server")
            return
        if len(self._connections) >= self.max_connections:
            limits.hit("wyoming_max_connections")
            self._log_refusal(str(address), f"--wyoming-max-connections ({self.max_connections}) are open")
            self._refuse(writer, f"too many Wyoming connections ({self.max_connections}); try again later")
            return
        assert self.service is not None
        connection = WyomingConnection(reader, writer, self.service, self.options)
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = connection
        try:
            await connection.run()
        except Exception as e:  # noqa: BLE001 - one line, not "Task exception was never retrieved"
            log.warning("wyoming %s: connection failed: %r", connection.conn_id, e)
            writer.transport.abort()
        finally:
            del self._connections[task]

    @staticmethod
    def _refuse(writer: asyncio.StreamWriter, why: str) -> None:
        # A few bytes fit the socket's buffer whether or not the client reads: nothing here waits.
        writer.write(wire.encode(Error(text=why, code="ConnectionRefusedError").event()))
        writer.close()

    def _log_refusal(self, address: str, why: str) -> None:
        if self._should_log(address):
            log.warning("wyoming: refused a connection from %s: %s", address, why)

    async def stop(self) -> None:
        """Stop accepting, end every connection (their engine streams close, slots are freed)."""
        if self._server is not None:
            self._server.close()
        tasks = list(self._connections)
        for connection in list(self._connections.values()):
            connection.stop()
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=5)
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
