"""The three Qwen3-TTS model kinds: what each is called, the flag that loads it, the voice kind it speaks.

Below both `engine.py` (which loads and routes to the models) and `custom_voices.py` (which needs the
Base model's flag for its error), so neither has to import the other for these tables.
"""

KINDS = ("base", "custom_voice", "voice_design")
MODEL_LABEL = {"base": "Base", "custom_voice": "CustomVoice", "voice_design": "VoiceDesign"}
MODEL_FLAG = {"base": "--qwen-base", "custom_voice": "--qwen-custom-voice", "voice_design": "--qwen-voice-design"}
VOICE_KIND_TO_MODEL = {"clone": "base", "speaker": "custom_voice", "design": "voice_design"}
