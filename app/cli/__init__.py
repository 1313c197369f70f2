"""The `speech-gateway` command (`python -m app.cli`): serve, say (text file → audio), voices, random-model, openapi."""

from app.cli.main import main

__all__ = ["main"]
