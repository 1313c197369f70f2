"""The Chatterbox TTS server's API (HTTP and `/ws/tts`), spoken over SpeechService for its clients."""
