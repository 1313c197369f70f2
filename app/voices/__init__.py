"""/v1/audio/voices: list, create (upload or design), sample, delete."""
