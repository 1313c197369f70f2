import requests
import json

# Generate TTS
response = requests.post(
    "http://localhost:8081/api/tts",
    json={
        "text": "Hello, this is a test.",
        "voice": {
            "exaggeration": 0.7,
            "cfg_weight": 0.5
        }
    }
)

with open("output.wav", "wb") as f:
    f.write(response.content)
