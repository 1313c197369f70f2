"""Errors raised by engines and the scheduler, split by who is at fault.

    SpeechError
    ├── InvalidRequest          400  the caller asked for something impossible
    │   ├── VoiceNotFound       404  no voice by that name
    │   ├── Forbidden           403  the voice exists but may not be changed (shipped, built in)
    │   ├── Conflict            409  a voice by that name exists already (the SDK must not retry)
    │   └── PayloadTooLarge     413  the upload is bigger than allowed
    ├── Overloaded              429  admission queue full or queue wait too long (retry later)
    ├── Unavailable             503  engine not loaded yet, or failed to load (retry later)
    ├── DeadlineExceeded        504  synthesis ran past the request's deadline
    └── EngineFailure           500  the engine broke while synthesizing
"""

from __future__ import annotations


class SpeechError(Exception):
    status = 500
    code = "internal_error"
    type = "server_error"

    def __init__(self, message: str, *, param: str | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after = retry_after


class InvalidRequest(SpeechError):
    status = 400
    code = "invalid_request"
    type = "invalid_request_error"


class VoiceNotFound(InvalidRequest):
    status = 404
    code = "voice_not_found"

    def __init__(self, message: str, *, param: str | None = "voice", retry_after: float | None = None):
        super().__init__(message, param=param, retry_after=retry_after)


class Forbidden(InvalidRequest):
    status = 403
    code = "voice_protected"


class Conflict(InvalidRequest):
    status = 409
    code = "voice_exists"


class PayloadTooLarge(InvalidRequest):
    status = 413
    code = "payload_too_large"


class Overloaded(SpeechError):
    status = 429
    code = "server_overloaded"
    type = "rate_limit_error"


class Unavailable(SpeechError):
    status = 503
    code = "engine_unavailable"
    type = "server_error"


class DeadlineExceeded(SpeechError):
    status = 504
    code = "deadline_exceeded"
    type = "server_error"


class EngineFailure(SpeechError):
    status = 500
    code = "synthesis_error"
    type = "server_error"
