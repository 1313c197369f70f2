"""`speech-gateway say` for long work: a book into one file, a script into one file per line, resumable.

    say --file book.txt -o book.mp3                    one file, a progress bar
    say --file book.txt -o book.mp3 --resume           finished segments survive an interruption
    say --file lines.txt -o clips/  (or --split-lines clips)   0001.mp3, 0002.mp3 … one per non-empty line
    say ... --server http://host:8000 --api-key K      synthesize on a running gateway instead of here

One output file always goes through ONE tempo stretcher and ONE encoder, whether its audio comes
straight from synthesis or from segments saved by earlier runs: encoded files are never
concatenated. A resumable run keeps each finished segment as raw PCM16 in `<output>.parts/` and
records it in `<output>.state.json` (next to the output); the final file is assembled from the parts
at the end, then both are removed. In folder mode every file is written under a temporary name and
renamed when complete, so an existing file is a complete one; `--resume` skips those whose line,
voice and format are unchanged (`.say-state.json` in the folder remembers).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from app.cli.synth import SAMPLE_RATE, LocalSynth, Progress, RemoteSynth, SayError, Synth, Voicing
from app.settings import Settings

SUFFIX_FORMATS = {".mp3": "mp3", ".opus": "opus", ".ogg": "opus", ".aac": "aac", ".flac": "flac", ".wav": "wav",
                  ".pcm": "pcm", ".raw": "pcm", ".ulaw": "ulaw", ".alaw": "alaw"}  # G.711 at 8 kHz, raw
FORMAT_SUFFIXES = {"mp3": ".mp3", "opus": ".opus", "aac": ".aac", "flac": ".flac", "wav": ".wav", "pcm": ".pcm",
                   "ulaw": ".ulaw", "alaw": ".alaw"}
PARTIAL_EXIT = 3  # --max-segments stopped the run early: not a failure, not finished either
_BLOCK = SAMPLE_RATE * 10  # samples read back from a part at a time


class Stopped(Exception):
    """--max-segments reached."""


class ResumeState(msgspec.Struct):
    """`{"segments": {"<index>": {"key": ..., "samples": ...}}}` — what earlier runs finished."""

    segments: dict[str, dict[str, Any]] = {}

    @classmethod
    def load(cls, path: Path) -> ResumeState:
        try:
            return msgspec.json.decode(path.read_bytes(), type=cls)
        except (FileNotFoundError, msgspec.DecodeError, msgspec.ValidationError):
            return cls()  # no state (or a corrupt one): everything is redone, nothing is trusted

    def save(self, path: Path) -> None:
        _write_atomic(path, msgspec.json.encode(self))


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _temp_for(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


def _finish_wav(path: Path) -> None:
    """A streamed WAV header says "unknown size"; a finished file can say the real one."""
    size = path.stat().st_size
    with path.open("r+b") as f:
        head = f.read(44)
        if head[:4] == b"RIFF" and head[36:40] == b"data":
            f.seek(4)
            f.write((size - 8).to_bytes(4, "little"))
            f.seek(40)
            f.write((size - 44).to_bytes(4, "little"))


async def _encode_to(path: Path, chunks: AsyncIterator[np.ndarray], fmt: str, speed: float) -> None:
    """Stretch and encode `chunks` into `path` through one encoder; `path` appears only when complete."""
    from app.audio.encoding import encode_stream

    tmp = _temp_for(path)
    try:
        with tmp.open("wb") as f:
            async for data in encode_stream(chunks, fmt, speed):
                f.write(data)
        if fmt == "wav":
            _finish_wav(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class Job:
    """One `say` run: segments in, audio out, progress on stderr."""

    def __init__(self, synth: Synth, voicing: Voicing, fmt: str, speed: float, max_segments: int | None,
                 split: Callable[[str], list[str]]):
        self.synth = synth
        self.voicing = voicing
        self.fmt = fmt
        self.speed = speed
        self.budget = max_segments
        self.split = split
        self.seconds = 0.0

    def _spend(self) -> None:
        """Count one newly synthesized unit against --max-segments (checked before starting it)."""
        if self.budget is not None:
            if self.budget <= 0:
                raise Stopped
            self.budget -= 1

    async def _counted(self, chunks: AsyncIterator[np.ndarray], progress: Progress) -> AsyncIterator[np.ndarray]:
        async for samples in chunks:
            progress.seconds += len(samples) / SAMPLE_RATE
            yield samples

    # -- one file, straight through ----------------------------------------------------------------
    async def single(self, text: str, out: Path) -> None:
        segments = self.split(text)
        progress = Progress(len(segments))

        async def audio() -> AsyncIterator[np.ndarray]:
            for segment in segments:
                self._spend()
                async for samples in self._counted(self.synth.segment(segment), progress):
                    yield samples
                progress.step()

        await _encode_to(out, audio(), self.fmt, self.speed)
        self.seconds = progress.seconds

    # -- one file, resumable ------------------------------------------------------------------------
    async def single_resumable(self, text: str, out: Path) -> None:
        segments = self.split(text)
        parts = out.with_name(out.name + ".parts")
        state_path = out.with_name(out.name + ".state.json")
        parts.mkdir(exist_ok=True)
        state = ResumeState.load(state_path)
        progress = Progress(len(segments))
        for i, segment in enumerate(segments, 1):
            key, part = self.voicing.key(segment), parts / f"{i:06d}.pcm"
            known = state.segments.get(str(i))
            if known and known["key"] == key and part.is_file() and part.stat().st_size == 2 * known["samples"]:
                progress.step(known["samples"] / SAMPLE_RATE, skipped=True)
                continue
            self._spend()
            samples = await self._save_part(part, self.synth.segment(segment))
            state.segments[str(i)] = {"key": key, "samples": samples}
            state.save(state_path)
            progress.step(samples / SAMPLE_RATE)
        await _encode_to(out, _read_parts(parts, len(segments)), self.fmt, self.speed)
        self.seconds = progress.seconds
        for i in range(1, len(segments) + 1):
            (parts / f"{i:06d}.pcm").unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # left in place if the user put something else in it
            parts.rmdir()
        state_path.unlink(missing_ok=True)

    async def _save_part(self, part: Path, chunks: AsyncIterator[np.ndarray]) -> int:
        from app.audio.encoding import PcmEncoder

        encoder, tmp, samples = PcmEncoder(), _temp_for(part), 0
        try:
            with tmp.open("wb") as f:
                async for chunk in chunks:
                    f.write(encoder.encode(chunk))
                    samples += len(chunk)
            os.replace(tmp, part)
        finally:
            tmp.unlink(missing_ok=True)
        return samples

    # -- a folder, one file per line ----------------------------------------------------------------
    async def folder(self, text: str, folder: Path, resume: bool) -> None:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if not lines:
            raise SayError("no non-empty lines to speak")
        folder.mkdir(parents=True, exist_ok=True)
        state_path = folder / ".say-state.json"
        state = ResumeState.load(state_path)  # kept up to date by every run; trusted only with --resume
        width = max(4, len(str(len(lines))))
        progress = Progress(len(lines), "files")
        for i, line in enumerate(lines, 1):
            name = f"{i:0{width}d}{FORMAT_SUFFIXES[self.fmt]}"
            target, key = folder / name, self.voicing.key(line, self.fmt, self.speed)
            known = state.segments.get(name)
            if resume and known and known["key"] == key and target.is_file():
                progress.step(known["samples"] / SAMPLE_RATE, skipped=True)
                continue
            self._spend()
            before = progress.seconds
            await _encode_to(target, self._line_audio(line, progress), self.fmt, self.speed)
            state.segments[name] = {"key": key, "samples": round((progress.seconds - before) * SAMPLE_RATE)}
            state.save(state_path)
            progress.step()
        self.seconds = progress.seconds

    async def _line_audio(self, line: str, progress: Progress) -> AsyncIterator[np.ndarray]:
        for segment in self.split(line):
            async for samples in self._counted(self.synth.segment(segment), progress):
                yield samples


async def _read_parts(parts: Path, count: int) -> AsyncIterator[np.ndarray]:
    for i in range(1, count + 1):
        with (parts / f"{i:06d}.pcm").open("rb") as f:
            while block := f.read(2 * _BLOCK):
                yield np.frombuffer(block, "<i2").astype(np.float32) / 32768.0


# -- the command ------------------------------------------------------------------------------------
def add_say_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("text", nargs="?", default="", help="the text ('-' reads standard input)")
    p.add_argument("-o", "--output", help="output file (format from its suffix), or a folder ending in '/' "
                                          "for one file per line")
    p.add_argument("--file", help="read the text from this file")
    p.add_argument("--split-lines", metavar="DIR", help="one file per non-empty line in DIR: 0001.mp3, 0002.mp3 …")
    p.add_argument("--resume", action="store_true",
                   help="keep finished segments (state file next to the output) and skip them when run again")
    p.add_argument("--max-segments", type=int, metavar="N",
                   help=f"synthesize at most N new segments (files in folder mode), then stop with exit code "
                        f"{PARTIAL_EXIT}; with --resume, run again to go on")
    p.add_argument("--server", metavar="URL", help="synthesize on a running gateway (e.g. http://127.0.0.1:8000)")
    p.add_argument("--api-key", help="Bearer key for --server")
    p.add_argument("--voice", default=None)
    p.add_argument("--language", default=None)
    p.add_argument("--instructions", default=None, help="style instructions, for voices that follow them")
    p.add_argument("--speed", type=float, default=1.0)
    p.add_argument("--format", choices=sorted(set(SUFFIX_FORMATS.values())), default=None)


def _read_text(args: argparse.Namespace) -> str:
    if args.file:
        return Path(args.file).read_text(encoding="utf-8")
    return sys.stdin.read() if args.text == "-" else args.text


def say_command(args: argparse.Namespace, settings: Settings) -> None:
    """Entry point of `say`; exits with a message (no traceback) on anything the user can fix."""
    from engine.errors import SpeechError
    from engine.text import split_sentences

    folder = args.split_lines or (args.output if args.output and (args.output.endswith(("/", os.sep))
                                                                  or Path(args.output).is_dir()) else None)
    if not folder and not args.output:
        sys.exit("say needs -o FILE, -o DIR/ or --split-lines DIR")
    fmt = args.format or ("mp3" if folder else SUFFIX_FORMATS.get(Path(args.output).suffix.lower()))
    if fmt is None:
        sys.exit(f"cannot tell the format from {Path(args.output).name!r}: use a suffix "
                 f"({', '.join(SUFFIX_FORMATS)}) or --format")
    if not 0.25 <= args.speed <= 4.0:
        sys.exit("--speed must be between 0.25 and 4.0")
    text = _read_text(args)
    if not text or not text.strip():
        sys.exit("nothing to say: give a text, '-' for standard input, or --file")
    voicing = Voicing(args.voice, args.language, args.instructions)
    synth = RemoteSynth(args.server, args.api_key, voicing) if args.server else LocalSynth(settings, voicing)

    async def run() -> Job:
        async with synth:
            job = Job(synth, voicing, fmt, args.speed, args.max_segments,
                      lambda t: split_sentences(t, settings.max_segment_chars))
            if folder:
                await job.folder(text, Path(folder), args.resume)
            elif args.resume:
                await job.single_resumable(text, Path(args.output))
            else:
                await job.single(text, Path(args.output))
            return job

    try:
        job = asyncio.run(run())
    except Stopped:
        kept = args.resume or folder  # folder mode keeps every finished file
        hint = "; run again with --resume to finish" if kept else " (without --resume nothing was kept)"
        print(f"\nstopped after --max-segments {args.max_segments}{hint}", file=sys.stderr)
        sys.exit(PARTIAL_EXIT)
    except SayError as e:
        sys.exit(f"\nerror: {e}")
    except SpeechError as e:  # in-process: unknown voice, bad language, engine not ready …
        sys.exit(f"\nerror: {e.message}")
    where = f"{folder} (one {fmt} file per line)" if folder else args.output
    print(f"wrote {where} ({job.seconds / args.speed:.1f}s of audio, {fmt})")
