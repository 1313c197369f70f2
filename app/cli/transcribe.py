"""`speech-gateway transcribe FILE`: speech to text, subtitles or captions, here or on a running gateway.

    transcribe talk.mp3 --asr-model small.en              text on stdout (the model from the HF cache)
    transcribe talk.mp3 -o talk.srt --asr-model ./whisper   SubRip subtitles (format from the suffix)
    transcribe talk.mp3 --format vtt --server http://host:8000 --api-key K   on a gateway's recognizer
    transcribe rede.mp3 --translate --asr-model small       English text from any language Whisper knows

Here, the file is read with the same rules as an upload (engine/audio_import.py) and recognized in
this process; with --server it is sent to POST /v1/audio/transcriptions (or /translations).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.settings import Settings

FORMATS = ("text", "srt", "vtt")
SUFFIX_FORMATS = {".txt": "text", ".srt": "srt", ".vtt": "vtt"}


class TranscribeError(Exception):
    pass


def add_transcribe_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="the audio: wav, mp3, ogg/opus, flac, m4a/aac, webm …")
    p.add_argument("-o", "--output", help="write here instead of stdout (.txt, .srt or .vtt picks the format)")
    p.add_argument("-f", "--format", choices=FORMATS, help="text (default), srt or vtt")
    p.add_argument("--language", help="ISO 639-1 code of the speech (default: detected)")
    p.add_argument("--prompt", help="text to guide spelling and style")
    p.add_argument("--translate", action="store_true", help="English text from speech in another language")
    p.add_argument("--server", help="use this gateway's recognizer instead of one in this process")
    p.add_argument("--api-key", help="Bearer key for --server")


def _format(args: argparse.Namespace) -> str:
    if args.format:
        return args.format
    if args.output:
        suffix = Path(args.output).suffix.lower()
        if suffix not in SUFFIX_FORMATS:
            raise TranscribeError(f"unknown output suffix {suffix!r}: use .txt, .srt or .vtt, or --format")
        return SUFFIX_FORMATS[suffix]
    return "text"


def _remote(args: argparse.Namespace, data: bytes, fmt: str) -> str:
    import httpx

    from app.cli.synth import error_message

    path = "translations" if args.translate else "transcriptions"
    fields = {"model": "whisper-1", "response_format": fmt}
    fields.update({k: v for k, v in (("language", args.language), ("prompt", args.prompt)) if v})
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    try:
        r = httpx.post(f"{args.server.rstrip('/')}/v1/audio/{path}", files={"file": (Path(args.file).name, data)},
                       data=fields, headers=headers, timeout=None)
    except httpx.HTTPError as e:
        raise TranscribeError(f"cannot reach {args.server}: {e}") from None
    if r.status_code != 200:
        raise TranscribeError(f"the server answered {r.status_code}: {error_message(r)}")
    return r.text


def _local(args: argparse.Namespace, settings: Settings, data: bytes, fmt: str) -> str:
    from app.transcription.formats import TEXT_FORMATS
    from app.transcription.serving import decode_file
    from app.wiring.asr import recognizer_config
    from engine.asr import Recognizer
    from engine.asr.languages import language_code
    from engine.errors import SpeechError

    config = recognizer_config(settings)
    if config is None:
        raise TranscribeError("no recognizer: give --asr-model (a folder, a hub id or a size name such as small.en), "
                              "or --server to use a running gateway's")
    try:
        samples, rate = decode_file(data)
        transcript = Recognizer(config).transcribe(
            samples, rate, language=language_code(args.language), prompt=args.prompt,
            task="translate" if args.translate else "transcribe")
    except SpeechError as e:
        raise TranscribeError(e.message) from None
    return TEXT_FORMATS[fmt](transcript)


def transcribe_command(args: argparse.Namespace, settings: Settings) -> None:
    try:
        fmt = _format(args)
        try:
            data = Path(args.file).read_bytes()
        except OSError as e:
            raise TranscribeError(f"cannot read {args.file}: {e.strerror}") from None
        out = _remote(args, data, fmt) if args.server else _local(args, settings, data, fmt)
    except TranscribeError as e:
        sys.exit(f"speech-gateway transcribe: {e}")
    if args.output:
        Path(args.output).write_text(out, encoding="utf-8")
    else:
        sys.stdout.write(out)
