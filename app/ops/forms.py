"""Reading a multipart form that carries an audio file: one way to refuse a bad body and free its uploads.

The voice, consent, transcription and Chatterbox uploads each read their own fields, but a body too
large for the route, malformed multipart and non-UTF-8 text fields are refused the same way (413/400
in OpenAI's body, naming the file's field), and every uploaded part is closed however the reading ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Request
from litestar.datastructures import FormMultiDict, UploadFile
from litestar.exceptions import ClientException

from engine.errors import InvalidRequest, PayloadTooLarge


@asynccontextmanager
async def audio_form(request: Request, file_field: str, too_large: str) -> AsyncIterator[FormMultiDict]:
    """The request's form, its uploaded files closed on exit.

    `too_large`: the 413 message when the body passes the route's limit (what the file may weigh)."""
    try:
        form = await request.form()
    except ClientException as e:
        if e.status_code == 413:
            raise PayloadTooLarge(too_large, param=file_field) from None
        raise InvalidRequest(f"malformed form data: {e.detail}", param=file_field) from None
    except UnicodeDecodeError:
        raise InvalidRequest(f"a form field is not UTF-8 text: send the audio as the {file_field!r} file part",
                             param=file_field) from None
    try:
        yield form
    finally:
        for _, value in form.multi_items():
            if isinstance(value, UploadFile):
                await value.close()


__all__ = ["audio_form"]
