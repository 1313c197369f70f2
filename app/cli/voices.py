"""`speech-gateway voices list|add|design|rm`: manage voices on a running gateway, or in a voices folder.

    voices list                                        the server at http://127.0.0.1:8000
    voices add "Ada" ada.wav --text "what Ada says"    clone from a recording (needs a Qwen Base model)
    voices design "Narrator" --description "a calm, low voice" --sample-text "Good evening."
    voices rm ada
    voices list --voices-dir ./data/voices             no server: read the folder itself
    voices rm ada --voices-dir ./data/voices

Without --server, --voices-dir works on the folder directly (engine/voice_store.py): list and rm
need nothing else. add and design need the models (cleaning the clip, computing the clone prompt,
rendering a designed sample), so they always go through a running server.
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import sys
from functools import partial
from pathlib import Path
from typing import Any

DEFAULT_SERVER = "http://127.0.0.1:8000"
COLUMNS = ("id", "name", "kind", "engine", "language", "source")


class _Fail(Exception):
    pass


def add_voices_parser(sub: Any) -> None:
    """Register `voices` and its subcommands on the top-level subparsers."""
    voices = sub.add_parser("voices", help="list, add, design and remove voices (server or voices folder)")
    actions = voices.add_subparsers(dest="voices_command", required=True)

    def common(p: argparse.ArgumentParser, local: bool) -> None:
        p.add_argument("--server", help=f"gateway URL (default {DEFAULT_SERVER})")
        p.add_argument("--api-key", help="Bearer key for the server")
        if local:
            p.add_argument("--voices-dir", help="work on this voices folder directly instead of a server")
        p.add_argument("--json", action="store_true", help="print the server's JSON answer")

    p = actions.add_parser("list", help="list voices")
    common(p, local=True)
    p.set_defaults(func=partial(run, voices_list))

    p = actions.add_parser("add", help="clone a voice from a recording and its transcript (server)")
    common(p, local=True)
    p.add_argument("name", help="the new voice's name (its id is derived from it)")
    p.add_argument("audio", help="a recording of one speaker: wav, mp3, flac, ogg, m4a …")
    p.add_argument("--text", dest="ref_text", help="exactly what the recording says")
    p.add_argument("--language", default=None)
    p.add_argument("--x-vector-only", action="store_true", help="use only the speaker embedding (no --text)")
    p.add_argument("--consent", help="a consent recording's id (POST /v1/audio/voice_consents), kept with the voice")
    p.set_defaults(func=partial(run, voices_add))

    p = actions.add_parser("design", help="design a voice from a description (server with a VoiceDesign model)")
    common(p, local=True)
    p.add_argument("name")
    p.add_argument("--description", required=True, help='e.g. "a calm, low male voice, slow pace"')
    p.add_argument("--sample-text", required=True, help="what the designed voice says in its reference clip")
    p.add_argument("--language", default=None)
    p.set_defaults(func=partial(run, voices_design))

    p = actions.add_parser("rm", help="delete voices by id")
    common(p, local=True)
    p.add_argument("ids", nargs="+", metavar="ID")
    p.set_defaults(func=partial(run, voices_rm))


# -- where: a server, or a folder --------------------------------------------------------------------
def _local_dir(args: argparse.Namespace) -> Path | None:
    return Path(args.voices_dir) if getattr(args, "voices_dir", None) and not args.server else None


def _needs_server(args: argparse.Namespace, what: str) -> None:
    if _local_dir(args) is not None:
        raise _Fail(f"{what} needs a running server: it runs the Qwen3-TTS models (start one with "
                    f"`speech-gateway serve --engine qwen --qwen-base <checkpoint> --voices-dir {args.voices_dir}` "
                    f"and pass --server URL). list and rm work on --voices-dir alone.")


def _request(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> Any:
    import httpx

    from app.cli.synth import error_message

    url = (args.server or DEFAULT_SERVER).rstrip("/")
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    try:
        # Designing a voice renders speech on the server: allow it minutes, not seconds.
        response = httpx.request(method, url + path, headers=headers, timeout=httpx.Timeout(10.0, read=600.0),
                                 **kwargs)
    except httpx.TransportError as e:
        raise _Fail(f"cannot reach {url}: {e} (is `speech-gateway serve` running? pass --server URL)") from e
    if response.status_code >= 400:
        raise _Fail(f"{url} answered {response.status_code}: {error_message(response)}")
    return response.json() if response.content else None


def _table(voices: list[dict]) -> str:
    rows = [COLUMNS, *[tuple(str(v.get(c) or ("builtin" if c == "source" else "")) for c in COLUMNS)
                       for v in voices]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)


# -- the commands ------------------------------------------------------------------------------------
def voices_list(args: argparse.Namespace) -> None:
    folder = _local_dir(args)
    if folder is not None:
        from engine.voice_store import VoiceStore

        voices = [{"id": v.id, "name": v.name, "kind": v.kind, "engine": v.engine, "language": v.language,
                   "source": v.source, "description": v.description, "created_at": v.created_at}
                  for v in VoiceStore([folder]).voices()]
        body: Any = {"object": "list", "data": voices}
    else:
        body = _request(args, "GET", "/v1/audio/voices")
        voices = body["data"]
    print(json.dumps(body, indent=2) if args.json else (_table(voices) if voices else "no voices"))


def _print_created(args: argparse.Namespace, voice: dict) -> None:
    print(json.dumps(voice, indent=2) if args.json else f"added {voice['id']} ({voice.get('name', voice['id'])})")


def voices_add(args: argparse.Namespace) -> None:
    _needs_server(args, "voices add")
    audio = Path(args.audio)
    if not audio.is_file():
        raise _Fail(f"no such recording: {audio}")
    if not args.ref_text and not args.x_vector_only:
        raise _Fail("give the transcript with --text (or --x-vector-only to clone from the sound alone)")
    data = {"name": args.name, "x_vector_only": str(args.x_vector_only).lower()}
    for field in ("ref_text", "language", "consent"):
        if getattr(args, field):
            data[field] = getattr(args, field)
    mime = mimetypes.guess_type(audio.name)[0] or "application/octet-stream"
    files = {"audio_sample": (audio.name, audio.read_bytes(), mime)}
    _print_created(args, _request(args, "POST", "/v1/audio/voices", data=data, files=files))


def voices_design(args: argparse.Namespace) -> None:
    _needs_server(args, "voices design")
    data = {"name": args.name, "description": args.description, "sample_text": args.sample_text}
    if args.language:
        data["language"] = args.language
    # httpx sends a form as urlencoded unless there is a file; the API takes multipart for both kinds.
    files = {k: (None, v) for k, v in data.items()}
    _print_created(args, _request(args, "POST", "/v1/audio/voices", files=files))


def voices_rm(args: argparse.Namespace) -> None:
    folder = _local_dir(args)
    failed = False
    for voice_id in args.ids:
        try:
            if folder is not None:
                from engine.voice_store import delete_voice

                if not delete_voice(folder, voice_id):
                    raise _Fail(f"no voice {voice_id!r} in {folder}")
            else:
                _request(args, "DELETE", f"/v1/audio/voices/{voice_id}")
            print(f"removed {voice_id}")
        except _Fail as e:
            print(f"error: {e}", file=sys.stderr)
            failed = True
    if failed:
        sys.exit(1)


def run(func: Any, args: argparse.Namespace) -> None:
    try:
        func(args)
    except _Fail as e:
        sys.exit(f"error: {e}")
