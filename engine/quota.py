"""Counted folders: a place under a folder's limit (`--max-voices`), taken atomically, also across processes.

Counting the entries and then writing one is a race: ten uploads that all count two voices under a
limit of three all go ahead. So a place is *reserved* before the slow work (decoding, rendering) and
held until the entry is written or the work fails:

    marker = reserve(folder, limit, count)   # None: the folder is full
    try: ... write the entry ...
    finally: release(marker)

`reserve` counts under an exclusive `flock` on `<folder>/.quota.lock`, so processes sharing the folder
(replicas on one host or on a file system with working `flock`) take turns. What it counts is the
entries `count` sees plus the places reserved and not yet released: hidden `.place-*` files named like
the other work entries (`work_folders.work_prefix`: the owner's pid and host), so a marker whose process died no longer counts and is
removed by `clean_stale_entries` at the next start. While an entry is written and its marker not yet
removed it is counted twice: a moment of refusing early, never of letting one too many in. A place is
given back under the same lock: otherwise an upload could finish between a count's scan of the entries
and its scan of the markers, and be in neither.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .work_folders import is_stale, work_prefix

LOCK = ".quota.lock"
_PLACE = "place"  # the marker's kind: `.place-<pid>-<host>-quota-<ns>`


def reserve(folder: Path, limit: int, count: Callable[[Path], int]) -> Path | None:
    """A marker holding one place in `folder`, or None when `count(folder)` plus the places held is `limit`."""
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder):
        if count(folder) + _held(folder) >= limit:
            return None
        marker = folder / f"{work_prefix(_PLACE, 'quota')}{time.monotonic_ns()}"
        marker.touch(exist_ok=False)
        return marker


def release(marker: Path) -> None:
    """Give the place back; its entry, if written, is in the folder by now (see the module's note)."""
    with _locked(marker.parent):
        marker.unlink(missing_ok=True)


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """The folder's exclusive lock, across threads and processes."""
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _held(folder: Path) -> int:
    """Places reserved by running processes (ours included)."""
    return sum(1 for entry in folder.iterdir()
               if entry.name.startswith(f".{_PLACE}-") and not is_stale(entry, at_start=False))
