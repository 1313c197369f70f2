"""Engine wiring (assembly): which engines run, built from the settings. The one place that names a concrete engine."""
