"""Hidden work folders of crash-safe writes in a voices folder: whose they are, and removing the orphans.

`save_voice` builds a voice in `.tmp-*` and renames it into place, a replaced voice is moved to
`.old-*`, `delete_voice` renames a voice to `.del-*` before removing it, and `engine.quota` holds a
place under the folder's limit with a `.place-*` file. A crash between two steps leaves such an entry
behind (never a half-made voice: readers skip hidden folders). Their names carry the writer's pid and
a tag of its host, so a process starting beside others on a shared voices folder removes only what
dead writers left, never a save still in progress.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import socket
import time
from pathlib import Path

log = logging.getLogger(__name__)

# `.<kind>-<pid>-<host tag>-<id>-...`; the owner part is optional, for names written before it existed.
# `place`: a place reserved under a folder's limit (`engine.quota`), a file rather than a folder.
_WORK_DIR = re.compile(r"^\.(?:tmp|old|del|place)-(?:(?P<pid>\d+)-(?P<host>[0-9a-f]{8})-)?")
_HOST_TAG = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
STALE_SECONDS = 3600.0


def clean_stale_entries(voices_dir: str | os.PathLike[str], *, max_age: float = STALE_SECONDS) -> list[Path]:
    """Remove what interrupted saves and deletions left in a voices folder; returns what was removed.

    Call it at start, before this process writes. A hidden work folder (`.tmp-*`, `.old-*`, `.del-*`)
    is stale when its writer is gone: on this host, a pid that no longer runs or our own pid (a
    previous life of this process: containers restart as pid 1); otherwise (another host sharing the
    folder, a name without an owner) when it is older than `max_age` seconds.
    """
    root = Path(voices_dir)
    try:
        entries = list(root.iterdir())
    except FileNotFoundError:
        return []
    removed = []
    for entry in entries:
        if not is_stale(entry, max_age=max_age):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
        log.info("removed %s, left by an interrupted voice save or deletion", entry)
    return removed


def is_stale(entry: Path, *, max_age: float = STALE_SECONDS, at_start: bool = True) -> bool:
    """True for a hidden work entry (`.tmp-*`, `.old-*`, `.del-*`) whose writer is gone (see
    `clean_stale_entries`); False for anything else, and for the work of a writer still running.
    `at_start`: our own pid marks a previous life of this process; later it is our own work in progress."""
    match = _WORK_DIR.match(entry.name)
    if match is None:
        return False
    pid, host = match.group("pid"), match.group("host")
    if pid is not None and host == _HOST_TAG:
        if int(pid) == os.getpid():
            return at_start
        return not _pid_alive(int(pid))
    try:
        return time.time() - entry.stat().st_mtime > max_age
    except FileNotFoundError:
        return False


def work_prefix(kind: str, voice_id: str) -> str:
    """`.<kind>-<pid>-<host tag>-<id>-`: the owner in the name tells cleanup whether it is still at work."""
    return f".{kind}-{os.getpid()}-{_HOST_TAG}-{voice_id}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, it is just not ours
    return True
