"""Counts of protective limits that fired (decoded-audio bounds, send and read timeouts, connection caps).

Process-wide, so code far from the app (audio import, the uvicorn protocol) can count without a
handle on it; `/metrics` reads them at scrape time as `speech_gateway_limit_hits_total{limit=...}`.
"""

from __future__ import annotations

from collections import Counter

HITS: Counter[str] = Counter()


def hit(limit: str) -> None:
    HITS[limit] += 1
