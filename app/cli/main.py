"""`speech-gateway`: serve the API, speak a text to files, transcribe audio, manage voices, write a random-weight
Qwen3 checkpoint."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Any

from app.cli.say import add_say_arguments
from app.cli.transcribe import add_transcribe_arguments
from app.cli.voices import add_voices_parser
from app.settings import OPTIONS, Settings, load_settings


def _add_settings_flags(parser: argparse.ArgumentParser, only: set[str] | None = None) -> None:
    for option in OPTIONS:
        if only is not None and option.field not in only:
            continue
        help_text = f"{option.help} [env {option.env}]"
        if option.kind is bool:
            parser.add_argument(option.flag, dest=option.field, action="store_const", const=True, help=help_text)
        elif option.repeat:
            parser.add_argument(option.flag, dest=option.field, action="append", help=help_text)
        else:
            parser.add_argument(option.flag, dest=option.field, type=option.kind, help=help_text)


def _settings_from(args: argparse.Namespace) -> Settings:
    fields = {o.field for o in OPTIONS}
    return load_settings({k: v for k, v in vars(args).items() if k in fields})


# Modules only the `qwen` extra installs: a command that needs one and finds it missing says how to
# install it in one line rather than with a traceback.
QWEN_EXTRA_MODULES = ("torch", "torchaudio", "qwen_tts", "transformers", "safetensors")
QWEN_EXTRA_HINT = "install the Qwen extra first: `make install EXTRAS=qwen` (or `make serve EXTRAS=qwen`)"


class MissingExtra(SystemExit):
    def __init__(self, command: str, module: str):
        super().__init__(f"speech-gateway {command}: needs {module}, which is not installed; {QWEN_EXTRA_HINT}")


def _require_qwen_extra(command: str) -> None:
    for module in QWEN_EXTRA_MODULES:
        if importlib.util.find_spec(module) is None:
            raise MissingExtra(command, module)


def _raise_file_limit() -> None:
    """Up to the hard limit: --max-connections, not the descriptor table, should be what refuses clients."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    from app.main import create_app
    from app.ops.connection_guard import guard, http_protocol
    from app.ops.logging_setup import uvicorn_log_config

    settings = _settings_from(args)
    if settings.engine == "qwen":
        _require_qwen_extra("serve --engine qwen")  # else the first sign would be a traceback inside startup
    _raise_file_limit()
    app = guard(create_app(settings), send_timeout=settings.send_timeout, body_timeout=settings.body_timeout)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                timeout_graceful_shutdown=settings.shutdown_grace, log_config=uvicorn_log_config(settings.log_format),
                http=http_protocol(settings.header_timeout), limit_concurrency=settings.max_connections,
                # The transport cuts only absurd frames (1009); moderately oversize ones reach the session,
                # which answers with an `error` and keeps the socket open.
                ws_max_size=max(1 << 20, 16 * settings.ws_max_message_bytes),
                # Audio frames barely compress, and deflate per socket made one job's fan-out to 150
                # VoiceReader listeners cost 3.7 s of CPU instead of 0.26 s.
                ws_per_message_deflate=settings.ws_compression)


def say(args: argparse.Namespace) -> None:
    from app.cli.say import say_command

    say_command(args, _settings_from(args))


def transcribe(args: argparse.Namespace) -> None:
    from app.cli.transcribe import transcribe_command

    transcribe_command(args, _settings_from(args))


def random_model(args: argparse.Namespace) -> None:
    from app.wiring.qwen_quiet import import_qwen_tts

    import_qwen_tts()
    from engine.qwen.random_model import write_random_checkpoint

    path = write_random_checkpoint(args.dir, kind=args.kind, size=args.size, seed=args.seed)
    print(f"wrote a random-weight {args.size} {args.kind} checkpoint to {path}")


def openapi(args: argparse.Namespace) -> None:
    from app.ops.openapi_export import write

    sys.exit(write(Path(args.output), check=args.check))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="speech-gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p: Any = sub.add_parser("serve", help="serve the OpenAI-compatible API")
    _add_settings_flags(p)
    p.set_defaults(func=serve)

    p = sub.add_parser("say", help="speak a text into an audio file, or a folder of one file per line")
    add_say_arguments(p)
    _add_settings_flags(p, only={"engine", "voices_dir", "qwen_base", "qwen_custom_voice", "qwen_voice_design",
                                 "device", "dtype", "attn", "allow_download", "max_segment_chars", "voice_map"})
    p.set_defaults(func=say)

    p = sub.add_parser("transcribe", help="speech to text, srt or vtt (a recognizer here, or a server's)")
    add_transcribe_arguments(p)
    _add_settings_flags(p, only={"asr_model", "asr_device", "asr_compute_type", "asr_threads", "allow_download"})
    p.set_defaults(func=transcribe)

    p = sub.add_parser("random-model", help="write a random-weight Qwen3-TTS checkpoint (tests, benchmarks)")
    p.add_argument("dir")
    p.add_argument("--kind", choices=["base", "custom_voice", "voice_design"], default="base")
    p.add_argument("--size", choices=["tiny", "0.6b", "1.7b"], default="tiny")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=random_model)

    add_voices_parser(sub)

    p = sub.add_parser("openapi", help="write the OpenAPI document of the API (openapi/openapi.json)")
    p.add_argument("-o", "--output", default="openapi/openapi.json")
    p.add_argument("--check", action="store_true", help="exit 1 if the file differs from the code")
    p.set_defaults(func=openapi)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ModuleNotFoundError as e:
        top = (e.name or "").split(".")[0]
        if top not in QWEN_EXTRA_MODULES:
            raise
        raise MissingExtra(args.command, top) from None


if __name__ == "__main__":
    main()
