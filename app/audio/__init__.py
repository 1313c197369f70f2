"""Audio out: encoders (wav, mp3, opus, aac, flac, pcm) and the tempo stretcher behind `speed`."""
