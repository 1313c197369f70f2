"""Thread counts are sized from the cores this process may use: affinity, bounded by a cgroup CPU quota."""

from __future__ import annotations

import os
from pathlib import Path

from engine.cores import cpu_quota, usable_cores


def test_cgroup_v2_quota_bounds_the_cores(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cpu_quota(tmp_path) == 1.5
    assert usable_cores(tmp_path) == min(len(os.sched_getaffinity(0)), 2)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpu_quota(tmp_path) is None
    assert usable_cores(tmp_path) == len(os.sched_getaffinity(0))


def test_cgroup_v1_quota_and_no_cgroup(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu_quota(tmp_path) == 1.0 and usable_cores(tmp_path) == 1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")  # v1's "unlimited"
    assert cpu_quota(tmp_path) is None
    assert cpu_quota(tmp_path / "absent") is None
    (tmp_path / "cpu.max").write_text("garbage\n")
    assert cpu_quota(tmp_path) is None  # unreadable v2 falls through to v1 (unlimited here)
