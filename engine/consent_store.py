"""Consent recordings (OpenAI's `/v1/audio/voice_consents`) on disk, beside the voices they allow.

    <voices_dir>/consents/<id>/consent.json     {id, name, language, created_at}
    <voices_dir>/consents/<id>/recording.wav    the recording as cleaned for a voice (24 kHz mono 16-bit)

A consent is written like a voice (`voice_store.write_folder`: whole or not at all) and renamed by
replacing its `consent.json` in one step, so gateway processes sharing the voices folder share the
consents and never read half of one. Ids are `cons_` + the creation time (ns, hex) + random hex:
sorting ids sorts by creation, the order of OpenAI's cursor pages, and a cursor stays valid after
its consent is deleted.

Standard library and numpy only, like `voice_store`.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from pathlib import Path

import msgspec
import numpy as np

from .voice_store import delete_folder, encode_wav, replace_file, write_folder
from .work_folders import clean_stale_entries

log = logging.getLogger(__name__)

MANIFEST = "consent.json"
RECORDING = "recording.wav"
ID = re.compile(r"^cons_[0-9a-f]{24}$")


class Consent(msgspec.Struct, kw_only=True):
    """The contents of `consent.json`, and OpenAI's consent object without its `object` field."""

    id: str
    name: str
    language: str
    created_at: int


def new_consent_id() -> str:
    return f"cons_{time.time_ns():016x}{secrets.token_hex(4)}"


def count_consents(root: Path) -> int:
    """The consent folders in `root` (for the limit on how many the folder holds)."""
    return sum(1 for p in root.iterdir() if ID.match(p.name) and p.is_dir()) if root.is_dir() else 0


class ConsentStore:
    """The consents in one folder. Every read goes to the disk: other processes may write there too."""

    def __init__(self, root: Path):
        self.root = root
        clean_stale_entries(root)  # what a crash of an earlier life left; built before this process writes

    def create(self, name: str, language: str, recording: np.ndarray) -> Consent:
        consent = Consent(id=new_consent_id(), name=name, language=language, created_at=int(time.time()))
        write_folder(self.root, consent.id, {MANIFEST: _encode(consent), RECORDING: encode_wav(recording)})
        return consent

    def get(self, consent_id: str) -> Consent | None:
        if not ID.match(consent_id):
            return None
        try:
            return msgspec.json.decode((self.root / consent_id / MANIFEST).read_bytes(), type=Consent)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            log.warning("ignoring consent %s: bad %s: %s", consent_id, MANIFEST, e)
            return None

    def all(self) -> list[Consent]:
        """Every readable consent, oldest first."""
        try:
            ids = sorted(p.name for p in self.root.iterdir() if ID.match(p.name))
        except FileNotFoundError:
            return []
        return [c for c in map(self.get, ids) if c is not None]

    def rename(self, consent_id: str, name: str) -> Consent | None:
        """The consent with its new name; None when there is none (or it was deleted meanwhile)."""
        consent = self.get(consent_id)
        if consent is None:
            return None
        renamed = msgspec.structs.replace(consent, name=name)
        try:
            replace_file(self.root / consent_id, MANIFEST, _encode(renamed))
        except FileNotFoundError:
            return None
        return renamed

    def delete(self, consent_id: str) -> bool:
        return bool(ID.match(consent_id)) and delete_folder(self.root, consent_id)


_STORES: dict[Path, ConsentStore] = {}


def consent_store(root: Path) -> ConsentStore:
    """The store of the consents folder `root`, one per folder and process (its first use cleans the folder)."""
    key = root.resolve()
    store = _STORES.get(key)
    if store is None:
        store = _STORES[key] = ConsentStore(root)
    return store


def _encode(consent: Consent) -> bytes:
    return msgspec.json.format(msgspec.json.encode(consent), indent=2) + b"\n"
