"""Import qwen_tts without its start-up noise, which reads like errors but is harmless here.

- `sox` (imported by qwen_tts) shells out to `sox -h` at import: "/bin/sh: sox: not found" on stderr
  and a multi-line "SoX could not be found!" warning. The gateway never uses SoX (PyAV does audio).
- qwen_tts prints a boxed "flash-attn is not installed" warning at import. On CPU flash-attn cannot
  be used at all; on CUDA it matters, so one line says what runs instead.

Call `import_qwen_tts()` before anything imports qwen_tts (the Qwen engine's wiring and
`random-model` do); later imports reuse the module and print nothing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import sys
from collections.abc import Iterator

log = logging.getLogger("app.qwen")


@contextlib.contextmanager
def _silenced_fd(fd: int) -> Iterator[None]:
    """Child processes (the `sox -h` shell) write to the file descriptor, not to sys.stderr."""
    saved = os.dup(fd)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def import_qwen_tts(device: str = "cpu") -> None:
    if "qwen_tts" in sys.modules:
        return
    logging.getLogger("sox").addFilter(lambda record: "SoX could not be found" not in record.getMessage())
    sys.stderr.flush()
    with _silenced_fd(2), contextlib.redirect_stdout(io.StringIO()):
        import qwen_tts  # noqa: F401
    if device.startswith("cuda") and importlib.util.find_spec("flash_attn") is None:
        log.warning("flash-attn is not installed: attention runs on SDPA (make serve EXTRAS=qwen,cuda for "
                    "flash-attention 2)")
