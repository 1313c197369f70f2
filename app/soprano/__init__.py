"""Soprano-RS clients: its WebSocket `/v1/stream` over SpeechService (`app.wiring.protocols`)."""
