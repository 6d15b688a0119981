"""down() thaws freezer cgroups that runc left frozen, so SIGKILL can act."""

from __future__ import annotations

from pathlib import Path

from sandbox.cluster import thaw_frozen_cgroups


def _cgroup(root: Path, rel: str, state: str) -> Path:
    d = root / rel
    d.mkdir(parents=True)
    (d / "freezer.state").write_text(state + "\n")
    return d / "freezer.state"


def test_frozen_and_freezing_are_thawed_and_named(tmp_path: Path) -> None:
    root = tmp_path / "freezer" / "kp-node2"
    frozen = _cgroup(root, "kubepods/besteffort/podA/c1", "FROZEN")
    freezing = _cgroup(root, "kubepods/besteffort/podB/c2", "FREEZING")
    running = _cgroup(root, "kubepods/besteffort/podC/c3", "THAWED")
    other = tmp_path / "cpu" / "kp-node2"  # a hierarchy without freezer files
    other.mkdir(parents=True)
    missing = tmp_path / "freezer" / "kp-node9"

    thawed = thaw_frozen_cgroups([root, other, missing])

    assert thawed == ["kubepods/besteffort/podA/c1", "kubepods/besteffort/podB/c2"]
    assert [p.read_text().strip() for p in (frozen, freezing, running)] == ["THAWED"] * 3
    assert thaw_frozen_cgroups([root]) == []
