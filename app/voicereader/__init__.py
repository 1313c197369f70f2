"""Drop-in for VoiceReader's tts-engine sidecar: its HTTP routes and events socket over SpeechService."""
