"""The committed OpenAPI document is the code's, and it says what clients need to know."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from litestar.routes import HTTPRoute

from app.audio.encoding import CONTENT_TYPES
from app.main import create_app
from app.ops.openapi_export import DEFAULT_PATH, REGENERATE, render
from app.settings import Settings
from tests.server import ROOT

DOC_PATH = ROOT / DEFAULT_PATH
ERROR_STATUSES = ("400", "401", "404", "429", "503")


@pytest.fixture(scope="module")
def doc() -> dict:
    return json.loads(DOC_PATH.read_text(encoding="utf-8"))


def test_committed_document_matches_the_code():
    fresh = render()
    committed = DOC_PATH.read_text(encoding="utf-8") if DOC_PATH.exists() else ""
    assert committed == fresh, (
        f"{DEFAULT_PATH} does not match the routes and structs in the code (a route, a field or a response "
        f"changed). Regenerate it and commit the result: {REGENERATE}"
    )


def test_every_http_route_is_documented(doc):
    app = create_app(Settings())
    schema_prefix = app.openapi_config.path if app.openapi_config and app.openapi_config.path else "/schema"
    expected = set()
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or route.path.startswith(schema_prefix):
            continue
        for handler in route.route_handlers:
            if handler.resolve_include_in_schema():
                expected |= {(route.path_format, m.lower()) for m in handler.http_methods if m != "OPTIONS"}
    documented = {(path, method) for path, item in doc["paths"].items() for method in item}
    assert expected and expected <= documented, f"undocumented: {sorted(expected - documented)}"
    for path, method in documented:
        assert doc["paths"][path][method].get("summary"), f"{method.upper()} {path} has no summary"


def test_speech_operation(doc):
    op = doc["paths"]["/v1/audio/speech"]["post"]
    ok = op["responses"]["200"]["content"]
    assert set(ok) == {*CONTENT_TYPES.values(), "text/event-stream"}
    assert all(ok[ct]["schema"]["format"] == "binary" for ct in CONTENT_TYPES.values())
    for status in ERROR_STATUSES:
        body = op["responses"][status]["content"]["application/json"]["schema"]
        assert body == {"$ref": "#/components/schemas/ErrorResponse"}, status
    assert op["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/SpeechRequest"}


def test_listing_routes_document_401(doc):
    for path in ("/v1/models", "/v1/audio/voices"):
        body = doc["paths"][path]["get"]["responses"]["401"]["content"]["application/json"]["schema"]
        assert body == {"$ref": "#/components/schemas/ErrorResponse"}
    assert "503" in doc["paths"]["/readyz"]["get"]["responses"]
    assert any(ct.startswith("text/plain") for ct in doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"])


def test_error_body_is_openais(doc):
    schemas = doc["components"]["schemas"]
    assert schemas["ErrorResponse"]["required"] == ["error"]
    detail = schemas[schemas["ErrorResponse"]["properties"]["error"]["$ref"].rsplit("/", 1)[1]]
    assert set(detail["required"]) == {"message", "type", "param", "code"}


def test_speech_request_fields(doc):
    request = doc["components"]["schemas"]["SpeechRequest"]
    props = request["properties"]
    openai = {"model", "input", "voice", "instructions", "response_format", "speed", "stream_format"}
    ours = {"language", "seed", "temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens", "min_new_tokens", "do_sample",
            "priority"}
    assert openai | ours <= set(props)
    assert set(request["required"]) == {"model", "input", "voice"}
    assert props["input"]["maxLength"] == 4096
    assert props["response_format"]["enum"] == list(CONTENT_TYPES)
    assert (props["speed"]["minimum"], props["speed"]["maximum"]) == (0.25, 4.0)
    assert props["priority"]["enum"] == ["interactive", "bulk"]


def test_export_command_check_mode(tmp_path):
    out = tmp_path / "openapi.json"
    run = [sys.executable, "-m", "app.ops.openapi_export", "-o", str(out)]
    assert subprocess.run([*run, "--check"], cwd=ROOT, capture_output=True).returncode == 1  # missing file
    subprocess.run(run, cwd=ROOT, check=True, capture_output=True)
    checked = subprocess.run([*run, "--check"], cwd=ROOT, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert json.loads(out.read_text())["openapi"].startswith("3.")


def test_docs_ui_works_offline(embedded_server):
    """/schema is Swagger UI with every script, style and icon served by the gateway itself."""
    import re

    import httpx

    page = httpx.get(embedded_server.url + "/schema")
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    urls = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page.text)
    assert urls and not [u for u in urls if "://" in u], urls  # nothing from a CDN
    for url in urls:
        assert httpx.get(embedded_server.url + url).status_code == 200, url
    assert httpx.get(embedded_server.url + "/schema/openapi.json").json()["paths"]


def test_demo_page_headers(embedded_server):
    import httpx

    page = httpx.get(embedded_server.url + "/demo/speak")
    assert page.headers["content-type"] == "text/html; charset=utf-8"  # one charset, not two
    assert '<link rel="icon"' in page.text  # no /favicon.ico 404 in the console
