"""What a user's voice may be called, and the folder-safe id derived from its name.

The name is what people see and type (`voice="Commander"`), shown exactly as given; the id is the
folder name under the voices dir and the stable handle in URLs (`/v1/audio/voices/commander`).
Deriving the id from the name (instead of trusting a client-sent id) is what keeps every upload
inside the voices folder, and makes "Alice" and "alice" the same voice.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from .errors import InvalidRequest

NAME_MAX_CHARS = 64
_SLUG_MAX_CHARS = 48


def check_voice_name(name: str | None, what: str = "voice") -> str:
    """`name` without surrounding spaces; InvalidRequest (param "name") when it cannot name a voice
    (or a consent recording: `what` says which in the messages).

    The name is shown as given, so invisible characters (control, format, private-use) are refused:
    two names that look the same must not be two voices.
    """
    name = (name or "").strip()
    if not name:
        raise InvalidRequest(f"'name' is required: the name of the new {what}", param="name")
    if len(name) > NAME_MAX_CHARS:
        raise InvalidRequest(f"'name' is {len(name)} characters long; at most {NAME_MAX_CHARS} are allowed",
                             param="name")
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise InvalidRequest("'name' must not contain control or invisible characters", param="name")
    if not any(c.isalnum() for c in name):
        raise InvalidRequest("'name' needs at least one letter or digit", param="name")
    return name


def voice_id_for(name: str) -> str:
    """The folder-safe id of a voice called `name`: lowercase ASCII letters, digits and '-'.

    Accents fold ("Zoë" → "zoe") and every other run of characters becomes one '-', so no name can
    point outside the voices folder ("../etc" → "etc") and names differing only in case or
    punctuation get the same id (uniqueness is case-insensitive). A name with no ASCII letter or
    digit ("小明") gets "voice-" and a hash of the name: the same name always maps to the same id.
    """
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    slug = re.sub(r"[^a-z0-9]+", "-", folded).strip("-")[:_SLUG_MAX_CHARS].strip("-")
    return slug or "voice-" + hashlib.sha256(name.casefold().encode()).hexdigest()[:10]
