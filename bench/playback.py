"""What a listener who plays a stream from its first audio hears: how long it waits for audio mid-stream."""

from __future__ import annotations


def stall_seconds(arrivals: list[tuple[float, float]]) -> float:
    """Seconds a client that starts at its first chunk and plays chunks back to back spends waiting;
    `arrivals` are (arrival time, seconds of audio) in order."""
    if not arrivals:
        return 0.0
    clock, stall = arrivals[0][0], 0.0
    for at, duration in arrivals:
        if at > clock:
            stall += at - clock
            clock = at
        clock += duration
    return stall
