"""A VoiceReader-style streaming client, run as a script: what tts-engine's stream_play_queue_test.py does.

Health check, (optional) warmup, voice list, `/v1/speak` of a multi-sentence text, the events socket
from the answer's `ws_url` (auth by header or by the `auth.bearer.v1, <token>` subprotocol), every
AUDIO_CHUNK collected until the terminal job event, which is printed, and the audio saved as one WAV.

    python tests/voicereader/stream_client.py --base-url http://127.0.0.1:PORT --token dev-token \
        --save-wav-path out.wav [--use-subprotocol-auth] [--warmup-wait]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import wave

import httpx
import websockets

TERMINAL = {"JOB_DONE", "JOB_CANCELED", "JOB_ERROR"}
TEXT = ("This is a standalone queue playback test. It uses multiple sentences to validate chunking and "
        "buffering behavior. You should hear smoother playback when prebuffering is enabled.")


async def run(args: argparse.Namespace) -> int:
    headers = {"Authorization": f"Bearer {args.token}"}
    with httpx.Client(base_url=args.base_url, headers=headers, timeout=60) as client:
        health = client.get("/v1/health").raise_for_status().json()
        runtime = health["runtime"]
        print(f"runtime.backend={runtime['backend']} fallback_active={runtime['fallback_active']} "
              f"warmup={runtime['warmup']['status']}", flush=True)
        if args.warmup_wait:
            warm = client.post("/v1/warmup", json={"wait": True, "reason": "stream_client"}).raise_for_status().json()
            print(f"warmup accepted={warm['accepted']} status={warm['warmup']['status']}", flush=True)
        voices = client.get("/v1/voices").raise_for_status().json()["voices"]
        if not any(v["voice_id"] == args.voice_id for v in voices):
            raise RuntimeError(f"voice {args.voice_id!r} not listed")
        speak = client.post("/v1/speak", json={
            "voice_id": args.voice_id, "text": args.text,
            "settings": {"rate": args.rate, "pitch": 1.0, "volume": args.volume,
                         "chunking": {"max_chars": args.chunk_max_chars}},
        }).raise_for_status().json()
    job_id, ws_url = speak["job_id"], speak["ws_url"]
    print(f"job_id={job_id} ws_url={ws_url}", flush=True)

    kwargs: dict = ({"subprotocols": ["auth.bearer.v1", args.token]} if args.use_subprotocol_auth
                    else {"additional_headers": headers})
    pcm = bytearray()
    rate, chunks, terminal = 24000, 0, None
    async with websockets.connect(ws_url, max_size=None, **kwargs) as ws:
        while terminal is None:
            event = json.loads(await asyncio.wait_for(ws.recv(), args.ws_timeout_sec))
            if event.get("job_id") != job_id:
                continue
            if event["type"] == "AUDIO_CHUNK":
                audio = event["audio"]
                if event["seq"] != chunks:
                    raise RuntimeError(f"chunk out of order: {event['seq']} after {chunks}")
                rate = int(audio["sample_rate"])
                pcm += base64.b64decode(audio["data_base64"])
                chunks += 1
            elif event["type"] in TERMINAL:
                terminal = event
    print(f"terminal={json.dumps(terminal)}", flush=True)
    print(f"audio_chunks={chunks}", flush=True)
    if args.save_wav_path and pcm:
        with wave.open(args.save_wav_path, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(rate)
            out.writeframes(bytes(pcm))
        print(f"saved combined wav to: {args.save_wav_path}", flush=True)
    return 0 if terminal["type"] == "JOB_DONE" and chunks else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8765")
    parser.add_argument("--token", default="dev-token")
    parser.add_argument("--voice-id", default="0")
    parser.add_argument("--text", default=TEXT)
    parser.add_argument("--chunk-max-chars", type=int, default=160)
    parser.add_argument("--rate", type=float, default=1.0)
    parser.add_argument("--volume", type=float, default=1.0)
    parser.add_argument("--ws-timeout-sec", type=float, default=60)
    parser.add_argument("--warmup-wait", action="store_true")
    parser.add_argument("--use-subprotocol-auth", action="store_true")
    parser.add_argument("--save-wav-path", default="")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
