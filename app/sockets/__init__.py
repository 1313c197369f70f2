"""The WebSockets: /api/v1/speak (speak), /v1/audio/speech/stream (text in), the shared session, wire events, PCM framing."""
