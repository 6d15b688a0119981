"""cni.ipam.run_delegate: how a delegate plugin is executed (stdin, stdout, stderr, env)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cni.ipam import run_delegate


def script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "delegate"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def test_stdin_env_stdout_stderr_and_status(tmp_path: Path) -> None:
    binary = script(tmp_path, 'cat; echo "cmd=$CNI_COMMAND"; echo oops >&2; exit 3\n')
    rc, out, err = run_delegate(binary, b'{"a": 1}\n', {"CNI_COMMAND": "ADD"})
    assert (rc, out, err) == (3, b'{"a": 1}\ncmd=ADD\n', b"oops\n")


def test_large_input_and_output(tmp_path: Path) -> None:
    binary = script(tmp_path, "cat; head -c 300000 /dev/zero\n")
    data = b"x" * 200_000  # more than a pipe holds
    rc, out, _ = run_delegate(binary, data, {})
    assert rc == 0 and out == data + b"\0" * 300_000


def test_a_delegate_that_ignores_its_input(tmp_path: Path) -> None:
    binary = script(tmp_path, "echo done\n")
    rc, out, _ = run_delegate(binary, b"y" * 200_000, {})
    assert (rc, out) == (0, b"done\n")


def test_a_hung_delegate_is_killed(tmp_path: Path) -> None:
    binary = script(tmp_path, "exec sleep 30\n")
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        run_delegate(binary, b"", {}, timeout=0.3)
    assert time.monotonic() - start < 5


def test_a_missing_binary_raises(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        run_delegate(str(tmp_path / "none"), b"", {})
