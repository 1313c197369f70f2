"""Schemathesis against a real server, from the committed OpenAPI document.

Valid and invalid requests are generated for every documented operation; every response must be a
non-5xx whose status code, content type, headers and JSON body are the ones the document promises.
`FUZZ_CASES` sets the examples per operation (CI default below; try `FUZZ_CASES=3000` locally) and
`FUZZ_SEED` a fixed seed (default: derandomized, so CI is repeatable; `FUZZ_SEED=random` explores).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.openapi_export import DEFAULT_PATH
from tests.server import ROOT, Server, start_server

FUZZ_CASES = int(os.environ.get("FUZZ_CASES", "250"))
FUZZ_SEED = os.environ.get("FUZZ_SEED", "")
# Synthesis is the only costly answer: valid inputs are cut to this many characters so a run stays
# within its time budget (4096-character texts are still sent, as invalid-length ones, and rejected).
SPOKEN_CHARS = 120
# The document cannot enumerate models and voices (names are open-ended), so random strings would
# almost always stop at 400 unknown model / 404 unknown voice: mix in names this server knows.
MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts", "hibari")
VOICES = ("alloy", "nova", "heart", "hibari-heart", {"id": "alloy"})
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection]

schema = schemathesis.openapi.from_path(ROOT / DEFAULT_PATH)


def _valid_name(value: object) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= 256


def _speakable_item(body: object) -> st.SearchStrategy:
    # Only fields that already satisfy the schema are swapped, so an invalid case stays invalid.
    if not isinstance(body, dict):
        return st.just(body)
    body = dict(body)
    if isinstance(body.get("input"), str) and 0 < len(body["input"]) <= 4096:
        body["input"] = body["input"][:SPOKEN_CHARS]
    voice = body.get("voice")
    valid_voice = _valid_name(voice) or (isinstance(voice, dict) and set(voice) == {"id"} and _valid_name(voice["id"]))
    if not (_valid_name(body.get("model")) and valid_voice):
        return st.just(body)
    known = st.tuples(st.sampled_from(MODELS), st.sampled_from(VOICES)).map(
        lambda mv: {**body, "model": mv[0], "voice": mv[1]})
    return st.one_of(known, st.just(body))


@schema.hook("flatmap_body")
def _speakable(context: schemathesis.HookContext, body: object) -> st.SearchStrategy:
    if isinstance(body, dict) and isinstance(body.get("items"), list):  # the batch endpoint
        return st.tuples(*map(_speakable_item, body["items"])).map(lambda items: {**body, "items": list(items)})
    return _speakable_item(body)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # A roomy queue: the fuzzer sends one request at a time, a 429 would only hide a real answer.
    server = start_server(tmp_path_factory.mktemp("fuzz"), "--max-concurrent", "2", "--max-queue", "16",
                          "--request-timeout", "30")
    yield server
    server.stop()
    log = server.log()
    assert "Traceback" not in log, log[-4000:]


@schema.parametrize()
@settings(max_examples=FUZZ_CASES, deadline=None, derandomize=FUZZ_SEED != "random",
          suppress_health_check=list(HealthCheck), database=None)
def test_api_conforms_to_its_document(case: schemathesis.Case, fuzz_server: Server) -> None:
    case.call_and_validate(base_url=fuzz_server.url, checks=CHECKS, timeout=60)
