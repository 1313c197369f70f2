"""Voices on disk: one folder per voice, a `voice.json` manifest and, for clones, a reference clip.

    <voices_dir>/<id>/voice.json       manifest (see `VoiceManifest`)
    <voices_dir>/<id>/reference.wav    clones only: 24 kHz mono 16-bit PCM, the exact `ref_text` spoken

`VoiceStore(dirs)` reads every listed folder (the shipped `voices/` first, then the user's), skips
hidden folders (`.prompt-cache`, `.tmp-*`) and `consents/` (`engine.consent_store`), and ignores
incomplete or corrupt voices with one log line each, so one bad upload never hides the others. A later folder overrides an earlier voice with the
same id, so a user can replace a shipped voice without touching the install.

`save_voice` writes a voice the way a crash cannot half-write it: everything goes to a temporary
folder next to the target, is fsynced, and is renamed into place in one step. `delete_voice` is the
mirror image: one rename to a hidden name (the voice is gone for every reader at once), then removal.
A crash between the steps leaves only hidden `.tmp-*` / `.old-*` / `.del-*` folders, which readers
skip and `work_folders.clean_stale_entries` removes at the next start. Their names carry the writer's pid and host,
so a process starting beside others on a shared folder never removes a write still in progress.

Several gateway processes may share one voices folder: `VoiceStore` notices their additions and
deletions through the folder's mtime (see `VoiceStore` for the same-tick race it guards against).

This module needs only the standard library and numpy (no torch, no soundfile), so the gateway can
list voices without the Qwen extras installed.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import re
import shutil
import tempfile
import time
import wave
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import msgspec
import numpy as np

from .base import SAMPLE_RATE, Voice
from .work_folders import work_prefix

log = logging.getLogger(__name__)

MANIFEST = "voice.json"
REFERENCE = "reference.wav"
SHIPPED_VOICES_DIR = Path(__file__).resolve().parent.parent / "voices"
"""The voices that ship with the gateway (`voices/` at the repository root)."""

_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
CONSENTS_DIR = "consents"
"""The user voices folder's one folder that is not a voice: consent recordings (`engine.consent_store`)."""


def is_voice_folder(path: Path) -> bool:
    """A folder the store reads as a voice: not hidden (work folders, the prompt cache), not the consents."""
    return path.name != CONSENTS_DIR and not path.name.startswith(".") and path.is_dir()


def count_voices(voices_dir: Path) -> int:
    """The voice folders in `voices_dir` (valid or not: each one costs every scan), for `--max-voices`."""
    return sum(1 for p in voices_dir.iterdir() if is_voice_folder(p)) if voices_dir.is_dir() else 0


class VoiceManifest(msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=False):
    """The contents of `voice.json`. Unknown keys are tolerated so newer manifests still load."""

    id: str
    name: str
    kind: Literal["clone", "speaker", "design"]
    language: str = "auto"
    aliases: list[str] = msgspec.field(default_factory=list)
    ref_text: str | None = None  # clone: exact transcript of reference.wav (ICL mode needs it)
    ref_text_source: str | None = None  # clone: "given" by the client, or "transcribed" by the speech recognizer
    x_vector_only: bool = False  # clone: use only the speaker embedding, ignore ref_text
    description: str | None = None  # design: the voice description given to VoiceDesign
    speaker: str | None = None  # speaker: the CustomVoice speaker name
    created_at: int = 0
    source: str = "uploaded"  # shipped | uploaded | designed
    consent: str | None = None  # uploaded: the consent recording id the client sent (OpenAI's field), kept as given

    def problem(self) -> str | None:
        """Why this manifest cannot describe a usable voice, or None if it can."""
        if not _ID.match(self.id):
            return f"id {self.id!r} must be 1-64 of [a-z0-9_-], starting with a letter or digit"
        if self.kind == "clone" and not self.x_vector_only and not (self.ref_text or "").strip():
            return "a clone voice needs ref_text unless x_vector_only is set"
        if self.kind == "design" and not (self.description or "").strip():
            return "a design voice needs a description"
        if self.kind == "speaker" and not (self.speaker or "").strip():
            return "a speaker voice needs a speaker name"
        return None


def manifest_to_voice(manifest: VoiceManifest, folder: Path, engine: str = "qwen") -> Voice:
    """The engine-facing `Voice` for a manifest stored in `folder`."""
    return Voice(
        id=manifest.id,
        name=manifest.name,
        kind=manifest.kind,
        engine=engine,
        language=manifest.language,
        aliases=tuple(manifest.aliases),
        description=manifest.description,
        speaker=manifest.speaker,
        ref_audio=str(folder / REFERENCE) if manifest.kind == "clone" else None,
        ref_text=manifest.ref_text,
        ref_text_source=manifest.ref_text_source,
        x_vector_only=manifest.x_vector_only,
        created_at=manifest.created_at,
        source=manifest.source,
    )


