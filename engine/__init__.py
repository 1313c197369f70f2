"""Synthesis: engines, admission control, voices and text segmentation. Never imports `app`."""
