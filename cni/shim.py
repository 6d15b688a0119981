#!/usr/bin/python3 -IS
"""`sluice`: the CNI binary the runtime executes. Standard library only.

It forwards the CNI_* environment and stdin over a root-only unix socket to the
node's CNI server (inside sluice-controller) and relays the answer. Protocol
(docs/cni.md): one JSON request {"v": 1, "env": {...}, "stdin": base64}, the
client shuts down its write side, the server answers {"rc": int, "stdout": str}.

When the server is unreachable: VERSION is answered here; ADD, CHECK and GC
answer code 11 (try again later); STATUS answers 50; DEL records the request in
<stateDir>/pending-del/ and succeeds, and the server replays it when it starts.
"""

import base64
import json
import os
import socket
import sys
import time

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
    return 1, json.dumps(out)


def call_server(path, env, stdin):
    """Send one request to the server at `path`; return (rc, stdout). Raises OSError."""
    request = {"v": PROTOCOL_VERSION, "env": env, "stdin": base64.b64encode(stdin).decode()}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(CONNECT_TIMEOUT)
        _connect(sock, path)
        sock.settimeout(REPLY_TIMEOUT)
        sock.sendall(json.dumps(request).encode())
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    reply = json.loads(b"".join(chunks) or b"null")
    if not isinstance(reply, dict) or not isinstance(reply.get("rc"), int):
        raise OSError("malformed reply from the CNI server")
    return reply["rc"], str(reply.get("stdout", ""))


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
        json.dump({"env": env, "stdin": base64.b64encode(stdin).decode()}, f)
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
        conf = json.loads(stdin or b"{}")
    except ValueError as exc:
        conf = {}
        if command != "VERSION":
            rc, out = _error(conf, 6, "network configuration is not valid JSON", str(exc))
            stdout.write(out)
            return rc
    if command == "VERSION":
        stdout.write(
            json.dumps(
                {"cniVersion": _version(conf), "supportedVersions": list(SUPPORTED_VERSIONS)}
            )
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
