"""controller/tso.py: the userspace TSO default per mode and its command line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from controller import tso


@pytest.mark.parametrize(
    ("mode", "datapath", "want"),
    [
        ("routing", "netdev", True),
        ("underlay", "netdev", True),
        ("overlay", "netdev", False),
        ("hybrid", "netdev", False),
        ("routing", "system", False),
        ("overlay", "system", False),
    ],
)
def test_tso_only_without_a_tunnel_port_on_netdev(mode: str, datapath: str, want: bool) -> None:
    assert tso.userspace_tso_default(mode, datapath) is want


def test_auto_datapath_follows_the_kernel_module() -> None:
    assert tso.resolve_datapath("auto", kernel_module=True) == "system"
    assert tso.resolve_datapath("auto", kernel_module=False) == "netdev"
    assert tso.resolve_datapath("netdev", kernel_module=True) == "netdev"
    assert tso.resolve_datapath("system", kernel_module=False) == "system"


def _config(tmp_path: Path, **keys: str) -> str:
    path = tmp_path / "controller.yaml"
    path.write_text(yaml.safe_dump(keys))
    return str(path)


def test_main_prints_the_default_of_the_configured_mode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert tso.main([_config(tmp_path, mode="underlay", datapathType="netdev")]) == 0
    assert capsys.readouterr().out == "true\n"
    assert tso.main([_config(tmp_path, mode="hybrid", datapathType="netdev")]) == 0
    assert capsys.readouterr().out == "false\n"


def test_main_resolves_auto_like_the_controller(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tso, "KERNEL_MODULE", tmp_path / "openvswitch")
    assert tso.main([_config(tmp_path, mode="routing")]) == 0
    assert capsys.readouterr().out == "true\n"
    (tmp_path / "openvswitch").mkdir()
    assert tso.main([_config(tmp_path, mode="routing")]) == 0
    assert capsys.readouterr().out == "false\n"


def test_main_rejects_a_bad_config_and_bad_usage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert tso.main([_config(tmp_path, mode="bogus")]) == 2
    assert "mode" in capsys.readouterr().err
    assert tso.main([]) == 2
