# ruff: noqa
# The Python client of Soprano-RS's README (/work/shared/seeds/004_36e36dbec3ab7f34.txt, "### Python
# Client"), copied verbatim except for two changes: `import sys`, and the URI read from argv[1] instead
# of the hard-coded "ws://localhost:8080/v1/stream". Not a test module: tests/soprano runs it as a script.
import asyncio
import sys
import websockets
import json

async def tts_client():
    uri = sys.argv[1]
    async with websockets.connect(uri) as ws:
        # Configure
        await ws.send(json.dumps({"type": "config", "speed": 1.0}))

        # Send text
        await ws.send(json.dumps({
            "type": "text",
            "text": "Hello, this is a test of the Soprano TTS system!"
        }))

        # Flush
        await ws.send(json.dumps({"type": "flush"}))

        # Collect audio
        audio_data = bytearray()
        while True:
            msg = await ws.recv()
            if isinstance(msg, bytes):
                # Binary audio frame
                header_len = int.from_bytes(msg[:4], 'big')
                header = json.loads(msg[4:4+header_len])
                pcm = msg[4+header_len:]
                audio_data.extend(pcm)
                print(f"Chunk {header['chunk_id']}: {len(pcm)} bytes")
            else:
                data = json.loads(msg)
                if data.get("type") == "done":
                    break

        # Save audio
        with open("output.raw", "wb") as f:
            f.write(audio_data)

asyncio.run(tts_client())
