"""Wire structs of /v1/audio/voices (msgspec)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

MAX_AUDIO_BYTES = 10 * 1024 * 1024  # the largest voice upload (OpenAI's limit)


class VoiceCard(msgspec.Struct, omit_defaults=True):
    id: str
    name: str
    engine: str
    language: str
    kind: str
    object: Literal["audio.voice"]  # no default: omit_defaults would drop it, and OpenAI's shape needs it
    aliases: list[str] = []
    description: str | None = None
    created_at: int = 0
    source: str = "builtin"
    # -- stored voices (uploaded, designed, shipped clones) --------------------------------------
    type: Literal["audio_sample", "prompt"] | None = None  # OpenAI's: made from audio, or from a description
    prompt: str | None = None  # OpenAI's name for the description a designed voice was made from
    ref_text: str | None = None  # clone: the transcript of its reference clip
    x_vector_only: bool = False
    deletable: bool = False  # uploaded and designed voices can be deleted; shipped and built-in ones cannot
    sample_url: str | None = None  # the reference clip (audio/wav): GET it, relative to the server


class VoiceDeleted(msgspec.Struct):
    """DELETE /v1/audio/voices/{voice_id}, in OpenAI's shape."""

    id: str
    deleted: bool = True
    object: str = "audio.voice.deleted"


class CreateVoiceRequest(msgspec.Struct, kw_only=True):
    """POST /v1/audio/voices as JSON (a designed voice), and the text fields of the multipart form.

    Multipart with `audio_sample` (a file) clones a voice from audio; `description` + `sample_text`
    (JSON or multipart, no audio) designs one. OpenAI's SDK names are accepted too: `prompt` for
    description, `script_hint` for sample_text, `type` ("audio_sample" | "prompt").
    """

    name: Annotated[str, Meta(min_length=1, max_length=64, description="Shown as given; the id is derived from it")]
    type: Literal["audio_sample", "prompt"] | None = None
    consent: Annotated[str, Meta(max_length=256, description="OpenAI's consent recording id, kept")] | None = None
    # -- cloning from audio -------------------------------------------------------------------
    ref_text: Annotated[str, Meta(max_length=2000, description="Exact transcript of audio_sample (required "
                                                                "unless x_vector_only)")] | None = None
    x_vector_only: bool = False
    # -- designing from a description (VoiceDesign renders sample_text, Base clones the result) --
    description: Annotated[str, Meta(max_length=2000, description="The voice, in words")] | None = None
    sample_text: Annotated[str, Meta(max_length=600, description="What the designed voice says in its "
                                                                  "reference clip (3-30 s of speech)")] | None = None
    prompt: Annotated[str, Meta(max_length=2000)] | None = None
    script_hint: Annotated[str, Meta(max_length=600)] | None = None
    seed: Annotated[int, Meta(ge=0, le=2**63 - 1)] | None = None
    # -- both --------------------------------------------------------------------------------
    language: Annotated[str, Meta(max_length=32, description="auto, english, chinese, ... or ISO code")] | None = None


class VoiceList(msgspec.Struct):
    """OpenAI's list shape. No `voices` copy: Kokoro/vLLM-Omni clients expect a list of names there,
    not these cards, so repeating the cards under that key served no real client."""

    data: list[VoiceCard]
    object: str = "list"
