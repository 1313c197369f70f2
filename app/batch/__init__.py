"""POST /v1/audio/speech/batch: many texts in one request, answered as JSON or a zip."""
