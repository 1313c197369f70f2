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
    # clone: "given" (the client sent ref_text) or "transcribed" (the speech recognizer heard the sample)
    ref_text_source: Literal["given", "transcribed"] | None = None
    x_vector_only: bool = False
    # clone: "in_context" (the clip and its transcript: the closest likeness) or "x_vector" (the speaker
    # embedding alone, made when no transcript was given: the timbre, less of the accent and manner)
    clone_mode: Literal["in_context", "x_vector"] | None = None
    deletable: bool = False  # uploaded and designed voices can be deleted; shipped and built-in ones cannot
    sample_url: str | None = None  # the reference clip (audio/wav): GET it, relative to the server


class VoiceDeleted(msgspec.Struct):
    """DELETE /v1/audio/voices/{voice_id}, in OpenAI's shape."""

    id: str
    deleted: bool = True
    object: str = "audio.voice.deleted"


class CreateVoiceRequest(msgspec.Struct, kw_only=True):
    """POST /v1/audio/voices as JSON (a designed voice), and the text fields of the multipart form.

    Multipart with `audio_sample` (a file) clones a voice from audio; `description` (JSON or multipart,
    no audio; `sample_text` optional) designs one. OpenAI's SDK names are accepted too: `prompt` for
    description, `script_hint` for sample_text, `type` ("audio_sample" | "prompt"), `model` (ignored).
    """

    name: Annotated[str, Meta(min_length=1, max_length=64, description="Shown as given; the id is derived from it")]
    type: Literal["audio_sample", "prompt"] | None = None
    consent: Annotated[str, Meta(max_length=256, description=(
        "A consent recording's id (POST /v1/audio/voice_consents), kept with the voice; required for clones "
        "from audio when the server runs with --require-consent"))] | None = None
    model: Annotated[str, Meta(max_length=64, description="OpenAI's voice creation model (auto or a date); "
                                                          "accepted and ignored")] | None = None
    # -- cloning from audio -------------------------------------------------------------------
    ref_text: Annotated[str, Meta(max_length=2000, description=(
        "Exact transcript of audio_sample: an in-context clone (closest likeness). Without it, an x-vector-only "
        "clone (speaker embedding alone)"))] | None = None
    x_vector_only: bool = False
    # -- designing from a description (VoiceDesign renders sample_text, Base clones the result) --
    description: Annotated[str, Meta(max_length=2000, description="The voice, in words")] | None = None
    sample_text: Annotated[str, Meta(max_length=600, description=(
        "What the designed voice says in its reference clip (3-30 s of speech); default: a neutral text in "
        "the language (given, or the description's)"))] | None = None
    prompt: Annotated[str, Meta(max_length=2000)] | None = None
    script_hint: Annotated[str, Meta(max_length=600)] | None = None
    seed: Annotated[int, Meta(ge=0, le=2**63 - 1)] | None = None
    # -- both --------------------------------------------------------------------------------
    language: Annotated[str, Meta(max_length=32, description="auto, english, chinese, ... or ISO code")] | None = None


class VoiceList(msgspec.Struct):
    """OpenAI's list shape (`data`, what the SDKs read), and the same cards under `voices`: Open WebUI's
    OpenAI TTS engine reads `voices: [{id, name}]` from this route and nothing else."""

    data: list[VoiceCard]
    voices: list[VoiceCard]
    object: str = "list"


# -- consent recordings (/v1/audio/voice_consents) ---------------------------------------------------
class ConsentCard(msgspec.Struct):
    """OpenAI's consent object."""

    id: str
    name: str
    language: str
    created_at: int
    object: Literal["audio.voice_consent"] = "audio.voice_consent"


class ConsentPage(msgspec.Struct):
    """OpenAI's cursor page: pass `last_id` as `after` for the next page while `has_more`."""

    data: list[ConsentCard]
    first_id: str | None
    last_id: str | None
    has_more: bool
    object: Literal["list"] = "list"


class ConsentDeleted(msgspec.Struct):
    """DELETE /v1/audio/voice_consents/{id}, in the SDKs' shape (its `object` is the consent's own)."""

    id: str
    deleted: bool = True
    object: Literal["audio.voice_consent"] = "audio.voice_consent"


class ConsentFields(msgspec.Struct, kw_only=True):
    """The text fields of POST /v1/audio/voice_consents (multipart, with the `recording` file)."""

    name: Annotated[str, Meta(min_length=1, max_length=64, description="A label for the recording")]
    language: Annotated[str, Meta(min_length=2, max_length=35, pattern=r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$",
                                  description="BCP 47 tag of the consent phrase, e.g. en-US")]


class UpdateConsentRequest(msgspec.Struct, kw_only=True):
    """POST /v1/audio/voice_consents/{id}: a new label (JSON, as the SDKs send it)."""

    name: Annotated[str, Meta(min_length=1, max_length=64, description="The new label")]
