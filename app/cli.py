"""`speech-gateway`: serve the API, speak a text to a file, write a random-weight Qwen3 checkpoint."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from .settings import OPTIONS, Settings, load_settings

SUFFIX_FORMATS = {".mp3": "mp3", ".opus": "opus", ".ogg": "opus", ".aac": "aac", ".flac": "flac", ".wav": "wav",
                  ".pcm": "pcm", ".raw": "pcm"}


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


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    from .main import create_app

    settings = _settings_from(args)
    # JSON logs: uvicorn's own loggers go through our root handler instead of its text config.
    log_config = None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level,
                timeout_graceful_shutdown=settings.shutdown_grace, log_config=log_config)


async def _say(settings: Settings, text: str, out: Path, voice: str | None, speed: float, fmt: str,
               language: str | None) -> float:
    from engine.languages import normalize_language
    from engine.service import SpeechParams, SpeechService
    from engine.text import split_sentences

    from .encoding import TempoStretcher, make_encoder
    from .engines import build_engines

    service = SpeechService(build_engines(settings), request_timeout=settings.request_timeout)
    await service.start()
    segments = split_sentences(text, settings.max_segment_chars)
    encoder = make_encoder(fmt)
    tempo = TempoStretcher(speed) if speed != 1.0 else None
    seconds = 0.0
    try:
        with out.open("wb") as f:
            for i, segment in enumerate(segments, 1):
                stream = await service.open(SpeechParams(text=segment, voice=voice,
                                                         language=normalize_language(language)))
                async for chunk in stream:
                    seconds += chunk.duration
                    samples = tempo.process(chunk.samples) if tempo else chunk.samples
                    f.write(encoder.encode(samples))
                if len(segments) > 1:
                    _progress(i, len(segments), seconds)
            if tempo:
                f.write(encoder.encode(tempo.flush()))
            f.write(encoder.flush())
    finally:
        await service.close()
    return seconds


def _progress(done: int, total: int, seconds: float) -> None:
    width = 30
    filled = round(width * done / total)
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} segments, {seconds:.1f}s audio")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def say(args: argparse.Namespace) -> None:
    out = Path(args.output)
    fmt = args.format or SUFFIX_FORMATS.get(out.suffix.lower())
    if fmt is None:
        sys.exit(f"cannot tell the format from {out.name!r}: use a suffix ({', '.join(SUFFIX_FORMATS)}) or --format")
    text = args.text if args.text != "-" else sys.stdin.read()
    if args.file:
        text = Path(args.file).read_text(encoding="utf-8")
    if not text or not text.strip():
        sys.exit("nothing to say: give a text, '-' for standard input, or --file")
    seconds = asyncio.run(_say(_settings_from(args), text, out, args.voice, args.speed, fmt, args.language))
    print(f"wrote {out} ({seconds:.1f}s of audio, {fmt})")


def random_model(args: argparse.Namespace) -> None:
    from engine.qwen.random_model import write_random_checkpoint

    path = write_random_checkpoint(args.dir, kind=args.kind, size=args.size, seed=args.seed)
    print(f"wrote a random-weight {args.size} {args.kind} checkpoint to {path}")


def openapi(args: argparse.Namespace) -> None:
    from .openapi_export import write

    sys.exit(write(Path(args.output), check=args.check))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="speech-gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p: Any = sub.add_parser("serve", help="serve the OpenAI-compatible API")
    _add_settings_flags(p)
    p.set_defaults(func=serve)

    p = sub.add_parser("say", help="speak a text into an audio file (format from the suffix)")
    p.add_argument("text", nargs="?", default="", help="the text ('-' reads standard input)")
    p.add_argument("-o", "--output", required=True, help="output file, e.g. out.mp3")
    p.add_argument("--file", help="read the text from this file")
    p.add_argument("--voice", default=None)
    p.add_argument("--language", default=None)
    p.add_argument("--speed", type=float, default=1.0)
    p.add_argument("--format", choices=sorted(set(SUFFIX_FORMATS.values())), default=None)
    _add_settings_flags(p, only={"engine", "voices_dir", "qwen_base", "qwen_custom_voice", "qwen_voice_design",
                                 "device", "dtype", "attn", "allow_download", "max_segment_chars"})
    p.set_defaults(func=say)

    p = sub.add_parser("random-model", help="write a random-weight Qwen3-TTS checkpoint (tests, benchmarks)")
    p.add_argument("dir")
    p.add_argument("--kind", choices=["base", "custom_voice", "voice_design"], default="base")
    p.add_argument("--size", choices=["tiny", "0.6b", "1.7b"], default="tiny")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=random_model)

    p = sub.add_parser("openapi", help="write the OpenAPI document of the API (openapi/openapi.json)")
    p.add_argument("-o", "--output", default="openapi/openapi.json")
    p.add_argument("--check", action="store_true", help="exit 1 if the file differs from the code")
    p.set_defaults(func=openapi)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
