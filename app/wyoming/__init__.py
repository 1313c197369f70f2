"""The Wyoming protocol (Home Assistant TTS) on its own TCP port, in the gateway's process."""
