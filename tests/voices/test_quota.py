"""`engine.quota`: places under a folder's limit, taken atomically by racing threads and processes."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from engine.quota import release, reserve
from engine.voice_store import count_voices
from engine.work_folders import clean_stale_entries
from tests.server import ROOT

# Each child takes a place in the folder and, when it got one, writes a voice folder and gives the place
# back, as an upload does; with "die" it exits holding the place instead, as a killed process would.
CHILD = """
import sys
from pathlib import Path
from engine.quota import release, reserve
from engine.voice_store import count_voices
folder, name, die = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "die"
if (place := reserve(folder, 3, count_voices)) is not None and not die:
    (folder / name).mkdir()
    release(place)
"""


def _children(folder: Path, count: int, how: str) -> None:
    children = [subprocess.Popen([sys.executable, "-c", CHILD, str(folder), f"voice-{i}", how], cwd=ROOT)
                for i in range(count)]
    assert [c.wait(60) for c in children] == [0] * count


def test_racing_threads_take_exactly_the_places_left(tmp_path: Path) -> None:
    (tmp_path / "existing").mkdir()
    with ThreadPoolExecutor(16) as pool:
        markers = list(pool.map(lambda _: reserve(tmp_path, 4, count_voices), range(16)))
    held = [m for m in markers if m is not None]
    assert len(held) == 3  # one of the four places was taken by the voice already there
    assert reserve(tmp_path, 4, count_voices) is None
    release(held[0])
    again = reserve(tmp_path, 4, count_voices)
    assert again is not None and reserve(tmp_path, 4, count_voices) is None


def test_processes_share_the_limit(tmp_path: Path) -> None:
    _children(tmp_path, 8, "write")
    assert count_voices(tmp_path) == 3 and not [p for p in tmp_path.iterdir() if p.name.startswith(".")
                                                and p.name != ".quota.lock"]


def test_a_dead_processes_places_come_back(tmp_path: Path) -> None:
    _children(tmp_path, 3, "die")
    places = {p.name for p in tmp_path.iterdir() if p.name.startswith(".place-")}
    assert len(places) == 3  # never given back: their writers died holding them
    ours = [reserve(tmp_path, 3, count_voices) for _ in range(3)]
    assert None not in ours  # but they no longer count
    for place in ours:
        release(place)
    assert {p.name for p in clean_stale_entries(tmp_path)} == places  # and the next start removes them



def test_an_upload_finishing_while_a_place_is_counted_is_counted(tmp_path: Path) -> None:
    """The count scans the entries, then the places. An upload that writes its entry and gives its place back
    in between would be in neither scan: giving back waits for the count, so one of the two still sees it."""
    import threading

    (tmp_path / "voice-a").mkdir()
    place = reserve(tmp_path, 2, count_voices)
    assert place is not None
    uploads: list[threading.Thread] = []

    def finish() -> None:  # the upload holding `place` writes its voice and gives the place back
        (tmp_path / "voice-b").mkdir()
        release(place)

    def count_then_finish(folder: Path) -> int:
        seen = count_voices(folder)  # voice-a only
        uploads.append(threading.Thread(target=finish))
        uploads[0].start()
        uploads[0].join(1.0)  # a release that did not wait for the lock is done by now
        return seen

    assert reserve(tmp_path, 2, count_then_finish) is None  # voice-a and the upload's place (or its voice)
    uploads[0].join()
    assert count_voices(tmp_path) == 2 and reserve(tmp_path, 2, count_voices) is None