# -- reference audio ------------------------------------------------------------------------------
def encode_wav(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """Mono float32 in [-1, 1] → 16-bit PCM WAV bytes (values beyond ±1 are clipped)."""
    samples = np.asarray(audio, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"expected mono audio, got shape {samples.shape}")
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    """PCM WAV bytes (8/16/24/32-bit, any channel count) → (float32 mono array, sample rate).

    Channels are averaged after scaling to [-1, 1], so a stereo file never clips or doubles.
    Raises ValueError for anything that is not a readable, non-empty PCM WAV.
    """
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            channels, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(n)
    except (wave.Error, EOFError) as e:
        raise ValueError(f"not a PCM WAV file: {e}") from e
    if width == 1:
        x = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / float(1 << 23)
    elif width == 4:
        x = np.frombuffer(raw, dtype="<i4").astype(np.float32) / float(1 << 31)
    else:
        raise ValueError(f"unsupported sample width {width} bytes")
    if channels > 1:
        x = x[: len(x) - len(x) % channels].reshape(-1, channels).mean(axis=1)
    if x.size == 0:
        raise ValueError("WAV file has no samples")
    return np.ascontiguousarray(x, dtype=np.float32), int(rate)


def read_reference(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """A clone voice's reference clip as (float32 mono array, sample rate)."""
    return decode_wav(Path(path).read_bytes())


# -- reading --------------------------------------------------------------------------------------
def load_voice_folder(folder: Path, engine: str = "qwen") -> Voice:
    """Read and validate one voice folder; raises ValueError saying what is wrong with it."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise ValueError(f"no {MANIFEST}")
    try:
        manifest = msgspec.json.decode(manifest_path.read_bytes(), type=VoiceManifest)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise ValueError(f"bad {MANIFEST}: {e}") from e
    if manifest.id != folder.name:
        raise ValueError(f"manifest id {manifest.id!r} does not match its folder name")
    if problem := manifest.problem():
        raise ValueError(problem)
    if manifest.kind == "clone":
        # Decoding the header catches truncated and non-WAV files now, not at the first request.
        reference = folder / REFERENCE
        if not reference.is_file():
            raise ValueError(f"no {REFERENCE}")
        decode_wav(reference.read_bytes())
    return manifest_to_voice(manifest, folder, engine)


class VoiceStore:
    """The voices found in a list of folders; rescans a folder only when its mtime changes.

    Adding, replacing or removing a voice folder (the renames `save_voice` and `delete_voice` do)
    changes the parent folder's mtime, so `voices()` stays current without a rescan on every call,
    also for changes made by another process sharing the folder.

    Same-tick guard: file systems stamp mtimes from a coarse clock (a kernel tick, a second on some
    network file systems), so a change made just after a scan can leave the mtime as it was. A scan
    is trusted only once the folder's mtime is `settle_seconds` older than the scan; until then every
    call rescans. Rescans are cheap: a voice folder is never modified in place (it is renamed in
    whole), so each one is re-read only when its own identity (inode, mtimes, sizes) changed.
    """

    def __init__(self, dirs: Iterable[str | os.PathLike[str]], *, engine: str = "qwen", settle_seconds: float = 2.0):
        self.dirs = [Path(d) for d in dirs]
        self.engine = engine
        self.settle_ns = int(settle_seconds * 1e9)
        self._seen: dict[Path, tuple[int, bool, list[Voice]]] = {}  # dir → (mtime, settled, voices)
        self._folders: dict[Path, tuple[tuple, Voice | None]] = {}  # voice folder → (identity, voice or None)

    def voices(self) -> list[Voice]:
        """All valid voices, later folders overriding earlier ones by id, sorted by id."""
        by_id: dict[str, Voice] = {}
        for d in self.dirs:
            for v in self._scan(d):
                if v.id in by_id:
                    log.debug("voice %r in %s overrides the one in an earlier voices folder", v.id, d)
                by_id[v.id] = v
        return sorted(by_id.values(), key=lambda v: v.id)

    def get(self, voice_id: str) -> Voice | None:
        return next((v for v in self.voices() if v.id == voice_id), None)

    def _scan(self, d: Path) -> list[Voice]:
        try:
            mtime = d.stat().st_mtime_ns
        except FileNotFoundError:
            return []
        cached = self._seen.get(d)
        if cached is not None and cached[0] == mtime and cached[1]:
            return cached[2]
        scanned_at = time.time_ns()
        try:
            folders = sorted(p for p in d.iterdir() if is_voice_folder(p))
        except FileNotFoundError:
            return []
        found = [v for v in map(self._load, folders) if v is not None]
        listed = set(folders)
        self._folders = {f: e for f, e in self._folders.items() if f.parent != d or f in listed}
        self._seen[d] = (mtime, scanned_at - mtime > self.settle_ns, found)
        return found

    def _load(self, folder: Path) -> Voice | None:
        try:
            identity = _folder_identity(folder)
        except OSError:
            return None  # removed while we looked
        cached = self._folders.get(folder)
        if cached is not None and cached[0] == identity:
            return cached[1]
        voice: Voice | None = None
        try:
            voice = load_voice_folder(folder, self.engine)
        except (ValueError, OSError) as e:
            log.warning("ignoring voice folder %s: %s", folder, e)  # once per change, not per scan
        self._folders[folder] = (identity, voice)
        return voice


def _folder_identity(folder: Path) -> tuple:
    """What changes whenever a voice folder or its files are replaced or edited."""
    st = folder.stat()
    files = []
    for name in (MANIFEST, REFERENCE):
        try:
            f = (folder / name).stat()
            files.append((f.st_ino, f.st_mtime_ns, f.st_size))
        except FileNotFoundError:
            files.append(None)
    return (st.st_ino, st.st_mtime_ns, *files)


# -- writing --------------------------------------------------------------------------------------
def save_voice(
    voices_dir: str | os.PathLike[str],
    manifest: VoiceManifest,
    audio: np.ndarray | None = None,
    sample_rate: int = SAMPLE_RATE,
    *,
    replace: bool = False,
) -> Path:
    """Write a voice folder atomically and return its path.

    Writes `voice.json` (and `reference.wav` from float32 mono `audio` for clones) into a temporary
    folder inside `voices_dir`, fsyncs the files and the folder, then renames it to `<id>`: readers
    see either no voice or the whole voice. An existing voice is replaced only when `replace` is set
    (its old folder is moved aside first, then removed).
    """
    if problem := manifest.problem():
        raise ValueError(problem)
    if manifest.kind == "clone" and audio is None:
        raise ValueError("a clone voice needs its reference audio")
    if not manifest.created_at:
        manifest = msgspec.structs.replace(manifest, created_at=int(time.time()))
    files = {MANIFEST: msgspec.json.format(msgspec.json.encode(manifest), indent=2) + b"\n"}
    if manifest.kind == "clone" and audio is not None:
        files[REFERENCE] = encode_wav(audio, sample_rate)
    return write_folder(voices_dir, manifest.id, files, replace=replace)


def write_folder(root: str | os.PathLike[str], name: str, files: dict[str, bytes], *, replace: bool = False) -> Path:
    """`<root>/<name>` holding `files`, written the way a crash cannot half-write it (see `save_voice`).

    FileExistsError when the folder exists (also when another writer renames its own into place
    first) unless `replace` is set.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    target = root / name
    if target.exists() and not replace:
        raise FileExistsError(f"{name!r} already exists in {root}")
    tmp = Path(tempfile.mkdtemp(prefix=work_prefix("tmp", name), dir=root))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; a voice folder is as readable as its parent
        for file_name, data in files.items():
            write_synced(tmp / file_name, data)
        _fsync_dir(tmp)
        old = None
        if target.exists() and replace:
            old = root / f"{work_prefix('old', name)}{time.monotonic_ns()}"
            os.replace(target, old)
        try:
            os.replace(tmp, target)
        except OSError as e:
            # Another writer (a concurrent upload, another process) got there first: renaming onto a
            # non-empty folder fails atomically, so exactly one of them wins.
            if e.errno in (errno.EEXIST, errno.ENOTEMPTY) and not replace:
                raise FileExistsError(f"{name!r} already exists in {root}") from None
            raise
        _fsync_dir(root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def delete_voice(voices_dir: str | os.PathLike[str], voice_id: str) -> bool:
    """Remove the voice folder `<voices_dir>/<voice_id>`; False if there is none (see `delete_folder`)."""
    return bool(_ID.match(voice_id)) and delete_folder(voices_dir, voice_id)


def delete_folder(root: str | os.PathLike[str], name: str) -> bool:
    """Remove `<root>/<name>`; False if there is none.

    One rename to a hidden `.del-*` name makes the folder disappear for every reader at once (and
    makes a concurrent second delete find nothing); the files are removed after that. A crash in
    between leaves only the hidden folder, which `clean_stale_entries` removes.
    """
    root = Path(root)
    gone = root / f"{work_prefix('del', name)}{time.monotonic_ns()}"
    try:
        os.rename(root / name, gone)
    except (FileNotFoundError, NotADirectoryError):
        return False
    _fsync_dir(root)
    shutil.rmtree(gone, ignore_errors=True)
    return True


def replace_file(folder: Path, name: str, data: bytes) -> None:
    """Replace one file of a folder written by `write_folder`, atomically: readers see the old or the new file.

    The new file is written beside the folder (as a `.tmp-*` entry of its parent, which
    `clean_stale_entries` removes after a crash) and renamed over the old one. FileNotFoundError when
    the folder is gone (deleted meanwhile).
    """
    tmp = folder.parent / f"{work_prefix('tmp', folder.name)}{time.monotonic_ns()}"
    try:
        write_synced(tmp, data)
        os.replace(tmp, folder / name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(folder)


def write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    """Make a rename durable: the directory entry itself must reach the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def shipped_and_user_dirs(user_dir: str | os.PathLike[str] | None) -> Sequence[Path]:
    """The usual voices search path: the shipped voices, then the user's (which wins on clashes)."""
    return [SHIPPED_VOICES_DIR] + ([Path(user_dir)] if user_dir else [])
