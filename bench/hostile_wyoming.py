"""Hostile Wyoming clients (issue 23, items 1-5) against a gateway this script starts on loopback.

    python -m bench.hostile_wyoming                          # --send-timeout 3
    python -m bench.hostile_wyoming --send-timeout 10 --idle 520

Attacks, one phase each, while a normal HTTP client posts a short `POST /v1/audio/speech` every
0.25 s: clients that never read (long texts), a refused 21,000-character text, declared lengths of
1e12 followed by up to --flood-mb of bytes, a streamed-text flood that drains its audio, a `describe`
flood that never reads, --idle idle connections, malformed events, and abrupt disconnects mid-audio.
Prints one JSON object: what was tried (counts), the server's RSS growth per hostile connection
(peak during the phase minus the level before it), how long slots stayed held by clients that never
read, the HTTP statuses per phase, and whether the server logged a traceback. `done` applies the
issue's criteria: RSS growth under 150 MB per hostile connection, slots back within --send-timeout
+ 1 s, HTTP answering 200 in every phase. Loopback only; everything it starts is stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
from wyoming.event import read_event

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gateway import gateway  # noqa: E402
from tests.server import free_port  # noqa: E402

MB = 1 << 20
SENTENCE = "Sentence number {} keeps the engine busy for a little while longer. "


def text_of(chars: int) -> str:
    out, i = "", 0
    while len(out) < chars:
        out += SENTENCE.format(i)
        i += 1
    return out[:chars]


def frame(header: dict, data: bytes = b"") -> bytes:
    return json.dumps(header).encode() + b"\n" + data


def synthesize(text: str, kind: str = "synthesize") -> bytes:
    data = json.dumps({"text": text}).encode()
    return frame({"type": kind, "data_length": len(data)}, data)


class Watch:
    """The server's RSS (sampled every 50 ms) and a normal HTTP client's statuses, both per phase."""

    def __init__(self, url: str, pid: int):
        self.url, self.pid = url, pid
        self.rss_now = self._rss()
        self.peak = self.rss_now
        self.answers: list[tuple[float, str]] = []  # (when, status) of the normal client's requests
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._sample, daemon=True),
                         threading.Thread(target=self._probe, daemon=True)]
        for t in self._threads:
            t.start()

    def _rss(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            with contextlib.suppress(OSError):
                self.rss_now = self._rss()
                self.peak = max(self.peak, self.rss_now)

    def _probe(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.wait(0.2):
                try:
                    status = str(client.post(self.url + "/v1/audio/speech", json={
                        "model": "tts-1", "voice": "alloy", "input": "Hello.", "response_format": "pcm"}).status_code)
                except httpx.HTTPError as e:
                    status = type(e).__name__
                self.answers.append((time.monotonic(), status))

    @contextlib.contextmanager
    def phase(self, results: dict, name: str, hostile: int) -> Iterator[dict]:
        time.sleep(0.5)  # let the last phase's memory settle
        before = self.rss_now
        self.peak = before
        out: dict = {"hostile_connections": hostile}
        started = time.monotonic()
        yield out
        time.sleep(0.5)
        answers = [(t, s) for t, s in self.answers if t >= started]
        oks = [started] + [t for t, s in answers if s == "200"] + [time.monotonic()]
        out["seconds"] = round(time.monotonic() - started, 1)
        out["rss_before_mb"] = round(before / MB, 1)
        out["rss_growth_mb"] = round((self.peak - before) / MB, 1)
        out["rss_growth_mb_per_connection"] = round((self.peak - before) / MB / max(1, hostile), 1)
        out["http"] = dict(Counter(s for _, s in answers))
        out["http_longest_without_200_s"] = round(max(b - a for a, b in zip(oks, oks[1:], strict=False)), 1)
        results[name] = out

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(35)


def metric(url: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url + "/metrics", timeout=10).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def connect(port: int, quiet: bool = False, timeout: float = 10) -> socket.socket:
    sock = socket.socket()
    if quiet:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port))
    return sock


def closed_within(sock: socket.socket, seconds: float) -> tuple[bool, list[str]]:
    """Whether the server ended the connection within `seconds`, and the event types it sent before."""
    sock.settimeout(seconds)
    types: list[str] = []
    stream = sock.makefile("rb")
    try:
        while (event := read_event(stream)) is not None:
            types.append(event.type)
    except TimeoutError:
        return False, types
    except OSError:
        pass
    return True, types


def _wyoming_requests(log: Path, offset: int) -> list[dict]:
    """The Wyoming speech requests the server logged after `offset`."""
    with log.open("rb") as f:
        f.seek(offset)
        lines = f.read().decode(errors="replace").splitlines()
    found = []
    for line in lines:
        if '"route":"wyoming"' in line and "{" in line:
            with contextlib.suppress(ValueError):
                found.append(json.loads(line[line.index("{"):]))
    return found


def wait_for(check, seconds: float, every: float = 0.05) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if check():
            return time.monotonic() - start
        time.sleep(every)
    return None


def run(args: argparse.Namespace, url: str, port: int, pid: int, log: Path) -> dict:
    results: dict = {"flags": {"send_timeout": args.send_timeout, "max_concurrent": 2, "max_queue": 4,
                               "wyoming_max_connections": 64, "wyoming_max_event_bytes": 65536}}
    watch = Watch(url, pid)
    try:
        # 1. Clients that never read, with texts at the limit (4,096 characters: minutes of audio).
        with watch.phase(results, "never_reading", 2) as out:
            quiet = [connect(port, quiet=True) for _ in range(2)]
            for sock in quiet:
                sock.sendall(synthesize(text_of(4000)))
            logged = log.stat().st_size
            # Each quiet client's slot: held from its admission until its stalled write times out. The request
            # log says for how long (duration_ms: requested to released) and how much audio it got out.
            held = wait_for(lambda: len(_wyoming_requests(log, logged)) >= 2, args.send_timeout + 30, every=0.2)
            requests = _wyoming_requests(log, logged)
            out["slot_held_s"] = [round(r["duration_ms"] / 1000, 2) for r in requests]
            out["audio_sent_s"] = [r["audio_s"] for r in requests]
            out["slots_back_s"] = max(out["slot_held_s"]) if held is not None else None
            out["closed_by_server"] = sum(closed_within(s, 10)[0] for s in quiet)
            for sock in quiet:
                sock.close()
            out["stalled_sends_aborted"] = metric(url, "speech_gateway_limit_hits_total", limit="wyoming_send_timeout")
        # 1b. A text over the limit (21,000 characters, as in the issue): refused, then the end.
        with watch.phase(results, "over_long_text", 2) as out:
            long = [connect(port, quiet=True) for _ in range(2)]
            for sock in long:
                sock.sendall(synthesize(text_of(21000)))
            answers = [closed_within(s, 10) for s in long]
            out["refused_and_closed"] = sum(closed and types == ["error"] for closed, types in answers)
            for sock in long:
                sock.close()
        # 2. Declared lengths of 1e12, then bytes.
        with watch.phase(results, "huge_declared_length", 3) as out:
            accepted = []
            for header in ({"type": "describe", "payload_length": 10 ** 12},
                           {"type": "describe", "payload_length": 1e12},
                           {"type": "synthesize", "data_length": 10 ** 12}):
                sock = connect(port)
                sent = 0
                with contextlib.suppress(OSError):
                    sock.sendall(frame(header))
                    block = b"\0" * MB
                    while sent < args.flood_mb * MB:
                        sock.sendall(block)
                        sent += len(block)
                accepted.append(round(sent / MB, 1))
                closed_within(sock, 5)
                sock.close()
            out["mb_sent_before_the_server_closed"] = accepted
        # 3. Streamed text far faster than speech, audio drained.
        with watch.phase(results, "streamed_text_flood", 1) as out:
            sock = connect(port, timeout=30)
            got: Counter[str] = Counter()
            error: list[str] = []

            def drain() -> None:
                stream = sock.makefile("rb")
                with contextlib.suppress(OSError, ValueError):
                    while (event := read_event(stream)) is not None:
                        got[event.type] += 1
                        if event.type == "error":
                            error.append(str(event.data.get("code")))

            reader = threading.Thread(target=drain, daemon=True)
            reader.start()
            sock.sendall(frame({"type": "synthesize-start"}))
            piece, sent = text_of(50000), 0
            with contextlib.suppress(OSError):
                while sent < args.text_mb * MB and not error:
                    sock.sendall(synthesize(piece, "synthesize-chunk"))
                    sent += len(piece)
            out["chars_sent"] = sent
            out["error"] = error[:1]
            out["audio_events_read"] = got["audio-chunk"]
            sock.shutdown(socket.SHUT_RDWR)  # the reader's file keeps the socket open past close()
            sock.close()
            reader.join(10)
        # 3b. describe as fast as the server takes it, never reading.
        with watch.phase(results, "describe_flood", 1) as out:
            stalls = metric(url, "speech_gateway_limit_hits_total", limit="wyoming_send_timeout")
            sock = connect(port, quiet=True, timeout=2)
            one, sent = frame({"type": "describe"}) * 1000, 0
            deadline = time.monotonic() + args.send_timeout + 5
            with contextlib.suppress(OSError):
                while time.monotonic() < deadline:
                    sock.sendall(one)
                    sent += 1000
            out["describes_sent"] = sent  # the server stops reading once its answers wait: TCP pushes back
            out["aborted_by_server"] = wait_for(lambda: metric(
                url, "speech_gateway_limit_hits_total", limit="wyoming_send_timeout") > stalls, args.send_timeout + 5,
                every=0.2) is not None
            sock.close()
        # 4. Many idle connections.
        with watch.phase(results, "idle_connections", args.idle) as out:
            idle = []
            with contextlib.suppress(OSError):
                for _ in range(args.idle):
                    idle.append(connect(port, timeout=5))
            time.sleep(1)
            refused = 0
            for sock in idle:
                sock.setblocking(False)
                try:
                    sock.recv(1 << 16)  # the refusal, or the end: either way the server did not keep it
                    refused += 1
                except BlockingIOError:
                    pass  # still open, waiting
                except OSError:
                    refused += 1
            out["opened"], out["refused_at_once"] = len(idle), refused
            out["http_during"] = httpx.post(url + "/v1/audio/speech", json={
                "model": "tts-1", "voice": "alloy", "input": "Hello.", "response_format": "pcm"}, timeout=30).status_code
            for sock in idle:
                sock.close()
        # 5. Malformed events (each followed by a describe on the same connection), abrupt disconnects.
        with watch.phase(results, "malformed_and_abrupt", args.abrupt + 1) as out:
            variants = [
                frame({"type": "synthesize", "data": {"text": 123}}),
                frame({"type": "synthesize", "data": {}}),
                frame({"type": "synthesize", "data": {"text": "Hi.", "voice": "ryan"}}),
                frame({"type": "synthesize", "data": {"text": "Hi.", "voice": {"name": ["x"]}}}),
                frame({"type": "synthesize-start", "data": {"voice": 5}}),
                frame({"type": "synthesize-chunk", "data": {"text": None}}),
                frame({"type": None}),
                frame({"data": {}}),
                frame({"type": "describe", "data": "x"}),
                frame({"type": "synthesize", "data_length": 4}, b"{{{{"),
                frame({"type": "synthesize", "data_length": 2}, b"[]"),
                frame({"type": "synthesize", "data": {"text": "x" * 10, "voice": {"language": 1.5}}}),
            ]
            sock = connect(port)
            stream = sock.makefile("rb")
            answered = 0
            for variant in variants:
                sock.sendall(variant + frame({"type": "describe"}))
                first, second = read_event(stream), read_event(stream)
                answered += bool(first and first.type == "error" and second and second.type == "info")
            sock.close()
            out["malformed_variants"], out["each_answered_then_describe_answered"] = len(variants), answered
            for _ in range(args.abrupt):
                sock = connect(port)
                sock.sendall(synthesize(text_of(300)))
                with contextlib.suppress(OSError):
                    sock.recv(4096)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # RST on close
                sock.close()
            out["abrupt_disconnects"] = args.abrupt
        time.sleep(1)
        text = log.read_text(errors="replace")
        results["server_log"] = {"tracebacks": text.count("Traceback"),
                                 "never_retrieved": text.count("never retrieved")}
        results["wyoming_500s"] = metric(url, "speech_gateway_requests_total", route="wyoming", status="500")
        results["limit_hits"] = {k: metric(url, "speech_gateway_limit_hits_total", limit=k) for k in (
            "wyoming_send_timeout", "wyoming_idle", "wyoming_bad_framing", "wyoming_malformed_event",
            "wyoming_text_queue", "wyoming_max_connections")}
        results["slots_at_end"] = metric(url, "speech_gateway_active_slots")
    finally:
        watch.close()
    phases = [v for v in results.values() if isinstance(v, dict) and "rss_growth_mb_per_connection" in v]
    never = results.get("never_reading", {})
    results["done"] = {
        "rss_growth_under_150_mb_per_connection": all(p["rss_growth_mb_per_connection"] < 150 for p in phases),
        "slots_back_within_send_timeout_plus_1s": never.get("slots_back_s") is not None
        and never["slots_back_s"] <= args.send_timeout + 1,
        "http_keeps_serving": all(p["http"].get("200", 0) > 0 for p in phases)
        and all(k in ("200", "429") for p in phases for k in p["http"]),
        "no_tracebacks": results.get("server_log", {}).get("tracebacks", 1) == 0,
    }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--send-timeout", type=float, default=3.0)
    parser.add_argument("--idle", type=int, default=520, help="idle connections to open at once")
    parser.add_argument("--flood-mb", type=int, default=400, help="bytes sent after each huge declared length")
    parser.add_argument("--text-mb", type=int, default=66, help="streamed text to send at most")
    parser.add_argument("--abrupt", type=int, default=80, help="connections reset mid-audio")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    port = free_port()
    flags = ("--max-concurrent", "2", "--max-queue", "4", "--send-timeout", str(args.send_timeout),
             "--wyoming-port", str(port))
    with gateway(parser, None, *flags, prefix="hostile-wyoming-") as target:
        assert target.pid is not None
        log = Path(f"/proc/{target.pid}/fd/1").resolve()  # tests/server.py points the server's output there
        print(json.dumps(run(args, target.url, port, target.pid, log), indent=2))


if __name__ == "__main__":
    main()
