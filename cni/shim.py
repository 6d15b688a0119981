#!/usr/bin/python3 -IS
"""`sluice`: the CNI binary the runtime executes. Standard library only.

It forwards the CNI_* environment and stdin over a root-only unix socket to the
node's CNI server (inside sluice-controller) and relays the answer. Protocol
(docs/cni.md): one JSON request {"v": 1, "env": {...}, "stdin": base64}, the
client shuts down its write side, the server answers {"rc": int, "stdout": str}.

When the server is unreachable: VERSION is answered here; ADD, CHECK and GC
answer code 11 (try again later); STATUS answers 50; DEL records the request in
<stateDir>/pending-del/ and succeeds, and the server replays it when it starts.

cni/shim.c is the same program in C, installed instead where it can be built.
"""

import binascii
import os
import sys
import time

# why: importing the json and socket modules (re, enum, selectors underneath)
# took about 30 of this program's 50 ms on a busy node; their C cores do the
# same work. The standard modules are the fallback, and give the error message
# when the fast parser refuses a document.
try:
    import _socket as socket
    from _json import encode_basestring_ascii as _quote
    from _json import make_scanner as _make_scanner
except ImportError:  # pragma: no cover - not CPython
    import socket  # type: ignore[no-redef]

    _quote = _make_scanner = None  # type: ignore[assignment,misc]


class _Decoding:
    """What the C scanner reads from its context (as json.JSONDecoder sets it)."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float  # NaN, Infinity, -Infinity
    memo: dict[str, str] = {}


def _loads(data):
    """json.loads for bytes or str."""
    text = data.decode() if isinstance(data, bytes) else data
    if _make_scanner is not None:
        try:
            start = len(text) - len(text.lstrip(" \t\n\r"))
            value, end = _make_scanner(_Decoding())(text, start)  # type: ignore[arg-type]
            if not text[end:].strip(" \t\n\r"):
                return value
        except Exception:  # noqa: BLE001 - the standard module says what is wrong
            pass
    import json

    return json.loads(text)


def _dumps(value):
    """json.dumps for str, int, None, lists and dicts with str keys."""
    if isinstance(value, str):
        return _quote(value) if _quote is not None else _std_dumps(value)
    if value is None:
        return "null"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(_dumps(k) + ": " + _dumps(v) for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_dumps(v) for v in value) + "]"
    return _std_dumps(value)


def _std_dumps(value):
    import json

    return json.dumps(value)


SUPPORTED_VERSIONS = ("0.3.1", "0.4.0", "1.0.0", "1.1.0")
DEFAULT_SERVER_SOCKET = "/run/sluice/cni.sock"
DEFAULT_STATE_DIR = "/var/lib/sluice"
CONNECT_TIMEOUT = 2.0
REPLY_TIMEOUT = 300.0
PROTOCOL_VERSION = 1


def _conf_value(conf, key, default):
    value = conf.get(key) if isinstance(conf, dict) else None
    return value if isinstance(value, str) and value else default


def _version(conf):
    version = conf.get("cniVersion") if isinstance(conf, dict) else None
    return version if version in SUPPORTED_VERSIONS else SUPPORTED_VERSIONS[-1]


def _error(conf, code, msg, details=""):
    out = {"cniVersion": _version(conf), "code": code, "msg": msg}
    if details:
        out["details"] = details
    return 1, _dumps(out)


def call_server(path, env, stdin):
    """Send one request to the server at `path`; return (rc, stdout). Raises OSError."""
    request = {"v": PROTOCOL_VERSION, "env": env, "stdin": _b64(stdin)}
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_TIMEOUT)
        _connect(sock, path)
        sock.settimeout(REPLY_TIMEOUT)
        sock.sendall(_dumps(request).encode())
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        sock.close()
    reply = _loads(b"".join(chunks) or b"null")
    if not isinstance(reply, dict) or not isinstance(reply.get("rc"), int):
        raise OSError("malformed reply from the CNI server")
    return reply["rc"], str(reply.get("stdout", ""))


def _b64(data):
    return binascii.b2a_base64(data, newline=False).decode()


def _connect(sock, path):
    """Connect, retrying while the server's backlog is full (EAGAIN) up to the timeout."""
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while True:
        try:
            sock.connect(path)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def spool_delete(state_dir, env, stdin):
    """Record a DEL the server could not take, for replay when it starts."""
    spool = os.path.join(state_dir, "pending-del")
    os.makedirs(spool, mode=0o700, exist_ok=True)
    key = "{}_{}".format(env.get("CNI_CONTAINERID", "none"), env.get("CNI_IFNAME", "none"))
    key = "".join(c if c.isalnum() or c in "._-" else "_" for c in key)
    tmp = os.path.join(spool, "." + key + ".tmp")
    with open(tmp, "w") as f:
        f.write(_dumps({"env": env, "stdin": _b64(stdin)}))
    os.replace(tmp, os.path.join(spool, key + ".json"))


def unreachable(command, conf, env, stdin, reason):
    """The answer when the server cannot be reached."""
    if command == "DEL":
        try:
            spool_delete(_conf_value(conf, "stateDir", DEFAULT_STATE_DIR), env, stdin)
        except OSError as exc:
            return _error(conf, 5, "CNI server unreachable and DEL could not be recorded", str(exc))
        return 0, ""
    if command == "STATUS":
        return _error(conf, 50, "sluice CNI server is not running", reason)
    return _error(conf, 11, "sluice CNI server is not reachable, try again later", reason)


def main(environ, stdin, stdout):
    """Run one invocation; return the exit code."""
    command = environ.get("CNI_COMMAND", "")
    env = {k: v for k, v in environ.items() if k.startswith("CNI_") or k == "PATH"}
    try:
        conf = _loads(stdin or b"{}")
    except ValueError as exc:
        conf = {}
        if command != "VERSION":
            rc, out = _error(conf, 6, "network configuration is not valid JSON", str(exc))
            stdout.write(out)
            return rc
    if command == "VERSION":
        stdout.write(
            _dumps({"cniVersion": _version(conf), "supportedVersions": list(SUPPORTED_VERSIONS)})
        )
        return 0
    path = _conf_value(conf, "serverSocket", DEFAULT_SERVER_SOCKET)
    try:
        rc, out = call_server(path, env, stdin)
    except (OSError, ValueError) as exc:
        rc, out = unreachable(command, conf, env, stdin, f"{path}: {exc}")
    stdout.write(out)
    return rc


if __name__ == "__main__":
    sys.exit(main(os.environ, sys.stdin.buffer.read(), sys.stdout))
